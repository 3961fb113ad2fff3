//! A provider's circuit breaker. `failures_to_trip` consecutive retryable
//! failures open it for `cooldown_s`; while open the provider is skipped
//! whenever another target is available. Once the cooldown has passed,
//! exactly one request is let through as the probe (half-open): its
//! success closes the circuit, its failure opens it for another cooldown.
//! A probe that never reports back (its request was dropped) is given up
//! after one cooldown, so the circuit cannot stay half-open for good.
//!
//! All state is in atomics, read with one load on the happy path. Times
//! are the gateway clock's milliseconds (`Clock::now_ms`), so tests move
//! them by hand.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};

use crate::config::RoutingConfig;

/// `tollgate_circuit_state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

/// What the breaker says about sending one attempt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Closed: send.
    Closed,
    /// The cooldown is over and this attempt is the one probe.
    Probe,
    /// Open (or half-open with the probe out): skip if anything else can
    /// be tried.
    Open,
}

pub struct Breaker {
    provider: String,
    consecutive: AtomicU32,
    /// Until when the circuit is open (clock ms); 0 when closed.
    open_until: AtomicI64,
    /// When the current probe went out (clock ms); 0 when none is out.
    probe_since: AtomicI64,
}

impl Breaker {
    pub fn new(provider: &str) -> Breaker {
        let b = Breaker {
            provider: provider.to_owned(),
            consecutive: AtomicU32::new(0),
            open_until: AtomicI64::new(0),
            probe_since: AtomicI64::new(0),
        };
        b.gauge(State::Closed);
        b
    }

    /// The state as `tollgate_circuit_state` shows it.
    pub fn state(&self, now_ms: i64) -> State {
        match self.open_until.load(Ordering::Acquire) {
            0 => State::Closed,
            until if now_ms < until => State::Open,
            _ => State::HalfOpen,
        }
    }

    /// Whether the circuit is open right now: in its cooldown, or
    /// half-open with its probe out (without taking the probe).
    pub fn is_open(&self, now_ms: i64, config: &RoutingConfig) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return false;
        }
        let since = self.probe_since.load(Ordering::Acquire);
        now_ms < until || (since != 0 && now_ms < since.saturating_add(cooldown_ms(config)))
    }

    /// Asks to send one attempt now.
    pub fn pass(&self, now_ms: i64, config: &RoutingConfig) -> Pass {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Pass::Closed;
        }
        if now_ms < until {
            return Pass::Open;
        }
        let cooldown = cooldown_ms(config);
        let since = self.probe_since.load(Ordering::Acquire);
        if since != 0 && now_ms < since.saturating_add(cooldown) {
            return Pass::Open;
        }
        // One winner takes the probe (a lost probe older than a cooldown
        // is replaced).
        match self.probe_since.compare_exchange(
            since,
            now_ms.max(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                self.gauge(State::HalfOpen);
                Pass::Probe
            }
            Err(_) => Pass::Open,
        }
    }

    /// The provider answered (any answer but a retryable failure).
    /// Returns whether that closed the circuit.
    pub fn success(&self) -> bool {
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if self.open_until.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.open_until.store(0, Ordering::Release);
        self.probe_since.store(0, Ordering::Release);
        self.gauge(State::Closed);
        tracing::info!(provider = %self.provider, "circuit closed: the provider answered");
        true
    }

    /// A retryable failure. Returns whether it opened the circuit (so
    /// replicas can be told).
    pub fn failure(&self, now_ms: i64, probe: bool, config: &RoutingConfig) -> bool {
        let n = self
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let reopen = probe && self.open_until.load(Ordering::Acquire) != 0;
        if !reopen && (n < config.failures_to_trip || self.is_open(now_ms, config)) {
            return false;
        }
        self.open(now_ms.saturating_add(cooldown_ms(config)));
        tracing::warn!(provider = %self.provider, consecutive = n, cooldown_s = config.cooldown.as_secs_f64(),
            "circuit opened: the provider is skipped while another target is available");
        true
    }

    /// Opens the circuit until `until` (clock ms), unless it is open longer.
    pub fn open(&self, until: i64) {
        self.open_until.fetch_max(until.max(1), Ordering::AcqRel);
        self.probe_since.store(0, Ordering::Release);
        self.gauge(State::Open);
    }

    /// Whether the circuit is open until `until` (clock ms) or later.
    pub fn is_open_until_at_least(&self, until: i64) -> bool {
        self.open_until.load(Ordering::Acquire) >= until
    }

    fn gauge(&self, state: State) {
        metrics::gauge!("tollgate_circuit_state", "provider" => self.provider.clone())
            .set(f64::from(state as u8));
    }
}

fn cooldown_ms(config: &RoutingConfig) -> i64 {
    i64::try_from(config.cooldown.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> RoutingConfig {
        RoutingConfig {
            failures_to_trip: 3,
            cooldown: Duration::from_secs(30),
            ..RoutingConfig::default()
        }
    }

    #[test]
    fn trips_after_consecutive_failures_and_a_success_resets_the_count() {
        let (b, c) = (Breaker::new("p"), config());
        assert!(!b.failure(0, false, &c));
        assert!(!b.failure(0, false, &c));
        b.success();
        assert!(!b.failure(0, false, &c));
        assert!(!b.failure(0, false, &c));
        assert_eq!(b.pass(0, &c), Pass::Closed);
        assert!(b.failure(10, false, &c), "the third in a row opens it");
        assert_eq!(b.state(10), State::Open);
        assert_eq!(b.pass(29_999, &c), Pass::Open);
        assert!(!b.failure(20, false, &c), "already open: not reopened");
    }

    #[test]
    fn after_the_cooldown_exactly_one_probe_decides() {
        let (b, c) = (Breaker::new("p"), config());
        for _ in 0..3 {
            b.failure(0, false, &c);
        }
        assert_eq!(b.pass(30_000, &c), Pass::Probe);
        assert_eq!(b.state(30_000), State::HalfOpen);
        assert_eq!(b.pass(30_001, &c), Pass::Open, "one probe at a time");
        assert!(b.is_open(30_001, &c));
        // The probe fails: open for another cooldown.
        assert!(b.failure(30_100, true, &c));
        assert_eq!(b.pass(59_000, &c), Pass::Open);
        assert_eq!(b.pass(60_100, &c), Pass::Probe);
        b.success();
        assert_eq!(b.state(60_200), State::Closed);
        assert_eq!(b.pass(60_200, &c), Pass::Closed);
    }

    #[test]
    fn a_probe_that_never_reports_is_replaced_after_a_cooldown() {
        let (b, c) = (Breaker::new("p"), config());
        for _ in 0..3 {
            b.failure(0, false, &c);
        }
        assert_eq!(b.pass(30_000, &c), Pass::Probe);
        assert_eq!(b.pass(59_999, &c), Pass::Open);
        assert_eq!(b.pass(60_000, &c), Pass::Probe);
    }

    #[test]
    fn concurrent_callers_get_one_probe() {
        let (b, c) = (std::sync::Arc::new(Breaker::new("p")), config());
        for _ in 0..3 {
            b.failure(0, false, &c);
        }
        let probes: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let b = b.clone();
                    s.spawn(move || usize::from(b.pass(40_000, &c) == Pass::Probe))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(probes, 1);
    }
}
