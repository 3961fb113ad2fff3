//! The console's mutations: create a team, create / revoke / rotate a key.
//! Each checks the session's CSRF token, calls the admin API's own handler
//! (so validation and effects are exactly the API's), writes the audit row
//! with the session as actor, and shows the result.

use axum::extract::Path;
use axum::response::Response;
use bytes::Bytes;
use chrono::TimeDelta;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::pages::{Reveal, error_page, keys_page, teams_page};
use super::session::UiUser;
use super::{Flash, Source, csrf_rejected, form, json_of};
use crate::admin::audit;
use crate::admin::common::now;
use crate::admin::extract::{Admin, AdminJson};
use crate::admin::{keys, teams};
use crate::error::ApiError;

/// The form's fields as a JSON body for the admin handler: blanks left
/// out, the CSRF token never included.
fn body_of(
    fields: &std::collections::HashMap<String, String>,
    names: &[&str],
) -> Map<String, Value> {
    names
        .iter()
        .filter_map(|n| {
            let v = fields.get(*n)?.trim();
            (!v.is_empty()).then(|| ((*n).to_owned(), Value::String(v.to_owned())))
        })
        .collect()
}

/// `budget_usd` typed as text in a form, as the API's number.
fn money_field(body: &mut Map<String, Value>) -> Result<(), ApiError> {
    if let Some(Value::String(raw)) = body.get("budget_usd").cloned() {
        // JSON has no NaN or infinity (serde_json would send `null`):
        // refuse them here, with the rest of what is not money.
        let usd = raw
            .trim_start_matches('$')
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| {
                ApiError::invalid_param(
                    "budget_usd",
                    format!("budget `{raw}` is not a USD amount of 0 or more, such as 25 or 0.50"),
                )
            })?;
        body.insert("budget_usd".into(), json!(usd));
    } else {
        // A period alone means nothing here: the select has a default.
        body.remove("period");
    }
    Ok(())
}

fn parse<T: serde::de::DeserializeOwned>(body: Map<String, Value>) -> Result<T, ApiError> {
    crate::admin::extract::parse_json(&serde_json::to_vec(&Value::Object(body)).unwrap_or_default())
}

/// Records a console change; `Err` when the record could not be written.
async fn record(
    user: &UiUser,
    source: Source,
    action: &str,
    target: String,
    status: u16,
    change: Map<String, Value>,
) -> Result<(), ApiError> {
    let e = audit::entry(
        &user.state,
        &user.session.actor(),
        action,
        target,
        source.0,
        status,
        Value::Object(change),
    );
    audit::write(&user.state, e).await
}

fn status_of(r: &Result<Value, ApiError>) -> u16 {
    match r {
        Ok(_) => 200,
        Err(e) => e.status().as_u16(),
    }
}

pub(crate) async fn create_team(user: UiUser, source: Source, body: Bytes) -> Response {
    let fields = form(&body);
    if !user.session.csrf_ok(fields.get("csrf").map(String::as_str)) {
        return csrf_rejected();
    }
    let mut change = body_of(&fields, &["id", "budget_usd", "period"]);
    // An unchecked box is absent from the form: only a checked one opts out.
    if fields.get("no_cache").is_some_and(|v| v == "on") {
        change.insert("cache".into(), json!(false));
    }
    let target = format!("team:{}", fields.get("id").map_or("", |s| s.trim()));
    let result = async {
        money_field(&mut change)?;
        let req = parse(change.clone())?;
        json_of(teams::create(Admin(user.state.clone()), AdminJson(req)).await).await
    }
    .await;
    let status = if result.is_ok() {
        201
    } else {
        status_of(&result)
    };
    if let Err(e) = record(&user, source, "team.create", target, status, change).await {
        return error_page(&user, &e, "/ui/teams");
    }
    match result {
        Ok(t) => {
            teams_page(
                &user,
                Flash::ok(format!(
                    "Team `{}` created.",
                    t["id"].as_str().unwrap_or("")
                )),
            )
            .await
        }
        Err(e) => teams_page(&user, Flash::error(e.to_string())).await,
    }
}

