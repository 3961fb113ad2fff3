//! Google's wire formats: the Gemini API (AI Studio,
//! `/v1beta/models/{m}:generateContent`, `:streamGenerateContent?alt=sse`,
//! `:embedContent`, `:batchEmbedContents`, key in `x-goog-api-key`),
//! Vertex AI (the same methods under
//! `/v1/projects/{p}/locations/{r}/publishers/google/models/{m}`, Claude
//! under `.../publishers/anthropic/models/{m}:rawPredict` and
//! `:streamRawPredict`, embeddings at `:predict`, a Bearer token), and an OAuth token endpoint
//! (`POST /token`) that checks a service account's JWT grant: RS256
//! signature against the test's public key, `iss`, `aud`, `scope`, `exp`.
//!
//! Generation follows the rest of the mock (`"word "` per token, prompt
//! tokens = text characters / 4). Google-only behaviour is steered by
//! directives in the prompt, beside the common ones:
//! - `gemini_thoughts=N`: report `N` `thoughtsTokenCount`;
//! - `gemini_cached=N`: report `N` `cachedContentTokenCount`;
//! - `gemini_block=REASON`: block the prompt (`promptFeedback.blockReason`);
//! - `gemini_finish=REASON`: end the candidate with that `finishReason`;
//! - `gemini_call=NAME`: answer with a `functionCall` of `NAME`;
//! - `gemini_usage=bad` / `gemini_usage=absent`: report ill-typed counts
//!   (a string, `null`) or no `usageMetadata` at all.
//!
//! A `gemini-3*` model signs each `functionCall` part it returns
//! (`thoughtSignature`) and, as Google does, answers 400 to a request that
//! sends a model `functionCall` part back without its signature (or with
//! one it did not issue for that function).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::body::MockBody;
use crate::directive::Directives;
use crate::state::{FailureMode, InFlight, Settings, Shared, WORD};
use crate::{EMBEDDING_DIM, MockHandle};

/// The scope a Vertex grant must ask for.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The service account the token endpoint accepts grants from.
#[derive(Debug, Clone)]
pub struct GoogleAuth {
    pub client_email: String,
    /// The account's RSA public key (PKCS#1 `RSAPublicKey` DER).
    pub public_key: Vec<u8>,
}

/// Token endpoint and Vertex credentials state.
#[derive(Default)]
pub(crate) struct GoogleState {
    auth: Mutex<Option<GoogleAuth>>,
    /// Issued access tokens and when each expires.
    tokens: Mutex<HashMap<String, Instant>>,
    seq: AtomicU64,
    /// Lifetime of the tokens issued, seconds (0: 3600).
    expires_in: AtomicU64,
    /// Answer grants with this status instead of a token.
    token_failure: Mutex<Option<u16>>,
    token_latency: Mutex<Duration>,
    /// The claims of every grant accepted, oldest first.
    grants: Mutex<Vec<Value>>,
}

impl MockHandle {
    /// `http://127.0.0.1:PORT/v1beta`: the `base_url` of a `gemini` provider.
    pub fn gemini_base_url(&self) -> String {
        format!("http://{}/v1beta", self.addr())
    }

    /// `http://127.0.0.1:PORT/v1`: the `base_url` of a `vertex` provider.
    pub fn vertex_base_url(&self) -> String {
        format!("http://{}/v1", self.addr())
    }

    /// The token endpoint: a service account's `token_uri`.
    pub fn token_uri(&self) -> String {
        format!("http://{}/token", self.addr())
    }

    /// Accept grants signed by this account only; `None` accepts none,
    /// and Vertex routes then take any Bearer token.
    pub fn set_google_auth(&self, auth: Option<GoogleAuth>) {
        *self.shared.google.auth.lock() = auth;
    }

    /// Lifetime of the access tokens issued from now on.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared
            .google
            .expires_in
            .store(lifetime.as_secs().max(1), Ordering::SeqCst);
    }

    /// Answer grants with `status` (`None`: issue tokens again).
    pub fn set_token_failure(&self, status: Option<u16>) {
        *self.shared.google.token_failure.lock() = status;
    }

    /// Wait this long before answering a grant.
    pub fn set_token_latency(&self, latency: Duration) {
        *self.shared.google.token_latency.lock() = latency;
    }

    /// The claims of every grant the token endpoint accepted.
    pub fn grants(&self) -> Vec<Value> {
        self.shared.google.grants.lock().clone()
    }

    /// Every access token issued so far.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.shared.google.tokens.lock().keys().cloned().collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GoogleMethod {
    Generate,
    Stream,
    Embed,
    BatchEmbed,
    RawPredict,
    StreamRawPredict,
    /// Vertex embeddings.
    Predict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Token,
    Model {
        vertex: bool,
        publisher: String,
        model: String,
        method: GoogleMethod,
    },
}

