//! The rollups against the raw rows: the window split covers exactly the
//! window, and on both engines `/admin/spend`, `spend_since` and the
//! ledger snapshot read from rollups equal sums computed from the rows
//! themselves, for random rows and random windows (partial hours and days
//! at both edges, unbounded sides, every grouping and filter).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::{
    GroupBy, LedgerRow, SpendQuery, SpendRow, SpendScope, Store, WriterMark, connect,
};
use super::{DAY_MS, HOUR_MS, Source, at, segments};
use crate::types::{KeyId, NanoUsd, TeamId};

// ------------------------------------------------------------ the split

fn check_split(from: Option<i64>, to: Option<i64>) {
    let segs = segments(from, to);
    assert!(!segs.is_empty());
    assert_eq!(segs[0].lo, from, "{segs:?}");
    assert_eq!(segs[segs.len() - 1].hi, to, "{segs:?}");
    for pair in segs.windows(2) {
        assert_eq!(pair[0].hi, pair[1].lo, "gap or overlap: {segs:?}");
        assert!(pair[0].hi.is_some(), "{segs:?}");
    }
    for s in &segs {
        let unit = match s.source {
            Source::Raw => {
                if let (Some(lo), Some(hi)) = (s.lo, s.hi) {
                    // A raw segment is a partial hour, or the whole (short) window.
                    assert!(hi - lo < 2 * HOUR_MS, "{segs:?}");
                }
                assert!(
                    s.lo.is_some() || s.hi.is_some(),
                    "an unbounded raw scan: {segs:?}"
                );
                continue;
            }
            Source::Hourly => HOUR_MS,
            Source::Daily => DAY_MS,
        };
        for bound in [s.lo, s.hi].into_iter().flatten() {
            assert_eq!(
                bound.rem_euclid(unit),
                0,
                "misaligned bucket bound: {segs:?}"
            );
        }
        if let (Some(lo), Some(hi)) = (s.lo, s.hi) {
            assert!(lo < hi, "an empty bucket segment: {segs:?}");
        }
    }
}

proptest! {
    #[test]
    fn split_covers_the_window_exactly(
        from in proptest::option::of(1_700_000_000_000i64..1_700_000_000_000 + 40 * DAY_MS),
        len in 0i64..35 * DAY_MS,
        bounded in any::<bool>(),
        align in 0u8..3,
    ) {
        let snap = |ms: i64| match align {
            0 => ms,
            1 => ms - ms.rem_euclid(HOUR_MS),
            _ => ms - ms.rem_euclid(DAY_MS),
        };
        let from = from.map(snap);
        let to = if bounded {
            Some(snap(from.unwrap_or(1_700_000_000_000) + len))
        } else {
            None
        };
        check_split(from, to);
    }
}

#[test]
fn split_of_a_month_reads_whole_days_from_the_daily_rollup() {
    let from = 1_767_225_600_000 + 90 * 60_000; // 2026-01-01T01:30Z
    let to = from + 30 * DAY_MS;
    let segs = segments(Some(from), Some(to));
    let sources: Vec<Source> = segs.iter().map(|s| s.source).collect();
    assert_eq!(
        sources,
        [
            Source::Raw,
            Source::Hourly,
            Source::Daily,
            Source::Hourly,
            Source::Raw
        ]
    );
    assert_eq!(segments(None, None).len(), 1);
    assert_eq!(segments(None, None)[0].source, Source::Daily);
}

// ------------------------------------------------------------ the engines

const BASE_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn random_rows(rng: &mut StdRng, n: usize) -> Vec<LedgerRow> {
    (0..n)
        .map(|i| {
            let ts = BASE_MS + rng.random_range(0..4 * DAY_MS);
            let hit = rng.random_bool(0.2);
            LedgerRow {
                ts: at(ts),
                request_id: format!("r{i}"),
                key_id: KeyId::from(format!("k{}", rng.random_range(0..5)).as_str()),
                team: TeamId::from(format!("t{}", rng.random_range(0..3)).as_str()),
                model: format!("m{}", rng.random_range(0..3)),
                provider: "mock".into(),
                status: 200,
                prompt_tokens: rng.random_range(0..5_000),
                completion_tokens: rng.random_range(0..5_000),
                cost: NanoUsd(rng.random_range(0..50_000_000)),
                latency_ms: 3,
                error_code: None,
                would_reject: Vec::new(),
                attempts: 1,
                cache: hit.then(|| "hit".to_owned()),
                cache_saved: NanoUsd(if hit { rng.random_range(0..9_000) } else { 0 }),
                policy: None,
            }
        })
        .collect()
}

