//! `/admin/keys`: create, list, show, revoke, rotate and restore virtual
//! keys. The full key leaves the gateway only in the create and rotate
//! responses; everything else shows its prefix. Every change that can
//! lock a key out drops it from this node's key cache at once.

use axum::Json;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, TimeDelta, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::common::{
    budget, check_models, check_policies, find_team, now, optional_whole_number, store_error,
    team_not_found, whole_number,
};
use super::extract::{Admin, AdminJson, AdminQuery};
use crate::auth::key;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::KeyRecord;
use crate::types::{KeyId, Period, TeamId};

/// Longest grace period a rotation may give the old secret.
const MAX_GRACE_SECONDS: u64 = 30 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    team: String,
    name: Option<String>,
    models: Option<Vec<String>>,
    #[serde(default)]
    policies: Vec<String>,
    budget_usd: Option<f64>,
    period: Option<Period>,
    #[serde(default, deserialize_with = "optional_whole_number")]
    requests_per_minute: Option<u64>,
    #[serde(default, deserialize_with = "optional_whole_number")]
    tokens_per_minute: Option<u64>,
    /// RFC 3339.
    expires_at: Option<String>,
    metadata: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateKey {
    /// How long the old secret keeps working; 0 (the default) ends it now.
    #[serde(default, deserialize_with = "whole_number")]
    grace_seconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListKeys {
    team: Option<String>,
}

/// A key as listings show it: never the secret or its hash.
#[derive(Debug, Serialize)]
pub(crate) struct KeyView {
    id: String,
    prefix: String,
    team: String,
    name: Option<String>,
    /// `active`, `revoked`, `expired` or `suspended`.
    status: &'static str,
    models: Option<Vec<String>>,
    policies: Vec<String>,
    budget_usd: Option<f64>,
    period: Option<Period>,
    requests_per_minute: Option<u64>,
    tokens_per_minute: Option<u64>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    suspended_at: Option<DateTime<Utc>>,
    /// Until when the secret replaced by the last rotation still works.
    previous_key_expires_at: Option<DateTime<Utc>>,
    metadata: serde_json::Value,
    created_at: DateTime<Utc>,
}

/// The create and rotate responses: the view plus the full key, once.
#[derive(Debug, Serialize)]
pub(crate) struct NewKeyView {
    key: String,
    #[serde(flatten)]
    view: KeyView,
}

pub(crate) fn status(k: &KeyRecord, now: DateTime<Utc>) -> &'static str {
    if k.revoked_at.is_some() {
        "revoked"
    } else if k.suspended_at.is_some() {
        "suspended"
    } else if k.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    }
}

impl KeyView {
    fn new(k: KeyRecord, now: DateTime<Utc>) -> Self {
        KeyView {
            status: status(&k, now),
            id: k.id.0,
            prefix: k.prefix,
            team: k.team.0,
            name: k.name,
            models: k.models,
            policies: k.policies,
            budget_usd: k.budget.map(|b| b.as_usd()),
            period: k.period,
            requests_per_minute: k.requests_per_minute,
            tokens_per_minute: k.tokens_per_minute,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            suspended_at: k.suspended_at,
            previous_key_expires_at: k.previous_expires_at.filter(|at| *at > now),
            metadata: k.metadata,
            created_at: k.created_at,
        }
    }
}

fn key_not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        code: "key_not_found",
        message: format!("no key with id `{id}` (see `GET /admin/keys`)"),
    }
}

/// Accepts the id or the prefix (`sk-tg-<id>`) that listings show.
pub(crate) fn key_id(raw: &str) -> KeyId {
    KeyId(raw.strip_prefix(key::KEY_PREFIX).unwrap_or(raw).to_owned())
}

async fn load(state: &AppState, raw: &str) -> Result<KeyRecord, ApiError> {
    state
        .store
        .get_key(&key_id(raw))
        .await
        .map_err(store_error)?
        .ok_or_else(|| key_not_found(raw))
}

async fn save(state: &AppState, rec: &KeyRecord) -> Result<(), ApiError> {
    let found = state.store.update_key(rec).await.map_err(store_error)?;
    state.keys.invalidate(&rec.id);
    if found {
        Ok(())
    } else {
        Err(key_not_found(rec.id.as_str()))
    }
}

/// The store keeps limits in signed 64-bit columns.
const MAX_LIMIT: u64 = i64::MAX as u64;

fn positive(field: &str, v: Option<u64>) -> Result<Option<u64>, ApiError> {
    match v {
        Some(0) => Err(ApiError::invalid_param(
            field,
            format!("`{field}` must be at least 1 (leave it out for no limit)"),
        )),
        Some(n) if n > MAX_LIMIT => Err(ApiError::invalid_param(
            field,
            format!("`{field}` is at most {MAX_LIMIT}, not {n}"),
        )),
        v => Ok(v),
    }
}

