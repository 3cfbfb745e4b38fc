//! [`AppState`]: what every handler and the auth middleware share.

use crate::db::Db;

/// What every handler shares.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    /// The app's own database.
    pub(crate) db: Db,
}
