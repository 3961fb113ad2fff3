//! The budget invariant under attack, without knowing which hole to look
//! for: seeded random mixes of chat, completions and embeddings, streams,
//! `n` and `best_of`, prompt lists, missing, odd and ill-typed caps, client
//! hang-ups, provider timeouts, 5xx, cut streams and absurd usage from a
//! lenient mock (one that generates 3,000 tokens unless a cap is sent, and
//! sometimes ignores the cap), several hundred at once. After each run:
//!
//! - ledger spend per budget ≤ its `limit_usd`;
//! - the counters agree with the ledger once quiet (spent equal, nothing
//!   left reserved);
//! - every call the provider received has its ledger row.
//!
//! CI runs a few seeds of a few hundred requests each;
//! `TOLLGATE_ADVERSARIAL_RUNS` and `TOLLGATE_ADVERSARIAL_REQUESTS` raise
//! that for a long run by hand.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mock_provider::MockConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use tollgate::types::SystemClock;

use crate::common::*;

/// Team caps and the key budget, USD. Each request's worst case is a few
/// thousandths of a dollar, so every cap runs out within a run.
const T1_CAP: f64 = 0.05;
const T2_CAP: f64 = 0.04;
const KEY_CAP: f64 = 0.01;

const POLICIES: &str = "policies:\n  - name: t1-cap\n    type: cost-limit\n    config: { limit_usd: 0.05, period: daily, action: reject }\n  - name: t2-cap\n    type: cost-limit\n    config: { limit_usd: 0.04, period: daily, action: reject, on_insufficient: clamp }\n  - name: t2-tokens\n    type: rate-limit\n    config: { tokens_per_minute: 1000000 }\nteams:\n  - id: t1\n    policies: [t1-cap]\n  - id: t2\n    policies: [t2-cap, t2-tokens]\n";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One random request: path, body, and how long the client waits.
struct Shot {
    path: &'static str,
    body: Value,
    patience: Option<Duration>,
}

fn directive(rng: &mut StdRng) -> String {
    let d = match rng.random_range(0..100) {
        0..45 => return String::new(),
        45..50 => "hang".to_owned(),
        50..58 => format!(
            "status={}",
            [500, 502, 503, 504, 429, 400][rng.random_range(0..6)]
        ),
        58..66 => format!("cut={}", rng.random_range(0..20)),
        66..72 => format!("usage={},{}", rng.random_range(0..10), 10u64.pow(13)),
        72..78 => format!(
            "usage={},{}",
            rng.random_range(0..2000),
            rng.random_range(0..5000)
        ),
        78..86 => "ignore_cap".to_owned(),
        86..94 => format!("tokens={}", rng.random_range(1..4000)),
        _ => format!("latency={}", rng.random_range(10..400)),
    };
    format!(" [[mock:{d}]]")
}

fn shot(rng: &mut StdRng, i: usize) -> Shot {
    let text = format!(
        "request {i}: {}{}",
        "lorem ipsum ".repeat(rng.random_range(1..40)),
        directive(rng)
    );
    let kind = rng.random_range(0..100);
    let (path, mut body) = if kind < 60 {
        (
            "/v1/chat/completions",
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}),
        )
    } else if kind < 85 {
        let prompt = match rng.random_range(0..3) {
            0 => json!(text),
            _ => json!(vec![text.clone(); rng.random_range(1..4)]),
        };
        (
            "/v1/completions",
            json!({"model": "gpt-4o-mini", "prompt": prompt}),
        )
    } else {
        ("/v1/embeddings", json!({"model": "embed", "input": text}))
    };
    if path != "/v1/embeddings" {
        let b = body.as_object_mut().unwrap();
        if rng.random_bool(0.4) {
            b.insert("stream".into(), json!(true));
            match rng.random_range(0..3) {
                0 => b.insert("stream_options".into(), Value::Null),
                1 => b.insert("stream_options".into(), json!({"include_usage": false})),
                _ => None,
            };
        }
        match rng.random_range(0..100) {
            0..40 => None,
            40..80 => b.insert("max_tokens".into(), json!(rng.random_range(1..400))),
            80..85 => b.insert(
                "max_completion_tokens".into(),
                json!(rng.random_range(1..400)),
            ),
            85..90 => b.insert("max_tokens".into(), json!(1_000_000_000_000u64)),
            90..95 => b.insert("max_tokens".into(), json!("10")),
            _ => b.insert("max_tokens".into(), Value::Null),
        };
        match rng.random_range(0..100) {
            0..70 => None,
            70..85 => b.insert("n".into(), json!(rng.random_range(1..4))),
            85..90 => b.insert("best_of".into(), json!(rng.random_range(1..4))),
            90..95 => b.insert("n".into(), json!("2")),
            _ => b.insert("n".into(), json!(2.5)),
        };
    }
    let patience = rng
        .random_bool(0.1)
        .then(|| Duration::from_millis(rng.random_range(5..200)));
    Shot {
        path,
        body,
        patience,
    }
}

