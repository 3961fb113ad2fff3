//! Atomic counters behind budgets, rate limits, parallelism and loop
//! guards. One [`Counters::admit`] call checks every limit that applies to a
//! request and takes them all or none, so a request rejected by one limit
//! consumes nothing from the others and two concurrent requests can never
//! both fit into the last dollar. [`Counters::settle`] turns a reservation
//! into actual spend. Implementations: in-process memory (the embedded
//! default) and Redis (shared by several gateways).
//!
//! `admit` never creates a budget counter: a budget's history lives in the
//! ledger, and only [`Counters::seed_budget`] brings it in. When a budget
//! counter is missing (first use in a period or in this process, a Redis
//! restarted without persistence, an evicted key), `admit` takes nothing and
//! answers [`Admission::Unseeded`]; the caller restores those counters from
//! the ledger and asks again. So a counter that vanished is noticed on the
//! very next request, whatever any cache believes.
//!
//! A counter restored from the ledger alone would forget what is not in the
//! ledger yet: requests admitted but not settled (on any gateway), and rows
//! settled but still buffered in some gateway's ledger writer. So each seed
//! starts a new *epoch* of the counter, and every grant records the epoch it
//! was taken in ([`Grant::epochs`]). A settlement releases its reservation
//! only from the epoch that holds it, and adds its cost only if the ledger
//! the seed read did not already hold its row (`Actual::ledger_seq` against
//! the writer marks the seed recorded). On Redis, each gateway also keeps
//! what it holds on each counter (`outstanding.rs`) and adds it to a new
//! epoch, which admits nothing until every live gateway has done so (see
//! `redis_counters.rs`). `allow_local` spend is folded back the same way.
//!
//! This module knows nothing of HTTP, config files or policies: the policy
//! layer turns those into the plain checks below.

use async_trait::async_trait;

use crate::types::NanoUsd;

#[cfg(test)]
mod conformance;
mod fallback;
mod gcra;
mod memory;
mod outstanding;
mod redis_counters;

pub use fallback::with_fail_mode;
pub use memory::{DEFAULT_LOOP_CAPACITY, MemoryCounters, TOKENS_RATE_SUFFIX};
pub use redis_counters::{DEFAULT_SLOT_TTL_MS, RedisCounters, SCRIPT_VERSION};

/// Everything one request must pass before it is forwarded.
#[derive(Debug, Clone, Default)]
pub struct AdmitRequest {
    /// Unique id of this request; identifies its parallel slots.
    pub request_id: String,
    /// Worst-case cost of the request (input + max output tokens).
    pub cost: NanoUsd,
    pub budgets: Vec<BudgetCheck>,
    pub rates: Vec<RateCheck>,
    pub parallel: Vec<ParallelCheck>,
    pub loops: Vec<LoopCheck>,
    pub streaks: Vec<StreakCheck>,
}

/// A spend limit over a period. The counter named `key` holds `spent` and
/// `reserved` for one scope (team or key), policy and period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetCheck {
    /// Includes the period's start, so a new period starts a new counter.
    pub key: String,
    pub limit: NanoUsd,
    /// The smallest reservation this budget accepts: `cost` for
    /// `on_insufficient: reject`, the input's cost plus one output token for
    /// `clamp`.
    pub min: NanoUsd,
    /// `false` for `mode: shadow` and `action: alert`: counted, never rejects.
    pub enforce: bool,
    /// When the counter may be forgotten (period end plus slack); `None` for
    /// `total` budgets.
    pub expires_at_ms: Option<i64>,
}

/// A smooth rate limit (GCRA): `limit` units per minute with a burst of the
/// whole minute's allowance, so no fixed-window double burst.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateCheck {
    pub key: String,
    pub limit_per_minute: u64,
    /// Units this request takes: 1 for requests, the estimated tokens for tokens.
    pub amount: u64,
    pub enforce: bool,
}

/// At most `max` requests in flight for one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParallelCheck {
    pub key: String,
    pub max: u64,
    pub enforce: bool,
}

/// More than `max_identical` identical bodies from one key within the window
/// are rejected. `key` names the key and the body's fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopCheck {
    pub key: String,
    pub max_identical: u32,
    pub window_ms: u64,
    pub enforce: bool,
}

/// Rejects while the key's error streak (see [`Counters::record_outcome`])
/// is tripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreakCheck {
    pub key: String,
    pub enforce: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted(Grant),
    Rejected(Rejection),
    /// The budget counters at these indexes of `AdmitRequest::budgets` do
    /// not exist (in ascending order). Nothing was checked or taken: restore
    /// them with [`Counters::seed_budget`] and admit again.
    Unseeded(Vec<usize>),
}

/// What an admitted request holds until it is settled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Grant {
    /// Reserved on every budget; below `AdmitRequest::cost` only when an
    /// enforcing budget clamped it.
    pub reserved: NanoUsd,
    /// State of each budget after the reservation, in `AdmitRequest::budgets` order.
    pub budgets: Vec<BudgetState>,
    /// State of each rate limit after admission, in `AdmitRequest::rates` order.
    pub rates: Vec<RateState>,
    /// Checks that would have rejected but do not enforce (shadow, alert).
    pub would_reject: Vec<Rejection>,
    /// The epoch of each budget counter when the reservation was taken, in
    /// `AdmitRequest::budgets` order: a counter re-seeded since (lost and
    /// rebuilt) does not hold this reservation, so the settlement leaves
    /// its `reserved` alone.
    pub epochs: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BudgetState {
    pub limit: NanoUsd,
    pub spent: NanoUsd,
    pub reserved: NanoUsd,
}

