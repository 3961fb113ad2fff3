//! Policy engine tests over the real `MemoryCounters`, a `ManualClock` and
//! the in-memory SQLite store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use chrono::{Duration, TimeZone, Utc};
use serde_json::Value;

use super::*;
use crate::config::{
    AlertsConfig, CountersConfig, CountersUnavailable, Defaults, LoopGuard, ModelAccess, Policy,
    RateLimit, TeamConfig,
};
use crate::counters::{BudgetState, MemoryCounters};
use crate::store::LedgerRow;
use crate::types::{ManualClock, Period, Secret};

const USD: u64 = NanoUsd::PER_USD;

fn model() -> ModelConfig {
    // $1 per 1M input tokens, $2 per 1M output: 1,000 and 2,000 nano-USD a token.
    ModelConfig {
        name: "m".into(),
        targets: vec![],
        price: Price {
            input_per_mtok: NanoUsd(USD),
            output_per_mtok: NanoUsd(2 * USD),
            cached_input_per_mtok: None,
            cache_write_per_mtok: None,
            cache_write_1h_per_mtok: None,
        },
        max_output_tokens: 1000,
        strategy: Default::default(),
    }
}

fn policy(name: &str, kind: PolicyKind) -> Policy {
    Policy {
        name: name.into(),
        mode: PolicyMode::Enforce,
        kind,
    }
}

fn shadow(mut p: Policy) -> Policy {
    p.mode = PolicyMode::Shadow;
    p
}

fn budget(name: &str, usd: f64, period: Period) -> Policy {
    policy(
        name,
        PolicyKind::CostLimit(CostLimit {
            limit: NanoUsd::from_usd(usd).unwrap(),
            period,
            action: CostAction::Reject,
            on_insufficient: OnInsufficient::Reject,
        }),
    )
}

fn with_cost(mut p: Policy, f: impl FnOnce(&mut CostLimit)) -> Policy {
    if let PolicyKind::CostLimit(c) = &mut p.kind {
        f(c);
    }
    p
}

fn rate(name: &str, rpm: Option<u64>, tpm: Option<u64>, par: Option<u64>) -> Policy {
    policy(
        name,
        PolicyKind::RateLimit(RateLimit {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            max_parallel: par,
        }),
    )
}

fn loop_guard(name: &str, max: u32, secs: u64, on_trip: OnTrip) -> Policy {
    policy(
        name,
        PolicyKind::LoopGuard(LoopGuard {
            max_identical: max,
            window: StdDuration::from_secs(secs),
            on_trip,
        }),
    )
}

fn team(id: &str, policies: &[&str]) -> TeamConfig {
    TeamConfig {
        id: id.into(),
        policies: policies.iter().map(|s| s.to_string()).collect(),
        models: None,
        cache: true,
    }
}

fn config(policies: Vec<Policy>, teams: Vec<TeamConfig>, defaults: &[&str]) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        admin_key: None,
        store: Secret::new("sqlite::memory:".into()),
        counters: CountersConfig::Memory,
        counters_unavailable: CountersUnavailable::Reject,
        max_body_bytes: 1 << 20,
        log_bodies: false,
        drain_timeout: StdDuration::from_secs(1),
        busy_poll: StdDuration::ZERO,
        journal_dir: None,
        routing: Default::default(),
        providers: vec![],
        models: vec![model()],
        policies,
        teams,
        defaults: Defaults {
            policies: defaults.iter().map(|s| s.to_string()).collect(),
        },
        alerts: None,
        telemetry: None,
        cache: None,
    }
}

fn key(id: &str, team: &str) -> KeyRecord {
    KeyRecord {
        id: KeyId(id.into()),
        team: TeamId(team.into()),
        name: None,
        secret_hash: String::new(),
        prefix: format!("sk-tg-{id}"),
        previous_secret_hash: None,
        previous_expires_at: None,
        models: None,
        policies: vec![],
        budget: None,
        period: None,
        requests_per_minute: None,
        tokens_per_minute: None,
        expires_at: None,
        revoked_at: None,
        suspended_at: None,
        metadata: Value::Null,
        created_at: Utc::now(),
    }
}

struct Env {
    engine: PolicyEngine,
    clock: Arc<ManualClock>,
    store: Arc<dyn Store>,
}

fn start() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap()
}

async fn env() -> Env {
    let store = crate::store::connect("sqlite::memory:").await.unwrap();
    let clock = Arc::new(ManualClock::new(start()));
    Env {
        engine: engine(&store, &clock),
        clock,
        store,
    }
}

/// A fresh engine and fresh counters over the same store: a restart.
fn engine(store: &Arc<dyn Store>, clock: &Arc<ManualClock>) -> PolicyEngine {
    let counters = Arc::new(MemoryCounters::new(clock.clone()));
    PolicyEngine::new(
        counters,
        store.clone(),
        KeyCache::new(store.clone()),
        clock.clone(),
        reqwest::Client::new(),
    )
}

/// Stores a key (and an API team record of its team, for the foreign key).
async fn store_key(env: &Env, k: &KeyRecord) {
    let t = TeamRecord {
        id: k.team.clone(),
        policies: vec![],
        budget: None,
        period: None,
        models: None,
        created_at: start(),
        cache: true,
    };
    if env.store.get_team(&k.team).await.unwrap().is_none() {
        env.store.create_team(&t).await.unwrap();
    }
    env.store.create_key(k).await.unwrap();
}

fn facts<'a>(m: &'a ModelConfig, input: u64, max_out: u64, body: &'a [u8]) -> RequestFacts<'a> {
    RequestFacts {
        request_id: "req",
        model: m,
        input_tokens: InputTokens::known(input),
        max_output_tokens: max_out,
        output_multiplier: 1,
        body,
    }
}

fn subject(k: &KeyRecord) -> Subject<'_> {
    Subject { key: k, team: None }
}

fn usage(input: u64, output: u64) -> Outcome {
    Outcome {
        usage: Some(Usage {
            prompt_tokens: input,
            completion_tokens: output,
            ..Usage::default()
        }),
        error_code: None,
        ledger_seq: 0,
    }
}

/// Admits with distinct bodies (no loop guard interference) and settles at
/// the worst case.
async fn spend(
    env: &Env,
    cfg: &Config,
    k: &KeyRecord,
    input: u64,
    out: u64,
) -> Result<Settled, ApiError> {
    let m = model();
    let body = format!("{}-{}", k.id, rand::random::<u64>());
    let a = env
        .engine
        .admit(cfg, &subject(k), &facts(&m, input, out, body.as_bytes()))
        .await?;
    Ok(env.engine.settle(cfg, a, &usage(input, out)).await)
}

fn header_value(a: &Admitted, name: &str) -> Option<String> {
    a.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.to_str().unwrap().to_owned())
}

// 1,000 input + 1,000 output tokens cost 0.001 + 0.002 = $0.003.
const IN: u64 = 1000;
const OUT: u64 = 1000;
const COST: u64 = 3_000_000;

#[tokio::test]
async fn team_policies_count_the_team_key_policies_each_key() {
    let env = env().await;
    // Team cap fits three requests; the default per-key cap fits two.
    let cfg = config(
        vec![
            budget("team-cap", 0.009, Period::Daily),
            budget("per-key", 0.006, Period::Daily),
        ],
        vec![team("search", &["team-cap"])],
        &["per-key"],
    );
    let (a, b) = (key("a", "search"), key("b", "search"));
    spend(&env, &cfg, &a, IN, OUT).await.unwrap();
    spend(&env, &cfg, &a, IN, OUT).await.unwrap();
    let err = spend(&env, &cfg, &a, IN, OUT).await.unwrap_err();
    assert!(err.to_string().contains("`per-key` (key `a`)"), "{err}");
    // Key b has its own per-key budget but shares the team's.
    spend(&env, &cfg, &b, IN, OUT).await.unwrap();
    let err = spend(&env, &cfg, &b, IN, OUT).await.unwrap_err();
    assert_eq!(err.code(), "budget_exceeded");
    assert!(
        err.to_string().contains("`team-cap` (team `search`)"),
        "{err}"
    );
}

