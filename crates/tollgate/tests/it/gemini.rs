//! Kind `gemini` end to end: the gateway in front of the mock's Gemini API
//! (`/v1beta/models/{m}:generateContent` and friends), through
//! `/v1/chat/completions` (streaming, tools, images), `/v1/embeddings` and
//! `/v1/messages`, with usage → ledger → budget checked exactly.

use std::sync::Arc;

use futures_util::StreamExt;
use mock_provider::MockConfig;
use serde_json::{Value, json};
use tollgate::types::SystemClock;

use crate::common::*;

pub const GEMINI_KEY: &str = "AIzaSy-gemini-test-key-d0n0tl3ak";

/// `gflash` ($1 / $2 per 1M tokens) and `gembed` on a `gemini` provider
/// served by the mock.
pub async fn harness() -> Harness {
    let providers = format!(
        "  - name: gem\n    kind: gemini\n    base_url: {{mock}}beta\n    api_key: {GEMINI_KEY}\n    timeout_s: 5\n"
    );
    let models = "  - name: g3\n    targets:\n      - provider: gem\n        model: gemini-3-flash-preview\n    price: { input_per_mtok: 1.0, output_per_mtok: 2.0 }\n    max_output_tokens: 1000\n  - name: gflash\n    targets:\n      - provider: gem\n        model: gemini-2.5-flash\n    price: { input_per_mtok: 1.0, output_per_mtok: 2.0 }\n    max_output_tokens: 1000\n  - name: gembed\n    targets:\n      - provider: gem\n        model: gemini-embedding-001\n";
    let mock = MockConfig {
        expected_api_key: Some(GEMINI_KEY.to_owned()),
        ..MockConfig::default()
    };
    Harness::start_with_models(mock, &providers, models, "", Arc::new(SystemClock)).await
}

fn chat(text: &str) -> Value {
    json!({"model": "gflash", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": text}]})
}

/// The cost at $1 / $2 per 1M tokens, in nano-USD.
fn cost(prompt: u64, completion: u64) -> u64 {
    prompt * 1_000 + completion * 2_000
}

async fn sse_lines(resp: reqwest::Response) -> Vec<String> {
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn chat_reaches_generate_content_with_the_key_header_and_the_reserved_cap() {
    let h = harness().await;
    let (_, key) = h.key(json!({"budget_usd": 10, "period": "daily"})).await;
    let resp = h.chat(&key, &chat("Hello there")).await;
    assert_eq!(resp.status(), 200);
    let cost_header = resp.headers()["x-tollgate-cost-usd"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "word ".repeat(16));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // "Be brief." + "Hello there" = 20 characters -> 5 mock tokens.
    assert_eq!(body["usage"]["prompt_tokens"], 5);
    assert_eq!(body["usage"]["completion_tokens"], 16);

    let req = h.mock.last_request().unwrap();
    assert_eq!(req.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(req.header("x-goog-api-key"), Some(GEMINI_KEY));
    assert!(req.query.is_none(), "the key never goes in the URL");
    let sent = req.json().unwrap();
    // The reservation (the model's 1000 max output tokens) reaches Google.
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 1000);
    assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(sent["contents"][0]["role"], "user");
    assert_eq!(sent["contents"][0]["parts"][0]["text"], "Hello there");

    let rows = h.ledger().await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].prompt_tokens, rows[0].completion_tokens), (5, 16));
    assert_eq!(rows[0].cost.0, cost(5, 16));
    assert_eq!(rows[0].provider, "gem");
    assert!(cost_header.starts_with("0.0000"), "{cost_header}");
}

