//! Dry run (SPEC §2 `mode: shadow`): a shadow policy of each type lets the
//! traffic through to the provider, and the request log (`GET
//! /admin/requests`) lists on each request what it would have rejected.

use std::sync::Arc;

use mock_provider::MockConfig;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate::types::SystemClock;

use crate::common::*;

/// `would_reject` of the key's requests, oldest first, once every ledger row
/// is written; every row answered 200.
async fn logged(h: &Harness, key_id: &str) -> Vec<Vec<String>> {
    h.ledger().await;
    let (status, log) = h
        .admin(
            Method::GET,
            &format!("/admin/requests?key={key_id}&limit=100"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{log}");
    let mut rows: Vec<Vec<String>> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["status"], 200, "{r}");
            r["would_reject"]
                .as_array()
                .unwrap_or_else(|| panic!("`would_reject` is a list on every row: {r}"))
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    rows.reverse();
    rows
}

fn hits(policy_code: &str, n: usize) -> Vec<Vec<String>> {
    vec![vec![policy_code.to_owned()]; n]
}

fn none(n: usize) -> Vec<Vec<String>> {
    vec![Vec::new(); n]
}

/// The mock answers all 100 `max_tokens`, so each request reserves and costs
/// a little over $0.0002 (100 output tokens at $2/M plus a few input
/// tokens): a $0.0005 cap fits two.
#[tokio::test]
async fn shadow_cost_limit_passes_traffic_and_logs_what_it_would_have_rejected() {
    let tail = "policies:\n  - name: trial\n    type: cost-limit\n    mode: shadow\n    config: { limit_usd: 0.0005, period: daily, action: reject }\nteams:\n  - id: t1\n    policies: [trial]\n";
    let mock = MockConfig {
        completion_tokens: 100,
        ..MockConfig::default()
    };
    let h = Harness::start_with(mock, tail, Arc::new(SystemClock)).await;
    let (id, key) = h.key(json!({})).await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "Count to one hundred"}]});
    let mut stream = body.clone();
    stream["stream"] = json!(true);
    for body in [&body, &body, &body, &stream, &body] {
        let resp = h.chat(&key, body).await;
        assert_eq!(resp.status(), 200);
        // Read to the end (a stream included), so each is settled in turn.
        resp.bytes().await.unwrap();
        h.settled().await;
    }
    assert_eq!(h.mock.calls(), 5, "the provider saw every request");
    let mut want = none(2);
    want.extend(hits("trial:budget_exceeded", 3));
    assert_eq!(logged(&h, &id).await, want);
}

#[tokio::test]
async fn shadow_rate_limit_passes_traffic_and_logs_what_it_would_have_rejected() {
    let tail = "policies:\n  - name: slow\n    type: rate-limit\n    mode: shadow\n    config: { requests_per_minute: 2 }\nteams:\n  - id: t1\n    policies: [slow]\n";
    let h = Harness::start(tail).await;
    let (id, key) = h.key(json!({})).await;
    for i in 0..5 {
        let resp = h.chat(&key, &chat_body(&format!("request {i}"))).await;
        assert_eq!(resp.status(), 200);
        assert!(
            !resp.headers().contains_key("x-ratelimit-limit-requests"),
            "a shadow limit stays invisible to the client"
        );
    }
    assert_eq!(h.mock.calls(), 5);
    // A burst of one minute's allowance (2), then one every 30 s.
    let mut want = none(2);
    want.extend(hits("slow:rate_limit_exceeded", 3));
    assert_eq!(logged(&h, &id).await, want);
}

#[tokio::test]
async fn shadow_loop_guard_passes_traffic_and_logs_what_it_would_have_rejected() {
    let tail = "policies:\n  - name: lg\n    type: loop-guard\n    mode: shadow\n    config: { max_identical: 2, window_seconds: 60 }\ndefaults:\n  policies: [lg]\n";
    let h = Harness::start(tail).await;
    let (id, key) = h.key(json!({})).await;
    for _ in 0..5 {
        assert_eq!(h.chat(&key, &chat_body("same")).await.status(), 200);
    }
    assert_eq!(h.chat(&key, &chat_body("other")).await.status(), 200);
    assert_eq!(h.mock.calls(), 6);
    let mut want = none(2);
    want.extend(hits("lg:loop_detected", 3));
    want.extend(none(1));
    assert_eq!(logged(&h, &id).await, want);
}

#[tokio::test]
async fn shadow_model_access_passes_traffic_and_logs_what_it_would_have_rejected() {
    let tail = "policies:\n  - name: narrow\n    type: model-access\n    mode: shadow\n    config: { allow: [\"other-*\"] }\nteams:\n  - id: t1\n    policies: [narrow]\n";
    let h = Harness::start(tail).await;
    let (id, key) = h.key(json!({})).await;
    for _ in 0..2 {
        assert_eq!(h.chat(&key, &chat_body("x")).await.status(), 200);
    }
    let other: Value =
        json!({"model": "other-model", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(h.chat(&key, &other).await.status(), 200);
    assert_eq!(h.mock.calls(), 3);
    let mut want = hits("narrow:model_not_allowed", 2);
    want.extend(none(1));
    assert_eq!(logged(&h, &id).await, want);
    // `/v1/models` still lists what the shadow policy would refuse.
    let models = h.models(&key).await;
    assert!(models.to_string().contains("gpt-4o-mini"), "{models}");
}

/// A request an enforcing policy refuses still records what a shadow policy
/// thought of it.
#[tokio::test]
async fn a_refused_request_still_logs_its_shadow_verdicts() {
    let tail = "policies:\n  - name: narrow\n    type: model-access\n    mode: shadow\n    config: { allow: [\"other-*\"] }\n  - name: one\n    type: rate-limit\n    config: { requests_per_minute: 1 }\nteams:\n  - id: t1\n    policies: [narrow, one]\n";
    let h = Harness::start(tail).await;
    let (id, key) = h.key(json!({})).await;
    assert_eq!(h.chat(&key, &chat_body("a")).await.status(), 200);
    let (status, code, _) = error_code(h.chat(&key, &chat_body("b")).await).await;
    assert_eq!((status, code.as_str()), (429, "rate_limit_exceeded"));
    h.ledger().await;
    let (_, log) = h
        .admin(Method::GET, &format!("/admin/requests?key={id}"), None)
        .await;
    let rows = log["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{log}");
    for r in rows {
        assert_eq!(
            r["would_reject"],
            json!(["narrow:model_not_allowed"]),
            "{r}"
        );
    }
    assert_eq!(rows[0]["error_code"], "rate_limit_exceeded");
}
