//! One suite for every engine: each test is an async fn over `Arc<dyn Store>`,
//! run against in-memory SQLite and against PostgreSQL (a fresh schema per
//! test, dropped afterwards). The PostgreSQL half never skips: without a
//! server at `TOLLGATE_TEST_PG_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`) it fails and says so.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;

use super::*;
use crate::types::{KeyId, NanoUsd, Period, TeamId};

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn team(id: &str) -> TeamRecord {
    TeamRecord {
        id: TeamId::from(id),
        policies: vec!["daily-budget-cap".into(), "rpm".into()],
        budget: Some(NanoUsd(50 * NanoUsd::PER_USD)),
        period: Some(Period::Daily),
        models: Some(vec!["gpt-4o*".into()]),
        created_at: t("2026-01-01T00:00:00.123Z"),
        // Not the default: the round trips show the column is kept.
        cache: false,
    }
}

fn key(id: &str, team: &str, created_at: &str) -> KeyRecord {
    KeyRecord {
        id: KeyId::from(id),
        team: TeamId::from(team),
        name: Some(format!("{id} name")),
        secret_hash: format!("{id}-hash"),
        prefix: format!("sk-tg-{id}"),
        previous_secret_hash: None,
        previous_expires_at: None,
        models: None,
        policies: vec![],
        budget: None,
        period: None,
        requests_per_minute: Some(60),
        tokens_per_minute: None,
        expires_at: Some(t("2027-01-01T00:00:00Z")),
        revoked_at: None,
        suspended_at: None,
        metadata: serde_json::json!({"owner": "ci", "tags": [1, 2]}),
        created_at: t(created_at),
    }
}

#[allow(clippy::too_many_arguments)]
fn ledger_row(
    id: &str,
    team: &str,
    key: &str,
    model: &str,
    ts: &str,
    cost: u64,
    prompt: u64,
    completion: u64,
) -> LedgerRow {
    LedgerRow {
        ts: t(ts),
        request_id: id.into(),
        key_id: KeyId::from(key),
        team: TeamId::from(team),
        model: model.into(),
        provider: "mock".into(),
        status: 200,
        prompt_tokens: prompt,
        completion_tokens: completion,
        cost: NanoUsd(cost),
        latency_ms: 12,
        error_code: None,
        would_reject: Vec::new(),
        attempts: 0,
        cache: None,
        cache_saved: Default::default(),
        policy: None,
    }
}

const BIG: u64 = 5_000_000_000_000;

/// Five rows over three days, two teams, three keys, two models.
fn spend_fixture() -> Vec<LedgerRow> {
    let mut r5 = ledger_row(
        "r5",
        "b",
        "k3",
        "m2",
        "2026-01-03T12:00:00.001Z",
        BIG,
        50,
        5,
    );
    r5.status = 502;
    r5.error_code = Some("upstream_error".into());
    r5.provider = String::new();
    vec![
        ledger_row("r1", "a", "k1", "m1", "2026-01-01T10:00:00Z", 100, 10, 1),
        ledger_row(
            "r2",
            "a",
            "k1",
            "m2",
            "2026-01-01T23:59:59.999Z",
            200,
            20,
            2,
        ),
        ledger_row("r3", "a", "k2", "m1", "2026-01-02T00:00:00Z", 300, 30, 3),
        ledger_row("r4", "b", "k3", "m1", "2026-01-03T12:00:00Z", 400, 40, 4),
        r5,
    ]
}

fn spend_row(group: &str, requests: u64, prompt: u64, completion: u64, cost: u64) -> SpendRow {
    SpendRow {
        group: group.into(),
        requests,
        prompt_tokens: prompt,
        completion_tokens: completion,
        cost: NanoUsd(cost),
        cache_hits: 0,
        cache_saved: NanoUsd::ZERO,
    }
}

async fn ledger_count(store: &dyn Store) -> u64 {
    let rows = store.spend(&SpendQuery::default()).await.unwrap();
    assert_eq!(rows.len(), 1);
    rows[0].requests
}

// ---------------------------------------------------------------- the suite

async fn teams_crud_and_conflict(store: Arc<dyn Store>) {
    let a = team("a");
    store.create_team(&a).await.unwrap();
    let err = store.create_team(&a).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("`a`")),
        "{err}"
    );
    assert_eq!(
        store.get_team(&TeamId::from("a")).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.get_team(&TeamId::from("nope")).await.unwrap(), None);

    let b = TeamRecord {
        id: TeamId::from("b"),
        policies: vec![],
        budget: None,
        period: None,
        models: None,
        ..a.clone()
    };
    store.create_team(&b).await.unwrap();
    assert_eq!(
        store.list_teams().await.unwrap(),
        vec![a.clone(), b.clone()]
    );

    let a2 = TeamRecord {
        budget: Some(NanoUsd(1)),
        period: Some(Period::Monthly),
        models: None,
        ..a.clone()
    };
    assert!(store.update_team(&a2).await.unwrap());
    assert_eq!(store.get_team(&a.id).await.unwrap(), Some(a2));
    assert!(!store.update_team(&team("ghost")).await.unwrap());

    assert!(store.delete_team(&a.id).await.unwrap());
    assert!(!store.delete_team(&a.id).await.unwrap());
    assert_eq!(store.list_teams().await.unwrap(), vec![b]);
}