impl Route {
    pub fn of(method: &Method, path: &str) -> Option<Route> {
        if method != Method::POST {
            return None;
        }
        if path == "/token" {
            return Some(Route::Token);
        }
        let (prefix, rest) = path.split_once("/models/")?;
        let (model, op) = rest.rsplit_once(':')?;
        let method = match op {
            "generateContent" => GoogleMethod::Generate,
            "streamGenerateContent" => GoogleMethod::Stream,
            "embedContent" => GoogleMethod::Embed,
            "batchEmbedContents" => GoogleMethod::BatchEmbed,
            "rawPredict" => GoogleMethod::RawPredict,
            "streamRawPredict" => GoogleMethod::StreamRawPredict,
            "predict" => GoogleMethod::Predict,
            _ => return None,
        };
        let (vertex, publisher) = if prefix == "/v1beta" {
            (false, "google".to_owned())
        } else {
            let publisher = prefix.rsplit_once("/publishers/")?.1;
            let location = prefix.strip_prefix("/v1/projects/")?;
            let (_project, loc) = location.split_once("/locations/")?;
            if loc.is_empty() {
                return None;
            }
            (true, publisher.to_owned())
        };
        let model = model.replace("%40", "@");
        Some(Route::Model {
            vertex,
            publisher,
            model,
            method,
        })
    }
}

/// The Google-only directives of a request.
#[derive(Debug, Default)]
struct GoogleDirectives {
    thoughts: u64,
    cached: u64,
    block: Option<String>,
    finish: Option<String>,
    call: Option<String>,
    usage: Option<String>,
}

impl GoogleDirectives {
    fn parse(body: &[u8]) -> GoogleDirectives {
        let mut d = GoogleDirectives::default();
        let text = String::from_utf8_lossy(body);
        for piece in text.split("[[mock:").skip(1) {
            let Some((word, _)) = piece.split_once("]]") else {
                continue;
            };
            let (name, value) = word.split_once('=').unwrap_or((word, ""));
            match name {
                "gemini_thoughts" => d.thoughts = value.parse().unwrap_or(0),
                "gemini_cached" => d.cached = value.parse().unwrap_or(0),
                "gemini_block" => d.block = Some(value.to_owned()),
                "gemini_finish" => d.finish = Some(value.to_owned()),
                "gemini_call" => d.call = Some(value.to_owned()),
                "gemini_usage" => d.usage = Some(value.to_owned()),
                _ => {}
            }
        }
        d
    }
}

fn google_error(status: StatusCode, message: &str) -> Response<MockBody> {
    let name = match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    let body = json!({ "error": { "code": status.as_u16(), "message": message, "status": name } });
    json_response(status, Bytes::from(body.to_string()), None)
}

fn json_response(
    status: StatusCode,
    body: Bytes,
    in_flight: Option<InFlight>,
) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body, in_flight));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) struct Request<'a> {
    pub shared: &'a Shared,
    pub settings: &'a Settings,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    pub body: &'a Bytes,
    pub directives: &'a Directives,
    pub in_flight: Mutex<Option<InFlight>>,
    /// `http://ADDR/token`, what a grant's `aud` must be.
    pub token_uri: String,
}

/// Answers a Google route.
pub(crate) async fn handle(route: Route, req: Request<'_>) -> Response<MockBody> {
    match route {
        Route::Token => token(&req).await,
        Route::Model {
            vertex,
            publisher,
            model,
            method,
        } => {
            if let Some(status) = req.directives.status {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return google_error(
                    status,
                    "mock provider: injected failure (`[[mock:status]]`)",
                );
            }
            if let Some(response) = check_credentials(&req, vertex) {
                return response;
            }
            match (publisher.as_str(), method) {
                ("anthropic", GoogleMethod::RawPredict | GoogleMethod::StreamRawPredict)
                    if vertex =>
                {
                    claude(&req, &model, method == GoogleMethod::StreamRawPredict)
                }
                ("google", GoogleMethod::Generate) => generate(&req, &model, false),
                ("google", GoogleMethod::Stream) => {
                    if req
                        .query
                        .is_none_or(|q| !q.split('&').any(|p| p == "alt=sse"))
                    {
                        return google_error(
                            StatusCode::BAD_REQUEST,
                            "mock provider: this mock streams only with `alt=sse`",
                        );
                    }
                    generate(&req, &model, true)
                }
                ("google", GoogleMethod::Predict) if vertex => predict(&req),
                ("google", GoogleMethod::Embed | GoogleMethod::BatchEmbed) => {
                    embed(&req, method == GoogleMethod::BatchEmbed)
                }
                _ => google_error(
                    StatusCode::NOT_FOUND,
                    "mock provider: no such Google method",
                ),
            }
        }
    }
}

