//! Kind `anthropic` (translation out and back, streaming included) and the
//! `/v1/messages` ingress translators, against fixtures.

use futures_util::StreamExt;
use serde_json::json;

use super::*;
use crate::providers::sse::SseParser;
use crate::providers::translate::to_anthropic::{self, ChunkTranslator};
use crate::providers::{
    MessagesStreamTranslator, Usage, build, http_client, messages_to_openai,
    openai_to_messages_response,
};

const PNG: &str = "data:image/png;base64,iVBORw0KGgo=";

/// An OpenAI request using everything the translation covers.
fn openai_request() -> Value {
    json!({
        "model": "claude-x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": PNG}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"cat\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"},
            {"role": "user", "content": "Thanks"}
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "description": "Look up",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
        "tool_choice": "auto",
        "max_completion_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "u-1"
    })
}

/// What Anthropic must receive for [`openai_request`].
fn anthropic_request() -> Value {
    json!({
        "model": "claude-x",
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "cat"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a cat"},
                {"type": "text", "text": "Thanks"}
            ]}
        ],
        "tools": [{"name": "lookup", "description": "Look up",
            "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}],
        "tool_choice": {"type": "auto"},
        "max_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"}
    })
}

const MESSAGE: &str = r#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-x-2025",
  "content":[{"type":"text","text":"A cat. "},{"type":"text","text":"Looking it up."},
             {"type":"tool_use","id":"toolu_2","name":"lookup","input":{"q":"cat breeds"}}],
  "stop_reason":"tool_use","stop_sequence":null,
  "usage":{"input_tokens":20,"output_tokens":9,"cache_read_input_tokens":80,"cache_creation_input_tokens":0}}"#;

const STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_02\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x-2025\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_read_input_tokens\":5}}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me \"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"check.\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_3\",\"name\":\"lookup\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\": \"}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"dogs\\\"}\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":17}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

#[test]
fn request_translates_to_anthropic() {
    let body = openai_request().as_object().unwrap().clone();
    assert_eq!(
        to_anthropic::chat_request(&body).unwrap(),
        anthropic_request()
    );
}

#[test]
fn max_tokens_defaults_and_unsupported_input_is_named() {
    let body = json!({"model": "c", "messages": [{"role": "user", "content": "hi"}], "parallel_tool_calls": false});
    let req = to_anthropic::chat_request(body.as_object().unwrap()).unwrap();
    assert_eq!(req["max_tokens"], to_anthropic::DEFAULT_MAX_TOKENS);
    assert_eq!(
        req["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    );
    let audio =
        json!({"model": "c", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]});
    let err = to_anthropic::chat_request(audio.as_object().unwrap()).unwrap_err();
    assert!(
        err.contains("`messages[0]`") && err.contains("`input_audio`"),
        "{err}"
    );
}

#[test]
fn ingress_request_round_trips() {
    // The `/v1/messages` request that an Anthropic SDK would send for the
    // same conversation comes out canonical, and goes back to Anthropic as is.
    let canonical = messages_to_openai(&anthropic_request()).unwrap();
    let back = to_anthropic::chat_request(&canonical).unwrap();
    let mut expected = anthropic_request();
    expected["system"] = json!([{"type": "text", "text": "Be brief."}]);
    assert_eq!(back, expected);
    assert_eq!(canonical["max_tokens"], 300);
    assert_eq!(
        canonical["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );
    assert_eq!(
        canonical["messages"][3],
        json!({"role": "tool", "tool_call_id": "toolu_1", "content": "a cat"})
    );
    assert_eq!(
        canonical["messages"][2]["tool_calls"][0]["function"]["arguments"],
        "{\"q\":\"cat\"}"
    );
    assert_eq!(
        canonical["messages"][1]["content"][1]["image_url"]["url"],
        PNG
    );
}

#[test]
fn ingress_validation_messages() {
    for (body, needle) in [
        (json!([]), "JSON object"),
        (json!({"max_tokens": 5, "messages": []}), "`model`"),
        (json!({"model": "m", "messages": []}), "`max_tokens`"),
        (json!({"model": "m", "max_tokens": 5}), "`messages`"),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}),
            "`role`",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document"}]}]}),
            "`document`",
        ),
    ] {
        let err = messages_to_openai(&body).unwrap_err();
        assert!(err.contains(needle), "{err} should name {needle}");
    }
    let streaming = messages_to_openai(&json!({"model": "m", "max_tokens": 5, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}))
    .unwrap();
    assert_eq!(streaming["stream_options"]["include_usage"], true);
}