async fn keys_crud_list_and_update(store: Arc<dyn Store>) {
    let k1 = key("k1", "a", "2026-01-01T00:00:00.001Z");
    let k2 = key("k2", "a", "2026-01-02T00:00:00Z");
    let k3 = KeyRecord {
        models: Some(vec!["gpt-*".into(), "claude-3-5-sonnet".into()]),
        policies: vec!["p1".into()],
        budget: Some(NanoUsd(123_456_789)),
        period: Some(Period::Weekly),
        tokens_per_minute: Some(10_000),
        name: None,
        expires_at: None,
        ..key("k3", "b", "2026-01-03T00:00:00Z")
    };
    for k in [&k1, &k2, &k3] {
        store.create_key(k).await.unwrap();
    }
    let err = store.create_key(&k1).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("`k1`")),
        "{err}"
    );

    assert_eq!(store.get_key(&k3.id).await.unwrap(), Some(k3.clone()));
    assert_eq!(store.get_key(&KeyId::from("missing")).await.unwrap(), None);
    assert_eq!(
        store.list_keys(None).await.unwrap(),
        vec![k3.clone(), k2.clone(), k1.clone()]
    );
    assert_eq!(
        store.list_keys(Some(&TeamId::from("a"))).await.unwrap(),
        vec![k2.clone(), k1.clone()]
    );
    assert_eq!(
        store.list_keys(Some(&TeamId::from("zzz"))).await.unwrap(),
        vec![]
    );

    // Rotation, revocation and suspension all round-trip.
    let rotated = KeyRecord {
        secret_hash: "new-hash".into(),
        previous_secret_hash: Some(k1.secret_hash.clone()),
        previous_expires_at: Some(t("2026-01-01T01:00:00.500Z")),
        revoked_at: Some(t("2026-01-05T00:00:00Z")),
        suspended_at: Some(t("2026-01-04T00:00:00Z")),
        metadata: serde_json::json!({"owner": "someone else"}),
        ..k1.clone()
    };
    assert!(store.update_key(&rotated).await.unwrap());
    assert_eq!(store.get_key(&k1.id).await.unwrap(), Some(rotated.clone()));
    let cleared = KeyRecord {
        suspended_at: None,
        ..rotated
    };
    assert!(store.update_key(&cleared).await.unwrap());
    assert_eq!(store.get_key(&k1.id).await.unwrap(), Some(cleared));
    assert!(
        !store
            .update_key(&key("ghost", "a", "2026-01-01T00:00:00Z"))
            .await
            .unwrap()
    );
}

/// A suspension is one conditional update: it never writes back fields it
/// did not read, so a revocation stays, and a second trip changes nothing.
async fn keys_suspend_in_one_conditional_update(store: Arc<dyn Store>) {
    let live = key("live", "a", "2026-01-01T00:00:00Z");
    let revoked = KeyRecord {
        revoked_at: Some(t("2026-01-02T00:00:00Z")),
        ..key("revoked", "a", "2026-01-01T00:00:00Z")
    };
    store.create_key(&live).await.unwrap();
    store.create_key(&revoked).await.unwrap();
    let at = t("2026-01-03T00:00:00.250Z");
    assert!(store.suspend_key(&live.id, at).await.unwrap());
    let stored = store.get_key(&live.id).await.unwrap().unwrap();
    assert_eq!(
        stored,
        KeyRecord {
            suspended_at: Some(at),
            ..live.clone()
        }
    );
    assert!(
        !store
            .suspend_key(&live.id, t("2026-01-04T00:00:00Z"))
            .await
            .unwrap()
    );
    assert_eq!(store.get_key(&live.id).await.unwrap(), Some(stored));
    assert!(!store.suspend_key(&revoked.id, at).await.unwrap());
    assert_eq!(store.get_key(&revoked.id).await.unwrap(), Some(revoked));
    assert!(!store.suspend_key(&KeyId::from("ghost"), at).await.unwrap());
}

