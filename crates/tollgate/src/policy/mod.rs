//! The policy engine: turns the config, the caller and facts about a request
//! into one atomic [`Counters::admit`] (budgets, rate limits, parallelism,
//! loop guards), settles it to the actual usage, checks model access, counts
//! what shadow policies would have refused, fires alert webhooks and reports
//! budgets for `/admin/budgets`. It never sees HTTP requests.

mod alerts;
pub mod estimate;
mod estimate_bpe;
pub mod estimate_native;
mod messages;
mod resolve;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Duration, Utc};
use http::{HeaderName, HeaderValue};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use alerts::AlertEvent;

use crate::auth::KeyCache;
use crate::config::{
    Config, CostAction, CostLimit, LoopGuard, ModelConfig, OnInsufficient, OnTrip, PolicyKind,
    PolicyMode,
};
use crate::counters::{
    Actual, Admission, AdmitRequest, BudgetCheck, BudgetRebuild, Counters, CountersError, Grant,
    LoopCheck, ParallelCheck, RateCheck, RejectReason, Rejection, StreakCheck,
};
use crate::error::ApiError;
use crate::providers::Usage;
use crate::store::{KeyRecord, SpendScope, Store, TeamRecord};
use crate::types::{Clock, KeyId, NanoUsd, Price, TeamId};
use resolve::{Applied, Scope};

/// The caller of a request.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub key: &'a KeyRecord,
    /// The API-created team record, if the key's team is one; config teams
    /// come from `config.team(key.team)`.
    pub team: Option<&'a TeamRecord>,
}

/// The policies in force for one request's caller ([`PolicyEngine::resolve`]).
#[derive(Debug)]
pub struct Resolved<'a>(Vec<Applied<'a>>);

/// What the policy layer needs to know about a request.
#[derive(Debug, Clone)]
pub struct RequestFacts<'a> {
    pub request_id: &'a str,
    pub model: &'a ModelConfig,
    /// From [`estimate::input_tokens`], counted only if a policy needs it.
    pub input_tokens: InputTokens<'a>,
    /// The output the request may generate, all choices and prompts
    /// together: its per-choice cap (`max_tokens`/`max_completion_tokens`,
    /// else the model's `max_output_tokens`) times `output_multiplier`.
    pub max_output_tokens: u64,
    /// How many times the provider generates the per-choice cap (`n` or
    /// `best_of`, times the prompts of a prompt list); at least 1.
    pub output_multiplier: u64,
    /// The raw request body, for the loop-guard fingerprint.
    pub body: &'a [u8],
}

/// The input-token estimate of a request, counted on first use. A real BPE
/// count costs microseconds per request and its tables tens of MiB; a key
/// with no budget and no token limit needs neither.
#[derive(Clone)]
pub struct InputTokens<'a> {
    count: Option<&'a (dyn Fn() -> u64 + Sync)>,
    value: OnceLock<u64>,
}

impl<'a> InputTokens<'a> {
    pub fn known(n: u64) -> Self {
        InputTokens {
            count: None,
            value: OnceLock::from(n),
        }
    }

    pub fn lazy(count: &'a (dyn Fn() -> u64 + Sync)) -> Self {
        InputTokens {
            count: Some(count),
            value: OnceLock::new(),
        }
    }

    pub fn get(&self) -> u64 {
        *self
            .value
            .get_or_init(|| self.count.map_or(0, |count| count()))
    }

    /// The count, if something needed it.
    pub fn counted(&self) -> Option<u64> {
        self.value.get().copied()
    }
}

impl std::fmt::Debug for InputTokens<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.counted() {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("(not counted)"),
        }
    }
}

/// An admitted request: what it reserved, until [`PolicyEngine::settle`].
#[derive(Debug)]
pub struct Admitted {
    /// `Some(n)`: an `on_insufficient: clamp` budget lowered the output to
    /// `n` tokens per choice; the handler caps the request at `n`.
    pub clamp_max_tokens: Option<u64>,
    /// When it was admitted: the period its spend is charged to, so its
    /// ledger row must carry this time too, not the time it ended.
    pub at: DateTime<Utc>,
    /// `x-ratelimit-*` and `x-tollgate-budget-remaining-usd`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    price: Price,
    /// `None` when no counter-backed policy applies.
    plan: Option<Box<Plan>>,
    /// `policy:code` of each shadow policy that would have refused this
    /// request, for the request log.
    would_reject: Vec<String>,
}

impl Admitted {
    /// An admission that reserved nothing (no counter-backed policy).
    pub fn unlimited(price: Price, at: DateTime<Utc>) -> Self {
        Admitted {
            clamp_max_tokens: None,
            at,
            headers: Vec::new(),
            price,
            plan: None,
            would_reject: Vec::new(),
        }
    }

    /// `policy:code` of each shadow policy that would have refused this
    /// request (for the request log line); empty when none did.
    pub fn would_reject(&self) -> &[String] {
        &self.would_reject
    }

    /// Moves [`Admitted::would_reject`] out, for the ledger row.
    pub fn take_would_reject(&mut self) -> Vec<String> {
        std::mem::take(&mut self.would_reject)
    }

    /// Whether an enforcing budget or token limit reserved the request's
    /// output: then it must be sent with an explicit output cap no larger
    /// than the reservation, and it is never billed above it.
    pub fn enforces_output(&self) -> bool {
        self.plan
            .as_ref()
            .is_some_and(|plan| plan.enforces_output())
    }

    /// What the request costs for `outcome`, at the model's price. Under an
    /// enforced reservation, a usage that costs more than the reservation
    /// is one the provider cannot have billed for a request that carried
    /// our cap (absurd numbers, a server ignoring `max_tokens`): it is billed
    /// at the reservation, so the budget's cap holds, and logged.
    pub fn cost(&self, outcome: &Outcome) -> NanoUsd {
        let cost = outcome.usage.map_or(NanoUsd::ZERO, |u| {
            self.price
                .cost_with_cache(u.prompt_tokens, u.cache(), u.completion_tokens)
        });
        let reserved = self.reserved();
        if cost > reserved && self.enforces_output() {
            metrics::counter!("tollgate_usage_over_reservation_total").increment(1);
            tracing::warn!(
                request_id = self.plan.as_ref().map_or("", |p| p.req.request_id.as_str()),
                usage = ?outcome.usage,
                cost = %cost,
                reserved = %reserved,
                "the provider reported more usage than the request's cap allows; billing the reservation"
            );
            return reserved;
        }
        cost
    }

    /// The cost and the budget left once this request is settled to
    /// `outcome`, computed from the admission's own view of the counters
    /// (no round trip), so a response can carry them before the
    /// settlement itself has run.
    pub fn settled(&self, outcome: &Outcome) -> Settled {
        let cost = self.cost(outcome);
        let budget_remaining = self.plan.as_ref().and_then(|plan| {
            plan.used_after(cost)
                .filter(|(_, meta, _)| meta.named.mode != PolicyMode::Shadow)
                .map(|(_, meta, used)| meta.limit.limit.saturating_sub(used))
                .min()
        });
        Settled {
            cost,
            budget_remaining,
        }
    }

    /// What was reserved on every budget.
    pub fn reserved(&self) -> NanoUsd {
        self.plan
            .as_ref()
            .map_or(NanoUsd::ZERO, |p| p.grant.reserved)
    }
}

/// How a request ended.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// What the provider reported, or what the handler counted for a stream
    /// cut short ([`estimate::text_tokens`]); `None` when nothing was generated.
    pub usage: Option<Usage>,
    pub error_code: Option<String>,
    /// The number of the request's ledger row (`LedgerHandle::record`);
    /// 0 when it has none.
    pub ledger_seq: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    /// For `x-tollgate-cost-usd` and the ledger.
    pub cost: NanoUsd,
    /// Least remaining over the cost-limits in force, after this request.
    pub budget_remaining: Option<NanoUsd>,
}

