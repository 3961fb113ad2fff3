//! The built-in `mock` provider: determinism, the `max_tokens` cap, streams
//! with and without usage, embeddings.

use base64::Engine as _;
use serde_json::json;

use super::*;
use crate::providers::{MOCK_REPLY, Usage, build, http_client};

fn mock() -> std::sync::Arc<dyn crate::providers::Provider> {
    build(&config(ProviderKind::Mock, "", None), http_client())
}

fn words() -> u64 {
    MOCK_REPLY.split(' ').count() as u64
}

#[tokio::test]
async fn chat_is_deterministic_and_reports_usage() {
    let body = json!({"model": "mock-1", "messages": [{"role": "user", "content": "hello there"}]});
    let (a, usage_a) = expect_complete(
        mock()
            .send(call(Endpoint::ChatCompletions, body.clone(), false))
            .await,
    );
    let (b, usage_b) = expect_complete(
        mock()
            .send(call(Endpoint::ChatCompletions, body, false))
            .await,
    );
    let (a, b): (Value, Value) = (
        serde_json::from_slice(&a).unwrap(),
        serde_json::from_slice(&b).unwrap(),
    );
    assert_eq!(a["id"], b["id"]);
    assert_eq!(a["choices"], b["choices"]);
    assert_eq!(usage_a, usage_b);
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["model"], "mock-1");
    assert_eq!(a["choices"][0]["message"]["content"], MOCK_REPLY);
    assert_eq!(a["choices"][0]["finish_reason"], "stop");
    let usage = usage_a.unwrap();
    assert_eq!(usage.completion_tokens, words());
    assert!(usage.prompt_tokens > 0);
    // The body's usage is the one reported.
    assert_eq!(
        crate::providers::sse::usage_from_body(&serde_json::to_vec(&a).unwrap()).unwrap(),
        Some(usage)
    );

    // A longer prompt counts more prompt tokens.
    let long =
        json!({"model": "mock-1", "messages": [{"role": "user", "content": "hello ".repeat(100)}]});
    let (_, long_usage) = expect_complete(
        mock()
            .send(call(Endpoint::ChatCompletions, long, false))
            .await,
    );
    assert!(long_usage.unwrap().prompt_tokens > usage.prompt_tokens + 100);
}

#[tokio::test]
async fn max_tokens_caps_the_completion() {
    for field in ["max_tokens", "max_completion_tokens"] {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], field: 3});
        let (body, usage) = expect_complete(
            mock()
                .send(call(Endpoint::ChatCompletions, body, false))
                .await,
        );
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(usage.unwrap().completion_tokens, 3);
        assert_eq!(body["choices"][0]["finish_reason"], "length");
        assert_eq!(body["choices"][0]["message"]["content"], "This is a");
    }
    let body = json!({"model": "m", "prompt": "hi", "max_tokens": 0});
    let (body, usage) =
        expect_complete(mock().send(call(Endpoint::Completions, body, false)).await);
    assert_eq!(usage.unwrap().completion_tokens, 0);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], "");
}

#[tokio::test]
async fn stream_honours_include_usage() {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true,
        "stream_options": {"include_usage": true}, "max_tokens": 4});
    let items = collect(expect_stream(
        mock()
            .send(call(Endpoint::ChatCompletions, body, true))
            .await,
    ))
    .await;
    let events: Vec<SseEvent> = items.into_iter().map(Result::unwrap).collect();
    assert_eq!(events.last(), Some(&SseEvent::Done));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(data_json).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "This is a deterministic");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    let SseEvent::Data(ref raw) = events[events.len() - 2] else {
        panic!()
    };
    let usage = crate::providers::sse::usage_from_chunk(raw).unwrap();
    assert_eq!(usage.completion_tokens, 4);
    // Only the last chunk has usage.
    let with_usage = events.iter().filter(
        |e| matches!(e, SseEvent::Data(d) if crate::providers::sse::usage_from_chunk(d).is_some()),
    );
    assert_eq!(with_usage.count(), 1);

    let body =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let items = collect(expect_stream(
        mock()
            .send(call(Endpoint::ChatCompletions, body, true))
            .await,
    ))
    .await;
    assert!(items.iter().all(|i| match i.as_ref().unwrap() {
        SseEvent::Data(d) => !String::from_utf8_lossy(d).contains("usage"),
        SseEvent::Done | SseEvent::Native { .. } => true,
    }));
    // role chunk + one per word + finish chunk + Done
    assert_eq!(items.len() as u64, words() + 3);
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    let body = json!({"model": "emb", "input": ["a", "b"], "dimensions": 8});
    let (body, usage) = expect_complete(mock().send(call(Endpoint::Embeddings, body, false)).await);
    let body: Value = serde_json::from_slice(&body).unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let v: Vec<f64> = data[0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(v.len(), 8);
    assert!(
        (v.iter().map(|x| x * x).sum::<f64>() - 1.0).abs() < 1e-3,
        "unit length"
    );
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert_eq!(
        usage,
        Some(Usage {
            prompt_tokens: 2,
            completion_tokens: 0,
            ..Usage::default()
        })
    );

    let body = json!({"model": "emb", "input": "a", "encoding_format": "base64"});
    let (body, _) = expect_complete(mock().send(call(Endpoint::Embeddings, body, false)).await);
    let body: Value = serde_json::from_slice(&body).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw.len(), 4 * crate::providers::mock::DEFAULT_DIMENSIONS);
}

#[tokio::test]
async fn malformed_requests_are_rejected_as_400() {
    let cases = [
        (
            Endpoint::ChatCompletions,
            json!({"model": "m"}),
            "`messages`",
        ),
        (
            Endpoint::ChatCompletions,
            json!({"model": "m", "messages": []}),
            "`messages`",
        ),
        (
            Endpoint::ChatCompletions,
            json!({"model": "m", "messages": [{"role":"user","content":"x"}], "max_tokens": -1}),
            "`max_tokens`",
        ),
        (Endpoint::Completions, json!({"model": "m"}), "`prompt`"),
        (
            Endpoint::Embeddings,
            json!({"model": "m", "input": 3}),
            "`input`",
        ),
        (
            Endpoint::Embeddings,
            json!({"model": "m", "input": "x", "encoding_format": "hex"}),
            "`encoding_format`",
        ),
    ];
    for (endpoint, body, needle) in cases {
        let err = mock()
            .send(call(endpoint, body, false))
            .await
            .err()
            .unwrap();
        let ProviderError::Rejected { status, body, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(status, 400);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body["error"]["message"].as_str().unwrap().contains(needle),
            "{body}"
        );
    }
}