fn check_credentials(req: &Request<'_>, vertex: bool) -> Option<Response<MockBody>> {
    if req
        .query
        .is_some_and(|q| q.split('&').any(|p| p.starts_with("key=")))
    {
        return Some(google_error(
            StatusCode::BAD_REQUEST,
            "mock provider: the API key must travel in `x-goog-api-key`, never in the URL",
        ));
    }
    if !vertex {
        if let Some(expected) = &req.settings.expected_api_key {
            let got = req
                .headers
                .get("x-goog-api-key")
                .and_then(|v| v.to_str().ok());
            if got != Some(&**expected) {
                return Some(google_error(
                    StatusCode::FORBIDDEN,
                    "mock provider: API key not valid. Please pass a valid API key.",
                ));
            }
        }
        return None;
    }
    let google = &req.shared.google;
    if google.auth.lock().is_none() {
        return None;
    }
    let token = req
        .headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let valid = token.is_some_and(|t| {
        google
            .tokens
            .lock()
            .get(t)
            .is_some_and(|expiry| Instant::now() < *expiry)
    });
    if valid {
        None
    } else {
        Some(google_error(
            StatusCode::UNAUTHORIZED,
            "mock provider: Request had invalid authentication credentials. Expected OAuth 2 access token.",
        ))
    }
}

/// `POST /token`: a JWT-bearer grant checked as Google checks it.
async fn token(req: &Request<'_>) -> Response<MockBody> {
    let google = &req.shared.google;
    let latency = *google.token_latency.lock();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(status) = *google.token_failure.lock() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Echoes the grant it was sent, as a careless endpoint or proxy
        // might: the gateway must not pass it on.
        let body = json!({ "error": "internal_failure", "error_description": format!(
            "{} was refused (mock provider: injected token endpoint failure)",
            String::from_utf8_lossy(req.body)) });
        return json_response(status, Bytes::from(body.to_string()), None);
    }
    let claims = match verify_grant(google, req.body, &req.token_uri) {
        Ok(claims) => claims,
        Err(why) => {
            let body = json!({ "error": "invalid_grant", "error_description": why });
            return json_response(StatusCode::BAD_REQUEST, Bytes::from(body.to_string()), None);
        }
    };
    google.grants.lock().push(claims);
    let n = google.seq.fetch_add(1, Ordering::SeqCst) + 1;
    let expires_in = match google.expires_in.load(Ordering::SeqCst) {
        0 => 3600,
        s => s,
    };
    let token = format!("ya29.mock-token-{n}");
    google.tokens.lock().insert(
        token.clone(),
        Instant::now() + Duration::from_secs(expires_in),
    );
    let body = json!({ "access_token": token, "expires_in": expires_in, "token_type": "Bearer" });
    json_response(StatusCode::OK, Bytes::from(body.to_string()), None)
}

fn form_field<'a>(form: &'a str, name: &str) -> Option<&'a str> {
    form.split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

