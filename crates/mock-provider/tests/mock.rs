//! The mock over real HTTP: every endpoint, streaming shapes, each failure
//! mode, credential checks and the observation counters.

// Helpers outside `#[test]` fns are not covered by `allow-unwrap-in-tests`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mock_provider::{
    CacheUsage, EMBEDDING_DIM, FailureMode, MockConfig, MockHandle, MockProvider, UsageOverride,
};
use serde_json::{Value, json};

async fn start() -> MockHandle {
    MockProvider::start(MockConfig::default()).await.unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn chat(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        // 40 characters of text -> 10 prompt tokens.
        "messages": [
            {"role": "system", "content": "0123456789012345"},
            {"role": "user", "content": [{"type": "text", "text": "012345678901234567890123"}]}
        ]
    })
}

async fn post(mock: &MockHandle, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", mock.root_url()))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The `data:` payloads of an SSE body, in order.
fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn chat_completion_non_streaming() {
    let mock = start().await;
    let response = post(&mock, "/v1/chat/completions", &chat(false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["choices"][0]["message"]["role"], "assistant");
    assert_eq!(body["choices"][0]["message"]["content"], "word ".repeat(16));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 16, "total_tokens": 26})
    );
    assert_eq!(mock.calls(), 1);
    assert_eq!(mock.calls_to("/v1/chat/completions"), 1);
}

#[tokio::test]
async fn max_tokens_cuts_the_completion() {
    let mock = start().await;
    for field in ["max_tokens", "max_completion_tokens"] {
        let mut request = chat(false);
        request[field] = json!(3);
        let body: Value = post(&mock, "/v1/chat/completions", &request)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "word word word ");
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["usage"]["completion_tokens"], 3);
    }
    // A limit above what the mock generates does not cut anything.
    let mut request = chat(false);
    request["max_tokens"] = json!(100);
    let body: Value = post(&mock, "/v1/chat/completions", &request)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn chat_stream_with_and_without_usage_chunk() {
    let mock = start().await;
    mock.set_completion_tokens(5);

    let response = post(&mock, "/v1/chat/completions", &chat(true)).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = sse_data(&response.text().await.unwrap());
    // role + 5 content + finish + [DONE]
    assert_eq!(events.len(), 8, "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..7]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    for chunk in &chunks[1..6] {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["choices"][0]["delta"]["content"], "word ");
    }
    assert_eq!(chunks[6]["choices"][0]["finish_reason"], "stop");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));

    let mut request = chat(true);
    request["stream_options"] = json!({"include_usage": true});
    request["max_tokens"] = json!(4);
    let events = sse_data(
        &post(&mock, "/v1/chat/completions", &request)
            .await
            .text()
            .await
            .unwrap(),
    );
    // role + 4 content + finish + usage + [DONE]
    assert_eq!(events.len(), 8, "{events:?}");
    let finish: Value = serde_json::from_str(&events[5]).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    assert_eq!(finish["usage"], Value::Null);
    let usage: Value = serde_json::from_str(&events[6]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14})
    );
    assert_eq!(events[7], "[DONE]");
}

#[tokio::test]
async fn stream_arrives_chunk_by_chunk() {
    let mock = start().await;
    mock.set_completion_tokens(4);
    mock.set_chunk_delay(Duration::from_millis(60));
    let started = Instant::now();
    let response = post(&mock, "/v1/chat/completions", &chat(true)).await;
    let mut stream = response.bytes_stream();
    let mut arrivals = Vec::new();
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        arrivals.push((
            started.elapsed(),
            String::from_utf8(piece.to_vec()).unwrap(),
        ));
    }
    let text: String = arrivals.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(sse_data(&text).len(), 1 + 4 + 1 + 1);
    // Seven events with a delay before each but the first: at least six
    // separate arrivals, and the first long before the last.
    assert!(arrivals.len() >= 6, "{} pieces", arrivals.len());
    let (first, last) = (arrivals[0].0, arrivals.last().unwrap().0);
    assert!(
        last - first >= Duration::from_millis(300),
        "first {first:?}, last {last:?}"
    );
}

