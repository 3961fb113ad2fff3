//! Rate limits, max_parallel, the loop guard and shadow mode (SPEC §2),
//! with controlled time where time matters.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use mock_provider::MockConfig;
use reqwest::Method;
use serde_json::{Value, json};
use tollgate::types::{ManualClock, SystemClock};

use crate::common::*;

fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 27, 12, 0, 0)
            .unwrap(),
    ))
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn requests_per_minute_holds_over_a_window_refills_smoothly_and_says_when() {
    let clock = manual_clock();
    let h = Harness::start_with(MockConfig::default(), "", clock.clone()).await;
    let (_, key) = h.key(json!({"requests_per_minute": 60})).await;
    // The whole minute's allowance may be used at once…
    for i in 0..60 {
        let resp = h.chat(&key, &chat_body("x")).await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(header(&resp, "x-ratelimit-limit-requests"), "60");
        assert_eq!(
            header(&resp, "x-ratelimit-remaining-requests"),
            (59 - i).to_string()
        );
    }
    // …then it refills at one per second, not all at once at a minute's edge.
    let resp = h.chat(&key, &chat_body("x")).await;
    assert_eq!(header(&resp, "retry-after"), "1");
    let (status, code, body) = error_code(resp).await;
    assert_eq!(
        (status, code.as_str()),
        (429, "rate_limit_exceeded"),
        "{body}"
    );
    clock.advance(chrono::Duration::milliseconds(1000));
    assert_eq!(h.chat(&key, &chat_body("x")).await.status(), 200);
    assert_eq!(h.chat(&key, &chat_body("x")).await.status(), 429);
    // Over the next full minute exactly 60 more pass: no double burst.
    let mut passed = 0;
    for _ in 0..120 {
        clock.advance(chrono::Duration::milliseconds(500));
        if h.chat(&key, &chat_body("x")).await.status() == 200 {
            passed += 1;
        }
    }
    assert_eq!(passed, 60);
    assert_eq!(h.mock.calls(), 60 + 1 + 60);
}

