//! Routing and resilience (SPEC §8) over real HTTP: retries with backoff
//! and `Retry-After`, failover in strategy order, streams that fail over
//! only before their first byte, the circuit breaker on the gateway's
//! manual clock, budgets held across attempts, and the routing headers,
//! ledger column and metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mock_provider::{FailureMode, MockConfig, MockHandle, MockProvider};
use reqwest::Method;
use serde_json::{Value, json};
use tollgate::types::{Clock, ManualClock, SystemClock};

use crate::common::*;

/// Fast backoff, a breaker that does not trip unless a test asks.
const ROUTING: &str = "routing:\n  retries: 2\n  backoff_ms: 1\n  max_backoff_ms: 200\n  failures_to_trip: 1000\n  cooldown_s: 30\n";

/// The gateway with two mock providers of its own, `primary` and
/// `backup`, behind model `pair` (in that order) and `solo` (primary only).
struct Rig {
    h: Harness,
    primary: MockHandle,
    backup: MockHandle,
}

async fn rig_with(routing: &str, tail: &str, strategy: &str, clock: Arc<dyn Clock>) -> Rig {
    let primary = MockProvider::start(MockConfig::default()).await.unwrap();
    let backup = MockProvider::start(MockConfig::default()).await.unwrap();
    rig_on(primary, backup, routing, tail, strategy, clock).await
}

/// `/metrics` is one recorder per test process: a test reading a series
/// gives its providers names no other test uses.
async fn rig_named(names: (&str, &str), routing: &str, clock: Arc<dyn Clock>) -> Rig {
    let primary = MockProvider::start(MockConfig::default()).await.unwrap();
    let backup = MockProvider::start(MockConfig::default()).await.unwrap();
    rig_full(primary, backup, names, routing, "", "", clock).await
}

async fn rig_on(
    primary: MockHandle,
    backup: MockHandle,
    routing: &str,
    tail: &str,
    strategy: &str,
    clock: Arc<dyn Clock>,
) -> Rig {
    let names = ("primary", "backup");
    rig_full(primary, backup, names, routing, tail, strategy, clock).await
}

async fn rig_full(
    primary: MockHandle,
    backup: MockHandle,
    (p, b): (&str, &str),
    routing: &str,
    tail: &str,
    strategy: &str,
    clock: Arc<dyn Clock>,
) -> Rig {
    let providers = format!(
        "  - name: {p}\n    kind: openai\n    base_url: {}\n    api_key: {UPSTREAM_KEY}\n    timeout_s: 1\n  - name: {b}\n    kind: openai\n    base_url: {}\n    api_key: {UPSTREAM_KEY}\n    timeout_s: 1\n",
        primary.base_url(),
        backup.base_url()
    );
    let strategy = match strategy {
        "" => String::new(),
        s => format!("    strategy: {s}\n"),
    };
    let models = format!(
        "  - name: pair\n{strategy}    targets:\n      - provider: {p}\n        model: gpt-4o-mini\n      - provider: {b}\n        model: gpt-4o-mini\n    price: {{ input_per_mtok: 0, output_per_mtok: 1000 }}\n    max_output_tokens: 100\n  - name: solo\n    targets:\n      - provider: {p}\n        model: gpt-4o-mini\n    price: {{ input_per_mtok: 0, output_per_mtok: 1000 }}\n    max_output_tokens: 100\n"
    );
    let h = Harness::start_with_models(
        MockConfig::default(),
        &providers,
        &models,
        &format!("{routing}{tail}"),
        clock,
    )
    .await;
    Rig { h, primary, backup }
}

async fn rig(routing: &str) -> Rig {
    rig_with(routing, "", "", Arc::new(SystemClock)).await
}