#[tokio::test]
async fn completions_plain_and_streaming() {
    let mock = start().await;
    mock.set_completion_tokens(3);
    let request = json!({"model": "gpt-3.5-turbo-instruct", "prompt": "abcdefgh"});
    let body: Value = post(&mock, "/v1/completions", &request)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "word word word ");
    assert_eq!(body["usage"]["prompt_tokens"], 2);

    let request = json!({"model": "m", "prompt": "abcd", "stream": true, "stream_options": {"include_usage": true}});
    let events = sse_data(
        &post(&mock, "/v1/completions", &request)
            .await
            .text()
            .await
            .unwrap(),
    );
    // 3 text + finish + usage + [DONE]; no role chunk for completions
    assert_eq!(events.len(), 6, "{events:?}");
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["choices"][0]["text"], "word ");
    let usage: Value = serde_json::from_str(&events[4]).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert_eq!(mock.calls_to("/v1/completions"), 2);
}

#[tokio::test]
async fn embeddings_and_models() {
    let mock = start().await;
    let request = json!({"model": "text-embedding-3-small", "input": ["abcdefgh", "ijkl"]});
    let body: Value = post(&mock, "/v1/embeddings", &request)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(
        data[0]["embedding"].as_array().unwrap().len(),
        EMBEDDING_DIM
    );
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "total_tokens": 3})
    );

    let request = json!({"model": "e", "input": "abcd", "encoding_format": "base64"});
    let body: Value = post(&mock, "/v1/embeddings", &request)
        .await
        .json()
        .await
        .unwrap();
    assert!(body["data"][0]["embedding"].is_string());

    let response = client()
        .get(format!("{}/models", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["object"], "list");
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gpt-4o-mini")
    );
}

#[tokio::test]
async fn anthropic_messages() {
    let mock = start().await;
    mock.set_completion_tokens(3);
    let request = json!({
        "model": "claude-3-5-haiku-latest", "max_tokens": 2, "system": "abcdefgh",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "abcdefgh"}]}]
    });
    let body: Value = post(&mock, "/v1/messages", &request)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["model"], "claude-3-5-haiku-latest");
    assert_eq!(
        body["content"],
        json!([{"type": "text", "text": "word word "}])
    );
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 4, "output_tokens": 2})
    );

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    streaming["max_tokens"] = json!(100);
    let response = post(&mock, "/v1/messages", &streaming).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data: Vec<Value> = sse_data(&text)
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(data[0]["message"]["usage"]["input_tokens"], 4);
    assert_eq!(
        data[3]["delta"],
        json!({"type": "text_delta", "text": "word "})
    );
    assert_eq!(data[7]["delta"]["stop_reason"], "end_turn");
    assert_eq!(data[7]["usage"]["output_tokens"], 3);

    // Anthropic requires max_tokens, and errors come in Anthropic's shape.
    let mut missing = request.clone();
    missing.as_object_mut().unwrap().remove("max_tokens");
    let response = post(&mock, "/v1/messages", &missing).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn azure_deployment_path() {
    let mock = start().await;
    let url = format!(
        "{}/openai/deployments/my-gpt/chat/completions?api-version=2024-06-01",
        mock.root_url()
    );
    let response = client()
        .post(url)
        .header("api-key", "azure-key")
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["model"], "my-gpt");
    assert_eq!(body["usage"]["prompt_tokens"], 1);
    let last = mock.last_request().unwrap();
    assert_eq!(last.path, "/openai/deployments/my-gpt/chat/completions");
    assert_eq!(last.query.as_deref(), Some("api-version=2024-06-01"));
    assert_eq!(last.api_key(), Some("azure-key"));
    assert_eq!(
        mock.calls_to("/openai/deployments/my-gpt/chat/completions"),
        1
    );
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let mock = start().await;
    let url = format!("{}/chat/completions", mock.base_url());
    let response = client().post(&url).body("{not json").send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    let response = post(&mock, "/v1/chat/completions", &json!({"messages": []})).await;
    assert_eq!(response.status(), 400);

    let response = post(&mock, "/v1/nothing", &chat(false)).await;
    assert_eq!(response.status(), 404);
    assert!(response.json::<Value>().await.unwrap()["error"]["message"].is_string());
}

#[tokio::test]
async fn records_credentials_and_enforces_expected_key() {
    let mock = start().await;
    let url = format!("{}/chat/completions", mock.base_url());
    let ok = client()
        .post(&url)
        .bearer_auth("sk-provider")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let last = mock.last_request().unwrap();
    assert_eq!(last.api_key(), Some("sk-provider"));
    assert_eq!(last.header("authorization"), Some("Bearer sk-provider"));
    assert_eq!(last.json().unwrap()["model"], "gpt-4o-mini");

    mock.set_expected_api_key(Some("sk-provider"));
    let wrong = client()
        .post(&url)
        .bearer_auth("sk-tg-client")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let body: Value = wrong.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let missing = client().post(&url).json(&chat(false)).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    for header in ["api-key", "x-api-key"] {
        let response = client()
            .post(&url)
            .header(header, "sk-provider")
            .json(&chat(false))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{header}");
    }
    // Anthropic's endpoint answers 401 in Anthropic's shape.
    let request = json!({"model": "c", "max_tokens": 5, "messages": []});
    let response = client()
        .post(format!("{}/messages", mock.base_url()))
        .header("x-api-key", "nope")
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap()["error"]["type"],
        "authentication_error"
    );

    assert_eq!(mock.requests().len(), 6);
    assert_eq!(mock.calls(), 6);
}

