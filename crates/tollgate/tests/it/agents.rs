//! Coding-agent traffic (SPEC §3, issue 14): `/v1/messages` passed through
//! natively to `anthropic` targets, `/v1/responses` natively to `openai`
//! targets and translated for the others, `count_tokens`, and the budget
//! holding on all of them. The mock records every request it gets, so the
//! passthrough is checked against what arrived, field by field.

use std::sync::Arc;

use mock_provider::{CacheUsage, MockConfig, MockProvider, UsageOverride};
use serde_json::{Value, json};
use tollgate::types::SystemClock;

use crate::common::*;

/// Providers: `claude-up` (kind `anthropic`), `upstream` (kind `openai`,
/// from the base config), `builtin` (kind `mock`), `dead` (an `openai`
/// provider nothing listens on). Models: `claude` (Claude Sonnet 4.5 at the
/// built-in prices), `gpt-4o-mini` ($1/$2), `mock-chat` on the built-in
/// mock, `claude-or-gpt` (Claude first, then gpt) and `dead-then-gpt`.
pub(crate) async fn gateway(tail: &str) -> Harness {
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("t.db").display());
    let extra = format!(
        "  - name: claude-up
    kind: anthropic
    base_url: {base}
    api_key: {UPSTREAM_KEY}
    timeout_s: 5
  - name: builtin
    kind: mock
  - name: dead
    kind: openai
    base_url: http://127.0.0.1:9/v1
    api_key: {UPSTREAM_KEY}
    timeout_s: 2
  - name: az
    kind: azure
    base_url: {root}
    api_key: {UPSTREAM_KEY}
models:
  - name: az-gpt
    targets:
      - provider: az
        model: my-deployment
    price: {{ input_per_mtok: 1, output_per_mtok: 2 }}
  - name: claude
    targets:
      - provider: claude-up
        model: claude-sonnet-4-5
    max_output_tokens: 1000
  - name: mock-chat
    targets:
      - provider: builtin
        model: mock-chat
    price: {{ input_per_mtok: 1, output_per_mtok: 2 }}
  - name: claude-or-gpt
    targets:
      - provider: claude-up
        model: claude-sonnet-4-5
      - provider: upstream
        model: gpt-4o-mini
    max_output_tokens: 1000
  - name: dead-then-gpt
    targets:
      - provider: dead
        model: gpt-4o-mini
      - provider: upstream
        model: gpt-4o-mini
    price: {{ input_per_mtok: 1, output_per_mtok: 2 }}
",
        base = mock.base_url(),
        root = mock.root_url(),
    );
    let yaml = config_yaml(&mock.base_url(), &store, tail)
        .replacen(
            "providers:\n",
            &format!("providers:\n{}", &extra[..extra.find("models:\n").unwrap()]),
            1,
        )
        .replacen("models:\n", &extra[extra.find("models:\n").unwrap()..], 1);
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

