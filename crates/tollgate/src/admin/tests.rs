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

/// The state `app::build_state` builds, on an in-memory SQLite store and a
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
        busy_poll: crate::busy_poll::BusyPoll::new(std::time::Duration::ZERO, 1),
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

#[tokio::test]
async fn admin_routes_need_the_admin_key() {
    let h = harness().await;
    let key = h.create_key(json!({"team": "search"})).await;
    let virtual_key = key["key"].as_str().unwrap();
    for route in super::routes().iter().filter(|r| !r.open) {
        let uri = route.path.replace("{id}", "x");
        for auth in [None, Some("wrong"), Some(virtual_key)] {
            let (status, body) = h.call(route.method.clone(), &uri, auth, None).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{} {uri} with {auth:?}",
                route.method
            );
            assert_eq!(code(&body), "invalid_admin_key");
        }
    }
}

/// `/metrics` is an admin route like the others: in the route table (so
/// the admin-key test above covers it), the OpenAPI document and behind
/// the `Admin` extractor.
#[tokio::test]
async fn metrics_is_an_admin_route() {
    assert!(
        super::routes()
            .iter()
            .any(|r| r.path == "/metrics" && r.method == Method::GET && !r.open)
    );
    let h = harness().await;
    let get = |auth: Option<&str>| {
        let mut req = Request::builder().method(Method::GET).uri("/metrics");
        if let Some(auth) = auth {
            req = req.header("authorization", format!("Bearer {auth}"));
        }
        super::router()
            .with_state(h.state.clone())
            .oneshot(req.body(Body::empty()).unwrap())
    };
    assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // This harness installs no recorder: the route is reached, and says so.
    let resp = get(Some(ADMIN)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn health_is_open_and_readiness_names_the_failing_dependency() {
    let h = harness().await;
    let (status, body) = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": "ready", "store": "ok", "counters": "ok"})
    );
    let h = harness_with(Some(Arc::new(DownCounters)), None).await;
    let (status, body) = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["counters"]["error"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{body}"
    );
    assert_eq!(
        (&body["status"], &body["store"]),
        (&json!("unavailable"), &json!("ok"))
    );
}

#[tokio::test]
async fn teams_create_list_conflict_and_read_only() {
    let h = harness().await;
    let body = json!({"id": "ml", "policies": ["daily-budget-cap"], "budget_usd": 20.5, "period": "weekly"});
    let (status, team) = h
        .admin(Method::POST, "/admin/teams", Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{team}");
    assert_eq!(team["budget_usd"], 20.5);
    assert_eq!(team["period"], "weekly");
    assert_eq!(team["source"], "api");

    let (status, err) = h.admin(Method::POST, "/admin/teams", Some(body)).await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "conflict"));
    let (status, err) = h
        .admin(Method::POST, "/admin/teams", Some(json!({"id": "search"})))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a config team id is taken: {err}"
    );

    let (status, list) = h.admin(Method::GET, "/admin/teams", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["search", "ml"]);
    assert_eq!(list["data"][0]["source"], "config");
    assert_eq!(list["data"][0]["read_only"], true);

    let (status, team) = h.admin(Method::GET, "/admin/teams/search", None).await;
    assert_eq!((status, &team["read_only"]), (StatusCode::OK, &json!(true)));
    let (status, err) = h.admin(Method::GET, "/admin/teams/nope", None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "team_not_found")
    );
    for method in [Method::PATCH, Method::DELETE] {
        let (status, err) = h
            .admin(method, "/admin/teams/search", Some(json!({})))
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(message(&err).contains("read-only"), "{err}");
    }
}

