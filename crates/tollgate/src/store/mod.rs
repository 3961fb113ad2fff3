//! Durable state: teams and virtual keys created over the admin API, the
//! spend ledger, and a few settings (the generated admin key's hash). One
//! trait, one implementation per engine (SQLite, PostgreSQL), each with its
//! own migrations. The ledger is written in batches by [`ledger`]'s writer,
//! never on the request path.

mod codec;
pub mod console;
pub mod journal;
pub mod ledger;
mod postgres;
mod rollup;
mod sqlite;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::types::{KeyId, NanoUsd, Period, TeamId};

pub use codec::redact_url;
pub use console::{
    AuditEntry, AuditQuery, AuditRow, Bucket, RequestLogQuery, SeriesPoint, SeriesQuery,
    StatusFilter,
};
pub use journal::{Journal, JournalEntry};
pub use ledger::{LedgerHandle, LedgerOptions, LedgerWriter};

/// Opens the store a URL names and brings its schema up to date:
/// `sqlite://PATH` (created if missing), `sqlite::memory:` (tests), or
/// `postgres://…` / `postgresql://…`. Messages show the URL with any
/// password redacted.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        sqlite::SqliteStore::connect(url).await
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres::PostgresStore::connect(url).await
    } else {
        Err(StoreError::Backend(format!(
            "store URL `{}` names no supported engine: use `sqlite://PATH` or `postgres://USER@HOST/DB`",
            redact_url(url)
        )))
    }
}

/// A team created over the admin API (config-file teams are not stored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamRecord {
    pub id: TeamId,
    /// Names of config policies attached to the team.
    pub policies: Vec<String>,
    /// A team-wide cost limit set over the API (with `period`).
    pub budget: Option<NanoUsd>,
    pub period: Option<Period>,
    /// Model globs; `None` means every model.
    pub models: Option<Vec<String>>,
    pub created_at: DateTime<Utc>,
    /// `false`: the team opted out of the response cache (SPEC §9), as a
    /// config team does with `cache: false`.
    #[serde(default = "cache_on")]
    pub cache: bool,
}

fn cache_on() -> bool {
    true
}

/// A virtual key. The secret itself is never stored: only its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The public id inside `sk-tg-<id>-<secret>`.
    pub id: KeyId,
    pub team: TeamId,
    pub name: Option<String>,
    /// Hex SHA-256 of the secret part.
    pub secret_hash: String,
    /// What `GET /admin/keys` shows of the key, e.g. `sk-tg-3fa9c1d2e4b5`.
    pub prefix: String,
    /// After a rotation, the old secret's hash, valid until `previous_expires_at`.
    pub previous_secret_hash: Option<String>,
    pub previous_expires_at: Option<DateTime<Utc>>,
    pub models: Option<Vec<String>>,
    pub policies: Vec<String>,
    pub budget: Option<NanoUsd>,
    pub period: Option<Period>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Set when a loop guard with `on_trip: suspend` tripped; cleared by an admin.
    pub suspended_at: Option<DateTime<Utc>>,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// One row per request that reached policy evaluation or beyond.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerRow {
    pub ts: DateTime<Utc>,
    pub request_id: String,
    pub key_id: KeyId,
    pub team: TeamId,
    /// The client-facing model name.
    pub model: String,
    /// Provider that served it; empty when none did.
    pub provider: String,
    pub status: u16,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: NanoUsd,
    pub latency_ms: u64,
    pub error_code: Option<String>,
    /// `policy:code` of each `mode: shadow` policy that would have rejected
    /// the request (e.g. `trial-cap:budget_exceeded`); empty when none.
    #[serde(default)]
    pub would_reject: Vec<String>,
    /// Attempts at providers (retries and fallbacks included); 0 when it
    /// reached none.
    #[serde(default)]
    pub attempts: u32,
    /// What the response cache did for it (SPEC §9): `hit`, `miss` or
    /// `skip`; `None` when the cache did not apply.
    #[serde(default)]
    pub cache: Option<String>,
    /// For a hit, what the stored call cost: what the cache saved.
    #[serde(default)]
    pub cache_saved: NanoUsd,
    /// The enforcing policy that refused the request (`budget_exceeded`,
    /// `rate_limit_exceeded`, `loop_detected`), if one did.
    #[serde(default)]
    pub policy: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Team,
    Key,
    Model,
    Day,
}

#[derive(Debug, Clone, Default)]
pub struct SpendQuery {
    pub group_by: Option<GroupBy>,
    pub team: Option<TeamId>,
    pub key: Option<KeyId>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpendRow {
    /// The team id, key id, model name or `YYYY-MM-DD` day; `total` without grouping.
    pub group: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: NanoUsd,
    /// Requests answered from the response cache (SPEC §9).
    #[serde(default)]
    pub cache_hits: u64,
    /// What those hits would have cost: each stored call's cost, once per hit.
    #[serde(default)]
    pub cache_saved: NanoUsd,
}

#[derive(Debug, Clone, Default)]
pub struct RequestsQuery {
    pub team: Option<TeamId>,
    pub key: Option<KeyId>,
    pub limit: u32,
}

/// Whose spend to sum when rebuilding a budget counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendScope {
    Team(TeamId),
    Key(KeyId),
}

