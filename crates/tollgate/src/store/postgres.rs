//! The scale-out store: PostgreSQL, shared by every gateway replica.
//! Timestamps are `timestamptz`, truncated to the millisecond on the way in
//! so both engines hand back the same values. Ledger batches go in as one
//! `INSERT … SELECT FROM UNNEST(arrays)`: one statement and one round trip
//! whatever the batch size, with no bind-parameter limit to chunk around.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row};

use super::codec::{
    from_json, json_text, ledger_text, money, opt_from_json, opt_json_text, opt_money, opt_nano,
    opt_to_i64, opt_to_u64, period_from, period_text, redact_url, requests_limit, status_from,
    to_i64, to_u64, would_reject_from, would_reject_text,
};
use super::rollup;
use super::{
    FORGET_WRITER_AFTER_S, KeyRecord, LedgerRow, LedgerSnapshot, RequestsQuery, SpendQuery,
    SpendRow, SpendScope, Store, StoreError, TeamRecord, WRITER_SNAPSHOT_WINDOW_S, WriterMark,
    WriterState,
};
use crate::types::{KeyId, NanoUsd, TeamId};

/// A store that does not answer within this long counts as down, so the
/// ledger writer backs off and `/readyz` fails instead of hanging.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub(crate) async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
        let shown = redact_url(url);
        let options = PgConnectOptions::from_str(url).map_err(|e| {
            StoreError::Backend(format!(
                "store URL `{shown}` is not a valid PostgreSQL URL: {e}"
            ))
        })?;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| {
                StoreError::Backend(format!("cannot connect to PostgreSQL store `{shown}`: {e}"))
            })?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| {
                StoreError::Backend(format!("migrating PostgreSQL store `{shown}` failed: {e}"))
            })?;
        Ok(Arc::new(PostgresStore { pool }))
    }
}

fn backend(e: sqlx::Error) -> StoreError {
    StoreError::Backend(format!("PostgreSQL: {e}"))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// PostgreSQL keeps microseconds, SQLite (here) milliseconds: cut to the
/// millisecond so a value reads back the same on both.
fn ms(ts: DateTime<Utc>) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ts.timestamp_millis())
        .single()
        .unwrap_or(ts)
}

fn opt_ms(ts: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    ts.map(ms)
}

fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(column)
        .map_err(|e| StoreError::Corrupt(format!("column `{column}`: {e}")))
}

fn team_from_row(row: &PgRow) -> Result<TeamRecord, StoreError> {
    Ok(TeamRecord {
        id: TeamId(get(row, "id")?),
        policies: from_json(&get::<String>(row, "policies")?, "teams.policies")?,
        budget: opt_nano(get(row, "budget")?, "teams.budget")?,
        period: period_from(get(row, "period")?)?,
        models: opt_from_json(get(row, "models")?, "teams.models")?,
        cache: get(row, "cache")?,
        created_at: get(row, "created_at")?,
    })
}

fn key_from_row(row: &PgRow) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        id: KeyId(get(row, "id")?),
        team: TeamId(get(row, "team")?),
        name: get(row, "name")?,
        secret_hash: get(row, "secret_hash")?,
        prefix: get(row, "prefix")?,
        previous_secret_hash: get(row, "previous_secret_hash")?,
        previous_expires_at: get(row, "previous_expires_at")?,
        models: opt_from_json(get(row, "models")?, "keys.models")?,
        policies: from_json(&get::<String>(row, "policies")?, "keys.policies")?,
        budget: opt_nano(get(row, "budget")?, "keys.budget")?,
        period: period_from(get(row, "period")?)?,
        requests_per_minute: opt_to_u64(
            get(row, "requests_per_minute")?,
            "keys.requests_per_minute",
        )?,
        tokens_per_minute: opt_to_u64(get(row, "tokens_per_minute")?, "keys.tokens_per_minute")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
        suspended_at: get(row, "suspended_at")?,
        metadata: from_json(&get::<String>(row, "metadata")?, "keys.metadata")?,
        created_at: get(row, "created_at")?,
    })
}

fn ledger_from_row(row: &PgRow) -> Result<LedgerRow, StoreError> {
    Ok(LedgerRow {
        ts: get(row, "ts")?,
        request_id: get(row, "request_id")?,
        key_id: KeyId(get(row, "key_id")?),
        team: TeamId(get(row, "team")?),
        model: get(row, "model")?,
        provider: get(row, "provider")?,
        status: status_from(i64::from(get::<i32>(row, "status")?))?,
        prompt_tokens: to_u64(get(row, "prompt_tokens")?, "ledger.prompt_tokens")?,
        completion_tokens: to_u64(get(row, "completion_tokens")?, "ledger.completion_tokens")?,
        cost: NanoUsd(to_u64(get(row, "cost")?, "ledger.cost")?),
        latency_ms: to_u64(get(row, "latency_ms")?, "ledger.latency_ms")?,
        error_code: get(row, "error_code")?,
        would_reject: would_reject_from(get(row, "would_reject")?)?,
        attempts: u32::try_from(get::<i32>(row, "attempts")?).unwrap_or(0),
        cache: get(row, "cache")?,
        cache_saved: NanoUsd(to_u64(get(row, "cache_saved")?, "ledger.cache_saved")?),
        policy: get(row, "policy")?,
    })
}