#[tokio::test]
async fn team_bodies_are_validated_with_the_field_named() {
    let h = harness().await;
    let cases = [
        (
            json!({"id": "a", "policies": ["nope"]}),
            "policies",
            "no policy named `nope`",
        ),
        (
            json!({"id": "a", "budget_usd": 5}),
            "period",
            "needs a `period`",
        ),
        (
            json!({"id": "a", "period": "daily"}),
            "budget_usd",
            "without `budget_usd`",
        ),
        (
            json!({"id": "a", "budget_usd": 5, "period": "dayly"}),
            "period",
            "dayly",
        ),
        (
            json!({"id": "a", "budget_usd": -1, "period": "daily"}),
            "budget_usd",
            "0 or more",
        ),
        (
            json!({"id": "a", "budgett_usd": 5}),
            "",
            "unknown field `budgett_usd`",
        ),
        (json!({"id": 7}), "id", "invalid type"),
        (json!({"id": "a b"}), "id", "letters, digits"),
    ];
    for (body, param, needle) in cases {
        let (status, err) = h
            .admin(Method::POST, "/admin/teams", Some(body.clone()))
            .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{body}"
        );
        assert!(message(&err).contains(needle), "{body}: {err}");
        if !param.is_empty() {
            assert_eq!(err["error"]["param"], param, "{body}: {err}");
        }
    }
    let huge = format!("{{\"id\": \"{}\"}}", "x".repeat(2 << 20));
    let (status, err) = h
        .call(Method::POST, "/admin/teams", Some(ADMIN), Some(&huge))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
    );
    let (status, err) = h
        .call(Method::POST, "/admin/teams", Some(ADMIN), Some("{\"id\": "))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&err).contains("not valid JSON"), "{err}");
    assert!(
        h.state.store.list_teams().await.unwrap().is_empty(),
        "nothing invalid was stored"
    );
}