#[tokio::test]
async fn tokens_per_minute_reserves_the_estimate_and_refuses_what_can_never_fit() {
    let clock = manual_clock();
    let h = Harness::start_with(MockConfig::default(), "", clock.clone()).await;
    let (_, key) = h.key(json!({"tokens_per_minute": 1000})).await;
    let mut body = chat_body("x");
    body["max_tokens"] = json!(2000);
    let (status, code, err) = error_code(h.chat(&key, &body).await).await;
    assert_eq!((status, code.as_str()), (429, "rate_limit_exceeded"));
    assert!(
        err["error"]["message"].as_str().unwrap().contains("never"),
        "{err}"
    );
    body["max_tokens"] = json!(300);
    let ok = h.chat(&key, &body).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "x-ratelimit-limit-tokens"), "1000");
    // Settled to the actual usage (16 completion tokens), so much more fits
    // than the 300-token reservations alone would allow.
    for _ in 0..5 {
        h.settled().await;
        assert_eq!(h.chat(&key, &body).await.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_requests_never_exceed_max_parallel_at_the_provider() {
    let tail = "policies:\n  - name: par\n    type: rate-limit\n    config: { max_parallel: 4 }\nteams:\n  - id: t1\n    policies: [par]\n";
    let h = Harness::start_with(
        MockConfig {
            latency: Duration::from_millis(50),
            ..MockConfig::default()
        },
        tail,
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (http, url, key) = (h.http.clone(), h.url.clone(), key.clone());
            tokio::spawn(async move {
                http.post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&chat_body(&format!("req {i}")))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert!(statuses.iter().all(|s| *s == 200 || *s == 429));
    assert!(statuses.contains(&200));
    assert!(
        h.mock.max_in_flight() <= 4,
        "provider saw {} in flight",
        h.mock.max_in_flight()
    );
    // Slots are released: after the burst, requests pass again.
    h.settled().await;
    assert_eq!(h.chat(&key, &chat_body("after")).await.status(), 200);
}

#[tokio::test]
async fn a_request_rejected_by_one_limit_consumes_nothing_from_the_others() {
    let clock = manual_clock();
    let tail = "policies:\n  - name: cap\n    type: cost-limit\n    config: { limit_usd: 10, period: daily }\nteams:\n  - id: t1\n    policies: [cap]\n";
    let h = Harness::start_with(MockConfig::default(), tail, clock.clone()).await;
    let (_, key) = h.key(json!({"requests_per_minute": 2})).await;
    for _ in 0..2 {
        assert_eq!(h.chat(&key, &chat_body("x")).await.status(), 200);
    }
    for _ in 0..10 {
        assert_eq!(h.chat(&key, &chat_body("x")).await.status(), 429);
    }
    h.settled().await;
    let (_, budgets) = h.admin(Method::GET, "/admin/budgets", None).await;
    let b = budgets["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["policy"] == "cap")
        .unwrap()
        .clone();
    assert_eq!(b["reserved_usd"], 0.0, "{b}");
    let rows = h.ledger().await;
    let billed: u64 = rows.iter().map(|r| r.cost.0).sum();
    let spent = (b["spent_usd"].as_f64().unwrap() * 1e9).round() as u64;
    assert_eq!(spent, billed, "only the two admitted requests were charged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runaway_retry_loop_is_stopped_after_max_identical_calls() {
    let tail = "policies:\n  - name: loop-guard\n    type: loop-guard\n    config: { max_identical: 20, window_seconds: 60 }\ndefaults:\n  policies: [loop-guard]\n";
    let h = Harness::start(tail).await;
    let (_, key) = h.key(json!({})).await;
    let body = chat_body("the same payload, again and again");
    // 2,000 identical requests as fast as 16 connections go.
    let mut codes = std::collections::HashMap::<u16, usize>::new();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (http, url, key, body) = (h.http.clone(), h.url.clone(), key.clone(), body.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                for _ in 0..125 {
                    let r = http
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(&key)
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    out.push(r.status().as_u16());
                }
                out
            })
        })
        .collect();
    for t in tasks {
        for s in t.await.unwrap() {
            *codes.entry(s).or_default() += 1;
        }
    }
    assert!(
        h.mock.calls() <= 20,
        "the provider saw {} of the loop",
        h.mock.calls()
    );
    assert_eq!(codes.get(&200).copied().unwrap_or(0) as u64, h.mock.calls());
    assert_eq!(codes.values().sum::<usize>(), 2000);
    let rows = h.ledger().await;
    assert_eq!(
        rows.iter().filter(|r| r.cost.0 > 0).count() as u64,
        h.mock.calls(),
        "spend is only theirs"
    );
    let looped = h.chat(&key, &body).await;
    assert!(looped.headers().contains_key("retry-after"));
    assert_eq!(error_code(looped).await.1, "loop_detected");
    // A different body still goes through.
    assert_eq!(
        h.chat(&key, &chat_body("something else")).await.status(),
        200
    );
}

#[tokio::test]
async fn a_loop_on_a_malformed_payload_is_throttled_after_the_streak() {
    let tail = "policies:\n  - name: lg\n    type: loop-guard\n    config: { max_identical: 5, window_seconds: 60 }\ndefaults:\n  policies: [lg]\n";
    let h = Harness::start(tail).await;
    let (_, key) = h.key(json!({})).await;
    let malformed = json!({"model": "gpt-4o-mini", "messages": "not a list"});
    let mut codes = Vec::new();
    for _ in 0..20 {
        let (_, code, _) = error_code(h.chat(&key, &malformed).await).await;
        codes.push(code);
        h.settled().await;
    }
    assert!(
        codes[..5].iter().all(|c| c == "invalid_request"),
        "{codes:?}"
    );
    assert!(codes[6..].iter().all(|c| c == "loop_detected"), "{codes:?}");
    assert_eq!(h.mock.calls(), 0);
}

/// A provider outage is not the key's doing: its 5xx answers neither build
/// an error streak nor leave the key throttled as looping once the
/// provider is back. (Distinct bodies: the identical-body guard is not
/// what is tested here.)
#[tokio::test]
async fn a_provider_outage_does_not_trip_the_error_streak() {
    let tail = "policies:\n  - name: lg\n    type: loop-guard\n    config: { max_identical: 3, window_seconds: 60 }\ndefaults:\n  policies: [lg]\n";
    let h = Harness::start(tail).await;
    let (_, key) = h.key(json!({})).await;
    h.mock.set_failure(mock_provider::FailureMode::Status(
        500,
        "{\"error\":{\"message\":\"overloaded\"}}".into(),
    ));
    for i in 0..10 {
        let (status, code, _) =
            error_code(h.chat(&key, &chat_body(&format!("try {i}"))).await).await;
        assert_eq!(
            (status, code.as_str()),
            (502, "upstream_error"),
            "attempt {i}"
        );
        h.settled().await;
    }
    h.mock.set_failure(mock_provider::FailureMode::None);
    let resp = h.chat(&key, &chat_body("the provider is back")).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
}

#[tokio::test]
async fn shadow_rate_limit_and_loop_guard_let_everything_through() {
    let tail = "policies:\n  - name: slow\n    type: rate-limit\n    mode: shadow\n    config: { requests_per_minute: 2 }\n  - name: lg\n    type: loop-guard\n    mode: shadow\n    config: { max_identical: 2, window_seconds: 60 }\n  - name: narrow\n    type: model-access\n    mode: shadow\n    config: { allow: [\"other-*\"] }\nteams:\n  - id: t1\n    policies: [slow, lg, narrow]\n";
    let h = Harness::start(tail).await;
    let (_, key) = h.key(json!({})).await;
    for _ in 0..10 {
        assert_eq!(h.chat(&key, &chat_body("same")).await.status(), 200);
    }
    assert_eq!(h.mock.calls(), 10);
    let metrics = h
        .http
        .get(format!("{}/metrics", h.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for policy in ["slow", "lg", "narrow"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("tollgate_policy_would_reject_total")
                    && l.contains(&format!("policy=\"{policy}\""))),
            "shadow rejections of `{policy}` are reported:\n{metrics}"
        );
    }
    let _: Value = Value::Null;
}
