//! One OpenTelemetry span per `/v1` request, with the GenAI semantic
//! conventions and tollgate's own ids, and the W3C `traceparent` that ties
//! it to the client's trace and to the provider's.
//!
//! Only built when `telemetry.otlp_endpoint` is set: without it the request
//! path holds `None` and does no span work at all. The span is assembled in
//! one go when the request's books are closed (no live span object is
//! carried through the request), then handed to [`super::otlp::Exporter`].

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};

use super::otlp::{Exporter, SpanRecord};
use crate::types::NanoUsd;

const TRACEPARENT: &str = "traceparent";

tokio::task_local! {
    /// The `traceparent` for the upstream call of the request this task
    /// serves. A task-local rather than a parameter so that every provider
    /// that sends through `providers::upstream::send` forwards it, the
    /// provider kinds of tomorrow included, without each one plumbing it.
    static UPSTREAM_TRACEPARENT: HeaderValue;
}

/// Runs `fut` (the provider call) with `traceparent` set for it.
pub(crate) async fn with_upstream_traceparent<F: Future>(
    traceparent: Option<HeaderValue>,
    fut: F,
) -> F::Output {
    match traceparent {
        Some(v) => UPSTREAM_TRACEPARENT.scope(v, fut).await,
        None => fut.await,
    }
}

/// `request` with the request's `traceparent`, when telemetry is on.
pub(crate) fn add_traceparent(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match UPSTREAM_TRACEPARENT.try_with(HeaderValue::clone) {
        Ok(v) => request.header(TRACEPARENT, v),
        Err(_) => request,
    }
}

/// A W3C `traceparent` the client sent, if it is well-formed
/// (<https://www.w3.org/TR/trace-context/#traceparent-header>). A malformed
/// one starts a new trace, as the spec asks; it never fails the request.
fn parse_traceparent(headers: &HeaderMap) -> Option<(TraceId, [u8; 8], u8)> {
    let value = headers.get(TRACEPARENT)?.to_str().ok()?.trim();
    let mut parts = value.splitn(5, '-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let rest = parts.next();
    let lower_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !lower_hex(version, 2) || version == "ff" || !lower_hex(trace, 32) || !lower_hex(parent, 16)
    {
        return None;
    }
    // Version 00 has exactly four fields; later versions may append more.
    if (version == "00" && rest.is_some()) || flags.len() < 2 || !lower_hex(&flags[..2], 2) {
        return None;
    }
    if version == "00" && flags.len() != 2 {
        return None;
    }
    let mut trace_id = [0u8; 16];
    let mut parent_id = [0u8; 8];
    hex::decode_to_slice(trace, &mut trace_id).ok()?;
    hex::decode_to_slice(parent, &mut parent_id).ok()?;
    let flags = u8::from_str_radix(&flags[..2], 16).ok()?;
    // All-zero ids are invalid (W3C trace context).
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some((TraceId(trace_id), parent_id, flags))
}

/// A trace id, shown as 32 lowercase hex digits (as in `traceparent` and
/// in the request's log line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TraceId(pub [u8; 16]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut hex = [0u8; 32];
        lower_hex(&self.0, &mut hex);
        f.write_str(std::str::from_utf8(&hex).unwrap_or_default())
    }
}

/// `bytes` as lowercase hex into `out` (twice as long). By hand: `hex`'s
/// generic encoder is compiled with tollgate's own (debug) settings and
/// cost several thousand instructions a request there.
fn lower_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// Bit 0 of the W3C trace flags.
const SAMPLED: u8 = 0x01;

/// The ids of one request's span, fixed when it arrives so that the
/// provider call can name the span as its parent.
pub(crate) struct RequestTrace {
    exporter: Arc<Exporter>,
    trace_id: TraceId,
    span_id: [u8; 8],
    /// The client's span, when it sent a `traceparent`.
    parent: Option<[u8; 8]>,
    /// W3C trace flags, the client's when it sent them.
    flags: u8,
    start: SystemTime,
    /// `gen_ai.operation.name`: `chat`, `text_completion`, `embeddings`.
    operation: &'static str,
}

