//! The console's read-only pages: overview, teams, keys, requests, audit.
//! Each reads through the admin API's handlers or the store queries they
//! use, and turns the answer into display strings for its template.

use std::collections::HashMap;

use askama::Template;
use axum::extract::Query;
use axum::response::Response;
use chrono::{DateTime, TimeDelta, Utc};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::chart::{Chart, spend_chart};
use super::format::{time, time_str, usd, usd_f64};
use super::session::UiUser;
use super::{Flash, json_of, render};
use crate::admin::common::now;
use crate::admin::extract::{Admin, AdminQuery};
use crate::admin::{keys, teams};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{
    AuditQuery, Bucket, GroupBy, LedgerRow, RequestLogQuery, SeriesQuery, SpendQuery, StatusFilter,
};
use crate::types::TeamId;

/// Rows per page of the request log.
const PAGE: u32 = 50;

fn s(v: &Value, f: &str) -> String {
    match v.get(f) {
        Some(Value::String(x)) => x.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

pub(crate) struct BudgetRow {
    policy: String,
    scope: &'static str,
    id: String,
    period: &'static str,
    shadow: bool,
    alert_only: bool,
    spent: String,
    reserved: String,
    limit: String,
    spent_pct: String,
    reserved_pct: String,
    used_label: String,
    heat: &'static str,
    resets: String,
}

pub(crate) struct TopRow {
    name: String,
    requests: u64,
    cost: String,
}

pub(crate) struct RequestRow {
    time: String,
    team: String,
    key: String,
    model: String,
    provider: String,
    status: u16,
    status_class: &'static str,
    tokens: String,
    cost: String,
    latency: String,
    code: String,
    policy: String,
}

impl RequestRow {
    fn new(r: LedgerRow) -> Self {
        RequestRow {
            time: time(r.ts),
            team: r.team.0,
            key: r.key_id.0,
            model: r.model,
            provider: if r.provider.is_empty() {
                "—".into()
            } else {
                r.provider
            },
            status: r.status,
            status_class: match r.status {
                0..400 => "ok",
                400..500 => "warn",
                _ => "bad",
            },
            tokens: format!("{} / {}", r.prompt_tokens, r.completion_tokens),
            cost: usd(r.cost.0),
            latency: format!("{} ms", r.latency_ms),
            code: r.error_code.unwrap_or_default(),
            // The enforcing policy that refused it, else the shadow ones
            // that would have.
            policy: match (r.policy, r.would_reject.is_empty()) {
                (Some(p), _) => p,
                (None, true) => "—".into(),
                (None, false) => format!("shadow: {}", r.would_reject.join(", ")),
            },
        }
    }
}

#[derive(Template)]
#[template(path = "ui/overview.html")]
struct OverviewPage {
    nav: &'static str,
    csrf: String,
    actor: String,
    flash: Option<Flash>,
    hourly: Chart,
    daily: Chart,
    budgets: Vec<BudgetRow>,
    top_keys: Vec<TopRow>,
    top_models: Vec<TopRow>,
    rejections: Vec<RequestRow>,
}

fn internal(e: crate::store::StoreError) -> ApiError {
    crate::admin::common::store_error(e)
}

/// An error page inside the console's frame.
pub(crate) fn error_page(user: &UiUser, e: &ApiError, back: &str) -> Response {
    render(
        e.status(),
        &ErrorPage {
            nav: "",
            csrf: user.session.csrf.clone(),
            actor: user.session.actor(),
            flash: Flash::error(e.to_string()),
            heading: "Something went wrong".into(),
            back: back.to_owned(),
        },
    )
}

#[derive(Template)]
#[template(path = "ui/error.html")]
struct ErrorPage {
    nav: &'static str,
    csrf: String,
    actor: String,
    flash: Option<Flash>,
    heading: String,
    back: String,
}

fn budget_row(b: crate::policy::BudgetReport) -> BudgetRow {
    let pct = |v: f64| {
        if b.limit_usd > 0.0 {
            (v / b.limit_usd * 100.0).clamp(0.0, 100.0)
        } else if v > 0.0 {
            100.0
        } else {
            0.0
        }
    };
    let spent_pct = pct(b.spent_usd);
    let reserved_pct = pct(b.reserved_usd).min(100.0 - spent_pct);
    let used = spent_pct + reserved_pct;
    BudgetRow {
        heat: if used >= 100.0 {
            "full"
        } else if used >= 80.0 {
            "hot"
        } else {
            ""
        },
        used_label: if used > 0.0 && used < 1.0 {
            "<1% used".into()
        } else {
            format!("{used:.0}% used")
        },
        spent_pct: format!("{spent_pct:.1}"),
        reserved_pct: format!("{reserved_pct:.1}"),
        spent: usd_f64(b.spent_usd),
        reserved: usd_f64(b.reserved_usd),
        limit: usd_f64(b.limit_usd),
        resets: b.resets_at.as_deref().map_or("never".into(), time_str),
        shadow: b.mode == "shadow",
        alert_only: b.action == "alert",
        period: b.period,
        scope: b.scope,
        id: b.id,
        policy: b.policy,
    }
}

/// `key id -> "name (prefix)"` for the tables that show keys by spend.
async fn key_names(state: &AppState) -> HashMap<String, String> {
    state
        .store
        .list_keys(None)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|k| {
            let shown = match &k.name {
                Some(n) if !n.is_empty() => format!("{n} ({})", k.prefix),
                _ => k.prefix.clone(),
            };
            (k.id.0, shown)
        })
        .collect()
}

async fn overview_data(user: &UiUser) -> Result<OverviewPage, ApiError> {
    let state = &user.state;
    let now = now(state);
    let config = state.runtime.load().config.clone();
    let series = |bucket: Bucket, from: DateTime<Utc>| SeriesQuery {
        bucket,
        from,
        to: now + TimeDelta::seconds(1),
    };
    let hour_start = now - TimeDelta::hours(23);
    let hour_start =
        DateTime::from_timestamp(hour_start.timestamp() / 3600 * 3600, 0).unwrap_or(hour_start);
    let day_start = now - TimeDelta::days(29);
    let day_start =
        DateTime::from_timestamp(day_start.timestamp() / 86_400 * 86_400, 0).unwrap_or(day_start);
    let hourly = state
        .store
        .spend_series(&series(Bucket::Hour, hour_start))
        .await
        .map_err(internal)?;
    let daily = state
        .store
        .spend_series(&series(Bucket::Day, day_start))
        .await
        .map_err(internal)?;
    let budgets = state.policy.budgets(&config, None).await?;
    let month = SpendQuery {
        from: Some(day_start),
        ..SpendQuery::default()
    };
    let top = |group_by| SpendQuery {
        group_by: Some(group_by),
        ..month.clone()
    };
    let mut by_key = state
        .store
        .spend(&top(GroupBy::Key))
        .await
        .map_err(internal)?;
    let mut by_model = state
        .store
        .spend(&top(GroupBy::Model))
        .await
        .map_err(internal)?;
    by_key.sort_by(|a, b| b.cost.cmp(&a.cost).then(b.requests.cmp(&a.requests)));
    by_model.sort_by(|a, b| b.cost.cmp(&a.cost).then(b.requests.cmp(&a.requests)));
    let names = key_names(state).await;
    let top_row = |r: crate::store::SpendRow, names: &HashMap<String, String>| TopRow {
        name: names.get(&r.group).cloned().unwrap_or(r.group),
        requests: r.requests,
        cost: usd(r.cost.0),
    };
    // Rejections are the gateway's own refusals (4xx; provider failures
    // are on the requests page) and what shadow policies would have
    // refused, newest first.
    let log = |status, limit| RequestLogQuery {
        status,
        limit,
        ..RequestLogQuery::default()
    };
    let mut rejected: Vec<LedgerRow> = state
        .store
        .request_log(&log(Some(StatusFilter::Error), 100))
        .await
        .map_err(internal)?
        .into_iter()
        .filter(|r| r.status < 500)
        .collect();
    rejected.extend(
        state
            .store
            .request_log(&log(Some(StatusFilter::Ok), 500))
            .await
            .map_err(internal)?
            .into_iter()
            .filter(|r| !r.would_reject.is_empty()),
    );
    rejected.sort_by_key(|r| std::cmp::Reverse(r.ts));
    let rejections = rejected.into_iter().take(10).map(RequestRow::new).collect();
    Ok(OverviewPage {
        nav: "overview",
        csrf: user.session.csrf.clone(),
        actor: user.session.actor(),
        flash: None,
        hourly: spend_chart(&hourly, Bucket::Hour, 24, now),
        daily: spend_chart(&daily, Bucket::Day, 30, now),
        budgets: budgets.into_iter().map(budget_row).collect(),
        top_keys: by_key
            .into_iter()
            .take(10)
            .map(|r| top_row(r, &names))
            .collect(),
        top_models: by_model
            .into_iter()
            .take(10)
            .map(|r| top_row(r, &names))
            .collect(),
        rejections,
    })
}

pub(crate) async fn overview(user: UiUser) -> Response {
    match overview_data(&user).await {
        Ok(page) => render(StatusCode::OK, &page),
        Err(e) => error_page(&user, &e, "/ui"),
    }
}

pub(crate) struct TeamRow {
    id: String,
    source: String,
    read_only: bool,
    policies: String,
    budget: String,
    models: String,
    /// `on`, or `off` for a team whose requests skip the response cache.
    cache: &'static str,
    keys: usize,
    spend: String,
}

#[derive(Template)]
#[template(path = "ui/teams.html")]
pub(crate) struct TeamsPage {
    nav: &'static str,
    csrf: String,
    actor: String,
    flash: Option<Flash>,
    teams: Vec<TeamRow>,
}

fn list_text(v: &Value, f: &str, none: &str) -> String {
    match v.get(f).and_then(Value::as_array) {
        Some(items) if !items.is_empty() => items
            .iter()
            .map(|i| i.as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(", "),
        _ => none.to_owned(),
    }
}

/// The team ids the API lists, config teams first.
pub(crate) async fn team_ids(state: &crate::state::SharedState) -> Result<Vec<String>, ApiError> {
    let listed = json_of(teams::list(Admin(state.clone())).await).await?;
    Ok(listed["data"]
        .as_array()
        .map(|d| d.iter().map(|t| s(t, "id")).collect())
        .unwrap_or_default())
}

pub(crate) async fn teams_page(user: &UiUser, flash: Option<Flash>) -> Response {
    let state = &user.state;
    let result: Result<TeamsPage, ApiError> = async {
        let listed = json_of(teams::list(Admin(state.clone())).await).await?;
        let keys = state.store.list_keys(None).await.map_err(internal)?;
        let day_start = now(state) - TimeDelta::days(29);
        let spend = state
            .store
            .spend(&SpendQuery {
                group_by: Some(GroupBy::Team),
                from: Some(day_start),
                ..SpendQuery::default()
            })
            .await
            .map_err(internal)?;
        let spend: HashMap<String, u64> = spend.into_iter().map(|r| (r.group, r.cost.0)).collect();
        let rows = listed["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                let id = s(&t, "id");
                let budget = match t.get("budget_usd").and_then(Value::as_f64) {
                    Some(b) => format!("{} {}", usd_f64(b), s(&t, "period")),
                    None => "—".into(),
                };
                TeamRow {
                    keys: keys
                        .iter()
                        .filter(|k| k.team.as_str() == id && k.revoked_at.is_none())
                        .count(),
                    spend: usd(spend.get(&id).copied().unwrap_or(0)),
                    source: s(&t, "source"),
                    read_only: t["read_only"].as_bool().unwrap_or(true),
                    policies: list_text(&t, "policies", "—"),
                    models: list_text(&t, "models", "all"),
                    cache: if t["cache"].as_bool().unwrap_or(true) {
                        "on"
                    } else {
                        "off"
                    },
                    budget,
                    id,
                }
            })
            .collect();
        Ok(TeamsPage {
            nav: "teams",
            csrf: user.session.csrf.clone(),
            actor: user.session.actor(),
            flash,
            teams: rows,
        })
    }
    .await;
    match result {
        Ok(page) => render(StatusCode::OK, &page),
        Err(e) => error_page(user, &e, "/ui/teams"),
    }
}

pub(crate) async fn teams(user: UiUser) -> Response {
    teams_page(&user, None).await
}

pub(crate) struct KeyRow {
    id: String,
    prefix: String,
    name: String,
    team: String,
    status: String,
    status_class: &'static str,
    live: bool,
    budget: String,
    expires: String,
    created: String,
    grace: Option<String>,
}

/// A key shown once, after it was created or rotated.
pub(crate) struct Reveal {
    pub(crate) title: &'static str,
    pub(crate) key: String,
    pub(crate) id: String,
    pub(crate) team: String,
    pub(crate) grace: Option<String>,
}

#[derive(Template)]
#[template(path = "ui/keys.html")]
struct KeysPage {
    nav: &'static str,
    csrf: String,
    actor: String,
    flash: Option<Flash>,
    reveal: Option<Reveal>,
    teams: Vec<String>,
    filter_team: String,
    keys: Vec<KeyRow>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct KeysParams {
    #[serde(default)]
    team: String,
}

pub(crate) async fn keys_page(
    user: &UiUser,
    team: &str,
    flash: Option<Flash>,
    reveal: Option<Reveal>,
) -> Response {
    let state = &user.state;
    let result: Result<KeysPage, ApiError> = async {
        let team_ids = team_ids(state).await?;
        let params = serde_json::from_value(json!({ "team": team }))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let listed = json_of(keys::list(Admin(state.clone()), AdminQuery(params)).await).await?;
        let rows = listed["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|k| {
                let status = s(&k, "status");
                let budget = match k.get("budget_usd").and_then(Value::as_f64) {
                    Some(b) => format!("{} {}", usd_f64(b), s(&k, "period")),
                    None => "—".into(),
                };
                let name = s(&k, "name");
                KeyRow {
                    id: s(&k, "id"),
                    prefix: s(&k, "prefix"),
                    name: if name.is_empty() { "—".into() } else { name },
                    team: s(&k, "team"),
                    status_class: match status.as_str() {
                        "active" => "ok",
                        "revoked" => "bad",
                        _ => "warn",
                    },
                    live: status != "revoked",
                    status,
                    budget,
                    expires: k
                        .get("expires_at")
                        .and_then(Value::as_str)
                        .map_or("never".into(), time_str),
                    created: time_str(&s(&k, "created_at")),
                    grace: k
                        .get("previous_key_expires_at")
                        .and_then(Value::as_str)
                        .map(time_str),
                }
            })
            .collect();
        Ok(KeysPage {
            nav: "keys",
            csrf: user.session.csrf.clone(),
            actor: user.session.actor(),
            flash,
            reveal,
            teams: team_ids,
            filter_team: team.to_owned(),
            keys: rows,
        })
    }
    .await;
    match result {
        Ok(page) => render(StatusCode::OK, &page),
        Err(e) => error_page(user, &e, "/ui/keys"),
    }
}

pub(crate) async fn keys(user: UiUser, Query(p): Query<KeysParams>) -> Response {
    keys_page(&user, &p.team, None, None).await
}

#[derive(Template)]
#[template(path = "ui/requests.html")]
struct RequestsPage {
    nav: &'static str,
    csrf: String,
    actor: String,
    flash: Option<Flash>,
    f_team: String,
    f_key: String,
    f_model: String,
    f_status: String,
    rows: Vec<RequestRow>,
    page: u32,
    prev: Option<String>,
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RequestsParams {
    #[serde(default)]
    team: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    page: String,
}

fn parse_status(raw: &str) -> Result<Option<StatusFilter>, String> {
    match raw.trim() {
        "" => Ok(None),
        "ok" => Ok(Some(StatusFilter::Ok)),
        "error" => Ok(Some(StatusFilter::Error)),
        n => match n.parse::<u16>() {
            Ok(code) if (100..600).contains(&code) => Ok(Some(StatusFilter::Exact(code))),
            _ => Err(format!(
                "Status `{n}` is not `ok`, `error` or an HTTP status such as 402: showing every status."
            )),
        },
    }
}

pub(crate) async fn requests(user: UiUser, Query(p): Query<RequestsParams>) -> Response {
    let state = &user.state;
    let (status, flash) = match parse_status(&p.status) {
        Ok(s) => (s, None),
        Err(m) => (None, Flash::error(m)),
    };
    let page = p
        .page
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .unwrap_or(1)
        .min(10_000);
    let non_empty = |v: &str| Some(v.trim().to_owned()).filter(|v| !v.is_empty());
    let query = RequestLogQuery {
        team: non_empty(&p.team).map(TeamId),
        key: non_empty(&p.key).map(|k| keys::key_id(&k)),
        model: non_empty(&p.model),
        status,
        offset: (page - 1) * PAGE,
        limit: PAGE + 1,
    };
    let rows = match state.store.request_log(&query).await {
        Ok(rows) => rows,
        Err(e) => return error_page(&user, &internal(e), "/ui/requests"),
    };
    let more = rows.len() > PAGE as usize;
    let link = |n: u32| {
        let q = serde_urlencoded::to_string([
            ("team", p.team.as_str()),
            ("key", p.key.as_str()),
            ("model", p.model.as_str()),
            ("status", p.status.as_str()),
            ("page", n.to_string().as_str()),
        ])
        .unwrap_or_default();
        format!("/ui/requests?{q}")
    };
    render(
        StatusCode::OK,
        &RequestsPage {
            nav: "requests",
            csrf: user.session.csrf.clone(),
            actor: user.session.actor(),
            flash,
            rows: rows
                .into_iter()
                .take(PAGE as usize)
                .map(RequestRow::new)
                .collect(),
            prev: (page > 1).then(|| link(page - 1)),
            next: more.then(|| link(page + 1)),
            page,
            f_team: p.team.clone(),
            f_key: p.key.clone(),
            f_model: p.model.clone(),
            f_status: p.status.clone(),
        },
    )
}

pub(crate) struct AuditLine {
    time: String,
    actor: String,
    action: String,
    target: String,
    source: String,
    status: u16,
    status_class: &'static str,
    change: String,
}

#[derive(Template)]
#[template(path = "ui/audit.html")]
struct AuditPage {
    nav: &'static str,
    csrf: String,
    actor: String,
    flash: Option<Flash>,
    rows: Vec<AuditLine>,
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditParams {
    #[serde(default)]
    cursor: String,
}

pub(crate) async fn audit(user: UiUser, Query(p): Query<AuditParams>) -> Response {
    const LIMIT: u32 = 100;
    let query = AuditQuery {
        before: p.cursor.parse().ok(),
        limit: LIMIT,
        ..AuditQuery::default()
    };
    let rows = match user.state.store.audit(&query).await {
        Ok(rows) => rows,
        Err(e) => return error_page(&user, &internal(e), "/ui"),
    };
    let next = (rows.len() == LIMIT as usize)
        .then(|| rows.last().map(|r| format!("/ui/audit?cursor={}", r.id)))
        .flatten();
    let rows = rows
        .into_iter()
        .map(|r| AuditLine {
            time: time(r.entry.ts),
            actor: r.entry.actor,
            action: r.entry.action,
            target: r.entry.target,
            source: r.entry.source,
            status: r.entry.status,
            status_class: if r.entry.status < 400 { "ok" } else { "bad" },
            change: r.entry.change.to_string(),
        })
        .collect();
    render(
        StatusCode::OK,
        &AuditPage {
            nav: "audit",
            csrf: user.session.csrf.clone(),
            actor: user.session.actor(),
            flash: None,
            rows,
            next,
        },
    )
}
