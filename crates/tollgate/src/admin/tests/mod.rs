//! Router tests: every request goes through `router()` with `oneshot`,
//! against an in-memory store and counters, so they need no socket; the CLI
//! test binds the router on 127.0.0.1:0 and drives it with the real client.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use axum::body::Body;
use chrono::{DateTime, Duration, TimeZone, Utc};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::auth::{AdminKey, KeyCache};
use crate::config::*;
use crate::counters::*;
use crate::state::{AppState, Runtime, SharedState};
use crate::store::*;
use crate::store::{LedgerOptions, LedgerWriter};
use crate::types::{Clock, KeyId, ManualClock, NanoUsd, Period, Secret, TeamId};

mod client;
mod health;
mod keys;
mod openapi;
mod reload;
mod reports;
mod teams;

const ADMIN: &str = "test-admin-key";

/// Counters whose backend is away, for `/readyz`.
struct DownCounters;

#[async_trait]
impl Counters for DownCounters {
    async fn admit(&self, _req: &AdmitRequest) -> Result<Admission, CountersError> {
        Err(CountersError::Unavailable("connection refused".into()))
    }
    async fn settle(
        &self,
        _req: &AdmitRequest,
        _grant: &Grant,
        _actual: Actual,
    ) -> Result<(), CountersError> {
        Err(CountersError::Unavailable("connection refused".into()))
    }
    async fn seed_budget(
        &self,
        _key: &str,
        _spent: NanoUsd,
        _exp: Option<i64>,
    ) -> Result<(), CountersError> {
        Err(CountersError::Unavailable("connection refused".into()))
    }
    async fn budget(&self, _key: &str) -> Result<Option<BudgetState>, CountersError> {
        Err(CountersError::Unavailable("connection refused".into()))
    }
    async fn record_outcome(
        &self,
        _k: &str,
        _c: Option<&str>,
        _m: u32,
        _w: u64,
    ) -> Result<bool, CountersError> {
        Err(CountersError::Unavailable("connection refused".into()))
    }
    async fn ping(&self) -> Result<(), CountersError> {
        Err(CountersError::Unavailable("connection refused".into()))
    }
}

fn test_config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: None,
        admin_key: Some(Secret::new(ADMIN.to_owned())),
        store: Secret::new("sqlite::memory:".to_owned()),
        counters: CountersConfig::Memory,
        counters_unavailable: CountersUnavailable::Reject,
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        log_bodies: false,
        drain_timeout: std::time::Duration::from_secs(5),
        busy_poll: std::time::Duration::ZERO,
        journal_dir: None,
        routing: Default::default(),
        providers: vec![],
        models: vec![],
        policies: vec![Policy {
            name: "daily-budget-cap".into(),
            mode: PolicyMode::Enforce,
            kind: PolicyKind::CostLimit(CostLimit {
                limit: NanoUsd::from_usd(50.0).unwrap(),
                period: Period::Daily,
                action: CostAction::Reject,
                on_insufficient: OnInsufficient::Reject,
            }),
        }],
        teams: vec![TeamConfig {
            id: "search".into(),
            policies: vec!["daily-budget-cap".into()],
            models: None,
            cache: true,
        }],
        defaults: Defaults::default(),
        alerts: None,
        telemetry: None,
        cache: None,
    }
}

struct Harness {
    state: SharedState,
    clock: Arc<ManualClock>,
}

async fn harness() -> Harness {
    harness_with(None, None).await
}

/// The state `server::build_state` builds, on an in-memory SQLite store and a
/// manual clock; `counters` replaces the in-memory counters.
async fn harness_with(
    counters: Option<Arc<dyn Counters>>,
    config_path: Option<std::path::PathBuf>,
) -> Harness {
    let store = crate::store::connect("sqlite::memory:").await.unwrap();
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap(),
    ));
    let counters = counters.unwrap_or_else(|| Arc::new(MemoryCounters::new(clock.clone())));
    let keys = KeyCache::new(store.clone());
    let http = crate::providers::http_client();
    let policy = crate::policy::PolicyEngine::new(
        counters.clone(),
        store.clone(),
        keys.clone(),
        clock.clone(),
        http.get().clone(),
    );
    let state = Arc::new(AppState {
        runtime: ArcSwap::from_pointee(Runtime {
            config: Arc::new(test_config()),
            routes: crate::routing::Routes::new(&test_config(), Default::default()),
            providers: HashMap::new(),
        }),
        store: store.clone(),
        counters,
        keys,
        ledger: LedgerWriter::spawn(store, LedgerOptions::default()),
        journal: crate::store::Journal::disabled(),
        policy,
        admin_key: AdminKey::from_plain(&Secret::new(ADMIN.to_owned())),
        clock: clock.clone(),
        config_path,
        http,
        tasks: tokio_util::task::TaskTracker::new(),
        busy_poll: crate::server::busy_poll::BusyPoll::new(std::time::Duration::ZERO, 1),
        metrics: None,
        tracer: None,
        cache: Arc::new(crate::cache::ResponseCache::new(&test_config()).await),
    });
    Harness { state, clock }
}

impl Harness {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        auth: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            req = req.header("authorization", format!("Bearer {auth}"));
        }
        let req = req
            .body(Body::from(body.unwrap_or_default().to_owned()))
            .unwrap();
        let resp = super::router()
            .with_state(self.state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, value)
    }

    async fn admin(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let body = body.map(|b| b.to_string());
        self.call(method, uri, Some(ADMIN), body.as_deref()).await
    }

    async fn keys(&self) -> Vec<KeyRecord> {
        self.state.store.list_keys(None).await.unwrap()
    }

    async fn ledger(&self, rows: &[LedgerRow]) {
        self.state.store.insert_ledger(rows).await.unwrap();
    }

    async fn create_key(&self, body: Value) -> Value {
        let (status, key) = self.admin(Method::POST, "/admin/keys", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        key
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_default()
}

fn key_headers(key: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("authorization", format!("Bearer {key}").parse().unwrap());
    h
}

fn ledger_row(team: &str, model: &str, ts: DateTime<Utc>, cost_usd: f64) -> LedgerRow {
    LedgerRow {
        ts,
        request_id: format!("req-{}", ts.timestamp_millis()),
        key_id: KeyId::from("0123456789ab"),
        team: TeamId::from(team),
        model: model.into(),
        provider: "mock".into(),
        status: 200,
        prompt_tokens: 10,
        completion_tokens: 5,
        cost: NanoUsd::from_usd(cost_usd).unwrap(),
        latency_ms: 12,
        error_code: None,
        would_reject: Vec::new(),
        attempts: 0,
        cache: None,
        cache_saved: Default::default(),
        policy: None,
    }
}
