//! Span export over OTLP/HTTP (protobuf), off the request path.
//!
//! A request only hands its finished span to a bounded queue (`try_send`:
//! never waits); when the queue is full the span is dropped and counted in
//! `tollgate_otel_spans_dropped_total`. One thread of its own, with a
//! single-threaded Tokio runtime, takes spans off the queue in batches and
//! posts them under a timeout.
//!
//! What a request queues is a [`SpanRecord`]: the ids, times, numbers and
//! strings it already had, copied. The export thread turns records into
//! OTLP protobuf (`opentelemetry-proto`'s messages, `prost` encoding) and
//! POSTs them to `{otlp_endpoint}/v1/traces` itself: building SDK spans and
//! their attribute lists on the request path cost about as much CPU as
//! serving the request.
//!
//! The thread waits on the queue only while it is idle: once a batch has
//! begun it sleeps [`DRAIN_EVERY`] and drains what came meanwhile. Waiting
//! on the queue for every span would have each request's `try_send` wake
//! the thread (a futex wake and a context switch, per request, on both
//! sides), which cost more CPU than the span itself. A dead
//! or slow collector therefore costs a request nothing: its spans pile up in
//! the queue, then are dropped, and the serving runtime never runs an export.
//! On shutdown, [`Exporter::flush`] sends what is queued before the process
//! exits (bounded by a timeout too).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, SpanFlags, Status};
use prost::Message;
use tokio::sync::mpsc;

use crate::config::TelemetryConfig;

/// Spans waiting for export. At ~1 KiB a span, a few MiB at most while the
/// collector is down.
const QUEUE: usize = 4096;
/// Spans per OTLP request.
const MAX_BATCH: usize = 512;
/// How long a batch waits to fill up after its first span: spans reach the
/// collector within about this long.
const BATCH_WAIT: Duration = Duration::from_millis(500);
/// How often a batch in progress drains the queue: at most ~50 wake-ups a
/// second, and at 20,000 requests a second ~400 spans per drain, well within
/// [`QUEUE`].
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// One export gives up after this long;
/// meanwhile new spans queue, then drop.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) const SPANS_DROPPED: &str = "tollgate_otel_spans_dropped_total";
pub(crate) const SPANS_EXPORTED: &str = "tollgate_otel_spans_exported_total";
pub(crate) const EXPORT_ERRORS: &str = "tollgate_otel_export_errors_total";

/// Why trace export could not start (the gateway then serves without it).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the HTTP client for `telemetry.otlp_endpoint` cannot be built: {0}")]
    Build(reqwest::Error),
    #[error("the OTLP export thread cannot be started: {0}")]
    Thread(std::io::Error),
}

/// The exporter for `telemetry`, if set; one that cannot start is logged
/// and the gateway serves without trace export.
pub(crate) fn start(telemetry: Option<&TelemetryConfig>) -> Option<Arc<Exporter>> {
    let config = telemetry?;
    match Exporter::start(config) {
        Ok(exporter) => Some(exporter),
        Err(e) => {
            tracing::error!(error = %e, "trace export is off");
            None
        }
    }
}

/// One finished request's span as the request path hands it over: plain
/// data, no attribute list yet (see [`to_proto`]).
pub(crate) struct SpanRecord {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The client's span, when it sent a `traceparent` (a remote parent).
    pub parent: Option<[u8; 8]>,
    /// W3C trace flags.
    pub flags: u8,
    pub start: SystemTime,
    pub end: SystemTime,
    /// `gen_ai.operation.name`.
    pub operation: &'static str,
    /// `gen_ai.system` of the provider's kind.
    pub system: Option<&'static str>,
    pub status: u16,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Nano-USD.
    pub cost: u64,
    pub time_to_first_byte: Option<Duration>,
    pub request_id: String,
    pub key_id: Option<String>,
    pub team: Option<String>,
    /// `None` when empty (before the body was read).
    pub request_model: Option<String>,
    pub response_model: Option<String>,
    pub provider: Option<String>,
    pub error_code: Option<String>,
    pub would_reject: Vec<String>,
}

/// What the export thread is sent.
enum Msg {
    Span(Box<SpanRecord>),
    /// Export everything queued before this now, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The request path's handle on the export queue.
pub struct Exporter {
    tx: mpsc::Sender<Msg>,
    dropped: AtomicU64,
}

impl Exporter {
    /// Starts the export thread for `config`.
    pub fn start(config: &TelemetryConfig) -> Result<Arc<Exporter>, StartError> {
        Self::start_with(config, QUEUE)
    }