const KEY_COLUMNS: &str = "id, team, name, secret_hash, prefix, previous_secret_hash, previous_expires_at, models, \
     policies, budget, period, requests_per_minute, tokens_per_minute, expires_at, revoked_at, suspended_at, \
     metadata, created_at";

const LEDGER_COLUMNS: &str = "ts, request_id, key_id, team, model, provider, status, prompt_tokens, \
     completion_tokens, cost, latency_ms, error_code, would_reject, attempts, cache, cache_saved, policy";

/// The ledger batch as one array per column, for `UNNEST`.
#[derive(Default)]
struct LedgerColumns {
    ts: Vec<DateTime<Utc>>,
    request_id: Vec<String>,
    key_id: Vec<String>,
    team: Vec<String>,
    model: Vec<String>,
    provider: Vec<String>,
    status: Vec<i32>,
    prompt_tokens: Vec<i64>,
    completion_tokens: Vec<i64>,
    cost: Vec<i64>,
    latency_ms: Vec<i64>,
    error_code: Vec<Option<String>>,
    would_reject: Vec<Option<String>>,
    attempts: Vec<i32>,
    cache: Vec<Option<String>>,
    cache_saved: Vec<i64>,
    policy: Vec<Option<String>>,
}

impl LedgerColumns {
    fn from_rows(rows: &[LedgerRow]) -> Result<Self, StoreError> {
        let mut c = LedgerColumns::default();
        for row in rows {
            c.ts.push(ms(row.ts));
            c.request_id.push(ledger_text(&row.request_id).into_owned());
            c.key_id.push(ledger_text(row.key_id.as_str()).into_owned());
            c.team.push(ledger_text(row.team.as_str()).into_owned());
            c.model.push(ledger_text(&row.model).into_owned());
            c.provider.push(ledger_text(&row.provider).into_owned());
            c.status.push(i32::from(row.status));
            c.prompt_tokens
                .push(to_i64(row.prompt_tokens, "prompt_tokens")?);
            c.completion_tokens
                .push(to_i64(row.completion_tokens, "completion_tokens")?);
            c.cost.push(money(row.cost, "cost")?);
            c.latency_ms.push(to_i64(row.latency_ms, "latency_ms")?);
            c.error_code.push(
                row.error_code
                    .as_deref()
                    .map(|e| ledger_text(e).into_owned()),
            );
            c.would_reject.push(would_reject_text(&row.would_reject)?);
            c.attempts
                .push(i32::try_from(row.attempts).unwrap_or(i32::MAX));
            c.cache
                .push(row.cache.as_deref().map(|e| ledger_text(e).into_owned()));
            c.cache_saved.push(money(row.cache_saved, "cache_saved")?);
            c.policy
                .push(row.policy.as_deref().map(|p| ledger_text(p).into_owned()));
        }
        Ok(c)
    }
}

/// Inserts a ledger batch in one statement: the batch lands whole or not at
/// all, and a retry of rows already written is a no-op.
async fn insert_rows<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    rows: &[LedgerRow],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let c = LedgerColumns::from_rows(rows)?;
    let sql = format!(
        "INSERT INTO ledger ({LEDGER_COLUMNS}) \
         SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
         $7::int4[], $8::int8[], $9::int8[], $10::int8[], $11::int8[], $12::text[], $13::text[], \
         $14::int4[], $15::text[], $16::int8[], $17::text[]) \
         ON CONFLICT (request_id) DO NOTHING"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(c.ts)
        .bind(c.request_id)
        .bind(c.key_id)
        .bind(c.team)
        .bind(c.model)
        .bind(c.provider)
        .bind(c.status)
        .bind(c.prompt_tokens)
        .bind(c.completion_tokens)
        .bind(c.cost)
        .bind(c.latency_ms)
        .bind(c.error_code)
        .bind(c.would_reject)
        .bind(c.attempts)
        .bind(c.cache)
        .bind(c.cache_saved)
        .bind(c.policy)
        .execute(executor)
        .await
        .map_err(backend)?;
    Ok(())
}

#[path = "postgres_console.rs"]
mod console;

