//! The ways a careless client, a lenient provider or bad timing could spend
//! past a cap (issue 10's holes), one black-box test each: the gateway and
//! a mock provider over real HTTP, the mock steered per request with
//! `[[mock:…]]` directives where one request must misbehave.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use mock_provider::{FailureMode, MockConfig, UsageOverride};
use reqwest::Method;
use serde_json::{Value, json};
use tollgate::types::{ManualClock, SystemClock};

use crate::budget::{capped, total_cost};
use crate::common::*;

/// $1/M input, $2/M output: one input token costs 1,000 nano-USD, one
/// output token 2,000.
const O_SERIES: &str = "  - name: o3-mini\n    targets:\n      - provider: upstream\n        model: o3-mini\n    price: { input_per_mtok: 1.0, output_per_mtok: 2.0 }\n    max_output_tokens: 1000\n";

fn sent_bodies(h: &Harness) -> Vec<Value> {
    h.mock
        .requests()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .collect()
}

fn limit_nanos(usd: f64) -> u64 {
    (usd * 1e9).round() as u64
}

async fn until_402(h: &Harness, key: &str, body: &Value, bound: usize) -> usize {
    for n in 0..bound {
        let resp = h.chat(key, body).await;
        if resp.status() == 402 {
            return n;
        }
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        resp.bytes().await.unwrap();
    }
    panic!("the budget never ran out in {bound} requests");
}