/// What the span says about the request, gathered when it ends.
pub(crate) struct SpanFacts<'a> {
    pub request_id: &'a str,
    pub key_id: Option<&'a str>,
    pub team: Option<&'a str>,
    /// The model the client asked for (empty before the body was read).
    pub request_model: &'a str,
    /// The provider's own model name of the target that answered.
    pub response_model: &'a str,
    pub provider: &'a str,
    /// `gen_ai.system` of that provider's kind.
    pub system: Option<&'static str>,
    pub status: u16,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: NanoUsd,
    /// The error code the client got (`budget_exceeded`, `upstream_error`…).
    pub error_code: Option<&'a str>,
    /// `policy:code` of each shadow policy that would have refused it.
    pub would_reject: &'a [String],
    pub time_to_first_byte: Option<Duration>,
}

impl RequestTrace {
    /// Ids for a request that just arrived: the client's trace continued
    /// when it sent a valid `traceparent`, else a new one.
    pub(crate) fn begin(
        exporter: &Arc<Exporter>,
        headers: &HeaderMap,
        operation: &'static str,
    ) -> Self {
        let (trace_id, parent, flags) = match parse_traceparent(headers) {
            Some((trace, parent, flags)) => (trace, Some(parent), flags),
            None => (random_trace_id(), None, SAMPLED),
        };
        RequestTrace {
            exporter: exporter.clone(),
            trace_id,
            span_id: random_span_id(),
            parent,
            flags,
            start: SystemTime::now(),
            operation,
        }
    }

    pub(crate) fn trace_id(&self) -> TraceId {
        self.trace_id
    }

    /// The `traceparent` sent to the provider: this request's span is the
    /// parent of whatever the provider records. The client's sampling
    /// decision travels on unchanged.
    pub(crate) fn upstream_traceparent(&self) -> Option<HeaderValue> {
        // `00-{trace:32}-{span:16}-{flags:2}`, written in place: a
        // `format!` of the three cost a few thousand instructions a request.
        let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
        lower_hex(&self.trace_id.0, &mut text[3..35]);
        lower_hex(&self.span_id, &mut text[36..52]);
        lower_hex(&[self.flags], &mut text[53..55]);
        HeaderValue::from_bytes(&text).ok()
    }

    /// Queues what the span will say for export (never waits). Only the
    /// facts are copied here; the export thread builds and encodes the
    /// OTLP span from them, off the request path.
    pub(crate) fn end(&self, facts: SpanFacts<'_>) {
        let owned = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        self.exporter.submit(SpanRecord {
            trace_id: self.trace_id.0,
            span_id: self.span_id,
            parent: self.parent,
            flags: self.flags,
            start: self.start,
            end: SystemTime::now(),
            operation: self.operation,
            system: facts.system,
            status: facts.status,
            input_tokens: facts.input_tokens,
            output_tokens: facts.output_tokens,
            cost: facts.cost.0,
            time_to_first_byte: facts.time_to_first_byte,
            request_id: facts.request_id.to_owned(),
            key_id: facts.key_id.map(str::to_owned),
            team: facts.team.map(str::to_owned),
            request_model: owned(facts.request_model),
            response_model: owned(facts.response_model),
            provider: owned(facts.provider),
            error_code: facts.error_code.map(str::to_owned),
            would_reject: facts.would_reject.to_vec(),
        });
    }
}

fn random_trace_id() -> TraceId {
    // Zero is the invalid id; 2^-128 odds, but cheap to rule out.
    TraceId(rand::random::<u128>().max(1).to_be_bytes())
}

fn random_span_id() -> [u8; 8] {
    rand::random::<u64>().max(1).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(value: &str) -> Option<(TraceId, [u8; 8], u8)> {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_str(value).unwrap());
        parse_traceparent(&h)
    }

    #[test]
    fn a_valid_traceparent_is_continued() {
        let (trace, parent, flags) =
            parsed("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(trace.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(parent), "00f067aa0ba902b7");
        assert_eq!(flags, SAMPLED);
        // A later version may carry more fields.
        assert!(parsed("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra").is_some());
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
        ] {
            assert!(parsed(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_upstream_traceparent_names_this_span_in_the_client_trace() {
        let exporter = Exporter::start(&crate::config::TelemetryConfig {
            otlp_endpoint: "http://127.0.0.1:9".into(),
            service_name: "test".into(),
        })
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            TRACEPARENT,
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        let t = RequestTrace::begin(&exporter, &h, "chat");
        assert_eq!(t.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let sent = t.upstream_traceparent().unwrap();
        let expected = format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-00",
            hex::encode(t.span_id)
        );
        assert_eq!(sent.to_str().unwrap(), expected);
        assert_ne!(t.span_id, [0; 8]);
    }
}
