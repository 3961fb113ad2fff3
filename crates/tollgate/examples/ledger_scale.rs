//! The ledger at company scale (issue 16): `COPY`s N rows into a scratch
//! PostgreSQL database, then times `/admin/spend` over a month (partial
//! hours at both edges) and a budget re-seed, read through the rollups of
//! migration 0009 and, for comparison, by the raw scan the store did
//! before them. Not a timed test: run by hand, report in `bench/SCALE.md`.
//!
//! ```text
//! cargo run -p tollgate --example ledger_scale -- 1000000 [teams keys models] [--keep]
//! ```
//!
//! Uses database `tollgate_scale` on `TOLLGATE_SCALE_PG` (default
//! `postgres://postgres@127.0.0.1:5432`), created afresh and dropped at the
//! end unless `--keep`. Rows: 31 days, each key in one team, models and
//! keys uniform, 20 % cache hits. Each `COPY` carries 10^6 rows, so the
//! rollup trigger sums a million rows per statement.

use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use sqlx::postgres::PgPoolCopyExt;
use tollgate::store::{GroupBy, SpendQuery, SpendScope, connect};
use tollgate::types::TeamId;

const CHUNK: usize = 1_000_000;
const DAYS: i64 = 31;
const RUNS: usize = 5;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

/// xorshift64*: fast, repeatable, good enough to spread rows.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

async fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let keep = args.iter().any(|a| a == "--keep");
    let nums: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let rows = nums.first().copied().unwrap_or(1_000_000) as usize;
    let teams = nums.get(1).copied().unwrap_or(100);
    let keys = nums.get(2).copied().unwrap_or(1_000);
    let models = nums.get(3).copied().unwrap_or(8);
    let base = std::env::var("TOLLGATE_SCALE_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned());
    let admin = sqlx::PgPool::connect(&format!("{base}/postgres")).await?;
    sqlx::query("DROP DATABASE IF EXISTS tollgate_scale")
        .execute(&admin)
        .await?;
    sqlx::query("CREATE DATABASE tollgate_scale")
        .execute(&admin)
        .await?;
    let url = format!("{base}/tollgate_scale");
    let result = bench(&url, rows, teams, keys, models).await;
    if !keep {
        sqlx::query("DROP DATABASE IF EXISTS tollgate_scale WITH (FORCE)")
            .execute(&admin)
            .await?;
    }
    result
}