pub(crate) const TAIL: &str = "policies:
  - name: cap
    type: cost-limit
    config: { limit_usd: 1, period: daily, action: reject }
  - name: broke
    type: cost-limit
    config: { limit_usd: 0.000001, period: daily, action: reject }
  - name: gpt-only
    type: model-access
    config: { allow: [\"gpt-4o-mini\"] }
teams:
  - id: t1
  - id: capped
    policies: [cap]
  - id: poor
    policies: [broke]
  - id: gptonly
    policies: [gpt-only]
";

/// POSTs the way the Anthropic SDK does: `x-api-key`, version and beta headers.
async fn messages(h: &Harness, key: &str, body: &Value) -> reqwest::Response {
    h.http
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .header("anthropic-beta", "files-api-2025-04-14")
        .json(body)
        .send()
        .await
        .unwrap()
}

/// What the mock received last, as JSON.
fn arrived(h: &Harness) -> (String, Value, mock_provider::RecordedRequest) {
    let r = h.mock.last_request().expect("the mock got a request");
    (r.path.clone(), r.json().expect("JSON body"), r)
}

/// `body` with the fields the gateway must set replaced by `changes`.
fn with(body: &Value, changes: Value) -> Value {
    let mut b = body.clone();
    for (k, v) in changes.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

/// Real Messages request shapes from Anthropic's API reference: prompt
/// caching, extended thinking, PDF documents with citations, a tool-use
/// round trip, images, and fields the gateway has never heard of.
fn messages_corpus() -> Vec<Value> {
    vec![
        json!({"model": "claude", "max_tokens": 1024,
            "system": [{"type": "text", "text": "You are an AI assistant tasked with analyzing literary works."},
                       {"type": "text", "text": "<the entire contents of Pride and Prejudice>", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "Analyze the major themes in Pride and Prejudice."}]}),
        json!({"model": "claude", "max_tokens": 16000,
            "thinking": {"type": "enabled", "budget_tokens": 10000},
            "messages": [{"role": "user", "content": "Are there an infinite number of prime numbers such that n mod 4 == 3?"}]}),
        json!({"model": "claude", "max_tokens": 1024,
            "messages": [{"role": "user", "content": [
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQKJcfsj6IKNSAwIG9iago="},
                 "title": "Annual report", "context": "FY2024", "citations": {"enabled": true}, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green. The sky is blue."},
                 "citations": {"enabled": true}},
                {"type": "text", "text": "What color is the grass and sky?"}]}]}),
        json!({"model": "claude", "max_tokens": 1024,
            "tools": [{"name": "get_weather", "description": "Get the current weather in a given location",
                "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
                "cache_control": {"type": "ephemeral"}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": "What's the weather like in San Francisco?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "I should call the tool.", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"},
                    {"type": "text", "text": "<thinking>I need to use get_weather</thinking>"},
                    {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": "get_weather", "input": {"location": "San Francisco, CA"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01A09q90qw90lq917835lq9",
                    "content": [{"type": "text", "text": "15 degrees"}], "is_error": false}]}]}),
        json!({"model": "claude", "max_tokens": 1024, "temperature": 0.2, "top_k": 5,
            "metadata": {"user_id": "13803d75-b4b5-4c3e-b2a2-6f21399b021b"},
            "service_tier": "auto", "stop_sequences": ["\n\nHuman:"],
            "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQSkZJRg=="}},
                {"type": "image", "source": {"type": "url", "url": "https://upload.wikimedia.org/a.jpg"}},
                {"type": "text", "text": "Compare these images.", "cache_control": {"type": "ephemeral"}}]}]}),
    ]
}

#[tokio::test]
async fn messages_reach_anthropic_untranslated_with_beta_headers_and_the_gateways_key() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({})).await;
    for body in messages_corpus() {
        let resp = messages(&h, &key, &body).await;
        assert_eq!(resp.status(), 200, "{body}");
        let answer: Value = resp.json().await.unwrap();
        // Anthropic's own answer, untranslated.
        assert!(
            answer["id"].as_str().unwrap().starts_with("msg_mock_"),
            "{answer}"
        );
        let (path, got, req) = arrived(&h);
        assert_eq!(path, "/v1/messages");
        // Every field as sent; only the model is the target's.
        assert_eq!(got, with(&body, json!({"model": "claude-sonnet-4-5"})));
        assert_eq!(req.api_key(), Some(UPSTREAM_KEY));
        assert!(req.headers.get("authorization").is_none());
        assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
        let betas: Vec<_> = req
            .headers
            .get_all("anthropic-beta")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            betas,
            ["interleaved-thinking-2025-05-14", "files-api-2025-04-14"]
        );
        if body.get("thinking").is_some() {
            assert_eq!(answer["content"][0]["type"], "thinking");
        }
    }
}

#[tokio::test]
async fn a_clamped_messages_request_goes_out_with_max_tokens_lowered() {
    let tail = "policies:
  - name: clamp
    type: cost-limit
    config: { limit_usd: 0.01, period: daily, action: reject, on_insufficient: clamp }
teams:
  - id: t1
    policies: [clamp]
";
    let h = gateway(tail).await;
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "claude", "max_tokens": 100000, "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "hi"}]});
    let resp = messages(&h, &key, &body).await;
    assert_eq!(resp.status(), 200);
    let (_, got, _) = arrived(&h);
    let sent = got["max_tokens"].as_u64().unwrap();
    // $0.01 at $15/Mtok output pays for at most 666 tokens.
    assert!(sent > 0 && sent <= 666, "max_tokens {sent}");
    assert_eq!(got["thinking"], body["thinking"]);
}

