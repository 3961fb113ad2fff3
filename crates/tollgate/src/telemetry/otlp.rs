//! Span export over OTLP/HTTP (protobuf), off the request path.
//!
//! A request only hands its finished span to a bounded queue (`try_send`:
//! never waits); when the queue is full the span is dropped and counted in
//! `tollgate_otel_spans_dropped_total`. One thread of its own, with a
//! single-threaded Tokio runtime, takes spans off the queue in batches and
//! posts them with `opentelemetry-otlp`'s exporter under a timeout.
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

use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
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
/// One export (with the exporter's own retries) gives up after this long;
/// meanwhile new spans queue, then drop.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) const SPANS_DROPPED: &str = "tollgate_otel_spans_dropped_total";
pub(crate) const SPANS_EXPORTED: &str = "tollgate_otel_spans_exported_total";
pub(crate) const EXPORT_ERRORS: &str = "tollgate_otel_export_errors_total";

/// Why trace export could not start (the gateway then serves without it).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the OTLP exporter for `telemetry.otlp_endpoint` cannot be built: {0}")]
    Build(opentelemetry_otlp::ExporterBuildError),
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

/// What the export thread is sent.
enum Msg {
    Span(Box<SpanData>),
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
        let endpoint = format!("{}/v1/traces", config.otlp_endpoint);
        let http = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
            .unwrap_or_default();
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(http)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(StartError::Build)?;
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(config.service_name.clone())
                .build(),
        );
        let (tx, rx) = mpsc::channel(queue);
        std::thread::Builder::new()
            .name("tollgate-otlp".into())
            .spawn(move || export_loop(exporter, rx))
            .map_err(StartError::Thread)?;
        Ok(Arc::new(Exporter {
            tx,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Queues a finished span; never waits.
    pub(crate) fn submit(&self, span: SpanData) {
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

/// The export thread: batches off the queue until every sender is gone
/// (the gateway was dropped), exporting what is left on the way out.
fn export_loop(exporter: opentelemetry_otlp::SpanExporter, mut rx: mpsc::Receiver<Msg>) {
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
                export(&exporter, batch, &mut failing).await;
            }
            if let Some(reply) = flush {
                let _ = reply.send(());
            }
        }
    });
}

/// One export under a timeout, counted.
async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: Vec<SpanData>,
    failing: &mut bool,
) {
    let n = batch.len() as u64;
    let result = tokio::time::timeout(EXPORT_TIMEOUT * 2, exporter.export(batch)).await;
    match result {
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
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                tracing::warn!(%error, spans = n, "OTLP span export failed; spans are dropped until the collector answers");
                *failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };

    fn span() -> SpanData {
        SpanData {
            span_context: SpanContext::new(
                TraceId::from_bytes([1; 16]),
                SpanId::from_bytes([2; 8]),
                TraceFlags::SAMPLED,
                false,
                TraceState::NONE,
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Server,
            name: "chat test".into(),
            start_time: std::time::SystemTime::now(),
            end_time: std::time::SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: Default::default(),
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
}
