//! Losses, accounted: drops are noted per account and reported by a gap record in each
//! account's log once storage works again.

use std::collections::HashMap;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use audit_layer::record::{
    Account, Action, ActionResult, ActionType, Actor, ActorContext, ActorType, AuditRecord, Body,
    Raw, Resource, Timestamp,
};
use uuid::Uuid;

use super::Context;
use super::Destination;
use super::metrics::Counters;
use super::queue::Envelope;
use super::spool::Appended;
use crate::model::{MAX_ID_BYTES, StoredRecord};

/// Bytes the spool may exceed its budget by to keep gap records.
const GAP_RESERVE: u64 = 1024 * 1024;

/// The most accounts with losses waiting for their gap records at once; losses of further
/// accounts are reported in the log of records without an account.
pub(super) const MAX_GAP_ACCOUNTS: usize = 10_000;

/// Drops waiting to be reported by a gap record, by account.
#[derive(Debug, Default)]
pub(super) struct Gaps {
    pub(super) spans: HashMap<Option<String>, GapSpan>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct GapSpan {
    pub(super) lost: u64,
    pub(super) first_ms: i64,
    pub(super) last_ms: i64,
}

impl GapSpan {
    pub(super) fn at(time_ms: i64) -> Self {
        Self {
            lost: 0,
            first_ms: time_ms,
            last_ms: time_ms,
        }
    }

    /// Adds `other`'s records and times.
    pub(super) fn merge(&mut self, other: &GapSpan) {
        self.lost += other.lost;
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
    }

    /// The span of `batch`'s records, per account.
    pub(super) fn of_batch(batch: &[Envelope]) -> Vec<(Option<String>, GapSpan)> {
        let mut spans: HashMap<Option<&str>, GapSpan> = HashMap::new();
        for e in batch {
            let time_ms = e.record.action.time.unix_millis();
            let account = e.record.account.as_ref().map(|a| a.id.as_str());
            spans
                .entry(account)
                .or_insert_with(|| GapSpan::at(time_ms))
                .merge(&GapSpan {
                    lost: 1,
                    first_ms: time_ms,
                    last_ms: time_ms,
                });
        }
        spans
            .into_iter()
            .map(|(account, span)| (account.map(str::to_owned), span))
            .collect()
    }
}

impl Gaps {
    pub(super) fn note(&mut self, account: Option<&str>, time_ms: i64) {
        self.note_span(
            account.map(str::to_owned),
            &GapSpan {
                lost: 1,
                first_ms: time_ms,
                last_ms: time_ms,
            },
        );
    }

    /// An account id longer than [`MAX_ID_BYTES`] (never the layer's; a hostile one from a
    /// fleet's stream) is noted as no account: its gap record could not be stored. So is any
    /// account beyond [`MAX_GAP_ACCOUNTS`] waiting at once, which bounds this map however many
    /// accounts a flood of poison names while the database is down.
    pub(super) fn note_span(&mut self, account: Option<String>, span: &GapSpan) {
        let account = match account {
            Some(id) if id.len() > MAX_ID_BYTES => None,
            full if self.spans.len() >= MAX_GAP_ACCOUNTS && !self.spans.contains_key(&full) => None,
            account => account,
        };
        self.spans
            .entry(account)
            .or_insert_with(|| GapSpan::at(span.first_ms))
            .merge(span);
    }

    /// Notes `lost` records of unknown accounts lost between two times.
    pub(super) fn note_unattributed(&mut self, lost: u64, first_ms: i64, last_ms: i64) {
        self.note_span(
            None,
            &GapSpan {
                lost,
                first_ms,
                last_ms,
            },
        );
    }
}

/// The record that says an account's log lost `span.lost` records.
pub(super) fn gap_record(account: Option<String>, span: GapSpan) -> AuditRecord {
    let id = Uuid::now_v7();
    let first = Timestamp::from_unix_millis(span.first_ms);
    let last = Timestamp::from_unix_millis(span.last_ms);
    AuditRecord {
        id,
        account: account.map(|id| Account { id, name: None }),
        action: Action {
            description: Some(
                format!(
                    "{} audit records were lost between {first} and {last}",
                    span.lost
                )
                .into(),
            ),
            result: ActionResult::Failure,
            time: Timestamp::now(),
            kind: ActionType::Gap,
        },
        actor: Actor {
            context: Some(ActorContext::System),
            kind: Some(ActorType::System),
            ..Actor::default()
        },
        raw: Raw::synthetic(id, 500),
        resource: Resource {
            id: None,
            product: Some("audit_log".into()),
            request: Some(Body::from(serde_json::json!({
                "lost": span.lost,
                "first": first.to_string(),
                "last": last.to_string(),
            }))),
            response: None,
            scope: Some("accounts".into()),
            kind: Some("gap".into()),
        },
        zone: None,
        change: None,
        trace: None,
        service: None,
    }
}

impl<S: Destination> Context<S> {
    /// Writes one gap record per account that lost records, if any did.
    pub(super) async fn write_gaps(&self) {
        let spans: Vec<(Option<String>, GapSpan)> = {
            let mut gaps = self
                .shared
                .gaps
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if gaps.spans.is_empty() {
                return;
            }
            gaps.spans.drain().collect()
        };
        let rows: Vec<StoredRecord> = spans
            .iter()
            .filter_map(|(account, span)| {
                StoredRecord::from_record(&gap_record(account.clone(), *span)).ok()
            })
            .collect();
        match self.insert(&rows).await {
            Ok(new) => {
                Counters::add(&self.shared.counters.gap_records, new);
            }
            Err(e) => {
                tracing::warn!(target: "audit_store", "cannot write audit gap records yet: {e}");
                // With a spool, the report of the loss is kept on disk beyond the budget (it
                // is small), so it survives a restart and replays in order.
                if self.has_spool {
                    let texts: Vec<String> = rows.iter().map(|r| r.record.clone()).collect();
                    let mut guard = self.spool.lock().await;
                    if let Some(spool) = guard.as_mut()
                        && let Ok(Appended::Stored) =
                            spool.append_reserved(&texts, GAP_RESERVE).await
                    {
                        self.shared.degraded.store(true, Ordering::Release);
                        self.shared
                            .spool_bytes
                            .store(spool.used_bytes(), Ordering::Relaxed);
                        return;
                    }
                }
                let mut gaps = self
                    .shared
                    .gaps
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for (account, span) in spans {
                    gaps.spans
                        .entry(account)
                        .and_modify(|e| {
                            e.lost += span.lost;
                            e.first_ms = e.first_ms.min(span.first_ms);
                            e.last_ms = e.last_ms.max(span.last_ms);
                        })
                        .or_insert(span);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_accounts_are_reported_without_one_and_the_map_stays_bounded() {
        let mut gaps = Gaps::default();
        gaps.note(Some(&"a".repeat(MAX_ID_BYTES + 1)), 1);
        assert_eq!(gaps.spans.keys().collect::<Vec<_>>(), [&None]);
        for i in 0..MAX_GAP_ACCOUNTS + 50 {
            gaps.note(Some(&format!("acc-{i}")), 2);
        }
        assert_eq!(gaps.spans.len(), MAX_GAP_ACCOUNTS);
        // A loss of an account already waiting still goes to it.
        gaps.note(Some("acc-0"), 3);
        assert_eq!(gaps.spans[&Some("acc-0".to_owned())].lost, 2);
        let total: u64 = gaps.spans.values().map(|s| s.lost).sum();
        assert_eq!(
            total,
            1 + MAX_GAP_ACCOUNTS as u64 + 50 + 1,
            "nothing uncounted"
        );
    }
}
