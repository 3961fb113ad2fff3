//! Microsoft Entra ID's token endpoint, `POST /{tenant}/oauth2/v2.0/token`,
//! and the Azure side of it. The client-credentials grant is VERIFIED:
//! `grant_type=client_credentials`, the tenant, `client_id`,
//! `client_secret` and `scope=https://cognitiveservices.azure.com/.default`
//! must all be the registered app's ([`EntraApp`]), or the answer is
//! Entra's own 400/401. Issued tokens are remembered with their expiry, and
//! while an app is registered every Azure deployment call must carry one
//! as `Authorization: Bearer` (an `api-key` is refused).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use parking_lot::Mutex;
use serde_json::json;

use crate::body::MockBody;
use crate::state::Shared;

/// The app registration a test gave the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraApp {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// `expires_in` of issued tokens.
    pub token_lifetime: Duration,
}

pub(crate) const SCOPE: &str = "https://cognitiveservices.azure.com/.default";

#[derive(Default)]
pub(crate) struct EntraState {
    app: Mutex<Option<EntraApp>>,
    /// Answer every token request with this status (an outage).
    fail_status: Mutex<Option<u16>>,
    /// Wait this long before answering a token request.
    delay: Mutex<Duration>,
    token_requests: AtomicU64,
    issued: Mutex<HashMap<String, Instant>>,
}

impl EntraState {
    pub fn set_app(&self, app: Option<EntraApp>) {
        *self.app.lock() = app;
    }

    pub fn set_fail_status(&self, status: Option<u16>) {
        *self.fail_status.lock() = status;
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock() = delay;
    }

    /// Every token issued so far stops working.
    pub fn revoke_all(&self) {
        self.issued.lock().clear();
    }

    pub fn token_requests(&self) -> u64 {
        self.token_requests.load(Ordering::SeqCst)
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(Bytes::from(body.to_string()), None));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<MockBody> {
    json_response(
        status,
        json!({ "error": error, "error_description": description, "error_codes": [7000215] }),
    )
}

fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Answers the request if it is Entra's (a token request) or an Azure
/// call that lacks a valid Entra token; `None` lets it through.
pub(crate) async fn intercept(
    shared: &Shared,
    parts: &http::request::Parts,
    body: &[u8],
) -> Option<Response<MockBody>> {
    let state = &shared.entra;
    let path = parts.uri.path();
    if let Some(tenant) = path
        .strip_prefix('/')
        .and_then(|p| p.strip_suffix("/oauth2/v2.0/token"))
    {
        return Some(token(state, tenant, body).await);
    }
    let app = state.app.lock().clone();
    if app.is_some() && path.starts_with("/openai/deployments/") {
        let bearer = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let valid = bearer.is_some_and(|token| {
            state
                .issued
                .lock()
                .get(token)
                .is_some_and(|expires| Instant::now() < *expires)
        });
        if !valid || parts.headers.contains_key("api-key") {
            return Some(json_response(
                StatusCode::UNAUTHORIZED,
                json!({ "error": { "code": "401", "message": "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired." } }),
            ));
        }
    }
    None
}

async fn token(state: &EntraState, tenant: &str, body: &[u8]) -> Response<MockBody> {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let delay = *state.delay.lock();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = *state.fail_status.lock() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        // Echoes the request (with its client secret), as a careless
        // endpoint or proxy might: the gateway must not pass it on.
        return oauth_error(
            status,
            "temporarily_unavailable",
            &format!(
                "AADSTS90033: A transient error has occurred. Please try again. Request: {}",
                String::from_utf8_lossy(body)
            ),
        );
    }
    let Some(app) = state.app.lock().clone() else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS90002: Tenant not found.",
        );
    };
    if tenant != app.tenant_id {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS90002: Tenant not found.",
        );
    }
    let text = String::from_utf8_lossy(body);
    let form: HashMap<String, String> = text
        .split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((form_decode(k)?, form_decode(v)?))
        })
        .collect();
    let get = |k: &str| form.get(k).map(String::as_str);
    if get("grant_type") != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.",
        );
    }
    if get("scope") != Some(SCOPE) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS70011: The provided value for the input parameter 'scope' is not valid.",
        );
    }
    if get("client_id") != Some(app.client_id.as_str()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    if get("client_secret") != Some(app.client_secret.as_str()) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    let n = state.token_requests();
    let token = format!("mock-entra-token-{n}-{}", app.client_id.len());
    state
        .issued
        .lock()
        .insert(token.clone(), Instant::now() + app.token_lifetime);
    json_response(
        StatusCode::OK,
        json!({
            "token_type": "Bearer",
            "expires_in": app.token_lifetime.as_secs(),
            "ext_expires_in": app.token_lifetime.as_secs(),
            "access_token": token,
        }),
    )
}