pub(crate) async fn create(
    Admin(state): Admin,
    AdminJson(body): AdminJson<CreateKey>,
) -> Result<Response, ApiError> {
    let config = state.runtime.load().config.clone();
    let now = now(&state);
    if find_team(&state, &config, &body.team).await?.is_none() {
        return Err(team_not_found(&body.team));
    }
    check_policies(&config, &body.policies)?;
    check_models(body.models.as_deref())?;
    let (budget, period) = budget(body.budget_usd, body.period)?;
    let requests_per_minute = positive("requests_per_minute", body.requests_per_minute)?;
    let tokens_per_minute = positive("tokens_per_minute", body.tokens_per_minute)?;
    let expires_at = match body.expires_at.as_deref() {
        None => None,
        Some(raw) => {
            let at = DateTime::parse_from_rfc3339(raw).map_err(|e| {
                ApiError::invalid_param(
                    "expires_at",
                    format!("`expires_at` must be an RFC 3339 time such as `2026-12-31T23:59:59Z`, not `{raw}` ({e})"),
                )
            })?;
            // A time already past is taken as it is: the key is created
            // `expired` (the response says so) and refused on first use,
            // naming when it expired. Refusing it here could not be
            // declared in the OpenAPI document, which client generators
            // and fuzzers take as the contract.
            Some(at.with_timezone(&Utc))
        }
    };
    let metadata = match body.metadata {
        None | Some(serde_json::Value::Null) => serde_json::json!({}),
        Some(m @ serde_json::Value::Object(_)) => m,
        Some(_) => {
            return Err(ApiError::invalid_param(
                "metadata",
                "`metadata` must be a JSON object",
            ));
        }
    };
    let new = key::generate();
    let rec = KeyRecord {
        id: new.id,
        team: TeamId(body.team),
        name: body.name,
        secret_hash: new.secret_hash,
        prefix: new.prefix,
        previous_secret_hash: None,
        previous_expires_at: None,
        models: body.models,
        policies: body.policies,
        budget,
        period,
        requests_per_minute,
        tokens_per_minute,
        expires_at,
        revoked_at: None,
        suspended_at: None,
        metadata,
        created_at: now,
    };
    state.store.create_key(&rec).await.map_err(store_error)?;
    let body = NewKeyView {
        key: new.full.expose().clone(),
        view: KeyView::new(rec, now),
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(crate) async fn list(
    Admin(state): Admin,
    AdminQuery(q): AdminQuery<ListKeys>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let team = q.team.filter(|t| !t.is_empty()).map(TeamId);
    let keys = state
        .store
        .list_keys(team.as_ref())
        .await
        .map_err(store_error)?;
    // An unknown team is answered 404 rather than an empty list, so a typo
    // is not mistaken for a team without keys.
    if let Some(team) = &team
        && keys.is_empty()
    {
        let config = state.runtime.load().config.clone();
        if find_team(&state, &config, team.as_str()).await?.is_none() {
            return Err(team_not_found(team.as_str()));
        }
    }
    let now = now(&state);
    let data: Vec<KeyView> = keys.into_iter().map(|k| KeyView::new(k, now)).collect();
    Ok(Json(serde_json::json!({ "data": data })))
}

pub(crate) async fn get(
    Admin(state): Admin,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let rec = load(&state, &id).await?;
    Ok(Json(KeyView::new(rec, now(&state))))
}

pub(crate) async fn revoke(
    Admin(state): Admin,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let mut rec = load(&state, &id).await?;
    let now = now(&state);
    // Revoking twice keeps the first time: it is when access ended.
    if rec.revoked_at.is_none() {
        rec.revoked_at = Some(now);
        save(&state, &rec).await?;
    } else {
        state.keys.invalidate(&rec.id);
    }
    Ok(Json(KeyView::new(rec, now)))
}

pub(crate) async fn rotate(
    Admin(state): Admin,
    Path(id): Path<String>,
    AdminJson(body): AdminJson<RotateKey>,
) -> Result<Json<NewKeyView>, ApiError> {
    if body.grace_seconds > MAX_GRACE_SECONDS {
        return Err(ApiError::invalid_param(
            "grace_seconds",
            format!(
                "`grace_seconds` is at most {MAX_GRACE_SECONDS} (30 days), not {}",
                body.grace_seconds
            ),
        ));
    }
    let mut rec = load(&state, &id).await?;
    if let Some(at) = rec.revoked_at {
        return Err(ApiError::Conflict(format!(
            "key `{}` was revoked at {at}; a revoked key cannot be rotated: create a new one",
            rec.prefix
        )));
    }
    let now = now(&state);
    let new = key::generate_for(rec.id.clone());
    // Only the secret being replaced gets the grace period: a key rotated
    // twice quickly loses the oldest secret at once.
    let grace = i64::try_from(body.grace_seconds)
        .ok()
        .and_then(TimeDelta::try_seconds);
    match grace
        .filter(|g| !g.is_zero())
        .and_then(|g| now.checked_add_signed(g))
    {
        Some(until) => {
            rec.previous_secret_hash =
                Some(std::mem::replace(&mut rec.secret_hash, new.secret_hash));
            rec.previous_expires_at = Some(until);
        }
        None => {
            rec.secret_hash = new.secret_hash;
            rec.previous_secret_hash = None;
            rec.previous_expires_at = None;
        }
    }
    save(&state, &rec).await?;
    Ok(Json(NewKeyView {
        key: new.full.expose().clone(),
        view: KeyView::new(rec, now),
    }))
}

pub(crate) async fn restore(
    Admin(state): Admin,
    Path(id): Path<String>,
) -> Result<Json<KeyView>, ApiError> {
    let mut rec = load(&state, &id).await?;
    if rec.suspended_at.is_some() {
        rec.suspended_at = None;
        save(&state, &rec).await?;
    }
    Ok(Json(KeyView::new(rec, now(&state))))
}
