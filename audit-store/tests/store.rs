//! Behaviour of the stores, the same tests on SQLite and PostgreSQL (see `backend_tests!`).

#[macro_use]
mod common;

use std::collections::BTreeSet;

use audit_layer::record::{AuditRecord, Zone};
use audit_store::model::StoredRecord;
use audit_store::store::ChainedStore;
use common::{BASE_MS, Fixture, TestResult, json, ms, record, rows};

backend_tests!(
    migrate_twice_is_idempotent,
    round_trip_is_byte_for_byte,
    retried_batch_never_duplicates,
    batch_of_2600_is_stored_whole,
    get_with_the_wrong_account_is_none,
    retention_deletes_exactly_the_older_records,
    unicode_and_control_characters_round_trip,
    records_without_an_account_are_stored,
    nul_in_a_filter_column_is_stored,
    a_write_cancelled_part_way_leaves_the_store_whole,
    a_small_batch_is_not_held_back,
);

async fn migrate_twice_is_idempotent<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    // The fixture migrated once already; twice more changes nothing and loses nothing.
    let r = record(Some("acc_migrate"), BASE_MS);
    assert_eq!(fx.store.insert(&rows(std::slice::from_ref(&r))?).await?, 1);
    fx.store.migrate().await?;
    fx.store.migrate().await?;
    assert_eq!(fx.store.count().await?, 1);
    assert_eq!(fx.store.get("acc_migrate", r.id).await?, Some(json(&r)?));
    let s = record(Some("acc_migrate"), BASE_MS + 1);
    assert_eq!(fx.store.insert(&rows(&[s])?).await?, 1);
    assert_eq!(fx.store.count().await?, 2);
    fx.store.ping().await?;
    Ok(())
}

async fn round_trip_is_byte_for_byte<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let mut r = record(Some("acc_round"), BASE_MS + 749);
    r.account.as_mut().ok_or("account")?.name = Some("Round Trip Inc.".to_owned());
    r.zone = Some(Zone {
        id: "zone_1".to_owned(),
        name: Some("example.com".to_owned()),
    });
    r.resource.request = Some(
        serde_json::json!({
            "b": 2, "a": [1, 2.5, null, {"z": "last", "y": "first"}], "nested": {"k": false}
        })
        .into(),
    );
    let expected = json(&r)?;
    let row = StoredRecord::from_record(&r)?;
    assert_eq!(row.record, expected);

    assert_eq!(fx.store.insert(std::slice::from_ref(&row)).await?, 1);
    assert_eq!(fx.store.count().await?, 1);
    let stored = fx.store.get("acc_round", r.id).await?.ok_or("not stored")?;
    assert_eq!(stored, expected, "{}: record not byte-for-byte", fx.backend);
    let back: AuditRecord = serde_json::from_str(&stored)?;
    assert_eq!(back, r);

    // Every typed column holds what the record says.
    let (time_ms, status, texts) = fx.db.columns(r.id).await?.ok_or("row missing")?;
    assert_eq!(time_ms, BASE_MS + 749);
    assert_eq!(status, Some(200));
    let want: Vec<Option<String>> = vec![
        row.account_id.clone(),
        row.account_name.clone(),
        row.zone_id.clone(),
        row.zone_name.clone(),
        Some(row.action_type.to_string()),
        Some(row.action_result.to_owned()),
        row.actor_email.clone(),
        row.actor_id.clone(),
        row.actor_ip_address.clone(),
        row.actor_type.map(str::to_owned),
        row.actor_context.map(str::to_owned),
        row.actor_token_id.clone(),
        row.actor_token_name.clone(),
        Some(row.raw_ray_id.clone()),
        row.raw_method.clone(),
        row.raw_uri.clone(),
        row.resource_id.clone(),
        row.resource_product.clone(),
        row.resource_type.clone(),
        row.resource_scope.clone(),
    ];
    assert_eq!(texts, want);
    assert_eq!(
        texts[..4],
        [
            Some("acc_round".to_owned()),
            Some("Round Trip Inc.".to_owned()),
            Some("zone_1".to_owned()),
            Some("example.com".to_owned())
        ]
    );
    assert_eq!(texts[8].as_deref(), Some("2001:db8::1"));

    // A record replayed from its JSON text is the same row, byte for byte.
    let replayed = StoredRecord::from_json(expected.clone())?;
    assert_eq!(replayed, row);
    assert_eq!(fx.store.insert(&[replayed]).await?, 0);
    assert_eq!(fx.store.get("acc_round", r.id).await?, Some(expected));
    Ok(())
}