fn body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn throttle(times: u64, status: u16, headers: &[(&str, &str)]) -> FailureMode {
    FailureMode::FailFirstWith {
        times,
        status,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A port nothing listens on: connecting is refused.
async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn a_429_is_retried_on_the_same_target_honouring_retry_after() {
    let r = rig(ROUTING).await;
    let (_, key) = r.h.key(json!({})).await;
    // `retry-after-ms` is read first; the whole wait is honoured.
    r.primary.set_failure(throttle(
        1,
        429,
        &[("retry-after-ms", "150"), ("retry-after", "1")],
    ));
    let started = Instant::now();
    let resp = r.h.chat(&key, &body("solo", "a")).await;
    assert_eq!(resp.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "not the 1 s of `retry-after`"
    );
    assert_eq!(header(&resp, "x-tollgate-provider"), "primary");
    assert_eq!(header(&resp, "x-tollgate-attempts"), "2");
    assert_eq!(r.primary.calls(), 2);

    // Seconds, when that is all it sends (below `max_backoff_ms`: 200 ms
    // here, so ask for 0).
    r.primary
        .set_failure(throttle(2, 429, &[("retry-after", "0")]));
    let resp = r.h.chat(&key, &body("solo", "b")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tollgate-attempts"), "3");

    // Without any header: the gateway's own backoff.
    r.primary.set_failure(throttle(2, 429, &[]));
    let resp = r.h.chat(&key, &body("solo", "c")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tollgate-attempts"), "3");

    let rows = r.h.ledger().await;
    let mut attempts: Vec<u32> = rows.iter().map(|r| r.attempts).collect();
    attempts.sort();
    assert_eq!(attempts, [2, 3, 3], "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| r.provider == "primary" && r.status == 200)
    );
    // Billed once, for the answer: 16 tokens at $1000/M.
    assert!(rows.iter().all(|r| r.cost.0 == 16 * 1_000_000), "{rows:?}");
    let (_, requests) = r.h.admin(Method::GET, "/admin/requests", None).await;
    assert!(
        requests["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["attempts"].as_u64().unwrap() >= 2),
        "{requests}"
    );
}

#[tokio::test]
async fn a_retry_after_longer_than_max_backoff_moves_on_at_once() {
    let r = rig(ROUTING).await;
    let (_, key) = r.h.key(json!({})).await;
    for headers in [
        vec![("retry-after", "3600")],
        vec![("retry-after-ms", "900000")],
        vec![("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")],
        // Hostile: absurdly large.
        vec![("retry-after", "1e300")],
    ] {
        r.primary.set_failure(throttle(100, 429, &headers));
        r.primary.reset_stats();
        r.backup.reset_stats();
        let started = Instant::now();
        let resp = r.h.chat(&key, &body("pair", "x")).await;
        assert_eq!(resp.status(), 200, "{headers:?}");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{headers:?}"
        );
        assert_eq!(header(&resp, "x-tollgate-provider"), "backup");
        assert_eq!(header(&resp, "x-tollgate-attempts"), "2");
        assert_eq!((r.primary.calls(), r.backup.calls()), (1, 1), "{headers:?}");
    }
    // Hostile values that mean nothing are ignored: the own backoff runs.
    r.primary.set_failure(throttle(
        1,
        429,
        &[("retry-after", "-5"), ("retry-after-ms", "NaN")],
    ));
    let resp = r.h.chat(&key, &body("pair", "y")).await;
    assert_eq!(header(&resp, "x-tollgate-provider"), "primary");
}

#[tokio::test]
async fn retryable_failures_are_retried_then_fail_over_and_others_are_not() {
    let r = rig(ROUTING).await;
    let (_, key) = r.h.key(json!({})).await;
    for status in [408, 429, 500, 503, 529] {
        r.primary
            .set_failure(FailureMode::openai_error(status, "server_error", "busy"));
        r.primary.reset_stats();
        r.backup.reset_stats();
        let resp = r.h.chat(&key, &body("pair", "x")).await;
        assert_eq!(resp.status(), 200, "{status}");
        assert_eq!(header(&resp, "x-tollgate-provider"), "backup");
        assert_eq!(header(&resp, "x-tollgate-attempts"), "4", "{status}");
        assert_eq!((r.primary.calls(), r.backup.calls()), (3, 1), "{status}");
    }
    // A 5xx outside the list: not worth repeating here, worth a fallback.
    r.primary
        .set_failure(FailureMode::openai_error(501, "server_error", "no"));
    r.primary.reset_stats();
    let resp = r.h.chat(&key, &body("pair", "x")).await;
    assert_eq!(header(&resp, "x-tollgate-attempts"), "2");
    assert_eq!(r.primary.calls(), 1);
    // The provider refusing the gateway's key: 502-worthy, not the
    // client's; the next target answers, the bad one is not retried.
    r.primary.set_failure(FailureMode::openai_error(
        401,
        "invalid_request_error",
        "bad key",
    ));
    r.primary.reset_stats();
    let resp = r.h.chat(&key, &body("pair", "x")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tollgate-provider"), "backup");
    assert_eq!(r.primary.calls(), 1);
    // Any other 4xx is the request's fault: back unchanged, tried nowhere else.
    r.primary.set_failure(FailureMode::openai_error(
        422,
        "invalid_request_error",
        "bad tool schema",
    ));
    r.primary.reset_stats();
    r.backup.reset_stats();
    let resp = r.h.chat(&key, &body("pair", "x")).await;
    assert_eq!(resp.status(), 422);
    assert_eq!(header(&resp, "x-tollgate-provider"), "primary");
    assert_eq!(header(&resp, "x-tollgate-attempts"), "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "bad tool schema");
    assert_eq!((r.primary.calls(), r.backup.calls()), (1, 0));
    // Refusals are billed nothing: every row is the answer's 16 tokens.
    let rows = r.h.ledger().await;
    assert!(
        rows.iter()
            .filter(|r| r.status == 200)
            .all(|r| r.cost.0 == 16_000_000),
        "{rows:?}"
    );
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_fails_over() {
    let backup = MockProvider::start(MockConfig::default()).await.unwrap();
    let dead = closed_port().await;
    let providers = format!(
        "  - name: dead\n    kind: openai\n    base_url: {dead}\n    api_key: {UPSTREAM_KEY}\n  - name: backup\n    kind: openai\n    base_url: {}\n    api_key: {UPSTREAM_KEY}\n",
        backup.base_url()
    );
    let models = "  - name: pair\n    targets:\n      - provider: dead\n        model: gpt-4o-mini\n      - provider: backup\n        model: gpt-4o-mini\n  - name: gone\n    targets:\n      - provider: dead\n        model: gpt-4o-mini\n";
    let h = Harness::start_with_models(
        MockConfig::default(),
        &providers,
        models,
        ROUTING,
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let resp = h.chat(&key, &body("pair", "x")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tollgate-provider"), "backup");
    assert_eq!(header(&resp, "x-tollgate-attempts"), "4");
    // Nothing answers: 502 listing every attempt, no key anywhere.
    let resp = h.chat(&key, &body("gone", "x")).await;
    assert_eq!(header(&resp, "x-tollgate-attempts"), "3");
    let (status, code, v) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (502, "upstream_error"));
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("3 attempts"), "{message}");
    assert_eq!(message.matches("`dead` (").count(), 3, "{message}");
    assert!(message.to_lowercase().contains("connect"), "{message}");
    assert!(!v.to_string().contains(UPSTREAM_KEY));
    let rows = h.ledger().await;
    assert!(
        rows.iter().all(|r| r.status == 200 || r.cost.0 == 0),
        "{rows:?}"
    );
}

#[tokio::test]
async fn every_target_failing_is_502_or_504_when_the_last_timed_out() {
    let r = rig(ROUTING).await;
    let (_, key) = r.h.key(json!({"budget_usd": 10, "period": "daily"})).await;
    r.primary
        .set_failure(FailureMode::openai_error(503, "server_error", "overloaded"));
    r.backup
        .set_failure(FailureMode::openai_error(500, "server_error", "oops"));
    let resp = r.h.chat(&key, &body("pair", "x")).await;
    assert_eq!(header(&resp, "x-tollgate-attempts"), "6");
    assert_eq!(header(&resp, "x-tollgate-provider"), "backup");
    let (status, code, v) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (502, "upstream_error"));
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("6 attempts"), "{message}");
    assert_eq!(message.matches("`primary` (503, ").count(), 3, "{message}");
    assert_eq!(message.matches("`backup` (500, ").count(), 3, "{message}");
    assert!(message.contains(" ms)"), "{message}");
    assert!(!v.to_string().contains(UPSTREAM_KEY), "{v}");

    // The last ones timed out: 504. Each timeout (which may have been
    // billed) is billed its reservation, and retried on one of its own.
    r.backup.set_failure(FailureMode::Hang);
    let resp = r.h.chat(&key, &body("pair", "y")).await;
    assert_eq!(header(&resp, "x-tollgate-attempts"), "6");
    let (status, code, v) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (504, "upstream_timeout"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("6 attempts"),
        "{v}"
    );
    let rows = r.h.ledger().await;
    let refused = rows.iter().find(|r| r.status == 502).unwrap();
    assert_eq!((refused.cost.0, refused.attempts), (0, 6), "{refused:?}");
    let timed_out = rows.iter().find(|r| r.status == 504).unwrap();
    assert_eq!(timed_out.attempts, 6);
    assert_eq!(timed_out.provider, "backup");
    assert_eq!(
        timed_out.cost.0,
        3 * 100 * 1_000_000,
        "each of the 3 timeouts billed its reservation (100 tokens): {timed_out:?}"
    );
    assert_eq!(timed_out.completion_tokens, 300, "{timed_out:?}");
}

/// What the key's budget has spent and still holds reserved.
async fn key_budget(h: &Harness) -> (u64, f64) {
    let (_, budgets) = h.admin(Method::GET, "/admin/budgets", None).await;
    let row = &budgets["data"][0];
    let spent = (row["spent_usd"].as_f64().unwrap() * 1e9).round() as u64;
    (spent, row["reserved_usd"].as_f64().unwrap())
}

/// A budget with room for one worst case only: the timeout may have been
/// generated, so it keeps its reservation, and a retry could not be paid
/// for. Not retried, not failed over: 504, billed once.
#[tokio::test]
async fn a_timeout_without_room_for_another_worst_case_is_not_retried() {
    let r = rig(ROUTING).await;
    // 100 output tokens at $1000/M: $0.1, exactly one worst case.
    let (_, key) = r.h.key(json!({"budget_usd": 0.1, "period": "daily"})).await;
    r.primary.set_failure(FailureMode::Hang);
    let resp = r.h.chat(&key, &body("pair", "x")).await;
    assert_eq!(header(&resp, "x-tollgate-attempts"), "1");
    let (status, code, v) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (504, "upstream_timeout"), "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("no room"),
        "{v}"
    );
    assert_eq!(r.primary.calls(), 1, "not retried");
    assert_eq!(
        r.backup.calls(),
        0,
        "a second generation could not be paid for"
    );
    r.h.settled().await;
    let rows = r.h.ledger().await;
    assert_eq!((rows[0].cost.0, rows[0].attempts), (100 * 1_000_000, 1));
    assert_eq!(key_budget(&r.h).await, (100 * 1_000_000, 0.0));
}

/// Hang past the provider's timeout once, then answer: the retry goes out
/// on a reservation of its own, and the row bills both the lost attempt
/// (its worst case) and the answer (what the provider reported).
#[tokio::test]
async fn a_timeout_is_retried_on_a_second_reservation_and_both_are_billed() {
    let r = rig(ROUTING).await;
    let (_, key) = r.h.key(json!({"budget_usd": 10, "period": "daily"})).await;
    r.primary.set_failure(FailureMode::Hang);
    let primary = r.primary.clone();
    // Answers again once the first attempt hangs there (it times out at 1 s).
    let heal = tokio::spawn(async move {
        while primary.calls() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        primary.set_failure(FailureMode::None);
    });
    let resp = r.h.chat(&key, &body("solo", "x")).await;
    heal.await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tollgate-attempts"), "2");
    assert_eq!(header(&resp, "x-tollgate-provider"), "primary");
    let cost_header: f64 = header(&resp, "x-tollgate-cost-usd").parse().unwrap();
    let v: Value = resp.json().await.unwrap();
    let tokens = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(tokens > 0);
    assert_eq!(r.primary.calls(), 2);
    r.h.settled().await;
    let rows = r.h.ledger().await;
    assert_eq!(rows.len(), 1);
    let expected = 100 * 1_000_000 + tokens * 1_000_000;
    assert_eq!(
        (rows[0].cost.0, rows[0].attempts),
        (expected, 2),
        "{:?}",
        rows[0]
    );
    assert_eq!(rows[0].completion_tokens, 100 + tokens, "{:?}", rows[0]);
    assert_eq!((cost_header * 1e9).round() as u64, expected);
    assert_eq!(key_budget(&r.h).await, (expected, 0.0));
}

/// Without retries on the same target, a timeout fails over to the next
/// target, again on a reservation of its own.
#[tokio::test]
async fn a_timeout_fails_over_to_the_next_target() {
    let no_retries = ROUTING.replace("retries: 2", "retries: 0");
    let r = rig(&no_retries).await;
    let (_, key) = r.h.key(json!({"budget_usd": 10, "period": "daily"})).await;
    r.primary.set_failure(FailureMode::Hang);
    let b = json!({"model": "pair", "stream": true,
        "messages": [{"role": "user", "content": "x"}]});
    let resp = r.h.post("/v1/chat/completions", &key, &b).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tollgate-attempts"), "2");
    assert_eq!(header(&resp, "x-tollgate-provider"), "backup");
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!((r.primary.calls(), r.backup.calls()), (1, 1));
    r.h.settled().await;
    let rows = r.h.ledger().await;
    assert_eq!(rows[0].attempts, 2);
    assert_eq!(rows[0].provider, "backup");
    assert!(rows[0].cost.0 > 100 * 1_000_000, "{:?}", rows[0]);
    assert_eq!(key_budget(&r.h).await, (rows[0].cost.0, 0.0));
}

/// 40 concurrent requests, half of which hang at every target, against a
/// cap that fits 30 worst cases (fewer than the hanging requests could
/// take, 20 of them at up to 6 attempts): timeouts are retried while the cap
/// has room and never past it, every lost attempt is billed its
/// reservation, answers what they reported, and the budget counter equals
/// the ledger.
#[tokio::test]
async fn retried_timeouts_under_concurrency_never_pass_the_cap() {
    const N: u64 = 30;
    let cap = N as f64 * 0.1;
    let tail = format!(
        "policies:\n  - name: cap\n    type: cost-limit\n    config: {{ limit_usd: {cap}, period: daily, action: reject }}\nteams:\n  - id: t1\n    policies: [cap]\n"
    );
    let r = rig_with(ROUTING, &tail, "", Arc::new(SystemClock)).await;
    let (_, key) = r.h.key(json!({})).await;
    let h = Arc::new(r.h);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (h, key) = (h.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let fate = if i % 2 == 0 { " [[mock:hang]]" } else { "" };
            let mut b = body("pair", &format!("request {i}{fate}"));
            b["max_tokens"] = json!(100);
            let resp = h.chat(&key, &b).await;
            let status = resp.status().as_u16();
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            let tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
            (status, tokens)
        }));
    }
    let mut answered_tokens = 0;
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, tokens) = t.await.unwrap();
        statuses.push(status);
        if status == 200 {
            answered_tokens += tokens;
        }
    }
    assert!(
        statuses.iter().all(|s| [200, 402, 504].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&504), "{statuses:?}");
    h.settled().await;
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 40);
    let total: u64 = rows.iter().map(|r| r.cost.0).sum();
    assert!(
        total <= N * 100_000_000,
        "spent {total} of a cap of {}",
        N * 100_000_000
    );
    let retried = rows
        .iter()
        .filter(|r| r.status == 504 && r.attempts > 1)
        .count();
    assert!(retried > 0, "some timeout was retried: {rows:?}");
    for row in rows.iter().filter(|r| r.status == 504) {
        assert_eq!(
            row.cost.0,
            u64::from(row.attempts) * 100_000_000,
            "every lost attempt billed its reservation: {row:?}"
        );
    }
    let answered: u64 = rows
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.cost.0)
        .sum();
    assert_eq!(
        answered,
        answered_tokens * 1_000_000,
        "billed what the provider reported"
    );
    assert_eq!(key_budget(&h).await, (total, 0.0));
}