#[tokio::test]
async fn the_tighter_of_team_and_key_budget_wins() {
    let env = env().await;
    let cfg = config(
        vec![budget("team-cap", 100.0, Period::Monthly)],
        vec![team("t", &["team-cap"])],
        &[],
    );
    let mut k = key("k", "t");
    k.budget = Some(NanoUsd(COST * 2));
    k.period = Some(Period::Daily);
    spend(&env, &cfg, &k, IN, OUT).await.unwrap();
    let s = spend(&env, &cfg, &k, IN, OUT).await.unwrap();
    assert_eq!(s.cost, NanoUsd(COST));
    assert_eq!(s.budget_remaining, Some(NanoUsd::ZERO));
    let err = spend(&env, &cfg, &k, IN, OUT).await.unwrap_err();
    assert!(err.to_string().contains("`key-budget` (key `k`)"), "{err}");
}

#[tokio::test]
async fn same_policy_named_twice_reserves_once() {
    let env = env().await;
    let cfg = config(
        vec![budget("cap", 0.006, Period::Daily)],
        vec![team("t", &[])],
        &["cap"],
    );
    let mut k = key("k", "t");
    k.policies = vec!["cap".into()];
    spend(&env, &cfg, &k, IN, OUT).await.unwrap();
    spend(&env, &cfg, &k, IN, OUT).await.unwrap();
    assert!(spend(&env, &cfg, &k, IN, OUT).await.is_err());
}

#[tokio::test]
async fn clamp_lowers_max_tokens_to_what_the_budget_pays() {
    let env = env().await;
    let p = with_cost(budget("cap", 0.004, Period::Daily), |c| {
        c.on_insufficient = OnInsufficient::Clamp
    });
    let cfg = config(vec![p], vec![team("t", &["cap"])], &[]);
    let k = key("k", "t");
    spend(&env, &cfg, &k, IN, OUT).await.unwrap();
    // $0.001 left: 500 input tokens cost $0.0005, leaving $0.0005 for 250
    // output tokens instead of the 1,000 asked for.
    let m = model();
    let a = env
        .engine
        .admit(&cfg, &subject(&k), &facts(&m, 500, OUT, b"x"))
        .await
        .unwrap();
    assert_eq!(a.clamp_max_tokens, Some(250));
    assert_eq!(a.reserved(), NanoUsd(1_000_000));
    assert_eq!(
        header_value(&a, "x-tollgate-budget-remaining-usd").as_deref(),
        Some("0")
    );
    env.engine.settle(&cfg, a, &usage(500, 250)).await;
    // Nothing left, not even for the input: rejected.
    let err = env
        .engine
        .admit(&cfg, &subject(&k), &facts(&m, 500, OUT, b"y"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "budget_exceeded");
    assert!(
        err.to_string().contains("not enough for the input alone"),
        "{err}"
    );
}

#[tokio::test]
async fn budget_rejection_message_and_retry_after() {
    let env = env().await;
    let cfg = config(
        vec![budget("daily-cap", 0.005, Period::Daily)],
        vec![team("t", &["daily-cap"])],
        &[],
    );
    let k = key("k", "t");
    spend(&env, &cfg, &k, IN, OUT).await.unwrap();
    let ApiError::BudgetExceeded {
        message,
        retry_after_secs,
        policy: Some(_),
    } = spend(&env, &cfg, &k, IN, OUT).await.unwrap_err()
    else {
        panic!("expected budget_exceeded");
    };
    // 10:00 UTC: 14 hours to midnight.
    assert_eq!(retry_after_secs, 14 * 3600);
    for part in [
        "budget `daily-cap` (team `t`)",
        "daily limit $0.005",
        "spent $0.003",
        "could cost up to $0.003",
        "resets at 2026-11-28T00:00:00Z",
        // $0.002 left after $0.001 of input: 500 output tokens.
        "Lowering `max_tokens` to 500 would fit the $0.002 left",
    ] {
        assert!(message.contains(part), "missing {part:?} in {message}");
    }

    let cfg = config(
        vec![budget("lifetime", 0.003, Period::Total)],
        vec![team("t", &["lifetime"])],
        &[],
    );
    let k = key("k2", "t");
    spend(&env, &cfg, &k, IN, OUT).await.unwrap();
    let ApiError::BudgetExceeded {
        message,
        retry_after_secs,
        policy: Some(_),
    } = spend(&env, &cfg, &k, IN, OUT).await.unwrap_err()
    else {
        panic!("expected budget_exceeded");
    };
    assert_eq!(retry_after_secs, messages::NEVER_SECS);
    assert!(message.contains("does not reset"), "{message}");
}

#[tokio::test]
async fn new_period_makes_the_budget_available_again() {
    let env = env().await;
    let cfg = config(
        vec![budget("hourly", 0.003, Period::Hourly)],
        vec![team("t", &["hourly"])],
        &[],
    );
    let k = key("k", "t");
    spend(&env, &cfg, &k, IN, OUT).await.unwrap();
    let ApiError::BudgetExceeded {
        retry_after_secs, ..
    } = spend(&env, &cfg, &k, IN, OUT).await.unwrap_err()
    else {
        panic!("expected budget_exceeded");
    };
    assert_eq!(retry_after_secs, 3600);
    env.clock.advance(Duration::minutes(59));
    assert!(spend(&env, &cfg, &k, IN, OUT).await.is_err());
    env.clock.advance(Duration::minutes(1));
    spend(&env, &cfg, &k, IN, OUT).await.unwrap();
}

#[tokio::test]
async fn restart_restores_spend_from_the_ledger() {
    let env = env().await;
    let cfg = config(
        vec![budget("cap", 0.01, Period::Daily)],
        vec![team("t", &["cap"])],
        &[],
    );
    let k = key("k", "t");
    let row = |id: &str, ts, cost| LedgerRow {
        ts,
        request_id: id.into(),
        key_id: k.id.clone(),
        team: k.team.clone(),
        model: "m".into(),
        provider: "mock".into(),
        status: 200,
        prompt_tokens: IN,
        completion_tokens: OUT,
        cost: NanoUsd(cost),
        latency_ms: 1,
        error_code: None,
        would_reject: Vec::new(),
        attempts: 0,
        cache: None,
        cache_saved: Default::default(),
        policy: None,
    };
    // Yesterday's spend does not count; today's does.
    env.store
        .insert_ledger(&[
            row("old", start() - Duration::days(1), 9 * COST),
            row("r1", start() - Duration::hours(1), COST),
            row("r2", start() - Duration::minutes(1), COST),
        ])
        .await
        .unwrap();
    let restarted = Env {
        engine: engine(&env.store, &env.clock),
        clock: env.clock.clone(),
        store: env.store.clone(),
    };
    let reports = restarted
        .engine
        .budgets(&cfg, Some(&TeamId("t".into())))
        .await
        .unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].spent_usd, 0.006);
    restarted.clock.advance(Duration::seconds(1));
    spend(&restarted, &cfg, &k, IN, OUT).await.unwrap();
    // $0.009 of $0.01 spent: the next $0.003 does not fit.
    assert!(spend(&restarted, &cfg, &k, IN, OUT).await.is_err());
}

