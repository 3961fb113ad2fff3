//! The embedded store: one SQLite file in WAL mode. Timestamps are kept as
//! integer milliseconds since the epoch (UTC), so they sort and compare as
//! numbers; money and token counts as INTEGER.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::codec::{
    SQLITE_ROWS_PER_STATEMENT, from_json, json_text, ledger_text, money, opt_from_json,
    opt_json_text, opt_money, opt_nano, opt_to_i64, opt_to_u64, period_from, period_text,
    redact_url, requests_limit, status_from, to_i64, to_u64, would_reject_from, would_reject_text,
};
use super::rollup;
use super::{
    FORGET_WRITER_AFTER_S, KeyRecord, LedgerRow, LedgerSnapshot, RequestsQuery, SpendQuery,
    SpendRow, SpendScope, Store, StoreError, TeamRecord, WRITER_SNAPSHOT_WINDOW_S, WriterMark,
    WriterState,
};
use crate::types::{KeyId, NanoUsd, TeamId};

/// How long a writer waits for another connection's write lock before
/// giving up with `database is locked`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub(crate) async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
        let shown = redact_url(url);
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| {
                StoreError::Backend(format!(
                    "store URL `{shown}` is not a valid SQLite URL: {e}"
                ))
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            // 8 MiB of page cache per connection instead of 2 MiB: enough
            // for the ledger's index pages; the OS page cache holds the rest
            // (64 MiB per connection showed up as most of the gateway's RSS).
            .pragma("cache_size", "-8192")
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool_options = if in_memory {
            // An in-memory database lives only as long as a connection to it:
            // keep exactly one, forever.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(4)
        };
        let pool = pool_options
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot open SQLite store `{shown}`: {e}")))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| {
                StoreError::Backend(format!("migrating SQLite store `{shown}` failed: {e}"))
            })?;
        Ok(Arc::new(SqliteStore { pool }))
    }
}

/// SQLite's own clock in milliseconds since the epoch, as SQL: every
/// writer's `seen_at` comes from the one clock that judges it.
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(format!("SQLite: {e}"))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

fn ms(ts: DateTime<Utc>) -> i64 {
    ts.timestamp_millis()
}

fn opt_ms(ts: Option<DateTime<Utc>>) -> Option<i64> {
    ts.map(ms)
}

fn from_ms(value: i64, field: &str) -> Result<DateTime<Utc>, StoreError> {
    Utc.timestamp_millis_opt(value).single().ok_or_else(|| {
        StoreError::Corrupt(format!(
            "`{field}` = {value} is not a timestamp in milliseconds"
        ))
    })
}

fn opt_from_ms(value: Option<i64>, field: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    value.map(|v| from_ms(v, field)).transpose()
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(column)
        .map_err(|e| StoreError::Corrupt(format!("column `{column}`: {e}")))
}

fn team_from_row(row: &SqliteRow) -> Result<TeamRecord, StoreError> {
    Ok(TeamRecord {
        id: TeamId(get(row, "id")?),
        policies: from_json(&get::<String>(row, "policies")?, "teams.policies")?,
        budget: opt_nano(get(row, "budget")?, "teams.budget")?,
        period: period_from(get(row, "period")?)?,
        models: opt_from_json(get(row, "models")?, "teams.models")?,
        cache: get(row, "cache")?,
        created_at: from_ms(get(row, "created_at")?, "teams.created_at")?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        id: KeyId(get(row, "id")?),
        team: TeamId(get(row, "team")?),
        name: get(row, "name")?,
        secret_hash: get(row, "secret_hash")?,
        prefix: get(row, "prefix")?,
        previous_secret_hash: get(row, "previous_secret_hash")?,
        previous_expires_at: opt_from_ms(
            get(row, "previous_expires_at")?,
            "keys.previous_expires_at",
        )?,
        models: opt_from_json(get(row, "models")?, "keys.models")?,
        policies: from_json(&get::<String>(row, "policies")?, "keys.policies")?,
        budget: opt_nano(get(row, "budget")?, "keys.budget")?,
        period: period_from(get(row, "period")?)?,
        requests_per_minute: opt_to_u64(
            get(row, "requests_per_minute")?,
            "keys.requests_per_minute",
        )?,
        tokens_per_minute: opt_to_u64(get(row, "tokens_per_minute")?, "keys.tokens_per_minute")?,
        expires_at: opt_from_ms(get(row, "expires_at")?, "keys.expires_at")?,
        revoked_at: opt_from_ms(get(row, "revoked_at")?, "keys.revoked_at")?,
        suspended_at: opt_from_ms(get(row, "suspended_at")?, "keys.suspended_at")?,
        metadata: from_json(&get::<String>(row, "metadata")?, "keys.metadata")?,
        created_at: from_ms(get(row, "created_at")?, "keys.created_at")?,
    })
}