#[tokio::test]
async fn a_clamped_max_tokens_and_sampling_fields_map_to_generation_config() {
    let h = harness().await;
    let (_, key) = h.key(json!({"budget_usd": 10, "period": "daily"})).await;
    let mut body = chat("Hi");
    body["max_tokens"] = json!(5000);
    body["max_completion_tokens"] = json!(7);
    body["temperature"] = json!(0.2);
    body["top_p"] = json!(0.9);
    body["stop"] = json!(["END"]);
    body["response_format"] = json!({"type": "json_object"});
    let resp = h.chat(&key, &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], 7);
    let sent = h.mock.last_request().unwrap().json().unwrap();
    let config = &sent["generationConfig"];
    // max_tokens 5000 exceeds the model's 1000 and is clamped; the smaller cap wins.
    assert_eq!(config["maxOutputTokens"], 7);
    assert_eq!(config["temperature"], 0.2);
    assert_eq!(config["topP"], 0.9);
    assert_eq!(config["stopSequences"], json!(["END"]));
    assert_eq!(config["responseMimeType"], "application/json");
}

#[tokio::test]
async fn streams_translate_chunk_by_chunk_with_usage_from_the_last_chunk() {
    let h = harness().await;
    let (_, key) = h.key(json!({"budget_usd": 10, "period": "daily"})).await;
    let mut body = chat("Hello there [[mock:tokens=4]] [[mock:gemini_thoughts=30]]");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = h.chat(&key, &body).await;
    assert_eq!(resp.status(), 200);
    let lines = sse_lines(resp).await;
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "word ".repeat(4));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let usage = &chunks.last().unwrap()["usage"];
    // Thinking tokens are billed as output.
    assert_eq!(usage["completion_tokens"], 4 + 30);
    let req = h.mock.last_request().unwrap();
    assert_eq!(
        req.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(req.query.as_deref(), Some("alt=sse"));
    let rows = h.ledger().await;
    let prompt = usage["prompt_tokens"].as_u64().unwrap();
    assert_eq!(rows[0].completion_tokens, 34);
    assert_eq!(rows[0].cost.0, cost(prompt, 34));
}

#[tokio::test]
async fn a_stream_without_include_usage_is_billed_and_shows_no_usage_chunk() {
    let h = harness().await;
    let (_, key) = h.key(json!({})).await;
    let mut body = chat("Hi [[mock:tokens=3]]");
    body["stream"] = json!(true);
    let lines = sse_lines(h.chat(&key, &body).await).await;
    assert!(
        lines.iter().all(|l| !l.contains("\"usage\":{")),
        "{lines:?}"
    );
    let rows = h.ledger().await;
    assert_eq!(rows[0].completion_tokens, 3);
}

#[tokio::test]
async fn thoughts_are_billed_as_output_and_cached_tokens_at_their_rate() {
    let h = harness().await;
    let (_, key) = h.key(json!({})).await;
    let resp = h
        .chat(&key, &chat("Think hard [[mock:gemini_thoughts=100]]"))
        .await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 116);
    let rows = h.ledger().await;
    assert_eq!(rows[0].completion_tokens, 116);
    let prompt = rows[0].prompt_tokens;
    assert_eq!(rows[0].cost.0, cost(prompt, 116));

    let resp = h
        .chat(
            &key,
            &chat("A long shared prefix, cached [[mock:gemini_cached=4]]"),
        )
        .await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
}

