//! The operators' console at `/ui` (SPEC §10): a server-rendered web app
//! over the admin API's own handlers and store queries — overview (spend
//! charts, budgets, top keys and models, rejections), teams, keys (create
//! with a one-time reveal, revoke, rotate with grace), the request log and
//! the audit log. Works without JavaScript; templates (askama, checked at
//! compile time) and the stylesheet are compiled into the binary.
//!
//! Security: the admin key is typed into a form once; the browser then
//! holds only a session cookie (`session`). Every page needs a live
//! session (else a redirect to the login form); every mutation needs the
//! session's CSRF token in the form and is written to the audit log as
//! `ui:<session prefix>`.

mod actions;
mod chart;
mod format;
mod pages;
mod session;

use std::collections::HashMap;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use serde_json::Value;

use crate::auth::key;
use crate::error::ApiError;
use crate::state::SharedState;
use session::{Sessions, UiUser};

const STYLE_CSS: &str = include_str!("../../../assets/ui/style.css");

/// Pages allow only their own stylesheet (and inline `style` attributes for
/// bar widths); no scripts at all, no framing.
const CSP: &str = "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) fn router() -> Router<SharedState> {
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/style.css", get(style))
        .route("/ui/teams", get(pages::teams).post(actions::create_team))
        .route("/ui/keys", get(pages::keys).post(actions::create_key))
        .route("/ui/keys/{id}/revoke", post(actions::revoke_key))
        .route("/ui/keys/{id}/rotate", post(actions::rotate_key))
        .route("/ui/requests", get(pages::requests))
        .route("/ui/audit", get(pages::audit))
        // One session table per router, so per gateway.
        .layer(axum::Extension(Arc::new(Sessions::default())))
}

/// A message shown above a page's content.
pub(crate) struct Flash {
    pub(crate) kind: &'static str,
    pub(crate) text: String,
}

impl Flash {
    pub(crate) fn ok(text: impl Into<String>) -> Option<Flash> {
        Some(Flash {
            kind: "ok",
            text: text.into(),
        })
    }

    pub(crate) fn error(text: impl Into<String>) -> Option<Flash> {
        Some(Flash {
            kind: "error",
            text: text.into(),
        })
    }
}

/// An HTML answer with the console's headers: never cached (pages show
/// live data, and one shows a new key), never framed.
pub(crate) fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

pub(crate) fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "console page failed to render");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "<h1>The page could not be rendered</h1><p>See the gateway's log.</p>".into(),
            )
        }
    }
}

/// The peer address, for the audit log.
pub(crate) struct Source(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Source(super::audit::source(&parts.extensions)))
    }
}

/// Most a console form may send.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// A urlencoded form body as name -> value (the last of repeated names).
pub(crate) fn form(body: &Bytes) -> HashMap<String, String> {
    if body.len() > MAX_FORM_BYTES {
        return HashMap::new();
    }
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The answer to a form whose CSRF token is missing or wrong: nothing changed.
pub(crate) fn csrf_rejected() -> Response {
    html(
        StatusCode::FORBIDDEN,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Refused · tollgate</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/style.css\"></head><body><div class=\"login\">\
         <div class=\"brand\"><span class=\"logo\"></span>tollgate console</div><div class=\"card\">\
         <h2>Request refused</h2><div class=\"flash error\" id=\"flash\">This form did not come from \
         this console session (CSRF check failed), so nothing was changed.</div>\
         <p>Reload the page and try again.</p><a class=\"button\" href=\"/ui\">Back to the console</a>\
         </div></div></body></html>"
            .into(),
    )
}

/// An admin handler's answer as JSON, so the console shows exactly what
/// the API would.
pub(crate) async fn json_of<R: IntoResponse>(r: Result<R, ApiError>) -> Result<Value, ApiError> {
    let resp = r?.into_response();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 * 1024 * 1024)
        .await
        .map_err(|e| ApiError::Internal(format!("reading an admin answer: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::Internal(format!("an admin answer is not JSON: {e}")))
}

#[derive(Template)]
#[template(path = "ui/login.html")]
struct LoginPage {
    error: Option<String>,
}

async fn login_form(user: Result<UiUser, Response>) -> Response {
    if user.is_ok() {
        return Redirect::to("/ui").into_response();
    }
    render(StatusCode::OK, &LoginPage { error: None })
}

/// Records a login or logout. Failed logins go to the log only: anyone
/// who can reach the form could otherwise grow the audit table at will.
async fn record_session(
    state: &SharedState,
    s: &session::Session,
    action: &str,
    source: String,
) -> Result<(), Response> {
    let e = super::audit::entry(
        state,
        &s.actor(),
        action,
        "ui".into(),
        source,
        StatusCode::SEE_OTHER.as_u16(),
        Value::Object(serde_json::Map::new()),
    );
    super::audit::write(state, e).await.map_err(|_| {
        html(
            StatusCode::INTERNAL_SERVER_ERROR,
            "<h1>Not done</h1><p>This could not be recorded in the audit log, so it was \
             refused; the gateway's error log says why.</p>"
                .into(),
        )
    })
}

async fn login(
    axum::extract::State(state): axum::extract::State<SharedState>,
    axum::Extension(sessions): axum::Extension<Arc<Sessions>>,
    source: Source,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    let presented = fields.get("admin_key").map(|k| k.trim()).unwrap_or("");
    if presented.is_empty() || !key::verify(presented, state.admin_key.hash()) {
        tracing::warn!(source = %source.0, "console login with a wrong admin key");
        return render(
            StatusCode::UNAUTHORIZED,
            &LoginPage {
                error: Some("That is not the admin key.".into()),
            },
        );
    }
    let session = sessions.create(state.clock.now_ms());
    if let Err(resp) = record_session(&state, &session, "session.login", source.0).await {
        sessions.remove(&session.id);
        return resp;
    }
    let mut resp = Redirect::to("/ui").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&session)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn logout(
    user: UiUser,
    axum::Extension(sessions): axum::Extension<Arc<Sessions>>,
    source: Source,
    body: Bytes,
) -> Response {
    if !user
        .session
        .csrf_ok(form(&body).get("csrf").map(String::as_str))
    {
        return csrf_rejected();
    }
    sessions.remove(&user.session.id);
    if let Err(resp) = record_session(&user.state, &user.session, "session.logout", source.0).await
    {
        return resp;
    }
    let mut resp = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLE_CSS,
    )
        .into_response()
}
