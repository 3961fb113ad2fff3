//! The batched ledger writer. The request path hands each ledger row to
//! [`LedgerHandle::record`], which only appends to an in-memory queue; one
//! background task writes the queue to the store in batches (one multi-row
//! statement per batch), every `flush_interval` or as soon as `max_batch`
//! rows wait. A SIGKILL therefore loses at most one interval of rows (200 ms
//! by default, inside the 1 s bound of SPEC §6).
//!
//! When the store fails, the batch in flight is retried whole, with backoff,
//! until the store returns; rows recorded meanwhile wait behind it in order.
//! The store's unique `request_id` makes a retry after an ambiguous failure
//! (written, but the answer lost) a no-op rather than a double charge.
//!
//! `max_buffered` is an alarm, not a cap: past it the writer keeps accepting
//! rows and logs an error, because every row is money already billed and
//! dropping one silently is worse than the memory it takes (about 200 bytes a
//! row, so the default of 1,000,000 is some 200 MB).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::{LedgerRow, Store};

/// First retry delay after a failed batch; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// Rows per statement, and the queue length that triggers a write
    /// before the interval is up.
    pub max_batch: usize,
    /// Longest a recorded row waits before a write starts.
    pub flush_interval: Duration,
    /// Queue length past which every further tenth of it logs an error.
    pub max_buffered: usize,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            max_batch: 1000,
            flush_interval: Duration::from_millis(200),
            max_buffered: 1_000_000,
        }
    }
}

/// Spawns the writer task; see the module docs.
pub struct LedgerWriter;

impl LedgerWriter {
    /// Starts the writer on the current tokio runtime.
    pub fn spawn(store: Arc<dyn Store>, opts: LedgerOptions) -> LedgerHandle {
        let opts = LedgerOptions {
            max_batch: opts.max_batch.max(1),
            max_buffered: opts.max_buffered.max(1),
            ..opts
        };
        let (durable_tx, durable_rx) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            durable: durable_rx,
            task: Mutex::new(None),
            opts,
        });
        let task = tokio::spawn(run(store, Arc::clone(&shared), durable_tx));
        *shared.task.lock() = Some(task);
        LedgerHandle { shared }
    }
}

/// Cheap to clone; every clone feeds the same writer.
#[derive(Clone)]
pub struct LedgerHandle {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    /// How many rows, counted in record order, are durable. Rows leave the
    /// queue in order and a batch is retried until it lands, so every row
    /// numbered below this is in the store.
    durable: watch::Receiver<u64>,
    task: Mutex<Option<JoinHandle<()>>>,
    opts: LedgerOptions,
}

#[derive(Default)]
struct State {
    queue: VecDeque<LedgerRow>,
    /// Rows accepted since the start.
    recorded: u64,
    /// Rows taken off the queue and not yet durable.
    inflight: usize,
    closed: bool,
}

impl LedgerHandle {
    /// Queues a row for writing. Never waits on the database.
    pub fn record(&self, row: LedgerRow) {
        let opts = &self.shared.opts;
        let (buffered, full) = {
            let mut state = self.shared.state.lock();
            if state.closed {
                drop(state);
                tracing::error!(
                    request_id = %row.request_id,
                    key_id = %row.key_id,
                    cost_nano_usd = row.cost.0,
                    "ledger row recorded after the ledger writer shut down; it is NOT written"
                );
                return;
            }
            state.queue.push_back(row);
            state.recorded += 1;
            (
                state.queue.len() + state.inflight,
                state.queue.len() >= opts.max_batch,
            )
        };
        if buffered >= opts.max_buffered
            && (buffered - opts.max_buffered).is_multiple_of((opts.max_buffered / 10).max(1))
        {
            tracing::error!(
                buffered,
                max_buffered = opts.max_buffered,
                "ledger rows are piling up in memory because the store is not taking them; \
                 still accepting them so nothing billed is lost, check the store"
            );
        }
        if full {
            self.shared.wake.notify_one();
        }
    }

    /// Returns once every row recorded before the call is durable. Waits as
    /// long as the store is down; wrap it in `tokio::time::timeout` to bound that.
    pub async fn flush(&self) {
        let target = self.shared.state.lock().recorded;
        self.shared.wake.notify_one();
        let mut durable = self.shared.durable.clone();
        if durable
            .wait_for(|written| *written >= target)
            .await
            .is_err()
        {
            tracing::error!(
                buffered = self.buffered(),
                "the ledger writer stopped before it wrote every recorded row"
            );
        }
    }

    /// Stops accepting rows, writes every row already recorded, and stops the
    /// writer. Rows recorded afterwards are logged as lost.
    pub async fn shutdown(&self) {
        self.shared.state.lock().closed = true;
        self.flush().await;
        let task = self.shared.task.lock().take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!("the ledger writer task failed: {e}");
        }
    }

    /// Rows recorded and not yet durable (queued or in flight), for metrics.
    pub fn buffered(&self) -> usize {
        let state = self.shared.state.lock();
        state.queue.len() + state.inflight
    }
}

async fn run(store: Arc<dyn Store>, shared: Arc<Shared>, durable: watch::Sender<u64>) {
    let opts = shared.opts.clone();
    let mut written: u64 = 0;
    loop {
        let batch: Vec<LedgerRow> = {
            let mut state = shared.state.lock();
            let n = state.queue.len().min(opts.max_batch);
            state.inflight = n;
            state.queue.drain(..n).collect()
        };
        if batch.is_empty() {
            // Closed, or every handle dropped: nobody can record any more.
            if shared.state.lock().closed || Arc::strong_count(&shared) == 1 {
                return;
            }
            tokio::select! {
                () = tokio::time::sleep(opts.flush_interval) => {}
                () = shared.wake.notified() => {}
            }
            continue;
        }
        write_until_durable(store.as_ref(), &batch, &shared).await;
        written += batch.len() as u64;
        shared.state.lock().inflight = 0;
        durable.send_replace(written);
    }
}

/// Retries the whole batch until the store takes it.
async fn write_until_durable(store: &dyn Store, batch: &[LedgerRow], shared: &Shared) {
    let mut backoff = MIN_BACKOFF;
    let mut failures: u32 = 0;
    loop {
        match store.insert_ledger(batch).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(
                        failures,
                        rows = batch.len(),
                        "ledger store is back; batch written"
                    );
                }
                return;
            }
            Err(e) => {
                failures += 1;
                let buffered = {
                    let state = shared.state.lock();
                    state.queue.len() + state.inflight
                };
                tracing::error!(
                    failures,
                    buffered,
                    retry_in_ms = backoff.as_millis() as u64,
                    "writing {} ledger rows failed, will retry: {e}",
                    batch.len()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