/// `/admin/spend` computed from the rows, as the raw scan answered it.
fn expected(rows: &[LedgerRow], q: &SpendQuery) -> Vec<SpendRow> {
    let mut groups: BTreeMap<String, SpendRow> = BTreeMap::new();
    if q.group_by.is_none() {
        groups.insert(
            "total".into(),
            SpendRow {
                group: "total".into(),
                ..Default::default()
            },
        );
    }
    for r in rows {
        if q.team.as_ref().is_some_and(|t| *t != r.team)
            || q.key.as_ref().is_some_and(|k| *k != r.key_id)
            || q.from.is_some_and(|f| r.ts < f)
            || q.to.is_some_and(|t| r.ts >= t)
        {
            continue;
        }
        let group = match q.group_by {
            None => "total".to_owned(),
            Some(GroupBy::Team) => r.team.to_string(),
            Some(GroupBy::Key) => r.key_id.to_string(),
            Some(GroupBy::Model) => r.model.clone(),
            Some(GroupBy::Day) => r.ts.format("%Y-%m-%d").to_string(),
        };
        let g = groups.entry(group.clone()).or_insert_with(|| SpendRow {
            group,
            ..Default::default()
        });
        g.requests += 1;
        g.prompt_tokens += r.prompt_tokens;
        g.completion_tokens += r.completion_tokens;
        g.cost = NanoUsd(g.cost.0 + r.cost.0);
        g.cache_hits += u64::from(r.cache.as_deref() == Some("hit"));
        g.cache_saved = NanoUsd(g.cache_saved.0 + r.cache_saved.0);
    }
    groups.into_values().collect()
}

/// A window edge: anywhere, on an hour, or on a day, within the rows' span.
fn random_edge(rng: &mut StdRng) -> Option<DateTime<Utc>> {
    let ms = BASE_MS - HOUR_MS + rng.random_range(0..5 * DAY_MS);
    match rng.random_range(0..5) {
        0 => None,
        1 => Some(at(ms - ms.rem_euclid(HOUR_MS))),
        2 => Some(at(ms - ms.rem_euclid(DAY_MS))),
        _ => Some(at(ms)),
    }
}

async fn rollups_equal_raw_sums(store: Arc<dyn Store>) {
    let mut rng = StdRng::seed_from_u64(16);
    let rows = random_rows(&mut rng, 3_000);
    // Uneven batches, and a batch written twice (a writer's retry after an
    // ambiguous failure): the rollups must count each row once.
    let mut start = 0;
    while start < rows.len() {
        let end = (start + rng.random_range(1..400)).min(rows.len());
        store.insert_ledger(&rows[start..end]).await.unwrap();
        if rng.random_bool(0.2) {
            store.insert_ledger(&rows[start..end]).await.unwrap();
        }
        start = end;
    }
    // Rows whose timestamps sit exactly on bucket edges.
    let mut edges = random_rows(&mut rng, 4);
    for (i, r) in edges.iter_mut().enumerate() {
        r.request_id = format!("edge{i}");
        r.ts =
            at(BASE_MS + DAY_MS * (i as i64) + HOUR_MS * (i as i64 % 2)
                - (i as i64 % 3 == 2) as i64);
    }
    store.insert_ledger(&edges).await.unwrap();
    let all: Vec<LedgerRow> = rows.into_iter().chain(edges).collect();

    let groups = [
        None,
        Some(GroupBy::Team),
        Some(GroupBy::Key),
        Some(GroupBy::Model),
        Some(GroupBy::Day),
    ];
    for round in 0..120 {
        let (mut from, mut to) = (random_edge(&mut rng), random_edge(&mut rng));
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            (from, to) = (to, from);
        }
        let q = SpendQuery {
            group_by: groups[round % groups.len()],
            team: rng.random_bool(0.3).then(|| TeamId::from("t1")),
            key: rng.random_bool(0.2).then(|| KeyId::from("k2")),
            from,
            to,
        };
        let got = store.spend(&q).await.unwrap();
        assert_eq!(got, expected(&all, &q), "{q:?}");
    }

    let mark = WriterMark {
        writer: "w".into(),
        seq: 1,
    };
    store.insert_ledger_marked(&[], &mark).await.unwrap();
    for _ in 0..40 {
        let since = random_edge(&mut rng).unwrap_or(at(BASE_MS));
        let scope = if rng.random_bool(0.5) {
            SpendScope::Team(TeamId::from("t0"))
        } else {
            SpendScope::Key(KeyId::from("k3"))
        };
        let want: u64 = all
            .iter()
            .filter(|r| r.ts >= since)
            .filter(|r| match &scope {
                SpendScope::Team(t) => r.team == *t,
                SpendScope::Key(k) => r.key_id == *k,
            })
            .map(|r| r.cost.0)
            .sum();
        assert_eq!(
            store.spend_since(&scope, since).await.unwrap(),
            NanoUsd(want),
            "{scope:?} {since}"
        );
        let snapshot = store.ledger_snapshot(&scope, since).await.unwrap();
        assert_eq!(snapshot.spent, NanoUsd(want), "{scope:?} {since}");
        assert_eq!(snapshot.writers.len(), 1);
    }
}