/// Hole 1: a provider that generates its own default length unless told
/// otherwise (vLLM, Ollama) is told: every request of a budgeted key goes
/// out with the cap that was reserved.
#[tokio::test]
async fn hole1_every_budgeted_request_carries_the_reserved_cap() {
    let h = Harness::start_with_models(
        MockConfig {
            // Far more than the 1,000 tokens the model's config reserves.
            completion_tokens: 5000,
            ..MockConfig::default()
        },
        "",
        O_SERIES,
        &capped(0.01, ""),
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let body = chat_body("Write as much as you like");
    let admitted = until_402(&h, &key, &body, 50).await;
    assert!(admitted >= 3, "{admitted}");
    let (spent, _) = total_cost(&h).await;
    assert!(spent <= limit_nanos(0.01), "overshot: {spent}");
    for b in sent_bodies(&h) {
        assert_eq!(b["max_tokens"], 1000, "{b}");
    }
    // o-series models refuse `max_tokens`: they get `max_completion_tokens`.
    // A key budget set over the API enforces a cap as a policy does.
    h.admin(Method::POST, "/admin/teams", Some(json!({"id": "t2"})))
        .await;
    let (_, key) = h
        .key(json!({"team": "t2", "budget_usd": 1.0, "period": "daily"}))
        .await;
    let body = json!({"model": "o3-mini", "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(h.chat(&key, &body).await.status(), 200);
    let sent = h.mock.last_request().unwrap().json().unwrap();
    assert_eq!(sent["max_completion_tokens"], 1000, "{sent}");
    assert!(sent.get("max_tokens").is_none(), "{sent}");
}

/// Hole 1, the other side: a chat field a provider may ignore
/// (`max_output_tokens`) never lowers the reservation.
#[tokio::test]
async fn hole1_fields_a_provider_may_ignore_do_not_lower_the_reservation() {
    let h = Harness::start_with(
        MockConfig {
            completion_tokens: 5000,
            ..MockConfig::default()
        },
        &capped(0.01, ""),
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let mut body = chat_body("Write");
    body["max_output_tokens"] = json!(1);
    until_402(&h, &key, &body, 50).await;
    let (spent, _) = total_cost(&h).await;
    assert!(spent <= limit_nanos(0.01), "overshot: {spent}");
    assert!(sent_bodies(&h).iter().all(|b| b["max_tokens"] == 1000));
}

/// Hole 2: multipliers given as strings or floats are refused, never read
/// as 1; a prompt list reserves one completion per prompt.
#[tokio::test]
async fn hole2_every_multiplier_is_validated_and_reserved() {
    let h = Harness::start(&capped(0.0005, "")).await;
    let (_, key) = h.key(json!({})).await;
    for (field, value) in [
        ("n", json!("3")),
        ("n", json!(2.0)),
        ("best_of", json!("4")),
        ("max_tokens", json!("100")),
        ("max_completion_tokens", json!(10.5)),
    ] {
        let mut body = chat_body("hi");
        body[field] = value.clone();
        let (status, code, err) = error_code(h.chat(&key, &body).await).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_request"),
            "{field}={value}"
        );
        assert_eq!(err["error"]["param"], field);
    }
    assert_eq!(h.mock.calls(), 0, "bad input is never forwarded");
    // $0.0005 fits a 100-token completion ($0.0002 and a little input)
    // twice, but not three prompts at once.
    let one = json!({"model": "gpt-4o-mini", "prompt": "Count", "max_tokens": 100});
    let three =
        json!({"model": "gpt-4o-mini", "prompt": ["Count", "to", "three"], "max_tokens": 100});
    let resp = h.post("/v1/completions", &key, &three).await;
    let (status, code, _) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (402, "budget_exceeded"));
    assert_eq!(h.post("/v1/completions", &key, &one).await.status(), 200);
    let mut n3 = chat_body("hi");
    n3["n"] = json!(3);
    n3["max_tokens"] = json!(100);
    assert_eq!(h.chat(&key, &n3).await.status(), 402);
    assert!(
        h.ledger()
            .await
            .iter()
            .all(|r| r.cost.0 <= limit_nanos(0.0005))
    );
}

/// Hole 3: `"stream_options": null` would turn the usage chunk off, and
/// hidden reasoning tokens would never be billed.
#[tokio::test]
async fn hole3_a_null_stream_options_still_gets_the_usage_billed() {
    let h = Harness::start_with(
        MockConfig {
            // The text is 16 words; the usage counts 500 (reasoning).
            usage: Some(UsageOverride {
                prompt_tokens: 10,
                completion_tokens: 500,
            }),
            ..MockConfig::default()
        },
        &capped(1.0, ""),
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    for options in [
        json!(null),
        json!("yes"),
        json!({"include_usage": false, "x": 1}),
    ] {
        let mut body = chat_body("think");
        body["stream"] = json!(true);
        body["stream_options"] = options.clone();
        let resp = h.chat(&key, &body).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(
            !text.contains("\"usage\":{"),
            "the client did not ask for usage: {text}"
        );
        let sent = h.mock.last_request().unwrap().json().unwrap();
        assert_eq!(
            sent["stream_options"]["include_usage"], true,
            "{options}: {sent}"
        );
        if options.is_object() {
            assert_eq!(sent["stream_options"]["x"], 1, "other fields are kept");
        }
    }
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.completion_tokens == 500), "{rows:?}");
}

/// Hole 4: a client that hangs up on a non-streaming request does not stop
/// the provider generating; the gateway waits for the answer and bills it.
#[tokio::test]
async fn hole4_an_abandoned_request_is_billed_what_the_provider_generated() {
    let h = Harness::start_with(
        MockConfig {
            latency: Duration::from_millis(600),
            completion_tokens: 50,
            ..MockConfig::default()
        },
        &capped(1.0, ""),
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let gone = impatient
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(&key)
        .json(&chat_body("Write fifty words"))
        .send()
        .await;
    assert!(gone.is_err(), "the client gave up first");
    let mut rows = Vec::new();
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        rows = h.ledger().await;
        if !rows.is_empty() {
            break;
        }
    }
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(
        (row.status, row.error_code.as_deref()),
        (499, Some("client_closed"))
    );
    assert_eq!(row.completion_tokens, 50, "the whole answer is billed");
    assert!(row.cost.0 >= 100_000, "{row:?}");
}

/// Hole 4: a provider that times out may have generated the answer it never
/// sent; the request is billed its reservation. One that refuses (503) or
/// cannot be reached is billed nothing.
#[tokio::test]
async fn hole4_a_timeout_bills_the_reservation_and_a_refusal_bills_nothing() {
    let h = Harness::start(&capped(1.0, "")).await;
    let (_, key) = h.key(json!({})).await;
    h.mock.set_failure(FailureMode::Hang);
    let mut body = chat_body("slow");
    body["max_tokens"] = json!(300);
    let (status, code, _) = error_code(h.chat(&key, &body).await).await;
    assert_eq!((status, code.as_str()), (504, "upstream_timeout"));
    h.mock
        .set_failure(FailureMode::openai_error(503, "server_error", "overloaded"));
    let (status, _, _) = error_code(h.chat(&key, &body).await).await;
    assert_eq!(status, 502);
    let rows = h.ledger().await;
    let timed_out = rows.iter().find(|r| r.status == 504).unwrap();
    // Retried while the cap had room, each timeout on a reservation of
    // its own and billed it.
    let attempts = u64::from(timed_out.attempts);
    assert!(attempts >= 1, "{timed_out:?}");
    assert_eq!(timed_out.completion_tokens, 300 * attempts, "{timed_out:?}");
    assert!(timed_out.cost.0 >= 600_000 * attempts, "{timed_out:?}");
    let refused = rows.iter().find(|r| r.status == 502).unwrap();
    assert_eq!(refused.cost.0, 0, "{refused:?}");
    let budgets = h.admin(Method::GET, "/admin/budgets", None).await.1;
    assert_eq!(
        (budgets["data"][0]["spent_usd"].as_f64().unwrap() * 1e9).round() as u64,
        timed_out.cost.0
    );
}

/// Hole 7: with several targets, the input is counted by the tokenizer
/// that counts most (a fallback to Claude counts more than o200k).
#[tokio::test]
async fn hole7_the_reservation_covers_the_hungriest_target() {
    let providers =
        "  - name: claude-up\n    kind: anthropic\n    base_url: {mock}\n    api_key: k\n";
    let models = "  - name: multi\n    targets:\n      - provider: upstream\n        model: gpt-4o\n      - provider: claude-up\n        model: claude-3-5-haiku-latest\n    price: { input_per_mtok: 1.0, output_per_mtok: 2.0 }\n    max_output_tokens: 10\n";
    let h = Harness::start_with_models(
        MockConfig::default(),
        providers,
        models,
        &capped(0.001, ""),
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    // ~400 o200k tokens ($0.0004), but 2,400 bytes: Claude's tokenizer is
    // bounded by bytes, over the $0.001 cap.
    let body = json!({"model": "multi", "messages": [{"role": "user", "content": "hello world ".repeat(200)}]});
    let (status, code, _) = error_code(h.chat(&key, &body).await).await;
    assert_eq!((status, code.as_str()), (402, "budget_exceeded"));
    assert_eq!(h.mock.calls(), 0);
}

/// Hole 8: a clamp uses the field the model family takes, never shares
/// fewer than one token per choice, and is not vetoed by a reject-mode key
/// budget that has room for the clamped request.
#[tokio::test]
async fn hole8_a_clamp_fits_every_budget_or_rejects() {
    let h = Harness::start_with_models(
        MockConfig {
            completion_tokens: 1000,
            ..MockConfig::default()
        },
        "",
        O_SERIES,
        &capped(0.00003, ", on_insufficient: clamp"),
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    // "hi" is counted as 17 input tokens ($0.000017): $0.000013 is left,
    // 6 output tokens. Seven choices cannot have one each.
    let mut body = chat_body("hi");
    body["n"] = json!(7);
    let (status, code, err) = error_code(h.chat(&key, &body).await).await;
    assert_eq!((status, code.as_str()), (402, "budget_exceeded"), "{err}");
    assert_eq!(h.mock.calls(), 0);
    body["n"] = json!(3);
    assert_eq!(h.chat(&key, &body).await.status(), 200);
    let sent = h.mock.last_request().unwrap().json().unwrap();
    assert_eq!(
        sent["max_tokens"], 2,
        "six tokens shared by three choices: {sent}"
    );
    let (spent, _) = total_cost(&h).await;
    assert!(spent <= limit_nanos(0.00003), "{spent}");

    // o-series under a clamp: `max_completion_tokens`, never `max_tokens`.
    let h = Harness::start_with_models(
        MockConfig::default(),
        "",
        O_SERIES,
        &capped(0.001, ", on_insufficient: clamp"),
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "o3-mini", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(h.chat(&key, &body).await.status(), 200);
    let sent = h.mock.last_request().unwrap().json().unwrap();
    assert!(sent.get("max_tokens").is_none(), "{sent}");
    assert!(
        sent["max_completion_tokens"].as_u64().unwrap() < 1000,
        "{sent}"
    );

    // A team clamp budget with room, a key reject budget with room for the
    // clamped request but not the worst case: the request runs, clamped.
    let h = Harness::start_with(
        MockConfig {
            completion_tokens: 1000,
            ..MockConfig::default()
        },
        &capped(0.0012, ", on_insufficient: clamp"),
        Arc::new(SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({"budget_usd": 0.001, "period": "daily"})).await;
    let resp = h.chat(&key, &chat_body("Write a lot")).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let sent = h.mock.last_request().unwrap().json().unwrap();
    let cap = sent["max_tokens"].as_u64().unwrap();
    assert!(
        cap < 500,
        "clamped to what the key's $0.001 pays for: {cap}"
    );
    let (spent, _) = total_cost(&h).await;
    assert!(spent <= limit_nanos(0.001), "{spent}");
}

const HOLE10_TAIL: &str = "policies:\n  - name: cap\n    type: cost-limit\n    config: { limit_usd: 0.01, period: daily, action: reject }\n  - name: watch\n    type: cost-limit\n    mode: shadow\n    config: { limit_usd: 0.01, period: daily, action: reject }\n  - name: warn\n    type: cost-limit\n    config: { limit_usd: 0.01, period: daily, action: alert }\nteams:\n  - id: t1\n    policies: [cap]\n  - id: t2\n    policies: [watch, warn]\n";

/// Hole 10: absurd numbers from the client or the provider neither
/// overflow the counters nor bill past the reservation.
#[tokio::test]
async fn hole10_absurd_numbers_are_bounded() {
    let h = Harness::start(HOLE10_TAIL).await;
    absurd_numbers_are_bounded(&h).await;
}

/// Hole 10 on Redis counters, where the overflow was: the Lua scripts'
/// `%d` in admit, and `settle.lua` aborting between releasing the
/// reservation and adding the spend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole10_absurd_numbers_are_bounded_on_redis() {
    let redis = crate::infra::PrivateRedis::start();
    let mock = mock_provider::MockProvider::start(MockConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let yaml = config_yaml(&mock.base_url(), &store, HOLE10_TAIL)
        .replace("counters: memory", &format!("counters: {}", redis.url()));
    let gw = start_gateway(&yaml, Arc::new(SystemClock)).await;
    let h = Harness {
        url: format!("http://{}", gw.addr),
        gw: Some(gw),
        mock,
        http: reqwest::Client::new(),
        dir,
    };
    absurd_numbers_are_bounded(&h).await;
}

async fn absurd_numbers_are_bounded(h: &Harness) {
    let (_, key) = h.key(json!({})).await;
    let (_, watched) = h.key(json!({"team": "t2"})).await;
    // A provider reporting 10^15 output tokens for a capped request.
    let body = chat_body("hi [[mock:usage=5,1000000000000000]]");
    assert_eq!(h.chat(&key, &body).await.status(), 200);
    // 10^16 tokens asked for on shadow and alert budgets only.
    let mut huge = chat_body("hi");
    huge["max_tokens"] = json!(10_000_000_000_000_000u64);
    assert_eq!(h.chat(&watched, &huge).await.status(), 200);
    h.settled().await;
    let (status, budgets) = h.admin(Method::GET, "/admin/budgets", None).await;
    assert_eq!(status, 200, "{budgets}");
    for b in budgets["data"].as_array().unwrap() {
        assert!(b["reserved_usd"].as_f64().unwrap() >= 0.0, "{b}");
    }
    let rows = h.ledger().await;
    let spent: u64 = rows
        .iter()
        .filter(|r| r.team.as_str() == "t1")
        .map(|r| r.cost.0)
        .sum();
    assert!(spent <= limit_nanos(0.01), "billed past the cap: {spent}");
    assert!(spent > 0);
    // The counter took the spend the ledger shows: the absurd usage did not
    // make settling stop halfway.
    let cap = budgets["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["policy"] == "cap")
        .unwrap_or_else(|| panic!("no `cap` budget: {budgets}"));
    let counted = (cap["spent_usd"].as_f64().unwrap() * 1e9).round() as u64;
    assert_eq!(counted, spent, "counter and ledger agree: {cap}");
}

/// Hole 11: a request is charged and recorded in the period it was
/// admitted in, even when it ends in the next.
#[tokio::test]
async fn hole11_a_request_crossing_midnight_lands_in_the_day_it_was_admitted() {
    let clock = Arc::new(ManualClock::new(
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 27, 23, 59, 59)
            .unwrap(),
    ));
    let h = Harness::start_with(
        MockConfig {
            latency: Duration::from_millis(300),
            ..MockConfig::default()
        },
        &capped(1.0, ""),
        clock.clone(),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let late = chat_body("late");
    let request = h.chat(&key, &late);
    let advance = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        clock.advance(chrono::Duration::seconds(5));
    };
    let (resp, ()) = tokio::join!(request, advance);
    assert_eq!(resp.status(), 200);
    let rows = h.ledger().await;
    let midnight = chrono::Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap();
    assert!(rows[0].ts < midnight, "row dated {}", rows[0].ts);
    let (_, budgets) = h.admin(Method::GET, "/admin/budgets", None).await;
    assert_eq!(
        budgets["data"][0]["spent_usd"], 0.0,
        "today's budget is untouched: {budgets}"
    );
}
