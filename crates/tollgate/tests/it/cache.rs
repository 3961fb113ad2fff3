//! The response cache (SPEC §9) end to end against the mock provider: hits
//! never reach it and cost nothing, answers are scoped to the team, served
//! streamed or not whatever form they were stored from, only complete 200
//! answers are stored, `Cache-Control` skips it, rate limits and the loop
//! guard still count hits, memory stays bounded, and replicas on one Redis
//! share hits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mock_provider::{MockConfig, MockProvider};
use serde_json::{Value, json};
use tollgate::types::SystemClock;

use crate::common::*;
use crate::infra::{PgSchema, PrivateRedis};

const ON: &str = "cache: { enabled: true }\n";

fn cache_header(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("x-tollgate-cache")
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn chat(h: &Harness, key: &str, body: &Value) -> (u16, Option<String>, Value) {
    let resp = h.chat(key, body).await;
    let status = resp.status().as_u16();
    let cache = cache_header(&resp);
    (status, cache, resp.json().await.unwrap_or(Value::Null))
}

/// The `data:` payloads of an SSE body, in order.
async fn sse(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: ").map(str::to_owned))
        .collect()
}

/// The text a chat stream delivered, and its usage chunk if any.
fn streamed_text(events: &[String]) -> (String, Option<Value>) {
    let mut text = String::new();
    let mut usage = None;
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk", "{e}");
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            text.push_str(c);
        }
        if v["usage"].is_object() {
            usage = Some(v["usage"].clone());
        }
    }
    (text, usage)
}

