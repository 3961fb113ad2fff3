//! The audit log (SPEC §10): every admin mutation — over the API (and so
//! the CLI), from the console and by reload — is appended to the store's
//! `audit_log` with its time, actor, action, target, source address, the
//! status it was answered with and the request's fields. `GET /admin/audit`
//! reads it; nothing edits or deletes it (the tables refuse to, see
//! migration 0007).
//!
//! Reliability: the row is written synchronously, after the mutation and
//! before its answer leaves. If it cannot be written the caller gets a 500
//! saying so (and the record goes to the error log), so a change is never
//! reported as done without its record. A write-ahead row would have to be
//! edited afterwards (the outcome, a new key's id); and the store that keeps
//! the log keeps the teams and keys too, so an outage that loses the row
//! has almost always failed the mutation first.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use http::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::common::{now, store_error};
use super::extract::{Admin, AdminQuery, MAX_ADMIN_BODY_BYTES};
use super::reports::parse_time;
use crate::error::ApiError;
use crate::state::{AppState, SharedState};
use crate::store::{AuditEntry, AuditQuery, AuditRow};

/// The actor of a mutation made with the admin key over the API.
pub(crate) const ADMIN_KEY_ACTOR: &str = "admin-key";

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = crate::store::console::MAX_PAGE;

/// Request fields never recorded: no admin request has them today, but a
/// future one with a credential must not leak it into the log.
const SECRET_FIELDS: &[&str] = &["key", "api_key", "admin_key", "secret", "password", "token"];

/// Writes one audit row; a failure is answered as an error that says the
/// change itself was made.
pub(crate) async fn write(state: &AppState, entry: AuditEntry) -> Result<(), ApiError> {
    match state.store.insert_audit(&entry).await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::error!(actor = %entry.actor, action = %entry.action, target = %entry.target,
                source = %entry.source, status = entry.status, change = %entry.change, error = %e,
                "audit record could not be written");
            Err(ApiError::Internal(format!(
                "the change was made (HTTP {}) but its audit record could not be written ({e}); \
                 the record is in the gateway's error log",
                entry.status
            )))
        }
    }
}

/// An audit entry stamped now.
pub(crate) fn entry(
    state: &AppState,
    actor: &str,
    action: &str,
    target: String,
    source: String,
    status: u16,
    change: Value,
) -> AuditEntry {
    AuditEntry {
        ts: now(state),
        actor: actor.to_owned(),
        action: action.to_owned(),
        target,
        source,
        status,
        change: redact(change),
    }
}

/// Drops every field named like a credential and every string that looks
/// like a virtual key.
pub(crate) fn redact(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    if SECRET_FIELDS.contains(&k.to_ascii_lowercase().as_str()) {
                        (k, Value::String("[redacted]".into()))
                    } else {
                        (k, redact(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact).collect()),
        Value::String(s) if s.starts_with("sk-") => Value::String("[redacted]".into()),
        other => other,
    }
}

/// The peer address of a request, when the server recorded it.
pub(crate) fn source(req_extensions: &http::Extensions) -> String {
    req_extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.to_string())
}

/// What an admin API call changes: (action, target). `None` for reads.
fn classify(method: &Method, path: &str, body: &Value) -> Option<(String, String)> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let field = |f: &str| body.get(f).and_then(Value::as_str).unwrap_or("").to_owned();
    let key = |id: &str| format!("key:{}", super::keys::key_id(id).0);
    Some(match (method, parts.as_slice()) {
        (&Method::POST, ["admin", "teams"]) => {
            ("team.create".into(), format!("team:{}", field("id")))
        }
        (&Method::PATCH, ["admin", "teams", id]) => ("team.update".into(), format!("team:{id}")),
        (&Method::DELETE, ["admin", "teams", id]) => ("team.delete".into(), format!("team:{id}")),
        // The new key's id is only known from the answer.
        (&Method::POST, ["admin", "keys"]) => {
            ("key.create".into(), format!("team:{}", field("team")))
        }
        (
            &Method::POST,
            [
                "admin",
                "keys",
                id,
                verb @ ("revoke" | "rotate" | "restore"),
            ],
        ) => (format!("key.{verb}"), key(id)),
        (&Method::POST, ["admin", "reload"]) => ("config.reload".into(), "config".into()),
        // No such mutation: the router answers 404/405 and nothing changes.
        // A test holds every mutating route of the table to a case above.
        _ => return None,
    })
}