/// One row of `GET /admin/budgets`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BudgetReport {
    /// `team` or `key`.
    pub scope: &'static str,
    pub id: String,
    pub team: String,
    pub policy: String,
    /// `enforce` or `shadow`.
    pub mode: &'static str,
    /// `reject` or `alert`.
    pub action: &'static str,
    pub period: &'static str,
    pub limit_usd: f64,
    pub spent_usd: f64,
    pub reserved_usd: f64,
    pub remaining_usd: f64,
    /// RFC 3339; `null` for `total` budgets.
    pub resets_at: Option<String>,
    /// Requests this policy would have rejected (shadow mode) since start.
    pub would_reject: u64,
}

/// Which policy, counting whom.
#[derive(Debug, Clone)]
struct Named {
    policy: String,
    scope: Scope,
    scope_id: String,
    mode: PolicyMode,
}

impl Named {
    fn from_applied(a: &Applied<'_>) -> Self {
        Named {
            policy: a.name.to_owned(),
            scope: a.scope,
            scope_id: a.scope_id.to_owned(),
            mode: a.mode,
        }
    }

    fn describe(&self) -> String {
        format!(
            "`{}` ({} `{}`)",
            self.policy,
            self.scope.as_str(),
            self.scope_id
        )
    }
}

#[derive(Debug)]
struct BudgetMeta {
    named: Named,
    limit: CostLimit,
    start: DateTime<Utc>,
    end: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Requests,
    Tokens,
}

#[derive(Debug)]
struct RateMeta {
    named: Named,
    unit: Unit,
}

#[derive(Debug)]
struct LoopMeta {
    named: Named,
    guard: LoopGuard,
}

/// The checks of one request and, index for index, the policies behind them.
#[derive(Debug)]
struct Plan {
    req: AdmitRequest,
    grant: Grant,
    team: String,
    key: String,
    budgets: Vec<BudgetMeta>,
    rates: Vec<RateMeta>,
    parallel: Vec<Named>,
    loops: Vec<LoopMeta>,
    streaks: Vec<LoopMeta>,
}

impl Plan {
    /// Each budget's spend once this request's reservation is replaced by
    /// `cost`, with other requests' reservations still in.
    fn used_after(&self, cost: NanoUsd) -> impl Iterator<Item = (usize, &BudgetMeta, NanoUsd)> {
        self.budgets
            .iter()
            .zip(&self.grant.budgets)
            .enumerate()
            .map(move |(index, (meta, state))| {
                let others = state.reserved.saturating_sub(self.grant.reserved);
                (
                    index,
                    meta,
                    state.spent.saturating_add(others).saturating_add(cost),
                )
            })
    }

    fn enforces_output(&self) -> bool {
        let enforcing_budget = self.req.budgets.iter().any(|b| b.enforce);
        let enforcing_tokens = self
            .rates
            .iter()
            .zip(&self.req.rates)
            .any(|(meta, check)| meta.unit == Unit::Tokens && check.enforce);
        enforcing_budget || enforcing_tokens
    }

    /// Leaves out every budget and token limit (see
    /// [`PolicyEngine::admit_cached`]).
    fn spend_nothing(&mut self) {
        self.req.cost = NanoUsd::ZERO;
        self.req.budgets.clear();
        self.budgets.clear();
        let (checks, metas) = std::mem::take(&mut self.req.rates)
            .into_iter()
            .zip(std::mem::take(&mut self.rates))
            .filter(|(_, meta)| meta.unit == Unit::Requests)
            .unzip();
        self.req.rates = checks;
        self.rates = metas;
    }

    /// Keeps only budgets and token limits (see
    /// [`PolicyEngine::admit_retry`]).
    fn spend_only(&mut self) {
        self.req.parallel.clear();
        self.parallel.clear();
        self.req.loops.clear();
        self.loops.clear();
        self.req.streaks.clear();
        self.streaks.clear();
        let (checks, metas) = std::mem::take(&mut self.req.rates)
            .into_iter()
            .zip(std::mem::take(&mut self.rates))
            .filter(|(_, meta)| meta.unit == Unit::Tokens)
            .unzip();
        self.req.rates = checks;
        self.rates = metas;
    }

    fn is_empty(&self) -> bool {
        let r = &self.req;
        r.budgets.is_empty()
            && r.rates.is_empty()
            && r.parallel.is_empty()
            && r.loops.is_empty()
            && r.streaks.is_empty()
    }

    fn named(&self, reason: &RejectReason, index: usize) -> Option<&Named> {
        match reason {
            RejectReason::Budget(_) => self.budgets.get(index).map(|m| &m.named),
            RejectReason::Rate => self.rates.get(index).map(|m| &m.named),
            RejectReason::Parallel => self.parallel.get(index),
            RejectReason::Loop => self.loops.get(index).map(|m| &m.named),
            RejectReason::Streak => self.streaks.get(index).map(|m| &m.named),
        }
    }
}

/// Error codes the gateway's own policies answer with: they do not feed the
/// error-streak guard, or a client looping on a 402 would be turned into a
/// 429 that SDKs retry, and a throttled client would never clear.
const OWN_CODES: [&str; 4] = [
    "budget_exceeded",
    "rate_limit_exceeded",
    "loop_detected",
    "counters_unavailable",
];
/// The least budget left over the cost-limits in force (SPEC §3).
pub const BUDGET_REMAINING_HEADER: &str = "x-tollgate-budget-remaining-usd";
/// Bound on remembered shadow counts (policy × scope); beyond it only the
/// metric counts.
const WOULD_REJECT_CAPACITY: usize = 100_000;
/// Admits tried for one request while budget counters keep vanishing between
/// their restore and the admit (a Redis emptied again at that moment).
const ADMIT_ATTEMPTS: usize = 3;
/// Tokens one request may take from a token rate limit. A limit is never
/// near it, and GCRA's arithmetic (tokens x 60,000 ms) stays exact in the
/// doubles of Redis Lua.
const MAX_REQUEST_TOKENS: u64 = 1_000_000_000;
const COUNTERS_DOWN: &str = "shared counters (Redis) are unreachable; requests for budgeted or rate-limited keys are \
                             refused until they return";

pub struct PolicyEngine {
    counters: Arc<dyn Counters>,
    store: Arc<dyn Store>,
    keys: KeyCache,
    clock: Arc<dyn Clock>,
    /// Restores of budget counters from the ledger that are running now.
    /// The counters themselves say when one is needed (`Admission::Unseeded`,
    /// on every admit, so a counter lost mid-period is noticed on the next
    /// request); this only makes requests that find the same counter missing
    /// at once share one ledger query. An entry is dropped as soon as its
    /// restore has finished.
    restoring: moka::future::Cache<String, ()>,
    /// Shadow rejections by (policy, scope, scope id).
    would_reject: parking_lot::Mutex<HashMap<(String, Scope, String), u64>>,
    /// Loop-guard counters that tripped, with when the trip ends: one alert
    /// and one suspension per trip, not one per refused request.
    loop_trips: moka::sync::Cache<String, i64>,
    alerts: alerts::Alerter,
    /// Flushed before a budget is restored from the ledger, so the restore
    /// counts this process's own rows that are not written yet.
    ledger: Option<crate::store::ledger::LedgerHandle>,
}

impl PolicyEngine {
    pub fn new(
        counters: Arc<dyn Counters>,
        store: Arc<dyn Store>,
        keys: KeyCache,
        clock: Arc<dyn Clock>,
        http: reqwest::Client,
    ) -> Self {
        let alerts = alerts::Alerter::new(counters.clone(), http, clock.clone());
        PolicyEngine {
            counters,
            store,
            keys,
            clock,
            restoring: moka::future::Cache::builder().max_capacity(100_000).build(),
            would_reject: parking_lot::Mutex::new(HashMap::new()),
            loop_trips: moka::sync::Cache::builder().max_capacity(10_000).build(),
            alerts,
            ledger: None,
        }
    }

