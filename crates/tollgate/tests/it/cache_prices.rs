//! Prompt-cache prices (SPEC §2, issue 10 hole 9): cache reads and writes
//! are billed as the provider bills them. The mock reports Anthropic's
//! `cache_read_input_tokens` / `cache_creation_input_tokens` (with the
//! 5-minute/1-hour split) and OpenAI's `prompt_tokens_details.
//! cached_tokens`; each ledger row must hold the provider's bill to the
//! nano-dollar, on every ingress and both with and without streaming. The
//! reservation for a Claude model must cover every prompt token written to
//! the cache for an hour, the dearest way Anthropic can bill it.

use std::sync::Arc;

use mock_provider::{CacheUsage, MockConfig, MockProvider, UsageOverride};
use serde_json::{Value, json};
use tollgate::types::SystemClock;

use crate::common::*;

/// `claude` is Claude Sonnet 4.5 at the built-in prices ($3 input, $0.30
/// reads, $3.75 5-minute writes, $6 1-hour writes, $15 output);
/// `house-claude` an Anthropic model priced by hand with input and output
/// only; `gpt-4o` the built-in $2.50 input, $1.25 cached, $10 output.
/// Team `capped` has a budget too small for any request.
async fn gateway() -> Harness {
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("t.db").display());
    let extra = format!(
        "  - name: claude-up
    kind: anthropic
    base_url: {base}
    api_key: {UPSTREAM_KEY}
models:
  - name: claude
    targets:
      - provider: claude-up
        model: claude-sonnet-4-5
  - name: house-claude
    targets:
      - provider: claude-up
        model: house-alias
    price: {{ input_per_mtok: 2, output_per_mtok: 10 }}
    max_output_tokens: 1000
  - name: gpt-4o
    targets:
      - provider: upstream
        model: gpt-4o
",
        base = mock.base_url(),
    );
    let tail = "policies:
  - name: tiny
    type: cost-limit
    config: { limit_usd: 0.000001, period: daily, action: reject }
teams:
  - id: t1
  - id: capped
    policies: [tiny]
";
    let yaml = config_yaml(&mock.base_url(), &store, tail).replacen("models:\n", &extra, 1);
    let gw = start_gateway(&yaml, Arc::new(SystemClock)).await;
    let url = format!("http://{}", gw.addr);
    Harness {
        gw: Some(gw),
        mock,
        url,
        http: reqwest::Client::new(),
        dir,
    }
}

/// The prompt of every Anthropic answer below: 26,000 tokens, of which
/// 20,000 read from the cache, 3,000 written for 5 minutes and 2,000 for
/// an hour, so Anthropic's `input_tokens` is 1,000; 50 output tokens.
fn anthropic_cache(h: &Harness) {
    h.mock.set_usage(Some(UsageOverride {
        prompt_tokens: 26_000,
        completion_tokens: 50,
    }));
    h.mock.set_cache_usage(Some(CacheUsage {
        read: 20_000,
        write_5m: 3_000,
        write_1h: 2_000,
    }));
}

/// Claude Sonnet 4.5's bill for [`anthropic_cache`], in nano-USD ($/Mtok
/// is nano-USD per token / 1000).
const SONNET_BILL: u64 = 1_000 * 3_000 // fresh input, $3
    + 20_000 * 300 // cache reads, $0.30
    + 3_000 * 3_750 // 5-minute writes, $3.75
    + 2_000 * 6_000 // 1-hour writes, $6
    + 50 * 15_000; // output, $15

fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 64, "stream": stream,
        "messages": [{"role": "user", "content": "Summarise the cached document."}]})
}

