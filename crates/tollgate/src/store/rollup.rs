//! How a time window is read from the ledger's rollups (migration 0009):
//! whole UTC days from `ledger_daily`, whole hours from `ledger_hourly`,
//! and only the partial hours at the window's edges from raw `ledger`
//! rows, so a month costs ~30 rows per (team, key, model) plus at most two
//! hours of requests, and the totals equal a scan of the raw rows exactly.
//! Both engines build their SQL from the same [`segments`].

use chrono::{DateTime, TimeZone, Utc};
use sqlx::{Postgres, QueryBuilder, Sqlite};

use super::{GroupBy, SpendQuery, SpendScope};

pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const DAY_MS: i64 = 86_400_000;

/// Where a segment's rows are summed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Raw,
    Hourly,
    Daily,
}

impl Source {
    pub(crate) fn table(self) -> &'static str {
        match self {
            Source::Raw => "ledger",
            Source::Hourly => "ledger_hourly",
            Source::Daily => "ledger_daily",
        }
    }
}

/// `[lo, hi)` in Unix milliseconds; `None` is unbounded on that side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub source: Source,
    pub lo: Option<i64>,
    pub hi: Option<i64>,
}

fn floor(ms: i64, unit: i64) -> i64 {
    ms.div_euclid(unit) * unit
}

fn ceil(ms: i64, unit: i64) -> i64 {
    -floor(-ms, unit)
}

fn seg(source: Source, lo: Option<i64>, hi: Option<i64>) -> Segment {
    Segment { source, lo, hi }
}

/// Splits `[from, to)` into disjoint segments that together cover exactly
/// it: raw rows for the partial hour at each edge, hourly buckets up to
/// the first whole day and after the last, daily buckets in between. A
/// bucket is only used when it lies wholly inside the window.
pub(crate) fn segments(from: Option<i64>, to: Option<i64>) -> Vec<Segment> {
    let (h_lo, h_hi) = (
        from.map(|f| ceil(f, HOUR_MS)),
        to.map(|t| floor(t, HOUR_MS)),
    );
    if let (Some(lo), Some(hi)) = (h_lo, h_hi)
        && lo >= hi
    {
        // No whole hour inside: under two hours of raw rows (or none).
        return vec![seg(Source::Raw, from, to)];
    }
    let mut out = Vec::with_capacity(5);
    if let (Some(f), Some(lo)) = (from, h_lo)
        && f < lo
    {
        out.push(seg(Source::Raw, from, h_lo));
    }
    let (d_lo, d_hi) = (
        h_lo.map(|h| ceil(h, DAY_MS)),
        h_hi.map(|h| floor(h, DAY_MS)),
    );
    let whole_day = !matches!((d_lo, d_hi), (Some(lo), Some(hi)) if lo >= hi);
    if whole_day {
        if let (Some(lo), Some(d)) = (h_lo, d_lo)
            && lo < d
        {
            out.push(seg(Source::Hourly, h_lo, d_lo));
        }
        out.push(seg(Source::Daily, d_lo, d_hi));
        if let (Some(d), Some(hi)) = (d_hi, h_hi)
            && d < hi
        {
            out.push(seg(Source::Hourly, d_hi, h_hi));
        }
    } else {
        out.push(seg(Source::Hourly, h_lo, h_hi));
    }
    if let (Some(hi), Some(t)) = (h_hi, to)
        && hi < t
    {
        out.push(seg(Source::Raw, h_hi, to));
    }
    out
}

/// Milliseconds back to a timestamp, for the engine that binds timestamps.
pub(crate) fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// A spend query's filters and grouping, in each engine's SQL.
struct Dialect {
    /// The inner group expression per source, before formatting.
    day_raw: &'static str,
    day_bucket: &'static str,
    /// Formats the inner day group as `YYYY-MM-DD`.
    day_shown: &'static str,
    /// Counts the cache hits among raw rows.
    raw_hits: &'static str,
    /// Casts a sum back to an integer column.
    int: &'static str,
}

const PG: Dialect = Dialect {
    day_raw: "day",
    day_bucket: "(bucket AT TIME ZONE 'UTC')::date",
    day_shown: "to_char(g, 'YYYY-MM-DD')",
    raw_hits: "COUNT(*) FILTER (WHERE cache = 'hit')",
    int: "::BIGINT",
};

const SQLITE: Dialect = Dialect {
    day_raw: "ts / 86400000",
    day_bucket: "bucket / 86400000",
    day_shown: "strftime('%Y-%m-%d', g * 86400, 'unixepoch')",
    raw_hits: "SUM(cache IS 'hit')",
    int: "",
};

/// `(inner group expression, shown group expression)`.
fn group_exprs(
    d: &Dialect,
    group_by: Option<GroupBy>,
    source: Source,
) -> (&'static str, &'static str) {
    match group_by {
        None => ("'total'", "g"),
        Some(GroupBy::Team) => ("team", "g"),
        Some(GroupBy::Key) => ("key_id", "g"),
        Some(GroupBy::Model) => ("model", "g"),
        Some(GroupBy::Day) => match source {
            Source::Raw => (d.day_raw, d.day_shown),
            Source::Hourly | Source::Daily => (d.day_bucket, d.day_shown),
        },
    }
}