    /// Lets budget restores include the rows this process has not written
    /// yet (see [`PolicyEngine::admit`]).
    pub fn with_ledger(mut self, ledger: crate::store::ledger::LedgerHandle) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// 403 `model_not_allowed` unless every model-access glob set in force
    /// (team config `models`, API team `models`, key `models`, and
    /// `model-access` policies on team/key/defaults) allows `model`. On
    /// success, `policy:model_not_allowed` of each shadow `model-access`
    /// policy that would have refused it, for the request log (empty, and
    /// not allocated, when none would).
    pub fn check_model_access(
        &self,
        config: &Config,
        who: &Subject<'_>,
        model: &str,
    ) -> Result<Vec<String>, ApiError> {
        let resolved = Self::resolve(config, who)?;
        self.check_model_access_resolved(config, who, model, &resolved)
    }

    /// The policies in force for `who`, resolved once per request: the
    /// pipeline passes them to [`Self::check_model_access_resolved`] and
    /// [`Self::admit_resolved`] instead of resolving them for each.
    pub fn resolve<'a>(config: &'a Config, who: &Subject<'a>) -> Result<Resolved<'a>, ApiError> {
        resolve::applied(config, who.key, who.team)
            .map(Resolved)
            .map_err(|m| ApiError::Internal(m.message()))
    }

    /// [`Self::check_model_access`] on policies already resolved for `who`.
    pub fn check_model_access_resolved(
        &self,
        config: &Config,
        who: &Subject<'_>,
        model: &str,
        resolved: &Resolved<'_>,
    ) -> Result<Vec<String>, ApiError> {
        let mut would_reject = Vec::new();
        for rule in access_rules(config, who, &resolved.0) {
            if rule.allows(model) {
                continue;
            }
            let globs: Vec<String> = rule.globs.iter().map(|g| format!("`{g}`")).collect();
            let message = format!(
                "model `{model}` is not allowed for key `{}` (team `{}`): {} allows only {}",
                who.key.id,
                who.key.team,
                rule.describe(who),
                globs.join(", ")
            );
            if rule.mode == PolicyMode::Shadow {
                if let AccessSource::Policy {
                    name,
                    scope,
                    scope_id,
                } = rule.source
                {
                    self.count_would_reject(
                        Some(name),
                        scope,
                        scope_id,
                        "model_not_allowed",
                        &message,
                    );
                    would_reject.push(format!("{name}:model_not_allowed"));
                }
                continue;
            }
            metrics::counter!("tollgate_policy_rejections_total", "policy" => rule.label(), "code" => "model_not_allowed")
                .increment(1);
            return Err(ApiError::ModelNotAllowed(message));
        }
        Ok(would_reject)
    }

    /// Whether `model` passes model access, for `/v1/models`.
    pub fn model_allowed(&self, config: &Config, who: &Subject<'_>, model: &str) -> bool {
        let Ok(applied) = resolve::applied(config, who.key, who.team) else {
            return false;
        };
        access_rules(config, who, &applied)
            .iter()
            .all(|r| r.mode == PolicyMode::Shadow || r.allows(model))
    }

    /// Budgets, rate limits, parallelism, loop guard, error streak: one
    /// `Counters::admit`. Errors: 402 `budget_exceeded`, 429
    /// `rate_limit_exceeded` / `loop_detected`, 503 `counters_unavailable`.
    pub async fn admit(
        &self,
        config: &Config,
        who: &Subject<'_>,
        facts: &RequestFacts<'_>,
    ) -> Result<Admitted, ApiError> {
        let resolved = Self::resolve(config, who)?;
        self.admit_as(config, who, facts, &resolved.0, true).await
    }

    /// [`Self::admit`] on policies already resolved for `who` (by
    /// [`Self::resolve`], for the same config).
    pub async fn admit_resolved(
        &self,
        config: &Config,
        who: &Subject<'_>,
        facts: &RequestFacts<'_>,
        resolved: &Resolved<'_>,
    ) -> Result<Admitted, ApiError> {
        self.admit_as(config, who, facts, &resolved.0, true).await
    }

    /// [`Self::admit`] for an answer served from the response cache: it
    /// costs nothing, so no budget and no token limit is asked (an
    /// exhausted budget does not refuse it), but it still takes a request
    /// from the rate limits and a parallel slot, and counts for the loop
    /// guard. Settled like any admission; its price is zero, so whatever
    /// usage it is settled with bills $0.
    pub async fn admit_cached(
        &self,
        config: &Config,
        who: &Subject<'_>,
        facts: &RequestFacts<'_>,
        resolved: &Resolved<'_>,
    ) -> Result<Admitted, ApiError> {
        self.admit_as(config, who, facts, &resolved.0, false).await
    }

