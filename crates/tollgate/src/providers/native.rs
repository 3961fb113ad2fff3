//! Native passthrough: an ingress API (`/v1/messages`, its `count_tokens`,
//! `/v1/responses`) served by a provider that speaks it itself, so the
//! client's body goes out untranslated and the answer — JSON or every SSE
//! event — comes back unchanged. This module owns the call shape, reading
//! usage out of the native answers (complete and streamed), and framing a
//! native stream; each provider owns its URL and credentials.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use super::upstream::{self, Ctx};
use super::{EventStream, SseEvent, Usage};

/// An API a provider may serve in its own wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeApi {
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI `POST /v1/responses`.
    Responses,
}

impl NativeApi {
    /// The path below a provider's `base_url`.
    pub fn path(self) -> &'static str {
        match self {
            NativeApi::Messages => "/messages",
            NativeApi::CountTokens => "/messages/count_tokens",
            NativeApi::Responses => "/responses",
        }
    }
}

/// One native call to one provider.
#[derive(Debug, Clone)]
pub struct NativeCall {
    pub api: NativeApi,
    /// The client's body as it came, except `model` (the provider's own
    /// name) and the output cap the reservation requires.
    pub body: Map<String, Value>,
    /// Client headers the provider must see (`anthropic-version`,
    /// `anthropic-beta`); never a credential.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub stream: bool,
    pub timeout: Duration,
    /// Sent upstream as `x-request-id` for correlation.
    pub request_id: String,
}

/// Usage of a complete Messages answer, `None` when it has none the budget
/// can trust (absent, or counts that are not non-negative integers: billing
/// those as 0 would let a provider's odd answer through for free; the
/// caller then counts the answer's text instead).
pub fn messages_usage(body: &[u8]) -> Option<Usage> {
    let v: UsageOnly = serde_json::from_slice(body).ok()?;
    trusted_anthropic(v.usage.as_ref()?)
}

/// The `usage` of an answer, the rest skipped unread (no tree is built).
#[derive(serde::Deserialize)]
struct UsageOnly {
    #[serde(default)]
    usage: Option<Value>,
}

fn trusted_anthropic(usage: &Value) -> Option<Usage> {
    let ok = |k: &str| usage.get(k).is_some_and(Value::is_u64);
    (ok("input_tokens") && ok("output_tokens"))
        .then(|| super::translate::usage_from_anthropic(usage))
}

/// Usage of a Responses API `response` object, `None` when untrustworthy
/// (see [`messages_usage`]). `output_tokens` already includes the hidden
/// reasoning tokens (`output_tokens_details.reasoning_tokens`); the larger
/// of the two is billed, so a provider reporting them apart is not billed
/// short.
pub fn responses_usage(response: &Value) -> Option<Usage> {
    let usage = response.get("usage")?;
    let n = |p: &str| usage.pointer(p).and_then(Value::as_u64);
    let input = n("/input_tokens")?;
    let output = n("/output_tokens")?;
    let reasoning = n("/output_tokens_details/reasoning_tokens").unwrap_or(0);
    Some(Usage {
        prompt_tokens: input,
        completion_tokens: output.max(reasoning),
        cached_tokens: n("/input_tokens_details/cached_tokens").unwrap_or(0),
        ..Usage::default()
    })
}

/// [`responses_usage`] of a complete answer's body. Read through a typed
/// view of `usage` (its counts as small `Value`s, so a count that is not a
/// non-negative integer reads as absent exactly as there): no tree of the
/// answer or of `usage` is built, nor a wrapper object around it.
pub fn responses_body_usage(body: &[u8]) -> Option<Usage> {
    let v: ResponsesUsageOnly = serde_json::from_slice(body).ok()?;
    let u = v.usage?;
    let n = |v: &Option<Value>| v.as_ref().and_then(Value::as_u64);
    let detail =
        |v: &Option<Value>, k: &str| v.as_ref().and_then(|d| d.get(k)).and_then(Value::as_u64);
    let input = n(&u.input_tokens)?;
    let output = n(&u.output_tokens)?;
    let reasoning = detail(&u.output_tokens_details, "reasoning_tokens").unwrap_or(0);
    Some(Usage {
        prompt_tokens: input,
        completion_tokens: output.max(reasoning),
        cached_tokens: detail(&u.input_tokens_details, "cached_tokens").unwrap_or(0),
        ..Usage::default()
    })
}