fn ledger_from_row(row: &SqliteRow) -> Result<LedgerRow, StoreError> {
    Ok(LedgerRow {
        ts: from_ms(get(row, "ts")?, "ledger.ts")?,
        request_id: get(row, "request_id")?,
        key_id: KeyId(get(row, "key_id")?),
        team: TeamId(get(row, "team")?),
        model: get(row, "model")?,
        provider: get(row, "provider")?,
        status: status_from(get(row, "status")?)?,
        prompt_tokens: to_u64(get(row, "prompt_tokens")?, "ledger.prompt_tokens")?,
        completion_tokens: to_u64(get(row, "completion_tokens")?, "ledger.completion_tokens")?,
        cost: NanoUsd(to_u64(get(row, "cost")?, "ledger.cost")?),
        latency_ms: to_u64(get(row, "latency_ms")?, "ledger.latency_ms")?,
        error_code: get(row, "error_code")?,
        would_reject: would_reject_from(get(row, "would_reject")?)?,
        attempts: u32::try_from(get::<i64>(row, "attempts")?).unwrap_or(0),
        cache: get(row, "cache")?,
        cache_saved: NanoUsd(to_u64(get(row, "cache_saved")?, "ledger.cache_saved")?),
        policy: get(row, "policy")?,
    })
}

/// A ledger row with every value already converted, so that a batch is
/// checked whole before any statement runs.
struct LedgerValues<'a> {
    row: &'a LedgerRow,
    prompt_tokens: i64,
    completion_tokens: i64,
    cost: i64,
    latency_ms: i64,
    would_reject: Option<String>,
    cache_saved: i64,
}

const KEY_COLUMNS: &str = "id, team, name, secret_hash, prefix, previous_secret_hash, previous_expires_at, models, \
     policies, budget, period, requests_per_minute, tokens_per_minute, expires_at, revoked_at, suspended_at, \
     metadata, created_at";

const LEDGER_COLUMNS: &str = "ts, request_id, key_id, team, model, provider, status, prompt_tokens, \
     completion_tokens, cost, latency_ms, error_code, would_reject, attempts, cache, cache_saved, policy";

