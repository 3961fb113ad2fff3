//! The HTTP plumbing every networked provider shares: sending one POST under
//! a deadline, sorting the answer into success / `Rejected` / `Failed` /
//! `Timeout`, reading bodies and framing SSE streams under an idle timeout,
//! and keeping the provider key out of every message.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use http::HeaderValue;
use tokio::time::Instant;

use super::ProviderError;
use super::sse::{RawEvent, SseParser};
use crate::types::Secret;

/// How much of a 5xx body goes into the `Failed` message: enough to see
/// what the provider said, not enough to flood a log line.
const ERROR_BODY_SNIPPET: usize = 300;

const REDACTED: &str = "*****";

/// Who is calling and what must never be echoed: carried into every error.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub provider: String,
    key: Option<Secret<String>>,
}

impl Ctx {
    pub fn new(provider: &str, key: Option<Secret<String>>) -> Self {
        // An empty key would "redact" every position of every message.
        let key = key.filter(|k| !k.expose().is_empty());
        Ctx {
            provider: provider.to_owned(),
            key,
        }
    }

    pub fn key(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.expose().as_str())
    }

    /// `text` with every occurrence of the provider key blanked out. Upstream
    /// error bodies and connection errors are not ours: some echo headers.
    pub fn redact(&self, text: &str) -> String {
        match self.key() {
            Some(key) if text.contains(key) => text.replace(key, REDACTED),
            _ => text.to_owned(),
        }
    }

    fn redact_bytes(&self, body: Bytes) -> Bytes {
        let Some(key) = self.key().map(str::as_bytes) else {
            return body;
        };
        if !super::sse::contains(&body, key) {
            return body;
        }
        let mut out = Vec::with_capacity(body.len());
        let mut rest = &body[..];
        while let Some(pos) = rest.windows(key.len()).position(|w| w == key) {
            out.extend_from_slice(&rest[..pos]);
            out.extend_from_slice(REDACTED.as_bytes());
            rest = &rest[pos + key.len()..];
        }
        out.extend_from_slice(rest);
        Bytes::from(out)
    }

    pub fn failed(&self, message: impl AsRef<str>) -> ProviderError {
        ProviderError::Failed {
            provider: self.provider.clone(),
            message: self.redact(message.as_ref()),
        }
    }

    /// See [`ProviderError::Lost`].
    pub fn lost(&self, message: impl AsRef<str>) -> ProviderError {
        ProviderError::Lost {
            provider: self.provider.clone(),
            message: self.redact(message.as_ref()),
        }
    }

    pub fn timeout(&self, timeout: Duration) -> ProviderError {
        ProviderError::Timeout {
            provider: self.provider.clone(),
            timeout,
        }
    }

    /// A 400 that never reached the provider, worded like one from it so the
    /// client sees an ordinary OpenAI error.
    pub fn bad_request(&self, message: &str) -> ProviderError {
        let body = serde_json::json!({
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "code": "invalid_request",
                "param": null,
            }
        });
        ProviderError::Rejected {
            provider: self.provider.clone(),
            status: http::StatusCode::BAD_REQUEST,
            body: Bytes::from(body.to_string()),
            content_type: Some(HeaderValue::from_static("application/json")),
        }
    }

    fn reqwest_failed(&self, what: &str, err: &reqwest::Error) -> ProviderError {
        self.failed(format!("{what}: {}", error_chain(err)))
    }

    /// A failed send: `Failed` when no connection was made (nothing reached
    /// the provider), else `Lost`.
    fn send_failed(&self, err: &reqwest::Error) -> ProviderError {
        let message = format!("request failed: {}", error_chain(err));
        if err.is_connect() {
            self.failed(message)
        } else {
            self.lost(message)
        }
    }
}

/// `err` and every cause under it, `: `-joined, the way a person needs to
/// see "connection refused" rather than just "error sending request".
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Sends `request` and waits for the response head until `deadline`. A 2xx
/// comes back as is; 4xx become `Rejected` and anything else `Failed`, with
/// their bodies read before `deadline` too.
pub(crate) async fn send(
    ctx: &Ctx,
    request: reqwest::RequestBuilder,
    deadline: Instant,
    timeout: Duration,
) -> Result<reqwest::Response, ProviderError> {
    let request = crate::telemetry::spans::add_traceparent(request);
    let response = match tokio::time::timeout_at(deadline, request.send()).await {
        Err(_) => return Err(ctx.timeout(timeout)),
        Ok(Err(e)) => return Err(ctx.send_failed(&e)),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let content_type = response.headers().get(http::header::CONTENT_TYPE).cloned();
    let retry_after = super::retry_after::parse(response.headers(), chrono::Utc::now());
    let body = read_body(ctx, response, deadline, timeout).await?;
    if matches!(
        status,
        http::StatusCode::UNAUTHORIZED | http::StatusCode::FORBIDDEN
    ) {
        // About the gateway's own key, not the client's request: never
        // passed through (the client would take it for its virtual key).
        return Err(ProviderError::Credentials {
            provider: ctx.provider.clone(),
            status,
            code: plain_error_code(&body),
        });
    }
    let snippet = || {
        let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_SNIPPET)]);
        ctx.redact(text.trim())
    };
    // Busy or timed out before it worked on the request: nothing was
    // generated, and the same request may well succeed a moment later.
    if matches!(status.as_u16(), 408 | 429) {
        return Err(ProviderError::Refused {
            provider: ctx.provider.clone(),
            status,
            retry_after,
            message: snippet(),
        });
    }
    if status.is_client_error() {
        return Err(ProviderError::Rejected {
            provider: ctx.provider.clone(),
            status,
            body: ctx.redact_bytes(body),
            content_type,
        });
    }
    // 502 and 504 come from a proxy or load balancer in front of the model
    // server, typically after the model worked on the request for a while.
    // 500, 503 and 529 are the provider refusing or failing it, unbilled.
    if matches!(status.as_u16(), 502 | 504) {
        Err(ctx.lost(format!("answered `{status}`: {}", snippet())))
    } else {
        Err(ProviderError::Refused {
            provider: ctx.provider.clone(),
            status,
            retry_after,
            message: snippet(),
        })
    }
}

