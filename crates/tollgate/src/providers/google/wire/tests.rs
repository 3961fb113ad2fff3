use super::*;
use crate::providers::sse::SseParser;

const FIXTURES: &str = "tests/fixtures/google";

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(FIXTURES)
        .join(name);
    std::fs::read(path).unwrap()
}

fn body(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

#[test]
fn the_published_thinking_answer_bills_thoughts_as_output() {
    let (answer, usage) = chat_response(
        &fixture("generate_content_thinking.json"),
        "gemini-2.5-flash",
        7,
    )
    .unwrap();
    let usage = usage.unwrap();
    assert_eq!(usage.prompt_tokens, 8);
    assert_eq!(usage.completion_tokens, 28 + 1125);
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert!(
        answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .starts_with("AI, or artificial intelligence")
    );
    assert_eq!(answer["usage"]["completion_tokens"], 1153);
    assert_eq!(answer["id"], "chatcmpl-Y3T1aPb8Cpa-1MkP0d2N0Ag");
}

#[test]
fn the_published_function_call_becomes_a_tool_call_with_cached_tokens() {
    let (answer, usage) = chat_response(
        &fixture("generate_content_function_call.json"),
        "gemini-2.0-flash",
        7,
    )
    .unwrap();
    let choice = &answer["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "set_light_values");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"brightness": 25, "color_temp": "warm"}));
    let usage = usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.cached_tokens), (112, 64));
}

#[test]
fn the_published_block_names_its_reason_and_its_prompt_count() {
    let v: Value = serde_json::from_slice(&fixture("prompt_blocked.json")).unwrap();
    let message = prompt_block(&v).unwrap();
    assert!(message.contains("PROHIBITED_CONTENT"), "{message}");
    assert_eq!(usage(&v["usageMetadata"]).unwrap().prompt_tokens, 12559);
    // Candidates present: not a prompt block.
    assert!(
        prompt_block(&json!({"promptFeedback": {"blockReason": "SAFETY"},
        "candidates": [{}]}))
        .is_none()
    );
}

#[test]
fn the_published_stream_translates_to_chunks_and_a_usage_chunk() {
    let raw = fixture("stream_generate_content.sse");
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.feed(&raw, &mut events).unwrap();
    parser.finish(&mut events).unwrap();
    assert_eq!(events.len(), 2, "CRLF-framed events");
    let mut tr = ChunkTranslator::new("gemini-2.5-flash", 1);
    let mut out = Vec::new();
    for e in &events {
        out.extend(tr.on_chunk(&e.data).unwrap());
    }
    out.extend(tr.finish());
    let data: Vec<Value> = out
        .iter()
        .filter_map(|e| match e {
            SseEvent::Data(d) => Some(serde_json::from_slice(d).unwrap()),
            SseEvent::Done | SseEvent::Native { .. } => None,
        })
        .collect();
    assert_eq!(out.last(), Some(&SseEvent::Done));
    assert_eq!(data[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(data[0]["choices"][0]["delta"]["content"], "The");
    assert_eq!(data[1]["choices"][0]["delta"]["content"], " sky is blue.");
    assert_eq!(data[1]["choices"][0]["finish_reason"], "stop");
    assert!(data[1]["choices"][0]["delta"].get("role").is_none());
    let usage = &data[2]["usage"];
    assert_eq!(usage["prompt_tokens"], 9);
    assert_eq!(usage["completion_tokens"], 5 + 24);
    assert_eq!(data[2]["choices"], json!([]));
    assert_eq!(data[0]["id"], "chatcmpl-a1b2c3");
}

#[test]
fn the_published_claude_on_vertex_answer_parses() {
    let (answer, usage) = crate::providers::translate::to_anthropic::chat_response(
        &fixture("vertex_claude_raw_predict.json"),
        7,
    )
    .unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Hello! How can I help you today?"
    );
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (10, 12));
}