#[tokio::test]
async fn a_hit_never_reaches_the_provider_costs_nothing_and_is_booked_as_saved() {
    let h = Harness::start(ON).await;
    let (_, key) = h.key(json!({})).await;
    let body = chat_body("What is tollgate?");
    let first = h.chat(&key, &body).await;
    assert_eq!(first.status(), 200);
    assert_eq!(cache_header(&first).as_deref(), Some("miss"));
    let first_cost: f64 = first.headers()["x-tollgate-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first_cost > 0.0);
    let first: Value = first.json().await.unwrap();
    assert_eq!(h.mock.calls(), 1);

    let second = h.chat(&key, &body).await;
    assert_eq!(second.status(), 200);
    assert_eq!(cache_header(&second).as_deref(), Some("hit"));
    assert_eq!(second.headers()["x-tollgate-cost-usd"], "0");
    let second: Value = second.json().await.unwrap();
    assert_eq!(second, first, "the stored answer, as it came");
    assert_eq!(h.mock.calls(), 1, "a hit does not reach the provider");

    let rows = h.ledger().await;
    assert_eq!(rows.len(), 2);
    let (hit, miss) = (&rows[0], &rows[1]);
    assert_eq!(miss.cache.as_deref(), Some("miss"));
    assert_eq!(hit.cache.as_deref(), Some("hit"));
    assert_eq!(
        (hit.cost.0, hit.prompt_tokens, hit.completion_tokens),
        (0, 0, 0)
    );
    assert_eq!(hit.cache_saved, miss.cost);
    assert_eq!(hit.status, 200);

    let (_, requests) = h.admin(reqwest::Method::GET, "/admin/requests", None).await;
    assert_eq!(requests["data"][0]["cache"], "hit", "{requests}");
    assert_eq!(requests["data"][1]["cache"], "miss");
    let (_, spend) = h
        .admin(reqwest::Method::GET, "/admin/spend?group_by=team", None)
        .await;
    let row = &spend["data"][0];
    assert_eq!(row["requests"], 2, "{spend}");
    assert_eq!(row["cache_hits"], 1);
    assert_eq!(row["saved_usd"].as_f64().unwrap(), miss.cost.as_usd());
    assert_eq!(row["cost_usd"].as_f64().unwrap(), miss.cost.as_usd());
}

#[tokio::test]
async fn key_order_and_whitespace_do_not_matter_but_every_other_difference_does() {
    let h = Harness::start(ON).await;
    let (_, key) = h.key(json!({})).await;
    let send = |raw: &'static str| {
        h.http
            .post(format!("{}/v1/chat/completions", h.url))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(raw)
            .send()
    };
    let a = send(
        r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await
    .unwrap();
    assert_eq!(cache_header(&a).as_deref(), Some("miss"));
    let b = send("{\n  \"messages\" : [ { \"content\": \"hi\", \"role\": \"user\" } ],\n  \"temperature\": 0,  \"model\": \"gpt-4o-mini\"\n}").await.unwrap();
    assert_eq!(cache_header(&b).as_deref(), Some("hit"));
    let c = send(
        r#"{"model":"gpt-4o-mini","temperature":1,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await
    .unwrap();
    assert_eq!(cache_header(&c).as_deref(), Some("miss"));
    let d = send(
        r#"{"model":"other-model","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await
    .unwrap();
    assert_eq!(cache_header(&d).as_deref(), Some("miss"));
    assert_eq!(h.mock.calls(), 3);
}

#[tokio::test]
async fn one_team_never_sees_another_teams_answer_while_keys_of_a_team_share() {
    let h = Harness::start(&format!("{ON}teams:\n  - id: t1\n  - id: t2\n")).await;
    let (_, a1) = h.key(json!({"team": "t1"})).await;
    let (_, a2) = h.key(json!({"team": "t1"})).await;
    let (_, b) = h.key(json!({"team": "t2"})).await;
    let body = chat_body("shared question");
    assert_eq!(chat(&h, &a1, &body).await.1.as_deref(), Some("miss"));
    assert_eq!(chat(&h, &b, &body).await.1.as_deref(), Some("miss"));
    assert_eq!(h.mock.calls(), 2);
    assert_eq!(chat(&h, &a2, &body).await.1.as_deref(), Some("hit"));
    assert_eq!(chat(&h, &b, &body).await.1.as_deref(), Some("hit"));
    assert_eq!(h.mock.calls(), 2);
}

#[tokio::test]
async fn a_stored_answer_is_served_streamed_and_a_streamed_one_whole() {
    let h = Harness::start(ON).await;
    let (_, key) = h.key(json!({})).await;

    // Stored whole, served as a stream, with the usage chunk when asked.
    let body = chat_body("stored whole");
    let (_, _, whole) = chat(&h, &key, &body).await;
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let resp = h.chat(&key, &streamed).await;
    assert_eq!(cache_header(&resp).as_deref(), Some("hit"));
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let (text, usage) = streamed_text(&events);
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(usage.unwrap(), whole["usage"]);
    let finish: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter(|v| !v["choices"][0]["finish_reason"].is_null() && v["choices"][0].is_object())
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(
        finish[0]["choices"][0]["finish_reason"],
        whole["choices"][0]["finish_reason"]
    );
    // Not asked: no usage chunk.
    streamed.as_object_mut().unwrap().remove("stream_options");
    let resp = h.chat(&key, &streamed).await;
    assert_eq!(cache_header(&resp).as_deref(), Some("hit"));
    let events = sse(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(streamed_text(&events).1.is_none(), "{events:?}");
    assert_eq!(h.mock.calls(), 1);

    // Stored from a completed stream, served whole.
    let mut body = chat_body("stored streamed");
    body["stream"] = json!(true);
    let resp = h.chat(&key, &body).await;
    assert_eq!(cache_header(&resp).as_deref(), Some("miss"));
    let events = sse(resp).await;
    let (text, _) = streamed_text(&events);
    h.settled().await;
    body.as_object_mut().unwrap().remove("stream");
    let (status, cache, whole) = chat(&h, &key, &body).await;
    assert_eq!((status, cache.as_deref()), (200, Some("hit")));
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(
        whole["choices"][0]["message"]["content"].as_str().unwrap(),
        text
    );
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    assert!(
        whole["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{whole}"
    );
    assert_eq!(h.mock.calls(), 2);
}

#[tokio::test]
async fn completions_and_embeddings_are_cached_too() {
    let h = Harness::start(ON).await;
    let (_, key) = h.key(json!({})).await;
    let completion = json!({"model": "gpt-4o-mini", "prompt": "Once upon", "max_tokens": 20});
    let first = h.post("/v1/completions", &key, &completion).await;
    assert_eq!(cache_header(&first).as_deref(), Some("miss"));
    let first: Value = first.json().await.unwrap();
    let mut streamed = completion.clone();
    streamed["stream"] = json!(true);
    let resp = h.post("/v1/completions", &key, &streamed).await;
    assert_eq!(cache_header(&resp).as_deref(), Some("hit"));
    let events = sse(resp).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .inspect(|v| assert_eq!(v["object"], "text_completion"))
        .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, first["choices"][0]["text"].as_str().unwrap());

    let embed = json!({"model": "embed", "input": "vector me"});
    let a = h.post("/v1/embeddings", &key, &embed).await;
    assert_eq!(cache_header(&a).as_deref(), Some("miss"));
    let a: Value = a.json().await.unwrap();
    let b = h.post("/v1/embeddings", &key, &embed).await;
    assert_eq!(cache_header(&b).as_deref(), Some("hit"));
    assert_eq!(b.json::<Value>().await.unwrap(), a);
    assert_eq!(h.mock.calls(), 2);
}

/// The agent ingresses may be answered natively (in their own format, by
/// an `anthropic` or `openai` target), which a stored canonical answer
/// would not reproduce: they are not cached, and say nothing about it.
#[tokio::test]
async fn the_agent_ingresses_are_not_cached() {
    let h = Harness::start(ON).await;
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]});
    for _ in 0..2 {
        let resp = h.post("/v1/messages", &key, &body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(cache_header(&resp), None);
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["type"], "message", "{answer}");
    }
    assert_eq!(h.mock.calls(), 2, "both reached the provider");
}

#[tokio::test]
async fn cache_control_no_cache_and_no_store_skip_it_and_a_team_may_opt_out() {
    let h = Harness::start(&format!(
        "{ON}teams:\n  - id: t1\n  - id: private\n    cache: false\n"
    ))
    .await;
    let (_, key) = h.key(json!({})).await;
    let send = |body: Value, cc: &'static str| {
        h.http
            .post(format!("{}/v1/chat/completions", h.url))
            .bearer_auth(&key)
            .header("cache-control", cc)
            .json(&body)
            .send()
    };
    // no-store: not looked up, not stored.
    let body = chat_body("secret");
    let r = send(body.clone(), "no-store").await.unwrap();
    assert_eq!(cache_header(&r).as_deref(), Some("skip"));
    assert_eq!(chat(&h, &key, &body).await.1.as_deref(), Some("miss"));
    assert_eq!(h.mock.calls(), 2);
    // no-cache: not looked up (the provider answers again), but refreshes the entry.
    let r = send(body.clone(), "max-age=0, no-cache").await.unwrap();
    assert_eq!(cache_header(&r).as_deref(), Some("skip"));
    assert_eq!(h.mock.calls(), 3);
    let fresh = chat_body("fresh");
    send(fresh.clone(), "no-cache").await.unwrap();
    assert_eq!(chat(&h, &key, &fresh).await.1.as_deref(), Some("hit"));
    assert_eq!(h.mock.calls(), 4);

    let (_, private) = h.key(json!({"team": "private"})).await;
    for _ in 0..2 {
        assert_eq!(chat(&h, &private, &body).await.1.as_deref(), Some("skip"));
    }
    assert_eq!(h.mock.calls(), 6);
}

