//! The fixed buckets of `/metrics`' latency histograms. Prometheus
//! histograms (`_bucket`, `_sum`, `_count`) add up across replicas, which
//! summaries cannot; and with fixed buckets each series is a few counters,
//! so memory stays flat however many requests are observed (samples are
//! folded into the buckets every second by the app's metrics upkeep).

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Whole request, as the client saw it (to the last byte of a stream); by `model`.
pub(crate) const REQUEST_DURATION: &str = "tollgate_request_duration_seconds";
/// The request's time minus the time spent waiting on the provider.
pub(crate) const GATEWAY_OVERHEAD: &str = "tollgate_gateway_overhead_seconds";
/// Streams: arrival to the first event sent to the client; by `model`.
pub(crate) const STREAM_FIRST_BYTE: &str = "tollgate_stream_first_byte_seconds";

/// Model calls take from milliseconds (a cache, an embedding) to minutes
/// (a long generation).
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// The gateway's own share is meant to be well under a millisecond.
const OVERHEAD_BUCKETS: &[f64] = &[
    0.000_05, 0.0001, 0.000_25, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A Prometheus builder with every histogram bucketed.
pub(crate) fn builder() -> PrometheusBuilder {
    let configured = PrometheusBuilder::new()
        // The default for every histogram, so none is ever rendered as a
        // summary (which replicas could not aggregate).
        .set_buckets(LATENCY_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(GATEWAY_OVERHEAD.into()), OVERHEAD_BUCKETS)
        });
    match configured {
        Ok(b) => b,
        // Only an empty bucket list fails, and these are constants.
        Err(e) => {
            tracing::warn!(error = %e, "histogram buckets rejected; latency is reported as summaries");
            PrometheusBuilder::new()
        }
    }
}