/// The provider's machine-readable error code (OpenAI `error.code`, else
/// `error.type`, Anthropic's `error.type`) when it is a plain identifier: it
/// tells an operator what is wrong without any of the message, which may
/// hold a masked fragment of the key.
fn plain_error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = v.get("error")?;
    let plain = |c: &&str| {
        !c.is_empty()
            && c.len() <= 64
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    };
    ["code", "type"]
        .iter()
        .filter_map(|field| error.get(field)?.as_str())
        .find(plain)
        .map(str::to_owned)
}

/// `response` to a streaming request, checked to be one: a server that
/// answers `stream: true` with a JSON document (an error with a 200, or a
/// server that does not stream) would otherwise look like an empty stream.
pub(crate) async fn expect_event_stream(
    ctx: &Ctx,
    response: reqwest::Response,
    deadline: Instant,
    timeout: Duration,
) -> Result<reqwest::Response, ProviderError> {
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !is_json {
        return Ok(response);
    }
    let body = read_body(ctx, response, deadline, timeout).await?;
    let snippet = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_SNIPPET)]).into_owned();
    Err(ctx.lost(format!(
        "answered a streaming request with a JSON body instead of server-sent events: {}",
        snippet.trim()
    )))
}

/// The whole body, before `deadline`.
pub(crate) async fn read_body(
    ctx: &Ctx,
    response: reqwest::Response,
    deadline: Instant,
    timeout: Duration,
) -> Result<Bytes, ProviderError> {
    match tokio::time::timeout_at(deadline, response.bytes()).await {
        Err(_) => Err(ctx.timeout(timeout)),
        Ok(Err(e)) => Err(ctx.lost(format!(
            "reading the response body failed: {}",
            error_chain(&e)
        ))),
        Ok(Ok(body)) => Ok(body),
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

struct Framing {
    body: ByteStream,
    parser: SseParser,
    ready: VecDeque<RawEvent>,
    scratch: Vec<RawEvent>,
    idle: Duration,
    ended: bool,
    ctx: Ctx,
}

/// The SSE events of a 2xx streaming `response`, each yielded as soon as its
/// bytes are in. Waiting longer than `idle` for the next bytes ends the
/// stream with `Timeout`; a broken connection ends it with `Failed`.
pub(crate) fn sse_events(
    ctx: Ctx,
    response: reqwest::Response,
    idle: Duration,
) -> impl Stream<Item = Result<RawEvent, ProviderError>> + Send + 'static {
    let state = Framing {
        body: Box::pin(response.bytes_stream()),
        parser: SseParser::new(),
        ready: VecDeque::new(),
        scratch: Vec::new(),
        idle,
        ended: false,
        ctx,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(event) = st.ready.pop_front() {
                return Some((Ok(event), st));
            }
            if st.ended {
                return None;
            }
            let parsed = match tokio::time::timeout(st.idle, st.body.next()).await {
                Err(_) => {
                    st.ended = true;
                    return Some((Err(st.ctx.timeout(st.idle)), st));
                }
                Ok(Some(Err(e))) => {
                    st.ended = true;
                    let err = st.ctx.reqwest_failed("the stream broke off", &e);
                    return Some((Err(err), st));
                }
                Ok(Some(Ok(bytes))) => st.parser.feed(&bytes, &mut st.scratch),
                Ok(None) => {
                    st.ended = true;
                    st.parser.finish(&mut st.scratch)
                }
            };
            st.ready.extend(st.scratch.drain(..));
            if let Err(e) = parsed {
                st.ended = true;
                st.ready.clear();
                let err = st.ctx.failed(format!("the stream is unusable: {e}"));
                return Some((Err(err), st));
            }
        }
    })
}

/// How long the rest of a finished stream's body may take to arrive before
/// the connection is given up instead of going back to the pool.
const DRAIN: Duration = Duration::from_secs(2);

/// Ends `events` right after the item `last` picks (the `[DONE]`), without
/// waiting for the provider to close the body. The rest of the body (usually
/// just the end of the chunked encoding) is read in the background so the
/// connection goes back to the pool instead of being torn down.
pub(crate) fn end_after<S, T>(
    events: S,
    last: fn(&T) -> bool,
) -> impl Stream<Item = T> + Send + 'static
where
    S: Stream<Item = T> + Send + 'static,
    T: Send + 'static,
{
    futures_util::stream::unfold(Some(Box::pin(events)), move |state| async move {
        let mut events = state?;
        let item = events.next().await?;
        if last(&item) {
            tokio::spawn(async move {
                let _ =
                    tokio::time::timeout(DRAIN, async { while events.next().await.is_some() {} })
                        .await;
            });
            return Some((item, None));
        }
        Some((item, Some(events)))
    })
}

/// `segment` percent-encoded for use as one URL path segment.
pub(crate) fn path_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `x-request-id` as a header value; ids we cannot send are left out
/// rather than failing the call.
pub(crate) fn request_id_header(id: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(id).ok()
}

/// A header value holding the key, marked sensitive so it never shows in
/// `Debug` output of the request.
pub(crate) fn secret_header(value: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(value).ok()?;
    v.set_sensitive(true);
    Some(v)
}