    /// Another worst case for a retry after an attempt that may have been
    /// billed (a timeout or a lost answer, see
    /// `crate::routing::retry::Next::Billed`): the lost attempt keeps its
    /// reservation, to be billed in full, and the retry needs one of its own,
    /// so that both fit every cap. Only budgets and token limits are asked
    /// (the request was counted once for rate limits, parallel slots and
    /// the loop guard). `Ok(None)`: no room for the whole worst case
    /// again (a clamp to less is not a retry of the same request), or the
    /// counters could not say; then there is no retry.
    /// `attempt` makes the reservation's id distinct from the request's.
    pub async fn admit_retry(
        &self,
        config: &Config,
        who: &Subject<'_>,
        facts: &RequestFacts<'_>,
        attempt: u32,
    ) -> Option<Admitted> {
        let applied = resolve::applied(config, who.key, who.team).ok()?;
        let now = self.clock.now();
        let mut plan = build_plan(who, facts, &applied, now);
        plan.spend_only();
        plan.req.request_id = format!("{}#retry{attempt}", plan.req.request_id);
        if plan.is_empty() {
            return Some(Admitted::unlimited(facts.model.price, now));
        }
        let grant = match self.counters.admit(&plan.req).await {
            Ok(Admission::Admitted(grant)) => grant,
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(error = %e, request_id = %plan.req.request_id,
                    "cannot reserve for a retry; not retrying");
                return None;
            }
        };
        if grant.reserved < plan.req.cost {
            if let Err(e) = self
                .counters
                .settle(&plan.req, &grant, Actual::default())
                .await
            {
                tracing::error!(error = %e, request_id = %plan.req.request_id,
                    "cannot release a retry's reservation; it stays reserved until the counter expires");
            }
            return None;
        }
        plan.grant = grant;
        Some(Admitted {
            clamp_max_tokens: None,
            at: now,
            headers: Vec::new(),
            price: facts.model.price,
            plan: Some(Box::new(plan)),
            would_reject: Vec::new(),
        })
    }

    async fn admit_as(
        &self,
        config: &Config,
        who: &Subject<'_>,
        facts: &RequestFacts<'_>,
        applied: &[Applied<'_>],
        spends: bool,
    ) -> Result<Admitted, ApiError> {
        let price = if spends {
            facts.model.price
        } else {
            Price::default()
        };
        let now = self.clock.now();
        let mut plan = build_plan(who, facts, applied, now);
        if !spends {
            plan.spend_nothing();
        }
        if plan.is_empty() {
            return Ok(Admitted::unlimited(price, now));
        }
        // One round trip when every budget counter exists. A missing one
        // (first use in this period or process, or lost: a Redis restarted
        // without persistence, an evicted key) is restored from the ledger
        // and the request admitted again, so it is never decided on a
        // budget that forgot its spend.
        let mut attempts = 0;
        let grant = loop {
            attempts += 1;
            match self.counters.admit(&plan.req).await {
                Ok(Admission::Admitted(grant)) => break grant,
                Ok(Admission::Rejected(rejection)) => {
                    return Err(self
                        .reject(config, who, facts, &plan, &rejection, now)
                        .await);
                }
                Ok(Admission::Unseeded(missing)) if attempts < ADMIT_ATTEMPTS => {
                    for index in missing {
                        let (Some(check), Some(meta)) =
                            (plan.req.budgets.get(index), plan.budgets.get(index))
                        else {
                            return Err(ApiError::Internal(format!(
                                "counters named budget {index} of {} as missing",
                                plan.budgets.len()
                            )));
                        };
                        self.restore(check, meta).await?;
                    }
                }
                Ok(Admission::Unseeded(missing)) => {
                    let names: Vec<String> = missing
                        .iter()
                        .filter_map(|&i| plan.budgets.get(i))
                        .map(|m| m.named.describe())
                        .collect();
                    tracing::error!(budgets = %names.join(", "), attempts,
                        "budget counters vanished again right after their restore from the ledger");
                    return Err(ApiError::CountersUnavailable(format!(
                        "the shared counters keep losing budget {} right after it is restored from the \
                         ledger (is Redis evicting keys?); requests for this budget are refused until it holds",
                        names.join(", ")
                    )));
                }
                Err(e) => return Err(counters_down(&e)),
            }
        };
        let would_reject = grant
            .would_reject
            .iter()
            .filter_map(|r| self.shadow_rejection(&plan, facts, r, now))
            .collect();
        plan.grant = grant;
        let cost = plan.req.cost;
        let clamp_max_tokens = if plan.grant.reserved < cost {
            // The clamp covers every choice and prompt together; the cap
            // the provider honours is per choice, so the affordable total is
            // shared out, and a share below one token cannot be sent.
            let multiplier = facts.output_multiplier.max(1);
            let affordable = price
                .affordable_output_tokens(plan.grant.reserved, facts.input_tokens.get())
                .min(facts.max_output_tokens);
            let per_choice = affordable / multiplier;
            if per_choice == 0 {
                let error = clamp_too_small(&plan, facts, affordable, now);
                let released = self
                    .counters
                    .settle(&plan.req, &plan.grant, Actual::default())
                    .await;
                if let Err(e) = released {
                    tracing::error!(error = %e, request_id = %plan.req.request_id,
                        "cannot release a reservation; it stays reserved until the counter expires");
                }
                return Err(error);
            }
            Some(per_choice)
        } else {
            None
        };
        // Alert-action budgets never block, so their thresholds are checked
        // on the reservation, as early as possible.
        for (index, (meta, state)) in plan.budgets.iter().zip(&plan.grant.budgets).enumerate() {
            if meta.limit.action == CostAction::Alert {
                self.maybe_alert(
                    config,
                    &plan,
                    index,
                    state.spent.saturating_add(state.reserved),
                );
            }
        }
        let headers = success_headers(&plan);
        Ok(Admitted {
            clamp_max_tokens,
            at: now,
            headers,
            price,
            plan: Some(Box::new(plan)),
            would_reject,
        })
    }

    /// Settles to the actual usage, and for a success ends the key's error
    /// streaks too (so the caller need not [`Self::record_outcome`] it);
    /// never fails (logs counter errors); fires alerts off the request path.
    pub async fn settle(&self, config: &Config, admitted: Admitted, outcome: &Outcome) -> Settled {
        let settled = admitted.settled(outcome);
        let tokens = outcome
            .usage
            .map_or(0, |u| u.prompt_tokens.saturating_add(u.completion_tokens))
            .min(MAX_REQUEST_TOKENS);
        let Some(plan) = admitted.plan else {
            return settled;
        };
        let cost = settled.cost;
        let actual = Actual {
            cost,
            tokens,
            ledger_seq: outcome.ledger_seq,
        };
        // A success also ends the key's error streaks, in the same call.
        let done = if outcome.error_code.is_none() {
            self.counters
                .settle_success(&plan.req, &plan.grant, actual)
                .await
        } else {
            self.counters.settle(&plan.req, &plan.grant, actual).await
        };
        if let Err(e) = done {
            tracing::error!(error = %e, request_id = %plan.req.request_id, cost = %cost,
                "cannot settle a reservation; it stays reserved until the counter expires");
        }
        for (index, meta, used) in plan.used_after(cost) {
            if meta.limit.limit > NanoUsd::ZERO {
                metrics::gauge!("tollgate_budget_utilisation_ratio",
                    "policy" => meta.named.policy.clone(),
                    "scope" => meta.named.scope.as_str(),
                    "id" => meta.named.scope_id.clone())
                .set(used.0 as f64 / meta.limit.limit.0 as f64);
            }
            if meta.named.mode != PolicyMode::Shadow {
                self.maybe_alert(config, &plan, index, used);
            }
        }
        settled
    }

    /// Records a request's final error code (or success) for the
    /// error-streak loop guard.
    pub async fn record_outcome(
        &self,
        config: &Config,
        who: &Subject<'_>,
        error_code: Option<&str>,
    ) {
        if error_code.is_some_and(|c| OWN_CODES.contains(&c)) {
            return;
        }
        let Ok(applied) = resolve::applied(config, who.key, who.team) else {
            return;
        };
        for a in &applied {
            let PolicyKind::LoopGuard(guard) = &*a.kind else {
                continue;
            };
            let key = streak_key(who.key.id.as_str(), a.name);
            let window_ms = guard.window.as_millis() as u64;
            match self
                .counters
                .record_outcome(&key, error_code, guard.max_identical, window_ms)
                .await
            {
                Ok(true) => {
                    let until = self.clock.now() + Duration::milliseconds(window_ms as i64);
                    tracing::warn!(key_id = %who.key.id, policy = a.name, code = ?error_code,
                        "loop guard: the same error repeated; the key is throttled");
                    let meta = LoopMeta {
                        named: Named::from_applied(a),
                        guard: *guard,
                    };
                    self.loop_tripped(
                        config,
                        who.key.team.as_str(),
                        who.key.id.as_str(),
                        &key,
                        &meta,
                        until,
                    )
                    .await;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, key_id = %who.key.id, "cannot record an outcome for the loop guard")
                }
            }
        }
    }

    /// Whether the key's error streak has tripped a loop guard. Asked on
    /// the error path only: a request that fails before admission (a
    /// malformed payload) never reaches the streak check inside `admit`, yet
    /// a loop on it must still be answered `loop_detected` until the window
    /// passes. Keys without a loop guard cost nothing here; if the counters
    /// cannot answer, the request keeps its original error.
    pub async fn check_streak(&self, config: &Config, who: &Subject<'_>) -> Result<(), ApiError> {
        let Ok(applied) = resolve::applied(config, who.key, who.team) else {
            return Ok(());
        };
        let mut req = AdmitRequest {
            request_id: format!("streak-check:{}", who.key.id),
            ..AdmitRequest::default()
        };
        let mut names = Vec::new();
        for a in &applied {
            if let PolicyKind::LoopGuard(guard) = &*a.kind
                && a.mode == PolicyMode::Enforce
            {
                req.streaks.push(StreakCheck {
                    key: streak_key(who.key.id.as_str(), a.name),
                    enforce: true,
                });
                names.push((a.name, *guard));
            }
        }
        if req.streaks.is_empty() {
            return Ok(());
        }
        let Ok(Admission::Rejected(r)) = self.counters.admit(&req).await else {
            return Ok(());
        };
        let Some((name, guard)) = names.get(r.index) else {
            return Ok(());
        };
        let retry_after_secs = r.retry_after_ms.div_ceil(1000).max(1);
        metrics::counter!("tollgate_policy_rejections_total", "policy" => (*name).to_owned(), "code" => "loop_detected")
            .increment(1);
        Err(ApiError::LoopDetected {
            message: format!(
                "loop guard `{name}`: key `{}` got the same error more than {} times in a row within {} s; \
                 fix the request instead of retrying it. Requests are refused for the next {retry_after_secs} s",
                who.key.id,
                guard.max_identical,
                guard.window.as_secs()
            ),
            retry_after_secs,
            policy: Some((*name).to_owned()),
        })
    }

    /// For `GET /admin/budgets?team=`: every cost-limit in force for that
    /// team and its keys (or all teams and keys).
    pub async fn budgets(
        &self,
        config: &Config,
        team: Option<&TeamId>,
    ) -> Result<Vec<BudgetReport>, ApiError> {
        let store_err = |e: crate::store::StoreError| {
            ApiError::Internal(format!("cannot read teams and keys: {e}"))
        };
        let api_teams: Vec<TeamRecord> = match team {
            Some(t) => self
                .store
                .get_team(t)
                .await
                .map_err(store_err)?
                .into_iter()
                .collect(),
            None => self.store.list_teams().await.map_err(store_err)?,
        };
        let mut team_ids: Vec<String> = match team {
            Some(t) => vec![t.0.clone()],
            None => config.teams.iter().map(|t| t.id.clone()).collect(),
        };
        team_ids.extend(api_teams.iter().map(|t| t.id.0.clone()));
        let mut seen = std::collections::HashSet::new();
        team_ids.retain(|t| seen.insert(t.clone()));
        if let Some(t) = team
            && config.team(t.as_str()).is_none()
            && api_teams.is_empty()
        {
            return Err(ApiError::NotFound {
                code: "team_not_found",
                message: format!("no team `{t}`: see `GET /admin/teams`"),
            });
        }
        let keys = self.store.list_keys(team).await.map_err(store_err)?;
        let now = self.clock.now();
        let mut rows = Vec::new();
        for id in &team_ids {
            let api_team = api_teams.iter().find(|t| t.id.as_str() == id);
            let mut applied = Vec::new();
            if let Err(m) = resolve::team_policies(config, id, api_team, &mut applied) {
                tracing::warn!(team = %id, "{}", m.message());
            }
            self.report(&applied, id, now, &mut rows).await?;
        }
        for key in &keys {
            let mut applied = Vec::new();
            if let Err(m) = resolve::key_policies(config, key, &mut applied) {
                tracing::warn!(key_id = %key.id, "{}", m.message());
            }
            let mut seen = std::collections::HashSet::new();
            applied.retain(|a| seen.insert(a.name));
            self.report(&applied, key.team.as_str(), now, &mut rows)
                .await?;
        }
        Ok(rows)
    }

    async fn report(
        &self,
        applied: &[Applied<'_>],
        team: &str,
        now: DateTime<Utc>,
        rows: &mut Vec<BudgetReport>,
    ) -> Result<(), ApiError> {
        for a in applied {
            let PolicyKind::CostLimit(limit) = &*a.kind else {
                continue;
            };
            let (check, meta) = budget_check(a, limit, now, NanoUsd::ZERO, None);
            let read = async || {
                self.counters
                    .budget(&check.key)
                    .await
                    .map_err(|e| counters_down(&e))
            };
            let state = match read().await? {
                Some(state) => state,
                None => {
                    self.restore(&check, &meta).await?;
                    read().await?.unwrap_or_default()
                }
            };
            let would_reject = self
                .would_reject
                .lock()
                .get(&(a.name.to_owned(), a.scope, a.scope_id.to_owned()))
                .copied()
                .unwrap_or(0);
            rows.push(BudgetReport {
                scope: a.scope.as_str(),
                id: a.scope_id.to_owned(),
                team: team.to_owned(),
                policy: a.name.to_owned(),
                mode: match a.mode {
                    PolicyMode::Enforce => "enforce",
                    PolicyMode::Shadow => "shadow",
                },
                action: match limit.action {
                    CostAction::Reject => "reject",
                    CostAction::Alert => "alert",
                },
                period: limit.period.as_str(),
                limit_usd: limit.limit.as_usd(),
                spent_usd: state.spent.as_usd(),
                reserved_usd: state.reserved.as_usd(),
                remaining_usd: limit
                    .limit
                    .saturating_sub(state.spent)
                    .saturating_sub(state.reserved)
                    .as_usd(),
                resets_at: meta.end.map(messages::rfc3339),
                would_reject,
            });
        }
        Ok(())
    }

    /// Restores a missing budget counter from the ledger: this process's
    /// rows not written yet are flushed first, then the period's spend and
    /// the ledger writers' marks are read in one snapshot and seeded (shared
    /// counters then take in what every live gateway holds on the counter:
    /// see `counters`). Seeding is set-if-absent, so a counter another
    /// gateway restored (or kept) meanwhile is left as it is. Concurrent
    /// restores of one counter share one ledger query.
    async fn restore(&self, check: &BudgetCheck, meta: &BudgetMeta) -> Result<(), ApiError> {
        let scope = match meta.named.scope {
            Scope::Team => SpendScope::Team(TeamId(meta.named.scope_id.clone())),
            Scope::Key => SpendScope::Key(KeyId(meta.named.scope_id.clone())),
        };
        let restore = async {
            if let Some(ledger) = &self.ledger
                && tokio::time::timeout(std::time::Duration::from_secs(2), ledger.flush())
                    .await
                    .is_err()
            {
                return Err(ApiError::CountersUnavailable(format!(
                    "cannot restore the spend of budget {}: the ledger store is not accepting writes; requests \
                     for this budget are refused until it does",
                    meta.named.describe()
                )));
            }
            let read_at = std::time::Instant::now();
            let ledger = self.store.ledger_snapshot(&scope, meta.start).await.map_err(|e| {
                ApiError::CountersUnavailable(format!(
                    "cannot restore the spend of budget {} from the ledger: {e}; requests for this budget are \
                     refused until the store answers",
                    meta.named.describe()
                ))
            })?;
            let rebuild = BudgetRebuild { ledger, read_at };
            self.counters
                .rebuild_budget(&check.key, &rebuild, check.expires_at_ms)
                .await
                .map_err(|e| counters_down(&e))
        };
        let result = self
            .restoring
            .try_get_with(check.key.clone(), restore)
            .await;
        // Only restores running at the same moment are shared: the next time
        // this counter goes missing, it is restored again.
        self.restoring.invalidate(&check.key).await;
        result.map_err(|e| match &*e {
            ApiError::CountersUnavailable(m) => ApiError::CountersUnavailable(m.clone()),
            other => ApiError::Internal(other.to_string()),
        })
    }

    async fn reject(
        &self,
        config: &Config,
        who: &Subject<'_>,
        facts: &RequestFacts<'_>,
        plan: &Plan,
        rejection: &Rejection,
        now: DateTime<Utc>,
    ) -> ApiError {
        let err = rejection_error(plan, facts, rejection, now);
        if let Some(named) = plan.named(&rejection.reason, rejection.index) {
            metrics::counter!("tollgate_policy_rejections_total", "policy" => named.policy.clone(), "code" => err.code())
                .increment(1);
            tracing::info!(key_id = %who.key.id, policy = %named.policy, code = err.code(), "policy rejected a request");
        }
        match rejection.reason {
            RejectReason::Budget(state) => {
                if let (Some(meta), Some(target)) =
                    (plan.budgets.get(rejection.index), alert_target(config))
                    && !self
                        .alerts
                        .blocked_fired(&budget_counter_key(plan, rejection.index))
                {
                    self.alerts.send(alerts::Job::Blocked {
                        target,
                        budget: alert_subject(plan, meta, rejection.index),
                        spent: state.spent.saturating_add(state.reserved),
                        ts: now,
                    });
                }
            }
            RejectReason::Loop | RejectReason::Streak => {
                let (meta, check_key) = if rejection.reason == RejectReason::Loop {
                    (
                        plan.loops.get(rejection.index),
                        plan.req.loops.get(rejection.index).map(|c| c.key.as_str()),
                    )
                } else {
                    (
                        plan.streaks.get(rejection.index),
                        plan.req
                            .streaks
                            .get(rejection.index)
                            .map(|c| c.key.as_str()),
                    )
                };
                if let (Some(meta), Some(key)) = (meta, check_key) {
                    let until = now + Duration::milliseconds(rejection.retry_after_ms as i64);
                    self.loop_tripped(
                        config,
                        who.key.team.as_str(),
                        who.key.id.as_str(),
                        key,
                        meta,
                        until,
                    )
                    .await;
                }
            }
            RejectReason::Rate | RejectReason::Parallel => {}
        }
        err
    }

    /// Once per trip of a loop-guard counter: the alert, and the suspension
    /// for `on_trip: suspend`.
    async fn loop_tripped(
        &self,
        config: &Config,
        team: &str,
        key_id: &str,
        counter_key: &str,
        meta: &LoopMeta,
        until: DateTime<Utc>,
    ) {
        let now = self.clock.now();
        let fresh = match self.loop_trips.get(counter_key) {
            Some(until_ms) if now.timestamp_millis() < until_ms => false,
            _ => {
                self.loop_trips
                    .insert(counter_key.to_owned(), until.timestamp_millis());
                true
            }
        };
        // A shadow guard only records: no webhook, no suspension.
        if !fresh || meta.named.mode == PolicyMode::Shadow {
            return;
        }
        if let Some(a) = &config.alerts {
            self.alerts.send(alerts::Job::Loop {
                url: a.webhook_url.clone(),
                format: a.format,
                team: team.to_owned(),
                key: key_id.to_owned(),
                policy: meta.named.policy.clone(),
                until,
                ts: now,
            });
        }
        if meta.guard.on_trip == OnTrip::Suspend {
            self.suspend(key_id, &meta.named.policy, now).await;
        }
    }

    async fn suspend(&self, key_id: &str, policy: &str, now: DateTime<Utc>) {
        let id = KeyId(key_id.to_owned());
        // One conditional update, not read-then-write: a revoke landing in
        // between would be written back as unrevoked.
        let result = self.store.suspend_key(&id, now).await;
        self.keys.invalidate(&id);
        match result {
            // Already suspended, revoked or gone: nothing to say.
            Ok(false) => {}
            Ok(true) => tracing::warn!(
                key_id,
                policy,
                "loop guard suspended the key; an admin must restore it"
            ),
            Err(e) => {
                tracing::error!(error = %e, key_id, policy, "loop guard could not suspend the key")
            }
        }
    }

    /// Counts and logs a shadow policy's would-be refusal; `policy:code`.
    fn shadow_rejection(
        &self,
        plan: &Plan,
        facts: &RequestFacts<'_>,
        r: &Rejection,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let named = plan.named(&r.reason, r.index)?;
        // Non-enforcing `action: alert` budgets are not shadows: their
        // overrun is reported by the threshold alerts.
        if named.mode != PolicyMode::Shadow {
            return None;
        }
        let err = rejection_error(plan, facts, r, now);
        self.count_would_reject(
            Some(&named.policy),
            named.scope,
            &named.scope_id,
            err.code(),
            &err.to_string(),
        );
        Some(format!("{}:{}", named.policy, err.code()))
    }

    fn count_would_reject(
        &self,
        policy: Option<&str>,
        scope: Scope,
        id: &str,
        code: &'static str,
        message: &str,
    ) {
        let Some(policy) = policy else {
            return;
        };
        metrics::counter!("tollgate_policy_would_reject_total", "policy" => policy.to_owned(), "code" => code)
            .increment(1);
        tracing::info!(
            policy,
            code,
            scope = scope.as_str(),
            id,
            message,
            "shadow policy would have rejected"
        );
        let mut counts = self.would_reject.lock();
        let k = (policy.to_owned(), scope, id.to_owned());
        if let Some(n) = counts.get_mut(&k) {
            *n += 1;
        } else if counts.len() < WOULD_REJECT_CAPACITY {
            counts.insert(k, 1);
        }
    }

    /// Queues a threshold check when `used` may have crossed a threshold
    /// that has not fired yet.
    fn maybe_alert(&self, config: &Config, plan: &Plan, index: usize, used: NanoUsd) {
        let Some(meta) = plan.budgets.get(index) else {
            return;
        };
        if meta.named.mode == PolicyMode::Shadow {
            return;
        }
        let Some(target) = alert_target(config) else {
            return;
        };
        let subject = alert_subject(plan, meta, index);
        if !self.alerts.all_fired(&target, &subject, used) {
            self.alerts.send(alerts::Job::Check {
                target,
                budget: subject,
            });
        }
    }
}