/// Fires `n` random requests at once over `urls` with `keys`; returns the
/// statuses the clients saw (0: the client hung up).
async fn storm(urls: &[String], keys: &[String], seed: u64, n: usize) -> Vec<u16> {
    let mut rng = StdRng::seed_from_u64(seed);
    let http = reqwest::Client::new();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let shot = shot(&mut rng, i);
            let url = urls[rng.random_range(0..urls.len())].clone();
            let key = keys[rng.random_range(0..keys.len())].clone();
            let http = http.clone();
            tokio::spawn(async move {
                let mut req = http
                    .post(format!("{url}{}", shot.path))
                    .bearer_auth(key)
                    .json(&shot.body);
                if let Some(p) = shot.patience {
                    req = req.timeout(p);
                }
                let Ok(resp) = req.send().await else {
                    return 0;
                };
                let status = resp.status().as_u16();
                let mut body = resp.bytes_stream();
                while let Some(chunk) = body.next().await {
                    if chunk.is_err() {
                        return 0;
                    }
                }
                status
            })
        })
        .collect();
    let mut statuses = Vec::with_capacity(n);
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

/// The three invariants, read through the admin API and the store.
async fn check(h: &Harness, key_budget_id: &str, seed: u64) {
    h.settled().await;
    let rows = h.ledger().await;
    let mut by_team: HashMap<&str, u64> = HashMap::new();
    let mut by_key: HashMap<&str, u64> = HashMap::new();
    for r in &rows {
        *by_team.entry(r.team.as_str()).or_default() += r.cost.0;
        *by_key.entry(r.key_id.as_str()).or_default() += r.cost.0;
    }
    let nanos = |usd: f64| (usd * 1e9).round() as u64;
    let t1 = by_team.get("t1").copied().unwrap_or(0);
    let t2 = by_team.get("t2").copied().unwrap_or(0);
    let k = by_key.get(key_budget_id).copied().unwrap_or(0);
    assert!(
        t1 <= nanos(T1_CAP),
        "seed {seed}: team t1 spent {t1} over {}",
        nanos(T1_CAP)
    );
    assert!(
        t2 <= nanos(T2_CAP),
        "seed {seed}: team t2 spent {t2} over {}",
        nanos(T2_CAP)
    );
    assert!(
        k <= nanos(KEY_CAP),
        "seed {seed}: key spent {k} over {}",
        nanos(KEY_CAP)
    );
    assert!(
        t1 > nanos(T1_CAP) / 2,
        "seed {seed}: the run barely used t1's cap ({t1})"
    );

    let (status, budgets) = h.admin(Method::GET, "/admin/budgets", None).await;
    assert_eq!(status, 200, "{budgets}");
    for b in budgets["data"].as_array().unwrap() {
        let scope_spend = match b["scope"].as_str().unwrap() {
            "team" => by_team.get(b["id"].as_str().unwrap()).copied(),
            _ => by_key.get(b["id"].as_str().unwrap()).copied(),
        }
        .unwrap_or(0);
        assert_eq!(b["reserved_usd"], 0.0, "seed {seed}: left reserved: {b}");
        assert_eq!(
            nanos(b["spent_usd"].as_f64().unwrap()),
            scope_spend,
            "seed {seed}: counters and ledger disagree: {b}"
        );
    }
    // Retries (SPEC §8) call the provider more than once for one row:
    // each row counts its attempts.
    let forwarded: u64 = rows.iter().map(|r| u64::from(r.attempts)).sum();
    assert_eq!(
        h.mock.calls(),
        forwarded,
        "seed {seed}: every provider call has its ledger row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_abuse_never_overshoots_a_budget_on_memory_counters() {
    let runs = env_or("TOLLGATE_ADVERSARIAL_RUNS", 2);
    let requests = env_or("TOLLGATE_ADVERSARIAL_REQUESTS", 300) as usize;
    for seed in 0..runs {
        let h = Harness::start_with(
            MockConfig {
                completion_tokens: 3000,
                record_requests: 0,
                ..MockConfig::default()
            },
            POLICIES,
            Arc::new(SystemClock),
        )
        .await;
        let (_, k1) = h.key(json!({"team": "t1"})).await;
        let (k2_id, k2) = h
            .key(json!({"team": "t1", "budget_usd": KEY_CAP, "period": "daily"}))
            .await;
        let (_, k3) = h.key(json!({"team": "t2"})).await;
        let keys = [k1, k2, k3];
        let statuses = storm(std::slice::from_ref(&h.url), &keys, seed, requests).await;
        assert!(
            !statuses.contains(&500),
            "seed {seed}: the gateway failed inside: {statuses:?}"
        );
        for s in [200, 402] {
            assert!(statuses.contains(&s), "seed {seed}: no {s} in {statuses:?}");
        }
        check(&h, &k2_id, seed).await;
    }
}

/// The same abuse over two gateway processes on one PostgreSQL store and
/// one Redis, while one gateway is SIGKILLed and restarted and Redis is
/// restarted empty. The invariants are read from the store and from the
/// surviving gateway once everything is quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_abuse_across_a_crash_and_a_redis_restart_never_overshoots() {
    use crate::infra::{PgSchema, PrivateRedis};
    use crate::process::{signal, spawn};

    let runs = env_or("TOLLGATE_ADVERSARIAL_RUNS", 1);
    let requests = env_or("TOLLGATE_ADVERSARIAL_REQUESTS", 300) as usize;
    for seed in 100..100 + runs {
        let mock = mock_provider::MockProvider::start(MockConfig {
            completion_tokens: 3000,
            record_requests: 100_000,
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let pg = PgSchema::new().await;
        let mut redis = PrivateRedis::start();
        let yaml = config_yaml(&mock.base_url(), &pg.url_via(None), POLICIES)
            .replace("counters: memory", &format!("counters: {}", redis.url()));
        let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut a = spawn(dir_a.path(), &yaml, "a.log");
        let b = spawn(dir_b.path(), &yaml, "b.log");
        let http = reqwest::Client::new();
        let key = async |body: Value| {
            let resp = http
                .post(format!("{}/admin/keys", a.url))
                .bearer_auth(ADMIN_KEY)
                .json(&body)
                .send()
                .await
                .unwrap();
            let v: Value = resp.json().await.unwrap();
            (
                v["id"].as_str().unwrap().to_owned(),
                v["key"].as_str().unwrap().to_owned(),
            )
        };
        let (_, k1) = key(json!({"team": "t1"})).await;
        let (k2_id, k2) =
            key(json!({"team": "t1", "budget_usd": KEY_CAP, "period": "daily"})).await;
        let (_, k3) = key(json!({"team": "t2"})).await;
        let keys = [k1, k2, k3];

        let urls = [a.url.clone(), b.url.clone()];
        let first = tokio::spawn({
            let keys = keys.clone();
            async move { storm(&urls, &keys, seed, requests).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        signal(&a.child, "-KILL");
        let _ = a.child.wait();
        a = spawn(dir_a.path(), &yaml, "a2.log");
        tokio::time::sleep(Duration::from_millis(200)).await;
        redis.restart();
        let mut statuses = first.await.unwrap();
        statuses.extend(
            storm(
                &[a.url.clone(), b.url.clone()],
                &keys,
                seed + 1,
                requests / 2,
            )
            .await,
        );
        assert!(!statuses.contains(&500), "seed {seed}: {statuses:?}");

        // Quiet: in-flight requests end within the provider timeout (2 s),
        // ledgers flush every 200 ms.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let store = tollgate::store::connect(&pg.url_via(None)).await.unwrap();
        let rows = store
            .requests(&tollgate::store::RequestsQuery {
                team: None,
                key: None,
                limit: 100_000,
            })
            .await
            .unwrap();
        let mut by_team: HashMap<&str, u64> = HashMap::new();
        let mut by_key: HashMap<&str, u64> = HashMap::new();
        for r in &rows {
            *by_team.entry(r.team.as_str()).or_default() += r.cost.0;
            *by_key.entry(r.key_id.as_str()).or_default() += r.cost.0;
        }
        let nanos = |usd: f64| (usd * 1e9).round() as u64;
        for (team, cap) in [("t1", T1_CAP), ("t2", T2_CAP)] {
            let spent = by_team.get(team).copied().unwrap_or(0);
            assert!(
                spent <= nanos(cap),
                "seed {seed}: team {team} spent {spent} over {cap}"
            );
        }
        let k = by_key.get(k2_id.as_str()).copied().unwrap_or(0);
        assert!(k <= nanos(KEY_CAP), "seed {seed}: key spent {k}");

        // Every call the provider received has its row, the killed
        // gateway's in-flight ones included.
        let ids: std::collections::HashSet<&str> =
            rows.iter().map(|r| r.request_id.as_str()).collect();
        let missing: Vec<String> = mock
            .requests()
            .iter()
            .filter_map(|r| r.header("x-request-id").map(str::to_owned))
            .filter(|id| !ids.contains(id.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "seed {seed}: provider calls without a ledger row: {missing:?}"
        );

        // The counters agree with the ledger.
        let budgets: Value = http
            .get(format!("{}/admin/budgets", b.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for entry in budgets["data"].as_array().unwrap() {
            let id = entry["id"].as_str().unwrap();
            let spend = match entry["scope"].as_str().unwrap() {
                "team" => by_team.get(id),
                _ => by_key.get(id),
            }
            .copied()
            .unwrap_or(0);
            assert_eq!(entry["reserved_usd"], 0.0, "seed {seed}: {entry}");
            assert_eq!(
                nanos(entry["spent_usd"].as_f64().unwrap()),
                spend,
                "seed {seed}: {entry}"
            );
        }
        drop((a, b));
        pg.drop_now().await;
    }
}