#[tokio::test]
async fn without_the_cache_section_nothing_is_cached_and_no_header_is_sent() {
    let h = Harness::start("").await;
    let (_, key) = h.key(json!({})).await;
    for _ in 0..2 {
        let (status, cache, _) = chat(&h, &key, &chat_body("same")).await;
        assert_eq!((status, cache), (200, None));
    }
    assert_eq!(h.mock.calls(), 2);
    assert!(h.ledger().await.iter().all(|r| r.cache.is_none()));
}

#[tokio::test]
async fn cut_failed_abandoned_and_refused_answers_are_never_stored() {
    // No retries: the provider calls counted below are one per request.
    let h = Harness::start(&format!("{ON}routing: {{ retries: 0 }}\n")).await;
    let (_, key) = h.key(json!({})).await;
    // A stream cut after two chunks.
    let mut cut = chat_body("cut me [[mock:cut=2]]");
    cut["stream"] = json!(true);
    let events = sse(h.chat(&key, &cut).await).await;
    assert_ne!(events.last().map(String::as_str), Some("[DONE]"));
    h.settled().await;
    let resp = h.chat(&key, &cut).await;
    assert_eq!(cache_header(&resp).as_deref(), Some("miss"));
    sse(resp).await;
    assert_eq!(h.mock.calls(), 2);

    // A provider's 5xx and its 4xx.
    for (directive, status) in [("[[mock:status=500]]", 502), ("[[mock:status=400]]", 400)] {
        let body = chat_body(&format!("fail {directive}"));
        for _ in 0..2 {
            let (got, cache, _) = chat(&h, &key, &body).await;
            assert_eq!((got, cache.as_deref()), (status, Some("miss")));
        }
    }
    assert_eq!(h.mock.calls(), 6);

    // A stream its client abandoned halfway.
    h.mock.set_chunk_delay(Duration::from_millis(30));
    let mut left = chat_body("abandoned");
    left["stream"] = json!(true);
    let resp = h.chat(&key, &left).await;
    let mut s = resp.bytes_stream();
    s.next().await.unwrap().unwrap();
    drop(s);
    for _ in 0..200 {
        if h.ledger().await.iter().any(|r| r.status == 499) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.mock.set_chunk_delay(Duration::ZERO);
    let (_, cache, _) = chat(&h, &key, &{
        let mut b = left.clone();
        b.as_object_mut().unwrap().remove("stream");
        b
    })
    .await;
    assert_eq!(cache.as_deref(), Some("miss"));
    assert_eq!(h.mock.calls(), 8);
}

#[tokio::test]
async fn hits_spend_no_budget_a_key_whose_budget_fits_one_request_gets_fifty_hits() {
    let h = Harness::start(ON).await;
    // max_tokens 100 at $2/M out plus a short prompt at $1/M in: a worst case
    // of about $0.00022; the usage directive makes the call bill all of it.
    let (_, key) = h
        .key(json!({"budget_usd": 0.0003, "period": "total"}))
        .await;
    let mut body = chat_body("expensive [[mock:usage=100000,100000]]");
    body["max_tokens"] = json!(100);
    let (status, cache, _) = chat(&h, &key, &body).await;
    assert_eq!((status, cache.as_deref()), (200, Some("miss")));
    h.settled().await;
    // The budget is spent: another question is refused...
    let mut other = chat_body("another");
    other["max_tokens"] = json!(100);
    let (code, _, _) = error_code(h.chat(&key, &other).await).await;
    assert_eq!(code, 402);
    // ...and the cached one is answered, fifty times, for nothing, half of
    // them as streams that carry the stored call's (huge) usage.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    for _ in 0..25 {
        let resp = h.chat(&key, &body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(cache_header(&resp).as_deref(), Some("hit"));
        assert_eq!(resp.headers()["x-tollgate-cost-usd"], "0");
        let resp = h.chat(&key, &streamed).await;
        assert_eq!(
            (resp.status().as_u16(), cache_header(&resp).as_deref()),
            (200, Some("hit"))
        );
        let events = sse(resp).await;
        assert_eq!(
            streamed_text(&events).1.unwrap()["completion_tokens"],
            100_000
        );
    }
    assert_eq!(h.mock.calls(), 1);
    let rows = h.ledger().await;
    let billed: u64 = rows.iter().map(|r| r.cost.0).sum();
    assert!(billed <= 300_000, "within the budget: {billed}");
    let hits: Vec<_> = rows
        .iter()
        .filter(|r| r.cache.as_deref() == Some("hit"))
        .collect();
    assert_eq!(hits.len(), 50);
    assert!(
        hits.iter()
            .all(|r| r.cost.0 == 0 && r.prompt_tokens + r.completion_tokens == 0)
    );
    let (_, budgets) = h.admin(reqwest::Method::GET, "/admin/budgets", None).await;
    let b = budgets["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["scope"] == "key")
        .unwrap()
        .clone();
    assert_eq!(b["spent_usd"].as_f64().unwrap(), billed as f64 / 1e9, "{b}");
    assert_eq!(b["reserved_usd"].as_f64().unwrap(), 0.0, "{b}");
}

#[tokio::test]
async fn hits_still_count_for_rate_limits_and_the_loop_guard() {
    let tail = format!(
        "{ON}policies:\n  - name: rpm\n    type: rate-limit\n    config: {{ requests_per_minute: 3 }}\n  - name: loops\n    type: loop-guard\n    config: {{ max_identical: 3, window_seconds: 60 }}\nteams:\n  - id: t1\n    policies: [rpm]\n  - id: t2\n    policies: [loops]\n"
    );
    let h = Harness::start(&tail).await;
    let (_, limited) = h.key(json!({"team": "t1"})).await;
    let body = chat_body("rate me");
    for expected in ["miss", "hit", "hit"] {
        let (status, cache, _) = chat(&h, &limited, &body).await;
        assert_eq!((status, cache.as_deref()), (200, Some(expected)));
    }
    let (status, code, _) = error_code(h.chat(&limited, &body).await).await;
    assert_eq!((status, code.as_str()), (429, "rate_limit_exceeded"));

    let (_, looping) = h.key(json!({"team": "t2"})).await;
    let body = chat_body("loop me");
    for _ in 0..3 {
        assert_eq!(chat(&h, &looping, &body).await.0, 200);
    }
    let (status, code, _) = error_code(h.chat(&looping, &body).await).await;
    assert_eq!((status, code.as_str()), (429, "loop_detected"));
    assert_eq!(h.mock.calls(), 2);
}

#[tokio::test]
async fn memory_stays_within_max_mib_under_a_load_of_distinct_bodies() {
    let h = Harness::start("cache: { enabled: true, max_mib: 1 }\n").await;
    // About 16 KiB per answer: 400 of them are six times the bound.
    h.mock.set_completion_tokens(4000);
    let (_, key) = h.key(json!({})).await;
    let sizes = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (http, url, key) = (h.http.clone(), h.url.clone(), key.clone());
        let state = h.gw().state.clone();
        let sizes = sizes.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let body = chat_body(&format!("distinct {worker}-{i}"));
                let resp = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 200);
                resp.bytes().await.unwrap();
                if i % 10 == 0 {
                    sizes.lock().push(state.cache.memory_size().unwrap());
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let end = h.gw().state.cache.memory_size().unwrap();
    let max = *sizes.lock().iter().max().unwrap();
    assert!(max.max(end) <= 1024 * 1024, "{max} / {end} bytes held");
    assert!(end > 256 * 1024, "the cache is in use: {end}");
    assert_eq!(h.mock.calls(), 400);
}

#[tokio::test]
async fn an_answer_larger_than_an_entry_may_be_is_not_stored() {
    let h = Harness::start("cache: { enabled: true, max_mib: 1 }\n").await;
    // Entries are at most an eighth of the bound (128 KiB); this one is ~200 KiB.
    h.mock.set_completion_tokens(50_000);
    let (_, key) = h.key(json!({"budget_usd": 100, "period": "daily"})).await;
    let mut body = chat_body("huge");
    body["max_tokens"] = json!(60_000);
    for _ in 0..2 {
        let (status, cache, _) = chat(&h, &key, &body).await;
        assert_eq!((status, cache.as_deref()), (200, Some("miss")));
    }
    assert_eq!(h.mock.calls(), 2);
}

#[tokio::test]
async fn hostile_delivery_fields_still_hit_and_ill_typed_ones_are_refused_before_the_cache() {
    let h = Harness::start(ON).await;
    let (_, key) = h.key(json!({})).await;
    let body = chat_body("delivery");
    chat(&h, &key, &body).await;
    // `stream_options` of any shape does not split the key.
    for opts in [
        json!(null),
        json!("yes"),
        json!({"include_usage": "maybe"}),
        json!([1, 2]),
    ] {
        let mut b = body.clone();
        b["stream"] = json!(true);
        b["stream_options"] = opts;
        let resp = h.chat(&key, &b).await;
        assert_eq!(cache_header(&resp).as_deref(), Some("hit"));
        assert_eq!(sse(resp).await.last().unwrap(), "[DONE]");
    }
    // An ill-typed `stream` or `n` is a 400, never served from the cache.
    for (field, v) in [("stream", json!("yes")), ("n", json!("two"))] {
        let mut b = body.clone();
        b[field] = v;
        let (status, code, _) = error_code(h.chat(&key, &b).await).await;
        assert_eq!((status, code.as_str()), (400, "invalid_request"));
    }
    assert_eq!(h.mock.calls(), 1);
}

async fn redis_gateway(
    mock: &str,
    store: &str,
    redis: &str,
) -> (tollgate::server::Gateway, String) {
    let yaml =
        config_yaml(mock, store, ON).replace("counters: memory", &format!("counters: {redis}"));
    let gw = start_gateway(&yaml, Arc::new(SystemClock)).await;
    let url = format!("http://{}", gw.addr);
    (gw, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_share_hits_and_a_dead_redis_is_only_a_miss() {
    let pg = PgSchema::new().await;
    let mut redis = PrivateRedis::start();
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let store = pg.url_via(None);
    let (a, url_a) = redis_gateway(&mock.base_url(), &store, &redis.url()).await;
    let (b, url_b) = redis_gateway(&mock.base_url(), &store, &redis.url()).await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{url_a}/admin/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"team": "t1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let ask = |url: String, body: Value| {
        let (http, key) = (http.clone(), key.clone());
        async move {
            let resp = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), cache_header(&resp))
        }
    };
    let body = chat_body("shared across replicas");
    assert_eq!(
        ask(url_a.clone(), body.clone()).await,
        (200, Some("miss".into()))
    );
    // The store on Redis runs off the request path: wait for it, bounded.
    for _ in 0..200 {
        if a.state.tasks.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let shared = ask(url_b.clone(), body.clone()).await;
    assert_eq!(
        shared,
        (200, Some("hit".into())),
        "replica B gets A's answer"
    );
    assert_eq!(
        ask(url_a.clone(), body.clone()).await,
        (200, Some("hit".into()))
    );
    assert_eq!(mock.calls(), 1);

    // Redis gone: a key without limits is still served, by the provider, at once.
    redis.stop();
    let started = Instant::now();
    assert_eq!(
        ask(url_b.clone(), body.clone()).await,
        (200, Some("miss".into()))
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(mock.calls(), 2);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn hits_take_no_token_allowance() {
    let h = Harness::start(ON).await;
    let (_, key) = h.key(json!({"tokens_per_minute": 2000})).await;
    // The call reports far more tokens than a minute allows: the allowance is spent.
    let mut body = chat_body("token hungry [[mock:usage=100000,100000]]");
    body["max_tokens"] = json!(100);
    assert_eq!(chat(&h, &key, &body).await.0, 200);
    h.settled().await;
    let mut other = chat_body("another one");
    other["max_tokens"] = json!(100);
    let (status, code, _) = error_code(h.chat(&key, &other).await).await;
    assert_eq!((status, code.as_str()), (429, "rate_limit_exceeded"));
    for _ in 0..5 {
        let (status, cache, _) = chat(&h, &key, &body).await;
        assert_eq!((status, cache.as_deref()), (200, Some("hit")));
    }
    assert_eq!(h.mock.calls(), 1);
}

/// An API team opts out with `cache: false` like a config team (SPEC §9):
/// no lookup and no store while it is off; PATCH turns it on and off, and
/// the store keeps it.
#[tokio::test]
async fn an_api_team_with_cache_false_gets_no_hits_and_patch_toggles_it() {
    let h = Harness::start(ON).await;
    let (status, team) = h
        .admin(
            reqwest::Method::POST,
            "/admin/teams",
            Some(json!({"id": "api-private", "cache": false})),
        )
        .await;
    assert_eq!(status, 201, "{team}");
    assert_eq!(team["cache"], false, "{team}");
    let (_, key) = h.key(json!({"team": "api-private"})).await;
    let body = chat_body("private answer");
    for _ in 0..2 {
        assert_eq!(chat(&h, &key, &body).await.1.as_deref(), Some("skip"));
    }
    assert_eq!(h.mock.calls(), 2, "no hit while it is off");

    let (status, team) = h
        .admin(
            reqwest::Method::PATCH,
            "/admin/teams/api-private",
            Some(json!({"cache": true})),
        )
        .await;
    assert_eq!((status, &team["cache"]), (200, &json!(true)), "{team}");
    let (_, got) = h
        .admin(reqwest::Method::GET, "/admin/teams/api-private", None)
        .await;
    assert_eq!(got["cache"], true, "{got}");
    assert_eq!(chat(&h, &key, &body).await.1.as_deref(), Some("miss"));
    assert_eq!(chat(&h, &key, &body).await.1.as_deref(), Some("hit"));
    assert_eq!(h.mock.calls(), 3);

    // Off again: the stored answer is not looked up.
    let (status, _) = h
        .admin(
            reqwest::Method::PATCH,
            "/admin/teams/api-private",
            Some(json!({"cache": false})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(chat(&h, &key, &body).await.1.as_deref(), Some("skip"));
    assert_eq!(h.mock.calls(), 4);
    // A team made without the field uses the cache.
    let (_, team) = h
        .admin(
            reqwest::Method::POST,
            "/admin/teams",
            Some(json!({"id": "api-default"})),
        )
        .await;
    assert_eq!(team["cache"], true, "{team}");
    let (status, err) = h
        .admin(
            reqwest::Method::PATCH,
            "/admin/teams/api-default",
            Some(json!({"cache": "no"})),
        )
        .await;
    assert_eq!(status, 400, "{err}");
    h.settled().await;
    let labels: Vec<Option<String>> = h.ledger().await.into_iter().map(|r| r.cache).collect();
    assert_eq!(
        labels
            .iter()
            .filter(|l| l.as_deref() == Some("hit"))
            .count(),
        1,
        "{labels:?}"
    );
}
