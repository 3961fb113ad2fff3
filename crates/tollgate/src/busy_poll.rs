//! Busy-polling for a short window after each request arrives, as Seastar's
//! reactor does by default (`--idle-poll-time-us`).
//!
//! Why: a proxied request blocks twice in the gateway (waiting for the
//! provider's answer, then for the client's next request), and each time the
//! thread sleeps, waking it costs tens of microseconds on a virtual machine
//! (an IPI and a halted vCPU): more than everything else the gateway does for
//! a request. While the window is open, one task keeps yielding, so the
//! runtime polls its sockets without ever going to sleep and the answer is
//! picked up the moment it lands.
//!
//! Cost: at most `busy_poll_us` of one core's time after each request, none
//! when idle. Under steady load the spinning task only runs when the runtime
//! has nothing else to do, and it yields the CPU to other processes
//! (`sched_yield`) on every turn. `busy_poll_us: 0` turns it off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Default window: long enough to cover a provider answering from the same
/// host and a client sending its next request, short enough that an idle
/// gateway is idle.
pub const DEFAULT_WINDOW: Duration = Duration::from_micros(200);

/// Shared between the request path ([`BusyPoll::touch`]) and the one
/// spinning task ([`BusyPoll::run`]).
pub struct BusyPoll {
    origin: Instant,
    /// Nanoseconds since `origin` of the latest request; 0: none yet.
    last: AtomicU64,
    window_ns: AtomicU64,
    /// The spinning task is waiting for a request, not spinning.
    idle: AtomicBool,
    wake: Notify,
}

impl BusyPoll {
    pub fn new(window: Duration) -> Arc<Self> {
        Arc::new(BusyPoll {
            origin: Instant::now(),
            last: AtomicU64::new(0),
            window_ns: AtomicU64::new(nanos(window)),
            idle: AtomicBool::new(true),
            wake: Notify::new(),
        })
    }

    /// Takes a reloaded `busy_poll_us`.
    pub fn set_window(&self, window: Duration) {
        self.window_ns.store(nanos(window), Ordering::Relaxed);
    }

    /// Marks a request's arrival: opens (or extends) the window.
    pub fn touch(&self) {
        self.last.store(self.now_ns().max(1), Ordering::SeqCst);
        // SeqCst pairs with `run`: either it sees this `last`, or this sees
        // it idle and wakes it.
        if self.idle.load(Ordering::SeqCst) && self.window_ns.load(Ordering::Relaxed) > 0 {
            self.wake.notify_one();
        }
    }

    /// The spinning task; ends when `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            self.idle.store(true, Ordering::SeqCst);
            if !self.window_open() {
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = stop.cancelled() => return,
                }
            }
            self.idle.store(false, Ordering::SeqCst);
            while self.window_open() {
                // Deferred behind every ready task: the worker polls its
                // sockets without blocking, runs what became ready, then
                // comes back here.
                tokio::task::yield_now().await;
                std::thread::yield_now();
            }
            if stop.is_cancelled() {
                return;
            }
        }
    }

    fn window_open(&self) -> bool {
        let window = self.window_ns.load(Ordering::Relaxed);
        let last = self.last.load(Ordering::SeqCst);
        window > 0 && last > 0 && self.now_ns().saturating_sub(last) < window
    }

    fn now_ns(&self) -> u64 {
        nanos(self.origin.elapsed())
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spins_only_inside_the_window_after_a_request() {
        let busy = BusyPoll::new(Duration::from_millis(30));
        let stop = CancellationToken::new();
        let task = tokio::spawn(Arc::clone(&busy).run(stop.clone()));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(busy.idle.load(Ordering::SeqCst), "idle before any request");

        busy.touch();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            !busy.idle.load(Ordering::SeqCst),
            "spinning right after one"
        );
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            busy.idle.load(Ordering::SeqCst),
            "idle again once the window closed"
        );

        busy.set_window(Duration::ZERO);
        busy.touch();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            busy.idle.load(Ordering::SeqCst),
            "a zero window never spins"
        );

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