#[tokio::test]
async fn team_patch_and_delete() {
    let h = harness().await;
    h.admin(Method::POST, "/admin/teams", Some(json!({"id": "ml"})))
        .await;
    let (status, err) = h
        .admin(
            Method::PATCH,
            "/admin/teams/ml",
            Some(json!({"period": "daily"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a period alone needs a budget to re-schedule: {err}"
    );
    let (status, err) = h
        .admin(
            Method::PATCH,
            "/admin/teams/ml",
            Some(json!({"budget_usd": 3})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a budget alone needs a period to keep: {err}"
    );
    let patch = json!({"budget_usd": 10, "period": "monthly", "models": ["gpt-4o*"]});
    let (status, team) = h.admin(Method::PATCH, "/admin/teams/ml", Some(patch)).await;
    assert_eq!(status, StatusCode::OK, "{team}");
    assert_eq!(
        (team["budget_usd"].as_f64(), &team["models"]),
        (Some(10.0), &json!(["gpt-4o*"]))
    );
    let (_, team) = h
        .admin(
            Method::PATCH,
            "/admin/teams/ml",
            Some(json!({"period": "hourly"})),
        )
        .await;
    assert_eq!(
        (team["budget_usd"].as_f64(), &team["period"]),
        (Some(10.0), &json!("hourly"))
    );
    let (_, team) = h
        .admin(
            Method::PATCH,
            "/admin/teams/ml",
            Some(json!({"budget_usd": null, "models": null})),
        )
        .await;
    assert_eq!(
        (&team["budget_usd"], &team["period"], &team["models"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    let (status, err) = h
        .admin(Method::PATCH, "/admin/teams/nope", Some(json!({})))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "team_not_found")
    );

    let key = h.create_key(json!({"team": "ml"})).await;
    let (status, err) = h.admin(Method::DELETE, "/admin/teams/ml", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(message(&err).contains("unrevoked"), "{err}");
    let id = key["id"].as_str().unwrap();
    h.admin(Method::POST, &format!("/admin/keys/{id}/revoke"), None)
        .await;
    let (status, body) = h.admin(Method::DELETE, "/admin/teams/ml", None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"id": "ml", "deleted": true}))
    );
    let (status, _) = h.admin(Method::GET, "/admin/teams/ml", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn key_create_needs_an_existing_team_and_shows_the_key_once() {
    let h = harness().await;
    let (status, err) = h
        .admin(Method::POST, "/admin/keys", Some(json!({"team": "serach"})))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "team_not_found")
    );
    assert!(message(&err).contains("`serach`"));
    assert!(h.keys().await.is_empty());

    let body = json!({
        "team": "search", "name": "indexer", "models": ["gpt-4o-mini"], "policies": ["daily-budget-cap"],
        "budget_usd": 5, "period": "daily", "requests_per_minute": 60, "tokens_per_minute": 10000,
        "expires_at": "2027-01-01T00:00:00Z", "metadata": {"owner": "ana"}
    });
    let key = h.create_key(body).await;
    let full = key["key"].as_str().unwrap();
    let id = key["id"].as_str().unwrap();
    assert!(full.starts_with(&format!("sk-tg-{id}-")), "{key}");
    assert_eq!(key["prefix"], format!("sk-tg-{id}"));
    assert_eq!(
        (key["budget_usd"].as_f64(), &key["period"]),
        (Some(5.0), &json!("daily"))
    );
    assert_eq!(
        (&key["requests_per_minute"], &key["tokens_per_minute"]),
        (&json!(60), &json!(10000))
    );
    assert_eq!(
        (&key["expires_at"], &key["metadata"]),
        (&json!("2027-01-01T00:00:00Z"), &json!({"owner": "ana"}))
    );
    assert_eq!(key["status"], "active");

    let hash = h.keys().await[0].secret_hash.clone();
    let secret = full.rsplit('-').next().unwrap();
    for uri in [
        format!("/admin/keys/{id}"),
        "/admin/keys?team=search".to_owned(),
        "/admin/keys".to_owned(),
    ] {
        let (status, body) = h.admin(Method::GET, &uri, None).await;
        assert_eq!(status, StatusCode::OK);
        let text = body.to_string();
        assert!(text.contains(id), "{uri}: {text}");
        assert!(
            !text.contains(secret) && !text.contains(&hash) && !text.contains("\"key\""),
            "{uri}: {text}"
        );
    }
    let (status, err) = h.admin(Method::GET, "/admin/keys/0123456789ab", None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "key_not_found")
    );
    let (status, err) = h.admin(Method::GET, "/admin/keys?team=nope", None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "team_not_found")
    );
}

#[tokio::test]
async fn key_bodies_are_validated() {
    let h = harness().await;
    let cases = [
        (json!({"team": "search", "policies": ["nope"]}), "policies"),
        (json!({"team": "search", "budget_usd": 1}), "period"),
        (
            json!({"team": "search", "requests_per_minute": 0}),
            "requests_per_minute",
        ),
        (
            json!({"team": "search", "tokens_per_minute": -5}),
            "tokens_per_minute",
        ),
        (
            json!({"team": "search", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            json!({"team": "search", "requests_per_minute": 1.5}),
            "requests_per_minute",
        ),
        (
            // Beyond the store's signed 64-bit column: a 400, not a 500.
            json!({"team": "search", "tokens_per_minute": 10_000_000_000_000_000_000u64}),
            "tokens_per_minute",
        ),
        (json!({"team": "search", "models": [" "]}), "models"),
        (json!({"team": "search", "metadata": [1]}), "metadata"),
        (json!({"team": "search", "colour": "red"}), ""),
    ];
    for (body, param) in cases {
        let (status, err) = h
            .admin(Method::POST, "/admin/keys", Some(body.clone()))
            .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{body}"
        );
        if !param.is_empty() {
            assert_eq!(err["error"]["param"], param, "{body}: {err}");
        }
    }
    assert!(h.keys().await.is_empty());
    // A whole number written as a float is the integer JSON Schema says
    // it is.
    let key = h
        .create_key(json!({"team": "search", "requests_per_minute": 60.0}))
        .await;
    assert_eq!(key["requests_per_minute"], 60, "{key}");
}

#[tokio::test]
async fn revoke_rejects_the_next_request() {
    let h = harness().await;
    let key = h.create_key(json!({"team": "search"})).await;
    let (full, id) = (key["key"].as_str().unwrap(), key["id"].as_str().unwrap());
    let now = h.clock.now();
    // Warm the cache: revocation must not wait for the entry to go stale.
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(full), now)
            .await
            .is_ok()
    );
    let (status, body) = h
        .admin(Method::POST, &format!("/admin/keys/{id}/revoke"), None)
        .await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("revoked"))
    );
    let err = h
        .state
        .keys
        .authenticate(&key_headers(full), now)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_api_key");
    assert!(err.to_string().contains("revoked"));
    let (status, err) = h
        .admin(Method::POST, &format!("/admin/keys/{id}/rotate"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let (status, _) = h
        .admin(Method::POST, "/admin/keys/0123456789ab/revoke", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rotate_keeps_the_old_secret_for_the_grace_period_only() {
    let h = harness().await;
    let key = h.create_key(json!({"team": "search"})).await;
    let (old, id) = (key["key"].as_str().unwrap(), key["id"].as_str().unwrap());
    let now = h.clock.now();
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(old), now)
            .await
            .is_ok()
    );

    let uri = format!("/admin/keys/{id}/rotate");
    let (status, rotated) = h
        .admin(Method::POST, &uri, Some(json!({"grace_seconds": 3600})))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["key"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(rotated["id"], id);
    assert_eq!(rotated["previous_key_expires_at"], "2026-11-27T13:00:00Z");
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(new), now)
            .await
            .is_ok()
    );
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(old), now)
            .await
            .is_ok(),
        "old key works in the grace period"
    );
    let later = now + Duration::seconds(3601);
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(old), later)
            .await
            .is_err(),
        "old key stops after it"
    );
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(new), later)
            .await
            .is_ok()
    );

    // Without a body the grace is zero: the replaced secret stops at once.
    let (status, again) = h.admin(Method::POST, &uri, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(new), now)
            .await
            .is_err()
    );
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(again["key"].as_str().unwrap()), now)
            .await
            .is_ok()
    );

    for bad in [json!("1h"), json!(1.5), json!(-1)] {
        let (status, err) = h
            .admin(Method::POST, &uri, Some(json!({ "grace_seconds": bad })))
            .await;
        assert_eq!(
            (status, &err["error"]["param"]),
            (StatusCode::BAD_REQUEST, &json!("grace_seconds")),
            "{bad}"
        );
    }
    let (status, _) = h
        .admin(Method::POST, &uri, Some(json!({"grace_seconds": 60.0})))
        .await;
    assert_eq!(status, StatusCode::OK, "`60.0` is the whole number 60");
}

