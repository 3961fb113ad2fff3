//! AWS Bedrock's runtime wire: `POST /model/{modelId}/converse`,
//! `/converse-stream`, `/invoke` and `/invoke-with-response-stream`. Every
//! request's SigV4 signature is VERIFIED against the credentials the test
//! set ([`AwsCredentials`]): the mock recomputes it with `aws-sigv4` from
//! the request as received, over the canonical path AWS itself uses (the
//! model id decoded and re-encoded as the SDKs encode it), so a gateway
//! that signs with another secret, leaves the session token out or
//! encodes the model id differently gets AWS's 403. Streams are AWS
//! event-stream frames written by `aws-smithy-eventstream`, CRCs included.
//! Usage, cut-offs, cache numbers and latency follow the mock's settings
//! and `[[mock:…]]` directives; `[[mock:tool_use]]` makes the model call
//! the request's first tool. [`BedrockFault`] breaks the stream on purpose.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_runtime_api::client::identity::Identity;
use aws_smithy_types::event_stream::{Header, HeaderValue as EsValue, Message};
use base64::Engine;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::body::MockBody;
use crate::directive::Directives;
use crate::state::{InFlight, Settings, Shared};
use crate::wire::{self, Answer};

/// The credentials a test gave the gateway; the mock checks signatures with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub region: String,
}

/// Ways to break a Bedrock stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BedrockFault {
    #[default]
    None,
    /// The second frame's message CRC is wrong.
    CorruptCrc,
    /// After this many text deltas, a `throttlingException` frame ends the stream.
    ExceptionAfter(u32),
}

/// Per-mock Bedrock state, behind [`crate::MockHandle`].
#[derive(Default)]
pub(crate) struct BedrockState {
    credentials: Mutex<Option<AwsCredentials>>,
    fault: Mutex<BedrockFault>,
    /// Replaces the `usage` object of every answer (hostile numbers).
    usage_json: Mutex<Option<Value>>,
    rejected_signatures: AtomicU64,
}

impl BedrockState {
    pub fn set_credentials(&self, credentials: Option<AwsCredentials>) {
        *self.credentials.lock() = credentials;
    }

    pub fn set_fault(&self, fault: BedrockFault) {
        *self.fault.lock() = fault;
    }

    pub fn set_usage_json(&self, usage: Option<Value>) {
        *self.usage_json.lock() = usage;
    }

    pub fn rejected_signatures(&self) -> u64 {
        self.rejected_signatures.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Converse,
    ConverseStream,
    Invoke,
    InvokeStream,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Converse => "converse",
            Op::ConverseStream => "converse-stream",
            Op::Invoke => "invoke",
            Op::InvokeStream => "invoke-with-response-stream",
        }
    }
}