#[tokio::test]
async fn usage_override() {
    let mock = start().await;
    mock.set_usage(Some(UsageOverride {
        prompt_tokens: 1000,
        completion_tokens: 7,
    }));
    let body: Value = post(&mock, "/v1/chat/completions", &chat(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 1000, "completion_tokens": 7, "total_tokens": 1007})
    );
    let mut request = chat(true);
    request["stream_options"] = json!({"include_usage": true});
    let events = sse_data(
        &post(&mock, "/v1/chat/completions", &request)
            .await
            .text()
            .await
            .unwrap(),
    );
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(usage["usage"]["prompt_tokens"], 1000);
    mock.set_usage(None);
    let body: Value = post(&mock, "/v1/chat/completions", &chat(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["usage"]["prompt_tokens"], 10);
}

#[tokio::test]
async fn cache_usage_is_reported_in_each_apis_accounting() {
    let mock = start().await;
    mock.set_usage(Some(UsageOverride {
        prompt_tokens: 1000,
        completion_tokens: 7,
    }));
    mock.set_cache_usage(Some(CacheUsage {
        read: 600,
        write_5m: 250,
        write_1h: 100,
    }));
    // OpenAI: the reads are part of `prompt_tokens`; writes are not reported.
    let body: Value = post(&mock, "/v1/chat/completions", &chat(false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 1000, "completion_tokens": 7, "total_tokens": 1007,
               "prompt_tokens_details": {"cached_tokens": 600}})
    );
    let mut request = chat(true);
    request["stream_options"] = json!({"include_usage": true});
    let text = post(&mock, "/v1/chat/completions", &request)
        .await
        .text()
        .await
        .unwrap();
    let events = sse_data(&text);
    let usage: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(
        usage["usage"]["prompt_tokens_details"]["cached_tokens"],
        600
    );

    // Anthropic: `input_tokens` is the rest of the prompt, the cache beside it.
    let messages = json!({"model": "claude-3-5-haiku-latest", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hello"}]});
    let expected = json!({"input_tokens": 50, "cache_read_input_tokens": 600,
        "cache_creation_input_tokens": 350,
        "cache_creation": {"ephemeral_5m_input_tokens": 250, "ephemeral_1h_input_tokens": 100},
        "output_tokens": 7});
    let body: Value = post(&mock, "/v1/messages", &messages)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["usage"], expected);
    let mut streaming = messages.clone();
    streaming["stream"] = json!(true);
    let text = post(&mock, "/v1/messages", &streaming)
        .await
        .text()
        .await
        .unwrap();
    let start: Value = serde_json::from_str(&sse_data(&text)[0]).unwrap();
    let mut usage = expected.clone();
    usage["output_tokens"] = json!(1);
    assert_eq!(start["message"]["usage"], usage);

    // Off again: the plain usage, as before.
    mock.set_cache_usage(None);
    let body: Value = post(&mock, "/v1/messages", &messages)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 1000, "output_tokens": 7})
    );
}

#[tokio::test]
async fn failure_status_and_fail_first() {
    let mock = start().await;
    mock.set_failure(FailureMode::openai_error(
        400,
        "invalid_request_error",
        "bad `temperature`",
    ));
    let response = post(&mock, "/v1/chat/completions", &chat(false)).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["message"], "bad `temperature`");

    mock.set_failure(FailureMode::Status(503, "{}".into()));
    assert_eq!(
        post(&mock, "/v1/chat/completions", &chat(false))
            .await
            .status(),
        503
    );

    mock.set_failure(FailureMode::FailFirst(2));
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            post(&mock, "/v1/chat/completions", &chat(false))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [500, 500, 200, 200]);

    mock.set_failure(FailureMode::None);
    assert_eq!(
        post(&mock, "/v1/chat/completions", &chat(false))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn failure_malformed() {
    let mock = start().await;
    mock.set_failure(FailureMode::Malformed);
    let response = post(&mock, "/v1/chat/completions", &chat(false)).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
}

#[tokio::test]
async fn failure_hang_then_shutdown_releases_it() {
    let mock = start().await;
    mock.set_failure(FailureMode::Hang);
    let short = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let url = format!("{}/chat/completions", mock.base_url());
    let error = short
        .post(&url)
        .json(&chat(false))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(mock.calls(), 1);

    // A hanging request is in flight until the mock shuts down.
    let pending = tokio::spawn({
        let url = url.clone();
        async move { client().post(url).json(&chat(false)).send().await }
    });
    for _ in 0..100 {
        if mock.calls() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.calls(), 2);
    mock.shutdown();
    let result = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_err(), "a hanging request ends without an answer");
    // No longer accepting.
    let after = client().post(&url).json(&chat(false)).send().await;
    assert!(after.is_err());
    assert!(mock.is_shut_down());
}

