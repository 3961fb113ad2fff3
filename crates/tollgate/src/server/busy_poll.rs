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

/// Shared between the request path ([`BusyPoll::touch`]) and the spinning
/// task of each shard ([`BusyPoll::run`]).
pub struct BusyPoll {
    origin: Instant,
    window_ns: AtomicU64,
    /// One per shard: a request opens the window of the shard it runs on.
    spinners: Box<[Spinner]>,
}

struct Spinner {
    /// Nanoseconds since `origin` of the latest request; 0: none yet.
    last: AtomicU64,
    /// The spinning task is waiting for a request, not spinning.
    idle: AtomicBool,
    wake: Notify,
}

impl BusyPoll {
    pub fn new(window: Duration, shards: usize) -> Arc<Self> {
        let spinners = (0..shards.max(1))
            .map(|_| Spinner {
                last: AtomicU64::new(0),
                idle: AtomicBool::new(true),
                wake: Notify::new(),
            })
            .collect();
        Arc::new(BusyPoll {
            origin: Instant::now(),
            window_ns: AtomicU64::new(nanos(window)),
            spinners,
        })
    }

    /// How many shards this serves.
    pub fn shards(&self) -> usize {
        self.spinners.len()
    }

    /// Takes a reloaded `busy_poll_us`.
    pub fn set_window(&self, window: Duration) {
        self.window_ns.store(nanos(window), Ordering::Relaxed);
    }

    /// Marks a request's arrival on this thread's shard: opens (or extends)
    /// its window. Off a shard (the admin listener) it does nothing.
    pub fn touch(&self) {
        let Some(s) = crate::server::shard::current().and_then(|i| self.spinners.get(i)) else {
            return;
        };
        s.last.store(self.now_ns().max(1), Ordering::SeqCst);
        // SeqCst pairs with `run`: either it sees this `last`, or this sees
        // it idle and wakes it.
        if s.idle.load(Ordering::SeqCst) && self.window_ns.load(Ordering::Relaxed) > 0 {
            s.wake.notify_one();
        }
    }

    /// The spinning task of shard `shard`, run on that shard; ends when
    /// `stop` is cancelled.
    pub async fn run(self: Arc<Self>, shard: usize, stop: CancellationToken) {
        let Some(s) = self.spinners.get(shard) else {
            return;
        };
        loop {
            s.idle.store(true, Ordering::SeqCst);
            if !self.window_open(s) {
                tokio::select! {
                    () = s.wake.notified() => {}
                    () = stop.cancelled() => return,
                }
            }
            s.idle.store(false, Ordering::SeqCst);
            while self.window_open(s) {
                // Deferred behind every ready task: the runtime polls its
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

    fn window_open(&self, s: &Spinner) -> bool {
        let window = self.window_ns.load(Ordering::Relaxed);
        let last = s.last.load(Ordering::SeqCst);
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
        let busy = BusyPoll::new(Duration::from_millis(30), 2);
        let stop = CancellationToken::new();
        crate::server::shard::enter(1);
        let task = tokio::spawn(Arc::clone(&busy).run(1, stop.clone()));
        let idle = |i: usize| busy.spinners[i].idle.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(idle(1), "idle before any request");

        busy.touch();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!idle(1), "spinning right after one");
        assert!(idle(0), "another shard's window stays shut");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(idle(1), "idle again once the window closed");

        busy.set_window(Duration::ZERO);
        busy.touch();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(idle(1), "a zero window never spins");

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