/// `/model/{id}/{op}` → the decoded model id and the operation.
pub(crate) fn route(path: &str) -> Option<(String, Op)> {
    let rest = path.strip_prefix("/model/")?;
    let (id, op) = rest.rsplit_once('/')?;
    let op = match op {
        "converse" => Op::Converse,
        "converse-stream" => Op::ConverseStream,
        "invoke" => Op::Invoke,
        "invoke-with-response-stream" => Op::InvokeStream,
        _ => return None,
    };
    let id = percent_decode(id)?;
    (!id.is_empty() && !id.contains('/') || id.starts_with("arn:")).then_some((id, op))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// How the AWS SDKs put a model id in the path: every byte but the
/// unreserved ones percent-encoded.
fn sdk_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn aws_error(status: StatusCode, error_type: &str, message: &str) -> Response<MockBody> {
    let body = Bytes::from(json!({ "message": message }).to_string());
    let mut response = Response::new(MockBody::full(body, None));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(error_type) {
        headers.insert("x-amzn-errortype", v);
    }
    response
}

/// Checks the request's SigV4 signature; the error is AWS's exception
/// type and message for the 403.
fn verify(
    credentials: &AwsCredentials,
    parts: &http::request::Parts,
    model: &str,
    op: Op,
    body: &[u8],
) -> Result<(), (&'static str, std::borrow::Cow<'static, str>)> {
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let forbidden = |error_type: &'static str, message: &'static str| {
        Err((error_type, std::borrow::Cow::Borrowed(message)))
    };
    let Some(auth) = header("authorization") else {
        return forbidden(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
    };
    let Some(fields) = auth.strip_prefix("AWS4-HMAC-SHA256 ") else {
        return forbidden(
            "IncompleteSignatureException",
            "Authorization header requires the AWS4-HMAC-SHA256 algorithm",
        );
    };
    let field = |name: &str| {
        fields
            .split(", ")
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
    };
    let (Some(credential), Some(signed_headers), Some(signature)) = (
        field("Credential"),
        field("SignedHeaders"),
        field("Signature"),
    ) else {
        return forbidden(
            "IncompleteSignatureException",
            "Authorization header requires Credential, SignedHeaders and Signature",
        );
    };
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[0] != credentials.access_key_id {
        return forbidden(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        );
    }
    if scope[2] != credentials.region || scope[3] != "bedrock" || scope[4] != "aws4_request" {
        return forbidden(
            "InvalidSignatureException",
            "Credential should be scoped to a valid region and service `bedrock`.",
        );
    }
    if header("x-amz-security-token") != credentials.session_token.as_deref() {
        return forbidden(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        );
    }
    let Some(time) = header("x-amz-date").and_then(amz_date) else {
        return forbidden(
            "IncompleteSignatureException",
            "missing or malformed `X-Amz-Date`",
        );
    };
    let Some(host) = header("host") else {
        return forbidden("IncompleteSignatureException", "no `host` header");
    };
    let mut headers: Vec<(&str, &str)> = Vec::new();
    for name in signed_headers.split(';') {
        if matches!(name, "x-amz-date" | "x-amz-security-token" | "host") {
            continue;
        }
        match header(name) {
            Some(value) => headers.push((name, value)),
            None => return forbidden("IncompleteSignatureException", "a signed header is missing"),
        }
    }
    let uri = format!(
        "http://{host}/model/{}/{}{}",
        sdk_encode(model),
        op.name(),
        parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    );
    let identity: Identity = Credentials::new(
        &credentials.access_key_id,
        &credentials.secret_access_key,
        credentials.session_token.clone(),
        None,
        "mock",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Double;
    let expected = v4::SigningParams::builder()
        .identity(&identity)
        .region(&credentials.region)
        .name("bedrock")
        .time(time)
        .settings(settings)
        .build()
        .ok()
        .and_then(|params| {
            let request = SignableRequest::new(
                parts.method.as_str(),
                &uri,
                headers.iter().copied(),
                SignableBody::Bytes(body),
            )
            .ok()?;
            let (_, signature) = sign(request, &params.into()).ok()?.into_parts();
            Some(signature)
        });
    if expected.as_deref() != Some(signature) {
        // AWS quotes the canonical request it expected, signed headers'
        // values included, so the session token comes back in the body:
        // the gateway must not pass that on.
        let token = header("x-amz-security-token").unwrap_or_default();
        let message = format!(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service documentation for details.\n\n\
             The Canonical String for this request should have been\n'{} {uri}\nhost:{host}\nx-amz-security-token:{token}\n\nhost;x-amz-date;x-amz-security-token'",
            parts.method
        );
        return Err(("InvalidSignatureException", message.into()));
    }
    Ok(())
}

/// `20261206T211500Z` → the time it names.
fn amz_date(s: &str) -> Option<SystemTime> {
    if s.len() != 16 || !s.ends_with('Z') || s.as_bytes()[8] != b'T' {
        return None;
    }
    let rfc3339 = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &s[0..4],
        &s[4..6],
        &s[6..8],
        &s[9..11],
        &s[11..13],
        &s[13..15]
    );
    let t = aws_smithy_types::DateTime::from_str(
        &rfc3339,
        aws_smithy_types::date_time::Format::DateTime,
    )
    .ok()?;
    SystemTime::try_from(t).ok()
}

/// One event-stream message, as Bedrock frames an event.
pub fn event_frame(event_type: &str, payload: &[u8]) -> Bytes {
    let message = Message::new(Bytes::copy_from_slice(payload))
        .add_header(Header::new(
            ":event-type",
            EsValue::String(event_type.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            EsValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            EsValue::String("event".into()),
        ));
    encode(&message)
}

/// An exception message, as Bedrock ends a failing stream.
pub fn exception_frame(exception_type: &str, message: &str) -> Bytes {
    let payload = json!({ "message": message }).to_string();
    let message = Message::new(Bytes::from(payload))
        .add_header(Header::new(
            ":exception-type",
            EsValue::String(exception_type.to_owned().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            EsValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            EsValue::String("exception".into()),
        ));
    encode(&message)
}

fn encode(message: &Message) -> Bytes {
    let mut buf = Vec::new();
    // Writing to a Vec fails only for an oversized header, which these are not.
    let _ = write_message_to(message, &mut buf);
    Bytes::from(buf)
}

/// What the request asked for, from its text.
struct Parsed {
    prompt_chars: u64,
    max_tokens: Option<u64>,
    first_tool: Option<String>,
}

fn parse(op: Op, body: &Value) -> Parsed {
    let mut chars = 0u64;
    let mut count = |v: &Value| {
        fn walk(v: &Value, chars: &mut u64) {
            match v {
                Value::String(s) => *chars += s.chars().count() as u64,
                Value::Array(items) => items.iter().for_each(|i| walk(i, chars)),
                Value::Object(map) => {
                    for (k, v) in map {
                        if matches!(k.as_str(), "text" | "content") || !v.is_string() {
                            walk(v, chars);
                        }
                    }
                }
                _ => {}
            }
        }
        walk(v, &mut chars);
    };
    if let Some(m) = body.get("messages") {
        count(m);
    }
    if let Some(s) = body.get("system") {
        count(s);
    }
    let (max_tokens, first_tool) = match op {
        Op::Converse | Op::ConverseStream => (
            body.pointer("/inferenceConfig/maxTokens")
                .and_then(Value::as_u64),
            body.pointer("/toolConfig/tools/0/toolSpec/name")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
        Op::Invoke | Op::InvokeStream => (
            body.get("max_tokens").and_then(Value::as_u64),
            body.pointer("/tools/0/name")
                .and_then(Value::as_str)
                .map(str::to_owned),
        ),
    };
    Parsed {
        prompt_chars: chars,
        max_tokens,
        first_tool,
    }
}

fn usage_json(a: &Answer, state: &BedrockState) -> Value {
    if let Some(u) = state.usage_json.lock().clone() {
        return u;
    }
    let (read, write) = a
        .cache
        .map_or((0, 0), |c| (c.read, c.write_5m.saturating_add(c.write_1h)));
    let input = a.prompt_tokens.saturating_sub(read).saturating_sub(write);
    let mut u = json!({
        "inputTokens": input,
        "outputTokens": a.completion_tokens,
        "totalTokens": a.prompt_tokens.saturating_add(a.completion_tokens),
    });
    if a.cache.is_some() {
        u["cacheReadInputTokens"] = json!(read);
        u["cacheWriteInputTokens"] = json!(write);
    }
    u
}

/// Answers one Bedrock request (already recorded by the caller).
pub(crate) async fn handle(
    shared: &Shared,
    parts: &http::request::Parts,
    body: &[u8],
    (model, op): (String, Op),
    in_flight: InFlight,
) -> Response<MockBody> {
    let state = &shared.bedrock;
    let credentials = state.credentials.lock().clone();
    if let Some(credentials) = credentials
        && let Err((error_type, message)) = verify(&credentials, parts, &model, op, body)
    {
        state.rejected_signatures.fetch_add(1, Ordering::SeqCst);
        return aws_error(StatusCode::FORBIDDEN, error_type, &message);
    }
    let mut settings: Settings = shared.snapshot();
    let directives = Directives::parse(body);
    directives.apply_to(&mut settings);
    if !settings.latency.is_zero() {
        tokio::time::sleep(settings.latency).await;
    }
    if let Some(status) = directives.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return aws_error(
            status,
            "InternalServerException",
            "mock provider: injected failure (`[[mock:status]]`)",
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return aws_error(
            StatusCode::BAD_REQUEST,
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
        );
    };
    if op == Op::Invoke
        && let Some(response) = embedding(&model, &request)
    {
        return response;
    }
    if matches!(op, Op::Invoke | Op::InvokeStream) {
        if request.get("anthropic_version").and_then(Value::as_str) != Some("bedrock-2023-05-31") {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "anthropic_version: bedrock-2023-05-31 is required",
            );
        }
        if request.get("model").is_some() {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "#: extraneous key [model] is not permitted",
            );
        }
        if request.get("max_tokens").and_then(Value::as_u64).is_none() {
            return aws_error(
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "#: required key [max_tokens] not found",
            );
        }
    }
    let parsed = parse(op, &request);
    let configured = u64::from(settings.completion_tokens);
    let cap = if directives.ignore_cap {
        None
    } else {
        parsed.max_tokens
    };
    let tokens = cap.map_or(configured, |m| m.min(configured));
    let content = &settings.content
        [..(tokens as usize * crate::state::WORD.len()).min(settings.content.len())];
    let prompt_tokens = (parsed.prompt_chars / 4).max(1);
    let (prompt_tokens, completion_tokens) = settings.usage.map_or((prompt_tokens, tokens), |u| {
        (u.prompt_tokens, u.completion_tokens)
    });
    let answer = Answer {
        id: shared.next_id(),
        created: 0,
        model: &model,
        content,
        tokens,
        truncated: tokens < configured,
        prompt_tokens,
        completion_tokens,
        cache: settings.cache,
    };
    let tool = parsed.first_tool.filter(|_| {
        body.windows(b"[[mock:tool_use]]".len())
            .any(|w| w == b"[[mock:tool_use]]")
    });
    let cut = directives.cut.map(u64::from);
    match op {
        Op::Converse => {
            let mut content = vec![json!({ "text": String::from_utf8_lossy(answer.content) })];
            if let Some(name) = &tool {
                content.push(json!({ "toolUse": { "toolUseId": "tooluse_mock_1", "name": name, "input": { "city": "Paris" } } }));
            }
            let out = json!({
                "output": { "message": { "role": "assistant", "content": content } },
                "stopReason": stop_reason(&answer, tool.is_some()),
                "usage": usage_json(&answer, state),
                "metrics": { "latencyMs": 1 },
            });
            json_response(Bytes::from(out.to_string()), in_flight)
        }
        Op::Invoke => {
            let mut body = wire::anthropic_message(&answer);
            if let Some(u) = state.usage_json.lock().clone()
                && let Ok(mut v) = serde_json::from_slice::<Value>(&body)
            {
                v["usage"] = u;
                body = Bytes::from(v.to_string());
            }
            json_response(body, in_flight)
        }
        Op::ConverseStream => {
            let mut frames = converse_frames(&answer, tool.as_deref(), state, cut);
            let fault = state.fault.lock().clone();
            apply_fault(&mut frames, &fault, &answer);
            stream_response(frames, &settings, cut.is_some(), in_flight)
        }
        Op::InvokeStream => {
            let events = wire::anthropic_stream(&answer, cut);
            let mut frames: Vec<Bytes> = events
                .iter()
                .filter_map(|sse| {
                    let text = std::str::from_utf8(sse).ok()?;
                    let data = text.lines().find_map(|l| l.strip_prefix("data: "))?;
                    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                    Some(event_frame(
                        "chunk",
                        json!({ "bytes": b64 }).to_string().as_bytes(),
                    ))
                })
                .collect();
            let fault = state.fault.lock().clone();
            apply_fault(&mut frames, &fault, &answer);
            stream_response(frames, &settings, cut.is_some(), in_flight)
        }
    }
}

/// Titan (`inputText`) and Cohere (`texts`) embeddings: 8 dimensions,
/// a token per 4 characters, counted in Bedrock's header too.
fn embedding(model: &str, request: &Value) -> Option<Response<MockBody>> {
    let vector = |text: &str| -> Vec<f64> {
        (0..8)
            .map(|i| ((text.len() + i) % 7) as f64 / 7.0)
            .collect()
    };
    let tokens = |text: &str| (text.chars().count() as u64 / 4).max(1);
    let (body, count) = if model.starts_with("amazon.titan-embed") {
        let text = request.get("inputText")?.as_str()?;
        (
            json!({ "embedding": vector(text), "inputTextTokenCount": tokens(text) }),
            tokens(text),
        )
    } else if model.starts_with("cohere.embed") {
        let texts: Vec<&str> = request
            .get("texts")?
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        (
            json!({ "embeddings": texts.iter().map(|t| vector(t)).collect::<Vec<_>>(),
                    "id": "mock-embed", "response_type": "embeddings_floats", "texts": texts }),
            texts.iter().map(|t| tokens(t)).sum(),
        )
    } else {
        return None;
    };
    let mut response = Response::new(MockBody::full(Bytes::from(body.to_string()), None));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-amzn-bedrock-input-token-count", HeaderValue::from(count));
    Some(response)
}

fn stop_reason(a: &Answer, tool: bool) -> &'static str {
    if tool {
        "tool_use"
    } else if a.truncated {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// messageStart, one text delta per token (or `cut` of them), a tool call
/// if asked, messageStop, metadata with the usage.
fn converse_frames(
    a: &Answer,
    tool: Option<&str>,
    state: &BedrockState,
    cut: Option<u64>,
) -> Vec<Bytes> {
    let tokens = cut.map_or(a.tokens, |c| c.min(a.tokens));
    let mut frames = vec![event_frame("messageStart", br#"{"role":"assistant"}"#)];
    let delta = event_frame(
        "contentBlockDelta",
        br#"{"contentBlockIndex":0,"delta":{"text":"word "}}"#,
    );
    frames.extend(std::iter::repeat_n(delta, tokens as usize));
    if cut.is_some() {
        return frames;
    }
    frames.push(event_frame(
        "contentBlockStop",
        br#"{"contentBlockIndex":0}"#,
    ));
    if let Some(name) = tool {
        let start = json!({ "contentBlockIndex": 1, "start": { "toolUse": { "toolUseId": "tooluse_mock_1", "name": name } } });
        frames.push(event_frame(
            "contentBlockStart",
            start.to_string().as_bytes(),
        ));
        for part in [r#"{"city":"#, r#""Paris"}"#] {
            let delta =
                json!({ "contentBlockIndex": 1, "delta": { "toolUse": { "input": part } } });
            frames.push(event_frame(
                "contentBlockDelta",
                delta.to_string().as_bytes(),
            ));
        }
        frames.push(event_frame(
            "contentBlockStop",
            br#"{"contentBlockIndex":1}"#,
        ));
    }
    let stop = json!({ "stopReason": stop_reason(a, tool.is_some()) });
    frames.push(event_frame("messageStop", stop.to_string().as_bytes()));
    let metadata = json!({ "usage": usage_json(a, state), "metrics": { "latencyMs": 1 } });
    frames.push(event_frame("metadata", metadata.to_string().as_bytes()));
    frames
}

fn apply_fault(frames: &mut Vec<Bytes>, fault: &BedrockFault, a: &Answer) {
    match fault {
        BedrockFault::None => {}
        BedrockFault::CorruptCrc => {
            if let Some(frame) = frames.get_mut(1) {
                let mut bytes = frame.to_vec();
                // The last byte belongs to the message CRC.
                if let Some(last) = bytes.last_mut() {
                    *last ^= 0xFF;
                }
                *frame = Bytes::from(bytes);
            }
        }
        BedrockFault::ExceptionAfter(n) => {
            let keep = 1 + (*n as usize).min(a.tokens as usize);
            frames.truncate(keep);
            frames.push(exception_frame(
                "throttlingException",
                "Too many requests, please wait before trying again.",
            ));
        }
    }
}

fn json_response(body: Bytes, in_flight: InFlight) -> Response<MockBody> {
    let mut response = Response::new(MockBody::full(body, Some(in_flight)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn stream_response(
    frames: Vec<Bytes>,
    settings: &Settings,
    cut: bool,
    in_flight: InFlight,
) -> Response<MockBody> {
    let mut response = Response::new(MockBody::events(
        frames,
        settings.chunk_delay,
        cut,
        Some(in_flight),
    ));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.amazon.eventstream"),
    );
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// CRC-32 (IEEE 802.3), bit by bit: an implementation independent of
    /// the one that wrote the frame.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// The frame the AWS event-stream spec defines, built by hand: prelude
    /// (total length, headers length, prelude CRC), headers (name length,
    /// name, type 7 = string, value length, value), payload, message CRC.
    fn known_good(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::new();
        for (name, value) in headers {
            h.push(name.len() as u8);
            h.extend_from_slice(name.as_bytes());
            h.push(7);
            h.extend_from_slice(&(value.len() as u16).to_be_bytes());
            h.extend_from_slice(value.as_bytes());
        }
        let total = 12 + h.len() + payload.len() + 4;
        let mut out = Vec::new();
        out.extend_from_slice(&(total as u32).to_be_bytes());
        out.extend_from_slice(&(h.len() as u32).to_be_bytes());
        let prelude_crc = crc32(&out);
        out.extend_from_slice(&prelude_crc.to_be_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(payload);
        let message_crc = crc32(&out);
        out.extend_from_slice(&message_crc.to_be_bytes());
        out
    }

    #[test]
    fn frames_match_the_spec_byte_for_byte() {
        let payload = br#"{"role":"assistant"}"#;
        let frame = event_frame("messageStart", payload);
        let expected = known_good(
            &[
                (":event-type", "messageStart"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            payload,
        );
        assert_eq!(&frame[..], &expected[..]);
        // A published constant: CRC-32 of "123456789" is 0xCBF43926.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        let exception = exception_frame("throttlingException", "slow");
        let expected = known_good(
            &[
                (":exception-type", "throttlingException"),
                (":content-type", "application/json"),
                (":message-type", "exception"),
            ],
            br#"{"message":"slow"}"#,
        );
        assert_eq!(&exception[..], &expected[..]);
    }

    #[test]
    fn model_ids_route_decoded() {
        assert_eq!(
            route("/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"),
            Some((
                "anthropic.claude-3-5-sonnet-20240620-v1:0".to_owned(),
                Op::Converse
            ))
        );
        assert_eq!(route("/model/x/unknown"), None);
        assert_eq!(sdk_encode("arn:aws:b/c"), "arn%3Aaws%3Ab%2Fc");
        assert!(amz_date("20261206T211500Z").is_some());
        assert!(amz_date("2026-12-06").is_none());
    }
}
