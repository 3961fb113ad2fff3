//! What the operators' console (`/ui`) and the audit log ask of the store,
//! beyond the admin API's reports: spend per team in time buckets, the
//! request log filtered and paged, and the append-only audit log. The types
//! live here; each engine implements the queries in its own
//! `*_console.rs` child module.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::types::{KeyId, NanoUsd, TeamId};

/// Most rows one audit or request-log query returns.
pub const MAX_PAGE: u32 = 1000;

/// One admin mutation, as recorded. `change` holds the request's fields,
/// never a secret (see `admin::audit::redact`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub ts: DateTime<Utc>,
    /// Which admin credential: `admin-key`, `ui:<session id prefix>`, `signal:SIGHUP`.
    pub actor: String,
    /// `team.create`, `key.revoke`, `config.reload`, …
    pub action: String,
    /// `team:<id>`, `key:<id>`, `config`.
    pub target: String,
    /// The peer address of the request (`signal` for SIGHUP).
    pub source: String,
    /// The HTTP status the mutation was answered with.
    pub status: u16,
    pub change: serde_json::Value,
}

/// An audit row with its id, which orders the log and is the paging cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    pub id: u64,
    #[serde(flatten)]
    pub entry: AuditEntry,
}

#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Only rows older than this id (the previous page's `next_cursor`).
    pub before: Option<u64>,
    pub limit: u32,
}

/// The width of one bucket of a spend series, on UTC boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn seconds(self) -> i64 {
        match self {
            Bucket::Hour => 3600,
            Bucket::Day => 86_400,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub bucket: Bucket,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// One team's spend in one bucket; buckets without requests are absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesPoint {
    pub start: DateTime<Utc>,
    pub team: TeamId,
    pub requests: u64,
    pub cost: NanoUsd,
}

/// Which answers a request-log query keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Exact(u16),
    /// Below 400.
    Ok,
    /// 400 and above.
    Error,
}

#[derive(Debug, Clone, Default)]
pub struct RequestLogQuery {
    pub team: Option<TeamId>,
    pub key: Option<KeyId>,
    pub model: Option<String>,
    pub status: Option<StatusFilter>,
    /// Rows to skip, newest first.
    pub offset: u32,
    pub limit: u32,
}

pub(crate) fn page_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, MAX_PAGE))
}