/// The grant's claims if its form, signature and claims are right.
fn verify_grant(google: &GoogleState, body: &[u8], token_uri: &str) -> Result<Value, String> {
    let Some(auth) = google.auth.lock().clone() else {
        return Err("no service account is configured on this mock".to_owned());
    };
    let form = std::str::from_utf8(body).map_err(|_| "the form is not UTF-8".to_owned())?;
    let grant_type =
        form_field(form, "grant_type").map(|g| g.replace("%3A", ":").replace("%3a", ":"));
    if grant_type.as_deref() != Some(JWT_BEARER) {
        return Err(format!("`grant_type` must be `{JWT_BEARER}`"));
    }
    let assertion = form_field(form, "assertion").ok_or("no `assertion`")?;
    let mut parts = assertion.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("the assertion is not a JWT".to_owned());
    };
    let decode = |p: &str| {
        URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| "a JWT part is not base64url".to_owned())
    };
    let header: Value =
        serde_json::from_slice(&decode(h)?).map_err(|_| "the JWT header is not JSON")?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err("the JWT must be signed with `RS256`".to_owned());
    }
    let signature = decode(s)?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &auth.public_key)
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .map_err(|_| "Invalid JWT Signature.".to_owned())?;
    let claims: Value =
        serde_json::from_slice(&decode(c)?).map_err(|_| "the JWT claims are not JSON")?;
    let text = |k: &str| claims.get(k).and_then(Value::as_str);
    let num = |k: &str| claims.get(k).and_then(Value::as_i64);
    if text("iss") != Some(auth.client_email.as_str()) {
        return Err("`iss` is not the service account".to_owned());
    }
    if text("aud") != Some(token_uri) {
        return Err(format!("`aud` must be `{token_uri}`"));
    }
    if text("scope") != Some(CLOUD_PLATFORM_SCOPE) {
        return Err(format!("`scope` must be `{CLOUD_PLATFORM_SCOPE}`"));
    }
    let (Some(iat), Some(exp)) = (num("iat"), num("exp")) else {
        return Err("`iat` and `exp` must be numbers".to_owned());
    };
    let now = now_s();
    if exp <= now || exp - iat > 3600 || iat > now + 60 {
        return Err("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.".to_owned());
    }
    Ok(claims)
}

/// Characters of every `text` in a Gemini request's `contents` and
/// `systemInstruction`.
fn text_chars(v: &Value) -> u64 {
    fn walk(v: &Value, n: &mut u64) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    match (k.as_str(), x) {
                        ("text", Value::String(s)) => *n += s.chars().count() as u64,
                        _ => walk(x, n),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, n)),
            _ => {}
        }
    }
    let mut n = 0;
    for key in ["contents", "systemInstruction", "content", "requests"] {
        if let Some(x) = v.get(key) {
            walk(x, &mut n);
        }
    }
    n
}