impl SqliteStore {
    /// Writes a ledger batch and, when given, its writer's mark in one
    /// transaction: all or nothing.
    async fn insert_rows(
        &self,
        rows: &[LedgerRow],
        mark: Option<&WriterMark>,
    ) -> Result<(), StoreError> {
        if rows.is_empty() && mark.is_none() {
            return Ok(());
        }
        let values = rows
            .iter()
            .map(|row| {
                Ok(LedgerValues {
                    row,
                    prompt_tokens: to_i64(row.prompt_tokens, "prompt_tokens")?,
                    completion_tokens: to_i64(row.completion_tokens, "completion_tokens")?,
                    cost: money(row.cost, "cost")?,
                    latency_ms: to_i64(row.latency_ms, "latency_ms")?,
                    would_reject: would_reject_text(&row.would_reject)?,
                    cache_saved: money(row.cache_saved, "cache_saved")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // One transaction around every chunk: the batch lands whole or not at all.
        let mut tx = self.pool.begin().await.map_err(backend)?;
        for chunk in values.chunks(SQLITE_ROWS_PER_STATEMENT) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("INSERT INTO ledger ({LEDGER_COLUMNS}) "));
            qb.push_values(chunk, |mut b, v| {
                b.push_bind(ms(v.row.ts))
                    .push_bind(ledger_text(&v.row.request_id))
                    .push_bind(ledger_text(v.row.key_id.as_str()))
                    .push_bind(ledger_text(v.row.team.as_str()))
                    .push_bind(ledger_text(&v.row.model))
                    .push_bind(ledger_text(&v.row.provider))
                    .push_bind(i64::from(v.row.status))
                    .push_bind(v.prompt_tokens)
                    .push_bind(v.completion_tokens)
                    .push_bind(v.cost)
                    .push_bind(v.latency_ms)
                    .push_bind(v.row.error_code.as_deref().map(ledger_text))
                    .push_bind(v.would_reject.as_deref())
                    .push_bind(i64::from(v.row.attempts))
                    .push_bind(v.row.cache.as_deref().map(ledger_text))
                    .push_bind(v.cache_saved)
                    .push_bind(v.row.policy.as_deref().map(ledger_text));
            });
            // A retry after an ambiguous failure must not bill twice.
            qb.push(" ON CONFLICT (request_id) DO NOTHING");
            // Not cached: every batch size is its own statement text, and a
            // cache of up to 100 of them (each thousands of parameters) held
            // megabytes of SQLite memory for statements rarely seen again.
            qb.build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
        }
        if let Some(mark) = mark {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO ledger_writers (writer, seq, seen_at) VALUES (?, ?, {NOW_MS}) \
                 ON CONFLICT (writer) DO UPDATE SET seq = MAX(seq, excluded.seq), seen_at = excluded.seen_at"
            )))
            .bind(&mark.writer)
            .bind(to_i64(mark.seq, "writer seq")?)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
            if rows.is_empty() {
                // Heartbeats are rare (one a second per idle writer): the
                // moment to forget the writers of processes long gone.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM ledger_writers WHERE seen_at < {NOW_MS} - {}",
                    FORGET_WRITER_AFTER_S * 1000
                )))
                .execute(&mut *tx)
                .await
                .map_err(backend)?;
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
    }
}

#[path = "sqlite_console.rs"]
mod console;