#[tokio::test]
async fn restore_lifts_a_suspension_and_status_tracks_expiry() {
    let h = harness().await;
    let key = h
        .create_key(json!({"team": "search", "expires_at": "2026-11-27T12:30:00Z"}))
        .await;
    let (full, id) = (key["key"].as_str().unwrap(), key["id"].as_str().unwrap());
    let mut rec = h.keys().await.remove(0);
    rec.suspended_at = Some(h.clock.now());
    h.state.store.update_key(&rec).await.unwrap();
    let (_, view) = h
        .admin(Method::GET, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(view["status"], "suspended");
    let (status, view) = h
        .admin(
            Method::POST,
            &format!("/admin/keys/sk-tg-{id}/restore"),
            None,
        )
        .await;
    assert_eq!(
        (status, &view["status"]),
        (StatusCode::OK, &json!("active"))
    );
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(full), h.clock.now())
            .await
            .is_ok()
    );
    h.clock.advance(Duration::hours(1));
    let (_, view) = h
        .admin(Method::GET, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(view["status"], "expired");
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

#[tokio::test]
async fn spend_groups_and_validates_its_parameters() {
    let h = harness().await;
    let day = |d: u32| Utc.with_ymd_and_hms(2026, 11, d, 10, 0, 0).unwrap();
    h.ledger(&[
        ledger_row("search", "gpt-4o-mini", day(25), 0.5),
        ledger_row("search", "gpt-4o", day(26), 1.25),
        ledger_row("ml", "gpt-4o", day(27), 2.0),
    ])
    .await;
    let (status, body) = h
        .admin(Method::GET, "/admin/spend?group_by=team", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"data": [
            {"group": "ml", "requests": 1, "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": 2.0,
             "cache_hits": 0, "saved_usd": 0.0},
            {"group": "search", "requests": 2, "prompt_tokens": 20, "completion_tokens": 10, "cost_usd": 1.75,
             "cache_hits": 0, "saved_usd": 0.0},
        ]})
    );
    // A day as `to` includes that whole day.
    let (_, body) = h
        .admin(
            Method::GET,
            "/admin/spend?from=2026-11-26&to=2026-11-26",
            None,
        )
        .await;
    assert_eq!(
        body["data"],
        json!([{"group": "total", "requests": 1, "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": 1.25,
            "cache_hits": 0, "saved_usd": 0.0}])
    );
    let (_, body) = h
        .admin(
            Method::GET,
            "/admin/spend?group_by=day&from=2026-11-26T00:00:00Z&team=search",
            None,
        )
        .await;
    assert_eq!(body["data"][0]["group"], "2026-11-26");
    assert_eq!(body["data"].as_array().unwrap().len(), 1);

    for (query, param) in [
        ("group_by=week", "group_by"),
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("to=", "to"),
        ("group_by=", "group_by"),
    ] {
        let (status, err) = h
            .admin(Method::GET, &format!("/admin/spend?{query}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(err["error"]["param"], param, "{query}: {err}");
    }
    // A window that ends before it starts holds nothing.
    let (status, body) = h
        .admin(
            Method::GET,
            "/admin/spend?from=2026-11-27&to=2026-11-01",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"][0]["requests"], 0, "{body}");
    let (status, body) = h
        .admin(
            Method::GET,
            "/admin/spend?group_by=team&from=2026-11-27&to=2026-11-01",
            None,
        )
        .await;
    assert_eq!((status, body["data"].clone()), (StatusCode::OK, json!([])));
    let (status, err) = h
        .admin(Method::GET, "/admin/spend?grup_by=team", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&err).contains("grup_by"), "{err}");
}

#[tokio::test]
async fn requests_lists_newest_first_within_the_limit() {
    let h = harness().await;
    let start = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap();
    let rows: Vec<LedgerRow> = (0..5)
        .map(|i| ledger_row("search", "gpt-4o", start + Duration::minutes(i), 0.1))
        .collect();
    h.ledger(&rows).await;
    let (status, body) = h
        .admin(Method::GET, "/admin/requests?team=search&limit=2", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let rows = body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["time"], "2026-11-27T10:04:00Z");
    let fields: Vec<&str> = rows[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for f in [
        "time",
        "request_id",
        "key_id",
        "team",
        "model",
        "provider",
        "status",
        "prompt_tokens",
    ] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    for f in [
        "completion_tokens",
        "cost_usd",
        "latency_ms",
        "error_code",
        "would_reject",
    ] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    let (_, body) = h.admin(Method::GET, "/admin/requests", None).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 5);
    for limit in ["0", "1001", "ten", "-1", ""] {
        let (status, err) = h
            .admin(Method::GET, &format!("/admin/requests?limit={limit}"), None)
            .await;
        assert_eq!(
            (status, &err["error"]["param"]),
            (StatusCode::BAD_REQUEST, &json!("limit")),
            "{limit}"
        );
    }
}

#[tokio::test]
async fn openapi_describes_every_route_and_nothing_else() {
    let h = harness().await;
    let (status, doc) = h.admin(Method::GET, "/admin/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            assert!(op["responses"].is_object(), "{method} {path} has responses");
            assert!(op["summary"].is_string(), "{method} {path} has a summary");
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut routed: Vec<(String, String)> = super::routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);
    // Every `$ref` points at something the document defines.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"").skip(1) {
        let target = &r[..r.find('"').unwrap()];
        let pointer = target.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
    }
}