#[tokio::test]
async fn tools_go_out_as_function_declarations_and_calls_come_back_as_tool_calls() {
    let h = harness().await;
    let (_, key) = h.key(json!({})).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let body = json!({"model": "gflash", "tools": tools, "tool_choice": "required",
        "messages": [{"role": "user", "content": "Weather in Paris? [[mock:gemini_call=get_weather]]"}]});
    let resp = h.chat(&key, &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    let sent = h.mock.last_request().unwrap().json().unwrap();
    let decl = &sent["tools"][0]["functionDeclarations"][0];
    assert_eq!(decl["name"], "get_weather");
    assert_eq!(
        decl["parametersJsonSchema"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(sent["toolConfig"]["functionCallingConfig"]["mode"], "ANY");

    // The result goes back as a functionResponse named after the call.
    let id = call["id"].as_str().unwrap();
    let follow_up = json!({"model": "gflash", "tools": tools, "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": id, "content": "{\"temp_c\": 21}"}]});
    let resp = h.chat(&key, &follow_up).await;
    assert_eq!(resp.status(), 200);
    let sent = h.mock.last_request().unwrap().json().unwrap();
    let contents = sent["contents"].as_array().unwrap();
    assert_eq!(contents[1]["role"], "model");
    assert_eq!(
        contents[1]["parts"][0]["functionCall"]["name"],
        "get_weather"
    );
    assert_eq!(contents[2]["role"], "user");
    let response = &contents[2]["parts"][0]["functionResponse"];
    assert_eq!(response["name"], "get_weather");
    assert_eq!(response["response"]["temp_c"], 21);
}

#[tokio::test]
async fn a_streamed_tool_call_arrives_as_one_tool_call_delta() {
    let h = harness().await;
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "gflash", "stream": true,
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "messages": [{"role": "user", "content": "Look it up [[mock:gemini_call=lookup]]"}]});
    let lines = sse_lines(h.chat(&key, &body).await).await;
    let chunk: Value = serde_json::from_str(&lines[0]).unwrap();
    let delta = &chunk["choices"][0]["delta"];
    assert_eq!(delta["tool_calls"][0]["index"], 0);
    assert_eq!(delta["tool_calls"][0]["function"]["name"], "lookup");
    assert_eq!(chunk["choices"][0]["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn images_go_inline_and_an_image_url_is_a_clear_400() {
    let h = harness().await;
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "gflash", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]});
    let resp = h.chat(&key, &body).await;
    assert_eq!(resp.status(), 200);
    let sent = h.mock.last_request().unwrap().json().unwrap();
    let part = &sent["contents"][0]["parts"][1]["inlineData"];
    assert_eq!(part["mimeType"], "image/png");
    assert_eq!(part["data"], "iVBORw0KGgo=");

    let calls = h.mock.calls();
    let body = json!({"model": "gflash", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]});
    let (status, code, err) = error_code(h.chat(&key, &body).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("data:image"),
        "{err}"
    );
    assert_eq!(h.mock.calls(), calls, "never forwarded");
}