#[derive(serde::Deserialize)]
struct ResponsesUsageOnly {
    #[serde(default)]
    usage: Option<ResponsesWireUsage>,
}

#[derive(serde::Deserialize)]
struct ResponsesWireUsage {
    #[serde(default)]
    input_tokens: Option<Value>,
    #[serde(default)]
    output_tokens: Option<Value>,
    #[serde(default)]
    input_tokens_details: Option<Value>,
    #[serde(default)]
    output_tokens_details: Option<Value>,
}

/// Whether a native stream ends with this event: Anthropic's
/// `message_stop`, a Responses terminal event, or an `error` event.
pub fn is_terminal(api: NativeApi, event: Option<&str>, data: &[u8]) -> bool {
    let name = match event {
        Some(e) => e.to_owned(),
        None => match serde_json::from_slice::<TypeOnly>(data) {
            Ok(t) => t.kind,
            Err(_) => return false,
        },
    };
    match api {
        NativeApi::Messages | NativeApi::CountTokens => name == "message_stop",
        NativeApi::Responses => matches!(
            name.as_str(),
            "response.completed" | "response.incomplete" | "response.failed"
        ),
    }
}

#[derive(serde::Deserialize)]
struct TypeOnly {
    #[serde(rename = "type", default)]
    kind: String,
}

/// A provider's native SSE stream as [`SseEvent::Native`] events, ended by
/// [`SseEvent::Done`] right after its terminal event (see [`is_terminal`]);
/// a stream that closes before it is incomplete, as for chat.
pub(crate) fn stream(
    ctx: Ctx,
    api: NativeApi,
    response: reqwest::Response,
    idle: Duration,
) -> EventStream {
    let events = upstream::sse_events(ctx, response, idle).flat_map(move |item| {
        let out = match item {
            Ok(raw) => {
                let last = is_terminal(api, raw.event.as_deref(), &raw.data);
                let event = Ok(SseEvent::Native {
                    event: raw.event,
                    data: raw.data,
                });
                if last {
                    vec![event, Ok(SseEvent::Done)]
                } else {
                    vec![event]
                }
            }
            Err(e) => vec![Err(e)],
        };
        futures_util::stream::iter(out)
    });
    let events = upstream::end_after(events, |item| matches!(item, Ok(SseEvent::Done)));
    Box::pin(events)
}

/// Sends a native call's request (every header already on it) and reads
/// the answer: each SSE event as it comes for a stream, else the whole body
/// with the usage `usage` reads from it. Shared by every provider that
/// serves an API natively.
pub(crate) async fn exchange(
    ctx: &Ctx,
    request: reqwest::RequestBuilder,
    api: NativeApi,
    stream: bool,
    timeout: Duration,
    usage: fn(&[u8]) -> Option<Usage>,
) -> Result<super::UpstreamResponse, super::ProviderError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let response = upstream::send(ctx, request, deadline, timeout).await?;
    if stream {
        let response = upstream::expect_event_stream(ctx, response, deadline, timeout).await?;
        return Ok(super::UpstreamResponse::Stream(self::stream(
            ctx.clone(),
            api,
            response,
            timeout,
        )));
    }
    let body = upstream::read_body(ctx, response, deadline, timeout).await?;
    let usage = usage(&body);
    Ok(super::UpstreamResponse::Complete { body, usage })
}

/// One native event framed for the client as it came.
pub fn frame(event: Option<&str>, data: &[u8]) -> Bytes {
    let name = event.map_or(0, str::len);
    let mut out = BytesMut::with_capacity(name + data.len() + 16);
    if let Some(event) = event {
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_slice(b"\n");
    }
    // A `data` payload with line breaks goes out as several `data:` lines,
    // which the client joins back with `\n`.
    for (i, line) in data.split(|b| *b == b'\n').enumerate() {
        if i > 0 {
            out.put_slice(b"\n");
        }
        out.put_slice(b"data: ");
        out.put_slice(line);
    }
    out.put_slice(b"\n\n");
    out.freeze()
}

