//! Who is calling: the virtual key from the request headers, checked
//! against the store behind a cache, into an [`AuthContext`]. Also the admin
//! key check. A revoke on this node invalidates the cache entry at once;
//! other nodes re-read a key at most [`KeyCache::FRESHNESS`] after caching it.

pub mod key;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use http::HeaderMap;

use crate::error::ApiError;
use crate::store::{KeyRecord, Store, TeamRecord};
use crate::types::{KeyId, Secret, TeamId};

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct AuthContext {
    pub key: Arc<KeyRecord>,
}

#[derive(Clone)]
struct Cached {
    key: Arc<KeyRecord>,
    fetched: Instant,
}

/// Key records by public id. Entries older than `FRESHNESS` are re-read
/// from the store; if the store is down, the stale entry keeps serving (SPEC
/// §6: requests keep flowing from cached keys while PostgreSQL is away).
#[derive(Clone)]
pub struct KeyCache {
    store: Arc<dyn Store>,
    entries: moka::sync::Cache<KeyId, Cached>,
    /// API-created teams by id (`None`: not an API team), same freshness.
    teams: moka::sync::Cache<TeamId, (Option<Arc<TeamRecord>>, Instant)>,
}

impl KeyCache {
    /// Bound on how stale a revocation can be on another node (SPEC §4: 5 s).
    pub const FRESHNESS: Duration = Duration::from_secs(2);

    pub fn new(store: Arc<dyn Store>) -> Self {
        KeyCache {
            store,
            entries: moka::sync::Cache::new(100_000),
            teams: moka::sync::Cache::new(10_000),
        }
    }

    /// The API-created team record of `id`, if it is one (config teams are
    /// not stored). Served stale while the store is unreachable.
    pub async fn team(&self, id: &TeamId) -> Result<Option<Arc<TeamRecord>>, ApiError> {
        let stale = match self.teams.get(id) {
            Some((t, at)) if at.elapsed() < Self::FRESHNESS => return Ok(t),
            other => other,
        };
        match self.store.get_team(id).await {
            Ok(t) => {
                let t = t.map(Arc::new);
                self.teams.insert(id.clone(), (t.clone(), Instant::now()));
                Ok(t)
            }
            Err(e) => match stale {
                Some((t, _)) => Ok(t),
                None => Err(ApiError::Internal(format!(
                    "cannot load team `{id}`: the store is unreachable ({e}); retry shortly"
                ))),
            },
        }
    }

    /// Forgets a team so the next request re-reads it.
    pub fn invalidate_team(&self, id: &TeamId) {
        self.teams.invalidate(id);
    }

    /// Forgets a key so the next request re-reads it (after revoke, rotate,
    /// suspend on this node).
    pub fn invalidate(&self, id: &KeyId) {
        self.entries.invalidate(id);
    }

    async fn get(&self, id: &KeyId) -> Result<Option<Arc<KeyRecord>>, ApiError> {
        let stale = match self.entries.get(id) {
            Some(c) if c.fetched.elapsed() < Self::FRESHNESS => return Ok(Some(c.key)),
            other => other,
        };
        match self.store.get_key(id).await {
            Ok(Some(rec)) => {
                let key = Arc::new(rec);
                self.entries.insert(
                    id.clone(),
                    Cached {
                        key: key.clone(),
                        fetched: Instant::now(),
                    },
                );
                Ok(Some(key))
            }
            Ok(None) => {
                self.entries.invalidate(id);
                Ok(None)
            }
            Err(e) => match stale {
                Some(c) => {
                    tracing::warn!(error = %e, key_id = %id, "store unreachable; serving cached key");
                    Ok(Some(c.key))
                }
                None => Err(ApiError::Internal(format!(
                    "cannot verify the API key: the key store is unreachable ({e}); retry shortly"
                ))),
            },
        }
    }

    /// Authenticates a data-plane request at time `now`.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        now: DateTime<Utc>,
    ) -> Result<AuthContext, ApiError> {
        let presented = presented_key(headers).ok_or_else(|| {
            ApiError::InvalidApiKey(
                "no API key: send your tollgate virtual key as `Authorization: Bearer sk-tg-…`"
                    .into(),
            )
        })?;
        let Some((id, secret)) = key::parse(presented) else {
            return Err(ApiError::InvalidApiKey(
                "the API key is not a tollgate virtual key (`sk-tg-…`); ask your gateway admin for one".into(),
            ));
        };
        let unknown = || {
            ApiError::InvalidApiKey(format!(
                "the API key `{}…` is not valid",
                key::display_prefix(&id)
            ))
        };
        let rec = self.get(&id).await?.ok_or_else(unknown)?;
        let current = key::verify(secret, &rec.secret_hash);
        let previous_in_grace = !current
            && rec.previous_expires_at.is_some_and(|until| now < until)
            && rec
                .previous_secret_hash
                .as_deref()
                .is_some_and(|h| key::verify(secret, h));
        if !current && !previous_in_grace {
            return Err(unknown());
        }
        if let Some(at) = rec.revoked_at {
            return Err(ApiError::InvalidApiKey(format!(
                "the API key `{}` was revoked at {at}",
                rec.prefix
            )));
        }
        if let Some(at) = rec.suspended_at {
            return Err(ApiError::InvalidApiKey(format!(
                "the API key `{}` was suspended at {at} by a loop guard; an admin must restore it",
                rec.prefix
            )));
        }
        if let Some(at) = rec.expires_at.filter(|at| *at <= now) {
            return Err(ApiError::InvalidApiKey(format!(
                "the API key `{}` expired at {at}",
                rec.prefix
            )));
        }
        Ok(AuthContext { key: rec })
    }
}

/// The key from `Authorization: Bearer`, `api-key` or `x-api-key`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let v = v.trim();
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .unwrap_or(v);
        return Some(token.trim());
    }
    ["api-key", "x-api-key"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(str::trim)
}

/// The admin key, kept only as its hash.
#[derive(Clone)]
pub struct AdminKey {
    hash: String,
}

impl AdminKey {
    pub fn from_plain(key: &Secret<String>) -> Self {
        AdminKey {
            hash: key::hash_secret(key.expose()),
        }
    }

    pub fn from_hash(hash: String) -> Self {
        AdminKey { hash }
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Checks the request's bearer token against the admin key.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let presented = presented_key(headers).ok_or_else(|| {
            ApiError::AdminUnauthorized(
                "admin API: send the admin key as `Authorization: Bearer <admin key>`".into(),
            )
        })?;
        if key::verify(presented, &self.hash) {
            Ok(())
        } else {
            Err(ApiError::AdminUnauthorized(
                "admin API: the key is not the admin key (virtual keys cannot call /admin)".into(),
            ))
        }
    }
}
