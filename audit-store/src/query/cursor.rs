//! Opaque, authenticated pagination cursors.
//!
//! A cursor carries the position of the last record of a page — its `(time, id)` — and a MAC
//! over that position and everything the page was a page *of*: the account, the filters, the
//! time range and the direction. A cursor edited by one byte, minted for another account or
//! another query, or of an older format, fails to verify and is a 400.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// Bumped whenever the layout changes: old cursors are then refused, not misread.
const VERSION: u8 = 1;
const MAC_LEN: usize = 16;
const LEN: usize = 1 + 8 + 16 + MAC_LEN;

/// The key cursors are signed with.
#[derive(Clone)]
pub(crate) struct CursorKey([u8; 32]);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(..)")
    }
}

impl CursorKey {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// A fresh random key: cursors then last as long as the process.
    pub(crate) fn random() -> Self {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(Uuid::new_v4().as_bytes());
        key[16..].copy_from_slice(Uuid::new_v4().as_bytes());
        Self(key)
    }

    fn mac(&self, position: &[u8], binding: &str) -> [u8; MAC_LEN] {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(position);
        mac.update(binding.as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// The cursor after the record at `(time_ms, id)`, for the query described by `binding`.
    pub(crate) fn seal(&self, time_ms: i64, id: Uuid, binding: &str) -> String {
        let mut bytes = [0u8; LEN];
        bytes[0] = VERSION;
        bytes[1..9].copy_from_slice(&time_ms.to_be_bytes());
        bytes[9..25].copy_from_slice(id.as_bytes());
        let mac = self.mac(&bytes[..25], binding);
        bytes[25..].copy_from_slice(&mac);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The position a cursor carries, if it is genuine and was minted for `binding`.
    pub(crate) fn open(&self, cursor: &str, binding: &str) -> Option<(i64, Uuid)> {
        let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
        if bytes.len() != LEN || bytes[0] != VERSION {
            return None;
        }
        let expected = self.mac(&bytes[..25], binding);
        // Constant time: a MAC compared byte by byte early-exit would leak how much matched.
        let diff = expected
            .iter()
            .zip(&bytes[25..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 {
            return None;
        }
        let time_ms = i64::from_be_bytes(bytes[1..9].try_into().ok()?);
        let id = Uuid::from_slice(&bytes[9..25]).ok()?;
        Some((time_ms, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_opens_only_for_its_own_query() {
        let key = CursorKey::random();
        let id = Uuid::now_v7();
        let cursor = key.seal(1_700_000_000_000, id, "acc_1|action_type=view|desc");
        assert_eq!(
            key.open(&cursor, "acc_1|action_type=view|desc"),
            Some((1_700_000_000_000, id))
        );
        assert_eq!(
            key.open(&cursor, "acc_2|action_type=view|desc"),
            None,
            "another account"
        );
        assert_eq!(
            key.open(&cursor, "acc_1|action_type=view|asc"),
            None,
            "another direction"
        );
        assert_eq!(
            CursorKey::random().open(&cursor, "acc_1|action_type=view|desc"),
            None,
            "another key"
        );
    }

    #[test]
    fn every_edited_byte_is_refused() {
        let key = CursorKey::random();
        let cursor = key.seal(42, Uuid::now_v7(), "b");
        let mut bytes = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            assert_eq!(
                key.open(&URL_SAFE_NO_PAD.encode(&bytes), "b"),
                None,
                "byte {i}"
            );
            bytes[i] ^= 1;
        }
        assert_eq!(key.open("not base64 !", "b"), None);
        assert_eq!(key.open("", "b"), None);
    }
}