/// Binds a segment bound the way its engine stores time.
trait BindTime {
    fn push_time(&mut self, ms: i64) -> &mut Self;
}

impl BindTime for QueryBuilder<Postgres> {
    fn push_time(&mut self, ms: i64) -> &mut Self {
        self.push_bind(at(ms))
    }
}

impl BindTime for QueryBuilder<Sqlite> {
    fn push_time(&mut self, ms: i64) -> &mut Self {
        self.push_bind(ms)
    }
}

/// `SELECT grp, requests, prompt_tokens, completion_tokens, cost,
/// cache_hits, cache_saved` for `query`, summed over the segments of its
/// window, grouped and ordered by the group.
fn spend_query<DB>(d: &Dialect, query: &SpendQuery) -> QueryBuilder<DB>
where
    DB: sqlx::Database,
    DB::Arguments: Default,
    QueryBuilder<DB>: BindTime,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let from = query.from.map(|t| t.timestamp_millis());
    let to = query.to.map(|t| t.timestamp_millis());
    let shown = group_exprs(d, query.group_by, Source::Raw).1;
    let int = d.int;
    let mut qb = QueryBuilder::new(format!(
        "SELECT {shown} AS grp, COALESCE(SUM(requests), 0){int} AS requests, \
         COALESCE(SUM(prompt_tokens), 0){int} AS prompt_tokens, \
         COALESCE(SUM(completion_tokens), 0){int} AS completion_tokens, \
         COALESCE(SUM(cost), 0){int} AS cost, COALESCE(SUM(cache_hits), 0){int} AS cache_hits, \
         COALESCE(SUM(cache_saved), 0){int} AS cache_saved FROM ("
    ));
    for (i, segment) in segments(from, to).into_iter().enumerate() {
        if i > 0 {
            qb.push(" UNION ALL ");
        }
        let (group, _) = group_exprs(d, query.group_by, segment.source);
        let (requests, hits, time) = match segment.source {
            Source::Raw => ("COUNT(*)", d.raw_hits, "ts"),
            Source::Hourly | Source::Daily => ("SUM(requests)", "SUM(cache_hits)", "bucket"),
        };
        qb.push(format!(
            "SELECT {group} AS g, {requests} AS requests, SUM(prompt_tokens) AS prompt_tokens, \
             SUM(completion_tokens) AS completion_tokens, SUM(cost) AS cost, {hits} AS cache_hits, \
             SUM(cache_saved) AS cache_saved FROM {} WHERE 1 = 1",
            segment.source.table()
        ));
        if let Some(team) = &query.team {
            qb.push(" AND team = ").push_bind(team.as_str());
        }
        if let Some(key) = &query.key {
            qb.push(" AND key_id = ").push_bind(key.as_str());
        }
        if let Some(lo) = segment.lo {
            qb.push(format!(" AND {time} >= ")).push_time(lo);
        }
        if let Some(hi) = segment.hi {
            qb.push(format!(" AND {time} < ")).push_time(hi);
        }
        if query.group_by.is_some() {
            qb.push(" GROUP BY 1");
        }
    }
    qb.push(") s GROUP BY g ORDER BY g");
    qb
}

pub(crate) fn pg_spend(query: &SpendQuery) -> QueryBuilder<Postgres> {
    spend_query(&PG, query)
}

pub(crate) fn sqlite_spend(query: &SpendQuery) -> QueryBuilder<Sqlite> {
    spend_query(&SQLITE, query)
}

/// Pushes `(SELECT SUM(cost) …)`: a scope's spend since `since`, from
/// rollups and the raw rows of the first partial hour.
fn push_cost_since<DB>(qb: &mut QueryBuilder<DB>, scope: &SpendScope, since: DateTime<Utc>)
where
    DB: sqlx::Database,
    QueryBuilder<DB>: BindTime,
    for<'t> &'t str: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let (column, id) = match scope {
        SpendScope::Team(team) => ("team", team.as_str()),
        SpendScope::Key(key) => ("key_id", key.as_str()),
    };
    qb.push("(SELECT COALESCE(SUM(c), 0) FROM (");
    for (i, segment) in segments(Some(since.timestamp_millis()), None)
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            qb.push(" UNION ALL ");
        }
        let time = if segment.source == Source::Raw {
            "ts"
        } else {
            "bucket"
        };
        qb.push(format!(
            "SELECT SUM(cost) AS c FROM {} WHERE {column} = ",
            segment.source.table()
        ))
        .push_bind(id);
        if let Some(lo) = segment.lo {
            qb.push(format!(" AND {time} >= ")).push_time(lo);
        }
        if let Some(hi) = segment.hi {
            qb.push(format!(" AND {time} < ")).push_time(hi);
        }
    }
    qb.push(") s)");
}

pub(crate) fn pg_cost_since(
    qb: &mut QueryBuilder<Postgres>,
    scope: &SpendScope,
    since: DateTime<Utc>,
) {
    push_cost_since(qb, scope, since);
}

pub(crate) fn sqlite_cost_since(
    qb: &mut QueryBuilder<Sqlite>,
    scope: &SpendScope,
    since: DateTime<Utc>,
) {
    push_cost_since(qb, scope, since);
}

#[cfg(test)]
#[path = "rollup_tests.rs"]
mod tests;
