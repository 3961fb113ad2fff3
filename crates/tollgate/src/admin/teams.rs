//! `/admin/teams`: teams created over the API (kept in the store) and the
//! config file's teams, which are listed alongside but read-only.

use axum::Json;
use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::common::{
    TeamSource, budget, check_models, check_policies, find_team, now, nullable, store_error,
    team_not_found,
};
use super::extract::{Admin, AdminJson};
use crate::config::{Config, TeamConfig};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::TeamRecord;
use crate::types::{Period, TeamId};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTeam {
    id: String,
    #[serde(default)]
    policies: Vec<String>,
    budget_usd: Option<f64>,
    period: Option<Period>,
    models: Option<Vec<String>>,
    /// `false`: the team's requests skip the response cache (SPEC §9).
    #[serde(default = "yes")]
    cache: bool,
}

fn yes() -> bool {
    true
}

/// Fields left out stay as they are; `null` clears `budget_usd` (and with
/// it the period) or `models` (every model allowed again).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchTeam {
    policies: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    budget_usd: Option<Option<f64>>,
    period: Option<Period>,
    #[serde(default, deserialize_with = "nullable")]
    models: Option<Option<Vec<String>>>,
    cache: Option<bool>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TeamView {
    id: String,
    /// `config` (read-only, from the config file) or `api`.
    source: &'static str,
    read_only: bool,
    policies: Vec<String>,
    budget_usd: Option<f64>,
    period: Option<Period>,
    models: Option<Vec<String>>,
    /// Whether the team's requests use the response cache.
    cache: bool,
    created_at: Option<DateTime<Utc>>,
}

impl TeamView {
    fn from_config(t: &TeamConfig) -> Self {
        TeamView {
            id: t.id.clone(),
            source: "config",
            read_only: true,
            policies: t.policies.clone(),
            budget_usd: None,
            period: None,
            models: t.models.clone(),
            cache: t.cache,
            created_at: None,
        }
    }

    fn from_record(t: TeamRecord) -> Self {
        TeamView {
            id: t.id.0,
            source: "api",
            read_only: false,
            policies: t.policies,
            budget_usd: t.budget.map(|b| b.as_usd()),
            period: t.period,
            models: t.models,
            cache: t.cache,
            created_at: Some(t.created_at),
        }
    }
}

fn check_team_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_param(
            "id",
            format!(
                "team id `{id}` must be 1 to 64 characters of letters, digits, `-`, `_` or `.`"
            ),
        ))
    }
}

fn read_only(id: &str) -> ApiError {
    ApiError::Conflict(format!(
        "team `{id}` is defined in the config file and is read-only here: change it in the file and reload"
    ))
}

pub(crate) async fn create(
    Admin(state): Admin,
    AdminJson(body): AdminJson<CreateTeam>,
) -> Result<Response, ApiError> {
    let config = state.runtime.load().config.clone();
    check_team_id(&body.id)?;
    check_policies(&config, &body.policies)?;
    check_models(body.models.as_deref())?;
    let (budget, period) = budget(body.budget_usd, body.period)?;
    if find_team(&state, &config, &body.id).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "team `{}` already exists",
            body.id
        )));
    }
    let rec = TeamRecord {
        id: TeamId(body.id),
        policies: body.policies,
        budget,
        period,
        models: body.models,
        created_at: now(&state),
        cache: body.cache,
    };
    state.store.create_team(&rec).await.map_err(store_error)?;
    // This node may hold the id as "no such API team" (a team deleted and
    // made again): requests must see the new one now, not when that expires.
    state.keys.invalidate_team(&rec.id);
    Ok((StatusCode::CREATED, Json(TeamView::from_record(rec))).into_response())
}

pub(crate) async fn list(Admin(state): Admin) -> Result<Json<serde_json::Value>, ApiError> {
    let config = state.runtime.load().config.clone();
    let mut stored = state.store.list_teams().await.map_err(store_error)?;
    stored.sort_by(|a, b| a.id.cmp(&b.id));
    let data: Vec<TeamView> = config
        .teams
        .iter()
        .map(TeamView::from_config)
        .chain(
            stored
                .into_iter()
                .filter(|t| config.team(t.id.as_str()).is_none())
                .map(TeamView::from_record),
        )
        .collect();
    Ok(Json(serde_json::json!({ "data": data })))
}