#[async_trait]
impl Store for SqliteStore {
    async fn create_team(&self, team: &TeamRecord) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO teams (id, policies, budget, period, models, created_at, cache) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(team.id.as_str())
        .bind(json_text(&team.policies, "policies")?)
        .bind(opt_money(team.budget, "budget")?)
        .bind(period_text(team.period))
        .bind(opt_json_text(team.models.as_ref(), "models")?)
        .bind(ms(team.created_at))
        .bind(team.cache)
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("team `{}`", team.id)))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn get_team(&self, id: &TeamId) -> Result<Option<TeamRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT id, policies, budget, period, models, created_at, cache FROM teams WHERE id = ?",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(backend)?;
        row.as_ref().map(team_from_row).transpose()
    }

    async fn list_teams(&self) -> Result<Vec<TeamRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, policies, budget, period, models, created_at, cache FROM teams ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(backend)?;
        rows.iter().map(team_from_row).collect()
    }

    async fn update_team(&self, team: &TeamRecord) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE teams SET policies = ?, budget = ?, period = ?, models = ?, cache = ? WHERE id = ?",
        )
        .bind(json_text(&team.policies, "policies")?)
        .bind(opt_money(team.budget, "budget")?)
        .bind(period_text(team.period))
        .bind(opt_json_text(team.models.as_ref(), "models")?)
        .bind(team.cache)
        .bind(team.id.as_str())
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn delete_team(&self, id: &TeamId) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM teams WHERE id = ?")
            .bind(id.as_str())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO keys (id, team, name, secret_hash, prefix, previous_secret_hash, previous_expires_at, \
             models, policies, budget, period, requests_per_minute, tokens_per_minute, expires_at, revoked_at, \
             suspended_at, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(key.id.as_str())
        .bind(key.team.as_str())
        .bind(key.name.as_deref())
        .bind(&key.secret_hash)
        .bind(&key.prefix)
        .bind(key.previous_secret_hash.as_deref())
        .bind(opt_ms(key.previous_expires_at))
        .bind(opt_json_text(key.models.as_ref(), "models")?)
        .bind(json_text(&key.policies, "policies")?)
        .bind(opt_money(key.budget, "budget")?)
        .bind(period_text(key.period))
        .bind(opt_to_i64(key.requests_per_minute, "requests_per_minute")?)
        .bind(opt_to_i64(key.tokens_per_minute, "tokens_per_minute")?)
        .bind(opt_ms(key.expires_at))
        .bind(opt_ms(key.revoked_at))
        .bind(opt_ms(key.suspended_at))
        .bind(json_text(&key.metadata, "metadata")?)
        .bind(ms(key.created_at))
        .execute(&self.pool)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("key `{}`", key.id)))
            }
            Err(e) => Err(backend(e)),
        }
    }

    async fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self, team: Option<&TeamId>) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = match team {
            Some(team) => {
                let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE team = ? ORDER BY created_at DESC, id DESC");
                sqlx::query(sqlx::AssertSqlSafe(sql)).bind(team.as_str()).fetch_all(&self.pool).await
            }
            None => {
                let sql = format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at DESC, id DESC");
                sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&self.pool).await
            }
        }
        .map_err(backend)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn update_key(&self, key: &KeyRecord) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE keys SET team = ?, name = ?, secret_hash = ?, prefix = ?, previous_secret_hash = ?, \
             previous_expires_at = ?, models = ?, policies = ?, budget = ?, period = ?, requests_per_minute = ?, \
             tokens_per_minute = ?, expires_at = ?, revoked_at = ?, suspended_at = ?, metadata = ? WHERE id = ?",
        )
        .bind(key.team.as_str())
        .bind(key.name.as_deref())
        .bind(&key.secret_hash)
        .bind(&key.prefix)
        .bind(key.previous_secret_hash.as_deref())
        .bind(opt_ms(key.previous_expires_at))
        .bind(opt_json_text(key.models.as_ref(), "models")?)
        .bind(json_text(&key.policies, "policies")?)
        .bind(opt_money(key.budget, "budget")?)
        .bind(period_text(key.period))
        .bind(opt_to_i64(key.requests_per_minute, "requests_per_minute")?)
        .bind(opt_to_i64(key.tokens_per_minute, "tokens_per_minute")?)
        .bind(opt_ms(key.expires_at))
        .bind(opt_ms(key.revoked_at))
        .bind(opt_ms(key.suspended_at))
        .bind(json_text(&key.metadata, "metadata")?)
        .bind(key.id.as_str())
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn suspend_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE keys SET suspended_at = ? WHERE id = ? AND suspended_at IS NULL AND revoked_at IS NULL",
        )
        .bind(ms(at))
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_ledger(&self, rows: &[LedgerRow]) -> Result<(), StoreError> {
        self.insert_rows(rows, None).await
    }

    async fn insert_ledger_marked(
        &self,
        rows: &[LedgerRow],
        mark: &WriterMark,
    ) -> Result<(), StoreError> {
        self.insert_rows(rows, Some(mark)).await
    }

    async fn ledger_snapshot(
        &self,
        scope: &SpendScope,
        since: DateTime<Utc>,
    ) -> Result<LedgerSnapshot, StoreError> {
        // One statement, one snapshot: a batch and its writer's mark are
        // both seen or both not (and the rollups are written in the batch's
        // transaction, so they are too).
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT NULL AS writer, ");
        rollup::sqlite_cost_since(&mut qb, scope, since);
        qb.push(format!(
            " AS n, 0 AS idle_ms \
             UNION ALL \
             SELECT writer, seq, MAX(0, {NOW_MS} - seen_at) FROM ledger_writers \
             WHERE seen_at > {NOW_MS} - {}",
            WRITER_SNAPSHOT_WINDOW_S * 1000
        ));
        let rows = qb.build().fetch_all(&self.pool).await.map_err(backend)?;
        let mut snapshot = LedgerSnapshot::default();
        for row in &rows {
            let n = to_u64(get(row, "n")?, "ledger_writers.seq")?;
            match get::<Option<String>>(row, "writer")? {
                None => snapshot.spent = NanoUsd(n),
                Some(writer) => snapshot.writers.push(WriterState {
                    mark: WriterMark { writer, seq: n },
                    idle_ms: to_u64(get(row, "idle_ms")?, "ledger_writers.seen_at")?,
                }),
            }
        }
        Ok(snapshot)
    }

    async fn spend(&self, query: &SpendQuery) -> Result<Vec<SpendRow>, StoreError> {
        // Whole days and hours from the rollups, the edges from raw rows.
        let mut qb = rollup::sqlite_spend(query);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(backend)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let requests: i64 = get(row, "requests")?;
            // Without grouping an empty ledger still answers one `total` row of zeros.
            out.push(SpendRow {
                group: get(row, "grp")?,
                requests: to_u64(requests, "requests")?,
                prompt_tokens: to_u64(get(row, "prompt_tokens")?, "prompt_tokens")?,
                completion_tokens: to_u64(get(row, "completion_tokens")?, "completion_tokens")?,
                cost: NanoUsd(to_u64(get(row, "cost")?, "cost")?),
                cache_hits: to_u64(get(row, "cache_hits")?, "cache_hits")?,
                cache_saved: NanoUsd(to_u64(get(row, "cache_saved")?, "cache_saved")?),
            });
        }
        Ok(out)
    }

    async fn requests(&self, query: &RequestsQuery) -> Result<Vec<LedgerRow>, StoreError> {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {LEDGER_COLUMNS} FROM ledger WHERE 1 = 1"));
        if let Some(team) = &query.team {
            qb.push(" AND team = ").push_bind(team.as_str());
        }
        if let Some(key) = &query.key {
            qb.push(" AND key_id = ").push_bind(key.as_str());
        }
        qb.push(" ORDER BY ts DESC, seq DESC LIMIT ")
            .push_bind(i64::from(requests_limit(query.limit)));
        let rows = qb.build().fetch_all(&self.pool).await.map_err(backend)?;
        rows.iter().map(ledger_from_row).collect()
    }

    async fn spend_since(
        &self,
        scope: &SpendScope,
        since: DateTime<Utc>,
    ) -> Result<NanoUsd, StoreError> {
        let mut qb: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT ");
        rollup::sqlite_cost_since(&mut qb, scope, since);
        let total: i64 = qb
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(NanoUsd(to_u64(total, "spend")?))
    }

    async fn get_setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)
    }

    async fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
            .bind(name)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn insert_audit(&self, entry: &super::AuditEntry) -> Result<(), StoreError> {
        console::insert_audit(&self.pool, entry).await
    }

    async fn audit(&self, query: &super::AuditQuery) -> Result<Vec<super::AuditRow>, StoreError> {
        console::audit(&self.pool, query).await
    }

    async fn spend_series(
        &self,
        query: &super::SeriesQuery,
    ) -> Result<Vec<super::SeriesPoint>, StoreError> {
        console::spend_series(&self.pool, query).await
    }

    async fn request_log(
        &self,
        query: &super::RequestLogQuery,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        console::request_log(&self.pool, query).await
    }
}