/// What a native stream has said about its usage and its text so far, so
/// that it is billed even when it is cut short.
#[derive(Debug, Default)]
pub struct StreamMeter {
    /// Anthropic `message_start` usage (input, cache; output so far).
    started: Option<Usage>,
    /// The final usage: Anthropic's after `message_delta`, or a Responses
    /// terminal event's.
    pub finished: Option<Usage>,
    /// Generated text, tool arguments and thinking seen in deltas.
    pub text: String,
}

impl StreamMeter {
    /// Reads one event. Nothing here changes what the client is sent.
    pub fn observe(&mut self, api: NativeApi, data: &[u8]) {
        // A typed view: the event's big parts (a whole `response` object's
        // output, say) are skipped without building a tree of them.
        let Ok(v) = serde_json::from_slice::<EventView<'_>>(data) else {
            return;
        };
        let kind: &str = &v.kind;
        match (api, kind) {
            (NativeApi::Messages, "message_start") => {
                self.started = v
                    .message
                    .and_then(|m| m.usage)
                    .filter(|u| u.get("input_tokens").is_some_and(Value::is_u64))
                    .map(|u| super::translate::usage_from_anthropic(&u));
            }
            (NativeApi::Messages, "message_delta") => {
                // Cumulative counts; fields it leaves out keep the start's.
                let (Some(start), Some(delta)) = (self.started, v.usage.as_ref()) else {
                    return;
                };
                let Some(output) = delta.get("output_tokens").and_then(Value::as_u64) else {
                    return;
                };
                let mut merged = Map::new();
                let start_json = super::translate::usage_to_anthropic(start);
                if let Value::Object(m) = start_json {
                    merged.extend(m);
                }
                if let Value::Object(d) = delta {
                    for (k, val) in d {
                        if val.is_u64() || val.is_object() {
                            merged.insert(k.clone(), val.clone());
                        }
                    }
                }
                let mut usage = super::translate::usage_from_anthropic(&Value::Object(merged));
                usage.completion_tokens = output;
                self.finished = Some(usage);
            }
            (NativeApi::Messages, "content_block_delta") => {
                if let Some(d) = &v.delta {
                    for key in ["text", "partial_json", "thinking"] {
                        if let Some(t) = d.get(key).and_then(Value::as_str) {
                            self.text.push_str(t);
                        }
                    }
                }
            }
            (
                NativeApi::Responses,
                "response.completed" | "response.incomplete" | "response.failed",
            ) => {
                if let Some(usage) = v.response.and_then(|r| r.usage) {
                    self.finished = responses_usage(&serde_json::json!({ "usage": usage }));
                }
            }
            (NativeApi::Responses, k) if k.ends_with(".delta") => {
                if let Some(Value::String(t)) = &v.delta {
                    self.text.push_str(t);
                }
            }
            _ => {}
        }
    }

    /// The usage to bill: the final one when the stream reported it, else
    /// the start's input (or `input_estimate`) and the larger of the
    /// output reported so far and `text_tokens` of the text seen.
    pub fn usage(&self, input_estimate: impl FnOnce() -> u64, text_tokens: u64) -> Usage {
        if let Some(u) = self.finished {
            return u;
        }
        match self.started {
            Some(start) => Usage {
                completion_tokens: start.completion_tokens.max(text_tokens),
                ..start
            },
            None => Usage {
                prompt_tokens: input_estimate(),
                completion_tokens: text_tokens,
                ..Usage::default()
            },
        }
    }
}

/// The parts of a native stream event the meter reads.
#[derive(serde::Deserialize)]
struct EventView<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: std::borrow::Cow<'a, str>,
    /// Anthropic's is an object, the Responses API's a string; small.
    #[serde(default)]
    delta: Option<Value>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    message: Option<WithUsage>,
    #[serde(default)]
    response: Option<WithUsage>,
}

