//! The store's data model: the stored columns and the record flattened into them, what a query
//! asks for and returns, and what a hash chain is made of. Plain data; nothing here talks to a
//! database.

mod chain;
mod columns;
mod export;
mod query;
mod record;
mod stats;

pub(crate) use chain::Link;
pub use chain::{
    ChainHead, ChainRow, ChainScope, Checkpoint, CheckpointKind, Refusal, Retention, ScannedLink,
};
pub(crate) use columns::index_of;
#[cfg(feature = "sqlite")]
pub(crate) use columns::text_columns;
pub use columns::{COLUMNS, ColumnType, ColumnValue, LINK_COLUMNS, StoredColumn};
pub use export::{CommitPosition, CommitQuery, CommittedRow, ExportPosition, LogPosition};
pub use query::{
    Column, ColumnFilter, Direction, FilterValue, Page, PageRow, RecordQuery, TimedLink,
};
pub use record::{MAX_ID_BYTES, MAX_INDEXED_TEXT_BYTES, StoredRecord};
pub use stats::{Stats, StatsQuery};