    fn start_with(config: &TelemetryConfig, queue: usize) -> Result<Arc<Exporter>, StartError> {
        let target = Target {
            url: format!("{}/v1/traces", config.otlp_endpoint),
            http: reqwest::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(StartError::Build)?,
            resource: Resource {
                attributes: vec![string_kv("service.name", config.service_name.clone())],
                ..Default::default()
            },
        };
        let (tx, rx) = mpsc::channel(queue);
        std::thread::Builder::new()
            .name("tollgate-otlp".into())
            .spawn(move || export_loop(target, rx))
            .map_err(StartError::Thread)?;
        Ok(Arc::new(Exporter {
            tx,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Queues a finished span; never waits.
    pub(crate) fn submit(&self, span: SpanRecord) {
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(SPANS_DROPPED).increment(1);
        }
    }

    /// Exports every span queued so far, waiting at most `within` (a dead
    /// collector must not hold up a shutdown).
    pub async fn flush(&self, within: Duration) {
        let (reply, done) = tokio::sync::oneshot::channel();
        let flushed = tokio::time::timeout(within, async {
            if self.tx.send(Msg::Flush(reply)).await.is_ok() {
                let _ = done.await;
            }
        })
        .await;
        if flushed.is_err() {
            tracing::warn!(?within, "spans still queued at shutdown were not exported");
        }
    }

    /// Spans dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Where and as whom the export thread posts.
struct Target {
    url: String,
    http: reqwest::Client,
    /// `service.name`.
    resource: Resource,
}

/// The export thread: batches off the queue until every sender is gone
/// (the gateway was dropped), exporting what is left on the way out.
fn export_loop(target: Target, mut rx: mpsc::Receiver<Msg>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "no runtime for the OTLP export thread; spans are not exported");
            return;
        }
    };
    rt.block_on(async move {
        // Logged once per outage, not once per batch.
        let mut failing = false;
        while let Some(first) = rx.recv().await {
            let mut batch = Vec::new();
            let mut flush = None;
            match first {
                Msg::Span(span) => batch.push(*span),
                Msg::Flush(reply) => flush = Some(reply),
            }
            let deadline = tokio::time::Instant::now() + BATCH_WAIT;
            let mut closed = false;
            loop {
                while flush.is_none() && batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(Msg::Span(span)) => batch.push(*span),
                        Ok(Msg::Flush(reply)) => flush = Some(reply),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                let now = tokio::time::Instant::now();
                if closed || flush.is_some() || batch.len() >= MAX_BATCH || now >= deadline {
                    break;
                }
                tokio::time::sleep_until((now + DRAIN_EVERY).min(deadline)).await;
            }
            if !batch.is_empty() {
                export(&target, batch, &mut failing).await;
            }
            if let Some(reply) = flush {
                let _ = reply.send(());
            }
        }
    });
}

/// One export under a timeout, counted.
async fn export(target: &Target, batch: Vec<SpanRecord>, failing: &mut bool) {
    let n = batch.len() as u64;
    let body = encode(&target.resource, &batch);
    let post = async {
        let resp = target
            .http
            .post(&target.url)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("the collector answered {}", resp.status()))
        }
    };
    match tokio::time::timeout(EXPORT_TIMEOUT, post).await {
        Ok(Ok(())) => {
            metrics::counter!(SPANS_EXPORTED).increment(n);
            if *failing {
                tracing::info!("OTLP span export works again");
                *failing = false;
            }
        }
        failed => {
            metrics::counter!(EXPORT_ERRORS).increment(1);
            metrics::counter!(SPANS_DROPPED).increment(n);
            if !*failing {
                let error = match failed {
                    Ok(Err(e)) => e,
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(%error, spans = n, "OTLP span export failed; spans are dropped until the collector answers");
                *failing = true;
            }
        }
    }
}

/// One OTLP/HTTP request body for `batch`.
fn encode(resource: &Resource, batch: &[SpanRecord]) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "tollgate".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans: batch.iter().map(to_proto).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// The OTLP span for `r`, with the GenAI semantic conventions' attribute
/// names (<https://opentelemetry.io/docs/specs/semconv/gen-ai/>) and
/// tollgate's own.
fn to_proto(r: &SpanRecord) -> Span {
    let mut attributes = Vec::with_capacity(20);
    let mut add = |key: &str, value: any_value::Value| {
        attributes.push(KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        });
    };
    let string = |s: &str| any_value::Value::StringValue(s.to_owned());
    let int = |n: u64| any_value::Value::IntValue(to_i64(n));
    add("gen_ai.operation.name", string(r.operation));
    if let Some(system) = r.system {
        add("gen_ai.system", string(system));
        add("gen_ai.provider.name", string(system));
    }
    if let Some(model) = &r.request_model {
        add("gen_ai.request.model", string(model));
    }
    if let Some(model) = &r.response_model {
        add("gen_ai.response.model", string(model));
    }
    if r.input_tokens + r.output_tokens > 0 {
        add("gen_ai.usage.input_tokens", int(r.input_tokens));
        add("gen_ai.usage.output_tokens", int(r.output_tokens));
    }
    add("http.response.status_code", int(u64::from(r.status)));
    add("tollgate.request_id", string(&r.request_id));
    if let Some(key) = &r.key_id {
        add("tollgate.key_id", string(key));
    }
    if let Some(team) = &r.team {
        add("tollgate.team", string(team));
    }
    if let Some(provider) = &r.provider {
        add("tollgate.provider", string(provider));
    }
    add("tollgate.cost_nanousd", int(r.cost));
    if let Some(code) = &r.error_code {
        add("error.type", string(code));
        add("tollgate.error_code", string(code));
    }
    if !r.would_reject.is_empty() {
        let values = r
            .would_reject
            .iter()
            .map(|s| AnyValue {
                value: Some(string(s)),
            })
            .collect();
        add(
            "tollgate.shadow.would_reject",
            any_value::Value::ArrayValue(ArrayValue { values }),
        );
    }
    if let Some(ttfb) = r.time_to_first_byte {
        add(
            "tollgate.time_to_first_byte_ms",
            int(u64::try_from(ttfb.as_millis()).unwrap_or(u64::MAX)),
        );
    }
    // A server span's 4xx is the client's doing, not a failure of the
    // gateway (OpenTelemetry's HTTP conventions); `error.type` still says
    // what it was.
    let status = match &r.error_code {
        Some(code) if r.status >= 500 => Status {
            code: StatusCode::Error.into(),
            message: code.clone(),
        },
        _ => Status::default(),
    };
    let name = match &r.request_model {
        Some(model) => format!("{} {model}", r.operation),
        None => r.operation.to_owned(),
    };
    // The span says whether its parent is remote (OTLP's span flags).
    let mut flags = u32::from(r.flags) | SpanFlags::ContextHasIsRemoteMask as u32;
    if r.parent.is_some() {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    Span {
        trace_id: r.trace_id.to_vec(),
        span_id: r.span_id.to_vec(),
        trace_state: String::new(),
        parent_span_id: r.parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags,
        name,
        kind: SpanKind::Server.into(),
        start_time_unix_nano: unix_nanos(r.start),
        end_time_unix_nano: unix_nanos(r.end),
        attributes,
        status: Some(status),
        ..Default::default()
    }
}

fn string_kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> SpanRecord {
        SpanRecord {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: None,
            flags: 1,
            start: SystemTime::now(),
            end: SystemTime::now(),
            operation: "chat",
            system: None,
            status: 200,
            input_tokens: 0,
            output_tokens: 0,
            cost: 0,
            time_to_first_byte: None,
            request_id: "req-test".into(),
            key_id: None,
            team: None,
            request_model: Some("test".into()),
            response_model: None,
            provider: None,
            error_code: None,
            would_reject: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        // A listener that accepts and never answers: the first export
        // hangs, so the queue behind it fills up.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let config = TelemetryConfig {
            otlp_endpoint: format!("http://{}", listener.local_addr().unwrap()),
            service_name: "test".into(),
        };
        let exporter = Exporter::start_with(&config, 4).unwrap();
        exporter.submit(span());
        // The thread takes it, waits out its batch, and hangs in the export.
        tokio::time::sleep(BATCH_WAIT + Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        for _ in 0..10 {
            exporter.submit(span());
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "submit never waits"
        );
        assert_eq!(exporter.dropped(), 6, "a queue of 4 keeps 4 of 10");
        drop(listener);
    }

    #[test]
    fn a_record_encodes_as_the_otlp_span_it_describes() {
        let mut r = span();
        r.parent = Some([3; 8]);
        r.status = 502;
        r.error_code = Some("upstream_error".into());
        r.would_reject = vec!["budget:budget_exceeded".into()];
        let resource = Resource {
            attributes: vec![string_kv("service.name", "svc".into())],
            ..Default::default()
        };
        let body = encode(&resource, &[r]);
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let rs = &req.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes[0].key,
            "service.name"
        );
        let scope = &rs.scope_spans[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "tollgate");
        let s = &scope.spans[0];
        assert_eq!(s.trace_id, vec![1; 16]);
        assert_eq!(s.span_id, vec![2; 8]);
        assert_eq!(s.parent_span_id, vec![3; 8]);
        assert_eq!(s.name, "chat test");
        assert_eq!(s.kind, SpanKind::Server as i32);
        // Sampled, and a remote parent.
        assert_eq!(s.flags, 0x1 | 0x100 | 0x200);
        let status = s.status.as_ref().unwrap();
        assert_eq!(status.code, StatusCode::Error as i32);
        assert_eq!(status.message, "upstream_error");
        let keys: Vec<&str> = s.attributes.iter().map(|a| a.key.as_str()).collect();
        for key in [
            "gen_ai.operation.name",
            "gen_ai.request.model",
            "http.response.status_code",
            "tollgate.request_id",
            "error.type",
            "tollgate.shadow.would_reject",
        ] {
            assert!(keys.contains(&key), "{key} in {keys:?}");
        }
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
        assert!(s.start_time_unix_nano > 0);
    }

    #[test]
    fn a_new_trace_has_no_parent_and_a_4xx_is_not_an_error() {
        let mut r = span();
        r.status = 402;
        r.error_code = Some("budget_exceeded".into());
        let s = to_proto(&r);
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.flags, 0x1 | 0x100);
        assert_eq!(s.status.unwrap().code, StatusCode::Unset as i32);
    }
}
