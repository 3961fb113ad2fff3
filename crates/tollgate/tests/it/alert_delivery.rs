//! `alerts.format: slack` and the delivery's retries, against a webhook
//! receiver the test runs that refuses its first deliveries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use http::StatusCode;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::common::Harness;

struct Hook {
    attempts: AtomicUsize,
    refuse_first: usize,
    accepted: Mutex<Vec<Value>>,
}

async fn flaky_hook(refuse_first: usize) -> (String, Arc<Hook>) {
    let hook = Arc::new(Hook {
        attempts: AtomicUsize::new(0),
        refuse_first,
        accepted: Mutex::default(),
    });
    let state = hook.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |Json(v): Json<Value>| {
            let hook = state.clone();
            async move {
                if hook.attempts.fetch_add(1, Ordering::SeqCst) < hook.refuse_first {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                hook.accepted.lock().push(v);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), hook)
}

#[tokio::test]
async fn slack_alerts_are_readable_text_and_retried_until_delivered() {
    let (url, hook) = flaky_hook(2).await;
    let tail = format!(
        "{}alerts:\n  webhook_url: {url}\n  thresholds: [0.5]\n  format: slack\n",
        crate::budget::capped(0.002, "")
    );
    let h = Harness::start(&tail).await;
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "Count to one hundred"}]});
    let started = Instant::now();
    let mut refused = false;
    for _ in 0..200 {
        let resp = h.chat(&key, &body).await;
        if resp.status() == 402 {
            refused = true;
            break;
        }
        assert_eq!(resp.status(), 200);
    }
    assert!(refused, "the budget ran out");
    // Alerts never hold up a request, even while deliveries are refused.
    assert!(started.elapsed() < Duration::from_secs(10));

    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.accepted.lock().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let accepted = hook.accepted.lock().clone();
    assert_eq!(
        accepted.len(),
        2,
        "the 50% threshold and the block: {accepted:?}"
    );
    assert_eq!(
        hook.attempts.load(Ordering::SeqCst),
        4,
        "two refused attempts were retried"
    );
    for a in &accepted {
        let obj = a.as_object().unwrap();
        assert_eq!(
            obj.keys().collect::<Vec<_>>(),
            ["text"],
            "Slack/Teams shape: {a}"
        );
    }
    let texts: Vec<&str> = accepted
        .iter()
        .map(|a| a["text"].as_str().unwrap())
        .collect();
    let threshold = texts
        .iter()
        .find(|t| t.contains("has reached 50%"))
        .expect("threshold alert");
    assert!(
        threshold.contains("budget `cap` (team `t1`)"),
        "{threshold}"
    );
    assert!(
        threshold.contains("of its daily limit: $0.00"),
        "{threshold}"
    );
    assert!(
        threshold.contains("spent of $0.002. It resets at "),
        "{threshold}"
    );
    let blocked = texts
        .iter()
        .find(|t| t.contains("is refusing requests"))
        .expect("block alert");
    assert!(
        blocked.contains("daily limit of $0.002. It resets at "),
        "{blocked}"
    );
}

#[tokio::test]
async fn json_alerts_stay_the_structured_event() {
    let (url, hook) = flaky_hook(0).await;
    let tail = format!(
        "{}alerts:\n  webhook_url: {url}\n  thresholds: [0.5]\n",
        crate::budget::capped(0.002, "")
    );
    let h = Harness::start(&tail).await;
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": "Count to one hundred"}]});
    for _ in 0..200 {
        if h.chat(&key, &body).await.status() == 402 {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while hook.accepted.lock().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = hook.accepted.lock()[0].clone();
    assert!(first.get("text").is_none(), "{first}");
    assert_eq!(first["policy"], "cap");
    assert!(first["event"].as_str().unwrap().starts_with("budget_"));
}