async fn retried_batch_never_duplicates<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let batch: Vec<AuditRecord> = (0..10)
        .map(|i| record(Some("acc_retry"), BASE_MS + i))
        .collect();
    assert_eq!(fx.store.insert(&rows(&batch)?).await?, 10);
    assert_eq!(fx.store.count().await?, 10);

    // The same batch again (a retry after an unclear failure): nothing new.
    assert_eq!(fx.store.insert(&rows(&batch)?).await?, 0);
    assert_eq!(fx.store.insert(&rows(&batch)?).await?, 0);
    assert_eq!(fx.store.count().await?, 10);

    // Half old, half new: only the new half counts.
    let mut mixed = batch[5..].to_vec();
    mixed.extend((10..15).map(|i| record(Some("acc_retry"), BASE_MS + i)));
    assert_eq!(fx.store.insert(&rows(&mixed)?).await?, 5);
    assert_eq!(fx.store.count().await?, 15);

    // The same record twice in one batch is stored once.
    let twice = record(Some("acc_retry"), BASE_MS + 20);
    assert_eq!(
        fx.store
            .insert(&rows(&[twice.clone(), twice.clone()])?)
            .await?,
        1
    );
    assert_eq!(fx.store.count().await?, 16);

    // An empty batch is fine.
    assert_eq!(fx.store.insert(&[]).await?, 0);
    assert_eq!(fx.store.count().await?, 16);
    for r in batch.iter().chain(&mixed).chain([&twice]) {
        assert_eq!(fx.store.get("acc_retry", r.id).await?, Some(json(r)?));
    }
    Ok(())
}

async fn batch_of_2600_is_stored_whole<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    // SQLite writes 250 rows per statement: 2,600 is ten full statements and a partial one.
    let batch: Vec<AuditRecord> = (0..2600)
        .map(|i| record(Some(["acc_a", "acc_b", "acc_c"][i % 3]), BASE_MS + i as i64))
        .collect();
    assert_eq!(fx.store.insert(&rows(&batch)?).await?, 2600);
    assert_eq!(fx.store.count().await?, 2600);
    for i in [0, 249, 250, 1999, 2500, 2599] {
        let r = &batch[i];
        assert_eq!(
            fx.store.get(common::account_of(r), r.id).await?,
            Some(json(r)?),
            "record {i}"
        );
    }
    let ids: BTreeSet<_> = fx.db.rows().await?.into_iter().map(|r| r.id).collect();
    assert_eq!(ids, batch.iter().map(|r| r.id).collect());
    // Retried whole: still 2,600.
    assert_eq!(fx.store.insert(&rows(&batch)?).await?, 0);
    assert_eq!(fx.store.count().await?, 2600);
    Ok(())
}

async fn get_with_the_wrong_account_is_none<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let mine = record(Some("acc_mine"), BASE_MS);
    let theirs = record(Some("acc_theirs"), BASE_MS);
    fx.store
        .insert(&rows(&[mine.clone(), theirs.clone()])?)
        .await?;

    assert_eq!(fx.store.get("acc_mine", mine.id).await?, Some(json(&mine)?));
    assert_eq!(fx.store.get("acc_theirs", mine.id).await?, None);
    assert_eq!(fx.store.get("acc_mine", theirs.id).await?, None);
    assert_eq!(fx.store.get("", mine.id).await?, None);
    assert_eq!(fx.store.get("ACC_MINE", mine.id).await?, None);
    assert_eq!(fx.store.get("acc_mine", uuid::Uuid::now_v7()).await?, None);
    Ok(())
}

