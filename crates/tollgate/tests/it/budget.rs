//! Hard budgets (SPEC §2 cost-limit): never overshot under concurrency or
//! streaming, clamping, period roll-over on controlled time, shadow mode,
//! alerts, and the 402 contract.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use futures_util::StreamExt;
use mock_provider::MockConfig;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate::types::{ManualClock, SystemClock};

use crate::common::*;

/// $1/M input, $2/M output: 100 completion tokens cost $0.0002. The mock
/// generates exactly `max_tokens` (100) tokens, so each request costs a
/// little over $0.0002 and a $0.01 cap fits about 49 of them.
const CAP: f64 = 0.01;

pub(crate) fn capped(limit: f64, extra: &str) -> String {
    format!(
        "policies:\n  - name: cap\n    type: cost-limit\n    config: {{ limit_usd: {limit}, period: daily, action: reject{extra} }}\nteams:\n  - id: t1\n    policies: [cap]\n"
    )
}

fn body_100() -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "Count to one hundred"}]})
}

pub(crate) async fn total_cost(h: &Harness) -> (u64, usize) {
    let rows = h.ledger().await;
    (
        rows.iter().map(|r| r.cost.0).sum(),
        rows.iter().filter(|r| r.status == 200).count(),
    )
}

/// Sends until the first 402 (bounded), returning how many got through.
async fn drain_budget(h: &Harness, key: &str, body: &Value) -> usize {
    for n in 0..500 {
        let resp = h.chat(key, body).await;
        if resp.status() == 402 {
            return n;
        }
        assert_eq!(resp.status(), 200);
        // Read streams to the end: a dropped stream is settled as cut short.
        resp.bytes().await.expect("whole body");
    }
    panic!("the budget never ran out");
}

