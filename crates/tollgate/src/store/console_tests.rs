//! The console's and the audit log's store queries, on both engines.

use super::*;

fn entry(actor: &str, action: &str, target: &str, ts: &str) -> AuditEntry {
    AuditEntry {
        ts: t(ts),
        actor: actor.into(),
        action: action.into(),
        target: target.into(),
        source: "127.0.0.1:5000".into(),
        status: 201,
        change: serde_json::json!({"id": target, "nested": {"n": 1}}),
    }
}

async fn audit_round_trips_filters_and_pages(store: Arc<dyn Store>) {
    let entries = [
        entry(
            "admin-key",
            "team.create",
            "team:a",
            "2026-01-01T10:00:00.123Z",
        ),
        entry(
            "ui:abcd1234",
            "key.create",
            "key:k1",
            "2026-01-02T10:00:00Z",
        ),
        entry("admin-key", "key.revoke", "key:k1", "2026-01-03T10:00:00Z"),
        entry(
            "signal:SIGHUP",
            "config.reload",
            "config",
            "2026-01-04T10:00:00Z",
        ),
    ];
    for e in &entries {
        store.insert_audit(e).await.unwrap();
    }
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery {
            limit: 100,
            ..AuditQuery::default()
        };
        f(&mut q);
        q
    };
    let all = store.audit(&q(|_| {})).await.unwrap();
    assert_eq!(all.len(), 4);
    // Newest first, ids increasing with insertion, every field kept.
    assert_eq!(all[3].entry, entries[0]);
    assert_eq!(all[0].entry, entries[3]);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));
    let actions =
        |rows: Vec<AuditRow>| -> Vec<String> { rows.into_iter().map(|r| r.entry.action).collect() };
    assert_eq!(
        actions(
            store
                .audit(&q(|q| q.actor = Some("admin-key".into())))
                .await
                .unwrap()
        ),
        ["key.revoke", "team.create"]
    );
    assert_eq!(
        actions(
            store
                .audit(&q(|q| q.target = Some("key:k1".into())))
                .await
                .unwrap()
        ),
        ["key.revoke", "key.create"]
    );
    assert_eq!(
        actions(
            store
                .audit(&q(|q| q.action = Some("config.reload".into())))
                .await
                .unwrap()
        ),
        ["config.reload"]
    );
    assert_eq!(
        actions(
            store
                .audit(&q(|q| {
                    q.from = Some(t("2026-01-02T00:00:00Z"));
                    q.to = Some(t("2026-01-04T00:00:00Z"));
                }))
                .await
                .unwrap()
        ),
        ["key.revoke", "key.create"]
    );
    let first = store
        .audit(&AuditQuery {
            limit: 3,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(first.len(), 3);
    let rest = store
        .audit(&AuditQuery {
            limit: 3,
            before: Some(first[2].id),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(actions(rest), ["team.create"]);
}

async fn spend_series_buckets_per_team_on_utc_boundaries(store: Arc<dyn Store>) {
    store
        .insert_ledger(&[
            ledger_row("s1", "a", "k1", "m", "2026-01-05T10:00:00Z", 100, 1, 1),
            ledger_row("s2", "a", "k1", "m", "2026-01-05T10:59:59.999Z", 50, 1, 1),
            ledger_row("s3", "b", "k2", "m", "2026-01-05T10:30:00Z", 7, 1, 1),
            ledger_row("s4", "a", "k1", "m", "2026-01-05T11:00:00Z", 1, 1, 1),
            ledger_row("s5", "a", "k1", "m", "2026-01-06T23:59:59Z", BIG, 1, 1),
            // Outside the window on both sides.
            ledger_row("s6", "a", "k1", "m", "2026-01-05T09:59:59Z", 1000, 1, 1),
            ledger_row("s7", "a", "k1", "m", "2026-01-07T00:00:00Z", 1000, 1, 1),
        ])
        .await
        .unwrap();
    let hourly = store
        .spend_series(&SeriesQuery {
            bucket: Bucket::Hour,
            from: t("2026-01-05T10:00:00Z"),
            to: t("2026-01-07T00:00:00Z"),
        })
        .await
        .unwrap();
    let pt = |start: &str, team: &str, requests: u64, cost: u64| SeriesPoint {
        start: t(start),
        team: TeamId::from(team),
        requests,
        cost: NanoUsd(cost),
    };
    assert_eq!(
        hourly,
        vec![
            pt("2026-01-05T10:00:00Z", "a", 2, 150),
            pt("2026-01-05T10:00:00Z", "b", 1, 7),
            pt("2026-01-05T11:00:00Z", "a", 1, 1),
            pt("2026-01-06T23:00:00Z", "a", 1, BIG),
        ]
    );
    let daily = store
        .spend_series(&SeriesQuery {
            bucket: Bucket::Day,
            from: t("2026-01-05T10:00:00Z"),
            to: t("2026-01-07T00:00:00Z"),
        })
        .await
        .unwrap();
    assert_eq!(
        daily,
        vec![
            pt("2026-01-05T00:00:00Z", "a", 3, 151),
            pt("2026-01-05T00:00:00Z", "b", 1, 7),
            pt("2026-01-06T00:00:00Z", "a", 1, BIG),
        ]
    );
}

async fn request_log_filters_by_model_and_status_and_pages(store: Arc<dyn Store>) {
    let mut rows = Vec::new();
    for i in 0..10u64 {
        let mut r = ledger_row(
            &format!("q{i}"),
            if i % 2 == 0 { "a" } else { "b" },
            "k1",
            if i < 3 { "gpt" } else { "claude" },
            &format!("2026-01-05T10:00:{i:02}Z"),
            i,
            1,
            1,
        );
        if i == 4 || i == 7 {
            r.status = 402;
            r.error_code = Some("budget_exceeded".into());
        }
        if i == 9 {
            r.status = 502;
        }
        rows.push(r);
    }
    store.insert_ledger(&rows).await.unwrap();
    let ids =
        |rows: Vec<LedgerRow>| -> Vec<String> { rows.into_iter().map(|r| r.request_id).collect() };
    let q = |f: fn(&mut RequestLogQuery)| {
        let mut q = RequestLogQuery {
            limit: 100,
            ..RequestLogQuery::default()
        };
        f(&mut q);
        q
    };
    assert_eq!(
        ids(store
            .request_log(&q(|q| q.model = Some("gpt".into())))
            .await
            .unwrap()),
        ["q2", "q1", "q0"]
    );
    assert_eq!(
        ids(store
            .request_log(&q(|q| q.status = Some(StatusFilter::Error)))
            .await
            .unwrap()),
        ["q9", "q7", "q4"]
    );
    assert_eq!(
        ids(store
            .request_log(&q(|q| q.status = Some(StatusFilter::Exact(402))))
            .await
            .unwrap()),
        ["q7", "q4"]
    );
    assert_eq!(
        store
            .request_log(&q(|q| q.status = Some(StatusFilter::Ok)))
            .await
            .unwrap()
            .len(),
        7
    );
    assert_eq!(
        ids(store
            .request_log(&q(|q| {
                q.team = Some(TeamId::from("a"));
                q.key = Some(KeyId::from("k1"));
                q.model = Some("claude".into());
            }))
            .await
            .unwrap()),
        ["q8", "q6", "q4"]
    );
    let page = |offset| RequestLogQuery {
        offset,
        limit: 4,
        ..RequestLogQuery::default()
    };
    assert_eq!(
        ids(store.request_log(&page(0)).await.unwrap()),
        ["q9", "q8", "q7", "q6"]
    );
    assert_eq!(
        ids(store.request_log(&page(8)).await.unwrap()),
        ["q1", "q0"]
    );
    assert!(store.request_log(&page(12)).await.unwrap().is_empty());
}

suite!(
    audit_round_trips_filters_and_pages,
    spend_series_buckets_per_team_on_utc_boundaries,
    request_log_filters_by_model_and_status_and_pages,
);