/// SSE text with the mock's per-answer ids made equal.
fn normalized(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("_mock_") {
        out.push_str(&rest[..i + 6]);
        rest = rest[i + 6..].trim_start_matches(|c: char| c.is_ascii_digit());
        out.push('N');
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn a_native_messages_stream_comes_back_event_for_event_and_is_billed_from_its_usage() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({"team": "capped"})).await;
    h.mock.set_cache_usage(Some(CacheUsage {
        read: 30,
        write_5m: 20,
        write_1h: 10,
    }));
    h.mock.set_usage(Some(UsageOverride {
        prompt_tokens: 100,
        completion_tokens: 9,
    }));
    let body = json!({"model": "claude", "max_tokens": 64, "stream": true,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "tools": [{"name": "read_file", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "Fix the bug. [[mock:tool_use]]"}]});
    let direct = h
        .http
        .post(format!("{}/messages", h.mock.base_url()))
        .json(&with(&body, json!({"model": "claude-sonnet-4-5"})))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let resp = messages(&h, &key, &body).await;
    assert_eq!(resp.status(), 200);
    let through = resp.text().await.unwrap();
    assert_eq!(normalized(&through), normalized(&direct));
    for event in [
        "thinking_delta",
        "signature_delta",
        "input_json_delta",
        "message_stop",
    ] {
        assert!(through.contains(event), "{event} missing: {through}");
    }
    let rows = h.ledger().await;
    let row = &rows[0];
    assert_eq!(row.status, 200);
    // 100 prompt tokens (40 fresh, 30 read, 20 + 10 written); 9 + 5 thinking out.
    assert_eq!((row.prompt_tokens, row.completion_tokens), (100, 14));
    let expected = 40 * 3_000 + 30 * 300 + 20 * 3_750 + 10 * 6_000 + 14 * 15_000;
    assert_eq!(row.cost.0, expected);
}

#[tokio::test]
async fn a_native_messages_stream_cut_short_is_billed_for_what_was_sent() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({"team": "capped"})).await;
    let body = json!({"model": "claude", "max_tokens": 200, "stream": true,
        "messages": [{"role": "user", "content": "Write a story. [[mock:tokens=50]] [[mock:cut=20]]"}]});
    let resp = messages(&h, &key, &body).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with('}'));
    assert!(text.contains("event: error"), "the client is told: {text}");
    let rows = h.ledger().await;
    assert_eq!(rows[0].status, 502);
    // 20 words of `word ` were streamed: at least 20 tokens billed.
    assert!(rows[0].completion_tokens >= 20, "{:?}", rows[0]);
    assert!(rows[0].prompt_tokens > 0);
}

/// A native call the provider never answers: 504 in Anthropic's shape.
/// Each timeout may have been generated, so each is billed its reserved
/// worst case, and retried only on a reservation of its own (the cap has
/// room for several); the budget counter holds what the ledger does.
#[tokio::test]
async fn a_native_messages_call_that_times_out_is_a_504_billed_at_its_reservation() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({"team": "capped"})).await;
    let body = json!({"model": "claude-or-gpt", "max_tokens": 100,
        "messages": [{"role": "user", "content": "Never answered [[mock:hang]]"}]});
    let resp = messages(&h, &key, &body).await;
    assert_eq!(resp.status(), 504);
    let attempts: u64 = resp
        .headers()
        .get("x-tollgate-attempts")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["type"], "error", "{err}");
    assert!(attempts > 1, "retried on reservations of its own");
    assert_eq!(
        h.mock.calls() as u64,
        attempts,
        "every attempt reached the mock"
    );
    h.settled().await;
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, 504);
    assert_eq!(u64::from(rows[0].attempts), attempts);
    assert!(
        rows[0].completion_tokens == 100 * attempts && rows[0].cost.0 > 0,
        "each attempt billed at the reserved worst case: {:?}",
        rows[0]
    );
    let (_, budgets) = h.admin(reqwest::Method::GET, "/admin/budgets", None).await;
    let cap = budgets["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["policy"] == "cap")
        .unwrap()
        .clone();
    assert_eq!(
        (cap["spent_usd"].as_f64().unwrap() * 1e9).round() as u64,
        rows[0].cost.0,
        "{cap}"
    );
    assert_eq!(cap["reserved_usd"], 0.0, "{cap}");
}