fn alert_target(config: &Config) -> Option<alerts::Target> {
    let a = config.alerts.as_ref()?;
    Some(alerts::Target {
        webhook_url: a.webhook_url.clone(),
        thresholds: a.thresholds.clone(),
        format: a.format,
    })
}

fn budget_counter_key(plan: &Plan, index: usize) -> String {
    plan.req
        .budgets
        .get(index)
        .map(|c| c.key.clone())
        .unwrap_or_default()
}

fn alert_subject(plan: &Plan, meta: &BudgetMeta, index: usize) -> alerts::BudgetSubject {
    alerts::BudgetSubject {
        counter_key: budget_counter_key(plan, index),
        team: plan.team.clone(),
        key: (meta.named.scope == Scope::Key).then(|| plan.key.clone()),
        policy: meta.named.policy.clone(),
        limit: meta.limit.limit,
        period: meta.limit.period,
        resets_at: meta.end,
        count_reserved: meta.limit.action == CostAction::Alert,
    }
}

fn counters_down(e: &CountersError) -> ApiError {
    tracing::error!(error = %e, "counters unreachable; refusing a limited request");
    ApiError::CountersUnavailable(COUNTERS_DOWN.to_owned())
}

fn streak_key(key_id: &str, policy: &str) -> String {
    format!("s:{key_id}:{policy}")
}