async fn ledger_insert_is_idempotent(store: Arc<dyn Store>) {
    let rows = spend_fixture();
    store.insert_ledger(&rows[0..2]).await.unwrap();
    // A retry of rows already written, mixed with new ones, adds only the new.
    store.insert_ledger(&rows[1..3]).await.unwrap();
    // Duplicates inside one batch too.
    store
        .insert_ledger(&[rows[3].clone(), rows[3].clone()])
        .await
        .unwrap();
    store.insert_ledger(&[]).await.unwrap();
    assert_eq!(ledger_count(store.as_ref()).await, 4);
    assert_eq!(
        store.spend(&SpendQuery::default()).await.unwrap(),
        vec![spend_row("total", 4, 100, 10, 1000)]
    );

    // A NUL in client-chosen text (PostgreSQL refuses it in `text`) does not
    // make the row unwritable.
    let mut nul = ledger_row(
        "nul\0id",
        "a",
        "k1",
        "gpt\0x",
        "2026-01-05T00:00:00Z",
        5,
        1,
        1,
    );
    nul.error_code = Some("bad\0code".into());
    store.insert_ledger(&[nul]).await.unwrap();
    let latest = store
        .requests(&RequestsQuery {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(latest[0].model, "gpt\u{FFFD}x");
    assert_eq!(latest[0].request_id, "nul\u{FFFD}id");
    assert_eq!(latest[0].error_code.as_deref(), Some("bad\u{FFFD}code"));
    assert_eq!(ledger_count(store.as_ref()).await, 5);

    // A large batch: more rows than one SQLite statement carries.
    let many: Vec<LedgerRow> = (0..2500)
        .map(|i| {
            ledger_row(
                &format!("bulk-{i}"),
                "c",
                "kc",
                "m",
                "2026-02-01T00:00:00Z",
                1,
                1,
                1,
            )
        })
        .collect();
    store.insert_ledger(&many).await.unwrap();
    let q = SpendQuery {
        team: Some(TeamId::from("c")),
        ..Default::default()
    };
    assert_eq!(
        store.spend(&q).await.unwrap(),
        vec![spend_row("total", 2500, 2500, 2500, 2500)]
    );
}

/// The response cache's columns come back as written, and spend counts the
/// hits and sums what they saved, per group.
async fn ledger_cache_columns_round_trip_and_sum_into_spend(store: Arc<dyn Store>) {
    let mut miss = ledger_row("c1", "a", "k1", "m1", "2026-01-01T10:00:00Z", 700, 10, 1);
    miss.cache = Some("miss".into());
    let mut hits = Vec::new();
    for i in 0..3 {
        let ts = format!("2026-01-01T10:00:0{}Z", i + 1);
        let mut hit = ledger_row(&format!("c{}", i + 2), "a", "k1", "m1", &ts, 0, 0, 0);
        hit.cache = Some("hit".into());
        hit.cache_saved = NanoUsd(700);
        hits.push(hit);
    }
    let mut skip = ledger_row("c9", "b", "k2", "m1", "2026-01-01T10:00:05Z", 50, 10, 1);
    skip.cache = Some("skip".into());
    let off = ledger_row("c10", "b", "k2", "m1", "2026-01-01T10:00:06Z", 50, 10, 1);
    let mut all = vec![miss, skip, off];
    all.extend(hits);
    store.insert_ledger(&all).await.unwrap();
    let mut rows = store
        .requests(&RequestsQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    rows.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    all.sort_by(|a, b| a.request_id.cmp(&b.request_id));
    assert_eq!(rows, all);
    let by_team = store
        .spend(&SpendQuery {
            group_by: Some(GroupBy::Team),
            ..Default::default()
        })
        .await
        .unwrap();
    let counts: Vec<_> = by_team
        .iter()
        .map(|r| {
            (
                r.group.as_str(),
                r.requests,
                r.cost.0,
                r.cache_hits,
                r.cache_saved.0,
            )
        })
        .collect();
    assert_eq!(counts, vec![("a", 4, 700, 3, 2100), ("b", 2, 100, 0, 0)]);
}

/// What shadow policies would have rejected comes back as written, in
/// order, and a row without any reads back empty.
async fn ledger_would_reject_round_trips(store: Arc<dyn Store>) {
    let mut shadowed = ledger_row("w1", "a", "k1", "m1", "2026-01-01T10:00:00Z", 100, 10, 1);
    shadowed.would_reject = vec![
        "trial-cap:budget_exceeded".into(),
        "narrow:model_not_allowed".into(),
        "trial-cap:budget_exceeded".into(),
    ];
    // Names are the operator's: quotes, commas, colons and non-ASCII survive.
    let mut odd = ledger_row("w2", "a", "k1", "m1", "2026-01-01T10:00:01Z", 100, 10, 1);
    odd.would_reject = vec![
        "rl \"burst\", per-team:rate_limit_exceeded".into(),
        "lg:ä:loop_detected".into(),
    ];
    let plain = ledger_row("w3", "a", "k1", "m1", "2026-01-01T10:00:02Z", 100, 10, 1);
    store
        .insert_ledger(&[shadowed.clone(), odd.clone(), plain.clone()])
        .await
        .unwrap();
    let rows = store
        .requests(&RequestsQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows, vec![plain, odd, shadowed]);
    assert!(rows[0].would_reject.is_empty());
    // Spend is not affected by what was only shadowed.
    assert_eq!(
        store.spend(&SpendQuery::default()).await.unwrap(),
        vec![spend_row("total", 3, 30, 3, 300)]
    );
}

async fn spend_groups_and_filters(store: Arc<dyn Store>) {
    store.insert_ledger(&spend_fixture()).await.unwrap();
    let by = |g| SpendQuery {
        group_by: Some(g),
        ..Default::default()
    };

    assert_eq!(
        store.spend(&SpendQuery::default()).await.unwrap(),
        vec![spend_row("total", 5, 150, 15, 1000 + BIG)]
    );
    assert_eq!(
        store.spend(&by(GroupBy::Team)).await.unwrap(),
        vec![
            spend_row("a", 3, 60, 6, 600),
            spend_row("b", 2, 90, 9, 400 + BIG)
        ]
    );
    assert_eq!(
        store.spend(&by(GroupBy::Key)).await.unwrap(),
        vec![
            spend_row("k1", 2, 30, 3, 300),
            spend_row("k2", 1, 30, 3, 300),
            spend_row("k3", 2, 90, 9, 400 + BIG)
        ]
    );
    assert_eq!(
        store.spend(&by(GroupBy::Model)).await.unwrap(),
        vec![
            spend_row("m1", 3, 80, 8, 800),
            spend_row("m2", 2, 70, 7, 200 + BIG)
        ]
    );
    assert_eq!(
        store.spend(&by(GroupBy::Day)).await.unwrap(),
        vec![
            spend_row("2026-01-01", 2, 30, 3, 300),
            spend_row("2026-01-02", 1, 30, 3, 300),
            spend_row("2026-01-03", 2, 90, 9, 400 + BIG),
        ]
    );

    let team_a = SpendQuery {
        team: Some(TeamId::from("a")),
        group_by: Some(GroupBy::Model),
        ..Default::default()
    };
    assert_eq!(
        store.spend(&team_a).await.unwrap(),
        vec![
            spend_row("m1", 2, 40, 4, 400),
            spend_row("m2", 1, 20, 2, 200)
        ]
    );
    let key_k1 = SpendQuery {
        key: Some(KeyId::from("k1")),
        ..Default::default()
    };
    assert_eq!(
        store.spend(&key_k1).await.unwrap(),
        vec![spend_row("total", 2, 30, 3, 300)]
    );

    // `from` inclusive, `to` exclusive, to the millisecond.
    let window = SpendQuery {
        from: Some(t("2026-01-02T00:00:00Z")),
        to: Some(t("2026-01-03T12:00:00.001Z")),
        ..Default::default()
    };
    assert_eq!(
        store.spend(&window).await.unwrap(),
        vec![spend_row("total", 2, 70, 7, 700)]
    );
    let window_by_team = SpendQuery {
        group_by: Some(GroupBy::Team),
        ..window
    };
    assert_eq!(
        store.spend(&window_by_team).await.unwrap(),
        vec![spend_row("a", 1, 30, 3, 300), spend_row("b", 1, 40, 4, 400)]
    );

    // Nothing matches: one zero `total` row, or no groups at all.
    let none = SpendQuery {
        team: Some(TeamId::from("zzz")),
        ..Default::default()
    };
    assert_eq!(
        store.spend(&none).await.unwrap(),
        vec![spend_row("total", 0, 0, 0, 0)]
    );
    let none_grouped = SpendQuery {
        group_by: Some(GroupBy::Day),
        ..none
    };
    assert_eq!(store.spend(&none_grouped).await.unwrap(), vec![]);
}

async fn requests_newest_first_with_limit(store: Arc<dyn Store>) {
    let rows = spend_fixture();
    store.insert_ledger(&rows).await.unwrap();
    let ids = |v: Vec<LedgerRow>| v.into_iter().map(|r| r.request_id).collect::<Vec<_>>();

    let latest = store
        .requests(&RequestsQuery {
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    // Every field round-trips, including the error code and empty provider.
    assert_eq!(latest[0], rows[4]);
    assert_eq!(ids(latest), vec!["r5", "r4", "r3"]);
    let team_a = RequestsQuery {
        team: Some(TeamId::from("a")),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(store.requests(&team_a).await.unwrap()),
        vec!["r3", "r2", "r1"]
    );
    let key_k1 = RequestsQuery {
        key: Some(KeyId::from("k1")),
        limit: 1,
        ..Default::default()
    };
    assert_eq!(ids(store.requests(&key_k1).await.unwrap()), vec!["r2"]);
    // No limit given: the default, which covers these five.
    assert_eq!(
        store
            .requests(&RequestsQuery::default())
            .await
            .unwrap()
            .len(),
        5
    );

    // Same timestamp: the later write is the newer.
    let same_ts = [
        ledger_row("s1", "d", "kd", "m", "2026-03-01T00:00:00Z", 1, 1, 1),
        ledger_row("s2", "d", "kd", "m", "2026-03-01T00:00:00Z", 1, 1, 1),
    ];
    store.insert_ledger(&same_ts).await.unwrap();
    let team_d = RequestsQuery {
        team: Some(TeamId::from("d")),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(store.requests(&team_d).await.unwrap()),
        vec!["s2", "s1"]
    );
}

/// A rebuilt budget counter reads a scope's spend and every writer's mark
/// in one snapshot; a mark never goes back, and a heartbeat (no rows) only
/// says the writer is alive.
async fn ledger_snapshot_reads_spend_and_writer_marks(store: Arc<dyn Store>) {
    let mark = |writer: &str, seq| WriterMark {
        writer: writer.to_owned(),
        seq,
    };
    store
        .insert_ledger_marked(&spend_fixture(), &mark("w1", 3))
        .await
        .unwrap();
    store
        .insert_ledger_marked(&[], &mark("w2", 0))
        .await
        .unwrap();
    store
        .insert_ledger_marked(&[], &mark("w1", 2))
        .await
        .unwrap();
    let team_a = SpendScope::Team(TeamId::from("a"));
    let mut snapshot = store
        .ledger_snapshot(&team_a, DateTime::<Utc>::UNIX_EPOCH)
        .await
        .unwrap();
    assert_eq!(snapshot.spent, NanoUsd(600));
    snapshot
        .writers
        .sort_by(|a, b| a.mark.writer.cmp(&b.mark.writer));
    let marks: Vec<_> = snapshot.writers.iter().map(|w| w.mark.clone()).collect();
    assert_eq!(marks, vec![mark("w1", 3), mark("w2", 0)]);
    assert!(
        snapshot.writers.iter().all(|w| w.idle_ms < 60_000),
        "{snapshot:?}"
    );
    let nobody = SpendScope::Key(KeyId::from("nobody"));
    let empty = store
        .ledger_snapshot(&nobody, DateTime::<Utc>::UNIX_EPOCH)
        .await
        .unwrap();
    assert_eq!(empty.spent, NanoUsd(0));
    assert_eq!(empty.writers.len(), 2);
}

/// With marks on, the writer numbers rows as recorded and writes its mark
/// with them: the snapshot says exactly which rows are in.
async fn writer_marks_its_rows(store: Arc<dyn Store>) {
    let handle = LedgerWriter::spawn(
        store.clone(),
        LedgerOptions {
            writer_heartbeat: Some(Duration::from_millis(50)),
            ..opts(100, Duration::from_secs(3600), 1_000_000)
        },
    );
    let seqs: Vec<u64> = numbered(5, "marked")
        .map(|row| handle.record(row))
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(handle.durable(), 0);
    handle.flush().await;
    assert_eq!(handle.durable(), 5);
    let snapshot = store
        .ledger_snapshot(
            &SpendScope::Team(TeamId::from("t")),
            DateTime::<Utc>::UNIX_EPOCH,
        )
        .await
        .unwrap();
    let me: Vec<_> = snapshot
        .writers
        .iter()
        .filter(|w| w.mark.writer == handle.writer_id())
        .map(|w| w.mark.seq)
        .collect();
    assert_eq!(me, vec![5]);
    handle.shutdown().await;
}

async fn spend_since_by_scope(store: Arc<dyn Store>) {
    store.insert_ledger(&spend_fixture()).await.unwrap();
    let team_a = SpendScope::Team(TeamId::from("a"));
    assert_eq!(
        store
            .spend_since(&team_a, DateTime::<Utc>::UNIX_EPOCH)
            .await
            .unwrap(),
        NanoUsd(600)
    );
    assert_eq!(
        store
            .spend_since(&team_a, t("2026-01-01T23:59:59.999Z"))
            .await
            .unwrap(),
        NanoUsd(500)
    );
    assert_eq!(
        store
            .spend_since(&team_a, t("2026-01-02T00:00:00.001Z"))
            .await
            .unwrap(),
        NanoUsd(0)
    );
    let k3 = SpendScope::Key(KeyId::from("k3"));
    assert_eq!(
        store
            .spend_since(&k3, t("2026-01-03T00:00:00Z"))
            .await
            .unwrap(),
        NanoUsd(400 + BIG)
    );
    let nobody = SpendScope::Key(KeyId::from("nobody"));
    assert_eq!(
        store
            .spend_since(&nobody, DateTime::<Utc>::UNIX_EPOCH)
            .await
            .unwrap(),
        NanoUsd(0)
    );
}

async fn settings_round_trip(store: Arc<dyn Store>) {
    assert_eq!(store.get_setting("admin_key_hash").await.unwrap(), None);
    store.set_setting("admin_key_hash", "abc").await.unwrap();
    assert_eq!(
        store
            .get_setting("admin_key_hash")
            .await
            .unwrap()
            .as_deref(),
        Some("abc")
    );
    store.set_setting("admin_key_hash", "def").await.unwrap();
    assert_eq!(
        store
            .get_setting("admin_key_hash")
            .await
            .unwrap()
            .as_deref(),
        Some("def")
    );
    store.ping().await.unwrap();
}

// ------------------------------------------------------- ledger writer tests

/// Wraps a store to count ledger writes and fail them on demand.
struct Flaky {
    inner: Arc<dyn Store>,
    /// Every ledger write fails while set.
    down: AtomicBool,
    /// The next this-many ledger writes land, then report failure anyway.
    ambiguous: AtomicU32,
    ledger_calls: AtomicUsize,
}

impl Flaky {
    fn new(inner: Arc<dyn Store>) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner,
            down: AtomicBool::new(false),
            ambiguous: AtomicU32::new(0),
            ledger_calls: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl Store for Flaky {
    async fn create_team(&self, team: &TeamRecord) -> Result<(), StoreError> {
        self.inner.create_team(team).await
    }
    async fn get_team(&self, id: &TeamId) -> Result<Option<TeamRecord>, StoreError> {
        self.inner.get_team(id).await
    }
    async fn list_teams(&self) -> Result<Vec<TeamRecord>, StoreError> {
        self.inner.list_teams().await
    }
    async fn update_team(&self, team: &TeamRecord) -> Result<bool, StoreError> {
        self.inner.update_team(team).await
    }
    async fn delete_team(&self, id: &TeamId) -> Result<bool, StoreError> {
        self.inner.delete_team(id).await
    }
    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        self.inner.create_key(key).await
    }
    async fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.get_key(id).await
    }
    async fn list_keys(&self, team: Option<&TeamId>) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list_keys(team).await
    }
    async fn update_key(&self, key: &KeyRecord) -> Result<bool, StoreError> {
        self.inner.update_key(key).await
    }
    async fn suspend_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.inner.suspend_key(id, at).await
    }
    async fn insert_ledger(&self, rows: &[LedgerRow]) -> Result<(), StoreError> {
        self.ledger_calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("simulated outage".into()));
        }
        if rows.iter().any(|r| r.request_id.starts_with("poison")) {
            return Err(StoreError::Backend("simulated unwritable row".into()));
        }
        self.inner.insert_ledger(rows).await?;
        if self
            .ambiguous
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Backend("simulated lost acknowledgement".into()));
        }
        Ok(())
    }
    async fn spend(&self, query: &SpendQuery) -> Result<Vec<SpendRow>, StoreError> {
        self.inner.spend(query).await
    }
    async fn requests(&self, query: &RequestsQuery) -> Result<Vec<LedgerRow>, StoreError> {
        self.inner.requests(query).await
    }
    async fn spend_since(
        &self,
        scope: &SpendScope,
        since: DateTime<Utc>,
    ) -> Result<NanoUsd, StoreError> {
        self.inner.spend_since(scope, since).await
    }
    async fn get_setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.inner.get_setting(name).await
    }
    async fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        self.inner.set_setting(name, value).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("simulated outage".into()));
        }
        self.inner.ping().await
    }
}

