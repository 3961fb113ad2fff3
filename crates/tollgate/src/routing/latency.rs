//! A provider's latency estimate for `strategy: least_latency`: the
//! peak-EWMA of Finagle and Linkerd. Each observed time to answer moves an
//! exponentially weighted average that decays with wall time (half of an
//! old estimate is forgotten in about `DECAY * ln 2`), except that a
//! slower answer than the estimate is taken at once (the "peak"), so a
//! provider that turns slow is avoided immediately and regains traffic
//! only as it proves fast again. The cost of sending one more request is
//! the estimate times (requests in flight + 1): a fast provider that is
//! already busy loses to an idle one.
//!
//! Only requests of `least_latency` models are measured (other models pay
//! nothing for it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use std::time::Instant;

/// How fast old observations fade (Linkerd's default decay is 10 s).
const DECAY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct PeakEwma {
    /// (estimate in ns, when it was last updated); `None` before the first
    /// observation: an unmeasured provider costs nothing, so it is tried.
    estimate: Mutex<Option<(f64, Instant)>>,
    in_flight: AtomicU64,
}

/// Counts a request in flight from its start to its drop.
pub struct InFlight<'a>(&'a PeakEwma);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PeakEwma {
    /// Marks one request as in flight until the guard drops.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Folds in one observed time to answer.
    pub fn observe(&self, rtt: Duration) {
        self.observe_at(rtt, Instant::now());
    }

    /// [`PeakEwma::observe`] at a given time (tests move it by hand).
    pub fn observe_at(&self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        let mut estimate = self.estimate.lock();
        let next = match *estimate {
            None => rtt,
            Some((old, _)) if rtt > old => rtt,
            Some((old, at)) => {
                let w = (-(now.saturating_duration_since(at).as_secs_f64()) / DECAY.as_secs_f64())
                    .exp();
                old * w + rtt * (1.0 - w)
            }
        };
        *estimate = Some((next, now));
    }

    /// The cost of sending it one more request now.
    pub fn cost(&self) -> f64 {
        let estimate = self.estimate.lock().map_or(0.0, |(e, _)| e);
        let pending = self.in_flight.load(Ordering::Relaxed) as f64;
        estimate * (pending + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_answer_counts_at_once_and_fades_with_time() {
        let e = PeakEwma::default();
        let t0 = Instant::now();
        assert_eq!(e.cost(), 0.0, "unmeasured: tried first");
        e.observe_at(Duration::from_millis(10), t0);
        let ten = e.cost();
        e.observe_at(Duration::from_millis(500), t0);
        assert_eq!(e.cost(), 50.0 * ten, "the peak is taken whole");
        // Fast answers right away barely move it; after a while they win.
        e.observe_at(Duration::from_millis(10), t0 + Duration::from_millis(10));
        assert!(e.cost() > 40.0 * ten);
        e.observe_at(Duration::from_millis(10), t0 + Duration::from_secs(120));
        assert!(e.cost() < 1.1 * ten, "{}", e.cost() / ten);
    }

    #[test]
    fn requests_in_flight_raise_the_cost() {
        let e = PeakEwma::default();
        e.observe(Duration::from_millis(10));
        let idle = e.cost();
        let a = e.start();
        let _b = e.start();
        assert_eq!(e.cost(), 3.0 * idle);
        drop(a);
        assert_eq!(e.cost(), 2.0 * idle);
    }
}