impl BudgetState {
    pub fn remaining(&self) -> NanoUsd {
        self.limit
            .saturating_sub(self.spent)
            .saturating_sub(self.reserved)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateState {
    pub limit: u64,
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    /// Index into the matching `AdmitRequest` list.
    pub index: usize,
    /// When a retry could pass (budget: the period's end, if known).
    pub retry_after_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The budget at `index` cannot fit the request; its state at the time.
    Budget(BudgetState),
    Rate,
    Parallel,
    Loop,
    Streak,
}

/// What a request really used, known after the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actual {
    pub cost: NanoUsd,
    /// Prompt + completion tokens, for `tokens_per_minute`.
    pub tokens: u64,
    /// The number of the request's ledger row in this process's ledger
    /// writer (`LedgerHandle::record`); 0 when it has none. A counter
    /// seeded from a ledger that already held the row does not add its cost
    /// again.
    pub ledger_seq: u64,
}

/// What a lost budget counter is rebuilt from: the ledger's spend and its
/// writers' marks, read in one snapshot (`Store::ledger_snapshot`).
#[derive(Debug, Clone)]
pub struct BudgetRebuild {
    pub ledger: crate::store::LedgerSnapshot,
    /// When the snapshot was read: one too old to trust is refused (a
    /// gateway forgets what it held on a counter a while after its rows are
    /// durable, counting on every snapshot from before that being used by then).
    pub read_at: std::time::Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    #[error("counters backend unreachable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Counters: Send + Sync + 'static {
    /// Checks every limit in `req` atomically and, only when all enforcing
    /// checks pass, reserves them all. A rejected request changes nothing.
    /// If any budget counter of `req` does not exist, answers
    /// [`Admission::Unseeded`] before any other check and changes nothing.
    async fn admit(&self, req: &AdmitRequest) -> Result<Admission, CountersError>;

    /// Moves `grant.reserved` to `actual.cost` on every budget of `req`,
    /// corrects each tokens rate limit from the reserved to the actual
    /// tokens, and frees the request's parallel slots. Called exactly once
    /// per admitted request, on every path (success, error, client gone).
    async fn settle(
        &self,
        req: &AdmitRequest,
        grant: &Grant,
        actual: Actual,
    ) -> Result<(), CountersError>;

    /// [`Counters::settle`] for a request that succeeded, which also ends
    /// the key's error streaks (`req.streaks`) as [`Counters::record_outcome`]
    /// with no error code does. A backend that can do both in one call
    /// (Redis: one script instead of two) overrides it.
    async fn settle_success(
        &self,
        req: &AdmitRequest,
        grant: &Grant,
        actual: Actual,
    ) -> Result<(), CountersError> {
        let settled = self.settle(req, grant, actual).await;
        end_streaks(self, req).await;
        settled
    }

    /// Creates a budget counter with `spent` if it does not exist yet (a
    /// live counter is left as it is): how spend from the ledger is restored
    /// after [`Admission::Unseeded`].
    async fn seed_budget(
        &self,
        key: &str,
        spent: NanoUsd,
        expires_at_ms: Option<i64>,
    ) -> Result<(), CountersError>;

    /// [`Counters::seed_budget`] after [`Admission::Unseeded`], from a
    /// ledger snapshot: shared counters also record the writer marks and
    /// take in every live gateway's outstanding amounts before admitting.
    async fn rebuild_budget(
        &self,
        key: &str,
        rebuild: &BudgetRebuild,
        expires_at_ms: Option<i64>,
    ) -> Result<(), CountersError> {
        self.seed_budget(key, rebuild.ledger.spent, expires_at_ms)
            .await
    }

    /// Background upkeep, called every [`MAINTAIN_EVERY`] by the app:
    /// shared counters hand their outstanding amounts to rebuilt budget
    /// counters here. Never fails (logs).
    async fn maintain(&self) {}

    /// Spend and reservations of a budget counter; `None` if it does not
    /// exist. `limit` is the one the last admit saw (0 for a counter only
    /// seeded).
    async fn budget(&self, key: &str) -> Result<Option<BudgetState>, CountersError>;

    /// Records a finished request's error code (`None` for success) for the
    /// error-streak guard: the same code more than `max` times in a row
    /// within `window_ms` trips `streak_key` for the rest of the window.
    /// Returns `true` when this call tripped it.
    async fn record_outcome(
        &self,
        streak_key: &str,
        error_code: Option<&str>,
        max: u32,
        window_ms: u64,
    ) -> Result<bool, CountersError>;

    /// For `/readyz`.
    async fn ping(&self) -> Result<(), CountersError>;
}

/// How often [`Counters::maintain`] runs.
pub const MAINTAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(50);

/// Ends the error streaks of `req` (a success), on whatever counters answer.
/// A failure only costs the streak's reset, so it is logged, not returned.
pub(crate) async fn end_streaks<C: Counters + ?Sized>(counters: &C, req: &AdmitRequest) {
    for s in &req.streaks {
        // `max` and the window only matter for an error.
        if let Err(e) = counters.record_outcome(&s.key, None, 0, 0).await {
            tracing::warn!(error = %e, request_id = %req.request_id, "cannot end an error streak");
        }
    }
}