#[async_trait]
impl Store for PostgresStore {
    async fn create_team(&self, team: &TeamRecord) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO teams (id, policies, budget, period, models, created_at, cache) VALUES ($1, $2, $3, $4, $5, $6, $7)",
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
            "SELECT id, policies, budget, period, models, created_at, cache FROM teams WHERE id = $1",
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
            "UPDATE teams SET policies = $1, budget = $2, period = $3, models = $4, cache = $5 WHERE id = $6",
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
        let done = sqlx::query("DELETE FROM teams WHERE id = $1")
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
             suspended_at, metadata, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
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
        let sql = format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = $1");
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
                let sql =
                    format!("SELECT {KEY_COLUMNS} FROM keys WHERE team = $1 ORDER BY created_at DESC, id DESC");
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
            "UPDATE keys SET team = $1, name = $2, secret_hash = $3, prefix = $4, previous_secret_hash = $5, \
             previous_expires_at = $6, models = $7, policies = $8, budget = $9, period = $10, \
             requests_per_minute = $11, tokens_per_minute = $12, expires_at = $13, revoked_at = $14, \
             suspended_at = $15, metadata = $16 WHERE id = $17",
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
            "UPDATE keys SET suspended_at = $1 WHERE id = $2 AND suspended_at IS NULL AND revoked_at IS NULL",
        )
        .bind(ms(at))
        .bind(id.as_str())
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_ledger(&self, rows: &[LedgerRow]) -> Result<(), StoreError> {
        insert_rows(&self.pool, rows).await
    }

    async fn insert_ledger_marked(
        &self,
        rows: &[LedgerRow],
        mark: &WriterMark,
    ) -> Result<(), StoreError> {
        let seq = to_i64(mark.seq, "writer seq")?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        insert_rows(&mut *tx, rows).await?;
        sqlx::query(
            "INSERT INTO ledger_writers (writer, seq, seen_at) VALUES ($1, $2, now()) \
             ON CONFLICT (writer) DO UPDATE SET seq = GREATEST(ledger_writers.seq, excluded.seq), \
             seen_at = excluded.seen_at",
        )
        .bind(&mark.writer)
        .bind(seq)
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        if rows.is_empty() {
            // Heartbeats are rare (one a second per idle writer): the
            // moment to forget the writers of processes long gone.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM ledger_writers WHERE seen_at < now() - interval '{FORGET_WRITER_AFTER_S} seconds'"
            )))
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(())
    }

    async fn ledger_snapshot(
        &self,
        scope: &SpendScope,
        since: DateTime<Utc>,
    ) -> Result<LedgerSnapshot, StoreError> {
        // One statement, one snapshot: a batch and its writer's mark are
        // both seen or both not (and the rollups are written in the batch's
        // transaction, so they are too).
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("SELECT NULL::text AS writer, ");
        rollup::pg_cost_since(&mut qb, scope, since);
        qb.push(format!(
            "::BIGINT AS n, 0::BIGINT AS idle_ms \
             UNION ALL \
             SELECT writer, seq, GREATEST(0, (EXTRACT(EPOCH FROM now() - seen_at) * 1000))::BIGINT \
             FROM ledger_writers WHERE seen_at > now() - interval '{WRITER_SNAPSHOT_WINDOW_S} seconds'"
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
        let mut qb = rollup::pg_spend(query);
        let rows = qb.build().fetch_all(&self.pool).await.map_err(backend)?;
        rows.iter()
            .map(|row| {
                Ok(SpendRow {
                    group: get(row, "grp")?,
                    requests: to_u64(get(row, "requests")?, "requests")?,
                    prompt_tokens: to_u64(get(row, "prompt_tokens")?, "prompt_tokens")?,
                    completion_tokens: to_u64(get(row, "completion_tokens")?, "completion_tokens")?,
                    cost: NanoUsd(to_u64(get(row, "cost")?, "cost")?),
                    cache_hits: to_u64(get(row, "cache_hits")?, "cache_hits")?,
                    cache_saved: NanoUsd(to_u64(get(row, "cache_saved")?, "cache_saved")?),
                })
            })
            .collect()
    }

    async fn requests(&self, query: &RequestsQuery) -> Result<Vec<LedgerRow>, StoreError> {
        let mut qb: QueryBuilder<Postgres> =
            QueryBuilder::new(format!("SELECT {LEDGER_COLUMNS} FROM ledger WHERE TRUE"));
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
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("SELECT ");
        rollup::pg_cost_since(&mut qb, scope, since);
        qb.push("::BIGINT");
        let total: i64 = qb
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(backend)?;
        Ok(NanoUsd(to_u64(total, "spend")?))
    }

    async fn get_setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(backend)
    }

    async fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
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