#[tokio::test]
async fn failure_reset() {
    let mock = start().await;
    mock.set_failure(FailureMode::Reset);
    let error = post_err(&mock, &chat(false)).await;
    assert!(!error.is_timeout(), "{error:?}");
    // The next request on a fresh connection works once the mode is lifted.
    mock.set_failure(FailureMode::None);
    assert_eq!(
        post(&mock, "/v1/chat/completions", &chat(false))
            .await
            .status(),
        200
    );
}

async fn post_err(mock: &MockHandle, body: &Value) -> reqwest::Error {
    client()
        .post(format!("{}/chat/completions", mock.base_url()))
        .json(body)
        .send()
        .await
        .unwrap_err()
}

#[tokio::test]
async fn failure_stream_cut() {
    let mock = start().await;
    mock.set_failure(FailureMode::StreamCut { after_chunks: 3 });
    let mut request = chat(true);
    request["stream_options"] = json!({"include_usage": true});
    let response = post(&mock, "/v1/chat/completions", &request).await;
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    let mut failed = false;
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(bytes) => text.push_str(std::str::from_utf8(&bytes).unwrap()),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the stream must end in an error, got {text}");
    let events = sse_data(&text);
    // role + 3 content chunks, then nothing: no finish, no usage, no [DONE].
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(!text.contains("[DONE]") && !text.contains("\"usage\":{"));

    // With a chunk delay the cut comes after the paced chunks too.
    mock.set_chunk_delay(Duration::from_millis(5));
    let response = post(&mock, "/v1/chat/completions", &request).await;
    let mut stream = response.bytes_stream();
    let mut text = String::new();
    while let Some(Ok(bytes)) = stream.next().await {
        text.push_str(std::str::from_utf8(&bytes).unwrap());
    }
    assert_eq!(sse_data(&text).len(), 4);

    // Non-streaming: half a body, then the connection drops.
    let response = post(&mock, "/v1/chat/completions", &chat(false)).await;
    assert_eq!(response.status(), 200);
    assert!(response.bytes().await.is_err());
}

#[tokio::test]
async fn latency_and_max_in_flight() {
    let mock = start().await;
    mock.set_latency(Duration::from_millis(200));
    let started = Instant::now();
    let requests = (0..8).map(|_| {
        let mock = mock.clone();
        tokio::spawn(async move {
            post(&mock, "/v1/chat/completions", &chat(false))
                .await
                .status()
        })
    });
    for request in requests.collect::<Vec<_>>() {
        assert_eq!(request.await.unwrap(), 200);
    }
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    // All eight overlapped (they would take 1.6 s one after another).
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert_eq!(mock.max_in_flight(), 8);
    assert_eq!(mock.in_flight(), 0);
    assert_eq!(mock.calls(), 8);

    mock.reset_stats();
    assert_eq!(
        (mock.calls(), mock.max_in_flight(), mock.requests().len()),
        (0, 0, 0)
    );
    assert!(mock.last_request().is_none());
    mock.set_latency(Duration::ZERO);
    post(&mock, "/v1/chat/completions", &chat(false)).await;
    assert_eq!(mock.max_in_flight(), 1);
    assert_eq!(
        mock.calls_by_path(),
        [("/v1/chat/completions".to_owned(), 1)]
    );
}

#[tokio::test]
async fn open_streams_count_as_in_flight() {
    let mock = start().await;
    mock.set_completion_tokens(3);
    mock.set_chunk_delay(Duration::from_millis(100));
    let response = post(&mock, "/v1/chat/completions", &chat(true)).await;
    // Headers are back, the body is still coming.
    assert_eq!(mock.in_flight(), 1);
    response.text().await.unwrap();
    for _ in 0..100 {
        if mock.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(mock.in_flight(), 0);
}
