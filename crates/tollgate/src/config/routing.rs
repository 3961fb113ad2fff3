//! The validated `routing:` defaults and a model's `strategy` (SPEC §8):
//! how often a target is retried, how long to back off, when a target's
//! circuit opens and for how long, and in what order a model's targets are
//! tried. What the gateway does with them lives in `crate::routing`.

use std::time::Duration;

/// `routing:` at the top of the file; every model uses these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Extra tries on the same target after a retryable failure.
    pub retries: u32,
    /// The first backoff's ceiling; each retry doubles it (full jitter).
    pub backoff: Duration,
    /// No backoff waits longer; a provider asking for a longer
    /// `Retry-After` is left for the next target at once.
    pub max_backoff: Duration,
    /// Consecutive retryable failures that open a target's circuit.
    pub failures_to_trip: u32,
    /// How long an open circuit is skipped before one probe may pass.
    pub cooldown: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            retries: 2,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(5000),
            failures_to_trip: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

/// In what order a model's targets are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// As listed: the first is the primary, the rest fallbacks.
    #[default]
    Ordered,
    /// Shuffled by `targets[].weight` for every request (the rest of the
    /// shuffle are the fallbacks). A model whose targets all carry a
    /// weight and that names no strategy is weighted, as before `strategy`
    /// existed.
    Weighted,
    /// The target with the lowest decayed latency estimate, weighted by
    /// the requests it has in flight, first (peak-EWMA with two random
    /// choices); the others after it in the same order.
    LeastLatency,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Ordered => "ordered",
            Strategy::Weighted => "weighted",
            Strategy::LeastLatency => "least_latency",
        }
    }
}
