//! One OpenTelemetry span per `/v1` request, with the GenAI semantic
//! conventions and tollgate's own ids, and the W3C `traceparent` that ties
//! it to the client's trace and to the provider's.
//!
//! Only built when `telemetry.otlp_endpoint` is set: without it the request
//! path holds `None` and does no span work at all. The span is assembled in
//! one go when the request's books are closed (no live span object is
//! carried through the request), then handed to [`super::otlp::Exporter`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::trace::SpanData;

use super::otlp::Exporter;
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
fn parse_traceparent(headers: &HeaderMap) -> Option<(TraceId, SpanId, TraceFlags)> {
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
    let trace_id = TraceId::from_hex(trace).ok()?;
    let parent_id = SpanId::from_hex(parent).ok()?;
    let flags = u8::from_str_radix(&flags[..2], 16).ok()?;
    if trace_id == TraceId::INVALID || parent_id == SpanId::INVALID {
        return None;
    }
    Some((trace_id, parent_id, TraceFlags::new(flags)))
}

/// The ids of one request's span, fixed when it arrives so that the
/// provider call can name the span as its parent.
pub(crate) struct RequestTrace {
    exporter: Arc<Exporter>,
    trace_id: TraceId,
    span_id: SpanId,
    /// The client's span, when it sent a `traceparent`.
    parent: Option<SpanId>,
    flags: TraceFlags,
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
            None => (random_trace_id(), None, TraceFlags::SAMPLED),
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
        let text = format!(
            "00-{}-{}-{:02x}",
            self.trace_id,
            self.span_id,
            self.flags.to_u8()
        );
        HeaderValue::from_str(&text).ok()
    }

    /// Builds the span and queues it for export (never waits).
    pub(crate) fn end(&self, facts: SpanFacts<'_>) {
        let mut attributes = Vec::with_capacity(20);
        let mut add = |key: &'static str, value: Value| attributes.push(KeyValue::new(key, value));
        add("gen_ai.operation.name", self.operation.into());
        if let Some(system) = facts.system {
            add("gen_ai.system", system.into());
            add("gen_ai.provider.name", system.into());
        }
        if !facts.request_model.is_empty() {
            add(
                "gen_ai.request.model",
                facts.request_model.to_owned().into(),
            );
        }
        if !facts.response_model.is_empty() {
            add(
                "gen_ai.response.model",
                facts.response_model.to_owned().into(),
            );
        }
        if facts.input_tokens + facts.output_tokens > 0 {
            add(
                "gen_ai.usage.input_tokens",
                to_i64(facts.input_tokens).into(),
            );
            add(
                "gen_ai.usage.output_tokens",
                to_i64(facts.output_tokens).into(),
            );
        }
        add("http.response.status_code", i64::from(facts.status).into());
        add("tollgate.request_id", facts.request_id.to_owned().into());
        if let Some(key) = facts.key_id {
            add("tollgate.key_id", key.to_owned().into());
        }
        if let Some(team) = facts.team {
            add("tollgate.team", team.to_owned().into());
        }
        if !facts.provider.is_empty() {
            add("tollgate.provider", facts.provider.to_owned().into());
        }
        add("tollgate.cost_nanousd", to_i64(facts.cost.0).into());
        if let Some(code) = facts.error_code {
            add("error.type", code.to_owned().into());
            add("tollgate.error_code", code.to_owned().into());
        }
        if !facts.would_reject.is_empty() {
            let list: Vec<opentelemetry::StringValue> = facts
                .would_reject
                .iter()
                .map(|s| s.clone().into())
                .collect();
            add(
                "tollgate.shadow.would_reject",
                Value::Array(opentelemetry::Array::String(list)),
            );
        }
        if let Some(ttfb) = facts.time_to_first_byte {
            add(
                "tollgate.time_to_first_byte_ms",
                to_i64(ttfb.as_millis() as u64).into(),
            );
        }
        // A server span's 4xx is the client's doing, not a failure of the
        // gateway (OpenTelemetry's HTTP conventions); `error.type` still
        // says what it was.
        let status = match facts.error_code {
            Some(code) if facts.status >= 500 => Status::error(code.to_owned()),
            _ => Status::Unset,
        };
        let name = if facts.request_model.is_empty() {
            self.operation.to_owned()
        } else {
            format!("{} {}", self.operation, facts.request_model)
        };
        self.exporter.submit(SpanData {
            span_context: SpanContext::new(
                self.trace_id,
                self.span_id,
                self.flags,
                false,
                TraceState::NONE,
            ),
            parent_span_id: self.parent.unwrap_or(SpanId::INVALID),
            parent_span_is_remote: self.parent.is_some(),
            span_kind: SpanKind::Server,
            name: name.into(),
            start_time: self.start,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status,
            instrumentation_scope: scope(),
        });
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("tollgate")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn random_trace_id() -> TraceId {
    // Zero is the invalid id; 2^-128 odds, but cheap to rule out.
    TraceId::from_bytes(rand::random::<u128>().max(1).to_be_bytes())
}

fn random_span_id() -> SpanId {
    SpanId::from_bytes(rand::random::<u64>().max(1).to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(value: &str) -> Option<(TraceId, SpanId, TraceFlags)> {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_str(value).unwrap());
        parse_traceparent(&h)
    }

    #[test]
    fn a_valid_traceparent_is_continued() {
        let (trace, parent, flags) =
            parsed("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(trace.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.to_string(), "00f067aa0ba902b7");
        assert!(flags.is_sampled());
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
}