#[tokio::test]
async fn a_stream_fails_over_before_its_first_byte_and_never_after() {
    let r = rig(ROUTING).await;
    let (_, key) = r.h.key(json!({})).await;
    r.primary
        .set_failure(FailureMode::openai_error(503, "server_error", "busy"));
    let mut b = body("pair", "x");
    b["stream"] = json!(true);
    let resp = r.h.chat(&key, &b).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tollgate-provider"), "backup");
    assert_eq!(header(&resp, "x-tollgate-attempts"), "4");
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");

    // Cut after its first chunks reached the client: it ends there.
    r.primary
        .set_failure(FailureMode::StreamCut { after_chunks: 2 });
    r.primary.reset_stats();
    r.backup.reset_stats();
    let resp = r.h.chat(&key, &b).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-tollgate-provider"), "primary");
    let mut stream = resp.bytes_stream();
    let mut got = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        got.extend_from_slice(&chunk);
    }
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("word"), "{got}");
    assert!(
        !got.contains("[DONE]"),
        "a cut stream does not pretend to end: {got}"
    );
    assert_eq!((r.primary.calls(), r.backup.calls()), (1, 0));
}

#[tokio::test]
async fn the_breaker_opens_skips_and_closes_on_the_gateway_clock() {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let routing =
        "routing:\n  retries: 0\n  backoff_ms: 1\n  failures_to_trip: 3\n  cooldown_s: 30\n";
    let r = rig_named(("brk-primary", "brk-backup"), routing, clock.clone()).await;
    let (_, key) = r.h.key(json!({})).await;
    r.primary
        .set_failure(FailureMode::openai_error(503, "server_error", "down"));
    for i in 0..3 {
        let resp = r.h.chat(&key, &body("pair", &format!("{i}"))).await;
        assert_eq!(header(&resp, "x-tollgate-provider"), "brk-backup");
        assert_eq!(header(&resp, "x-tollgate-attempts"), "2");
    }
    assert_eq!(r.primary.calls(), 3);
    // Open: skipped while the backup is there.
    for i in 0..5 {
        let resp = r.h.chat(&key, &body("pair", &format!("open {i}"))).await;
        assert_eq!(header(&resp, "x-tollgate-provider"), "brk-backup");
        assert_eq!(header(&resp, "x-tollgate-attempts"), "1");
    }
    assert_eq!(r.primary.calls(), 3, "an open circuit is not called");
    let metrics =
        r.h.http
            .get(format!("{}/metrics", r.h.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    assert!(
        metrics.contains("tollgate_circuit_state{provider=\"brk-primary\"} 1"),
        "{metrics}"
    );
    // ...but a model with nothing else tries it anyway.
    let resp = r.h.chat(&key, &body("solo", "anyway")).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(r.primary.calls(), 4);

    // After the cooldown, one probe: it fails, the circuit opens again.
    clock.advance(chrono::Duration::seconds(31));
    let resp = r.h.chat(&key, &body("pair", "probe 1")).await;
    assert_eq!(
        header(&resp, "x-tollgate-attempts"),
        "2",
        "the probe, then the backup"
    );
    assert_eq!(r.primary.calls(), 5);
    let resp = r.h.chat(&key, &body("pair", "after probe 1")).await;
    assert_eq!(header(&resp, "x-tollgate-attempts"), "1");
    assert_eq!(r.primary.calls(), 5, "reopened for another cooldown");

    // The provider recovers; the next probe closes the circuit.
    r.primary.set_failure(FailureMode::None);
    clock.advance(chrono::Duration::seconds(31));
    let resp = r.h.chat(&key, &body("pair", "probe 2")).await;
    assert_eq!(header(&resp, "x-tollgate-provider"), "brk-primary");
    for i in 0..3 {
        let resp = r.h.chat(&key, &body("pair", &format!("closed {i}"))).await;
        assert_eq!(header(&resp, "x-tollgate-provider"), "brk-primary");
    }
    let metrics =
        r.h.http
            .get(format!("{}/metrics", r.h.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    assert!(
        metrics.contains("tollgate_circuit_state{provider=\"brk-primary\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tollgate_upstream_attempts_total{provider=\"brk-primary\",outcome=\"failed\"}"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "tollgate_upstream_attempts_total{provider=\"brk-backup\",outcome=\"success\"}"
        ),
        "{metrics}"
    );
}

/// The budget attack: a cap that fits exactly `N` worst cases, many more
/// concurrent requests against a flaky primary (429s and 5xx that are
/// retried, timeouts retried only on a reservation of their own) and a
/// backup. Spend never passes the
/// cap, each answered request is billed exactly what the provider
/// reported for it, once, and each timeout its one reservation.
#[tokio::test]
async fn one_reservation_billed_once_across_attempts_under_concurrency() {
    const N: u64 = 12;
    // 100 output tokens at $1000/M = $0.1 per worst case.
    let cap = N as f64 * 0.1;
    let tail = format!(
        "policies:\n  - name: cap\n    type: cost-limit\n    config: {{ limit_usd: {cap}, period: daily, action: reject }}\nteams:\n  - id: t1\n    policies: [cap]\n"
    );
    let r = rig_with(ROUTING, &tail, "", Arc::new(SystemClock)).await;
    let (_, key) = r.h.key(json!({})).await;
    r.primary
        .set_failure(throttle(15, 429, &[("retry-after-ms", "5")]));
    let h = Arc::new(r.h);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (h, key) = (h.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let fate = match i % 5 {
                0 => " [[mock:hang]]",
                1 => " [[mock:status=503]]",
                2 => " [[mock:status=500]]",
                _ => "",
            };
            let mut b = body("pair", &format!("request {i}{fate}"));
            b["max_tokens"] = json!(100);
            let resp = h.chat(&key, &b).await;
            let status = resp.status().as_u16();
            let attempts: u32 = header(&resp, "x-tollgate-attempts").parse().unwrap_or(0);
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            let tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0);
            (status, attempts, tokens)
        }));
    }
    let mut answered_tokens = 0;
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, _attempts, tokens) = t.await.unwrap();
        statuses.push(status);
        if status == 200 {
            answered_tokens += tokens;
        }
    }
    assert!(
        statuses.iter().all(|s| [200, 402, 502, 504].contains(s)),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&200) && statuses.contains(&402),
        "{statuses:?}"
    );
    let rows = h.ledger().await;
    let total: u64 = rows.iter().map(|r| r.cost.0).sum();
    assert!(
        total <= N * 100_000_000,
        "spent {total} of a cap of {}",
        N * 100_000_000
    );
    let answered: u64 = rows
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.cost.0)
        .sum();
    assert_eq!(
        answered,
        answered_tokens * 1_000_000,
        "billed what the provider reported"
    );
    for row in &rows {
        match row.status {
            // Each lost attempt is billed its reservation, and retried
            // only on one of its own.
            504 => assert!(
                row.cost.0 > 0
                    && row.cost.0 % 100_000_000 == 0
                    && row.cost.0 <= u64::from(row.attempts) * 100_000_000,
                "{row:?}"
            ),
            502 | 402 => assert_eq!(row.cost.0, 0, "{row:?}"),
            _ => {}
        }
        if row.status == 402 {
            assert_eq!(row.attempts, 0, "never sent: {row:?}");
        } else {
            assert!(row.attempts >= 1, "{row:?}");
        }
    }
    let (_, budgets) = h.admin(Method::GET, "/admin/budgets", None).await;
    let spent = (budgets["data"][0]["spent_usd"].as_f64().unwrap() * 1e9).round() as u64;
    assert_eq!(spent, total, "{budgets}");
    assert_eq!(budgets["data"][0]["reserved_usd"], 0.0, "{budgets}");
}