fn numbered(n: usize, prefix: &str) -> impl Iterator<Item = LedgerRow> + use<'_> {
    (0..n).map(move |i| {
        ledger_row(
            &format!("{prefix}-{i}"),
            "w",
            "kw",
            "m",
            "2026-04-01T00:00:00Z",
            7,
            1,
            1,
        )
    })
}

fn opts(max_batch: usize, flush_interval: Duration, max_buffered: usize) -> LedgerOptions {
    LedgerOptions {
        max_batch,
        flush_interval,
        max_buffered,
        writer_heartbeat: None,
    }
}

/// Polls until the ledger holds `want` rows; bounded so a failure is a
/// failure, not a hang.
async fn wait_for_rows(store: &dyn Store, want: u64) -> u64 {
    let mut got = 0;
    for _ in 0..500 {
        got = ledger_count(store).await;
        if got >= want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    got
}

async fn writer_batches_rows(store: Arc<dyn Store>) {
    let flaky = Flaky::new(store);
    let handle = LedgerWriter::spawn(
        flaky.clone(),
        opts(100, Duration::from_secs(3600), 1_000_000),
    );
    for row in numbered(1000, "batch") {
        handle.record(row);
    }
    assert_eq!(handle.buffered(), 1000);
    handle.flush().await;
    assert_eq!(handle.buffered(), 0);
    assert_eq!(ledger_count(flaky.as_ref()).await, 1000);
    // 1000 rows recorded without yielding go out as ten full batches.
    assert_eq!(flaky.ledger_calls.load(Ordering::SeqCst), 10);
    handle.shutdown().await;
}

async fn writer_flushes_on_interval_and_full_batch(store: Arc<dyn Store>) {
    let flaky = Flaky::new(store);
    // The interval alone writes a few rows, with no flush() call.
    let handle = LedgerWriter::spawn(
        flaky.clone(),
        opts(1000, Duration::from_millis(50), 1_000_000),
    );
    for row in numbered(3, "tick") {
        handle.record(row);
    }
    assert_eq!(wait_for_rows(flaky.as_ref(), 3).await, 3);
    handle.shutdown().await;

    // A full batch is written without waiting for a (one-hour) interval.
    let handle = LedgerWriter::spawn(
        flaky.clone(),
        opts(10, Duration::from_secs(3600), 1_000_000),
    );
    for row in numbered(10, "full") {
        handle.record(row);
    }
    assert_eq!(wait_for_rows(flaky.as_ref(), 13).await, 13);
    handle.shutdown().await;
}

/// A steady trickle of rows goes out as one transaction per interval, not
/// one per write: written back to back, each small transaction re-wrote
/// the same index pages and cost more than the rows themselves.
async fn writer_paces_a_steady_trickle_to_one_batch_per_interval(store: Arc<dyn Store>) {
    let flaky = Flaky::new(store);
    let handle = LedgerWriter::spawn(
        flaky.clone(),
        opts(1000, Duration::from_millis(100), 1_000_000),
    );
    let started = std::time::Instant::now();
    let mut sent = 0;
    for row in numbered(500, "trickle") {
        handle.record(row);
        sent += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = started.elapsed();
    handle.flush().await;
    assert_eq!(ledger_count(flaky.as_ref()).await, sent);
    let calls = flaky.ledger_calls.load(Ordering::SeqCst);
    // One write per 100 ms interval, the first at once, the flush's last.
    let most = took.as_millis() / 100 + 3;
    assert!(
        (calls as u128) <= most,
        "{calls} writes for {sent} rows over {took:?} (at most {most})"
    );
    handle.shutdown().await;
}

/// SPEC §6: a SIGKILL loses at most the last second of ledger rows, so with
/// the default options a recorded row is durable well within a second
/// without anyone calling flush().
async fn writer_default_options_make_rows_durable_within_a_second(store: Arc<dyn Store>) {
    let handle = LedgerWriter::spawn(store.clone(), LedgerOptions::default());
    assert_eq!(
        LedgerOptions::default().flush_interval,
        Duration::from_millis(200)
    );
    let started = std::time::Instant::now();
    for row in numbered(5, "bound") {
        handle.record(row);
    }
    assert_eq!(wait_for_rows(store.as_ref(), 5).await, 5);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "rows took {took:?} to become durable"
    );
    handle.shutdown().await;
}

async fn writer_shutdown_flushes(store: Arc<dyn Store>) {
    let flaky = Flaky::new(store);
    let handle = LedgerWriter::spawn(
        flaky.clone(),
        opts(1000, Duration::from_secs(3600), 1_000_000),
    );
    for row in numbered(7, "stop") {
        handle.record(row);
    }
    let clone = handle.clone();
    tokio::time::timeout(Duration::from_secs(10), clone.shutdown())
        .await
        .unwrap();
    assert_eq!(ledger_count(flaky.as_ref()).await, 7);
    // After shutdown a row is refused (and logged), never half-accepted.
    handle.record(ledger_row(
        "late",
        "w",
        "kw",
        "m",
        "2026-04-01T00:00:00Z",
        1,
        1,
        1,
    ));
    assert_eq!(handle.buffered(), 0);
    tokio::time::timeout(Duration::from_secs(10), handle.flush())
        .await
        .unwrap();
    assert_eq!(ledger_count(flaky.as_ref()).await, 7);
}

async fn writer_survives_store_outage(store: Arc<dyn Store>) {
    let flaky = Flaky::new(store);
    // max_buffered below the rows queued in the outage: still nothing dropped.
    let handle = LedgerWriter::spawn(flaky.clone(), opts(8, Duration::from_millis(20), 5));
    flaky.down.store(true, Ordering::SeqCst);
    for row in numbered(20, "outage") {
        handle.record(row);
    }
    let flushing = tokio::spawn({
        let handle = handle.clone();
        async move { handle.flush().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !flushing.is_finished(),
        "flush() returned while the store was down"
    );
    assert_eq!(handle.buffered(), 20);
    assert!(
        flaky.ledger_calls.load(Ordering::SeqCst) >= 2,
        "the writer should have retried"
    );
    assert_eq!(ledger_count(flaky.as_ref()).await, 0);
    // More rows arrive during the outage.
    for row in numbered(5, "during") {
        handle.record(row);
    }
    assert_eq!(handle.buffered(), 25);

    flaky.down.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(15), flushing)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(15), handle.flush())
        .await
        .unwrap();
    assert_eq!(handle.buffered(), 0);
    assert_eq!(ledger_count(flaky.as_ref()).await, 25);
    handle.shutdown().await;
}

async fn writer_retry_after_ambiguous_failure_is_not_double_billed(store: Arc<dyn Store>) {
    let flaky = Flaky::new(store);
    let handle = LedgerWriter::spawn(
        flaky.clone(),
        opts(10, Duration::from_millis(20), 1_000_000),
    );
    flaky.ambiguous.store(2, Ordering::SeqCst);
    for row in numbered(30, "ambiguous") {
        handle.record(row);
    }
    tokio::time::timeout(Duration::from_secs(15), handle.flush())
        .await
        .unwrap();
    assert_eq!(flaky.ambiguous.load(Ordering::SeqCst), 0);
    assert!(flaky.ledger_calls.load(Ordering::SeqCst) >= 5);
    assert_eq!(store_total(flaky.as_ref()).await, (30, NanoUsd(30 * 7)));
    handle.shutdown().await;
}

async fn writer_sets_aside_a_row_the_store_refuses(store: Arc<dyn Store>) {
    let flaky = Flaky::new(store);
    let handle = LedgerWriter::spawn(
        flaky.clone(),
        opts(100, Duration::from_millis(20), 1_000_000),
    );
    for row in numbered(10, "good-a") {
        handle.record(row);
    }
    handle.record(ledger_row(
        "poison-1",
        "w",
        "kw",
        "m",
        "2026-04-01T00:00:00Z",
        1_000,
        1,
        1,
    ));
    for row in numbered(10, "good-b") {
        handle.record(row);
    }
    tokio::time::timeout(Duration::from_secs(15), handle.flush())
        .await
        .unwrap();
    assert_eq!(handle.buffered(), 0);
    assert_eq!(handle.rejected(), 1);
    assert_eq!(store_total(flaky.as_ref()).await, (20, NanoUsd(20 * 7)));
    // The writer goes on as before.
    for row in numbered(5, "good-c") {
        handle.record(row);
    }
    handle.shutdown().await;
    assert_eq!(ledger_count(flaky.as_ref()).await, 25);
}

async fn store_total(store: &dyn Store) -> (u64, NanoUsd) {
    let rows = store.spend(&SpendQuery::default()).await.unwrap();
    (rows[0].requests, rows[0].cost)
}

// ------------------------------------------------------------ the harness

async fn sqlite_store() -> Arc<dyn Store> {
    connect("sqlite::memory:").await.unwrap()
}

fn pg_base_url() -> String {
    std::env::var("TOLLGATE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Runs `test` against a store in a schema of its own, and drops the schema
/// afterwards even when the test fails.
async fn with_pg<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    with_pg_schema(|url| async move {
        let store = connect(&url).await.unwrap();
        test(store).await;
    })
    .await;
}

/// A pool on the test database, which is created when the server lacks it
/// (a fresh machine has the server but maybe not database `test`).
async fn pg_admin_pool(base: &str) -> sqlx::PgPool {
    let fail = |e: sqlx::Error| -> ! {
        panic!(
            "the PostgreSQL store tests need a server at `{}` (override with TOLLGATE_TEST_PG_URL): {e}",
            redact_url(base)
        )
    };
    match sqlx::PgPool::connect(base).await {
        Ok(pool) => pool,
        Err(e) if e.to_string().contains("does not exist") => {
            let options: sqlx::postgres::PgConnectOptions = base.parse().unwrap();
            let db = options.get_database().unwrap_or("test").to_owned();
            let maintenance = sqlx::PgPool::connect_with(options.database("postgres"))
                .await
                .unwrap_or_else(|e| fail(e));
            // Tests run in parallel: another one may create it first.
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{db}\"")))
                .execute(&maintenance)
                .await;
            maintenance.close().await;
            sqlx::PgPool::connect(base)
                .await
                .unwrap_or_else(|e| fail(e))
        }
        Err(e) => fail(e),
    }
}