async fn bench(url: &str, rows: usize, teams: u64, keys: u64, models: u64) -> anyhow::Result<()> {
    let store = connect(url).await?;
    let pool = sqlx::PgPool::connect(url).await?;
    let start = Utc
        .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
        .single()
        .ok_or_else(|| anyhow::anyhow!("start date"))?;
    let span_ms = (DAYS * 86_400_000) as u64;
    println!("rows {rows}, teams {teams}, keys {keys}, models {models}, {DAYS} days");

    let t0 = Instant::now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut done = 0;
    while done < rows {
        let n = CHUNK.min(rows - done);
        let mut copy = pool
            .copy_in_raw(
                "COPY ledger (ts, request_id, key_id, team, model, provider, status, prompt_tokens, \
                 completion_tokens, cost, latency_ms, cache, cache_saved) FROM STDIN",
            )
            .await?;
        let mut buf = String::with_capacity(16 << 20);
        for i in done..done + n {
            let ts = start + Duration::milliseconds(rng.next(span_ms) as i64);
            let key = rng.next(keys);
            let hit = rng.next(5) == 0;
            let cost = rng.next(2_000_000);
            use std::fmt::Write;
            let _ = writeln!(
                buf,
                "{}\tr{i}\tk{key}\tt{}\tm{}\tmock\t200\t{}\t{}\t{cost}\t5\t{}\t{}",
                ts.format("%Y-%m-%d %H:%M:%S%.3f+00"),
                key % teams,
                rng.next(models),
                rng.next(4_000),
                rng.next(1_000),
                if hit { "hit" } else { "\\N" },
                if hit { cost } else { 0 },
            );
            if buf.len() > 15 << 20 {
                copy.send(buf.as_bytes()).await?;
                buf.clear();
            }
        }
        copy.send(buf.as_bytes()).await?;
        copy.finish().await?;
        done += n;
    }
    let load = t0.elapsed();
    sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
    let sizes: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM ledger_hourly), (SELECT COUNT(*) FROM ledger_daily), \
         pg_total_relation_size('ledger'), \
         pg_total_relation_size('ledger_hourly') + pg_total_relation_size('ledger_daily')",
    )
    .fetch_one(&pool)
    .await?;
    println!(
        "COPY + rollup trigger: {:.1} s ({:.0} rows/s); hourly rows {}, daily rows {}; ledger {} MiB, rollups {} MiB",
        load.as_secs_f64(),
        rows as f64 / load.as_secs_f64(),
        sizes.0,
        sizes.1,
        sizes.2 >> 20,
        sizes.3 >> 20
    );

    // A month with partial hours at both edges.
    let from = start + Duration::minutes(90);
    let to = from + Duration::days(30);
    println!(
        "| query (month, partial edges) | rollups ms (median of {RUNS}) | raw scan ms | rows |"
    );
    println!("|---|---|---|---|");
    for (name, group_by, team) in [
        ("group_by=team", Some(GroupBy::Team), None),
        ("group_by=model", Some(GroupBy::Model), None),
        ("group_by=day", Some(GroupBy::Day), None),
        ("group_by=key", Some(GroupBy::Key), None),
        ("group_by=model&team=t7", Some(GroupBy::Model), Some("t7")),
        ("total", None, None),
    ] {
        let q = SpendQuery {
            group_by,
            team: team.map(TeamId::from),
            key: None,
            from: Some(from),
            to: Some(to),
        };
        let mut fast = Vec::new();
        let mut n = 0;
        for _ in 0..RUNS {
            let t = Instant::now();
            n = store.spend(&q).await?.len();
            fast.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let mut slow = Vec::new();
        for _ in 0..RUNS.min(3) {
            let t = Instant::now();
            let raw = raw_spend(&pool, group_by, team, from, to).await?;
            slow.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(raw == n, "{name}: raw scan has {raw} groups, rollups {n}");
        }
        println!(
            "| {name} | {:.1} | {:.1} | {n} |",
            median(&mut fast),
            median(&mut slow)
        );
    }
    // Budget re-seeding: a team's spend this month, as at startup.
    let scope = SpendScope::Team(TeamId::from("t7"));
    let since = start + Duration::minutes(17);
    let mut fast = Vec::new();
    let mut spent = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        spent = store.spend_since(&scope, since).await?.0;
        fast.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut slow = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let raw: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(cost), 0)::BIGINT FROM ledger WHERE team = $1 AND ts >= $2",
        )
        .bind("t7")
        .bind(since)
        .fetch_one(&pool)
        .await?;
        slow.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(raw as u64 == spent, "re-seed: raw {raw}, rollups {spent}");
    }
    println!(
        "| spend_since(team) (budget re-seed) | {:.1} | {:.1} | 1 |",
        median(&mut fast),
        median(&mut slow)
    );
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The store's `/admin/spend` query before migration 0009: every row of
/// the window, grouped.
async fn raw_spend(
    pool: &sqlx::PgPool,
    group_by: Option<GroupBy>,
    team: Option<&str>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let (group, by) = match group_by {
        None => ("'total'", None),
        Some(GroupBy::Team) => ("team", Some("team")),
        Some(GroupBy::Key) => ("key_id", Some("key_id")),
        Some(GroupBy::Model) => ("model", Some("model")),
        Some(GroupBy::Day) => ("to_char(day, 'YYYY-MM-DD')", Some("day")),
    };
    let mut sql = format!(
        "SELECT {group} AS grp, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost), \
         COUNT(*) FILTER (WHERE cache = 'hit'), SUM(cache_saved) FROM ledger WHERE ts >= $1 AND ts < $2"
    );
    if team.is_some() {
        sql.push_str(" AND team = $3");
    }
    if let Some(by) = by {
        sql.push_str(&format!(" GROUP BY {by} ORDER BY {by}"));
    }
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(from).bind(to);
    if let Some(team) = team {
        q = q.bind(team);
    }
    Ok(q.fetch_all(pool).await?.len())
}
