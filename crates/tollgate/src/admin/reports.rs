//! Read-only reports over the ledger and the counters (`/admin/spend`,
//! `/admin/requests`, `/admin/budgets`) and `POST /admin/reload`.

use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use super::common::{find_team, store_error, team_not_found};
use super::extract::{Admin, AdminQuery};
use super::keys::key_id;
use crate::error::ApiError;
use crate::store::{GroupBy, LedgerRow, RequestsQuery, SpendQuery, SpendRow};
use crate::types::TeamId;

const DEFAULT_REQUESTS_LIMIT: u32 = 100;
const MAX_REQUESTS_LIMIT: u32 = 1000;

/// Every parameter is read as text and parsed here, so a bad value is
/// answered with the parameter's name and what it accepts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SpendParams {
    group_by: Option<String>,
    team: Option<String>,
    key: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestsParams {
    team: Option<String>,
    key: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BudgetsParams {
    team: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SpendView {
    group: String,
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
    /// Requests answered from the response cache, and what they would
    /// have cost without it.
    cache_hits: u64,
    saved_usd: f64,
}

impl From<SpendRow> for SpendView {
    fn from(r: SpendRow) -> Self {
        SpendView {
            group: r.group,
            requests: r.requests,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cost_usd: r.cost.as_usd(),
            cache_hits: r.cache_hits,
            saved_usd: r.cache_saved.as_usd(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct RequestView {
    time: DateTime<Utc>,
    request_id: String,
    key_id: String,
    team: String,
    model: String,
    provider: String,
    status: u16,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_usd: f64,
    latency_ms: u64,
    error_code: Option<String>,
    /// `policy:code` of each shadow policy that would have rejected it.
    would_reject: Vec<String>,
    /// Attempts at providers, retries and fallbacks included.
    attempts: u32,
    /// `hit`, `miss` or `skip` when the response cache applied.
    cache: Option<String>,
    /// The enforcing policy that refused it, if one did.
    policy: Option<String>,
}

impl From<LedgerRow> for RequestView {
    fn from(r: LedgerRow) -> Self {
        RequestView {
            time: r.ts,
            request_id: r.request_id,
            key_id: r.key_id.0,
            team: r.team.0,
            model: r.model,
            provider: r.provider,
            status: r.status,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cost_usd: r.cost.as_usd(),
            latency_ms: r.latency_ms,
            error_code: r.error_code,
            would_reject: r.would_reject,
            attempts: r.attempts,
            cache: r.cache,
            policy: r.policy,
        }
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

pub(crate) fn parse_group_by(raw: &str) -> Result<GroupBy, ApiError> {
    Ok(match raw {
        "team" => GroupBy::Team,
        "key" => GroupBy::Key,
        "model" => GroupBy::Model,
        "day" => GroupBy::Day,
        other => {
            return Err(ApiError::invalid_param(
                "group_by",
                format!("`group_by` is one of `team`, `key`, `model`, `day`, not `{other}`"),
            ));
        }
    })
}

/// An RFC 3339 time, or a `YYYY-MM-DD` day: the day's start for `from`,
/// the next day's start for `to`, so `to=2026-11-27` includes that day.
pub(crate) fn parse_time(
    param: &str,
    raw: &str,
    end_of_day: bool,
) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    let day = NaiveDate::parse_from_str(raw, "%Y-%m-%d").ok();
    let day = if end_of_day {
        day.and_then(|d| d.succ_opt())
    } else {
        day
    };
    day.map(|d| d.and_time(chrono::NaiveTime::MIN).and_utc()).ok_or_else(|| {
        ApiError::invalid_param(
            param,
            format!("`{param}` must be an RFC 3339 time (`2026-11-27T00:00:00Z`) or a day (`2026-11-27`), not `{raw}`"),
        )
    })
}

pub(crate) async fn spend(
    Admin(state): Admin,
    AdminQuery(p): AdminQuery<SpendParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    // `group_by`, `from` and `to` given empty are refused like any other
    // value they cannot take (the document declares an enum and times);
    // an empty `team` or `key` is no filter.
    let query = SpendQuery {
        group_by: p.group_by.as_deref().map(parse_group_by).transpose()?,
        team: non_empty(p.team).map(TeamId),
        key: non_empty(p.key).as_deref().map(key_id),
        from: p.from.map(|f| parse_time("from", &f, false)).transpose()?,
        to: p.to.map(|t| parse_time("to", &t, true)).transpose()?,
    };
    // A window that ends before it starts holds no spend: it is answered
    // as such (zero, or no groups), not refused.
    if let (Some(from), Some(to)) = (query.from, query.to)
        && from >= to
    {
        let data: Vec<SpendView> = match query.group_by {
            Some(_) => Vec::new(),
            None => vec![SpendView::from(SpendRow {
                group: "total".into(),
                ..SpendRow::default()
            })],
        };
        return Ok(Json(serde_json::json!({ "data": data })));
    }
    let rows = state.store.spend(&query).await.map_err(store_error)?;
    let data: Vec<SpendView> = rows.into_iter().map(SpendView::from).collect();
    Ok(Json(serde_json::json!({ "data": data })))
}

pub(crate) fn parse_limit(raw: Option<&str>) -> Result<u32, ApiError> {
    // `limit=` (empty) is not "no limit given": the document declares an
    // integer, so it is refused like any other non-number.
    let Some(raw) = raw else {
        return Ok(DEFAULT_REQUESTS_LIMIT);
    };
    match raw.parse::<u32>() {
        Ok(n) if (1..=MAX_REQUESTS_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid_param(
            "limit",
            format!("`limit` is a whole number from 1 to {MAX_REQUESTS_LIMIT}, not `{raw}`"),
        )),
    }
}

pub(crate) async fn requests(
    Admin(state): Admin,
    AdminQuery(p): AdminQuery<RequestsParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let query = RequestsQuery {
        team: non_empty(p.team).map(TeamId),
        key: non_empty(p.key).as_deref().map(key_id),
        limit: parse_limit(p.limit.as_deref())?,
    };
    let rows = state.store.requests(&query).await.map_err(store_error)?;
    let data: Vec<RequestView> = rows.into_iter().map(RequestView::from).collect();
    Ok(Json(serde_json::json!({ "data": data })))
}

pub(crate) async fn budgets(
    Admin(state): Admin,
    AdminQuery(p): AdminQuery<BudgetsParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let config = state.runtime.load().config.clone();
    let team = non_empty(p.team).map(TeamId);
    if let Some(team) = &team
        && find_team(&state, &config, team.as_str()).await?.is_none()
    {
        return Err(team_not_found(team.as_str()));
    }
    let reports = state.policy.budgets(&config, team.as_ref()).await?;
    Ok(Json(serde_json::json!({ "data": reports })))
}

pub(crate) async fn reload(Admin(state): Admin) -> Result<Json<serde_json::Value>, ApiError> {
    // 409, not 400: the request is well-formed; it is the file on disk
    // (or its absence) that conflicts with reloading.
    state.reload().map_err(|e| {
        ApiError::Conflict(format!(
            "the config was not reloaded; the running config stays in force:\n{}",
            e.problems()
        ))
    })?;
    Ok(Json(serde_json::json!({ "reloaded": true })))
}