#[tokio::test]
async fn messages_errors_are_in_anthropic_format() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({})).await;
    let (_, poor) = h.key(json!({"team": "poor"})).await;
    let (_, gpt_only) = h.key(json!({"team": "gptonly"})).await;
    let msg = |extra: Value| {
        with(
            &json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}),
            extra,
        )
    };
    let mut no_cap = msg(json!({}));
    no_cap.as_object_mut().unwrap().remove("max_tokens");
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (&key, no_cap, 400, "invalid_request_error"),
        (
            &key,
            msg(json!({"max_tokens": null})),
            400,
            "invalid_request_error",
        ),
        (
            &key,
            msg(json!({"max_tokens": "10"})),
            400,
            "invalid_request_error",
        ),
        (
            &key,
            msg(json!({"max_tokens": -1})),
            400,
            "invalid_request_error",
        ),
        (
            &key,
            msg(json!({"max_tokens": 1.5})),
            400,
            "invalid_request_error",
        ),
        (
            &key,
            msg(json!({"stream": "yes"})),
            400,
            "invalid_request_error",
        ),
        (&key, msg(json!({"n": 4})), 400, "invalid_request_error"),
        ("sk-tg-nope", msg(json!({})), 401, "authentication_error"),
        (&key, msg(json!({"model": "nope"})), 404, "not_found_error"),
        (&poor, msg(json!({})), 402, "permission_error"),
        (&gpt_only, msg(json!({})), 403, "permission_error"),
        // The provider's own 4xx, in Anthropic's shape.
        (
            &key,
            msg(json!({"messages": [{"role": "user", "content": "[[mock:status=422]]"}]})),
            422,
            "invalid_request_error",
        ),
    ];
    let calls_before = h.mock.calls();
    for (k, body, status, kind) in cases {
        let resp = messages(&h, k, &body).await;
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["type"], "error", "{err}");
        assert_eq!(err["error"]["type"], kind, "{body}: {err}");
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    }
    // Only the provider's own 422 reached it.
    assert_eq!(h.mock.calls(), calls_before + 1);
}

#[tokio::test]
async fn messages_to_a_non_claude_target_are_still_translated() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 20, "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}]});
    let resp = messages(&h, &key, &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["type"], "message");
    let (path, got, req) = arrived(&h);
    assert_eq!(path, "/v1/chat/completions");
    assert_eq!(got["messages"][0]["role"], "system");
    assert!(req.headers.get("anthropic-beta").is_none());
    // A block only Claude understands cannot go there: a clear 400.
    let doc = json!({"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]});
    let resp = messages(&h, &key, &doc).await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("document"),
        "{err}"
    );
    // With a Claude target first, the same body goes to it natively.
    let resp = messages(&h, &key, &with(&doc, json!({"model": "claude-or-gpt"}))).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(arrived(&h).0, "/v1/messages");
}