async fn fire(h: &Harness, key: &str, body: Value, n: usize) -> Vec<u16> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (http, url, key, body) =
                (h.http.clone(), h.url.clone(), key.to_owned(), body.clone());
            tokio::spawn(async move {
                let resp = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await;
                let resp = resp.expect("request");
                let status = resp.status().as_u16();
                // Read streams to the end so their settlement is the normal one.
                let mut s = resp.bytes_stream();
                while s.next().await.is_some() {}
                status
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_requests_never_overshoot_the_team_cap() {
    let h = Harness::start_with(
        MockConfig {
            completion_tokens: 1000,
            ..MockConfig::default()
        },
        &capped(CAP, ""),
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let statuses = fire(&h, &key, body_100(), 1000).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 402),
        "{statuses:?}"
    );
    assert!(ok > 0 && ok < 60, "{ok} admitted");
    assert_eq!(
        h.mock.calls() as usize,
        ok,
        "every forwarded request was admitted; no 402 reached the provider"
    );
    // Spend what is left sequentially: the cap is then exhausted to within
    // one worst-case request, and still never exceeded.
    let more = drain_budget(&h, &key, &body_100()).await;
    let calls_at_exhaustion = h.mock.calls();
    for _ in 0..20 {
        assert_eq!(h.chat(&key, &body_100()).await.status(), 402);
    }
    assert_eq!(
        h.mock.calls(),
        calls_at_exhaustion,
        "no call reaches the provider once the budget is spent"
    );
    let (spent, rows_ok) = total_cost(&h).await;
    assert_eq!(rows_ok, ok + more);
    let limit = (CAP * 1e9) as u64;
    let worst = 250_000; // > input estimate + 100 output tokens
    assert!(spent <= limit, "spent {spent} over the limit {limit}");
    assert!(
        spent + worst >= limit,
        "spent {spent} is not within one request of {limit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_streams_never_overshoot_the_cap() {
    let h = Harness::start_with(
        MockConfig {
            completion_tokens: 1000,
            chunk_delay: Duration::from_millis(1),
            ..MockConfig::default()
        },
        &capped(CAP, ""),
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let mut body = body_100();
    body["stream"] = json!(true);
    let statuses = fire(&h, &key, body.clone(), 200).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(ok > 0 && ok < 60, "{ok} streams admitted");
    assert_eq!(h.mock.calls() as usize, ok);
    drain_budget(&h, &key, &body).await;
    let (spent, _) = total_cost(&h).await;
    let limit = (CAP * 1e9) as u64;
    assert!(spent <= limit, "streams overshot: {spent} > {limit}");
    assert!(
        spent + 250_000 >= limit,
        "spent {spent} is not within one request of {limit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clamp_lowers_max_tokens_instead_of_rejecting_and_the_cap_holds() {
    // No max_tokens in the request: worst case is the model's 1000 output
    // tokens ($0.002). With clamp, the last requests run with fewer.
    let h = Harness::start_with(
        MockConfig {
            completion_tokens: 1000,
            ..MockConfig::default()
        },
        &capped(CAP, ", on_insufficient: clamp"),
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Write a lot"}]});
    let statuses = fire(&h, &key, body.clone(), 300).await;
    assert!(statuses.iter().all(|s| *s == 200 || *s == 402));
    let clamped = h
        .mock
        .requests()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter(|b| b["max_tokens"].as_u64().is_some_and(|n| n < 1000))
        .count();
    drain_budget(&h, &key, &body).await;
    let (spent, _) = total_cost(&h).await;
    let limit = (CAP * 1e9) as u64;
    assert!(spent <= limit, "clamp overshot: {spent} > {limit}");
    let clamped_after = h
        .mock
        .requests()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter(|b| b["max_tokens"].as_u64().is_some_and(|n| n < 1000))
        .count();
    assert!(
        clamped + clamped_after >= 1,
        "some request ran with a lowered max_tokens"
    );
    // Clamping uses the budget down to less than one output token's worth
    // plus the input.
    assert!(
        spent + 50_000 >= limit,
        "clamp left {} nano-USD unused",
        limit - spent
    );
}

#[tokio::test]
async fn rejection_is_402_with_policy_limit_spend_reset_and_retry_after() {
    let h = Harness::start(&capped(0.001, "")).await;
    let (_, key) = h.key(json!({})).await;
    let ok = h.chat(&key, &body_100()).await;
    assert_eq!(ok.status(), 200);
    let cost: f64 = ok.headers()["x-tollgate-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let remaining: f64 = ok.headers()["x-tollgate-budget-remaining-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cost > 0.0);
    assert!(
        (remaining - (0.001 - cost)).abs() < 1e-9,
        "{remaining} vs {}",
        0.001 - cost
    );
    drain_budget(&h, &key, &body_100()).await;
    let resp = h.chat(&key, &body_100()).await;
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = chrono::Utc::now();
    let midnight = (now + chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let to_reset = (midnight - now).num_seconds() as u64;
    assert!(
        retry.abs_diff(to_reset) <= 2,
        "Retry-After {retry} vs {to_reset} s to midnight UTC"
    );
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (402, "budget_exceeded"));
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("cap"), "names the policy: {msg}");
    assert!(msg.contains("0.001"), "names the limit: {msg}");
    assert!(
        msg.contains(&midnight.format("%Y-%m-%d").to_string()),
        "names the reset: {msg}"
    );
}

#[tokio::test]
async fn budget_remaining_header_is_sent_once_on_every_success_path() {
    let h = Harness::start(&capped(1.0, "")).await;
    // A key budget on top of the team's: two cost-limits, one header.
    let (_, key) = h.key(json!({"budget_usd": 0.5, "period": "daily"})).await;
    let chat = body_100();
    let mut chat_stream = body_100();
    chat_stream["stream"] = json!(true);
    let messages = json!({"model": "gpt-4o-mini", "max_tokens": 100,
        "messages": [{"role": "user", "content": "Count"}]});
    let mut messages_stream = messages.clone();
    messages_stream["stream"] = json!(true);
    for (path, body) in [
        ("/v1/chat/completions", chat),
        ("/v1/chat/completions", chat_stream),
        ("/v1/messages", messages),
        ("/v1/messages", messages_stream),
    ] {
        let resp = h.post(path, &key, &body).await;
        assert_eq!(resp.status(), 200, "{path} {body}");
        let sent = resp
            .headers()
            .get_all("x-tollgate-budget-remaining-usd")
            .iter()
            .count();
        assert_eq!(sent, 1, "{path} stream={}", body["stream"]);
        resp.bytes().await.unwrap();
    }
}

#[tokio::test]
async fn key_budget_set_over_the_api_is_enforced_and_reported() {
    let h = Harness::start("").await;
    let (id, key) = h.key(json!({"budget_usd": 0.001, "period": "total"})).await;
    let n = drain_budget(&h, &key, &body_100()).await;
    // Each request reserves ~$0.00021 (100 output tokens) but the mock
    // answers with 16 tokens, so ~$0.00004 is charged and ~22 fit.
    assert!(n > 5, "settlement returned the unused reservation: {n}");
    let (spent, _) = total_cost(&h).await;
    assert!(
        spent <= 1_000_000 && spent + 250_000 >= 1_000_000,
        "{spent}"
    );
    let (status, budgets) = h.admin(Method::GET, "/admin/budgets?team=t1", None).await;
    assert_eq!(status, 200);
    let b = budgets["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id.as_str())
        .expect("key budget reported");
    assert_eq!(b["limit_usd"], 0.001);
    assert!(b["spent_usd"].as_f64().unwrap() <= 0.001);
    assert_eq!(b["reserved_usd"], 0.0);
}

#[tokio::test]
async fn a_new_period_starts_a_new_budget_on_controlled_time() {
    let clock = Arc::new(ManualClock::new(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 27, 23, 59, 0)
            .unwrap(),
    ));
    let h = Harness::start_with(MockConfig::default(), &capped(0.001, ""), clock.clone()).await;
    let (_, key) = h.key(json!({})).await;
    drain_budget(&h, &key, &body_100()).await;
    let resp = h.chat(&key, &body_100()).await;
    assert_eq!(resp.status(), 402);
    assert_eq!(
        resp.headers()["retry-after"],
        "60",
        "one minute to midnight on the test clock"
    );
    clock.advance(chrono::Duration::seconds(61));
    assert_eq!(
        h.chat(&key, &body_100()).await.status(),
        200,
        "the budget is available again in the new day"
    );
}

#[tokio::test]
async fn shadow_budget_lets_traffic_through_and_reports_what_it_would_have_blocked() {
    let tail = "policies:\n  - name: trial\n    type: cost-limit\n    mode: shadow\n    config: { limit_usd: 0.0001, period: daily, action: reject }\nteams:\n  - id: t1\n    policies: [trial]\n";
    let h = Harness::start(tail).await;
    let (_, key) = h.key(json!({})).await;
    for _ in 0..5 {
        assert_eq!(h.chat(&key, &body_100()).await.status(), 200);
    }
    h.settled().await;
    let (_, budgets) = h.admin(Method::GET, "/admin/budgets", None).await;
    let b = &budgets["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["policy"] == "trial")
        .expect("reported")
        .clone();
    assert!(b["would_reject"].as_u64().unwrap() >= 4, "{b}");
    assert!(
        b["spent_usd"].as_f64().unwrap() > 0.0001,
        "spend is still counted: {b}"
    );
}

#[tokio::test]
async fn alert_webhook_gets_each_threshold_once_and_the_first_block() {
    let (hook_url, received) = crate::hooks::start().await;
    let tail = format!(
        "{}alerts:\n  webhook_url: {hook_url}\n  thresholds: [0.5, 0.8, 1.0]\n",
        capped(0.002, "")
    );
    let h = Harness::start(&tail).await;
    let (_, key) = h.key(json!({})).await;
    drain_budget(&h, &key, &body_100()).await;
    for _ in 0..3 {
        assert_eq!(h.chat(&key, &body_100()).await.status(), 402);
    }
    let events = crate::hooks::wait_for(&received, 3, Duration::from_secs(5)).await;
    let thresholds: Vec<f64> = events
        .iter()
        .filter(|e| e["event"] == "budget_threshold")
        .map(|e| e["threshold"].as_f64().unwrap())
        .collect();
    assert!(
        thresholds.contains(&0.5) && thresholds.contains(&0.8),
        "{events:?}"
    );
    let mut sorted = thresholds.clone();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        thresholds.len(),
        "each threshold once: {events:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "budget_blocked")
            .count(),
        1,
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e["policy"] == "cap" && e["limit_usd"] == 0.002)
    );
}