async fn retention_deletes_exactly_the_older_records<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    let cutoff = ms("2025-04-15T12:00:00.000Z");
    let april = ms("2025-04-01T00:00:00.000Z");
    let may = ms("2025-05-01T00:00:00.000Z");
    let mut old_times = vec![
        ms("2025-01-10T08:00:00.000Z"),
        ms("2025-01-31T23:59:59.999Z"),
        ms("2025-02-20T12:00:00.000Z"),
        ms("2025-02-01T00:00:00.000Z"),
        ms("2025-03-31T23:59:59.999Z"),
        april,
        cutoff - 1,
    ];
    // Enough rows in the month the cutoff falls in to need several bounded delete steps.
    old_times.extend((0..6_000).map(|i| april + 3_600_000 + i * 1_000));
    let young_times = vec![
        cutoff,
        cutoff,
        cutoff + 1,
        may - 1,
        may,
        ms("2025-07-04T00:00:00.000Z"),
    ];
    let old: Vec<AuditRecord> = old_times
        .iter()
        .map(|&t| record(Some("acc_ret"), t))
        .collect();
    let young: Vec<AuditRecord> = young_times
        .iter()
        .map(|&t| record(Some("acc_ret"), t))
        .collect();
    let all: Vec<AuditRecord> = old.iter().chain(&young).cloned().collect();
    assert_eq!(fx.store.insert(&rows(&all)?).await?, all.len() as u64);
    if fx.db.is_postgres() {
        assert_eq!(
            fx.db.partitions().await?,
            [
                "audit_logs_p2025_01",
                "audit_logs_p2025_02",
                "audit_logs_p2025_03",
                "audit_logs_p2025_04",
                "audit_logs_p2025_05",
                "audit_logs_p2025_07"
            ]
        );
    }

    // A cutoff before everything deletes nothing.
    assert_eq!(
        fx.store
            .delete_before(ms("2024-12-31T00:00:00.000Z"))
            .await?,
        0
    );
    assert_eq!(fx.store.count().await?, all.len() as u64);

    assert_eq!(fx.store.delete_before(cutoff).await?, old.len() as u64);
    assert_eq!(fx.store.count().await?, young.len() as u64);
    for r in &young {
        assert_eq!(
            fx.store.get("acc_ret", r.id).await?,
            Some(json(r)?),
            "a record of {} (cutoff {cutoff}) was deleted",
            r.action.time
        );
    }
    for r in old.iter().take(7) {
        assert_eq!(fx.store.get("acc_ret", r.id).await?, None);
    }
    let left: Vec<i64> = fx.db.rows().await?.iter().map(|r| r.time_ms).collect();
    assert_eq!(left, young_times);
    if fx.db.is_postgres() {
        // January to March dropped whole; April trimmed, not dropped.
        assert_eq!(
            fx.db.partitions().await?,
            [
                "audit_logs_p2025_04",
                "audit_logs_p2025_05",
                "audit_logs_p2025_07"
            ]
        );
    }
    // Idempotent.
    assert_eq!(fx.store.delete_before(cutoff).await?, 0);

    // A cutoff exactly at a month boundary: the month before goes whole, the boundary stays.
    assert_eq!(fx.store.delete_before(may).await?, 4);
    let left: Vec<i64> = fx.db.rows().await?.iter().map(|r| r.time_ms).collect();
    assert_eq!(left, young_times[4..]);
    if fx.db.is_postgres() {
        assert_eq!(
            fx.db.partitions().await?,
            ["audit_logs_p2025_05", "audit_logs_p2025_07"]
        );
    }

    // A month whose partition was dropped can be written again.
    let late = record(Some("acc_ret"), ms("2025-02-02T00:00:00.000Z"));
    assert_eq!(
        fx.store.insert(&rows(std::slice::from_ref(&late))?).await?,
        1
    );
    assert_eq!(fx.store.get("acc_ret", late.id).await?, Some(json(&late)?));
    assert_eq!(fx.store.count().await?, 3);
    Ok(())
}

async fn unicode_and_control_characters_round_trip<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let strings = [
        "Zürich – 東京 – Ελλάδα – 🌍🔐",
        "tab\there, newline\nthere, return\r, bell\u{7}, escape\u{1b}[31m, del\u{7f}",
        r#"quote " backslash \ slash / and an escaped \x1b[31m as the layer writes it"#,
        "line separators \u{2028}\u{2029}, BOM \u{feff}, C1 \u{85}\u{9b}",
        "combining e\u{301} and zero-width \u{200d}",
    ];
    let mut written = Vec::new();
    for (i, s) in strings.iter().enumerate() {
        let mut r = record(Some("acc_ü_東"), BASE_MS + i as i64);
        r.actor.email = Some(format!("{s}@example.com"));
        r.actor.token.name = Some((*s).to_owned());
        r.action.description = Some((*s).into());
        r.raw.user_agent = Some((*s).to_owned());
        r.resource.id = Some((*s).to_owned());
        // Bodies are JSON: a NUL there is written as the escape \u0000.
        r.resource.request = Some(serde_json::json!({ *s: s, "nul": "a\u{0}b" }).into());
        written.push(r);
    }
    assert_eq!(
        fx.store.insert(&rows(&written)?).await?,
        written.len() as u64
    );
    for r in &written {
        let stored = fx.store.get("acc_ü_東", r.id).await?.ok_or("not stored")?;
        assert_eq!(stored, json(r)?, "{}", fx.backend);
        assert_eq!(serde_json::from_str::<AuditRecord>(&stored)?, *r);
        // The JSON keeps the exact text; the filter columns hold it with control characters
        // escaped, as the layer writes them (PostgreSQL's text type refuses a NUL).
        let visible = |v: &Option<String>| {
            v.as_deref()
                .map(|v| audit_layer::escape::visible(v.as_bytes()).into_owned())
        };
        let (_, _, texts) = fx.db.columns(r.id).await?.ok_or("row missing")?;
        assert_eq!(texts[6], visible(&r.actor.email), "actor_email column");
        assert_eq!(
            texts[12],
            visible(&r.actor.token.name),
            "actor_token_name column"
        );
        assert_eq!(texts[16], visible(&r.resource.id), "resource_id column");
    }
    Ok(())
}