/// A provider's failures never count against the client's key: outages
/// that end in 502 after every retry leave no error streak behind.
#[tokio::test]
async fn the_loop_guard_never_counts_provider_failures_after_retries() {
    let tail = "policies:\n  - name: lg\n    type: loop-guard\n    config: { max_identical: 2, window_seconds: 60 }\ndefaults:\n  policies: [lg]\n";
    let r = rig_with(ROUTING, tail, "", Arc::new(SystemClock)).await;
    let (_, key) = r.h.key(json!({})).await;
    for (i, status) in [429, 503, 529, 500, 401, 429].into_iter().enumerate() {
        r.primary
            .set_failure(FailureMode::openai_error(status, "server_error", "no"));
        let resp = r.h.chat(&key, &body("solo", &format!("try {i}"))).await;
        assert_eq!(resp.status(), 502, "{status}");
        r.h.settled().await;
    }
    r.primary.set_failure(FailureMode::None);
    let resp = r.h.chat(&key, &body("solo", "back")).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
}

#[tokio::test]
async fn least_latency_sends_most_traffic_to_the_faster_target() {
    let slow = MockProvider::start(MockConfig {
        latency: Duration::from_millis(150),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let fast = MockProvider::start(MockConfig::default()).await.unwrap();
    let r = rig_on(
        slow,
        fast,
        ROUTING,
        "",
        "least_latency",
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = r.h.key(json!({})).await;
    let mut by = std::collections::HashMap::<String, u32>::new();
    for i in 0..20 {
        let resp = r.h.chat(&key, &body("pair", &format!("{i}"))).await;
        assert_eq!(resp.status(), 200);
        *by.entry(header(&resp, "x-tollgate-provider").to_owned())
            .or_default() += 1;
    }
    // Each is measured once at most twice before the estimate decides.
    assert!(by.get("backup").copied().unwrap_or(0) >= 17, "{by:?}");
}

/// Two replicas on one Redis: a circuit one of them opens is open on the
/// other within about a second (without the other calling the provider),
/// until the cooldown is over and a probe closes it.
#[tokio::test]
async fn replicas_on_redis_share_an_open_circuit() {
    let redis = crate::infra::PrivateRedis::start();
    let primary = MockProvider::start(MockConfig::default()).await.unwrap();
    let backup = MockProvider::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let routing =
        "routing:\n  retries: 0\n  backoff_ms: 1\n  failures_to_trip: 2\n  cooldown_s: 2\n";
    let providers = format!(
        "  - name: primary\n    kind: openai\n    base_url: {}\n    api_key: {UPSTREAM_KEY}\n  - name: backup\n    kind: openai\n    base_url: {}\n    api_key: {UPSTREAM_KEY}\n",
        primary.base_url(),
        backup.base_url()
    );
    let models = "  - name: pair\n    targets:\n      - provider: primary\n        model: gpt-4o-mini\n      - provider: backup\n        model: gpt-4o-mini\n";
    let replica = |name: &str| {
        let store = format!(
            "sqlite://{}",
            dir.path().join(format!("{name}.db")).display()
        );
        config_yaml(&primary.base_url(), &store, routing)
            .replace("counters: memory", &format!("counters: {}", redis.url()))
            .replacen("providers:\n", &format!("providers:\n{providers}"), 1)
            .replacen("models:\n", &format!("models:\n{models}"), 1)
    };
    let a = start_gateway(&replica("a"), Arc::new(SystemClock)).await;
    let b = start_gateway(&replica("b"), Arc::new(SystemClock)).await;
    let http = reqwest::Client::new();
    let key = |url: String| {
        let http = http.clone();
        async move {
            let created: Value = http
                .post(format!("{url}/admin/keys"))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"team": "t1"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            created["key"].as_str().unwrap().to_owned()
        }
    };
    let (url_a, url_b) = (format!("http://{}", a.addr), format!("http://{}", b.addr));
    let (key_a, key_b) = (key(url_a.clone()).await, key(url_b.clone()).await);
    let chat = |url: &str, key: &str, text: &str| {
        http.post(format!("{url}/v1/chat/completions"))
            .bearer_auth(key)
            .json(&body("pair", text))
            .send()
    };
    primary.set_failure(FailureMode::openai_error(503, "server_error", "down"));
    for i in 0..2 {
        let resp = chat(&url_a, &key_a, &format!("a{i}")).await.unwrap();
        assert_eq!(header(&resp, "x-tollgate-provider"), "backup");
    }
    assert_eq!(primary.calls(), 2, "replica a opened its circuit");
    // Replica b learns of it from Redis alone.
    let open_on_b = || {
        let rt = b.state.runtime.load();
        let health = rt.routes.health("primary").unwrap().clone();
        health.breaker.state(b.state.clock.now_ms()) == tollgate::routing::breaker::State::Open
    };
    let started = Instant::now();
    while !open_on_b() {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "replica b never learned of the open circuit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(1800),
        "{:?}",
        started.elapsed()
    );
    let resp = chat(&url_b, &key_b, "b0").await.unwrap();
    assert_eq!(header(&resp, "x-tollgate-provider"), "backup");
    assert_eq!(header(&resp, "x-tollgate-attempts"), "1");
    assert_eq!(
        primary.calls(),
        2,
        "replica b skipped the provider without calling it"
    );

    // The provider is back: after the cooldown (the shared key's TTL too)
    // one probe closes the circuit again.
    primary.set_failure(FailureMode::None);
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg("tg:circuit:primary")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "the open circuit is in Redis: {ttl}");
    let started = Instant::now();
    loop {
        let resp = chat(&url_a, &key_a, "probe").await.unwrap();
        if header(&resp, "x-tollgate-provider") == "primary" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no probe after the cooldown"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// A retry sends what the first attempt sent: the body is rebuilt from the
/// client's bytes (on both ingresses, streaming or not) with the same
/// output cap and usage request.
#[tokio::test]
async fn a_retry_sends_the_same_body_as_the_first_attempt() {
    let r = rig(ROUTING).await;
    let (_, key) = r.h.key(json!({"budget_usd": 10, "period": "daily"})).await;
    let chat = json!({"model": "solo", "stream": true, "stream_options": null,
        "messages": [{"role": "user", "content": "same"}]});
    let messages = json!({"model": "solo", "max_tokens": 50,
        "messages": [{"role": "user", "content": "same"}]});
    for (path, b) in [("/v1/chat/completions", chat), ("/v1/messages", messages)] {
        r.primary.reset_stats();
        r.primary.set_failure(throttle(2, 503, &[]));
        let resp = r.h.post(path, &key, &b).await;
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(header(&resp, "x-tollgate-attempts"), "3", "{path}");
        let _ = resp.text().await;
        let sent: Vec<Value> = r
            .primary
            .requests()
            .iter()
            .map(|q| q.json().unwrap())
            .collect();
        assert_eq!(sent.len(), 3, "{path}");
        assert!(sent.iter().all(|s| *s == sent[0]), "{path}: {sent:?}");
        assert_eq!(sent[0]["model"], "gpt-4o-mini");
        assert!(
            sent[0]["max_tokens"].as_u64().is_some(),
            "the cap goes out every time: {}",
            sent[0]
        );
        if path == "/v1/chat/completions" {
            assert_eq!(sent[0]["stream_options"]["include_usage"], true);
        }
    }
}