#[test]
fn response_round_trips() {
    let (openai, usage) = to_anthropic::chat_response(MESSAGE.as_bytes(), 1_700_000_000).unwrap();
    assert_eq!(
        usage,
        Usage {
            prompt_tokens: 100,
            completion_tokens: 9,
            cached_tokens: 80,
            ..Usage::default()
        }
    );
    assert_eq!(openai["object"], "chat.completion");
    assert_eq!(openai["model"], "claude-x-2025");
    let choice = &openai["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "A cat. Looking it up.");
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["name"],
        "lookup"
    );
    assert_eq!(
        choice["message"]["tool_calls"][0]["function"]["arguments"],
        "{\"q\":\"cat breeds\"}"
    );
    assert_eq!(
        openai["usage"]["prompt_tokens_details"]["cached_tokens"],
        80
    );

    let back = openai_to_messages_response(openai.to_string().as_bytes(), "claude-alias").unwrap();
    assert_eq!(back["type"], "message");
    assert_eq!(back["id"], "msg_01");
    assert_eq!(back["model"], "claude-alias");
    assert_eq!(back["stop_reason"], "tool_use");
    assert_eq!(
        back["content"],
        json!([
            {"type": "text", "text": "A cat. Looking it up."},
            {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": {"q": "cat breeds"}}
        ])
    );
    assert_eq!(back["usage"]["input_tokens"], 20);
    assert_eq!(back["usage"]["cache_read_input_tokens"], 80);
    assert_eq!(back["usage"]["output_tokens"], 9);
}

/// Anthropic SSE bytes → canonical events, through the real parser.
fn translate_stream(bytes: &[u8], include_usage: bool) -> Vec<SseEvent> {
    let mut parser = SseParser::new();
    let mut raw = Vec::new();
    parser.feed(bytes, &mut raw).unwrap();
    parser.finish(&mut raw).unwrap();
    let mut t = ChunkTranslator::new("claude-x", 1, include_usage);
    raw.iter()
        .flat_map(|e| t.on_event(e.event.as_deref(), &e.data).unwrap())
        .collect()
}

fn check_openai_chunks(events: &[SseEvent]) {
    assert_eq!(events.last(), Some(&SseEvent::Done));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(data_json).collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "msg_02")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Let me check.");
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"].get("tool_calls"))
        .collect();
    assert_eq!(calls[0][0]["id"], "toolu_3");
    assert_eq!(calls[0][0]["index"], 0);
    assert_eq!(calls[0][0]["function"]["name"], "lookup");
    let args: String = calls
        .iter()
        .filter_map(|c| c[0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"q\": \"dogs\"}");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 30);
    assert_eq!(usage["usage"]["completion_tokens"], 17);
    assert_eq!(usage["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
}

#[test]
fn stream_translates_to_openai_chunks_and_back() {
    let events = translate_stream(STREAM.as_bytes(), true);
    check_openai_chunks(&events);

    // Back to Anthropic, as the `/v1/messages` ingress writes it.
    let mut t = MessagesStreamTranslator::new("claude-alias");
    let mut out = Vec::new();
    for e in &events {
        out.extend_from_slice(&t.on_event(e));
    }
    assert!(t.finish().is_empty(), "the message is closed once");
    let mut parser = SseParser::new();
    let mut raw = Vec::new();
    parser.feed(&out, &mut raw).unwrap();
    let names: Vec<&str> = raw.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let data: Vec<Value> = raw
        .iter()
        .map(|e| serde_json::from_slice(&e.data).unwrap())
        .collect();
    assert!(
        raw.iter()
            .zip(&data)
            .all(|(e, d)| d["type"] == e.event.as_deref().unwrap())
    );
    assert_eq!(data[0]["message"]["model"], "claude-alias");
    assert_eq!(
        data[5]["content_block"],
        json!({"type": "tool_use", "id": "toolu_3", "name": "lookup", "input": {}})
    );
    assert_eq!(data[5]["index"], 1);
    assert_eq!(
        data[7]["delta"],
        json!({"type": "input_json_delta", "partial_json": "\"dogs\"}"})
    );
    assert_eq!(data[9]["delta"]["stop_reason"], "tool_use");
    assert_eq!(data[9]["usage"]["output_tokens"], 17);
    assert_eq!(data[9]["usage"]["input_tokens"], 25);
    assert_eq!(
        t.usage(),
        Some(Usage {
            prompt_tokens: 30,
            completion_tokens: 17,
            cached_tokens: 5,
            ..Usage::default()
        })
    );
}

#[test]
fn ingress_stream_without_done_is_still_closed() {
    let mut t = MessagesStreamTranslator::new("m");
    let mut out = t.chunk(br#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":"Hi"},"finish_reason":null}]}"#).to_vec();
    out.extend_from_slice(&t.finish());
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("event: message_start\n"));
    assert!(text.contains("\"text_delta\""));
    assert!(
        text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{text}"
    );
}

#[test]
fn stream_error_event_is_a_failure() {
    let mut t = ChunkTranslator::new("m", 1, true);
    let err = t.on_event(
        Some("error"),
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    assert!(err.unwrap_err().contains("Overloaded"));
}

#[tokio::test]
async fn provider_sends_translated_request_with_anthropic_headers() {
    let server = serve(|_| async { response(200, "application/json", MESSAGE) }).await;
    let provider = build(
        &config(
            ProviderKind::Anthropic,
            &format!("{}/v1", server.base_url),
            Some(KEY),
        ),
        http_client(),
    );
    let (body, usage) = expect_complete(
        provider
            .send(call(Endpoint::ChatCompletions, openai_request(), false))
            .await,
    );
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        usage,
        Some(Usage {
            prompt_tokens: 100,
            completion_tokens: 9,
            cached_tokens: 80,
            ..Usage::default()
        })
    );
    let seen = server.seen.lock()[0].clone();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], KEY);
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert_eq!(seen.headers["x-request-id"], "req-42");
    assert!(!seen.headers.contains_key("authorization"));
    assert_eq!(seen.json(), anthropic_request());
}