/// Runs `test` with the URL of a fresh schema, dropped afterwards even when
/// the test fails.
async fn with_pg_schema<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    let base = pg_base_url();
    let admin = pg_admin_pool(&base).await;
    let schema = format!("tg_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
    let outcome = AssertUnwindSafe(test(url)).catch_unwind().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite_suite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::sqlite_store().await).await;
                }
            )*
        }
        mod postgres_suite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::with_pg(super::$name).await;
                }
            )*
        }
    };
}

suite!(
    teams_crud_and_conflict,
    keys_crud_list_and_update,
    keys_suspend_in_one_conditional_update,
    ledger_insert_is_idempotent,
    ledger_would_reject_round_trips,
    ledger_cache_columns_round_trip_and_sum_into_spend,
    spend_groups_and_filters,
    requests_newest_first_with_limit,
    spend_since_by_scope,
    ledger_snapshot_reads_spend_and_writer_marks,
    writer_marks_its_rows,
    settings_round_trip,
    writer_batches_rows,
    writer_flushes_on_interval_and_full_batch,
    writer_paces_a_steady_trickle_to_one_batch_per_interval,
    writer_shutdown_flushes,
    writer_default_options_make_rows_durable_within_a_second,
    writer_survives_store_outage,
    writer_retry_after_ambiguous_failure_is_not_double_billed,
    writer_sets_aside_a_row_the_store_refuses,
    journal_of_a_crashed_gateway_is_replayed_into_the_ledger,
);