#[tokio::test]
async fn count_tokens_is_forwarded_to_anthropic_and_estimated_elsewhere() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({})).await;
    let (_, gpt_only) = h.key(json!({"team": "gptonly"})).await;
    let body = json!({"model": "claude", "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "messages": [{"role": "user", "content": "How many tokens is this?"}]});
    let post = |k: &str, b: &Value| {
        h.http
            .post(format!("{}/v1/messages/count_tokens", h.url))
            .header("x-api-key", k)
            .header("anthropic-beta", "token-counting-2024-11-01")
            .json(b)
            .send()
    };
    let resp = post(&key, &body).await.unwrap();
    assert_eq!(resp.status(), 200);
    let counted: Value = resp.json().await.unwrap();
    assert!(counted["input_tokens"].as_u64().unwrap() > 0);
    let (path, got, req) = arrived(&h);
    assert_eq!(path, "/v1/messages/count_tokens");
    assert_eq!(got, with(&body, json!({"model": "claude-sonnet-4-5"})));
    assert_eq!(req.api_key(), Some(UPSTREAM_KEY));
    assert_eq!(
        req.header("anthropic-beta"),
        Some("token-counting-2024-11-01")
    );

    let calls = h.mock.calls();
    let resp = post(&key, &with(&body, json!({"model": "gpt-4o-mini"})))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let estimated: Value = resp.json().await.unwrap();
    assert!(
        estimated["input_tokens"].as_u64().unwrap() >= 6,
        "{estimated}"
    );
    assert_eq!(h.mock.calls(), calls, "estimated, not forwarded");

    for (k, b, status) in [
        ("sk-tg-nope", body.clone(), 401),
        (gpt_only.as_str(), body.clone(), 403),
        (key.as_str(), json!({"model": "claude"}), 400),
        (key.as_str(), json!({"model": "nope", "messages": []}), 404),
    ] {
        let resp = post(k, &b).await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{b}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["type"], "error", "{err}");
    }
    // Anthropic's own 4xx comes back with its status, in its shape.
    let bad = json!({"model": "claude", "messages": [{"role": "user", "content": "[[mock:status=400]]"}]});
    let resp = post(&key, &bad).await.unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
    // Not billed: no ledger rows.
    assert!(h.ledger().await.is_empty());
}

async fn responses(h: &Harness, key: &str, body: &Value) -> reqwest::Response {
    h.post("/v1/responses", key, body).await
}

/// Real Responses request shapes from OpenAI's API reference.
fn responses_corpus() -> Vec<Value> {
    vec![
        json!({"model": "gpt-4o-mini", "input": "Tell me a three sentence bedtime story about a unicorn."}),
        json!({"model": "gpt-4o-mini", "instructions": "Talk like a pirate.", "input": "Are semicolons optional in JavaScript?",
            "max_output_tokens": 300, "temperature": 0.5, "metadata": {"trace": "abc"}, "store": false}),
        json!({"model": "gpt-4o-mini", "input": [
                {"role": "developer", "content": "You are a coding agent."},
                {"role": "user", "content": [{"type": "input_text", "text": "what is in this image?"},
                    {"type": "input_image", "image_url": "https://upload.wikimedia.org/wikipedia/commons/a.jpg", "detail": "high"}]},
                {"type": "reasoning", "id": "rs_123", "summary": [], "encrypted_content": "gAAAAABo..."},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": "{\"location\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "{\"temperature\": 18}"}],
            "tools": [{"type": "function", "name": "get_weather", "description": "Get current temperature for a given location.",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"], "additionalProperties": false},
                "strict": true}],
            "tool_choice": "auto", "parallel_tool_calls": false,
            "reasoning": {"effort": "high", "summary": "auto"}, "include": ["reasoning.encrypted_content"]}),
        json!({"model": "gpt-4o-mini", "input": [{"role": "user", "content": "Extract the event."}],
            "text": {"format": {"type": "json_schema", "name": "calendar_event", "strict": true,
                "schema": {"type": "object", "properties": {"name": {"type": "string"}, "date": {"type": "string"}},
                    "required": ["name", "date"], "additionalProperties": false}}, "verbosity": "low"},
            "truncation": "auto", "prompt_cache_key": "agent-1", "safety_identifier": "user-1"}),
    ]
}

#[tokio::test]
async fn responses_reach_openai_untranslated() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({})).await;
    for body in responses_corpus() {
        let resp = responses(&h, &key, &body).await;
        assert_eq!(resp.status(), 200, "{body}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["object"], "response", "{answer}");
        assert!(answer["id"].as_str().unwrap().starts_with("resp_mock_"));
        let (path, got, req) = arrived(&h);
        assert_eq!(path, "/v1/responses");
        assert_eq!(got, body, "no field lost, none added");
        assert_eq!(req.api_key(), Some(UPSTREAM_KEY));
    }
}