#[tokio::test]
async fn provider_streams_translated_chunks() {
    // The body stays open after `message_stop`: the stream must end anyway.
    let server = serve(|_| async {
        let body = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(Bytes::from_static(STREAM.as_bytes()))
        })
        .chain(futures_util::stream::pending());
        response(
            200,
            "text/event-stream",
            axum::body::Body::from_stream(body),
        )
    })
    .await;
    let provider = build(
        &config(ProviderKind::Anthropic, &server.base_url, Some(KEY)),
        http_client(),
    );
    let mut body = openai_request();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let items = collect(expect_stream(
        provider
            .send(call(Endpoint::ChatCompletions, body, true))
            .await,
    ))
    .await;
    let events: Vec<SseEvent> = items.into_iter().map(Result::unwrap).collect();
    check_openai_chunks(&events);
    let sent = server.seen.lock()[0].json();
    assert_eq!(sent["stream"], true);
    assert!(
        sent.get("stream_options").is_none(),
        "OpenAI-only fields are not sent to Anthropic"
    );
}

#[tokio::test]
async fn provider_errors_become_openai_shaped_and_other_endpoints_are_refused() {
    let server = serve(|rec: Recorded| async move {
        let key = rec.headers["x-api-key"].to_str().unwrap().to_owned();
        let body = json!({"type": "error", "error": {"type": "invalid_request_error", "message": format!("bad key {key}")}});
        response(400, "application/json", body.to_string())
    })
    .await;
    let provider = build(
        &config(ProviderKind::Anthropic, &server.base_url, Some(KEY)),
        http_client(),
    );
    let err = provider
        .send(call(Endpoint::ChatCompletions, openai_request(), false))
        .await
        .err()
        .unwrap();
    assert_no_key(&err);
    let ProviderError::Rejected { status, body, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(status, 400);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["message"], "bad key *****");

    for endpoint in [Endpoint::Completions, Endpoint::Embeddings] {
        let err = provider
            .send(call(endpoint, json!({"model": "c", "input": "x"}), false))
            .await
            .err()
            .unwrap();
        let ProviderError::Rejected { status, body, .. } = err else {
            panic!("{err:?}")
        };
        assert_eq!(status, 400);
        let message = String::from_utf8_lossy(&body).into_owned();
        assert!(
            message.contains("not supported by provider `up`"),
            "{message}"
        );
        assert!(message.contains(endpoint.path()), "{message}");
    }
    assert_eq!(
        server.seen.lock().len(),
        1,
        "unsupported endpoints never reach Anthropic"
    );
}