#[tokio::test]
async fn cli_commands_drive_a_running_admin_api() {
    let h = harness().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = super::router().with_state(h.state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let admin = || Some(Secret::new(ADMIN.to_owned()));
    let run = |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut argv = vec!["tollgate"];
            argv.extend_from_slice(args);
            let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
            let mut out = Vec::new();
            let res = crate::cli::run_client(cli.command, &url, admin(), &mut out).await;
            res.map(|()| String::from_utf8(out).unwrap())
        }
    };

    let out = run(&[
        "teams",
        "create",
        "ml",
        "--budget-usd",
        "25",
        "--period",
        "daily",
    ])
    .await
    .unwrap();
    assert!(out.starts_with("created team ml"), "{out}");
    let out = run(&["teams", "list"]).await.unwrap();
    assert!(out.lines().next().unwrap().starts_with("ID"), "{out}");
    assert!(
        out.contains("search") && out.contains("config") && out.contains("$25 daily"),
        "{out}"
    );

    let out = run(&[
        "keys",
        "create",
        "--team",
        "ml",
        "--name",
        "bot",
        "--models",
        "a,b",
        "--expires",
        "30d",
    ])
    .await
    .unwrap();
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with("sk-tg-") && !first.contains(' '),
        "the key alone on the first line: {out}"
    );
    assert!(out.contains("a,b"), "{out}");
    let rec = h.keys().await.remove(0);
    assert_eq!(rec.models, Some(vec!["a".to_owned(), "b".to_owned()]));
    let lifetime = rec.expires_at.unwrap() - Utc::now();
    assert!(
        (Duration::days(30) - lifetime).num_seconds().abs() < 60,
        "{lifetime}"
    );
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(first), Utc::now())
            .await
            .is_ok()
    );

    let out = run(&["keys", "list", "--json"]).await.unwrap();
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["data"][0]["name"], "bot");

    let err = run(&["keys", "create", "--team", "nope"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no team `nope`"), "{err}");
    assert!(matches!(err, crate::cli::CliError::Api { status: 404, .. }));

    let mut row = ledger_row("ml", "gpt-4o", Utc::now(), 0.25);
    row.would_reject = vec![
        "trial:budget_exceeded".into(),
        "narrow:model_not_allowed".into(),
    ];
    h.ledger(&[row]).await;
    let out = run(&["spend", "--by", "team", "--since", "1d"])
        .await
        .unwrap();
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("TEAM"), "{out}");
    assert!(lines.next().unwrap().contains("0.250000"), "{out}");
    let out = run(&["requests", "--team", "ml"]).await.unwrap();
    assert!(
        out.lines().next().unwrap().ends_with("WOULD_REJECT"),
        "{out}"
    );
    let row = out.lines().nth(1).unwrap();
    assert!(row.contains("gpt-4o"), "{out}");
    assert!(
        row.contains("trial:budget_exceeded,narrow:model_not_allowed"),
        "{out}"
    );
    let out = run(&["budgets", "--team", "ml"]).await.unwrap();
    let row = out.lines().nth(1).unwrap();
    assert!(
        row.starts_with("team") && row.contains("25.000000"),
        "{out}"
    );
    server.abort();

    let unreachable = crate::cli::run_client(
        <crate::cli::Cli as clap::Parser>::try_parse_from(["tollgate", "teams", "list"])
            .unwrap()
            .command,
        "http://127.0.0.1:1",
        admin(),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(
        unreachable.to_string().contains("cannot reach tollgate"),
        "{unreachable}"
    );
}

#[tokio::test]
async fn openapi_schemas_list_exactly_the_fields_the_handlers_return() {
    let h = harness().await;
    let doc: Value = serde_json::from_str(super::OPENAPI_JSON).unwrap();
    let fields = |v: &Value| {
        let mut f: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        f.sort();
        f
    };
    let schema = |name: &str| {
        let mut f: Vec<String> = doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        f.sort();
        f
    };
    let (_, team) = h
        .admin(Method::POST, "/admin/teams", Some(json!({"id": "ml"})))
        .await;
    assert_eq!(fields(&team), schema("Team"));
    let new = h.create_key(json!({"team": "ml"})).await;
    assert_eq!(fields(&new), schema("NewKey"));
    let (_, key) = h
        .admin(
            Method::GET,
            &format!("/admin/keys/{}", new["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(fields(&key), schema("Key"));
    let (_, err) = h.admin(Method::GET, "/admin/keys/nope", None).await;
    assert_eq!(
        fields(&err["error"]),
        fields(&doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"])
    );
    h.ledger(&[ledger_row("ml", "m", h.clock.now(), 0.1)]).await;
    let (_, spend) = h.admin(Method::GET, "/admin/spend", None).await;
    assert_eq!(fields(&spend["data"][0]), schema("SpendRow"));
    let (_, requests) = h.admin(Method::GET, "/admin/requests", None).await;
    assert_eq!(fields(&requests["data"][0]), schema("RequestRow"));
    let (_, ready) = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(fields(&ready), schema("Readiness"));
}

#[tokio::test]
async fn budgets_report_team_and_key_cost_limits() {
    let h = harness().await;
    let key = h
        .create_key(json!({"team": "search", "budget_usd": 5, "period": "weekly"}))
        .await;
    let (status, body) = h
        .admin(Method::GET, "/admin/budgets?team=search", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body["data"].as_array().unwrap();
    let team_row = rows.iter().find(|r| r["scope"] == "team").unwrap();
    assert_eq!(
        (&team_row["policy"], &team_row["limit_usd"]),
        (&json!("daily-budget-cap"), &json!(50.0))
    );
    assert_eq!(team_row["resets_at"], "2026-11-28T00:00:00Z");
    let key_row = rows.iter().find(|r| r["scope"] == "key").unwrap();
    assert_eq!(
        (&key_row["id"], &key_row["limit_usd"]),
        (&key["id"], &json!(5.0))
    );
    assert_eq!(key_row["remaining_usd"], 5.0);

    let doc: Value = serde_json::from_str(super::OPENAPI_JSON).unwrap();
    let mut documented: Vec<&String> = doc["components"]["schemas"]["BudgetReport"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let mut returned: Vec<&String> = key_row.as_object().unwrap().keys().collect();
    documented.sort();
    returned.sort();
    assert_eq!(documented, returned);

    let (status, err) = h.admin(Method::GET, "/admin/budgets?team=nope", None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "team_not_found")
    );
}

#[tokio::test]
async fn reload_swaps_a_valid_file_in_and_keeps_the_config_on_an_invalid_one() {
    let h = harness().await;
    let (status, err) = h.admin(Method::POST, "/admin/reload", None).await;
    // The request is fine; the gateway's file is what cannot be applied.
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "conflict"));
    assert!(message(&err).contains("no config file"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, "teams:\n  - id: reloaded\n").unwrap();
    let h = harness_with(None, Some(path.clone())).await;
    let (status, body) = h.admin(Method::POST, "/admin/reload", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"reloaded": true})));
    let (_, teams) = h.admin(Method::GET, "/admin/teams/reloaded", None).await;
    assert_eq!(teams["source"], "config");

    std::fs::write(&path, "teams:\n  - id: x\n    polices: []\n").unwrap();
    let (status, err) = h.admin(Method::POST, "/admin/reload", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        message(&err).contains("polices") && message(&err).contains("stays in force"),
        "{err}"
    );
    let (status, _) = h.admin(Method::GET, "/admin/teams/reloaded", None).await;
    assert_eq!(status, StatusCode::OK, "the old config is still in force");
}