/// Rows written before migration 0009 are summed into the rollups by it.
async fn old_rows_are_backfilled(url: String, old: impl AsyncFnOnce(&str, &[LedgerRow])) {
    let mut rng = StdRng::seed_from_u64(9);
    let rows = random_rows(&mut rng, 500);
    old(&url, &rows).await;
    let store = connect(&url).await.unwrap();
    for group_by in [None, Some(GroupBy::Team), Some(GroupBy::Day)] {
        let q = SpendQuery {
            group_by,
            ..Default::default()
        };
        assert_eq!(store.spend(&q).await.unwrap(), expected(&rows, &q));
    }
    // A new row after the migration lands in the rollups too.
    let mut more = random_rows(&mut rng, 1);
    more[0].request_id = "after".into();
    store.insert_ledger(&more).await.unwrap();
    let all: Vec<LedgerRow> = rows.into_iter().chain(more).collect();
    let q = SpendQuery {
        group_by: Some(GroupBy::Model),
        ..Default::default()
    };
    assert_eq!(store.spend(&q).await.unwrap(), expected(&all, &q));
}

/// The INSERTs that write `rows` with the schema as it was at migration
/// 0008; `pg` picks the engine's way of writing a timestamp.
fn inserts_before_0009(rows: &[LedgerRow], pg: bool) -> Vec<String> {
    rows.iter()
        .map(|r| {
            let ts = if pg {
                format!("'{}'", r.ts.to_rfc3339())
            } else {
                r.ts.timestamp_millis().to_string()
            };
            format!(
                "INSERT INTO ledger (ts, request_id, key_id, team, model, provider, status, prompt_tokens, \
                 completion_tokens, cost, latency_ms, cache, cache_saved) VALUES ({ts}, '{}', '{}', '{}', '{}', \
                 'mock', 200, {}, {}, {}, 1, {}, {})",
                r.request_id,
                r.key_id,
                r.team,
                r.model,
                r.prompt_tokens,
                r.completion_tokens,
                r.cost.0,
                r.cache.as_deref().map_or("NULL".to_owned(), |c| format!("'{c}'")),
                r.cache_saved.0
            )
        })
        .collect()
}

// ------------------------------------------------------------ harness

fn pg_base_url() -> String {
    std::env::var("TOLLGATE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// Runs `test` with the URL of a fresh schema, dropped afterwards even when
/// the test fails.
async fn with_pg_schema(test: impl AsyncFnOnce(String)) {
    let base = pg_base_url();
    let admin = sqlx::PgPool::connect(&base).await.unwrap_or_else(|e| {
        panic!("the rollup tests need PostgreSQL at TOLLGATE_TEST_PG_URL: {e}")
    });
    let schema = format!("tg_rollup_{}", uuid::Uuid::now_v7().simple());
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

#[tokio::test]
async fn sqlite_rollups_equal_raw_sums() {
    rollups_equal_raw_sums(connect("sqlite::memory:").await.unwrap()).await;
}

#[tokio::test]
async fn postgres_rollups_equal_raw_sums() {
    with_pg_schema(async |url| rollups_equal_raw_sums(connect(&url).await.unwrap()).await).await;
}

#[tokio::test]
async fn sqlite_migration_backfills_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("old.db").display());
    old_rows_are_backfilled(url, async |url, rows| {
        let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        let pool = sqlx::SqlitePool::connect_with(options.create_if_missing(true))
            .await
            .unwrap();
        sqlx::migrate!("./migrations/sqlite")
            .run_to(8, &pool)
            .await
            .unwrap();
        for sql in inserts_before_0009(rows, false) {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    })
    .await;
}

#[tokio::test]
async fn postgres_migration_backfills_rollups() {
    with_pg_schema(async |url| {
        old_rows_are_backfilled(url, async |url, rows| {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::migrate!("./migrations/postgres")
                .run_to(8, &pool)
                .await
                .unwrap();
            for sql in inserts_before_0009(rows, true) {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        })
        .await;
    })
    .await;
}