/// 128 bits of SHA-256 of the exact body: collisions are out of reach and
/// the body is already in memory.
fn fingerprint(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    hex::encode(&digest[..16])
}

/// `clamp_min` is the least reservation a clamp may leave when an enforcing
/// clamp budget applies to the request, `None` when none does.
fn budget_check(
    a: &Applied<'_>,
    limit: &CostLimit,
    now: DateTime<Utc>,
    cost: NanoUsd,
    clamp_min: Option<NanoUsd>,
) -> (BudgetCheck, BudgetMeta) {
    let start = limit.period.start(now);
    let end = limit.period.end(now);
    let check = BudgetCheck {
        key: format!(
            "b:{}:{}:{}:{}",
            a.scope.as_str(),
            a.scope_id,
            a.name,
            start.timestamp()
        ),
        limit: limit.limit,
        min: clamp_min.map_or(cost, |m| m.min(cost)),
        enforce: a.mode == PolicyMode::Enforce && limit.action == CostAction::Reject,
        // A day of slack past the period's end: settlements of requests that
        // started in the period still find their counter.
        expires_at_ms: end.map(|e| (e + Duration::days(1)).timestamp_millis()),
    };
    (
        check,
        BudgetMeta {
            named: Named::from_applied(a),
            limit: *limit,
            start,
            end,
        },
    )
}

