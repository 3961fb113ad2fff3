//! Benchmark: a ledger of 1,000,000 rows and the `/admin/spend` queries over
//! it. Not a timed test; run by hand and compare with the 1 s target:
//!
//! ```text
//! cargo run -p tollgate --example spend_1m                       # PostgreSQL at 127.0.0.1:5432/test
//! cargo run -p tollgate --example spend_1m -- postgres://USER@HOST/DB
//! cargo run -p tollgate --example spend_1m -- sqlite:///tmp/spend.db
//! ```
//!
//! On PostgreSQL it works in a schema of its own and drops it at the end.
//! Rows: 30 days, 20 teams, 200 keys, 8 models.
//!
//! Measured on the 2-core reference machine (debug build, PostgreSQL 15,
//! other jobs running), best of three: every query under 0.3 s, e.g.
//! group_by=team over all 1M rows 160-200 ms, group_by=model over a 7-day
//! range 60-95 ms, group_by=day 250 ms; insert 1M rows in batches of 10,000
//! 19-40 s. SQLite: group_by team/key/day 0.2-0.7 s, group_by=model over
//! all 1M rows 1.2-1.5 s (a sort: SQLite has no hash aggregation).

use std::time::Instant;

use chrono::{DateTime, Duration, Utc};
use tollgate::store::{GroupBy, LedgerRow, SpendQuery, Store, connect, redact_url};
use tollgate::types::{KeyId, NanoUsd, TeamId};

const ROWS: usize = 1_000_000;
const BATCH: usize = 10_000;
const DAYS: i64 = 30;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("tg_bench_{}", uuid::Uuid::now_v7().simple());
    let is_pg = url.starts_with("postgres");
    let admin = if is_pg {
        let admin = sqlx::PgPool::connect(&url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await?;
        Some(admin)
    } else {
        None
    };
    let store_url = if is_pg {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20search_path%3D{schema}")
    } else {
        url.clone()
    };
    println!("store: {}", redact_url(&url));
    let result = bench(&store_url, admin.as_ref(), &schema).await;
    if let Some(admin) = admin {
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await?;
    }
    result
}

async fn bench(url: &str, admin: Option<&sqlx::PgPool>, schema: &str) -> anyhow::Result<()> {
    let store = connect(url).await?;
    let end = DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")?.with_timezone(&Utc);
    let start = end - Duration::days(DAYS);
    let step_ms = (DAYS * 86_400_000) / ROWS as i64;

    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..ROWS {
        let n = i as u64;
        batch.push(LedgerRow {
            ts: start + Duration::milliseconds(i as i64 * step_ms),
            request_id: format!("bench-{i:08}"),
            key_id: KeyId(format!("key{:03}", n.wrapping_mul(7919) % 200)),
            team: TeamId(format!("team{:02}", n.wrapping_mul(104_729) % 20)),
            model: format!("model-{}", n % 8),
            provider: "mock".to_owned(),
            status: 200,
            prompt_tokens: 100 + n % 900,
            completion_tokens: 20 + n % 300,
            cost: NanoUsd(1_000 + n % 50_000),
            latency_ms: 5 + n % 200,
            error_code: None,
            would_reject: Vec::new(),
            attempts: 0,
            cache: None,
            cache_saved: Default::default(),
            policy: None,
        });
        if batch.len() == BATCH {
            store.insert_ledger(&batch).await?;
            batch.clear();
        }
    }
    store.insert_ledger(&batch).await?;
    println!(
        "inserted {ROWS} rows in batches of {BATCH}: {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // What autovacuum would do soon after a bulk load; without it the
    // planner guesses row counts.
    if let Some(admin) = admin {
        sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {schema}.ledger")))
            .execute(admin)
            .await?;
    }

    let week_from = end - Duration::days(7);
    let cases: Vec<(&str, SpendQuery)> = vec![
        ("total, all time", SpendQuery::default()),
        (
            "group_by=team, all time",
            SpendQuery {
                group_by: Some(GroupBy::Team),
                ..Default::default()
            },
        ),
        (
            "group_by=team, from/to = 7 days",
            SpendQuery {
                group_by: Some(GroupBy::Team),
                from: Some(week_from),
                to: Some(end),
                ..Default::default()
            },
        ),
        (
            "group_by=model, from/to = 7 days",
            SpendQuery {
                group_by: Some(GroupBy::Model),
                from: Some(week_from),
                to: Some(end),
                ..Default::default()
            },
        ),
        (
            "group_by=model, all time",
            SpendQuery {
                group_by: Some(GroupBy::Model),
                ..Default::default()
            },
        ),
        (
            "group_by=key, all time",
            SpendQuery {
                group_by: Some(GroupBy::Key),
                ..Default::default()
            },
        ),
        (
            "group_by=day, all time",
            SpendQuery {
                group_by: Some(GroupBy::Day),
                ..Default::default()
            },
        ),
        (
            "group_by=model, team=team07, 7 days",
            SpendQuery {
                group_by: Some(GroupBy::Model),
                team: Some(TeamId::from("team07")),
                from: Some(week_from),
                to: Some(end),
                ..Default::default()
            },
        ),
    ];
    for (name, query) in &cases {
        time_query(store.as_ref(), name, query).await?;
    }
    Ok(())
}

/// Best and worst of three runs, so one cold cache does not decide.
async fn time_query(store: &dyn Store, name: &str, query: &SpendQuery) -> anyhow::Result<()> {
    let mut times = Vec::new();
    let mut groups = 0;
    let mut requests = 0;
    for _ in 0..3 {
        let t = Instant::now();
        let rows = store.spend(query).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        groups = rows.len();
        requests = rows.iter().map(|r| r.requests).sum::<u64>();
    }
    let best = times.iter().copied().fold(f64::MAX, f64::min);
    let worst = times.iter().copied().fold(0.0, f64::max);
    println!(
        "{name:<40} {groups:>4} groups {requests:>8} rows  best {best:>7.1} ms  worst {worst:>7.1} ms"
    );
    Ok(())
}