#[tokio::test]
async fn a_budgeted_responses_request_carries_max_output_tokens_no_larger_than_reserved() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({"team": "capped"})).await;
    let body = json!({"model": "gpt-4o-mini", "input": "hi"});
    assert_eq!(responses(&h, &key, &body).await.status(), 200);
    let (_, got, _) = arrived(&h);
    // The model's max_output_tokens (1000) was reserved, and sent.
    assert_eq!(got["max_output_tokens"], 1000);
    assert_eq!(
        with(&got, json!({"max_output_tokens": null})),
        with(&body, json!({"max_output_tokens": null}))
    );
    // The client's own cap is what is reserved, and goes out as it is.
    let big = with(&body, json!({"max_output_tokens": 50000}));
    assert_eq!(responses(&h, &key, &big).await.status(), 200);
    assert_eq!(arrived(&h).1["max_output_tokens"], 50000);
    let small = with(&body, json!({"max_output_tokens": 7}));
    assert_eq!(responses(&h, &key, &small).await.status(), 200);
    assert_eq!(arrived(&h).1["max_output_tokens"], 7);
    // Translated targets get the cap as `max_tokens`.
    let mock = json!({"model": "mock-chat", "input": "hi"});
    assert_eq!(responses(&h, &key, &mock).await.status(), 200);
}

#[tokio::test]
async fn responses_usage_bills_reasoning_as_output_and_cached_input_at_its_rate() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({"team": "capped"})).await;
    h.mock.set_usage(Some(UsageOverride {
        prompt_tokens: 1000,
        completion_tokens: 10,
    }));
    for stream in [false, true] {
        let body = json!({"model": "gpt-4o-mini", "input": "think", "reasoning": {"effort": "low"}, "stream": stream});
        let resp = responses(&h, &key, &body).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        if stream {
            assert!(text.starts_with("event: response.created\n"), "{text}");
            assert!(text.contains("event: response.completed\n"));
        }
        let rows = h.ledger().await;
        // 10 visible + 7 reasoning tokens; gpt-4o-mini here is $1 / $2.
        assert_eq!(
            (rows[0].prompt_tokens, rows[0].completion_tokens),
            (1000, 17),
            "stream {stream}"
        );
        assert_eq!(rows[0].cost.0, 1000 * 1_000 + 17 * 2_000);
    }
}