/// The spend journal (`store::journal`) works on every engine: a gateway
/// that died with a settled row unwritten and a request in flight leaves
/// both in the ledger after the next start.
async fn journal_of_a_crashed_gateway_is_replayed_into_the_ledger(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let at = t("2026-01-05T10:00:00Z");
    let k = key("k1", "a", "2026-01-01T00:00:00Z");
    {
        let (journal, _) = Journal::open(dir.path(), store.as_ref()).await.unwrap();
        let ledger = LedgerWriter::spawn(
            store.clone(),
            LedgerOptions {
                flush_interval: Duration::from_secs(3600),
                ..LedgerOptions::default()
            },
        );
        let settled = journal
            .admitted("j1", at, &k, "gpt-4o", NanoUsd(500))
            .unwrap();
        settled.settle(
            &ledger,
            ledger_row("j1", "a", "k1", "gpt-4o", "2026-01-05T10:00:01Z", 300, 1, 1),
        );
        // Still at the provider when the process dies (dropping the entry
        // at the end of the block touches no file).
        let _in_flight = journal.admitted("j2", at, &k, "gpt-4o", NanoUsd(700));
        // Killed: the writer never writes j1.
        std::mem::forget(ledger);
    }
    let (journal, replayed) = Journal::open(dir.path(), store.as_ref()).await.unwrap();
    assert_eq!((replayed.requests, replayed.unsettled), (2, 1));
    assert_eq!(
        store
            .spend_since(
                &SpendScope::Key(KeyId::from("k1")),
                t("2026-01-05T00:00:00Z")
            )
            .await
            .unwrap(),
        NanoUsd(300 + 700)
    );
    assert_eq!(ledger_count(store.as_ref()).await, 2);
    journal.retire(true);
}

