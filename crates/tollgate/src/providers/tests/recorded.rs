//! Real provider answers (`tests/fixtures/recorded/`, origins in its
//! README), parsed by the gateway's own parsers: text, tool calls, finish
//! reasons and the usage that is billed. Nothing here was written by hand,
//! so a parser that only understands the mock's shapes fails here.

use aws_smithy_eventstream::frame::write_message_to;
use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::providers::bedrock::converse;
use crate::providers::bedrock::eventstream::Decoder;
use crate::providers::google::wire::{self, Host};
use crate::providers::translate::to_anthropic;
use crate::providers::{SseEvent, Usage, native, sse};

macro_rules! recorded {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/recorded/", $name))
    };
}

fn data(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .filter_map(|e| match e {
            SseEvent::Data(d) => serde_json::from_slice(d).ok(),
            _ => None,
        })
        .collect()
}

fn usage(prompt: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        ..Usage::default()
    }
}

#[test]
fn gemini_generate_content() {
    let raw = recorded!("gemini-generate-content.json");
    let (answer, billed) = wire::chat_response(raw.as_bytes(), "gemini-3-pro-preview", 0).unwrap();
    let choice = &answer["choices"][0];
    assert_eq!(
        choice["message"]["content"],
        "There are **3** r's in strawberry.\n\nHere is the breakdown: st**r**awbe**rr**y."
    );
    assert_eq!(choice["finish_reason"], "stop");
    // 28 answer tokens and 244 thinking tokens are both billed as output.
    assert_eq!(billed, Some(usage(9, 28 + 244)));
    assert_eq!(answer["usage"]["completion_tokens"], 272);
}

#[test]
fn gemini_stream_generate_content() {
    let mut stream = wire::ChunkTranslator::new("gemini-3-pro-preview", 0);
    let mut events = Vec::new();
    for line in recorded!("gemini-stream-generate-content.chunks.txt").lines() {
        events.extend(stream.on_chunk(line.as_bytes()).unwrap());
    }
    events.extend(stream.finish());
    let chunks = data(&events);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        "There are **3** \"r\"s in strawberry.\n\nst**r**awbe**rr**y"
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );
    // The last chunk's counts are the totals: 23 answer + 185 thinking.
    let last = chunks
        .iter()
        .rev()
        .find(|c| c["usage"].is_object())
        .unwrap();
    assert_eq!(
        sse::usage_from_chunk(last.to_string().as_bytes()),
        Some(usage(9, 23 + 185))
    );
    assert!(matches!(events.last(), Some(SseEvent::Done)));
}

#[test]
fn gemini_3_tool_call_keeps_its_thought_signature_for_the_next_turn() {
    let raw = recorded!("gemini-3-tool-call.json");
    let (answer, billed) = wire::chat_response(raw.as_bytes(), "gemini-3-pro-preview", 0).unwrap();
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"location": "San Francisco"}));
    assert_eq!(billed, Some(usage(29, 15 + 1801)));
    let signature = "Eqo+Cqc+Ab4+9vtgONaaz6qwy6WXdp7gCd2w0X+Wz2gaBgY0Gv6A12JKo0y5vQwf9YQFyhMbKr1E9m17VT6HXd7jXzjaGYaE";
    let id = call["id"].as_str().unwrap();
    assert!(id.ends_with(&format!("__thought__{signature}")), "{id}");

    // The call echoed back by a client goes to Gemini with the signature.
    let next: Map<String, Value> = serde_json::from_value(json!({"messages": [
        {"role": "user", "content": "Weather in SF?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": id, "content": "{\"temp_f\": 61}"}]}))
    .unwrap();
    let sent = wire::chat_request(&next, Host::AiStudio).unwrap();
    let part = &sent["contents"][1]["parts"][0];
    assert_eq!(part["functionCall"]["name"], "weather");
    assert_eq!(part["thoughtSignature"], signature);
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"]["name"],
        "weather"
    );
}

#[test]
fn vertex_predict_embeddings() {
    let raw = recorded!("vertex-predict-embeddings.json");
    let (list, billed) =
        wire::vertex_embeddings_response(raw.as_bytes(), "text-embedding-005", false, 1_000)
            .unwrap();
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 5);
    assert_eq!(data[1]["index"], 1);
    // Vertex's own token counts, 5 + 6, not the byte bound.
    assert_eq!(billed.prompt_tokens, 11);
}