#[tokio::test]
async fn responses_are_translated_for_claude_and_the_builtin_mock() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "claude", "instructions": "Be terse.", "max_output_tokens": 40,
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "What is 2+2?"}]}],
        "tools": [{"type": "function", "name": "calc", "parameters": {"type": "object"}}]});
    let resp = responses(&h, &key, &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["model"], "claude");
    assert_eq!(answer["output"][0]["content"][0]["type"], "output_text");
    assert!(answer["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let (path, got, _) = arrived(&h);
    assert_eq!(path, "/v1/messages");
    assert_eq!(got["system"][0]["text"], "Be terse.");
    assert_eq!(got["max_tokens"], 40);
    assert_eq!(got["tools"][0]["name"], "calc");

    for model in ["claude", "mock-chat"] {
        let resp = responses(
            &h,
            &key,
            &json!({"model": model, "input": "hi", "stream": true}),
        )
        .await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            kinds[..2],
            ["response.created", "response.in_progress"],
            "{text}"
        );
        assert!(kinds.contains(&"response.output_text.delta"), "{text}");
        assert_eq!(kinds.last(), Some(&"response.completed"), "{text}");
    }
    let resp = responses(&h, &key, &json!({"model": "mock-chat", "input": "hi"})).await;
    let answer: Value = resp.json().await.unwrap();
    assert!(
        answer["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("deterministic")
    );
}

#[tokio::test]
async fn responses_errors_are_clear_400s_and_stateful_features_stay_on_openai() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({})).await;
    let calls = h.mock.calls();
    for body in [
        json!({"model": "gpt-4o-mini", "input": "x", "max_output_tokens": "100"}),
        json!({"model": "gpt-4o-mini", "input": "x", "max_output_tokens": -5}),
        json!({"model": "gpt-4o-mini", "input": "x", "max_output_tokens": 1e30}),
        json!({"model": "gpt-4o-mini", "input": "x", "stream": "true"}),
        json!({"model": "gpt-4o-mini", "input": "x", "n": 3}),
        json!({"model": "gpt-4o-mini"}),
        json!({"model": "claude", "input": "x", "previous_response_id": "resp_123"}),
        json!({"model": "mock-chat", "input": "x", "store": true}),
        json!({"model": "claude", "input": "x", "tools": [{"type": "web_search"}]}),
        json!({"model": "claude", "input": [{"type": "file_search_call", "id": "fs_1"}]}),
    ] {
        let (status, code, err) = error_code(responses(&h, &key, &body).await).await;
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_request"),
            "{body}: {err}"
        );
    }
    assert_eq!(h.mock.calls(), calls, "none was forwarded");
    // To OpenAI, `previous_response_id` passes through...
    let body = json!({"model": "gpt-4o-mini", "input": "and then?", "previous_response_id": "resp_abc", "store": true});
    assert_eq!(responses(&h, &key, &body).await.status(), 200);
    assert_eq!(arrived(&h).1, body);
    // ...to one target only: the one holding the state. The dead first
    // target fails, and the request is not sent to the second.
    let pinned = with(&body, json!({"model": "dead-then-gpt"}));
    let calls = h.mock.calls();
    let (status, code, _) = error_code(responses(&h, &key, &pinned).await).await;
    assert_eq!((status, code.as_str()), (502, "upstream_error"));
    assert_eq!(h.mock.calls(), calls);
    // Without it, the same model falls back.
    let resp = responses(&h, &key, &json!({"model": "dead-then-gpt", "input": "x"})).await;
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn hostile_fields_and_usage_never_overshoot_a_budget() {
    let tail = "policies:
  - name: cap
    type: cost-limit
    config: { limit_usd: 0.02, period: daily, action: reject }
teams:
  - id: t1
    policies: [cap]
";
    let h = gateway(tail).await;
    let (_, key) = h.key(json!({})).await;
    // A provider claiming absurd usage, and ill-typed usage, on every path.
    let absurd = "[[mock:usage=999999999,999999999]]";
    let bodies = [
        (
            "/v1/messages",
            json!({"model": "claude", "max_tokens": 100, "messages": [{"role": "user", "content": absurd}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "claude", "max_tokens": 100, "stream": true, "messages": [{"role": "user", "content": absurd}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "claude", "max_tokens": 1_000_000_000_000u64, "messages": [{"role": "user", "content": "x"}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": absurd, "max_output_tokens": 100}),
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": absurd, "stream": true, "stream_options": null}),
        ),
        (
            "/v1/responses",
            json!({"model": "gpt-4o-mini", "input": "x", "max_output_tokens": 1_000_000_000_000u64}),
        ),
        (
            "/v1/responses",
            json!({"model": "claude", "input": absurd, "stream": true, "stream_options": "off"}),
        ),
    ];
    for _ in 0..4 {
        for (path, body) in &bodies {
            let resp = h.post(path, &key, body).await;
            let _ = resp.bytes().await;
        }
    }
    let rows = h.ledger().await;
    let spent: u64 = rows.iter().map(|r| r.cost.0).sum();
    assert!(
        spent <= 20_000_000,
        "spent {spent} nano-USD of a 20,000,000 cap"
    );
    assert!(rows.iter().any(|r| r.status == 200), "some ran");
    assert!(
        rows.iter()
            .any(|r| r.error_code.as_deref() == Some("budget_exceeded"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_holds_under_100_concurrent_agent_streams() {
    // Each request reserves its input plus 200 output tokens; the cap fits
    // a handful of them, and every stream tries to use all 200.
    let tail = "policies:
  - name: cap
    type: cost-limit
    config: { limit_usd: 0.01, period: daily, action: reject }
teams:
  - id: t1
    policies: [cap]
";
    let h = gateway(tail).await;
    let (_, key) = h.key(json!({})).await;
    h.mock.set_completion_tokens(200);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (path, body) = if i % 2 == 0 {
            (
                "/v1/messages",
                json!({"model": "claude", "max_tokens": 200, "stream": true,
                "messages": [{"role": "user", "content": format!("task {i}")}]}),
            )
        } else {
            (
                "/v1/responses",
                json!({"model": "gpt-4o-mini", "max_output_tokens": 200, "stream": true,
                "input": format!("task {i}")}),
            )
        };
        let (http, url, key) = (h.http.clone(), h.url.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(format!("{url}{path}"))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            status
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == 200 {
            ok += 1;
        }
    }
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 100);
    let spent: u64 = rows.iter().map(|r| r.cost.0).sum();
    assert!(
        spent <= 10_000_000,
        "spent {spent} of a 10,000,000 nano-USD cap"
    );
    assert!(ok >= 2, "some streams ran: {ok}");
    assert!(ok < 100, "the cap stopped some");
}

#[tokio::test]
async fn azure_serves_responses_natively_on_its_v1_data_plane() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "az-gpt", "input": "hi", "reasoning": {"effort": "low"}});
    assert_eq!(responses(&h, &key, &body).await.status(), 200);
    let (path, got, req) = arrived(&h);
    assert_eq!(path, "/openai/v1/responses");
    assert_eq!(got, with(&body, json!({"model": "my-deployment"})));
    assert_eq!(req.header("api-key"), Some(UPSTREAM_KEY));
}

#[tokio::test]
async fn loop_guard_token_limits_and_shadow_policies_hold_on_agent_ingresses() {
    let tail = "policies:
  - name: lg
    type: loop-guard
    config: { max_identical: 3, window_seconds: 60 }
  - name: tpm
    type: rate-limit
    config: { tokens_per_minute: 3000 }
  - name: narrow
    type: model-access
    mode: shadow
    config: { allow: [\"other-*\"] }
teams:
  - id: t1
    policies: [lg]
  - id: limited
    policies: [tpm]
  - id: trial
    policies: [narrow]
";
    let h = gateway(tail).await;
    let (_, key) = h.key(json!({})).await;
    let same = json!({"model": "gpt-4o-mini", "input": "retry me", "max_output_tokens": 10});
    for _ in 0..3 {
        assert_eq!(responses(&h, &key, &same).await.status(), 200);
    }
    let (status, code, _) = error_code(responses(&h, &key, &same).await).await;
    assert_eq!((status, code.as_str()), (429, "loop_detected"));
    let msg = json!({"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "again"}]});
    for _ in 0..3 {
        assert_eq!(messages(&h, &key, &msg).await.status(), 200);
    }
    let resp = messages(&h, &key, &msg).await;
    assert_eq!(resp.status(), 429);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(
        (err["type"].as_str(), err["error"]["code"].as_str()),
        (Some("error"), Some("loop_detected"))
    );

    // Token limit: the reservation counts `max_tokens` / `max_output_tokens`.
    let (_, limited) = h.key(json!({"team": "limited"})).await;
    let big = json!({"model": "claude", "max_tokens": 5000, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(messages(&h, &limited, &big).await.status(), 429);
    let big = json!({"model": "gpt-4o-mini", "input": "x", "max_output_tokens": 5000});
    let (status, code, _) = error_code(responses(&h, &limited, &big).await).await;
    assert_eq!((status, code.as_str()), (429, "rate_limit_exceeded"));
    // A token limit enforces the cap: one is sent even when none was asked.
    let small = json!({"model": "gpt-4o-mini", "input": "y"});
    assert_eq!(responses(&h, &limited, &small).await.status(), 200);
    assert!(arrived(&h).1["max_output_tokens"].as_u64().unwrap() <= 1000);

    // Shadow: served, and the row says what would have been refused.
    let (_, trial) = h.key(json!({"team": "trial"})).await;
    let once = json!({"model": "gpt-4o-mini", "input": "shadow"});
    assert_eq!(responses(&h, &trial, &once).await.status(), 200);
    let rows = h.ledger().await;
    assert!(
        rows[0]
            .would_reject
            .iter()
            .any(|w| w.contains("model_not_allowed")),
        "{:?}",
        rows[0]
    );
}

#[tokio::test]
async fn a_native_responses_stream_cut_short_is_billed_for_what_was_sent() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({"team": "capped"})).await;
    let body = json!({"model": "gpt-4o-mini", "stream": true, "max_output_tokens": 200,
        "input": "Write a story. [[mock:tokens=50]] [[mock:cut=20]]"});
    let resp = responses(&h, &key, &body).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("event: error"), "{text}");
    let rows = h.ledger().await;
    assert_eq!(rows[0].status, 502);
    assert!(rows[0].completion_tokens >= 20, "{:?}", rows[0]);
    assert!(rows[0].prompt_tokens > 0);
}