// ------------------------------------------------------- engine-specific

#[tokio::test]
async fn sqlite_file_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested-name.db");
    let url = format!("sqlite://{}", path.display());
    assert!(!path.exists());
    {
        let store = connect(&url).await.unwrap();
        store.create_team(&team("a")).await.unwrap();
        store
            .create_key(&key("k1", "a", "2026-01-01T00:00:00Z"))
            .await
            .unwrap();
        store.set_setting("admin_key_hash", "h").await.unwrap();
        let handle = LedgerWriter::spawn(store.clone(), LedgerOptions::default());
        for row in spend_fixture() {
            handle.record(row);
        }
        handle.shutdown().await;
    }
    assert!(path.exists());
    let store = connect(&url).await.unwrap();
    assert_eq!(
        store.get_team(&TeamId::from("a")).await.unwrap(),
        Some(team("a"))
    );
    assert_eq!(
        store.get_key(&KeyId::from("k1")).await.unwrap(),
        Some(key("k1", "a", "2026-01-01T00:00:00Z"))
    );
    assert_eq!(
        store
            .get_setting("admin_key_hash")
            .await
            .unwrap()
            .as_deref(),
        Some("h")
    );
    assert_eq!(
        store.spend(&SpendQuery::default()).await.unwrap(),
        vec![spend_row("total", 5, 150, 15, 1000 + BIG)]
    );
}

/// A ledger row as the schema before migration 0003 held it (no
/// `would_reject`), and the columns it is written with.
const OLD_LEDGER_INSERT: &str = "INSERT INTO ledger (ts, request_id, key_id, team, model, provider, status, \
     prompt_tokens, completion_tokens, cost, latency_ms, error_code) VALUES ";