/// Middleware on the admin API: records every authenticated mutation.
/// Calls without the admin key change nothing and are left to the
/// handler's 401.
pub(crate) async fn record(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || !req.uri().path().starts_with("/admin/")
        || state.admin_key.check(req.headers()).is_err()
    {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ADMIN_BODY_BYTES).await else {
        return ApiError::RequestTooLarge {
            limit: MAX_ADMIN_BODY_BYTES,
        }
        .into_response();
    };
    let change = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(serde_json::Map::new())
    } else {
        serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| serde_json::json!({ "unparsed_body_bytes": bytes.len() }))
    };
    let Some((action, mut target)) = classify(&parts.method, parts.uri.path(), &change) else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    let source = source(&parts.extensions);
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = resp.status();
    let resp = if action == "key.create" && status.is_success() {
        // The answer holds the new key: only its id is read, nothing kept.
        let (rparts, rbody) = resp.into_parts();
        let Ok(rbytes) = axum::body::to_bytes(rbody, MAX_ADMIN_BODY_BYTES).await else {
            return ApiError::Internal("the answer to a key creation was unreadable".into())
                .into_response();
        };
        if let Some(id) = serde_json::from_slice::<Value>(&rbytes)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned))
        {
            target = format!("key:{id}");
        }
        Response::from_parts(rparts, Body::from(rbytes))
    } else {
        resp
    };
    let e = entry(
        &state,
        ADMIN_KEY_ACTOR,
        &action,
        target,
        source,
        status.as_u16(),
        change,
    );
    match write(&state, e).await {
        Ok(()) => resp,
        Err(err) => err.into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AuditView {
    id: u64,
    time: DateTime<Utc>,
    actor: String,
    action: String,
    target: String,
    source: String,
    status: u16,
    change: Value,
}

impl From<AuditRow> for AuditView {
    fn from(r: AuditRow) -> Self {
        AuditView {
            id: r.id,
            time: r.entry.ts,
            actor: r.entry.actor,
            action: r.entry.action,
            target: r.entry.target,
            source: r.entry.source,
            status: r.entry.status,
            change: r.entry.change,
        }
    }
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// Row ids are SQL `BIGINT`s: a cursor is at most `i64::MAX`.
const MAX_CURSOR: u64 = i64::MAX as u64;

fn whole(param: &str, raw: &str, max: u64) -> Result<u64, ApiError> {
    match raw.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid_param(
            param,
            format!("`{param}` is a whole number from 1 to {max}, not `{raw}`"),
        )),
    }
}

/// `GET /admin/audit`: newest first; `next_cursor` pages on.
pub(crate) async fn list(
    Admin(state): Admin,
    AdminQuery(p): AdminQuery<AuditParams>,
) -> Result<Json<Value>, ApiError> {
    // Given empty, `limit`, `from`, `to` and `cursor` are refused like
    // any other value they cannot take (the document declares integers and
    // times); an empty `actor`, `action` or `target` is no filter.
    let limit = match p.limit {
        None => DEFAULT_LIMIT,
        Some(raw) => {
            u32::try_from(whole("limit", &raw, u64::from(MAX_LIMIT))?).unwrap_or(DEFAULT_LIMIT)
        }
    };
    let query = AuditQuery {
        actor: non_empty(p.actor),
        action: non_empty(p.action),
        target: non_empty(p.target),
        from: p.from.map(|f| parse_time("from", &f, false)).transpose()?,
        to: p.to.map(|t| parse_time("to", &t, true)).transpose()?,
        before: p
            .cursor
            .map(|c| whole("cursor", &c, MAX_CURSOR))
            .transpose()?,
        limit,
    };
    let rows = state.store.audit(&query).await.map_err(store_error)?;
    // A full page may have more behind it; a short one is the end.
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    let data: Vec<AuditView> = rows.into_iter().map(AuditView::from).collect();
    Ok(Json(
        serde_json::json!({ "data": data, "next_cursor": next_cursor }),
    ))
}

/// Records a reload by SIGHUP (there is no request to answer, so a failed
/// write is logged only).
pub(crate) async fn reloaded_by_signal(state: &AppState, ok: bool) {
    // The status `POST /admin/reload` answers for the same outcome.
    let status = if ok { 200 } else { 409 };
    let e = entry(
        state,
        "signal:SIGHUP",
        "config.reload",
        "config".into(),
        "signal".into(),
        status,
        Value::Object(serde_json::Map::new()),
    );
    let _ = write(state, e).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mutating_admin_route_has_an_action() {
        for route in super::super::routes() {
            if route.method == Method::GET {
                continue;
            }
            let path = route.path.replace("{id}", "x");
            assert!(
                classify(&route.method, &path, &Value::Null).is_some(),
                "{} {} would not be audited",
                route.method,
                route.path
            );
        }
        assert_eq!(classify(&Method::POST, "/admin/audit", &Value::Null), None);
        assert_eq!(classify(&Method::GET, "/admin/teams", &Value::Null), None);
    }

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let v = serde_json::json!({
            "name": "n", "API_KEY": "x", "tokens_per_minute": 5,
            "metadata": {"secret": {"deep": 1}, "list": ["sk-tg-abc-def", "plain"]},
        });
        assert_eq!(
            redact(v),
            serde_json::json!({
                "name": "n", "API_KEY": "[redacted]", "tokens_per_minute": 5,
                "metadata": {"secret": "[redacted]", "list": ["[redacted]", "plain"]},
            })
        );
    }
}
