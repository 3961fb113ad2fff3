//! One request, start to end: record it, wait the configured latency, check
//! the credential, apply the failure mode, answer in the route's format.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::agents::{self, Extras};
use crate::body::{Abort, MockBody};
use crate::directive::Directives;
use crate::state::{FailureMode, InFlight, Settings, Shared, credential};
use crate::wire::{self, Answer, ParsedRequest};

/// Request bodies above this are refused; the mock holds them in memory.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Chat,
    Completions,
    Embeddings,
    Models,
    Messages,
    /// Anthropic's `/v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI's Responses API (also Azure's v1 `/openai/v1/responses`).
    Responses,
    /// Azure's `/openai/deployments/{deployment}/...`: the deployment stands
    /// in for the model when the body names none.
    Azure(&'a str, AzureOp),
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AzureOp {
    Chat,
    Completions,
    Embeddings,
}

impl<'a> Route<'a> {
    fn of(method: &Method, path: &'a str) -> Route<'a> {
        let post = method == Method::POST;
        match path {
            "/v1/chat/completions" | "/chat/completions" if post => Route::Chat,
            "/v1/completions" | "/completions" if post => Route::Completions,
            "/v1/embeddings" | "/embeddings" if post => Route::Embeddings,
            "/v1/messages" | "/messages" if post => Route::Messages,
            "/v1/messages/count_tokens" | "/messages/count_tokens" if post => Route::CountTokens,
            "/v1/responses" | "/responses" | "/openai/v1/responses" if post => Route::Responses,
            "/v1/models" | "/models" if method == Method::GET => Route::Models,
            _ if post => Route::azure(path).unwrap_or(Route::NotFound),
            _ => Route::NotFound,
        }
    }

    fn azure(path: &'a str) -> Option<Route<'a>> {
        let rest = path.strip_prefix("/openai/deployments/")?;
        let (deployment, op) = rest.split_once('/')?;
        let op = match op {
            "chat/completions" => AzureOp::Chat,
            "completions" => AzureOp::Completions,
            "embeddings" => AzureOp::Embeddings,
            _ => return None,
        };
        (!deployment.is_empty()).then_some(Route::Azure(deployment, op))
    }

    fn is_anthropic(self) -> bool {
        matches!(self, Route::Messages | Route::CountTokens)
    }
}

pub(crate) async fn handle(
    shared: Arc<Shared>,
    reset: Arc<AtomicBool>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Abort> {
    let in_flight = shared.stats.enter();
    let (parts, body) = req.into_parts();
    let body = match http_body_util::Limited::new(body, MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(Abort("mock provider: could not read the request body")),
    };
    let path = parts.uri.path();
    shared.stats.record(
        &parts.method,
        path,
        parts.uri.query(),
        &parts.headers,
        &body,
    );
    if let Some(response) = crate::entra::intercept(&shared, &parts, &body).await {
        return Ok(response);
    }
    if let Some(target) = crate::bedrock::route(path) {
        return Ok(crate::bedrock::handle(&shared, &parts, &body, target, in_flight).await);
    }
    let route = Route::of(&parts.method, path);
    let mut settings = shared.snapshot();
    let directives = Directives::parse(&body);
    directives.apply_to(&mut settings);

    if !settings.latency.is_zero() {
        tokio::time::sleep(settings.latency).await;
    }
    if let Some(google) = crate::google::Route::of(&parts.method, path) {
        // What a grant's `aud` must be: this server's own `/token`.
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        let token_uri = format!("http://{}/token", host.unwrap_or_default());
        let request = crate::google::Request {
            shared: &shared,
            settings: &settings,
            headers: &parts.headers,
            query: parts.uri.query(),
            body: &body,
            directives: &directives,
            in_flight: parking_lot::Mutex::new(Some(in_flight)),
            token_uri,
        };
        return Ok(crate::google::handle(google, request).await);
    }
    if let Some(status) = directives.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Ok(error(
            route,
            status,
            "mock provider: injected failure (`[[mock:status]]`)",
        ));
    }

    if let Some(expected) = &settings.expected_api_key
        && credential(&parts.headers) != Some(&**expected)
    {
        let message = "mock provider: the API key is missing or is not the expected provider key";
        return Ok(error(route, StatusCode::UNAUTHORIZED, message));
    }

    match &settings.failure {
        FailureMode::None => {}
        FailureMode::Status(status, body) => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(json(status, Bytes::from(body.clone()), Some(in_flight)));
        }
        FailureMode::Hang => {
            crate::server::stopped(&mut shared.shutdown.subscribe()).await;
            return Err(Abort("mock provider: shut down while hanging"));
        }
        FailureMode::Reset => {
            reset.store(true, Ordering::SeqCst);
            return Err(Abort("mock provider: connection reset on purpose"));
        }
        FailureMode::Malformed => {
            return Ok(json(
                StatusCode::OK,
                Bytes::from_static(b"this is not JSON {\"choices\": ["),
                Some(in_flight),
            ));
        }
        FailureMode::FailFirst(_) => {
            if shared.take_fail_first() {
                let message = "mock provider: injected failure (`FailFirst`)";
                return Ok(error(route, StatusCode::INTERNAL_SERVER_ERROR, message));
            }
        }
        FailureMode::FailFirstWith {
            status, headers, ..
        } => {
            if shared.take_fail_first() {
                let status =
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let message = "mock provider: injected failure (`FailFirstWith`)";
                return Ok(crate::failures::with_headers(
                    error(route, status, message),
                    headers,
                ));
            }
        }
        FailureMode::StreamCut { .. } => {}
    }

    Ok(answer(
        &shared,
        &settings,
        route,
        &body,
        &directives,
        in_flight,
    ))
}

/// Claude on Vertex ([`crate::google`]): the body, with its `model` put
/// back, answered as Anthropic's `/v1/messages`.
pub(crate) fn answer_messages(
    shared: &Shared,
    settings: &Settings,
    body: &[u8],
    directives: &Directives,
    in_flight: InFlight,
) -> Response<MockBody> {
    answer(
        shared,
        settings,
        Route::Messages,
        body,
        directives,
        in_flight,
    )
}

fn answer(
    shared: &Shared,
    settings: &Settings,
    route: Route,
    body: &[u8],
    directives: &Directives,
    in_flight: InFlight,
) -> Response<MockBody> {
    if route == Route::Models {
        return json(StatusCode::OK, shared.models_body.clone(), Some(in_flight));
    }
    if route == Route::NotFound {
        let message = "mock provider: no such endpoint; it serves `POST /v1/chat/completions`, `/v1/completions`, \
                       `/v1/embeddings`, `/v1/messages` (and its `count_tokens`), `/v1/responses`, `GET /v1/models` and Azure's `/openai/deployments/{d}/...`";
        return error(route, StatusCode::NOT_FOUND, message);
    }
    let mut request = match wire::parse_request(body) {
        Ok(request) => request,
        Err(message) => {
            let message = format!("mock provider: {message}");
            return error(route, StatusCode::BAD_REQUEST, &message);
        }
    };
    let model = match (&request.model, route) {
        (Some(model), _) => model.as_str(),
        (None, Route::Azure(deployment, _)) => deployment,
        (None, _) => {
            let message = "mock provider: you must provide a model parameter (`model`)";
            return error(route, StatusCode::BAD_REQUEST, message);
        }
    };
    if route == Route::CountTokens {
        let tokens = settings
            .usage
            .map_or(request.prompt_tokens(), |u| u.prompt_tokens);
        return json(
            StatusCode::OK,
            agents::count_tokens(tokens),
            Some(in_flight),
        );
    }
    // Only the agent routes pay for reading the body as a JSON tree.
    let extras = match route {
        Route::Messages | Route::Responses => Extras::of(body, directives.tool_use),
        _ => Extras::default(),
    };
    if route == Route::Responses {
        request.max_tokens = extras.max_output_tokens;
    }
    if directives.ignore_cap {
        // A lenient server: generates its own default length whatever cap
        // the request carried.
        request.max_tokens = None;
    }
    if route == Route::Messages && request.max_tokens.is_none() && !directives.ignore_cap {
        let message = "max_tokens: Field required (Anthropic requires `max_tokens`)";
        return error(route, StatusCode::BAD_REQUEST, message);
    }
    let id = shared.next_id();
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    if matches!(
        route,
        Route::Embeddings | Route::Azure(_, AzureOp::Embeddings)
    ) {
        let prompt_tokens = settings
            .usage
            .map_or(request.prompt_tokens(), |u| u.prompt_tokens);
        let body = wire::embeddings(
            model,
            request.inputs,
            prompt_tokens,
            request.prompt_chars,
            request.base64,
        );
        return json(StatusCode::OK, body, Some(in_flight));
    }

    let answer = build_answer(settings, &request, id, created, model);
    let cut_after = match settings.failure {
        FailureMode::StreamCut { after_chunks } => Some(u64::from(after_chunks)),
        _ => None,
    };
    let chat = matches!(route, Route::Chat | Route::Azure(_, AzureOp::Chat));
    if request.stream {
        let events = if route == Route::Responses {
            agents::responses_stream(&answer, &extras, cut_after)
        } else if route.is_anthropic() && extras.rich() {
            agents::anthropic_stream(&answer, &extras, cut_after)
        } else if route.is_anthropic() {
            wire::anthropic_stream(&answer, cut_after)
        } else {
            wire::openai_stream(&answer, chat, request.include_usage, cut_after)
        };
        let body = MockBody::events(
            events,
            settings.chunk_delay,
            cut_after.is_some(),
            Some(in_flight),
        );
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return response;
    }
    let body = if route == Route::Responses {
        agents::responses_body(&answer, &extras)
    } else if route.is_anthropic() && extras.rich() {
        agents::anthropic_message(&answer, &extras)
    } else if route.is_anthropic() {
        wire::anthropic_message(&answer)
    } else if chat {
        wire::chat_completion(&answer)
    } else {
        wire::text_completion(&answer)
    };
    if cut_after.is_some() {
        // Announce the whole length, send half: the client sees the connection drop mid-body.
        let full_len = body.len();
        let half = body.slice(..full_len / 2);
        let mut response = Response::new(MockBody::events(
            vec![half],
            settings.chunk_delay,
            true,
            Some(in_flight),
        ));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(full_len));
        return response;
    }
    json(StatusCode::OK, body, Some(in_flight))
}

fn build_answer<'a>(
    settings: &'a Settings,
    request: &ParsedRequest,
    id: u64,
    created: u64,
    model: &'a str,
) -> Answer<'a> {
    let configured = u64::from(settings.completion_tokens);
    let tokens = request
        .max_tokens
        .map_or(configured, |max| max.min(configured));
    let content = &settings.content[..tokens as usize * crate::state::WORD.len()];
    // Every choice of `n` (or `best_of`) is generated and billed; the
    // answer shows one, the usage counts them all.
    let (prompt_tokens, completion_tokens) = settings.usage.map_or(
        (
            request.prompt_tokens(),
            tokens.saturating_mul(request.choices),
        ),
        |u| (u.prompt_tokens, u.completion_tokens),
    );
    Answer {
        id,
        created,
        model,
        content,
        tokens,
        truncated: tokens < configured,
        prompt_tokens,
        completion_tokens,
        cache: settings.cache,
    }
}

fn json(status: StatusCode, body: Bytes, in_flight: Option<InFlight>) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body, in_flight));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An error in the route's own format (Anthropic's on `/v1/messages`,
/// OpenAI's elsewhere), typed the way each API types that status.
fn error(route: Route, status: StatusCode, message: &str) -> Response<MockBody> {
    let body = if route.is_anthropic() {
        let error_type = match status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            404 => "not_found_error",
            _ => "api_error",
        };
        wire::anthropic_error_body(message, error_type)
    } else {
        let (error_type, code) = match status.as_u16() {
            401 => ("invalid_request_error", Some("invalid_api_key")),
            404 => ("invalid_request_error", Some("unknown_url")),
            400..=499 => ("invalid_request_error", None),
            _ => ("server_error", None),
        };
        wire::openai_error_body(message, error_type, code)
    };
    json(status, body, None)
}