#[tokio::test]
async fn concurrent_first_requests_restore_once() {
    struct CountingStore {
        inner: Arc<dyn Store>,
        calls: AtomicUsize,
    }
    #[async_trait]
    impl Store for CountingStore {
        async fn create_team(&self, t: &TeamRecord) -> Result<(), crate::store::StoreError> {
            self.inner.create_team(t).await
        }
        async fn get_team(
            &self,
            id: &TeamId,
        ) -> Result<Option<TeamRecord>, crate::store::StoreError> {
            self.inner.get_team(id).await
        }
        async fn list_teams(&self) -> Result<Vec<TeamRecord>, crate::store::StoreError> {
            self.inner.list_teams().await
        }
        async fn update_team(&self, t: &TeamRecord) -> Result<bool, crate::store::StoreError> {
            self.inner.update_team(t).await
        }
        async fn delete_team(&self, id: &TeamId) -> Result<bool, crate::store::StoreError> {
            self.inner.delete_team(id).await
        }
        async fn create_key(&self, k: &KeyRecord) -> Result<(), crate::store::StoreError> {
            self.inner.create_key(k).await
        }
        async fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, crate::store::StoreError> {
            self.inner.get_key(id).await
        }
        async fn list_keys(
            &self,
            t: Option<&TeamId>,
        ) -> Result<Vec<KeyRecord>, crate::store::StoreError> {
            self.inner.list_keys(t).await
        }
        async fn update_key(&self, k: &KeyRecord) -> Result<bool, crate::store::StoreError> {
            self.inner.update_key(k).await
        }
        async fn suspend_key(
            &self,
            id: &KeyId,
            at: DateTime<Utc>,
        ) -> Result<bool, crate::store::StoreError> {
            self.inner.suspend_key(id, at).await
        }
        async fn insert_ledger(&self, rows: &[LedgerRow]) -> Result<(), crate::store::StoreError> {
            self.inner.insert_ledger(rows).await
        }
        async fn spend(
            &self,
            q: &crate::store::SpendQuery,
        ) -> Result<Vec<crate::store::SpendRow>, crate::store::StoreError> {
            self.inner.spend(q).await
        }
        async fn requests(
            &self,
            q: &crate::store::RequestsQuery,
        ) -> Result<Vec<LedgerRow>, crate::store::StoreError> {
            self.inner.requests(q).await
        }
        async fn spend_since(
            &self,
            scope: &SpendScope,
            since: DateTime<Utc>,
        ) -> Result<NanoUsd, crate::store::StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(StdDuration::from_millis(20)).await;
            self.inner.spend_since(scope, since).await
        }
        async fn get_setting(&self, n: &str) -> Result<Option<String>, crate::store::StoreError> {
            self.inner.get_setting(n).await
        }
        async fn set_setting(&self, n: &str, v: &str) -> Result<(), crate::store::StoreError> {
            self.inner.set_setting(n, v).await
        }
        async fn ping(&self) -> Result<(), crate::store::StoreError> {
            self.inner.ping().await
        }
    }
    let inner = crate::store::connect("sqlite::memory:").await.unwrap();
    let counting = Arc::new(CountingStore {
        inner,
        calls: AtomicUsize::new(0),
    });
    let store: Arc<dyn Store> = counting.clone();
    let clock = Arc::new(ManualClock::new(start()));
    let engine = Arc::new(engine(&store, &clock));
    let cfg = Arc::new(config(
        vec![budget("cap", 100.0, Period::Daily)],
        vec![team("t", &["cap"])],
        &[],
    ));
    let k = Arc::new(key("k", "t"));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (engine, cfg, k) = (engine.clone(), cfg.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            let m = model();
            let body = i.to_string();
            let a = engine
                .admit(&cfg, &subject(&k), &facts(&m, IN, OUT, body.as_bytes()))
                .await
                .unwrap();
            engine.settle(&cfg, a, &usage(IN, OUT)).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(counting.calls.load(Ordering::SeqCst), 1);
}

/// Memory counters that can lose every counter at once, like a Redis
/// restarted without persistence, or (`drop_seeds`) keep losing the ones
/// just restored, like a Redis evicting them.
struct Forgetful {
    clock: Arc<ManualClock>,
    inner: parking_lot::Mutex<Arc<MemoryCounters>>,
    drop_seeds: std::sync::atomic::AtomicBool,
    seeds: AtomicUsize,
}

impl Forgetful {
    fn new(clock: &Arc<ManualClock>) -> Arc<Forgetful> {
        Arc::new(Forgetful {
            clock: clock.clone(),
            inner: parking_lot::Mutex::new(Arc::new(MemoryCounters::new(clock.clone()))),
            drop_seeds: Default::default(),
            seeds: AtomicUsize::new(0),
        })
    }

    fn forget(&self) {
        *self.inner.lock() = Arc::new(MemoryCounters::new(self.clock.clone()));
    }

    fn now(&self) -> Arc<MemoryCounters> {
        self.inner.lock().clone()
    }
}

#[async_trait]
impl Counters for Forgetful {
    async fn admit(&self, req: &AdmitRequest) -> Result<Admission, CountersError> {
        self.now().admit(req).await
    }
    async fn settle(&self, req: &AdmitRequest, g: &Grant, a: Actual) -> Result<(), CountersError> {
        self.now().settle(req, g, a).await
    }
    async fn seed_budget(&self, k: &str, s: NanoUsd, e: Option<i64>) -> Result<(), CountersError> {
        self.seeds.fetch_add(1, Ordering::SeqCst);
        if self.drop_seeds.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.now().seed_budget(k, s, e).await
    }
    async fn budget(&self, k: &str) -> Result<Option<BudgetState>, CountersError> {
        self.now().budget(k).await
    }
    async fn record_outcome(
        &self,
        k: &str,
        c: Option<&str>,
        m: u32,
        w: u64,
    ) -> Result<bool, CountersError> {
        self.now().record_outcome(k, c, m, w).await
    }
    async fn ping(&self) -> Result<(), CountersError> {
        Ok(())
    }
}