/// A ledger writer's progress: `seq` numbers its rows in the order it
/// recorded them, and every row up to `seq` is durable. Written in the same
/// transaction as the rows, so whoever reads the ledger knows exactly which
/// of the writer's rows it has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterMark {
    /// Unique per gateway process (see [`LedgerHandle::writer_id`]).
    pub writer: String,
    pub seq: u64,
}

/// What a budget counter is rebuilt from: a scope's spend and the marks of
/// the writers heard from in the last hour, read in one snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerSnapshot {
    pub spent: NanoUsd,
    pub writers: Vec<WriterState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterState {
    pub mark: WriterMark,
    /// Since the writer last wrote (rows or a heartbeat), by the store's clock.
    pub idle_ms: u64,
}

/// Writers not heard from for this long are left out of a
/// [`LedgerSnapshot`]; after [`FORGET_WRITER_AFTER_S`] their row is deleted.
pub const WRITER_SNAPSHOT_WINDOW_S: u64 = 3600;
pub const FORGET_WRITER_AFTER_S: u64 = 7 * 86_400;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(String),
    #[error("store unreachable or failing: {0}")]
    Backend(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_team(&self, team: &TeamRecord) -> Result<(), StoreError>;
    async fn get_team(&self, id: &TeamId) -> Result<Option<TeamRecord>, StoreError>;
    async fn list_teams(&self) -> Result<Vec<TeamRecord>, StoreError>;
    /// Replaces a team's fields; `false` if no such team.
    async fn update_team(&self, team: &TeamRecord) -> Result<bool, StoreError>;
    /// `false` if no such team.
    async fn delete_team(&self, id: &TeamId) -> Result<bool, StoreError>;

    async fn create_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    async fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;
    /// Newest first.
    async fn list_keys(&self, team: Option<&TeamId>) -> Result<Vec<KeyRecord>, StoreError>;
    /// Replaces a key's mutable fields (revocation, rotation, suspension);
    /// `false` if no such key.
    async fn update_key(&self, key: &KeyRecord) -> Result<bool, StoreError>;
    /// Marks a live key suspended at `at`, in one conditional update that
    /// touches nothing else, so a revocation landing meanwhile is never
    /// undone. `false` if there is no such key or it is already suspended or
    /// revoked.
    async fn suspend_key(&self, id: &KeyId, at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Writes a batch in one statement/transaction; all or nothing.
    async fn insert_ledger(&self, rows: &[LedgerRow]) -> Result<(), StoreError>;
    async fn spend(&self, query: &SpendQuery) -> Result<Vec<SpendRow>, StoreError>;
    /// Newest first.
    async fn requests(&self, query: &RequestsQuery) -> Result<Vec<LedgerRow>, StoreError>;
    /// Total cost in the ledger for a scope since `since`.
    async fn spend_since(
        &self,
        scope: &SpendScope,
        since: DateTime<Utc>,
    ) -> Result<NanoUsd, StoreError>;

    /// [`Store::insert_ledger`], recording `mark` in the same transaction
    /// (with no rows: a heartbeat that only says the writer is alive).
    async fn insert_ledger_marked(
        &self,
        rows: &[LedgerRow],
        mark: &WriterMark,
    ) -> Result<(), StoreError> {
        let _ = mark;
        self.insert_ledger(rows).await
    }

    /// [`Store::spend_since`] and the writers' marks, in one snapshot.
    async fn ledger_snapshot(
        &self,
        scope: &SpendScope,
        since: DateTime<Utc>,
    ) -> Result<LedgerSnapshot, StoreError> {
        Ok(LedgerSnapshot {
            spent: self.spend_since(scope, since).await?,
            writers: Vec::new(),
        })
    }

    async fn get_setting(&self, name: &str) -> Result<Option<String>, StoreError>;
    async fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError>;

    /// For `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    // The console and the audit log (`console`). Defaults refuse, so test
    // doubles need not implement them; both engines do.

    /// Appends one row to the append-only audit log.
    async fn insert_audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let _ = entry;
        Err(unsupported("the audit log"))
    }
    /// Newest first.
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRow>, StoreError> {
        let _ = query;
        Err(unsupported("the audit log"))
    }
    /// Spend per team per bucket, oldest bucket first.
    async fn spend_series(&self, query: &SeriesQuery) -> Result<Vec<SeriesPoint>, StoreError> {
        let _ = query;
        Err(unsupported("spend series"))
    }
    /// The request log filtered and paged, newest first.
    async fn request_log(&self, query: &RequestLogQuery) -> Result<Vec<LedgerRow>, StoreError> {
        let _ = query;
        Err(unsupported("the request log"))
    }
}

fn unsupported(what: &str) -> StoreError {
    StoreError::Backend(format!("this store does not keep {what}"))
}