fn build_plan(
    who: &Subject<'_>,
    facts: &RequestFacts<'_>,
    applied: &[Applied<'_>],
    now: DateTime<Utc>,
) -> Plan {
    let price = facts.model.price;
    // Only budgets and token limits look at the input's size.
    let counts_tokens = applied.iter().any(|a| match &*a.kind {
        PolicyKind::CostLimit(_) => true,
        PolicyKind::RateLimit(r) => r.tokens_per_minute.is_some(),
        PolicyKind::LoopGuard(_) | PolicyKind::ModelAccess(_) => false,
    });
    let input = if counts_tokens {
        facts.input_tokens.get()
    } else {
        0
    };
    let cost = price.worst_case(input, facts.max_output_tokens);
    // A clamp must leave at least one token for every choice.
    let clamp_min = price.worst_case(input, facts.output_multiplier.max(1));
    let tokens = input
        .saturating_add(facts.max_output_tokens)
        .min(MAX_REQUEST_TOKENS);
    // Where any enforcing budget clamps, the request may go out smaller
    // than its worst case; a reject-mode budget then judges the request
    // that is sent (it must fit the smaller reservation), rather than
    // vetoing a clamp that every budget has room for.
    let clamping = applied.iter().any(|a| {
        matches!(&*a.kind, PolicyKind::CostLimit(l)
            if l.on_insufficient == OnInsufficient::Clamp
                && l.action == CostAction::Reject
                && a.mode == PolicyMode::Enforce)
    });
    let clamp_min = if clamping { Some(clamp_min) } else { None };
    let key_id = who.key.id.as_str();
    let mut plan = Plan {
        req: AdmitRequest {
            request_id: facts.request_id.to_owned(),
            cost,
            ..AdmitRequest::default()
        },
        grant: Grant::default(),
        team: who.key.team.0.clone(),
        key: key_id.to_owned(),
        budgets: Vec::new(),
        rates: Vec::new(),
        parallel: Vec::new(),
        loops: Vec::new(),
        streaks: Vec::new(),
    };
    let mut fp: Option<String> = None;
    for a in applied {
        let enforce = a.mode == PolicyMode::Enforce;
        let base = format!("{}:{}:{}", a.scope.as_str(), a.scope_id, a.name);
        match &*a.kind {
            PolicyKind::CostLimit(limit) => {
                let (check, meta) = budget_check(a, limit, now, cost, clamp_min);
                plan.req.budgets.push(check);
                plan.budgets.push(meta);
            }
            PolicyKind::RateLimit(r) => {
                let limits = [
                    (r.requests_per_minute, Unit::Requests, "rpm", 1),
                    (r.tokens_per_minute, Unit::Tokens, "tpm", tokens),
                ];
                for (limit, unit, suffix, amount) in limits {
                    let Some(limit) = limit else {
                        continue;
                    };
                    plan.req.rates.push(RateCheck {
                        key: format!("r:{base}:{suffix}"),
                        limit_per_minute: limit,
                        amount,
                        enforce,
                    });
                    plan.rates.push(RateMeta {
                        named: Named::from_applied(a),
                        unit,
                    });
                }
                if let Some(max) = r.max_parallel {
                    plan.req.parallel.push(ParallelCheck {
                        key: format!("p:{base}"),
                        max,
                        enforce,
                    });
                    plan.parallel.push(Named::from_applied(a));
                }
            }
            PolicyKind::LoopGuard(guard) => {
                // Loops are per key even when the guard is attached to a team:
                // one looping script must not throttle its teammates.
                let fp = fp.get_or_insert_with(|| fingerprint(facts.body));
                let window_ms = guard.window.as_millis() as u64;
                plan.req.loops.push(LoopCheck {
                    key: format!("l:{key_id}:{}:{fp}", a.name),
                    max_identical: guard.max_identical,
                    window_ms,
                    enforce,
                });
                plan.loops.push(LoopMeta {
                    named: Named::from_applied(a),
                    guard: *guard,
                });
                plan.req.streaks.push(StreakCheck {
                    key: streak_key(key_id, a.name),
                    enforce,
                });
                plan.streaks.push(LoopMeta {
                    named: Named::from_applied(a),
                    guard: *guard,
                });
            }
            PolicyKind::ModelAccess(_) => {}
        }
    }
    plan
}

fn header(name: &'static str, value: String) -> Option<(HeaderName, HeaderValue)> {
    HeaderValue::from_str(&value)
        .ok()
        .map(|v| (HeaderName::from_static(name), v))
}

/// `x-ratelimit-*` from the tightest enforcing limit of each unit, and the
/// least budget remaining over the non-shadow cost-limits.
fn success_headers(plan: &Plan) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = Vec::new();
    for (unit, names) in [
        (
            Unit::Requests,
            [
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ],
        ),
        (
            Unit::Tokens,
            [
                "x-ratelimit-limit-tokens",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-reset-tokens",
            ],
        ),
    ] {
        let tightest = plan
            .rates
            .iter()
            .zip(&plan.req.rates)
            .zip(&plan.grant.rates)
            .filter(|((m, c), _)| m.unit == unit && c.enforce)
            .map(|(_, s)| s)
            .min_by_key(|s| (s.remaining, std::cmp::Reverse(s.reset_ms)));
        if let Some(s) = tightest {
            headers.extend(header(names[0], s.limit.to_string()));
            headers.extend(header(names[1], s.remaining.to_string()));
            headers.extend(header(names[2], messages::openai_duration(s.reset_ms)));
        }
    }
    let remaining = plan
        .budgets
        .iter()
        .zip(&plan.grant.budgets)
        .filter(|(m, _)| m.named.mode != PolicyMode::Shadow)
        .map(|(_, s)| s.remaining())
        .min();
    if let Some(r) = remaining {
        headers.extend(header(BUDGET_REMAINING_HEADER, r.to_string()));
    }
    headers
}

fn rejection_error(
    plan: &Plan,
    facts: &RequestFacts<'_>,
    r: &Rejection,
    now: DateTime<Utc>,
) -> ApiError {
    let missing = || {
        ApiError::Internal(format!(
            "counters rejected check {} of an unknown kind",
            r.index
        ))
    };
    match r.reason {
        RejectReason::Budget(state) => {
            let Some(meta) = plan.budgets.get(r.index) else {
                return missing();
            };
            budget_error(meta, state, facts, plan.req.cost, now)
        }
        RejectReason::Rate => {
            let (Some(meta), Some(check)) = (plan.rates.get(r.index), plan.req.rates.get(r.index))
            else {
                return missing();
            };
            let secs = messages::retry_secs(r.retry_after_ms);
            let who = meta.named.describe();
            let message = match meta.unit {
                Unit::Requests => format!(
                    "rate limit {who}: {} requests per minute exceeded; retry in {secs}s",
                    check.limit_per_minute
                ),
                Unit::Tokens if check.amount > check.limit_per_minute => format!(
                    "rate limit {who} allows {} tokens per minute, but this request needs up to {} ({} input + {} \
                     output tokens from `max_tokens`): it can never fit; lower `max_tokens` or shorten the input",
                    check.limit_per_minute,
                    check.amount,
                    facts.input_tokens.get(),
                    facts.max_output_tokens
                ),
                Unit::Tokens => format!(
                    "rate limit {who}: {} tokens per minute exceeded (this request reserves {} tokens: input plus \
                     `max_tokens`); retry in {secs}s",
                    check.limit_per_minute, check.amount
                ),
            };
            ApiError::RateLimitExceeded {
                message,
                retry_after_secs: secs,
                policy: Some(meta.named.policy.clone()),
            }
        }
        RejectReason::Parallel => {
            let (Some(named), Some(check)) =
                (plan.parallel.get(r.index), plan.req.parallel.get(r.index))
            else {
                return missing();
            };
            let secs = messages::retry_secs(r.retry_after_ms);
            ApiError::RateLimitExceeded {
                message: format!(
                    "rate limit {}: {} requests already in flight (`max_parallel`); retry when one finishes",
                    named.describe(),
                    check.max
                ),
                retry_after_secs: secs,
                policy: Some(named.policy.clone()),
            }
        }
        RejectReason::Loop | RejectReason::Streak => {
            let meta = if r.reason == RejectReason::Loop {
                plan.loops.get(r.index)
            } else {
                plan.streaks.get(r.index)
            };
            let Some(meta) = meta else {
                return missing();
            };
            let secs = messages::retry_secs(r.retry_after_ms);
            let until = messages::rfc3339(now + Duration::milliseconds(r.retry_after_ms as i64));
            let window = meta.guard.window.as_secs();
            let what = if r.reason == RejectReason::Loop {
                format!(
                    "more than {} identical request bodies from key `{}` within {window}s; this exact request is \
                     refused until {until} (retry in {secs}s; each retry before then restarts the wait). If a \
                     client is retrying a failing request, fix the request instead of retrying it",
                    meta.guard.max_identical, plan.key
                )
            } else {
                format!(
                    "key `{}` got the same error more than {} times in a row within {window}s; its requests are \
                     refused until {until} (retry in {secs}s). Fix the request that keeps failing",
                    plan.key, meta.guard.max_identical
                )
            };
            let suspended = if meta.guard.on_trip == OnTrip::Suspend
                && meta.named.mode == PolicyMode::Enforce
            {
                ". The key is suspended (`on_trip: suspend`) until an admin restores it"
            } else {
                ""
            };
            ApiError::LoopDetected {
                message: format!("loop guard `{}`: {what}{suspended}", meta.named.policy),
                retry_after_secs: secs,
                policy: Some(meta.named.policy.clone()),
            }
        }
    }
}