pub(crate) async fn create_key(user: UiUser, source: Source, body: Bytes) -> Response {
    let fields = form(&body);
    if !user.session.csrf_ok(fields.get("csrf").map(String::as_str)) {
        return csrf_rejected();
    }
    let mut change = body_of(&fields, &["team", "name", "budget_usd", "period"]);
    let team = fields.get("team").map_or("", |s| s.trim()).to_owned();
    let result = async {
        money_field(&mut change)?;
        let mut req = change.clone();
        if let Some(days) = fields.get("expires_days").filter(|d| !d.is_empty()) {
            let days: i64 = days
                .parse()
                .ok()
                .filter(|d| (1..=3650).contains(d))
                .ok_or_else(|| {
                    ApiError::invalid_param(
                        "expires_at",
                        format!("`{days}` is not a number of days"),
                    )
                })?;
            let at = now(&user.state) + TimeDelta::days(days);
            req.insert("expires_at".into(), json!(at.to_rfc3339()));
        }
        change = req.clone();
        json_of(keys::create(Admin(user.state.clone()), AdminJson(parse(req)?)).await).await
    }
    .await;
    let (status, target) = match &result {
        Ok(k) => (201, format!("key:{}", k["id"].as_str().unwrap_or(""))),
        Err(e) => (e.status().as_u16(), format!("team:{team}")),
    };
    if let Err(e) = record(&user, source, "key.create", target, status, change).await {
        return error_page(&user, &e, "/ui/keys");
    }
    match result {
        Ok(k) => {
            let reveal = Reveal {
                title: "New key created",
                key: k["key"].as_str().unwrap_or("").to_owned(),
                id: k["id"].as_str().unwrap_or("").to_owned(),
                team: k["team"].as_str().unwrap_or("").to_owned(),
                grace: None,
            };
            let mut resp = keys_page(&user, "", None, Some(reveal)).await;
            *resp.status_mut() = StatusCode::CREATED;
            resp
        }
        Err(e) => keys_page(&user, "", Flash::error(e.to_string()), None).await,
    }
}

pub(crate) async fn revoke_key(
    user: UiUser,
    source: Source,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    if !user.session.csrf_ok(fields.get("csrf").map(String::as_str)) {
        return csrf_rejected();
    }
    let result = json_of(keys::revoke(Admin(user.state.clone()), Path(id.clone())).await).await;
    let target = format!("key:{}", keys::key_id(&id).0);
    if let Err(e) = record(
        &user,
        source,
        "key.revoke",
        target,
        status_of(&result),
        Map::new(),
    )
    .await
    {
        return error_page(&user, &e, "/ui/keys");
    }
    match result {
        Ok(k) => {
            keys_page(
                &user,
                "",
                Flash::ok(format!(
                    "Key `{}` revoked: it is refused from now on.",
                    s(&k, "prefix")
                )),
                None,
            )
            .await
        }
        Err(e) => keys_page(&user, "", Flash::error(e.to_string()), None).await,
    }
}

fn s(v: &Value, f: &str) -> String {
    v.get(f).and_then(Value::as_str).unwrap_or("").to_owned()
}

pub(crate) async fn rotate_key(
    user: UiUser,
    source: Source,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    if !user.session.csrf_ok(fields.get("csrf").map(String::as_str)) {
        return csrf_rejected();
    }
    let mut change = Map::new();
    let result = async {
        let grace: u64 = match fields.get("grace_seconds").map(|g| g.trim()) {
            None | Some("") => 0,
            Some(raw) => raw.parse().map_err(|_| {
                ApiError::invalid_param(
                    "grace_seconds",
                    format!("grace `{raw}` is not a number of seconds"),
                )
            })?,
        };
        change.insert("grace_seconds".into(), json!(grace));
        let req = parse(change.clone())?;
        json_of(keys::rotate(Admin(user.state.clone()), Path(id.clone()), AdminJson(req)).await)
            .await
    }
    .await;
    let target = format!("key:{}", keys::key_id(&id).0);
    if let Err(e) = record(
        &user,
        source,
        "key.rotate",
        target,
        status_of(&result),
        change,
    )
    .await
    {
        return error_page(&user, &e, "/ui/keys");
    }
    match result {
        Ok(k) => {
            let reveal = Reveal {
                title: "Key rotated",
                key: s(&k, "key"),
                id: s(&k, "id"),
                team: s(&k, "team"),
                grace: k
                    .get("previous_key_expires_at")
                    .and_then(Value::as_str)
                    .map(super::format::time_str),
            };
            keys_page(&user, "", None, Some(reveal)).await
        }
        Err(e) => keys_page(&user, "", Flash::error(e.to_string()), None).await,
    }
}