fn generate(req: &Request<'_>, model: &str, stream: bool) -> Response<MockBody> {
    let Ok(body) = serde_json::from_slice::<Value>(req.body) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "mock provider: the body is not JSON",
        );
    };
    if body
        .get("contents")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        return google_error(
            StatusCode::BAD_REQUEST,
            "mock provider: `contents` is required",
        );
    }
    let signs = model.starts_with("gemini-3");
    if signs && let Err(message) = check_thought_signatures(&body) {
        return google_error(StatusCode::BAD_REQUEST, &message);
    }
    let d = GoogleDirectives::parse(req.body);
    let settings = req.settings;
    let prompt_chars = text_chars(&body);
    let mut prompt = (prompt_chars / 4).max(1);
    let configured = u64::from(settings.completion_tokens);
    let cap = body
        .pointer("/generationConfig/maxOutputTokens")
        .and_then(Value::as_u64);
    let tokens = cap.map_or(configured, |c| c.min(configured));
    let candidates = body
        .pointer("/generationConfig/candidateCount")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1);
    let mut completion = tokens * candidates;
    if let Some(u) = settings.usage {
        prompt = u.prompt_tokens;
        completion = u.completion_tokens;
    }
    let usage = |candidates_tokens: u64, last: bool| {
        let mut u = json!({ "promptTokenCount": prompt, "candidatesTokenCount": candidates_tokens,
            "totalTokenCount": prompt + candidates_tokens });
        if last && d.thoughts > 0 {
            u["thoughtsTokenCount"] = json!(d.thoughts);
            u["totalTokenCount"] = json!(prompt + candidates_tokens + d.thoughts);
        }
        if d.cached > 0 {
            u["cachedContentTokenCount"] = json!(d.cached);
        }
        match d.usage.as_deref() {
            Some("bad") => json!({ "promptTokenCount": "lots", "candidatesTokenCount": null,
                "thoughtsTokenCount": -5, "totalTokenCount": [] }),
            Some("absent") => Value::Null,
            _ => u,
        }
    };
    let id = req.shared.next_id();
    let response_id = format!("mock-{id}");
    if let Some(reason) = &d.block {
        let blocked = json!({ "promptFeedback": { "blockReason": reason },
            "usageMetadata": { "promptTokenCount": prompt, "totalTokenCount": prompt },
            "modelVersion": model, "responseId": response_id });
        return if stream {
            sse_response(vec![sse(&blocked)], req, false)
        } else {
            json_response(
                StatusCode::OK,
                Bytes::from(blocked.to_string()),
                req.in_flight.lock().take(),
            )
        };
    }
    let finish = d.finish.clone().unwrap_or_else(|| {
        if tokens < configured {
            "MAX_TOKENS"
        } else {
            "STOP"
        }
        .to_owned()
    });
    let call_part = d.call.as_ref().map(|name| {
        let mut part = json!({ "functionCall": { "name": name, "args": { "city": "Paris" } } });
        if signs {
            part["thoughtSignature"] = json!(thought_signature(name));
        }
        part
    });
    if !stream {
        let text = WORD.repeat(tokens as usize);
        let candidates: Vec<Value> = (0..candidates)
            .map(|i| {
                let parts = match &call_part {
                    Some(call) => json!([call]),
                    None => json!([{ "text": text }]),
                };
                json!({ "content": { "parts": parts, "role": "model" }, "finishReason": finish, "index": i })
            })
            .collect();
        let answer = json!({ "candidates": candidates, "usageMetadata": usage(completion, true),
            "modelVersion": model, "responseId": response_id });
        return json_response(
            StatusCode::OK,
            Bytes::from(answer.to_string()),
            req.in_flight.lock().take(),
        );
    }
    let cut_after = match settings.failure {
        FailureMode::StreamCut { after_chunks } => Some(u64::from(after_chunks)),
        _ => None,
    };
    let chunk = |parts: Value, sent: u64, finish: Option<&str>| {
        let mut candidate = json!({ "content": { "parts": parts, "role": "model" }, "index": 0 });
        if let Some(f) = finish {
            candidate["finishReason"] = json!(f);
        }
        sse(
            &json!({ "candidates": [candidate], "usageMetadata": usage(sent, finish.is_some()),
            "modelVersion": model, "responseId": response_id }),
        )
    };
    let mut events = Vec::new();
    let shown = cut_after.map_or(tokens, |c| c.min(tokens));
    if let Some(call) = &call_part {
        events.push(chunk(json!([call]), completion, Some(&finish)));
    } else {
        for i in 0..shown {
            // The usage so far, Google style: the last chunk has the total.
            let last = cut_after.is_none() && i + 1 == shown;
            let sent = if last {
                completion
            } else {
                (i + 1).min(completion)
            };
            events.push(chunk(
                json!([{ "text": WORD }]),
                sent,
                last.then_some(finish.as_str()),
            ));
        }
        if shown == 0 && cut_after.is_none() {
            events.push(chunk(json!([{ "text": "" }]), completion, Some(&finish)));
        }
    }
    sse_response(events, req, cut_after.is_some())
}

/// The signature the mock gives a `functionCall` of `name`: opaque base64
/// as Google's are (with `+`, `/` and `=` in it, so a gateway that mangles
/// it is caught), and checkable without state.
fn thought_signature(name: &str) -> String {
    format!("CiQB+/{}", STANDARD.encode(format!("mock-thought:{name}")))
}

/// Google's 400 for a Gemini 3 follow-up turn whose model `functionCall`
/// part lacks the `thoughtSignature` it was returned with.
fn check_thought_signatures(body: &Value) -> Result<(), String> {
    let turns = body.get("contents").and_then(Value::as_array);
    for (i, turn) in turns.into_iter().flatten().enumerate() {
        if turn.get("role").and_then(Value::as_str) != Some("model") {
            continue;
        }
        let parts = turn.get("parts").and_then(Value::as_array);
        for (j, part) in parts.into_iter().flatten().enumerate() {
            let Some(name) = part.pointer("/functionCall/name").and_then(Value::as_str) else {
                continue;
            };
            match part.get("thoughtSignature").and_then(Value::as_str) {
                Some(s) if s == thought_signature(name) => {}
                Some(_) => {
                    return Err(format!(
                        "Corrupted thought signature in contents[{i}].parts[{j}] (function call `{name}`)."
                    ));
                }
                None => {
                    return Err(format!(
                        "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, and missing thought_signature may lead to degraded model performance. Additional data, function call `{name}` , position {}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
                        i + 1
                    ));
                }
            }
        }
    }
    Ok(())
}

/// One Google SSE event: `data: {json}` and a blank line, CRLF-framed as
/// `streamGenerateContent?alt=sse` sends them.
fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\r\n\r\n"))
}