#[test]
fn the_published_embedding_parses_as_floats_and_base64() {
    let (list, usage) =
        embeddings_response(&fixture("embed_content.json"), "m", false, 11).unwrap();
    assert_eq!(list["data"][0]["embedding"].as_array().unwrap().len(), 4);
    assert_eq!(usage.prompt_tokens, 11);
    let (list, _) = embeddings_response(&fixture("embed_content.json"), "m", true, 11).unwrap();
    let b64 = list["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(bytes.len(), 16);
}

#[test]
fn finish_reasons_map_to_openai() {
    for (g, o) in [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
    ] {
        assert_eq!(finish_reason(g), o, "{g}");
    }
}

#[test]
fn hostile_usage_fields_are_never_read_as_counts() {
    assert_eq!(usage(&json!({"promptTokenCount": "9"})), None);
    assert_eq!(usage(&json!({"promptTokenCount": null})), None);
    assert_eq!(usage(&json!({"promptTokenCount": -1})), None);
    assert_eq!(usage(&json!({})), None);
    let u = usage(&json!({"promptTokenCount": 5, "candidatesTokenCount": "x",
        "thoughtsTokenCount": [1], "cachedContentTokenCount": 99}))
    .unwrap();
    assert_eq!(
        (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
        (5, 0, 5)
    );
    let u = usage(
        &json!({"promptTokenCount": u64::MAX, "candidatesTokenCount": u64::MAX,
        "thoughtsTokenCount": u64::MAX, "toolUsePromptTokenCount": 3}),
    )
    .unwrap();
    assert_eq!((u.prompt_tokens, u.completion_tokens), (u64::MAX, u64::MAX));
}

#[test]
fn the_request_carries_roles_system_sampling_and_the_smaller_cap() {
    let req = chat_request(
        &body(json!({"model": "m", "max_tokens": 50, "max_completion_tokens": 20, "n": 2,
            "seed": 3, "stop": "X",
            "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}},
            "messages": [
                {"role": "developer", "content": "Rules."},
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "c"}]})),
        Host::AiStudio,
    )
    .unwrap();
    assert_eq!(req["systemInstruction"]["parts"][0]["text"], "Rules.");
    let contents = req["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 2, "two user turns merge: {req}");
    assert_eq!(contents[0]["parts"].as_array().unwrap().len(), 2);
    assert_eq!(contents[1]["role"], "model");
    let config = &req["generationConfig"];
    assert_eq!(config["maxOutputTokens"], 20);
    assert_eq!(config["candidateCount"], 2);
    assert_eq!(config["stopSequences"], json!(["X"]));
    assert_eq!(config["responseJsonSchema"], json!({"type": "object"}));
    assert!(req.get("tools").is_none() && req.get("toolConfig").is_none());
}

#[test]
fn ill_typed_fields_are_client_errors() {
    let bad = [
        json!({"messages": "hi"}),
        json!({"messages": [{"content": "no role"}]}),
        json!({"messages": [{"role": "robot", "content": "x"}]}),
        json!({"messages": [], "max_tokens": "10"}),
        json!({"messages": [], "temperature": "hot"}),
        json!({"messages": [], "stop": 5}),
        json!({"messages": [], "tools": {}}),
        json!({"messages": [], "tool_choice": "sometimes"}),
        json!({"messages": [], "response_format": {"type": "yaml"}}),
        json!({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]}),
    ];
    for b in bad {
        assert!(chat_request(&body(b.clone()), Host::Vertex).is_err(), "{b}");
    }
}

#[test]
fn vertex_fetches_image_urls_and_ai_studio_does_not() {
    let b = body(json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png?x=1"}}]}]}));
    let req = chat_request(&b, Host::Vertex).unwrap();
    assert_eq!(
        req["contents"][0]["parts"][0]["fileData"],
        json!({"mimeType": "image/png", "fileUri": "https://example.com/a.png?x=1"})
    );
    assert!(
        chat_request(&b, Host::AiStudio)
            .unwrap_err()
            .contains("data:image")
    );
}

#[test]
fn a_named_tool_choice_allows_only_that_function() {
    let req = chat_request(
        &body(json!({"messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}}})),
        Host::AiStudio,
    )
    .unwrap();
    assert_eq!(
        req["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["f"]})
    );
    assert_eq!(
        req["tools"][0]["functionDeclarations"][0],
        json!({"name": "f"})
    );
}

#[test]
fn a_blocked_answer_is_not_mistaken_for_an_empty_one_in_a_stream() {
    let mut tr = ChunkTranslator::new("m", 1);
    // No usage reported: the usage chunk is left out rather than zero.
    assert_eq!(tr.finish(), vec![SseEvent::Done]);
    assert!(tr.on_chunk(b"not json").is_err());
}

proptest::proptest! {
    #[test]
    fn translators_never_panic(s in ".{0,200}", n in proptest::prelude::any::<i64>()) {
        let v = json!({"messages": [{"role": "user", "content": s}], "max_tokens": n,
            "candidates": [{"content": {"parts": [{"text": s}, {"functionCall": {"name": s}}]},
                "finishReason": s, "index": n}], "usageMetadata": {"promptTokenCount": n}});
        let _ = chat_request(v.as_object().unwrap(), Host::AiStudio);
        let _ = chat_response(v.to_string().as_bytes(), "m", 0);
        let mut tr = ChunkTranslator::new("m", 0);
        let _ = tr.on_chunk(v.to_string().as_bytes());
        let _ = tr.on_chunk(s.as_bytes());
        let _ = tr.finish();
        let _ = embeddings_request(v.as_object().unwrap(), "m");
        let _ = embeddings_response(s.as_bytes(), "m", true, 1);
        let _ = error_body(s.as_bytes());
    }
}

#[test]
fn vertex_embedding_counts_are_used_only_when_every_one_is_a_count() {
    let raw = |a: Value, b: Value| {
        json!({"predictions": [
            {"embeddings": {"values": [0.1, 0.2], "statistics": {"token_count": a}}},
            {"embeddings": {"values": [0.3, 0.4], "statistics": {"token_count": b}}}]})
        .to_string()
    };
    let count = |a: Value, b: Value| {
        vertex_embeddings_response(raw(a, b).as_bytes(), "m", false, 99)
            .unwrap()
            .1
            .prompt_tokens
    };
    assert_eq!(count(json!(6.0), json!(4)), 10);
    assert_eq!(count(json!(6.5), json!(4)), 99);
    assert_eq!(count(json!("6"), json!(4)), 99);
    assert_eq!(count(json!(null), json!(4)), 99);
    assert_eq!(count(json!(-1.0), json!(4)), 99);
    assert_eq!(count(json!(1e300), json!(4)), 99);
    let (req, bound) =
        vertex_embeddings_request(&body(json!({"input": ["ab", "cde"], "dimensions": 2}))).unwrap();
    assert_eq!(bound, 5);
    assert_eq!(req["instances"][1]["content"], "cde");
    assert_eq!(req["parameters"]["outputDimensionality"], 2);
    assert!(vertex_embeddings_response(b"{}", "m", false, 1).is_err());
}