#[tokio::test]
async fn embeddings_use_embed_content_and_batch_embed_contents() {
    let h = harness().await;
    let (_, key) = h.key(json!({})).await;
    let resp = h
        .post(
            "/v1/embeddings",
            &key,
            &json!({"model": "gembed", "input": "hello world"}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 8);
    let req = h.mock.last_request().unwrap();
    assert_eq!(req.path, "/v1beta/models/gemini-embedding-001:embedContent");
    assert_eq!(req.header("x-goog-api-key"), Some(GEMINI_KEY));

    let resp = h
        .post(
            "/v1/embeddings",
            &key,
            &json!({"model": "gembed", "input": ["a", "bb", "ccc"], "dimensions": 4}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 3);
    assert_eq!(body["data"][2]["index"], 2);
    assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 4);
    let req = h.mock.last_request().unwrap();
    assert_eq!(
        req.path,
        "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    );
    let sent = req.json().unwrap();
    assert_eq!(sent["requests"][1]["model"], "models/gemini-embedding-001");
    assert_eq!(sent["requests"][1]["outputDimensionality"], 4);
    // No usage from Google: billed the UTF-8 byte bound of the inputs.
    assert_eq!(body["usage"]["prompt_tokens"], 6);
    let rows = h.ledger().await;
    assert!(rows.iter().all(|r| r.prompt_tokens > 0 && r.cost.0 > 0));

    let (status, code, _) = error_code(
        h.post(
            "/v1/embeddings",
            &key,
            &json!({"model": "gembed", "input": [[1, 2, 3]]}),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
}

#[tokio::test]
async fn a_safety_block_is_a_400_naming_the_reason_billed_for_the_prompt() {
    let h = harness().await;
    let (_, key) = h.key(json!({"budget_usd": 1, "period": "daily"})).await;
    let (status, code, err) = error_code(
        h.chat(
            &key,
            &chat("Something bad [[mock:gemini_block=PROHIBITED_CONTENT]]"),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (400, "content_filter"));
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("PROHIBITED_CONTENT"),
        "{err}"
    );
    let mut body = chat("Something bad again [[mock:gemini_block=SAFETY]]");
    body["stream"] = json!(true);
    let (status, code, err) = error_code(h.chat(&key, &body).await).await;
    assert_eq!((status, code.as_str()), (400, "content_filter"));
    assert!(err["error"]["message"].as_str().unwrap().contains("SAFETY"));

    let rows = h.ledger().await;
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.status, 400);
        assert!(row.prompt_tokens > 0, "Google counted the prompt: {row:?}");
        assert_eq!(row.completion_tokens, 0);
        assert_eq!(row.cost.0, cost(row.prompt_tokens, 0));
    }
}

#[tokio::test]
async fn a_candidate_stopped_for_safety_is_a_content_filter_finish() {
    let h = harness().await;
    let (_, key) = h.key(json!({})).await;
    let body: Value = h
        .chat(&key, &chat("Hmm [[mock:gemini_finish=RECITATION]]"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "content_filter");
}

#[tokio::test]
async fn messages_ingress_reaches_a_gemini_target_in_anthropic_format() {
    let h = harness().await;
    let (_, key) = h.key(json!({})).await;
    let resp = h
        .http
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(
            &json!({"model": "gflash", "max_tokens": 3, "system": "Terse.",
            "messages": [{"role": "user", "content": "Hello"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "word ".repeat(3));
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["usage"]["output_tokens"], 3);
    let sent = h.mock.last_request().unwrap().json().unwrap();
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 3);
    assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "Terse.");
}

#[tokio::test]
async fn a_wrong_provider_key_is_a_502_that_never_shows_the_key() {
    let h = harness().await;
    h.mock.set_expected_api_key(Some("some-other-key"));
    let (_, key) = h.key(json!({})).await;
    let (status, code, err) = error_code(h.chat(&key, &chat("Hi")).await).await;
    assert_eq!((status, code.as_str()), (502, "upstream_error"));
    assert!(err["error"]["message"].as_str().unwrap().contains("gem"));
    assert!(!err.to_string().contains(GEMINI_KEY));
}

#[tokio::test]
async fn a_cut_stream_is_billed_for_what_was_sent() {
    let h = harness().await;
    let (_, key) = h.key(json!({"budget_usd": 1, "period": "daily"})).await;
    let mut body = chat("Hi [[mock:cut=3]]");
    body["stream"] = json!(true);
    let resp = h.chat(&key, &body).await;
    let _ = sse_lines(resp).await;
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 1);
    // Google's usage so far: the 3 tokens that arrived.
    assert_eq!(rows[0].completion_tokens, 3);
    assert!(rows[0].prompt_tokens > 0);
}

#[tokio::test]
async fn hostile_usage_numbers_never_break_the_budget() {
    let h = harness().await;
    // A worst case is about 1000 output tokens at $2/M: $0.002 and a bit.
    let (_, key) = h.key(json!({"budget_usd": 0.01, "period": "daily"})).await;
    // Ill-typed counts: the gateway bills its own estimate, not zero.
    let body: Value = h
        .chat(&key, &chat("Hi [[mock:gemini_usage=bad]]"))
        .await
        .json()
        .await
        .unwrap();
    assert!(body["choices"][0]["message"]["content"].is_string());
    let rows = h.ledger().await;
    assert!(
        rows[0].prompt_tokens > 0 && rows[0].completion_tokens >= 16,
        "{:?}",
        rows[0]
    );
    // No usage at all: the same.
    h.chat(&key, &chat("Hi [[mock:gemini_usage=absent]]")).await;
    // Absurd counts: billed at most the reservation (the input estimate
    // and 1000 output tokens).
    h.chat(&key, &chat("Hi [[mock:usage=900000000000,900000000000]]"))
        .await;
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row.status, 200, "{row:?}");
        assert!(row.cost.0 > 0 && row.cost.0 < 2_200_000, "{row:?}");
    }
    let spent: u64 = rows.iter().map(|r| r.cost.0).sum();
    assert!(spent <= 10_000_000, "spent {spent} nano-USD of a $0.01 cap");
}

#[tokio::test]
async fn a_budget_for_exactly_n_requests_holds_under_concurrency_with_streams() {
    let h = harness().await;
    // Each request: "Be brief." + "Hello there" = 5 prompt tokens (mock),
    // 16 output tokens, max_tokens 16. The reservation's input estimate
    // is higher; the settled cost is exact.
    let per_request = cost(5, 16);
    let n = 40u64;
    // A cap for exactly n settled requests.
    let cap_nanos = per_request * n;
    let (_, key) = h
        .key(json!({"budget_usd": cap_nanos as f64 / 1e9, "period": "daily"}))
        .await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let http = h.http.clone();
        let url = format!("{}/v1/chat/completions", h.url);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut body = chat("Hello there");
            body["max_tokens"] = json!(16);
            if i % 2 == 0 {
                body["stream"] = json!(true);
            }
            let resp = http
                .post(url)
                .bearer_auth(key)
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
        match t.await.unwrap() {
            200 => ok += 1,
            402 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    let rows = h.ledger().await;
    let spent: u64 = rows.iter().map(|r| r.cost.0).sum();
    assert!(spent <= cap_nanos, "spent {spent} > cap {cap_nanos}");
    let served: Vec<_> = rows.iter().filter(|r| r.status == 200).collect();
    assert_eq!(served.len(), ok);
    assert!(ok > 0 && ok as u64 <= n, "{ok} served");
    // Every served request billed exactly what the mock reported.
    for r in &served {
        assert_eq!((r.prompt_tokens, r.completion_tokens), (5, 16), "{r:?}");
        assert_eq!(r.cost.0, per_request);
    }
    assert_eq!(spent, per_request * ok as u64);
}

/// The mock's signature for a call of `name` (`mock-provider/src/google.rs`).
fn mock_signature(name: &str) -> String {
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("mock-thought:{name}"));
    format!("CiQB+/{encoded}")
}

#[tokio::test]
async fn a_gemini_3_thought_signature_rides_in_the_tool_call_id_and_goes_back() {
    let h = harness().await;
    let (_, key) = h.key(json!({})).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let body = json!({"model": "g3", "tools": tools,
        "messages": [{"role": "user", "content": "Weather in Paris? [[mock:gemini_call=get_weather]]"}]});
    let resp = h.chat(&key, &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    let call = answer["choices"][0]["message"]["tool_calls"][0].clone();
    let id = call["id"].as_str().unwrap().to_owned();
    let signature = mock_signature("get_weather");
    assert!(
        id.ends_with(&format!("__thought__{signature}")),
        "the signature is carried in the id: {id}"
    );

    // The follow-up turn, the call echoed as an OpenAI client does: the
    // signature goes back on the functionCall part, the id without it.
    let follow_up = |call: Value, id: &str| {
        json!({"model": "g3", "tools": tools, "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": id, "content": "{\"temp_c\": 21}"}]})
    };
    let resp = h.chat(&key, &follow_up(call.clone(), &id)).await;
    assert_eq!(resp.status(), 200);
    let sent = h.mock.last_request().unwrap().json().unwrap();
    let part = &sent["contents"][1]["parts"][0];
    assert_eq!(part["functionCall"]["name"], "get_weather");
    assert_eq!(part["thoughtSignature"], signature);
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"]["name"],
        "get_weather"
    );

    // Without the signature Gemini 3 refuses the turn, as Google does: the
    // mock is strict, so the round trip above is what made it pass.
    let bare_id = id.split("__thought__").next().unwrap().to_owned();
    let mut bare = call.clone();
    bare["id"] = json!(bare_id);
    let resp = h.chat(&key, &follow_up(bare, &bare_id)).await;
    let status = resp.status();
    let text = resp.text().await.unwrap();
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("thought_signature"), "{text}");

    // Streamed, the call's id carries the signature too.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let lines = sse_lines(h.chat(&key, &streamed).await).await;
    let chunk: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(chunk["choices"][0]["delta"]["tool_calls"][0]["id"], id);
}