async fn records_without_an_account_are_stored<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let anonymous: Vec<AuditRecord> = (0..3).map(|i| record(None, BASE_MS + i)).collect();
    let with = record(Some("acc_x"), BASE_MS + 10);
    let mut all = anonymous.clone();
    all.push(with.clone());
    assert_eq!(fx.store.insert(&rows(&all)?).await?, 4);
    assert_eq!(fx.store.insert(&rows(&anonymous)?).await?, 0);
    assert_eq!(fx.store.count().await?, 4);

    let stored = fx.db.rows().await?;
    let none: Vec<_> = stored.iter().filter(|r| r.account_id.is_none()).collect();
    assert_eq!(none.len(), 3);
    for (row, r) in none.iter().zip(&anonymous) {
        assert_eq!(row.id, r.id);
        assert_eq!(row.record, json(r)?);
        assert!(!row.record.contains("\"account\""));
    }
    // No account is not an account named "".
    assert_eq!(fx.store.get("", anonymous[0].id).await?, None);
    assert_eq!(fx.store.get("acc_x", with.id).await?, Some(json(&with)?));
    Ok(())
}

/// A NUL character can reach a filter column from outside the layer's escaping (a directory
/// name, an app-built record); it must not make the record (and its whole batch) unstorable.
async fn nul_in_a_filter_column_is_stored<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    let mut r = record(Some("acc_nul"), BASE_MS);
    r.account.as_mut().ok_or("account")?.name = Some("Evil\u{0}Corp".to_owned());
    let fine = record(Some("acc_nul"), BASE_MS + 1);
    let outcome = fx.store.insert(&rows(&[r.clone(), fine.clone()])?).await;
    assert!(
        outcome.is_ok(),
        "{}: a batch with a NUL in account.name failed: {:?}",
        fx.backend,
        outcome.err()
    );
    assert_eq!(fx.store.get("acc_nul", fine.id).await?, Some(json(&fine)?));
    assert_eq!(fx.store.get("acc_nul", r.id).await?, Some(json(&r)?));
    Ok(())
}

async fn a_write_cancelled_part_way_leaves_the_store_whole<S: ChainedStore>(
    fx: &Fixture<S>,
) -> TestResult {
    // The pipeline drops a write that outlasts its timeout. Cut off at many points (before,
    // during and after sending the rows, while committing), a batch is stored whole or not
    // at all (perhaps a moment later: the database may finish what it was sent), and the
    // connection it used never serves a later query mid-protocol: every write and read after
    // it gets its own answer.
    let (mut certain, mut cut) = (0_u64, 0_u64);
    let mut next = 0_i64;
    for cut_us in (0..40_u64).map(|i| 200 + i * 700) {
        let batch: Vec<AuditRecord> = (next..next + 1500)
            .map(|i| {
                record(
                    Some(["acc_cut", "acc_other"][(i % 2) as usize]),
                    BASE_MS + i,
                )
            })
            .collect();
        next += 1500;
        let written = tokio::time::timeout(
            std::time::Duration::from_micros(cut_us),
            fx.store.insert(&rows(&batch)?),
        )
        .await;
        match written {
            Ok(result) => {
                assert_eq!(result?, 1500, "cut at {cut_us} us: not cut");
                certain += 1500;
            }
            Err(_) => cut += 1,
        }
        // A small write and a read right after: each answered for itself.
        let probe = record(Some("acc_probe"), BASE_MS + 1_000_000 + next);
        assert_eq!(
            fx.store
                .insert(&rows(std::slice::from_ref(&probe))?)
                .await?,
            1
        );
        certain += 1;
        assert_eq!(
            fx.store.get("acc_probe", probe.id).await?,
            Some(json(&probe)?)
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let count = fx.store.count().await?;
    let extra = count - certain;
    assert!(
        extra % 1500 == 0 && extra <= cut * 1500,
        "{count} stored: {certain} certain and {extra} of {cut} cut batches, not whole ones"
    );
    Ok(())
}

async fn a_small_batch_is_not_held_back<S: ChainedStore>(fx: &Fixture<S>) -> TestResult {
    // A strict-mode request waits for its batch, often of a few records: the fastest of nine
    // such writes must take well under the 40 ms a `COPY` was held back (see
    // `fastest_small_write`).
    let fastest = common::fastest_small_write(&fx.store, "acc_small").await?;
    assert!(
        fastest < std::time::Duration::from_millis(25),
        "the fastest write of 4 records took {fastest:?}"
    );
    Ok(())
}