#[test]
fn vertex_claude_raw_predict() {
    let raw = recorded!("vertex-claude-raw-predict.json");
    let (answer, billed) = to_anthropic::chat_response(raw.as_bytes(), 0).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "{\"name\": \"John Smith\", \"email\": \"john@example.com\", \"plan_interest\": \"Enterprise\", \"demo_requested\": true}"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(billed, usage(78, 42));
    // The native `/v1/messages` path reads the same usage.
    assert_eq!(native::messages_usage(raw.as_bytes()), Some(usage(78, 42)));
}

#[test]
fn bedrock_converse() {
    let raw = recorded!("bedrock-converse.json");
    let (answer, billed) = converse::response(raw.as_bytes(), "id", "m", 0).unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "Let me count the \"r\"s in \"strawberry\":\n\ns-t-**r**-a-w-b-e-**r**-**r**-y\n\nThere are **3** \"r\"s in \"strawberry.\""
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(billed, Some(usage(22, 57)));
}

#[test]
fn bedrock_converse_tool_calls() {
    let raw = recorded!("bedrock-converse-tool-calls.json");
    let (answer, billed) = converse::response(raw.as_bytes(), "id", "m", 0).unwrap();
    let message = &answer["choices"][0]["message"];
    assert_eq!(
        message["content"],
        "Sure! I'll look up both values simultaneously right away!"
    );
    let calls = message["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "tooluse_hr5juciYZJwUHpRczsw13R");
    assert_eq!(calls[0]["function"]["name"], "get_resistor_value");
    assert_eq!(calls[1]["function"]["name"], "get_capacitor_value");
    let args: Value =
        serde_json::from_str(calls[1]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"ref": "C1"}));
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(billed, Some(usage(694, 110)));
}

/// One recorded ConverseStream event (`{"<eventType>": payload}`), framed
/// as AWS frames it: the recording holds the decoded JSON events, so the
/// binary framing (prelude, headers, both CRCs) is made here with
/// `aws-smithy-eventstream`, the crate the AWS SDKs use.
fn frame(event: &Value) -> Vec<u8> {
    let (kind, payload) = event.as_object().unwrap().iter().next().unwrap();
    let message = Message::new(Bytes::from(payload.to_string()))
        .add_header(Header::new(
            ":event-type",
            HeaderValue::String(kind.clone().into()),
        ))
        .add_header(Header::new(
            ":content-type",
            HeaderValue::String("application/json".into()),
        ))
        .add_header(Header::new(
            ":message-type",
            HeaderValue::String("event".into()),
        ));
    let mut out = Vec::new();
    write_message_to(&message, &mut out).unwrap();
    out
}

#[test]
fn bedrock_converse_stream() {
    let bytes: Vec<u8> = recorded!("bedrock-converse-stream.chunks.txt")
        .lines()
        .map(|l| frame(&serde_json::from_str(l).unwrap()))
        .collect::<Vec<_>>()
        .concat();
    let mut decoder = Decoder::default();
    let mut stream = converse::StreamTranslator::new("id", "m", 0, true);
    let mut events = Vec::new();
    // Cut anywhere, as the network cuts it.
    for piece in bytes.chunks(7) {
        for f in decoder.feed(piece).unwrap() {
            events.extend(stream.on_frame(&f).unwrap());
        }
    }
    assert!(!decoder.is_mid_frame());
    events.extend(stream.finish());
    let chunks = data(&events);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        "Let me count the \"r\"s in \"strawberry\":\n\ns-t-**r**-a-w-b-e-**r**-**r**-y\n\nThere are **3** r's in \"strawberry.\""
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );
    let last = chunks
        .iter()
        .rev()
        .find(|c| c["usage"].is_object())
        .unwrap();
    assert_eq!(
        sse::usage_from_chunk(last.to_string().as_bytes()),
        Some(usage(22, 55))
    );
    assert!(matches!(events.last(), Some(SseEvent::Done)));
}

#[test]
fn azure_chat_completions_and_responses() {
    let chat = recorded!("azure-chat-completions.json");
    assert_eq!(
        sse::usage_from_body(chat.as_bytes()).unwrap(),
        Some(usage(13, 30))
    );
    let responses = recorded!("azure-responses.json");
    assert_eq!(
        native::responses_body_usage(responses.as_bytes()),
        Some(usage(11, 11))
    );
}