#[tokio::test]
async fn a_gemini_3_tool_loop_through_v1_messages_keeps_the_signature() {
    let h = harness().await;
    let (_, key) = h.key(json!({})).await;
    let messages = |body: Value| {
        h.http
            .post(format!("{}/v1/messages", h.url))
            .header("x-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
    };
    let tools = json!([{"name": "get_weather", "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
    let resp = messages(json!({"model": "g3", "max_tokens": 50, "tools": tools,
        "messages": [{"role": "user", "content": "Weather? [[mock:gemini_call=get_weather]]"}]}))
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["stop_reason"], "tool_use");
    let tool_use = body["content"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "tool_use")
        .unwrap()
        .clone();
    let id = tool_use["id"].as_str().unwrap().to_owned();
    assert!(id.contains("__thought__"), "{id}");

    let resp = messages(json!({"model": "g3", "max_tokens": 50, "tools": tools, "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [tool_use]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "21 C"}]}]}))
    .await
    .unwrap();
    let status = resp.status();
    assert_eq!(status, 200, "{}", resp.text().await.unwrap());
    let sent = h.mock.last_request().unwrap().json().unwrap();
    let part = &sent["contents"][1]["parts"][0];
    assert_eq!(part["functionCall"]["name"], "get_weather");
    assert_eq!(part["thoughtSignature"], mock_signature("get_weather"));
}

#[tokio::test]
async fn completions_reach_generate_content_as_one_turn_streamed_or_not() {
    let h = harness().await;
    let (_, key) = h.key(json!({"budget_usd": 10, "period": "daily"})).await;
    let body = json!({"model": "gflash", "prompt": "Complete me", "max_tokens": 4, "stop": "\n"});
    let resp = h.post("/v1/completions", &key, &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"][0]["text"], "word ".repeat(4));
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["completion_tokens"], 4);
    let sent = h.mock.last_request().unwrap();
    assert!(sent.path.ends_with(":generateContent"), "{}", sent.path);
    let sent = sent.json().unwrap();
    assert_eq!(sent["contents"][0]["role"], "user");
    assert_eq!(sent["contents"][0]["parts"][0]["text"], "Complete me");
    assert_eq!(sent["generationConfig"]["maxOutputTokens"], 4);
    assert_eq!(sent["generationConfig"]["stopSequences"], json!(["\n"]));

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let lines = sse_lines(h.post("/v1/completions", &key, &streamed).await).await;
    assert_eq!(lines.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "word ".repeat(4));
    // The client did not ask for usage: it is billed, not shown.
    assert!(
        chunks
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null))
    );

    let list = json!({"model": "gflash", "prompt": ["a", "b", "c"]});
    let (status, code, _) = error_code(h.post("/v1/completions", &key, &list).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"));
    let rows = h.ledger().await;
    let ok: Vec<_> = rows.iter().filter(|r| r.status == 200).collect();
    assert_eq!(ok.len(), 2);
    assert!(
        ok.iter()
            .all(|r| r.completion_tokens == 4 && r.cost.0 == cost(r.prompt_tokens, 4))
    );
}