/// After the upgrade, a row from before reads back with nothing shadowed,
/// and new rows carry the field.
async fn check_upgraded(store: Arc<dyn Store>) {
    let old = store
        .requests(&RequestsQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(old[0].request_id, "before-0003");
    assert_eq!(old[0].cost, NanoUsd(7));
    assert!(old[0].would_reject.is_empty());
    let mut new = ledger_row(
        "after-0003",
        "a",
        "k1",
        "m",
        "2026-01-02T00:00:00Z",
        5,
        1,
        1,
    );
    new.would_reject = vec!["trial:rate_limit_exceeded".into()];
    store
        .insert_ledger(std::slice::from_ref(&new))
        .await
        .unwrap();
    let rows = store
        .requests(&RequestsQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows[0], new);
    assert_eq!(
        store
            .spend_since(
                &SpendScope::Team(TeamId::from("a")),
                t("2026-01-01T00:00:00Z")
            )
            .await
            .unwrap(),
        NanoUsd(12)
    );
}

#[tokio::test]
async fn sqlite_ledger_from_before_would_reject_migrates() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
            .await
            .unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run_to(2, &pool)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{OLD_LEDGER_INSERT}({}, 'before-0003', 'k1', 'a', 'm', 'mock', 200, 1, 1, 7, 3, NULL)",
            t("2026-01-01T12:00:00Z").timestamp_millis()
        )))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    check_upgraded(connect(&url).await.unwrap()).await;
}

#[tokio::test]
async fn postgres_ledger_from_before_would_reject_migrates() {
    with_pg_schema(|url| async move {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::migrate!("./migrations/postgres")
            .run_to(2, &pool)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "{OLD_LEDGER_INSERT}('2026-01-01T12:00:00Z', 'before-0003', 'k1', 'a', 'm', 'mock', 200, 1, 1, 7, 3, NULL)"
        )))
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        check_upgraded(connect(&url).await.unwrap()).await;
    })
    .await;
}

#[tokio::test]
async fn sqlite_is_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("wal.db").display());
    let store = connect(&url).await.unwrap();
    store.ping().await.unwrap();
    drop(store);
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn unknown_scheme_is_refused_with_redacted_url() {
    let err = connect("mysql://root:hunter2@127.0.0.1/db")
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(msg.contains("`mysql://root:*****@127.0.0.1/db`"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[tokio::test]
async fn postgres_connect_failure_does_not_print_the_password() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let err = connect("postgres://tg:hunter2@127.0.0.1:1/test")
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(msg.contains("tg:*****@127.0.0.1:1"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

/// A TCP proxy in front of PostgreSQL that a test can cut (every open
/// connection reset, new ones refused) and restore: a real outage as the
/// store's pool sees it, without touching the shared server.
struct CutProxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<parking_lot::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    async fn start(target: String) -> CutProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let accept = tokio::spawn({
            let (up, conns) = (up.clone(), conns.clone());
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !up.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees the connection closed
                    }
                    let target = target.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(&target).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    conns.lock().push(task.abort_handle());
                }
            }
        });
        CutProxy {
            addr,
            up,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for conn in self.conns.lock().drain(..) {
            conn.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// `url` with its host and port replaced by `addr`.
fn via(url: &str, addr: std::net::SocketAddr) -> String {
    let rest_start = url.find("://").unwrap() + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host_start = rest[..authority_end].rfind('@').map_or(0, |at| at + 1);
    format!(
        "{}{}{}{}",
        &url[..rest_start],
        &rest[..host_start],
        addr,
        &rest[authority_end..]
    )
}

#[test]
fn via_swaps_only_host_and_port() {
    let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    assert_eq!(
        via("postgres://u@h:5432/db?x=1", addr),
        "postgres://u@127.0.0.1:9/db?x=1"
    );
    assert_eq!(via("postgres://h/db", addr), "postgres://127.0.0.1:9/db");
}

#[tokio::test]
async fn postgres_outage_and_return_loses_no_ledger_row() {
    with_pg_schema(|url| async move {
        let direct = connect(&url).await.unwrap();
        let pg: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
        let proxy = CutProxy::start(format!("{}:{}", pg.get_host(), pg.get_port())).await;
        let store = connect(&via(&url, proxy.addr)).await.unwrap();
        let handle = LedgerWriter::spawn(
            store.clone(),
            opts(50, Duration::from_millis(20), 1_000_000),
        );

        for row in numbered(100, "before") {
            handle.record(row);
        }
        tokio::time::timeout(Duration::from_secs(15), handle.flush())
            .await
            .unwrap();
        assert_eq!(ledger_count(direct.as_ref()).await, 100);

        proxy.cut();
        for row in numbered(200, "during") {
            handle.record(row);
        }
        let flushing = tokio::spawn({
            let handle = handle.clone();
            async move { handle.flush().await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(store.ping().await.is_err(), "the proxy should be cut");
        assert!(
            !flushing.is_finished(),
            "flush() returned while PostgreSQL was unreachable"
        );
        assert_eq!(handle.buffered(), 200);
        assert_eq!(ledger_count(direct.as_ref()).await, 100);

        proxy.restore();
        tokio::time::timeout(Duration::from_secs(30), flushing)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(handle.buffered(), 0);
        assert_eq!(store_total(direct.as_ref()).await, (300, NanoUsd(300 * 7)));
        store.ping().await.unwrap();
        handle.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_takes_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("busy.db").display());
    let store = connect(&url).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                store
                    .create_key(&key(&format!("w{w}-k{i}"), "a", "2026-01-01T00:00:00Z"))
                    .await
                    .unwrap();
                let rows: Vec<LedgerRow> = (0..20)
                    .map(|j| {
                        ledger_row(
                            &format!("w{w}-{i}-{j}"),
                            "a",
                            "k",
                            "m",
                            "2026-01-01T00:00:00Z",
                            1,
                            1,
                            1,
                        )
                    })
                    .collect();
                store.insert_ledger(&rows).await.unwrap();
                store
                    .spend(&SpendQuery {
                        group_by: Some(GroupBy::Key),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(store.list_keys(None).await.unwrap().len(), 100);
    assert_eq!(ledger_count(store.as_ref()).await, 4 * 25 * 20);
}

/// Replicas starting at once against one database: migrations run once,
/// neither start fails, and both see the same data.
#[tokio::test]
async fn postgres_replicas_migrate_concurrently() {
    with_pg_schema(|url| async move {
        let (a, b, c) = tokio::join!(connect(&url), connect(&url), connect(&url));
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        a.create_team(&team("shared")).await.unwrap();
        assert_eq!(
            b.get_team(&TeamId::from("shared")).await.unwrap(),
            Some(team("shared"))
        );
        let err = c.create_team(&team("shared")).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    })
    .await;
}

#[path = "console_tests.rs"]
mod console_tests;