/// 402 for a clamp that leaves less than one output token per choice.
fn clamp_too_small(
    plan: &Plan,
    facts: &RequestFacts<'_>,
    affordable: u64,
    now: DateTime<Utc>,
) -> ApiError {
    // The tightest enforcing budget is the one that clamped.
    let tightest = plan
        .budgets
        .iter()
        .zip(&plan.grant.budgets)
        .zip(&plan.req.budgets)
        .filter(|(_, check)| check.enforce)
        .min_by_key(|((_, state), _)| state.remaining());
    let policy = tightest.map(|((meta, _), _)| meta.named.policy.clone());
    let (name, retry_after_secs) = match tightest {
        Some(((meta, _), _)) => (
            meta.named.describe(),
            meta.end.map_or(messages::NEVER_SECS, |end| {
                messages::retry_secs((end - now).num_milliseconds().max(0) as u64)
            }),
        ),
        None => ("in force".to_owned(), messages::NEVER_SECS),
    };
    ApiError::BudgetExceeded {
        message: format!(
            "budget {name} has ${} left, which pays for {affordable} output tokens of `{}`: fewer than one for              each of the {} completions this request asks for (`n`, `best_of` and prompts multiply); ask for              fewer completions or shorten the input",
            plan.grant.reserved, facts.model.name, facts.output_multiplier
        ),
        retry_after_secs,
        policy,
    }
}

fn budget_error(
    meta: &BudgetMeta,
    state: crate::counters::BudgetState,
    facts: &RequestFacts<'_>,
    cost: NanoUsd,
    now: DateTime<Utc>,
) -> ApiError {
    let price = facts.model.price;
    let remaining = state.remaining();
    let input_cost = price.worst_case(facts.input_tokens.get(), 0);
    let fit = price
        .affordable_output_tokens(remaining, facts.input_tokens.get())
        .min(facts.max_output_tokens);
    let hint = if input_cost < remaining && fit >= 1 {
        format!(" Lowering `max_tokens` to {fit} would fit the ${remaining} left.")
    } else {
        format!(" Only ${remaining} is left, not enough for the input alone (${input_cost}).")
    };
    let (reset, retry_after_secs) = match meta.end {
        Some(end) => {
            let ms = (end - now).num_milliseconds().max(0) as u64;
            let secs = messages::retry_secs(ms);
            (format!(" The budget resets at {} (in {secs}s).", messages::rfc3339(end)), secs)
        }
        None => (
            " This `total` budget does not reset; an admin must raise its `limit_usd` or the key's budget.".to_owned(),
            messages::NEVER_SECS,
        ),
    };
    let message = format!(
        "budget {} {}: {} limit ${}, spent ${} (${} settled + ${} reserved by requests in flight); this \
         request could cost up to ${cost} ({} input + {} output tokens of `{}`).{hint}{reset}",
        meta.named.describe(),
        if remaining.0 == 0 {
            "is exhausted"
        } else {
            "cannot cover this request"
        },
        meta.limit.period.as_str(),
        meta.limit.limit,
        state.spent.saturating_add(state.reserved),
        state.spent,
        state.reserved,
        facts.input_tokens.get(),
        facts.max_output_tokens,
        facts.model.name,
    );
    ApiError::BudgetExceeded {
        message,
        retry_after_secs,
        policy: Some(meta.named.policy.clone()),
    }
}

/// Where a model-access glob set comes from.
#[derive(Clone, Copy)]
enum AccessSource<'a> {
    ConfigTeam,
    ApiTeam,
    Key,
    Policy {
        name: &'a str,
        scope: Scope,
        scope_id: &'a str,
    },
}

/// A glob set in force for model access.
struct AccessRule<'a> {
    source: AccessSource<'a>,
    globs: &'a [String],
    mode: PolicyMode,
}

impl AccessRule<'_> {
    fn allows(&self, model: &str) -> bool {
        self.globs
            .iter()
            .any(|g| wildmatch::WildMatch::new(g).matches(model))
    }

    /// The `policy` label of the rejection metrics.
    fn label(&self) -> String {
        match self.source {
            AccessSource::ConfigTeam | AccessSource::ApiTeam => "team-models".to_owned(),
            AccessSource::Key => "key-models".to_owned(),
            AccessSource::Policy { name, .. } => name.to_owned(),
        }
    }

    fn describe(&self, who: &Subject<'_>) -> String {
        match self.source {
            AccessSource::ConfigTeam => format!("team `{}` (`models` in the config)", who.key.team),
            AccessSource::ApiTeam => format!("team `{}` (`models`)", who.key.team),
            AccessSource::Key => format!("key `{}` (`models`)", who.key.id),
            AccessSource::Policy { name, .. } => format!("policy `{name}`"),
        }
    }
}

fn access_rules<'a>(
    config: &'a Config,
    who: &Subject<'a>,
    applied: &'a [Applied<'a>],
) -> Vec<AccessRule<'a>> {
    let mut rules = Vec::new();
    let enforce = |source, globs| AccessRule {
        source,
        globs,
        mode: PolicyMode::Enforce,
    };
    if let Some(globs) = config
        .team(who.key.team.as_str())
        .and_then(|t| t.models.as_deref())
    {
        rules.push(enforce(AccessSource::ConfigTeam, globs));
    }
    if let Some(globs) = who.team.and_then(|t| t.models.as_deref()) {
        rules.push(enforce(AccessSource::ApiTeam, globs));
    }
    if let Some(globs) = who.key.models.as_deref() {
        rules.push(enforce(AccessSource::Key, globs));
    }
    for a in applied {
        if let PolicyKind::ModelAccess(m) = &*a.kind {
            let source = AccessSource::Policy {
                name: a.name,
                scope: a.scope,
                scope_id: a.scope_id,
            };
            rules.push(AccessRule {
                source,
                globs: &m.allow,
                mode: a.mode,
            });
        }
    }
    rules
}

impl alerts::Alerter {
    fn blocked_fired(&self, counter_key: &str) -> bool {
        self.fired_contains(&format!("{counter_key}#blocked"))
    }
}