async fn load(state: &AppState, config: &Config, id: &str) -> Result<TeamView, ApiError> {
    match find_team(state, config, id).await? {
        Some(TeamSource::Api(rec)) => Ok(TeamView::from_record(rec)),
        Some(TeamSource::Config) => config
            .team(id)
            .map(TeamView::from_config)
            .ok_or_else(|| team_not_found(id)),
        None => Err(team_not_found(id)),
    }
}

pub(crate) async fn get(
    Admin(state): Admin,
    Path(id): Path<String>,
) -> Result<Json<TeamView>, ApiError> {
    let config = state.runtime.load().config.clone();
    load(&state, &config, &id).await.map(Json)
}

pub(crate) async fn patch(
    Admin(state): Admin,
    Path(id): Path<String>,
    AdminJson(body): AdminJson<PatchTeam>,
) -> Result<Json<TeamView>, ApiError> {
    let config = state.runtime.load().config.clone();
    let mut rec = match find_team(&state, &config, &id).await? {
        Some(TeamSource::Api(rec)) => rec,
        Some(TeamSource::Config) => return Err(read_only(&id)),
        None => return Err(team_not_found(&id)),
    };
    if let Some(policies) = body.policies {
        check_policies(&config, &policies)?;
        rec.policies = policies;
    }
    if let Some(models) = body.models {
        check_models(models.as_deref())?;
        rec.models = models;
    }
    // A new period alone re-schedules the existing budget; `budget_usd:
    // null` drops budget and period together.
    let (new_budget, new_period) = match (body.budget_usd, body.period) {
        (Some(None), _) => (None, None),
        (Some(Some(_)), None) if rec.period.is_none() => {
            return Err(ApiError::Conflict(format!(
                "team `{id}` has no budget period to keep, so `budget_usd` alone cannot apply: send `period` with it"
            )));
        }
        (Some(Some(usd)), period) => budget(Some(usd), period.or(rec.period))?,
        (None, None) => (rec.budget, rec.period),
        (None, Some(period)) if rec.budget.is_some() => (rec.budget, Some(period)),
        // Well-formed, but this team has no budget to re-schedule: a
        // conflict with the team as stored, not a bad request.
        (None, Some(_)) => {
            return Err(ApiError::Conflict(format!(
                "team `{id}` has no budget, so `period` alone has nothing to apply to: send `budget_usd` with it"
            )));
        }
    };
    rec.budget = new_budget;
    rec.period = new_period;
    if let Some(cache) = body.cache {
        rec.cache = cache;
    }
    let updated = state.store.update_team(&rec).await.map_err(store_error)?;
    // Other nodes re-read the team within `KeyCache::FRESHNESS`; this one
    // at once.
    state.keys.invalidate_team(&rec.id);
    if !updated {
        return Err(team_not_found(&id));
    }
    Ok(Json(TeamView::from_record(rec)))
}

pub(crate) async fn delete(
    Admin(state): Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let config = state.runtime.load().config.clone();
    match find_team(&state, &config, &id).await? {
        Some(TeamSource::Api(_)) => {}
        Some(TeamSource::Config) => return Err(read_only(&id)),
        None => return Err(team_not_found(&id)),
    }
    let team = TeamId(id.clone());
    let keys = state
        .store
        .list_keys(Some(&team))
        .await
        .map_err(store_error)?;
    let live: Vec<&str> = keys
        .iter()
        .filter(|k| k.revoked_at.is_none())
        .map(|k| k.id.as_str())
        .collect();
    if !live.is_empty() {
        let shown: Vec<String> = live.iter().take(5).map(|k| format!("`{k}`")).collect();
        return Err(ApiError::Conflict(format!(
            "team `{id}` still has {} unrevoked key(s) ({}{}): revoke them first with `POST /admin/keys/{{id}}/revoke`",
            live.len(),
            shown.join(", "),
            if live.len() > shown.len() {
                ", …"
            } else {
                ""
            },
        )));
    }
    let deleted = state.store.delete_team(&team).await.map_err(store_error)?;
    state.keys.invalidate_team(&team);
    if !deleted {
        return Err(team_not_found(&id));
    }
    Ok(Json(serde_json::json!({ "id": id, "deleted": true })))
}
