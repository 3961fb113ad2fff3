//! In-process counters: the embedded default. One mutex over all state makes
//! each operation atomic (admission is a few microseconds of map lookups, far
//! below any contention that would matter on the request path).
//!
//! Memory stays bounded: budget counters past their `expires_at_ms`, rate
//! buckets that have refilled, loop windows and error streaks that have
//! passed are dropped by a sweep that runs inside `admit` at most every
//! [`SWEEP_EVERY_MS`]; parallel entries are dropped when their last slot is
//! released; and the loop-fingerprint table holds at most
//! [`DEFAULT_LOOP_CAPACITY`] entries (when full, the one attempted least
//! recently is evicted), each with at most `max_identical` timestamps.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::{
    Actual, Admission, AdmitRequest, BudgetState, Counters, CountersError, Grant, LoopCheck,
    RejectReason, Rejection, gcra,
};
use crate::types::{Clock, NanoUsd};

/// Most loop fingerprints kept at once (about 100 bytes each plus the key,
/// plus 8 bytes per attempt kept: at most `max_identical`).
pub const DEFAULT_LOOP_CAPACITY: usize = 100_000;

/// How often (in clock time) `admit` sweeps expired entries.
pub const SWEEP_EVERY_MS: i64 = 10_000;

/// Rate keys ending in this suffix are tokens limits, corrected on settle.
pub const TOKENS_RATE_SUFFIX: &str = ":tpm";

pub struct MemoryCounters {
    clock: Arc<dyn Clock>,
    loop_capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    budgets: HashMap<String, Budget>,
    rates: HashMap<String, Bucket>,
    /// Request ids holding a slot, per key.
    parallel: HashMap<String, HashSet<String>>,
    loops: HashMap<String, LoopLog>,
    /// Loop logs by (last attempt, sequence) as of when the entry was
    /// written: the eviction order when full. Entries lag behind
    /// `LoopLog::last_ms` and are brought up to date only at eviction, so
    /// an attempt on a known body costs no allocation.
    loop_order: BTreeMap<(i64, u64), String>,
    loop_seq: u64,
    streaks: HashMap<String, Streak>,
    last_sweep_ms: i64,
    /// The last budget counter epoch handed out by `seed`.
    last_epoch: u64,
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    /// The limit seen by the last admit; 0 for a counter only seeded.
    limit: u64,
    spent: u64,
    reserved: u64,
    expires_at_ms: Option<i64>,
    /// Set by the seed that created it (see `Grant::epochs`).
    epoch: u64,
}

impl Budget {
    fn state(&self) -> BudgetState {
        BudgetState {
            limit: NanoUsd(self.limit),
            spent: NanoUsd(self.spent),
            reserved: NanoUsd(self.reserved),
        }
    }

    fn expired(&self, now: i64) -> bool {
        self.expires_at_ms.is_some_and(|at| at <= now)
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: u128,
    last_ms: i64,
    limit: u64,
}

impl Bucket {
    /// The level at `now`, refilled at the speed of the limit it was last used with.
    fn level_at(&self, now: i64) -> u128 {
        gcra::decay(self.level, now - self.last_ms, self.limit)
    }
}

/// One body's recent attempts under one loop guard: a sliding window, so no
/// double burst at a window edge.
#[derive(Debug, Clone)]
struct LoopLog {
    /// When the last attempts that passed were made, oldest first; only the
    /// `max_identical` most recent are kept, as only they can decide.
    passed: VecDeque<i64>,
    /// An attempt the guard refused blocks the body until one window after
    /// it, so a loop that keeps hammering stays stopped and the body passes
    /// again only after a whole window of quiet.
    blocked_until_ms: i64,
    /// The last attempt, passed or refused.
    last_ms: i64,
    /// When the log says nothing any more: the last attempt plus the window.
    end_ms: i64,
    /// Its key in `State::loop_order`.
    order: (i64, u64),
}

impl LoopLog {
    /// Whether an attempt at `now` is refused: the body was refused within
    /// the window, or `max_identical` attempts already passed within it.
    fn refuses(log: Option<&LoopLog>, check: &LoopCheck, now: i64) -> bool {
        let max = check.max_identical as usize;
        let Some(log) = log else {
            return max == 0;
        };
        if max == 0 || log.blocked_until_ms > now {
            return true;
        }
        let since = now.saturating_sub(window_ms(check.window_ms));
        log.passed
            .len()
            .checked_sub(max)
            .and_then(|i| log.passed.get(i))
            .is_some_and(|&at| at > since)
    }
}

#[derive(Debug, Clone)]
struct Streak {
    code: Option<String>,
    count: u32,
    started_ms: i64,
    window_ms: i64,
    tripped_until_ms: i64,
}

impl MemoryCounters {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_loop_capacity(clock, DEFAULT_LOOP_CAPACITY)
    }