fn messages_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 64, "stream": stream,
        "system": [{"type": "text", "text": "A long document.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [{"role": "user", "content": "Summarise it."}]})
}

/// The cost of the newest ledger row, after checking it is the only new one.
async fn last_cost(h: &Harness, rows_before: usize) -> u64 {
    let rows = h.ledger().await;
    assert_eq!(rows.len(), rows_before + 1, "one ledger row per request");
    assert_eq!(rows[0].status, 200, "{:?}", rows[0]);
    rows[0].cost.0
}

fn cost_header(resp: &reqwest::Response) -> String {
    resp.headers()["x-tollgate-cost-usd"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// `usd` as printed by the gateway (`0.033`), in nano-USD.
fn nanos(usd: &str) -> u64 {
    let (whole, frac) = usd.split_once('.').unwrap_or((usd, ""));
    let frac = format!("{frac:0<9}");
    whole.parse::<u64>().unwrap() * 1_000_000_000 + frac.parse::<u64>().unwrap()
}

/// The `usage` object of an OpenAI stream (its last usage chunk).
fn stream_usage(text: &str) -> Option<Value> {
    text.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c.get("usage").filter(|u| u.is_object()).cloned())
        .next()
}

#[tokio::test]
async fn anthropic_cache_reads_and_writes_are_billed_at_anthropics_rates_on_chat_completions() {
    let h = gateway().await;
    let (_, key) = h.key(json!({})).await;
    anthropic_cache(&h);

    let resp = h.chat(&key, &chat_body("claude", false)).await;
    assert_eq!(resp.status(), 200);
    let header = cost_header(&resp);
    let body: Value = resp.json().await.unwrap();
    // The OpenAI client sees the whole prompt, its reads and its writes.
    assert_eq!(body["usage"]["prompt_tokens"], 26_000, "{body}");
    assert_eq!(
        body["usage"]["prompt_tokens_details"]["cached_tokens"],
        20_000
    );
    assert_eq!(
        body["usage"]["prompt_tokens_details"]["cache_write_tokens"],
        5_000
    );
    assert_eq!(last_cost(&h, 0).await, SONNET_BILL);
    assert_eq!(nanos(&header), SONNET_BILL);

    // Streaming, with and without the client asking for the usage chunk.
    for (n, include_usage) in [(1, true), (2, false)] {
        let mut body = chat_body("claude", true);
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let resp = h.chat(&key, &body).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        let usage = stream_usage(&text);
        if include_usage {
            let usage = usage.expect("a usage chunk");
            assert_eq!(usage["prompt_tokens"], 26_000, "{usage}");
            assert_eq!(usage["prompt_tokens_details"]["cache_write_tokens"], 5_000);
        } else {
            assert_eq!(usage, None, "stripped for a client that did not ask");
        }
        assert_eq!(last_cost(&h, n).await, SONNET_BILL, "stream {n}");
    }
}

#[tokio::test]
async fn anthropic_cache_is_billed_and_reported_on_the_messages_ingress() {
    let h = gateway().await;
    let (_, key) = h.key(json!({})).await;
    anthropic_cache(&h);

    let resp = h
        .post("/v1/messages", &key, &messages_body("claude", false))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    // The Anthropic client sees Anthropic's accounting back.
    let usage = &body["usage"];
    assert_eq!(usage["input_tokens"], 1_000, "{body}");
    assert_eq!(usage["cache_read_input_tokens"], 20_000);
    assert_eq!(usage["cache_creation_input_tokens"], 5_000);
    assert_eq!(usage["cache_creation"]["ephemeral_1h_input_tokens"], 2_000);
    assert_eq!(usage["output_tokens"], 50);
    assert_eq!(last_cost(&h, 0).await, SONNET_BILL);

    let resp = h
        .post("/v1/messages", &key, &messages_body("claude", true))
        .await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    // Passed through natively (issue 14): Anthropic's own events, which
    // report the prompt's cache split in `message_start`.
    let start = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|e| e["type"] == "message_start")
        .expect("a message_start event");
    let usage = &start["message"]["usage"];
    assert_eq!(usage["input_tokens"], 1_000, "{start}");
    assert_eq!(usage["cache_creation_input_tokens"], 5_000);
    assert_eq!(usage["cache_read_input_tokens"], 20_000);
    assert_eq!(last_cost(&h, 1).await, SONNET_BILL);
}

#[tokio::test]
async fn a_claude_model_priced_by_hand_bills_writes_at_anthropics_multiples_and_reads_in_full() {
    let h = gateway().await;
    let (_, key) = h.key(json!({})).await;
    anthropic_cache(&h);
    // $2 input and no cache rates: writes at 1.25× and 2× input, reads at
    // the full input rate (no discount without a written rate).
    let bill = 1_000 * 2_000 + 20_000 * 2_000 + 3_000 * 2_500 + 2_000 * 4_000 + 50 * 10_000;
    let resp = h.chat(&key, &chat_body("house-claude", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(last_cost(&h, 0).await, bill);
    let resp = h.chat(&key, &chat_body("house-claude", true)).await;
    resp.text().await.unwrap();
    assert_eq!(last_cost(&h, 1).await, bill);
}

#[tokio::test]
async fn openai_cached_tokens_are_billed_at_the_models_cached_rate() {
    let h = gateway().await;
    let (_, key) = h.key(json!({})).await;
    h.mock.set_usage(Some(UsageOverride {
        prompt_tokens: 10_000,
        completion_tokens: 40,
    }));
    h.mock.set_cache_usage(Some(CacheUsage {
        read: 8_000,
        ..CacheUsage::default()
    }));
    // gpt-4o: 2,000 fresh at $2.50, 8,000 cached at $1.25, 40 out at $10.
    let bill = 2_000 * 2_500 + 8_000 * 1_250 + 40 * 10_000;
    let resp = h.chat(&key, &chat_body("gpt-4o", false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(nanos(&cost_header(&resp)), bill);
    assert_eq!(last_cost(&h, 0).await, bill);
    for (n, include_usage) in [(1, true), (2, false)] {
        let mut body = chat_body("gpt-4o", true);
        if include_usage {
            body["stream_options"] = json!({"include_usage": true});
        }
        let resp = h.chat(&key, &body).await;
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap();
        assert_eq!(last_cost(&h, n).await, bill, "stream {n}");
    }
    // Without cached tokens the same prompt costs the full input rate.
    h.mock.set_cache_usage(None);
    h.chat(&key, &chat_body("gpt-4o", false)).await;
    assert_eq!(last_cost(&h, 3).await, 10_000 * 2_500 + 40 * 10_000);
}

#[tokio::test]
async fn a_claude_reservation_covers_every_prompt_token_as_a_one_hour_cache_write() {
    let h = gateway().await;
    let (_, key) = h.key(json!({"team": "capped"})).await;
    let resp = h
        .post("/v1/messages", &key, &messages_body("claude", false))
        .await;
    assert_eq!(resp.status(), 402);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    // "... could cost up to $X (N input + M output tokens of `claude`)".
    let rest = message.split("could cost up to $").nth(1).unwrap();
    let (cost, rest) = rest.split_once(" (").unwrap();
    let (input, rest) = rest.split_once(" input + ").unwrap();
    let (output, _) = rest.split_once(" output tokens").unwrap();
    let (input, output): (u64, u64) = (input.parse().unwrap(), output.parse().unwrap());
    assert_eq!(output, 64, "{message}");
    // Every prompt token at the 1-hour write rate ($6), not the input rate ($3).
    assert_eq!(nanos(cost), input * 6_000 + output * 15_000, "{message}");
    assert_eq!(h.mock.calls(), 0, "never forwarded");

    // An OpenAI model has no write surcharge: its prompt stays at input.
    let resp = h.chat(&key, &chat_body("gpt-4o", false)).await;
    assert_eq!(resp.status(), 402);
    let body: Value = resp.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    let rest = message.split("could cost up to $").nth(1).unwrap();
    let (cost, rest) = rest.split_once(" (").unwrap();
    let (input, _) = rest.split_once(" input + ").unwrap();
    let input: u64 = input.parse().unwrap();
    assert_eq!(nanos(cost), input * 2_500 + 64 * 10_000, "{message}");
}