#[tokio::test]
async fn a_budget_lost_mid_period_is_restored_before_the_next_admission() {
    let store = crate::store::connect("sqlite::memory:").await.unwrap();
    let clock = Arc::new(ManualClock::new(start()));
    let counters = Forgetful::new(&clock);
    let env = Env {
        engine: PolicyEngine::new(
            counters.clone(),
            store.clone(),
            KeyCache::new(store.clone()),
            clock.clone(),
            reqwest::Client::new(),
        ),
        clock,
        store,
    };
    let cfg = config(
        vec![budget("cap", 0.01, Period::Daily)],
        vec![team("t", &["cap"])],
        &[],
    );
    let k = key("k", "t");
    let row = |id: &str| LedgerRow {
        ts: start(),
        request_id: id.into(),
        key_id: k.id.clone(),
        team: k.team.clone(),
        model: "m".into(),
        provider: "mock".into(),
        status: 200,
        prompt_tokens: IN,
        completion_tokens: OUT,
        cost: NanoUsd(COST),
        latency_ms: 1,
        error_code: None,
        would_reject: Vec::new(),
        attempts: 0,
        cache: None,
        cache_saved: Default::default(),
        policy: None,
    };
    // Two requests spent and in the ledger: $0.006 of $0.01.
    for id in ["r1", "r2"] {
        spend(&env, &cfg, &k, IN, OUT).await.unwrap();
        env.store.insert_ledger(&[row(id)]).await.unwrap();
    }
    assert_eq!(counters.seeds.load(Ordering::SeqCst), 1);
    // The counters come back empty mid-period, long before any cache of
    // "already restored" would have expired.
    counters.forget();
    env.clock.advance(Duration::seconds(1));
    spend(&env, &cfg, &k, IN, OUT).await.unwrap();
    assert_eq!(counters.seeds.load(Ordering::SeqCst), 2);
    let ApiError::BudgetExceeded { message, .. } =
        spend(&env, &cfg, &k, IN, OUT).await.unwrap_err()
    else {
        panic!("expected budget_exceeded");
    };
    assert!(message.contains("spent $0.009"), "{message}");
    // Restored once per loss, not once per request.
    assert_eq!(counters.seeds.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_budget_that_keeps_vanishing_fails_closed() {
    let store = crate::store::connect("sqlite::memory:").await.unwrap();
    let clock = Arc::new(ManualClock::new(start()));
    let counters = Forgetful::new(&clock);
    counters.drop_seeds.store(true, Ordering::SeqCst);
    let engine = PolicyEngine::new(
        counters.clone(),
        store.clone(),
        KeyCache::new(store),
        clock,
        reqwest::Client::new(),
    );
    let cfg = config(
        vec![budget("cap", 1.0, Period::Daily)],
        vec![team("t", &["cap"])],
        &[],
    );
    let k = key("k", "t");
    let m = model();
    let err = engine
        .admit(&cfg, &subject(&k), &facts(&m, IN, OUT, b"x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "counters_unavailable");
    assert!(
        err.to_string().contains("keep losing budget `cap`"),
        "{err}"
    );
    assert_eq!(counters.seeds.load(Ordering::SeqCst), ADMIT_ATTEMPTS - 1);
}

#[tokio::test]
async fn store_down_at_first_use_fails_closed() {
    let cfg = config(
        vec![budget("cap", 1.0, Period::Daily)],
        vec![team("t", &["cap"])],
        &[],
    );
    let inner = crate::store::connect("sqlite::memory:").await.unwrap();
    let clock = Arc::new(ManualClock::new(start()));
    let failing: Arc<dyn Store> = Arc::new(FailingStore(inner));
    let e = engine(&failing, &clock);
    let k = key("k", "t");
    let m = model();
    let err = e
        .admit(&cfg, &subject(&k), &facts(&m, IN, OUT, b"x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "counters_unavailable");
    assert!(
        err.to_string()
            .contains("cannot restore the spend of budget `cap`"),
        "{err}"
    );
}

/// A store whose ledger queries fail.
struct FailingStore(Arc<dyn Store>);

#[async_trait]
impl Store for FailingStore {
    async fn create_team(&self, t: &TeamRecord) -> Result<(), crate::store::StoreError> {
        self.0.create_team(t).await
    }
    async fn get_team(&self, id: &TeamId) -> Result<Option<TeamRecord>, crate::store::StoreError> {
        self.0.get_team(id).await
    }
    async fn list_teams(&self) -> Result<Vec<TeamRecord>, crate::store::StoreError> {
        self.0.list_teams().await
    }
    async fn update_team(&self, t: &TeamRecord) -> Result<bool, crate::store::StoreError> {
        self.0.update_team(t).await
    }
    async fn delete_team(&self, id: &TeamId) -> Result<bool, crate::store::StoreError> {
        self.0.delete_team(id).await
    }
    async fn create_key(&self, k: &KeyRecord) -> Result<(), crate::store::StoreError> {
        self.0.create_key(k).await
    }
    async fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, crate::store::StoreError> {
        self.0.get_key(id).await
    }
    async fn list_keys(
        &self,
        t: Option<&TeamId>,
    ) -> Result<Vec<KeyRecord>, crate::store::StoreError> {
        self.0.list_keys(t).await
    }
    async fn update_key(&self, k: &KeyRecord) -> Result<bool, crate::store::StoreError> {
        self.0.update_key(k).await
    }
    async fn suspend_key(
        &self,
        id: &KeyId,
        at: DateTime<Utc>,
    ) -> Result<bool, crate::store::StoreError> {
        self.0.suspend_key(id, at).await
    }
    async fn insert_ledger(&self, rows: &[LedgerRow]) -> Result<(), crate::store::StoreError> {
        self.0.insert_ledger(rows).await
    }
    async fn spend(
        &self,
        q: &crate::store::SpendQuery,
    ) -> Result<Vec<crate::store::SpendRow>, crate::store::StoreError> {
        self.0.spend(q).await
    }
    async fn requests(
        &self,
        q: &crate::store::RequestsQuery,
    ) -> Result<Vec<LedgerRow>, crate::store::StoreError> {
        self.0.requests(q).await
    }
    async fn spend_since(
        &self,
        _: &SpendScope,
        _: DateTime<Utc>,
    ) -> Result<NanoUsd, crate::store::StoreError> {
        Err(crate::store::StoreError::Backend(
            "connection refused".into(),
        ))
    }
    async fn get_setting(&self, n: &str) -> Result<Option<String>, crate::store::StoreError> {
        self.0.get_setting(n).await
    }
    async fn set_setting(&self, n: &str, v: &str) -> Result<(), crate::store::StoreError> {
        self.0.set_setting(n, v).await
    }
    async fn ping(&self) -> Result<(), crate::store::StoreError> {
        self.0.ping().await
    }
}

/// Counters that are down, and count how often they were asked.
#[derive(Default)]
struct DownCounters(AtomicUsize);

#[async_trait]
impl Counters for DownCounters {
    async fn admit(&self, _: &AdmitRequest) -> Result<Admission, CountersError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(CountersError::Unavailable("connection refused".into()))
    }
    async fn settle(&self, _: &AdmitRequest, _: &Grant, _: Actual) -> Result<(), CountersError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(CountersError::Unavailable("connection refused".into()))
    }
    async fn seed_budget(&self, _: &str, _: NanoUsd, _: Option<i64>) -> Result<(), CountersError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(CountersError::Unavailable("connection refused".into()))
    }
    async fn budget(&self, _: &str) -> Result<Option<BudgetState>, CountersError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(CountersError::Unavailable("connection refused".into()))
    }
    async fn record_outcome(
        &self,
        _: &str,
        _: Option<&str>,
        _: u32,
        _: u64,
    ) -> Result<bool, CountersError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(CountersError::Unavailable("connection refused".into()))
    }
    async fn ping(&self) -> Result<(), CountersError> {
        Err(CountersError::Unavailable("connection refused".into()))
    }
}

#[tokio::test]
async fn counters_down_refuses_limited_keys_only() {
    let store = crate::store::connect("sqlite::memory:").await.unwrap();
    let counters = Arc::new(DownCounters::default());
    let clock = Arc::new(ManualClock::new(start()));
    let engine = PolicyEngine::new(
        counters.clone(),
        store.clone(),
        KeyCache::new(store),
        clock,
        reqwest::Client::new(),
    );
    let cfg = config(
        vec![rate("rl", Some(10), None, None)],
        vec![team("limited", &["rl"]), team("free", &[])],
        &[],
    );
    let m = model();
    let free = key("f", "free");
    let a = engine
        .admit(&cfg, &subject(&free), &facts(&m, IN, OUT, b"x"))
        .await
        .unwrap();
    assert!(a.headers.is_empty());
    let s = engine.settle(&cfg, a, &usage(IN, OUT)).await;
    assert_eq!(
        s,
        Settled {
            cost: NanoUsd(COST),
            budget_remaining: None
        }
    );
    engine
        .record_outcome(&cfg, &subject(&free), Some("invalid_request"))
        .await;
    assert_eq!(
        counters.0.load(Ordering::SeqCst),
        0,
        "a key without counter-backed policies never calls them"
    );

    let limited = key("l", "limited");
    let err = engine
        .admit(&cfg, &subject(&limited), &facts(&m, IN, OUT, b"x"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "counters_unavailable");
    assert_eq!(err.status().as_u16(), 503);
    assert!(
        err.to_string()
            .contains("shared counters (Redis) are unreachable"),
        "{err}"
    );
}

#[tokio::test]
async fn rate_limits_reject_with_exact_retry_after_and_headers() {
    let env = env().await;
    let cfg = config(
        vec![rate("rl", Some(2), Some(10_000), None)],
        vec![team("t", &["rl"]), team("t2", &["rl"])],
        &[],
    );
    let k = key("k", "t");
    let m = model();
    let a = env
        .engine
        .admit(&cfg, &subject(&k), &facts(&m, 100, 100, b"1"))
        .await
        .unwrap();
    assert_eq!(
        header_value(&a, "x-ratelimit-limit-requests").as_deref(),
        Some("2")
    );
    assert_eq!(
        header_value(&a, "x-ratelimit-remaining-requests").as_deref(),
        Some("1")
    );
    assert_eq!(
        header_value(&a, "x-ratelimit-reset-requests").as_deref(),
        Some("30s")
    );
    assert_eq!(
        header_value(&a, "x-ratelimit-limit-tokens").as_deref(),
        Some("10000")
    );
    assert_eq!(
        header_value(&a, "x-ratelimit-remaining-tokens").as_deref(),
        Some("9800")
    );
    assert_eq!(
        header_value(&a, "x-ratelimit-reset-tokens").as_deref(),
        Some("1.2s")
    );
    assert!(header_value(&a, "x-tollgate-budget-remaining-usd").is_none());
    env.engine.settle(&cfg, a, &usage(100, 100)).await;
    let a = env
        .engine
        .admit(&cfg, &subject(&k), &facts(&m, 100, 100, b"2"))
        .await
        .unwrap();
    env.engine.settle(&cfg, a, &usage(100, 100)).await;
    let ApiError::RateLimitExceeded {
        message,
        retry_after_secs,
        policy: Some(_),
    } = env
        .engine
        .admit(&cfg, &subject(&k), &facts(&m, 100, 100, b"3"))
        .await
        .unwrap_err()
    else {
        panic!("expected rate_limit_exceeded");
    };
    // Two requests per minute: one frees every 30 s.
    assert_eq!(retry_after_secs, 30);
    assert!(
        message
            .contains("rate limit `rl` (team `t`): 2 requests per minute exceeded; retry in 30s"),
        "{message}"
    );
    env.clock.advance(Duration::seconds(30));
    let a = env
        .engine
        .admit(&cfg, &subject(&k), &facts(&m, 100, 100, b"4"))
        .await
        .unwrap();
    env.engine.settle(&cfg, a, &usage(100, 100)).await;

    // A request larger than the whole tokens-per-minute allowance can never fit.
    let ApiError::RateLimitExceeded { message, .. } = env
        .engine
        .admit(
            &cfg,
            &subject(&key("k2", "t2")),
            &facts(&m, 5_000, 6_000, b"5"),
        )
        .await
        .unwrap_err()
    else {
        panic!("expected rate_limit_exceeded");
    };
    assert!(message.contains("it can never fit"), "{message}");
}

#[tokio::test]
async fn max_parallel_holds_until_settled() {
    let env = env().await;
    let cfg = config(
        vec![rate("par", None, None, Some(1))],
        vec![team("t", &["par"])],
        &[],
    );
    let k = key("k", "t");
    let m = model();
    let mut f = facts(&m, 10, 10, b"1");
    let a = env.engine.admit(&cfg, &subject(&k), &f).await.unwrap();
    f.request_id = "req2";
    let err = env.engine.admit(&cfg, &subject(&k), &f).await.unwrap_err();
    assert_eq!(err.code(), "rate_limit_exceeded");
    assert!(err.to_string().contains("`max_parallel`"), "{err}");
    env.engine.settle(&cfg, a, &Outcome::default()).await;
    env.engine.admit(&cfg, &subject(&k), &f).await.unwrap();
}

#[tokio::test]
async fn loop_guard_refuses_identical_bodies_then_clears() {
    let env = env().await;
    let cfg = config(
        vec![loop_guard("lg", 3, 60, OnTrip::Throttle)],
        vec![team("t", &[])],
        &["lg"],
    );
    let k = key("k", "t");
    let m = model();
    for _ in 0..3 {
        let a = env
            .engine
            .admit(&cfg, &subject(&k), &facts(&m, 10, 10, b"same"))
            .await
            .unwrap();
        env.engine.settle(&cfg, a, &usage(10, 10)).await;
    }
    let ApiError::LoopDetected {
        message,
        retry_after_secs,
        policy: Some(_),
    } = env
        .engine
        .admit(&cfg, &subject(&k), &facts(&m, 10, 10, b"same"))
        .await
        .unwrap_err()
    else {
        panic!("expected loop_detected");
    };
    assert_eq!(retry_after_secs, 60);
    assert!(
        message.contains("more than 3 identical request bodies from key `k` within 60s"),
        "{message}"
    );
    assert!(
        message.contains("refused until 2026-11-27T10:01:00Z"),
        "{message}"
    );
    // Another body, or another key, is not affected.
    env.engine
        .admit(&cfg, &subject(&k), &facts(&m, 10, 10, b"other"))
        .await
        .unwrap();
    env.engine
        .admit(&cfg, &subject(&key("k2", "t")), &facts(&m, 10, 10, b"same"))
        .await
        .unwrap();
    env.clock.advance(Duration::seconds(60));
    env.engine
        .admit(&cfg, &subject(&k), &facts(&m, 10, 10, b"same"))
        .await
        .unwrap();
}

#[tokio::test]
async fn error_streak_throttles_and_own_codes_do_not_count() {
    let env = env().await;
    let cfg = config(
        vec![loop_guard("lg", 2, 30, OnTrip::Throttle)],
        vec![team("t", &[])],
        &["lg"],
    );
    let k = key("k", "t");
    let m = model();
    // Policy rejections never feed the streak.
    for _ in 0..5 {
        env.engine
            .record_outcome(&cfg, &subject(&k), Some("budget_exceeded"))
            .await;
    }
    env.engine
        .admit(&cfg, &subject(&k), &facts(&m, 10, 10, b"a"))
        .await
        .unwrap();
    for _ in 0..3 {
        env.engine
            .record_outcome(&cfg, &subject(&k), Some("invalid_request"))
            .await;
    }
    let ApiError::LoopDetected {
        message,
        retry_after_secs,
        policy: Some(_),
    } = env
        .engine
        .admit(&cfg, &subject(&k), &facts(&m, 10, 10, b"b"))
        .await
        .unwrap_err()
    else {
        panic!("expected loop_detected");
    };
    assert!((29..=30).contains(&retry_after_secs), "{retry_after_secs}");
    assert!(
        message.contains("same error more than 2 times in a row"),
        "{message}"
    );
    env.clock.advance(Duration::seconds(31));
    env.engine
        .admit(&cfg, &subject(&k), &facts(&m, 10, 10, b"c"))
        .await
        .unwrap();
}

#[tokio::test]
async fn suspend_on_trip_suspends_the_key_in_the_store() {
    let env = env().await;
    let cfg = config(
        vec![loop_guard("lg", 1, 60, OnTrip::Suspend)],
        vec![team("t", &[])],
        &["lg"],
    );
    let k = key("k", "t");
    store_key(&env, &k).await;
    let m = model();
    env.engine
        .admit(&cfg, &subject(&k), &facts(&m, 10, 10, b"same"))
        .await
        .unwrap();
    let err = env
        .engine
        .admit(&cfg, &subject(&k), &facts(&m, 10, 10, b"same"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("suspended"), "{err}");
    let stored = env.store.get_key(&k.id).await.unwrap().unwrap();
    assert_eq!(stored.suspended_at, Some(start()));
}

/// A store where an admin's revoke lands just before the loop guard's
/// suspension is written: right after the key is read, or right before a
/// conditional update.
struct RevokedMeanwhile {
    inner: Arc<dyn Store>,
    revoked: std::sync::atomic::AtomicBool,
}

impl RevokedMeanwhile {
    async fn revoke_once(&self, id: &KeyId) {
        if self.revoked.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut rec = self.inner.get_key(id).await.unwrap().unwrap();
        rec.revoked_at = Some(start());
        assert!(self.inner.update_key(&rec).await.unwrap());
    }
}

#[async_trait]
impl Store for RevokedMeanwhile {
    async fn create_team(&self, t: &TeamRecord) -> Result<(), crate::store::StoreError> {
        self.inner.create_team(t).await
    }
    async fn get_team(&self, id: &TeamId) -> Result<Option<TeamRecord>, crate::store::StoreError> {
        self.inner.get_team(id).await
    }
    async fn list_teams(&self) -> Result<Vec<TeamRecord>, crate::store::StoreError> {
        self.inner.list_teams().await
    }
    async fn update_team(&self, t: &TeamRecord) -> Result<bool, crate::store::StoreError> {
        self.inner.update_team(t).await
    }
    async fn delete_team(&self, id: &TeamId) -> Result<bool, crate::store::StoreError> {
        self.inner.delete_team(id).await
    }
    async fn create_key(&self, k: &KeyRecord) -> Result<(), crate::store::StoreError> {
        self.inner.create_key(k).await
    }
    async fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, crate::store::StoreError> {
        let read = self.inner.get_key(id).await;
        self.revoke_once(id).await;
        read
    }
    async fn list_keys(
        &self,
        t: Option<&TeamId>,
    ) -> Result<Vec<KeyRecord>, crate::store::StoreError> {
        self.inner.list_keys(t).await
    }
    async fn update_key(&self, k: &KeyRecord) -> Result<bool, crate::store::StoreError> {
        self.inner.update_key(k).await
    }
    async fn suspend_key(
        &self,
        id: &KeyId,
        at: DateTime<Utc>,
    ) -> Result<bool, crate::store::StoreError> {
        self.revoke_once(id).await;
        self.inner.suspend_key(id, at).await
    }
    async fn insert_ledger(&self, rows: &[LedgerRow]) -> Result<(), crate::store::StoreError> {
        self.inner.insert_ledger(rows).await
    }
    async fn spend(
        &self,
        q: &crate::store::SpendQuery,
    ) -> Result<Vec<crate::store::SpendRow>, crate::store::StoreError> {
        self.inner.spend(q).await
    }
    async fn requests(
        &self,
        q: &crate::store::RequestsQuery,
    ) -> Result<Vec<LedgerRow>, crate::store::StoreError> {
        self.inner.requests(q).await
    }
    async fn spend_since(
        &self,
        scope: &SpendScope,
        since: DateTime<Utc>,
    ) -> Result<NanoUsd, crate::store::StoreError> {
        self.inner.spend_since(scope, since).await
    }
    async fn get_setting(&self, n: &str) -> Result<Option<String>, crate::store::StoreError> {
        self.inner.get_setting(n).await
    }
    async fn set_setting(&self, n: &str, v: &str) -> Result<(), crate::store::StoreError> {
        self.inner.set_setting(n, v).await
    }
    async fn ping(&self) -> Result<(), crate::store::StoreError> {
        self.inner.ping().await
    }
}

#[tokio::test]
async fn a_suspension_never_undoes_a_revocation_that_lands_meanwhile() {
    let env = env().await;
    let k = key("k", "t");
    store_key(&env, &k).await;
    let store: Arc<dyn Store> = Arc::new(RevokedMeanwhile {
        inner: env.store.clone(),
        revoked: std::sync::atomic::AtomicBool::new(false),
    });
    let engine = engine(&store, &env.clock);
    let cfg = config(
        vec![loop_guard("lg", 1, 60, OnTrip::Suspend)],
        vec![team("t", &[])],
        &["lg"],
    );
    let m = model();
    engine
        .admit(&cfg, &subject(&k), &facts(&m, 10, 10, b"same"))
        .await
        .unwrap();
    engine
        .admit(&cfg, &subject(&k), &facts(&m, 10, 10, b"same"))
        .await
        .unwrap_err();
    let stored = env.store.get_key(&k.id).await.unwrap().unwrap();
    assert_eq!(
        stored.revoked_at,
        Some(start()),
        "the revocation was undone"
    );
}

#[tokio::test]
async fn shadow_policies_record_but_never_reject() {
    let env = env().await;
    let access = policy(
        "only-x",
        PolicyKind::ModelAccess(ModelAccess {
            allow: vec!["x-*".into()],
        }),
    );
    let cfg = config(
        vec![
            shadow(budget("cap", 0.003, Period::Daily)),
            shadow(rate("rl", Some(1), None, Some(1))),
            shadow(loop_guard("lg", 1, 60, OnTrip::Suspend)),
            shadow(access),
        ],
        vec![team("t", &["cap", "rl", "only-x"])],
        &["lg"],
    );
    let k = key("k", "t");
    store_key(&env, &k).await;
    let m = model();
    let mut held = Vec::new();
    for _ in 0..3 {
        let access = env
            .engine
            .check_model_access(&cfg, &subject(&k), "m")
            .unwrap();
        assert_eq!(access, ["only-x:model_not_allowed"]);
        let a = env
            .engine
            .admit(&cfg, &subject(&k), &facts(&m, IN, OUT, b"same"))
            .await
            .unwrap();
        assert!(a.clamp_max_tokens.is_none());
        // Shadow limits stay invisible to the client.
        assert!(a.headers.is_empty(), "{:?}", a.headers);
        if !held.is_empty() {
            let mut hits = a.would_reject().to_vec();
            hits.sort();
            assert_eq!(
                hits,
                [
                    "cap:budget_exceeded",
                    "lg:loop_detected",
                    "rl:rate_limit_exceeded",
                    "rl:rate_limit_exceeded"
                ]
            );
        }
        held.push(a);
    }
    assert!(env.engine.model_allowed(&cfg, &subject(&k), "m"));
    let counts = env.engine.would_reject.lock().clone();
    let count = |p: &str, s: Scope, id: &str| {
        counts
            .get(&(p.to_owned(), s, id.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(count("cap", Scope::Team, "t"), 2);
    // Requests per minute (1) and parallel (1): two refusals each.
    assert_eq!(count("rl", Scope::Team, "t"), 4);
    assert_eq!(count("lg", Scope::Key, "k"), 2);
    assert_eq!(count("only-x", Scope::Team, "t"), 3);
    let reports = env.engine.budgets(&cfg, None).await.unwrap();
    let cap = reports.iter().find(|r| r.policy == "cap").unwrap();
    assert_eq!(cap.would_reject, 2);
    assert_eq!(cap.mode, "shadow");
    for a in held {
        env.engine.settle(&cfg, a, &usage(IN, OUT)).await;
    }
    // A shadow loop guard does not suspend.
    assert_eq!(
        env.store
            .get_key(&k.id)
            .await
            .unwrap()
            .unwrap()
            .suspended_at,
        None
    );
}

#[tokio::test]
async fn model_access_every_glob_set_must_allow() {
    let env = env().await;
    let access = policy(
        "cheap",
        PolicyKind::ModelAccess(ModelAccess {
            allow: vec!["gpt-4o-mini".into(), "claude-3-5-haiku*".into()],
        }),
    );
    let mut t = team("t", &["cheap"]);
    t.models = Some(vec!["gpt-*".into(), "claude-*".into()]);
    let cfg = config(vec![access], vec![t], &[]);
    let mut k = key("k", "t");
    let who = subject(&k);
    assert!(env.engine.model_allowed(&cfg, &who, "gpt-4o-mini"));
    assert!(
        env.engine
            .model_allowed(&cfg, &who, "claude-3-5-haiku-20241022")
    );
    assert!(!env.engine.model_allowed(&cfg, &who, "gpt-4o"));
    let err = env
        .engine
        .check_model_access(&cfg, &who, "gpt-4o")
        .unwrap_err();
    assert_eq!(err.code(), "model_not_allowed");
    assert!(
        err.to_string()
            .contains("policy `cheap` allows only `gpt-4o-mini`, `claude-3-5-haiku*`"),
        "{err}"
    );
    k.models = Some(vec!["claude-*".into()]);
    let who = subject(&k);
    assert!(!env.engine.model_allowed(&cfg, &who, "gpt-4o-mini"));
    let shadowed = env
        .engine
        .check_model_access(&cfg, &who, "claude-3-5-haiku-latest")
        .unwrap();
    // Nothing shadowed: nothing for the request log, and nothing allocated.
    assert!(shadowed.is_empty());
    assert_eq!(shadowed.capacity(), 0);
    // An API team's own globs apply too.
    let api_team = TeamRecord {
        id: TeamId("t".into()),
        policies: vec![],
        budget: None,
        period: None,
        models: Some(vec!["claude-3-5-haiku-2*".into()]),
        created_at: start(),
        cache: true,
    };
    let who = Subject {
        key: &k,
        team: Some(&api_team),
    };
    assert!(
        !env.engine
            .model_allowed(&cfg, &who, "claude-3-5-haiku-latest")
    );
}

#[tokio::test]
async fn missing_policy_fails_closed() {
    let env = env().await;
    let cfg = config(vec![], vec![team("t", &[])], &[]);
    let mut k = key("k", "t");
    k.policies = vec!["gone".into()];
    let m = model();
    let err = env
        .engine
        .admit(&cfg, &subject(&k), &facts(&m, 1, 1, b"x"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("policy `gone` attached to key `k` is not defined"),
        "{err}"
    );
    assert!(!env.engine.model_allowed(&cfg, &subject(&k), "m"));
}

#[tokio::test]
async fn budget_report_lists_team_and_key_budgets() {
    let env = env().await;
    let cfg = config(
        vec![budget("cap", 1.0, Period::Daily)],
        vec![team("t", &["cap"])],
        &[],
    );
    let mut k = key("k", "t");
    k.budget = Some(NanoUsd(USD / 10));
    store_key(&env, &k).await;
    let a = env
        .engine
        .admit(&cfg, &subject(&k), &facts(&model(), IN, OUT, b"x"))
        .await
        .unwrap();
    let reports = env
        .engine
        .budgets(&cfg, Some(&TeamId("t".into())))
        .await
        .unwrap();
    assert_eq!(reports.len(), 2, "{reports:?}");
    let team_row = &reports[0];
    assert_eq!(
        (
            team_row.scope,
            team_row.id.as_str(),
            team_row.policy.as_str()
        ),
        ("team", "t", "cap")
    );
    assert_eq!(team_row.reserved_usd, 0.003);
    assert_eq!(team_row.resets_at.as_deref(), Some("2026-11-28T00:00:00Z"));
    let key_row = &reports[1];
    assert_eq!(
        (key_row.scope, key_row.id.as_str(), key_row.policy.as_str()),
        ("key", "k", "key-budget")
    );
    assert_eq!(key_row.period, "total");
    assert_eq!(key_row.resets_at, None);
    env.engine.settle(&cfg, a, &usage(IN, OUT / 2)).await;
    let reports = env
        .engine
        .budgets(&cfg, Some(&TeamId("t".into())))
        .await
        .unwrap();
    assert_eq!(reports[0].spent_usd, 0.002);
    assert_eq!(reports[0].reserved_usd, 0.0);
    assert_eq!(reports[0].remaining_usd, 0.998);
    let err = env
        .engine
        .budgets(&cfg, Some(&TeamId("nope".into())))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "team_not_found");
}

/// A webhook receiver on 127.0.0.1:0 that answers 500 to the first
/// `fail_first` calls.
async fn webhook(
    fail_first: usize,
) -> (
    SocketAddr,
    Arc<parking_lot::Mutex<Vec<Value>>>,
    Arc<AtomicUsize>,
) {
    let got = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let (g, c) = (got.clone(), calls.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let (g, c) = (g.clone(), c.clone());
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < fail_first {
                    return http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                g.lock().push(v);
                http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, got, calls)
}

async fn wait_for(got: &parking_lot::Mutex<Vec<Value>>, n: usize) {
    for _ in 0..200 {
        if got.lock().len() >= n {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    // Long enough for a duplicate to show up if one were sent.
    tokio::time::sleep(StdDuration::from_millis(100)).await;
}

fn with_alerts(mut cfg: Config, addr: SocketAddr) -> Config {
    cfg.alerts = Some(AlertsConfig {
        webhook_url: format!("http://{addr}/hook"),
        thresholds: vec![0.5, 0.8, 1.0],
        format: crate::config::AlertFormat::Json,
    });
    cfg
}

#[tokio::test]
async fn alert_webhook_gets_each_threshold_once_and_the_first_block() {
    let (addr, got, _) = webhook(0).await;
    let env = env().await;
    // $0.01 cap, $0.003 a request: 30%, 60%, 90%, then blocked.
    let cfg = with_alerts(
        config(
            vec![budget("cap", 0.01, Period::Daily)],
            vec![team("t", &["cap"])],
            &[],
        ),
        addr,
    );
    let k = key("k", "t");
    for _ in 0..3 {
        spend(&env, &cfg, &k, IN, OUT).await.unwrap();
    }
    for _ in 0..3 {
        assert!(spend(&env, &cfg, &k, IN, OUT).await.is_err());
    }
    wait_for(&got, 3).await;
    let mut events: Vec<Value> = got.lock().clone();
    events.sort_by_key(|e| {
        e["threshold"]
            .as_f64()
            .map(|t| (t * 100.0) as i64)
            .unwrap_or(1000)
    });
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0]["event"], "budget_threshold");
    assert_eq!(events[0]["threshold"], 0.5);
    // The worker reads the counter when it runs, so the spend may be later than the crossing.
    assert!(
        events[0]["spent_usd"].as_f64().unwrap() >= 0.005,
        "{events:?}"
    );
    assert_eq!(events[0]["limit_usd"], 0.01);
    assert_eq!(events[0]["team"], "t");
    assert_eq!(events[0]["key"], Value::Null);
    assert_eq!(events[0]["policy"], "cap");
    assert_eq!(events[0]["period"], "daily");
    assert_eq!(events[0]["resets_at"], "2026-11-28T00:00:00Z");
    assert_eq!(events[1]["threshold"], 0.8);
    assert_eq!(events[2]["event"], "budget_blocked");
}

#[tokio::test]
async fn alert_action_budget_never_blocks_and_alerts_at_every_threshold() {
    let (addr, got, _) = webhook(0).await;
    let env = env().await;
    let p = with_cost(budget("soft", 0.01, Period::Daily), |c| {
        c.action = CostAction::Alert
    });
    let cfg = with_alerts(config(vec![p], vec![team("t", &["soft"])], &[]), addr);
    let k = key("k", "t");
    for _ in 0..6 {
        spend(&env, &cfg, &k, IN, OUT).await.unwrap();
    }
    wait_for(&got, 3).await;
    let mut thresholds: Vec<f64> = got
        .lock()
        .iter()
        .filter_map(|e| e["threshold"].as_f64())
        .collect();
    thresholds.sort_by(f64::total_cmp);
    assert_eq!(thresholds, vec![0.5, 0.8, 1.0]);
}

#[tokio::test]
async fn alert_delivery_retries_after_a_500() {
    let (addr, got, calls) = webhook(1).await;
    let env = env().await;
    let cfg = with_alerts(
        config(
            vec![loop_guard("lg", 1, 60, OnTrip::Throttle)],
            vec![team("t", &[])],
            &["lg"],
        ),
        addr,
    );
    let k = key("k", "t");
    let m = model();
    env.engine
        .admit(&cfg, &subject(&k), &facts(&m, 1, 1, b"same"))
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(
            env.engine
                .admit(&cfg, &subject(&k), &facts(&m, 1, 1, b"same"))
                .await
                .is_err()
        );
    }
    wait_for(&got, 1).await;
    let events = got.lock().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "loop_detected");
    assert_eq!(events[0]["key"], "k");
    assert_eq!(events[0]["resets_at"], "2026-11-27T10:01:00Z");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// 1,000 concurrent requests against a cap that fits 50: exactly 50 get
/// through and the spend never passes the cap; with `clamp` the last
/// dollar is used too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_overshoot_the_cap() {
    for clamp in [false, true] {
        let store = crate::store::connect("sqlite::memory:").await.unwrap();
        let clock = Arc::new(ManualClock::new(start()));
        let engine = Arc::new(engine(&store, &clock));
        // 50.5 worst cases: the remainder only fits a clamped request.
        let limit = COST * 50 + COST / 2;
        let mut p = budget("cap", limit as f64 / USD as f64, Period::Daily);
        if clamp {
            p = with_cost(p, |c| c.on_insufficient = OnInsufficient::Clamp);
        }
        let cfg = Arc::new(config(vec![p], vec![team("t", &["cap"])], &[]));
        let k = Arc::new(key("k", "t"));
        let mut tasks = Vec::new();
        for i in 0..1000 {
            let (engine, cfg, k) = (engine.clone(), cfg.clone(), k.clone());
            tasks.push(tokio::spawn(async move {
                let m = model();
                let body = i.to_string();
                let id = format!("req-{i}");
                let f = RequestFacts {
                    request_id: &id,
                    ..facts(&m, IN, OUT, body.as_bytes())
                };
                match engine.admit(&cfg, &subject(&k), &f).await {
                    Ok(a) => {
                        let out = a.clamp_max_tokens.unwrap_or(OUT);
                        tokio::task::yield_now().await;
                        engine.settle(&cfg, a, &usage(IN, out)).await;
                        true
                    }
                    Err(e) => {
                        assert_eq!(e.code(), "budget_exceeded");
                        false
                    }
                }
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            admitted += usize::from(t.await.unwrap());
        }
        let report = engine.budgets(&cfg, None).await.unwrap();
        let spent = NanoUsd::from_usd(report[0].spent_usd).unwrap().0;
        assert!(spent <= limit, "spent {spent} > limit {limit}");
        assert_eq!(report[0].reserved_usd, 0.0);
        if clamp {
            assert_eq!(admitted, 51);
            assert_eq!(spent, limit);
        } else {
            assert_eq!(admitted, 50);
            assert_eq!(spent, COST * 50);
        }
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Admit a request and hold it.
        Admit {
            input: u64,
            max_out: u64,
        },
        /// Settle the held request at `pick`, using `share` of its allowed output.
        Settle {
            pick: usize,
            share: u8,
        },
        Advance {
            minutes: i64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u64..3000, 1u64..3000).prop_map(|(input, max_out)| Op::Admit { input, max_out }),
            3 => (any::<usize>(), 0u8..=100).prop_map(|(pick, share)| Op::Settle { pick, share }),
            1 => (1i64..90).prop_map(|minutes| Op::Advance { minutes }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

        /// Whatever the order of reservations and settlements, with output
        /// never beyond what was allowed: spend plus reservations never pass
        /// the limit, and once all is settled nothing stays reserved.
        #[test]
        fn reserve_settle_never_overshoots(ops in proptest::collection::vec(op(), 1..60), clamp: bool) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let env = env().await;
                let limit = 0.02;
                let mut p = budget("cap", limit, Period::Hourly);
                if clamp {
                    p = with_cost(p, |c| c.on_insufficient = OnInsufficient::Clamp);
                }
                let cfg = config(vec![p], vec![team("t", &["cap"])], &[]);
                let k = key("k", "t");
                let m = model();
                let mut held: Vec<(Admitted, u64, u64)> = Vec::new();
                let mut n = 0u64;
                for op in ops {
                    match op {
                        Op::Admit { input, max_out } => {
                            n += 1;
                            let body = n.to_string();
                            if let Ok(a) = env.engine.admit(&cfg, &subject(&k), &facts(&m, input, max_out, body.as_bytes())).await {
                                let allowed = a.clamp_max_tokens.unwrap_or(max_out);
                                prop_assert!(allowed <= max_out);
                                held.push((a, input, allowed));
                            }
                        }
                        Op::Settle { pick, share } if !held.is_empty() => {
                            let (a, input, allowed) = held.swap_remove(pick % held.len());
                            let out = allowed * u64::from(share) / 100;
                            env.engine.settle(&cfg, a, &usage(input, out)).await;
                        }
                        Op::Settle { .. } => {}
                        Op::Advance { minutes } => env.clock.advance(Duration::minutes(minutes)),
                    }
                    for r in env.engine.budgets(&cfg, None).await.unwrap() {
                        let used = NanoUsd::from_usd(r.spent_usd + r.reserved_usd).unwrap();
                        prop_assert!(used <= NanoUsd::from_usd(limit).unwrap(), "{r:?}");
                    }
                }
                for (a, input, allowed) in held.drain(..) {
                    env.engine.settle(&cfg, a, &usage(input, allowed)).await;
                }
                for r in env.engine.budgets(&cfg, None).await.unwrap() {
                    prop_assert_eq!(r.reserved_usd, 0.0);
                }
                Ok(())
            })?;
        }
    }
}

/// Against the real Redis at 127.0.0.1:6379 (CI runs one; these tests fail,
/// never skip, when it is down): two gateways share one cap, and a restart
/// over live Redis counters does not add the ledger's spend a second time.
mod redis {
    use super::*;
    use crate::counters::RedisCounters;
    use crate::types::SystemClock;

    async fn redis_counters(namespace: &str) -> Arc<dyn Counters> {
        let url = std::env::var("TOLLGATE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let c = RedisCounters::connect(&url, Arc::new(SystemClock))
            .await
            .unwrap_or_else(|e| panic!("these tests need Redis at `{url}`: {e}"));
        Arc::new(c.with_namespace(namespace))
    }

    fn gateway(counters: Arc<dyn Counters>, store: &Arc<dyn Store>) -> PolicyEngine {
        PolicyEngine::new(
            counters,
            store.clone(),
            KeyCache::new(store.clone()),
            Arc::new(SystemClock),
            reqwest::Client::new(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_gateways_share_one_cap() {
        let ns = format!("test:policy:{}", uuid::Uuid::now_v7());
        let store = crate::store::connect("sqlite::memory:").await.unwrap();
        let gateways = [
            Arc::new(gateway(redis_counters(&ns).await, &store)),
            Arc::new(gateway(redis_counters(&ns).await, &store)),
        ];
        let cfg = Arc::new(config(
            vec![budget("cap", 0.03, Period::Daily)],
            vec![team("t", &["cap"])],
            &[],
        ));
        let k = Arc::new(key("k", "t"));
        let mut tasks = Vec::new();
        for i in 0..100 {
            let (g, cfg, k) = (gateways[i % 2].clone(), cfg.clone(), k.clone());
            tasks.push(tokio::spawn(async move {
                let m = model();
                let (id, body) = (format!("r{i}"), i.to_string());
                let f = RequestFacts {
                    request_id: &id,
                    ..facts(&m, IN, OUT, body.as_bytes())
                };
                match g.admit(&cfg, &subject(&k), &f).await {
                    Ok(a) => {
                        g.settle(&cfg, a, &usage(IN, OUT)).await;
                        1
                    }
                    Err(e) => {
                        assert_eq!(e.code(), "budget_exceeded");
                        0
                    }
                }
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            admitted += t.await.unwrap();
        }
        assert_eq!(admitted, 10);
        let report = gateways[0].budgets(&cfg, None).await.unwrap();
        assert_eq!(report[0].spent_usd, 0.03);
    }

    #[tokio::test]
    async fn restart_over_live_redis_does_not_count_the_ledger_twice() {
        let ns = format!("test:policy:{}", uuid::Uuid::now_v7());
        let store = crate::store::connect("sqlite::memory:").await.unwrap();
        let cfg = config(
            vec![budget("cap", 0.03, Period::Daily)],
            vec![team("t", &["cap"])],
            &[],
        );
        let k = key("k", "t");
        let first = gateway(redis_counters(&ns).await, &store);
        let m = model();
        let a = first
            .admit(&cfg, &subject(&k), &facts(&m, IN, OUT, b"1"))
            .await
            .unwrap();
        let settled = first.settle(&cfg, a, &usage(IN, OUT)).await;
        // What the ledger writer would have stored for it.
        let row = LedgerRow {
            ts: Utc::now(),
            request_id: "1".into(),
            key_id: k.id.clone(),
            team: k.team.clone(),
            model: "m".into(),
            provider: "mock".into(),
            status: 200,
            prompt_tokens: IN,
            completion_tokens: OUT,
            cost: settled.cost,
            latency_ms: 1,
            error_code: None,
            would_reject: Vec::new(),
            attempts: 0,
            cache: None,
            cache_saved: Default::default(),
            policy: None,
        };
        store.insert_ledger(&[row]).await.unwrap();
        drop(first);
        let restarted = gateway(redis_counters(&ns).await, &store);
        let report = restarted.budgets(&cfg, None).await.unwrap();
        assert_eq!(report[0].spent_usd, 0.003);
    }
}

/// Counting input tokens costs a BPE pass (and its tables' memory): only
/// budgets and token limits need it, so other keys never pay for it.
#[tokio::test]
async fn input_tokens_are_counted_only_for_budgets_and_token_limits() {
    let env = env().await;
    let m = model();
    let cfg = config(
        vec![
            rate("rpm-only", Some(1000), None, Some(10)),
            loop_guard("guard", 100, 60, OnTrip::Throttle),
            rate("tpm", None, Some(1_000_000), None),
            budget("cap", 10.0, Period::Daily),
        ],
        vec![
            team("cheap", &["rpm-only", "guard"]),
            team("tokens", &["tpm"]),
            team("money", &["cap"]),
        ],
        &[],
    );
    for (team, counted) in [("cheap", false), ("tokens", true), ("money", true)] {
        let k = key(&format!("k-{team}"), team);
        store_key(&env, &k).await;
        let calls = std::sync::atomic::AtomicU32::new(0);
        let count = || {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            IN
        };
        let f = RequestFacts {
            input_tokens: InputTokens::lazy(&count),
            ..facts(&m, 0, OUT, b"{}")
        };
        let admitted = env.engine.admit(&cfg, &subject(&k), &f).await.unwrap();
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::Relaxed),
            u32::from(counted),
            "team {team}"
        );
        assert_eq!(f.input_tokens.counted().is_some(), counted, "team {team}");
        env.engine.settle(&cfg, admitted, &usage(IN, OUT)).await;
    }
}

/// `config check` refuses config policies under the names of the implicit
/// ones, so the list it checks must hold every one of them.
#[test]
fn every_implicit_policy_name_is_reserved_in_the_config() {
    for name in [
        resolve::TEAM_BUDGET,
        resolve::KEY_BUDGET,
        resolve::KEY_RATE,
        "team-models",
        "key-models",
    ] {
        assert!(
            crate::config::RESERVED_POLICY_NAMES.contains(&name),
            "{name}"
        );
    }
}