    /// Like [`MemoryCounters::new`] with a different bound on the loop table.
    pub fn with_loop_capacity(clock: Arc<dyn Clock>, loop_capacity: usize) -> Self {
        MemoryCounters {
            clock,
            loop_capacity: loop_capacity.max(1),
            state: Mutex::new(State::default()),
        }
    }

    /// Entries held per table (budgets, rates, parallel, loops, streaks), for
    /// tests and metrics.
    pub fn sizes(&self) -> [usize; 5] {
        let st = self.state.lock();
        [
            st.budgets.len(),
            st.rates.len(),
            st.parallel.len(),
            st.loops.len(),
            st.streaks.len(),
        ]
    }
    /// Drops every budget counter, so each is restored from the ledger on
    /// its next use: `allow_local` does so once the shared counters are
    /// back, since these stopped seeing the spend taken there.
    pub fn forget_budgets(&self) {
        self.state.lock().budgets.clear();
    }
}

fn ms_until(at: i64, now: i64) -> u64 {
    u64::try_from(at.saturating_sub(now)).unwrap_or(0)
}

fn window_ms(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

impl State {
    fn sweep(&mut self, now: i64) {
        if now.saturating_sub(self.last_sweep_ms) < SWEEP_EVERY_MS {
            return;
        }
        self.last_sweep_ms = now;
        self.budgets.retain(|_, b| !b.expired(now));
        self.rates
            .retain(|_, b| gcra::decay(b.level, now - b.last_ms, b.limit) > 0);
        self.parallel.retain(|_, slots| !slots.is_empty());
        let order = &mut self.loop_order;
        self.loops.retain(|_, log| {
            let live = log.end_ms > now;
            if !live {
                order.remove(&log.order);
            }
            live
        });
        self.streaks.retain(|_, s| {
            s.tripped_until_ms > now
                || (s.count > 0 && s.started_ms.saturating_add(s.window_ms) > now)
        });
    }

    fn budget(&self, key: &str, now: i64) -> Option<&Budget> {
        self.budgets.get(key).filter(|b| !b.expired(now))
    }

    /// Creates a budget counter with `spent` unless a live one exists.
    fn seed(&mut self, key: &str, spent: NanoUsd, expires_at_ms: Option<i64>, now: i64) {
        if self.budget(key, now).is_none() {
            self.last_epoch += 1;
            self.budgets.insert(
                key.to_owned(),
                Budget {
                    limit: 0,
                    spent: spent.0,
                    reserved: 0,
                    expires_at_ms,
                    epoch: self.last_epoch,
                },
            );
        }
    }

    fn admit(&mut self, req: &AdmitRequest, now: i64, loop_capacity: usize) -> Admission {
        self.sweep(now);
        // A budget is never decided on a counter that does not exist: its
        // spend must come from the ledger first (`seed_budget`).
        let unseeded: Vec<usize> = req
            .budgets
            .iter()
            .enumerate()
            .filter(|(_, check)| self.budget(&check.key, now).is_none())
            .map(|(index, _)| index)
            .collect();
        if !unseeded.is_empty() {
            return Admission::Unseeded(unseeded);
        }
        let mut would_reject = Vec::new();
        // Decide everything first; a rejection returns before any change.

        for (index, check) in req.streaks.iter().enumerate() {
            if let Some(s) = self
                .streaks
                .get(&check.key)
                .filter(|s| s.tripped_until_ms > now)
            {
                let retry_after_ms = ms_until(s.tripped_until_ms, now);
                if let Some(r) = fail(
                    &mut would_reject,
                    check.enforce,
                    RejectReason::Streak,
                    index,
                    retry_after_ms,
                ) {
                    return Admission::Rejected(r);
                }
            }
        }

        // Each loop check's verdict on this attempt, by check index. A
        // refusal blocks the body for a whole window from now.
        let mut loop_refused = Vec::with_capacity(req.loops.len());
        let mut loop_rejection = None;
        for (index, check) in req.loops.iter().enumerate() {
            let refused = LoopLog::refuses(self.loops.get(&check.key), check, now);
            loop_refused.push(refused);
            if refused && loop_rejection.is_none() {
                let reason = RejectReason::Loop;
                loop_rejection = fail(
                    &mut would_reject,
                    check.enforce,
                    reason,
                    index,
                    check.window_ms,
                );
            }
        }
        if let Some(r) = loop_rejection {
            // A refused attempt still counts: otherwise a loop that keeps
            // hammering would pass again one window after its first refusal.
            self.count_loops(req, &loop_refused, now, loop_capacity);
            return Admission::Rejected(r);
        }

        let states: Vec<BudgetState> = req
            .budgets
            .iter()
            .map(|check| {
                let mut state = self
                    .budget(&check.key, now)
                    .map(Budget::state)
                    .unwrap_or_default();
                state.limit = check.limit;
                state
            })
            .collect();
        let granted = req
            .budgets
            .iter()
            .zip(&states)
            .filter(|(check, _)| check.enforce)
            .map(|(_, state)| state.remaining())
            .fold(req.cost, NanoUsd::min);
        if let Some(index) = blamed_budget(req, &states, granted) {
            let check = &req.budgets[index];
            let retry_after_ms = check.expires_at_ms.map(|at| ms_until(at, now)).unwrap_or(0);
            let reason = RejectReason::Budget(states[index]);
            return Admission::Rejected(Rejection {
                reason,
                index,
                retry_after_ms,
            });
        }
        for (index, (check, state)) in req.budgets.iter().zip(&states).enumerate() {
            let remaining = state.remaining();
            if !check.enforce && (remaining < granted || remaining < check.min) {
                let retry_after_ms = check.expires_at_ms.map(|at| ms_until(at, now)).unwrap_or(0);
                would_reject.push(Rejection {
                    reason: RejectReason::Budget(*state),
                    index,
                    retry_after_ms,
                });
            }
        }
        // New level per rate check, and whether it is taken (not when a
        // non-enforcing check failed).
        let mut rate_levels = Vec::with_capacity(req.rates.len());
        for (index, check) in req.rates.iter().enumerate() {
            let level = self
                .rates
                .get(&check.key)
                .map(|b| b.level_at(now))
                .unwrap_or(0);
            match gcra::take(level, check.limit_per_minute, check.amount) {
                Ok(after) => rate_levels.push((after, true)),
                Err(retry_after_ms) => {
                    if let Some(r) = fail(
                        &mut would_reject,
                        check.enforce,
                        RejectReason::Rate,
                        index,
                        retry_after_ms,
                    ) {
                        return Admission::Rejected(r);
                    }
                    rate_levels.push((level, false));
                }
            }
        }

        let mut slots = Vec::with_capacity(req.parallel.len());
        for (index, check) in req.parallel.iter().enumerate() {
            let held = self.parallel.get(&check.key).map_or(0, |s| s.len());
            if held as u64 >= check.max {
                // No exact wait: a slot frees when some request finishes.
                let reason = RejectReason::Parallel;
                if let Some(r) = fail(&mut would_reject, check.enforce, reason, index, 1_000) {
                    return Admission::Rejected(r);
                }
                continue;
            }
            slots.push(index);
        }

        // Every enforcing check passed: take them all. Every budget counter
        // exists and is live (checked above, under the same lock).
        for check in &req.budgets {
            let Some(budget) = self.budgets.get_mut(&check.key) else {
                continue;
            };
            budget.limit = check.limit.0;
            budget.reserved = budget.reserved.saturating_add(granted.0);
            budget.expires_at_ms = check.expires_at_ms;
        }
        let budgets = req
            .budgets
            .iter()
            .map(|check| {
                let mut state = self
                    .budgets
                    .get(&check.key)
                    .map(Budget::state)
                    .unwrap_or_default();
                state.limit = check.limit;
                state
            })
            .collect();
        let epochs = req
            .budgets
            .iter()
            .map(|check| self.budgets.get(&check.key).map_or(0, |b| b.epoch))
            .collect();
        let mut rates = Vec::with_capacity(req.rates.len());
        for (check, (level, taken)) in req.rates.iter().zip(rate_levels) {
            if taken && level > 0 {
                self.rates.insert(
                    check.key.clone(),
                    Bucket {
                        level,
                        last_ms: now,
                        limit: check.limit_per_minute,
                    },
                );
            }
            rates.push(gcra::state(level, check.limit_per_minute));
        }
        for index in slots {
            let check = &req.parallel[index];
            self.parallel
                .entry(check.key.clone())
                .or_default()
                .insert(req.request_id.clone());
        }
        self.count_loops(req, &loop_refused, now, loop_capacity);
        Admission::Admitted(Grant {
            reserved: granted,
            budgets,
            rates,
            would_reject,
            epochs,
        })
    }

    /// Records this attempt in every loop check of `req`, as passed or (per
    /// `refused`, by check index) refused.
    fn count_loops(&mut self, req: &AdmitRequest, refused: &[bool], now: i64, capacity: usize) {
        for (check, &refused) in req.loops.iter().zip(refused) {
            // Nothing ever passes `max_identical: 0`: no state to keep.
            if check.max_identical == 0 {
                continue;
            }
            let window = window_ms(check.window_ms);
            if !self.loops.contains_key(&check.key) {
                self.make_loop_room(capacity);
                self.loop_seq += 1;
                let order = (now, self.loop_seq);
                self.loop_order.insert(order, check.key.clone());
                let log = LoopLog {
                    passed: VecDeque::new(),
                    blocked_until_ms: i64::MIN,
                    last_ms: now,
                    end_ms: now,
                    order,
                };
                self.loops.insert(check.key.clone(), log);
            }
            let Some(log) = self.loops.get_mut(&check.key) else {
                continue;
            };
            if refused {
                log.blocked_until_ms = now.saturating_add(window);
            } else {
                log.passed.push_back(now);
                while log.passed.len() > check.max_identical as usize {
                    log.passed.pop_front();
                }
            }
            log.last_ms = log.last_ms.max(now);
            log.end_ms = log.end_ms.max(now.saturating_add(window));
        }
    }

    /// Evicts the least recently attempted loop logs until one more fits.
    fn make_loop_room(&mut self, capacity: usize) {
        while self.loops.len() >= capacity {
            let Some(((at, _), oldest)) = self.loop_order.pop_first() else {
                break;
            };
            match self.loops.get_mut(&oldest) {
                // Attempted since its entry was written: requeue it as of then.
                Some(log) if log.last_ms > at => {
                    self.loop_seq += 1;
                    log.order = (log.last_ms, self.loop_seq);
                    self.loop_order.insert(log.order, oldest);
                }
                _ => {
                    self.loops.remove(&oldest);
                }
            }
        }
    }

    fn settle(&mut self, req: &AdmitRequest, grant: &Grant, actual: Actual, now: i64) {
        for (i, check) in req.budgets.iter().enumerate() {
            // A counter that expired meanwhile belongs to a finished period.
            if let Some(b) = self.budgets.get_mut(&check.key) {
                // A counter seeded after the admission never held the
                // reservation (a grant that names no epoch predates them).
                if grant.epochs.get(i).is_none_or(|&e| e == b.epoch) {
                    b.reserved = b.reserved.saturating_sub(grant.reserved.0);
                }
                b.spent = b.spent.saturating_add(actual.cost.0);
            }
        }
        for check in req
            .rates
            .iter()
            .filter(|c| c.key.ends_with(TOKENS_RATE_SUFFIX))
        {
            let limit = check.limit_per_minute;
            let level = self
                .rates
                .get(&check.key)
                .map(|b| b.level_at(now))
                .unwrap_or(0);
            let level = gcra::correct(level, check.amount, actual.tokens);
            // A bucket with no limit never refills: keeping it would leak.
            if level > 0 && limit > 0 {
                self.rates.insert(
                    check.key.clone(),
                    Bucket {
                        level,
                        last_ms: now,
                        limit,
                    },
                );
            } else {
                self.rates.remove(&check.key);
            }
        }
        for check in &req.parallel {
            if let Some(slots) = self.parallel.get_mut(&check.key) {
                slots.remove(&req.request_id);
                if slots.is_empty() {
                    self.parallel.remove(&check.key);
                }
            }
        }
    }

    fn record_outcome(
        &mut self,
        key: &str,
        code: Option<&str>,
        max: u32,
        window: i64,
        now: i64,
    ) -> bool {
        let Some(code) = code else {
            if let Some(s) = self.streaks.get_mut(key) {
                s.code = None;
                s.count = 0;
            }
            return false;
        };
        let s = self.streaks.entry(key.to_owned()).or_insert(Streak {
            code: None,
            count: 0,
            started_ms: now,
            window_ms: window,
            tripped_until_ms: i64::MIN,
        });
        let continues = s.count > 0
            && s.code.as_deref() == Some(code)
            && now < s.started_ms.saturating_add(window);
        if continues {
            s.count += 1;
        } else {
            *s = Streak {
                code: Some(code.to_owned()),
                count: 1,
                started_ms: now,
                window_ms: window,
                tripped_until_ms: s.tripped_until_ms,
            };
        }
        s.window_ms = window;
        if s.count > max && s.tripped_until_ms <= now {
            s.tripped_until_ms = now.saturating_add(window);
            // The next trip needs a fresh streak of its own.
            s.count = 0;
            s.code = None;
            return true;
        }
        false
    }
}

/// The rejection of an enforcing check; a failing non-enforcing check is
/// only recorded in `would_reject`.
fn fail(
    would_reject: &mut Vec<Rejection>,
    enforce: bool,
    reason: RejectReason,
    index: usize,
    retry_after_ms: u64,
) -> Option<Rejection> {
    let rejection = Rejection {
        reason,
        index,
        retry_after_ms,
    };
    if enforce {
        return Some(rejection);
    }
    would_reject.push(rejection);
    None
}

/// The enforcing budget a rejection names, if any: the first one that cannot
/// fit its own minimum, else (when another budget's clamp pushed the grant
/// below some minimum) the one with the least remaining.
fn blamed_budget(req: &AdmitRequest, states: &[BudgetState], granted: NanoUsd) -> Option<usize> {
    let enforcing = || {
        req.budgets
            .iter()
            .zip(states)
            .enumerate()
            .filter(|(_, (c, _))| c.enforce)
    };
    if let Some((index, _)) = enforcing().find(|(_, (c, s))| s.remaining() < c.min) {
        return Some(index);
    }
    if enforcing().any(|(_, (c, _))| granted < c.min) {
        return enforcing()
            .min_by_key(|(_, (_, s))| s.remaining())
            .map(|(index, _)| index);
    }
    None
}

#[async_trait]
impl Counters for MemoryCounters {
    async fn admit(&self, req: &AdmitRequest) -> Result<Admission, CountersError> {
        let now = self.clock.now_ms();
        Ok(self.state.lock().admit(req, now, self.loop_capacity))
    }

    async fn settle(
        &self,
        req: &AdmitRequest,
        grant: &Grant,
        actual: Actual,
    ) -> Result<(), CountersError> {
        let now = self.clock.now_ms();
        self.state.lock().settle(req, grant, actual, now);
        Ok(())
    }

    async fn seed_budget(
        &self,
        key: &str,
        spent: NanoUsd,
        expires_at_ms: Option<i64>,
    ) -> Result<(), CountersError> {
        let now = self.clock.now_ms();
        self.state.lock().seed(key, spent, expires_at_ms, now);
        Ok(())
    }

    async fn budget(&self, key: &str) -> Result<Option<BudgetState>, CountersError> {
        let now = self.clock.now_ms();
        Ok(self.state.lock().budget(key, now).map(Budget::state))
    }

    async fn record_outcome(
        &self,
        streak_key: &str,
        error_code: Option<&str>,
        max: u32,
        window_ms: u64,
    ) -> Result<bool, CountersError> {
        let now = self.clock.now_ms();
        let window = self::window_ms(window_ms);
        Ok(self
            .state
            .lock()
            .record_outcome(streak_key, error_code, max, window, now))
    }

    async fn ping(&self) -> Result<(), CountersError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Utc};
    use proptest::prelude::*;

    use super::*;
    use crate::counters::conformance::{
        self, admit, budget, granted, looped, rate, read, rejected, request, seed, streak,
    };
    use crate::counters::{BudgetCheck, LoopCheck, RateCheck};
    use crate::types::ManualClock;

    fn setup() -> (Arc<ManualClock>, Arc<MemoryCounters>) {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap(),
        ));
        let counters = Arc::new(MemoryCounters::new(clock.clone()));
        (clock, counters)
    }

    async fn fresh() -> Arc<dyn Counters> {
        setup().1
    }

    async fn timed() -> (Arc<dyn Counters>, Arc<ManualClock>) {
        let (clock, counters) = setup();
        (counters, clock)
    }

    conformance::conformance_tests!(fresh(), timed());

    #[tokio::test]
    async fn gcra_holds_over_a_window_and_refills_smoothly() {
        let (clock, c) = setup();
        let mut req = request("r", 0);
        req.rates = vec![rate("rpm", 60, 1)];
        for _ in 0..60 {
            granted(admit(&*c, &req).await);
        }
        // One per second after the burst: exact retry, no fixed-window edge.
        assert_eq!(rejected(admit(&*c, &req).await).retry_after_ms, 1_000);
        clock.advance(Duration::milliseconds(999));
        assert_eq!(rejected(admit(&*c, &req).await).retry_after_ms, 1);
        clock.advance(Duration::milliseconds(1));
        let g = granted(admit(&*c, &req).await);
        assert_eq!(g.rates[0].remaining, 0);
        assert_eq!(g.rates[0].reset_ms, 60_000);
        // Across a whole minute no more than 60 + 60 pass: the bucket never
        // holds more than one minute's allowance.
        let mut passed = 0;
        for _ in 0..600 {
            clock.advance(Duration::milliseconds(100));
            if let Admission::Admitted(_) = admit(&*c, &req).await {
                passed += 1;
            }
        }
        assert_eq!(passed, 60);
        clock.advance(Duration::minutes(5));
        let g = granted(admit(&*c, &req).await);
        assert_eq!(g.rates[0].remaining, 59);
    }

    #[tokio::test]
    async fn a_tokens_refund_never_creates_credit_beyond_capacity() {
        let (_, c) = setup();
        let mut req = request("r", 0);
        req.rates = vec![rate("k:tpm", 1_000, 500)];
        let g = granted(admit(&*c, &req).await);
        c.settle(
            &req,
            &g,
            Actual {
                cost: NanoUsd(0),
                tokens: 0,
                ledger_seq: 0,
            },
        )
        .await
        .unwrap();
        req.rates[0].amount = 1_000;
        granted(admit(&*c, &req).await);
        req.rates[0].amount = 1;
        assert_eq!(rejected(admit(&*c, &req).await).reason, RejectReason::Rate);
    }

    #[tokio::test]
    async fn a_refused_attempt_restarts_the_wait_and_the_window_slides() {
        let (clock, c) = setup();
        let mut req = request("r", 0);
        req.loops = vec![looped("fp", 2, 10_000)];
        granted(admit(&*c, &req).await);
        clock.advance(Duration::seconds(4));
        granted(admit(&*c, &req).await);
        clock.advance(Duration::seconds(4));
        assert_eq!(rejected(admit(&*c, &req).await).retry_after_ms, 10_000);
        // Retrying before the wait is over refuses again and restarts it.
        clock.advance(Duration::seconds(9));
        assert_eq!(rejected(admit(&*c, &req).await).retry_after_ms, 10_000);
        clock.advance(Duration::milliseconds(9_999));
        rejected(admit(&*c, &req).await);
        clock.advance(Duration::seconds(10));
        granted(admit(&*c, &req).await);
        // The window slides: 11 s after the first of two, the second (5 s
        // ago) still counts, so one passes and the next is refused where a
        // fixed window would have opened afresh for two.
        clock.advance(Duration::seconds(6));
        granted(admit(&*c, &req).await);
        clock.advance(Duration::seconds(5));
        granted(admit(&*c, &req).await);
        clock.advance(Duration::seconds(1));
        assert_eq!(rejected(admit(&*c, &req).await).retry_after_ms, 10_000);
    }

    #[tokio::test]
    async fn streak_trips_only_within_its_window_and_lasts_one_window() {
        let (clock, c) = setup();
        assert!(!c.record_outcome("s", Some("e"), 1, 10_000).await.unwrap());
        clock.advance(Duration::seconds(11));
        // The streak began too long ago: this starts a new one.
        assert!(!c.record_outcome("s", Some("e"), 1, 10_000).await.unwrap());
        assert!(c.record_outcome("s", Some("e"), 1, 10_000).await.unwrap());
        let mut req = request("r", 0);
        req.streaks = vec![streak("s")];
        clock.advance(Duration::seconds(3));
        assert_eq!(rejected(admit(&*c, &req).await).retry_after_ms, 7_000);
        clock.advance(Duration::seconds(7));
        granted(admit(&*c, &req).await);
    }

    #[tokio::test]
    async fn budget_counters_expire_with_their_period() {
        let (clock, c) = setup();
        let now = clock.now_ms();
        let mut req = request("r", 10);
        req.budgets = vec![BudgetCheck {
            expires_at_ms: Some(now + 60_000),
            ..budget("day", 10, 10)
        }];
        seed(&*c, &req).await;
        granted(admit(&*c, &req).await);
        let r = rejected(admit(&*c, &req).await);
        assert_eq!(r.retry_after_ms, 60_000);
        clock.advance(Duration::minutes(1));
        assert_eq!(c.budget("day").await.unwrap(), None);
        // An expired counter is a missing one: admit asks for a seed.
        assert_eq!(admit(&*c, &req).await, Admission::Unseeded(vec![0]));
        // A seed for an expired counter takes effect.
        c.seed_budget("day", NanoUsd(3), Some(now + 120_000))
            .await
            .unwrap();
        assert_eq!(read(&*c, "day").await.spent, NanoUsd(3));
    }

    #[tokio::test]
    async fn expired_state_is_swept() {
        let (clock, c) = setup();
        let now = clock.now_ms();
        for i in 0..100 {
            let mut req = request(&format!("r{i}"), 1);
            req.budgets = vec![BudgetCheck {
                expires_at_ms: Some(now + 1_000),
                ..budget(&format!("b{i}"), 10, 1)
            }];
            req.rates = vec![rate(&format!("rate{i}"), 60, 1)];
            req.loops = vec![looped(&format!("l{i}"), 5, 1_000)];
            seed(&*c, &req).await;
            granted(admit(&*c, &req).await);
            c.record_outcome(&format!("s{i}"), Some("e"), 5, 1_000)
                .await
                .unwrap();
        }
        assert_eq!(c.sizes(), [100, 100, 0, 100, 100]);
        clock.advance(Duration::seconds(61));
        granted(admit(&*c, &request("sweep", 0)).await);
        assert_eq!(c.sizes(), [0, 0, 0, 0, 0]);
    }

    #[tokio::test]
    async fn the_loop_table_is_bounded_and_evicts_the_oldest() {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap(),
        ));
        let c = MemoryCounters::with_loop_capacity(clock.clone(), 10);
        let req_for = |key: &str| AdmitRequest {
            loops: vec![LoopCheck {
                key: key.to_owned(),
                max_identical: 1,
                window_ms: 60_000,
                enforce: true,
            }],
            ..request("r", 0)
        };
        for i in 0..25 {
            clock.advance(Duration::milliseconds(1));
            granted(admit(&c, &req_for(&format!("fp{i}"))).await);
        }
        assert_eq!(c.sizes()[3], 10);
        // The newest are still counted; the oldest were forgotten.
        rejected(admit(&c, &req_for("fp24")).await);
        granted(admit(&c, &req_for("fp0")).await);
    }

    #[tokio::test]
    async fn a_full_loop_table_evicts_the_least_recently_attempted_body() {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap(),
        ));
        let c = MemoryCounters::with_loop_capacity(clock.clone(), 2);
        let req_for = |key: &str| AdmitRequest {
            loops: vec![looped(key, 1, 60_000)],
            ..request("r", 0)
        };
        granted(admit(&c, &req_for("hammered")).await);
        clock.advance(Duration::milliseconds(1));
        granted(admit(&c, &req_for("once")).await);
        // The loop goes on: it is the most recent, though it started first.
        clock.advance(Duration::milliseconds(1));
        rejected(admit(&c, &req_for("hammered")).await);
        clock.advance(Duration::milliseconds(1));
        granted(admit(&c, &req_for("new")).await);
        assert_eq!(c.sizes()[3], 2);
        rejected(admit(&c, &req_for("hammered")).await);
    }

    #[tokio::test]
    async fn a_limit_change_keeps_the_consumed_share() {
        let (_, c) = setup();
        let mut req = request("r", 0);
        req.rates = vec![RateCheck {
            key: "rpm".into(),
            limit_per_minute: 10,
            amount: 5,
            enforce: true,
        }];
        granted(admit(&*c, &req).await);
        req.rates[0].limit_per_minute = 20;
        req.rates[0].amount = 1;
        // The 5 taken still count against the new limit: 14 left after this one.
        assert_eq!(granted(admit(&*c, &req).await).rates[0].remaining, 14);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit { cost: u64, min_share: u64 },
        Settle { pick: usize, actual_share: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..500, 0u64..=100).prop_map(|(cost, min_share)| Op::Admit { cost, min_share }),
            (any::<usize>(), 0u64..=100)
                .prop_map(|(pick, actual_share)| Op::Settle { pick, actual_share }),
        ]
    }

    proptest! {
        /// Actual costs stay within the reservation here, so an enforcing
        /// budget's spent + reserved must never pass its limit.
        #[test]
        fn reserve_and_settle_never_overshoot_or_leak(
            limits in [1u64..2_000, 1u64..2_000],
            enforce in any::<[bool; 2]>(),
            ops in proptest::collection::vec(op(), 1..150),
        ) {
            let mut st = State::default();
            for i in 0..2 {
                st.seed(&format!("b{i}"), NanoUsd(0), None, 0);
            }
            let mut open: Vec<(AdmitRequest, Grant)> = Vec::new();
            let mut actual_total = 0u64;
            let mut n = 0;
            for op in ops {
                match op {
                    Op::Admit { cost, min_share } => {
                        n += 1;
                        let min = cost * min_share / 100;
                        let mut req = request(&format!("r{n}"), cost);
                        req.budgets = (0..2)
                            .map(|i| BudgetCheck { enforce: enforce[i], ..budget(&format!("b{i}"), limits[i], min) })
                            .collect();
                        if let Admission::Admitted(g) = st.admit(&req, 0, 10) {
                            prop_assert!(g.reserved.0 <= cost);
                            prop_assert!(g.reserved.0 >= min || !enforce.contains(&true));
                            open.push((req, g));
                        }
                    }
                    Op::Settle { pick, actual_share } => {
                        if open.is_empty() {
                            continue;
                        }
                        let (req, g) = open.swap_remove(pick % open.len());
                        let actual = g.reserved.0 * actual_share / 100;
                        actual_total += actual;
                        st.settle(&req, &g, Actual { cost: NanoUsd(actual), tokens: 0, ledger_seq: 0 }, 0);
                    }
                }
                let held: u64 = open.iter().map(|(_, g)| g.reserved.0).sum();
                for i in 0..2 {
                    let Some(b) = st.budget(&format!("b{i}"), 0) else { continue };
                    prop_assert_eq!(b.reserved, held);
                    prop_assert_eq!(b.spent, actual_total);
                    if enforce[i] {
                        prop_assert!(b.spent + b.reserved <= limits[i], "{b:?} over {}", limits[i]);
                    }
                }
            }
            for (req, g) in open.drain(..) {
                actual_total += g.reserved.0;
                st.settle(&req, &g, Actual { cost: g.reserved, tokens: 0, ledger_seq: 0 }, 0);
            }
            for i in 0..2 {
                if let Some(b) = st.budget(&format!("b{i}"), 0) {
                    prop_assert_eq!(b.reserved, 0);
                    prop_assert_eq!(b.spent, actual_total);
                }
            }
        }
    }
}