#[derive(serde::Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_stream_usage_merges_start_and_delta() {
        let mut m = StreamMeter::default();
        let start = json!({"type":"message_start","message":{"usage":{"input_tokens":10,
            "cache_read_input_tokens":100,"cache_creation_input_tokens":50,
            "cache_creation":{"ephemeral_5m_input_tokens":20,"ephemeral_1h_input_tokens":30},"output_tokens":1}}});
        m.observe(NativeApi::Messages, start.to_string().as_bytes());
        m.observe(
            NativeApi::Messages,
            br#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
        );
        assert_eq!(m.text, "hmm");
        // Cut here: the start's input and at least the text seen.
        let cut = m.usage(|| 0, 7);
        assert_eq!((cut.prompt_tokens, cut.completion_tokens), (160, 7));
        m.observe(
            NativeApi::Messages,
            br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}"#,
        );
        let u = m.usage(|| 0, 0);
        assert_eq!(u.prompt_tokens, 160);
        assert_eq!(u.completion_tokens, 42);
        assert_eq!(u.cached_tokens, 100);
        assert_eq!((u.cache_write_tokens, u.cache_write_1h_tokens), (50, 30));
    }

    #[test]
    fn responses_stream_meter_reads_escaped_deltas_and_the_final_usage() {
        let mut m = StreamMeter::default();
        m.observe(
            NativeApi::Responses,
            br#"{"type":"response.output_text.delta","delta":"say \"hi\"\n"}"#,
        );
        m.observe(
            NativeApi::Responses,
            br#"{"type":"response.function_call_arguments.delta","delta":"{\"a\":1}"}"#,
        );
        assert_eq!(m.text, "say \"hi\"\n{\"a\":1}");
        assert_eq!(m.usage(|| 3, 9).completion_tokens, 9);
        m.observe(
            NativeApi::Responses,
            br#"{"type":"response.completed","response":{"output":[{"big":1}],"usage":{"input_tokens":4,"output_tokens":2,"output_tokens_details":{"reasoning_tokens":6}}}}"#,
        );
        let u = m.usage(|| 0, 0);
        assert_eq!((u.prompt_tokens, u.completion_tokens), (4, 6));
    }

    #[test]
    fn hostile_usage_is_not_trusted() {
        assert_eq!(
            messages_usage(br#"{"usage":{"input_tokens":"9","output_tokens":1}}"#),
            None
        );
        assert_eq!(messages_usage(br#"{"usage":null}"#), None);
        assert_eq!(
            responses_usage(&json!({"usage":{"input_tokens":1,"output_tokens":null}})),
            None
        );
        let u = responses_usage(&json!({"usage":{"input_tokens":5,"output_tokens":3,
            "output_tokens_details":{"reasoning_tokens":9},"input_tokens_details":{"cached_tokens":2}}}))
        .unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
            (5, 9, 2)
        );
    }

    #[test]
    fn a_complete_responses_body_is_read_as_the_value_view_reads_it() {
        let body = |u: &str| {
            format!(r#"{{"id":"r","output":[{{"type":"message","content":[]}}],"usage":{u}}}"#)
        };
        for usage in [
            r#"{"input_tokens":5,"output_tokens":3,"output_tokens_details":{"reasoning_tokens":9},"input_tokens_details":{"cached_tokens":2}}"#,
            r#"{"input_tokens":5,"output_tokens":3,"output_tokens_details":{"reasoning_tokens":"9"},"input_tokens_details":7}"#,
            r#"{"input_tokens":"5","output_tokens":3}"#,
            r#"{"input_tokens":5,"output_tokens":-3}"#,
            r#"{"input_tokens":5}"#,
            r#"null"#,
            r#"4"#,
        ] {
            let want = serde_json::from_str::<Value>(&body(usage))
                .ok()
                .and_then(|v| responses_usage(&v));
            assert_eq!(
                responses_body_usage(body(usage).as_bytes()),
                want,
                "{usage}"
            );
        }
        assert_eq!(
            responses_body_usage(body(r#"{"input_tokens":5,"output_tokens":3,"output_tokens_details":{"reasoning_tokens":9}}"#).as_bytes())
                .map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((5, 9))
        );
        assert_eq!(responses_body_usage(b"{\"usage\":"), None);
    }

    #[test]
    fn frames_events_as_they_came() {
        assert_eq!(
            &frame(Some("ping"), br#"{"type":"ping"}"#)[..],
            b"event: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
        assert_eq!(&frame(None, b"a\nb")[..], b"data: a\ndata: b\n\n");
        assert!(is_terminal(NativeApi::Messages, Some("message_stop"), b""));
        assert!(is_terminal(
            NativeApi::Responses,
            None,
            br#"{"type":"response.completed"}"#
        ));
    }
}