fn sse_response(events: Vec<Bytes>, req: &Request<'_>, cut: bool) -> Response<MockBody> {
    let body = MockBody::events(
        events,
        req.settings.chunk_delay,
        cut,
        req.in_flight.lock().take(),
    );
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn embed(req: &Request<'_>, batch: bool) -> Response<MockBody> {
    let Ok(body) = serde_json::from_slice::<Value>(req.body) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "mock provider: the body is not JSON",
        );
    };
    let dims = body
        .get("outputDimensionality")
        .or_else(|| body.pointer("/requests/0/outputDimensionality"))
        .and_then(Value::as_u64)
        .map_or(EMBEDDING_DIM, |d| d as usize);
    let vector = |i: usize| -> Value {
        json!({ "values": (0..dims).map(|k| ((i + k) % 7) as f64 / 8.0).collect::<Vec<f64>>() })
    };
    let answer = if batch {
        let Some(requests) = body.get("requests").and_then(Value::as_array) else {
            return google_error(
                StatusCode::BAD_REQUEST,
                "mock provider: `requests` is required",
            );
        };
        json!({ "embeddings": (0..requests.len()).map(vector).collect::<Vec<_>>() })
    } else {
        if body.pointer("/content/parts").is_none() {
            return google_error(
                StatusCode::BAD_REQUEST,
                "mock provider: `content.parts` is required",
            );
        }
        json!({ "embedding": vector(0) })
    };
    json_response(
        StatusCode::OK,
        Bytes::from(answer.to_string()),
        req.in_flight.lock().take(),
    )
}

/// Vertex embeddings: `{"instances":[{"content":…}]}` → one prediction
/// each, with its `statistics.token_count` (characters / 4, at least 1).
fn predict(req: &Request<'_>) -> Response<MockBody> {
    let Ok(body) = serde_json::from_slice::<Value>(req.body) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "mock provider: the body is not JSON",
        );
    };
    let Some(instances) = body.get("instances").and_then(Value::as_array) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "mock provider: `instances` is required",
        );
    };
    let dims = body
        .pointer("/parameters/outputDimensionality")
        .and_then(Value::as_u64)
        .map_or(EMBEDDING_DIM, |d| d as usize);
    let predictions: Vec<Value> = instances
        .iter()
        .enumerate()
        .map(|(i, inst)| {
            let chars = inst
                .get("content")
                .and_then(Value::as_str)
                .map_or(0, |c| c.chars().count());
            let values: Vec<f64> = (0..dims).map(|k| ((i + k) % 7) as f64 / 8.0).collect();
            // Vertex writes the count as a float.
            json!({ "embeddings": { "values": values,
                "statistics": { "token_count": (chars / 4).max(1) as f64, "truncated": false } } })
        })
        .collect();
    let answer = json!({ "predictions": predictions, "metadata": { "billableCharacterCount": 0 } });
    json_response(
        StatusCode::OK,
        Bytes::from(answer.to_string()),
        req.in_flight.lock().take(),
    )
}

/// Claude on Vertex: the Anthropic body without `model`, with the Vertex
/// `anthropic_version`; answered by the mock's Anthropic route.
fn claude(req: &Request<'_>, model: &str, stream: bool) -> Response<MockBody> {
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(req.body) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "mock provider: the body is not a JSON object",
        );
    };
    if body.get("anthropic_version").and_then(Value::as_str) != Some("vertex-2023-10-16") {
        return google_error(
            StatusCode::BAD_REQUEST,
            "mock provider: `anthropic_version` must be `vertex-2023-10-16`",
        );
    }
    if body.contains_key("model") {
        return google_error(
            StatusCode::BAD_REQUEST,
            "mock provider: `model` goes in the URL, not the body",
        );
    }
    if stream != (body.get("stream").and_then(Value::as_bool) == Some(true)) {
        return google_error(
            StatusCode::BAD_REQUEST,
            "mock provider: `streamRawPredict` takes `stream: true`, `rawPredict` not",
        );
    }
    body.insert("model".into(), json!(model));
    let with_model = Bytes::from(Value::Object(body).to_string());
    match req.in_flight.lock().take() {
        Some(guard) => crate::handler::answer_messages(
            req.shared,
            req.settings,
            &with_model,
            req.directives,
            guard,
        ),
        None => google_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "mock provider: answered twice",
        ),
    }
}

/// Mock-side helpers tests use to build service-account files.
pub fn pem_private_key(pkcs8_der: &[u8]) -> String {
    let b64 = STANDARD.encode(pkcs8_der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}
