//! What coding agents need from the mock: the OpenAI Responses API
//! (`/v1/responses`, JSON and typed SSE events), Anthropic's
//! `/v1/messages/count_tokens`, and Messages answers with the blocks agents
//! rely on: `thinking` (when the request enables it) and `tool_use` (when
//! the prompt holds `[[mock:tool_use]]` and the turn is not already a tool
//! result). Built with JSON trees rather than byte by byte: these routes
//! are not on the benchmark's hot path.

use bytes::Bytes;
use serde_json::{Value, json};

use crate::wire::Answer;

/// Thinking text and the tokens it is billed as (part of `output_tokens`).
const THINKING: &str = "Let me think about this.";
const THINKING_TOKENS: u64 = 5;
/// Hidden reasoning tokens a Responses answer reports when the request
/// sets `reasoning` (part of `output_tokens`, as OpenAI counts them).
pub(crate) const REASONING_TOKENS: u64 = 7;
const TOOL_ARGUMENTS: &str = r#"{"path":"src/main.rs"}"#;

/// What the request asks the answer to contain besides text.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    /// Answer with a call of this tool (the request's first tool).
    pub tool: Option<String>,
    pub thinking: bool,
    pub reasoning: bool,
    /// `max_output_tokens` of a Responses request.
    pub max_output_tokens: Option<u64>,
}

impl Extras {
    pub fn of(body: &[u8], tool_use: bool) -> Extras {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return Extras::default();
        };
        let first_tool = v
            .pointer("/tools/0/name")
            .or_else(|| v.pointer("/tools/0/function/name"))
            .and_then(Value::as_str);
        // A turn answering a tool call gets text: the conversation moves on.
        let answering = last_is_tool_result(&v);
        Extras {
            tool: first_tool
                .filter(|_| tool_use && !answering)
                .map(str::to_owned),
            thinking: v.pointer("/thinking/type").and_then(Value::as_str) == Some("enabled"),
            reasoning: v.get("reasoning").is_some_and(Value::is_object),
            max_output_tokens: v.get("max_output_tokens").and_then(Value::as_u64),
        }
    }

    /// Whether a Messages answer needs more than the plain text one.
    pub fn rich(&self) -> bool {
        self.tool.is_some() || self.thinking
    }
}

fn last_is_tool_result(v: &Value) -> bool {
    if let Some(last) = v
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
    {
        return last
            .get("content")
            .and_then(Value::as_array)
            .is_some_and(|blocks| {
                blocks
                    .iter()
                    .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
            });
    }
    v.get("input")
        .and_then(Value::as_array)
        .and_then(|i| i.last())
        .is_some_and(|i| i.get("type").and_then(Value::as_str) == Some("function_call_output"))
}

fn text(a: &Answer) -> String {
    String::from_utf8_lossy(a.content).into_owned()
}

fn event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `{"input_tokens": N}`.
pub(crate) fn count_tokens(prompt_tokens: u64) -> Bytes {
    Bytes::from(json!({ "input_tokens": prompt_tokens }).to_string())
}

fn anthropic_usage(a: &Answer, x: &Extras) -> Value {
    let cache = a.cache.unwrap_or_default();
    let write = cache.write_5m.saturating_add(cache.write_1h);
    json!({
        "input_tokens": a.prompt_tokens.saturating_sub(cache.read).saturating_sub(write),
        "cache_read_input_tokens": cache.read,
        "cache_creation_input_tokens": write,
        "cache_creation": {"ephemeral_5m_input_tokens": cache.write_5m, "ephemeral_1h_input_tokens": cache.write_1h},
        "output_tokens": anthropic_output(a, x),
    })
}

fn anthropic_output(a: &Answer, x: &Extras) -> u64 {
    a.completion_tokens
        .saturating_add(if x.thinking { THINKING_TOKENS } else { 0 })
}

fn stop_reason(a: &Answer, x: &Extras) -> &'static str {
    match (&x.tool, a.truncated) {
        (_, true) => "max_tokens",
        (Some(_), false) => "tool_use",
        (None, false) => "end_turn",
    }
}

/// A Messages answer with thinking and/or tool-use blocks.
pub(crate) fn anthropic_message(a: &Answer, x: &Extras) -> Bytes {
    let mut content = Vec::new();
    if x.thinking {
        content
            .push(json!({"type": "thinking", "thinking": THINKING, "signature": "mock-signature"}));
    }
    content.push(json!({"type": "text", "text": text(a)}));
    if let Some(tool) = &x.tool {
        content.push(
            json!({"type": "tool_use", "id": format!("toolu_mock_{}", a.id), "name": tool,
            "input": serde_json::from_str::<Value>(TOOL_ARGUMENTS).unwrap_or(Value::Null)}),
        );
    }
    let body = json!({
        "id": format!("msg_mock_{}", a.id), "type": "message", "role": "assistant", "model": a.model,
        "content": content, "stop_reason": stop_reason(a, x), "stop_sequence": null,
        "usage": anthropic_usage(a, x),
    });
    Bytes::from(body.to_string())
}

/// The stream of [`anthropic_message`]; `cut_after` keeps the opening
/// events and that many text deltas.
pub(crate) fn anthropic_stream(a: &Answer, x: &Extras, cut_after: Option<u64>) -> Vec<Bytes> {
    let mut usage = anthropic_usage(a, x);
    usage["output_tokens"] = json!(1);
    let mut out = vec![event(
        "message_start",
        &json!({"type": "message_start", "message": {"id": format!("msg_mock_{}", a.id), "type": "message",
            "role": "assistant", "model": a.model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": usage}}),
    )];
    let mut index = 0;
    if x.thinking {
        out.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ));
        out.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "thinking_delta", "thinking": THINKING}}),
        ));
        out.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "signature_delta", "signature": "mock-signature"}}),
        ));
        out.push(event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    out.push(event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": index,
        "content_block": {"type": "text", "text": ""}}),
    ));
    out.push(event("ping", &json!({"type": "ping"})));
    let tokens = cut_after.map_or(a.tokens, |c| c.min(a.tokens));
    for _ in 0..tokens {
        out.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "text_delta", "text": "word "}}),
        ));
    }
    if cut_after.is_some() {
        return out;
    }
    out.push(event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": index}),
    ));
    if let Some(tool) = &x.tool {
        index += 1;
        out.push(event("content_block_start", &json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": format!("toolu_mock_{}", a.id), "name": tool, "input": {}}})));
        out.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": TOOL_ARGUMENTS}}),
        ));
        out.push(event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    out.push(event(
        "message_delta",
        &json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason(a, x), "stop_sequence": null},
        "usage": {"output_tokens": anthropic_output(a, x)}}),
    ));
    out.push(event("message_stop", &json!({"type": "message_stop"})));
    out
}

fn responses_usage(a: &Answer, x: &Extras) -> Value {
    let reasoning = if x.reasoning { REASONING_TOKENS } else { 0 };
    let output = a.completion_tokens.saturating_add(reasoning);
    json!({
        "input_tokens": a.prompt_tokens,
        "input_tokens_details": {"cached_tokens": a.cache.map_or(0, |c| c.read)},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": a.prompt_tokens.saturating_add(output),
    })
}

fn message_item(a: &Answer, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": format!("msg_mock_{}", a.id), "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(a: &Answer, tool: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_mock_{}", a.id), "call_id": format!("call_mock_{}", a.id),
        "name": tool, "arguments": arguments, "status": status})
}

fn reasoning_item(a: &Answer) -> Value {
    json!({"type": "reasoning", "id": format!("rs_mock_{}", a.id), "summary": []})
}

fn response(a: &Answer, x: &Extras, status: &str, output: Vec<Value>, usage: Value) -> Value {
    json!({
        "id": format!("resp_mock_{}", a.id), "object": "response", "created_at": a.created,
        "status": status, "error": null,
        "incomplete_details": if status == "incomplete" { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "instructions": null, "max_output_tokens": x.max_output_tokens, "model": a.model, "output": output,
        "parallel_tool_calls": true, "previous_response_id": null, "reasoning": {"effort": null, "summary": null},
        "store": false, "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": null, "metadata": {},
    })
}

fn status(a: &Answer) -> &'static str {
    if a.truncated {
        "incomplete"
    } else {
        "completed"
    }
}

fn output(a: &Answer, x: &Extras) -> Vec<Value> {
    let mut out = Vec::new();
    if x.reasoning {
        out.push(reasoning_item(a));
    }
    out.push(message_item(a, &text(a), "completed"));
    if let Some(tool) = &x.tool {
        out.push(call_item(a, tool, TOOL_ARGUMENTS, "completed"));
    }
    out
}

/// A complete Responses API `response`.
pub(crate) fn responses_body(a: &Answer, x: &Extras) -> Bytes {
    Bytes::from(response(a, x, status(a), output(a, x), responses_usage(a, x)).to_string())
}

/// The Responses API stream of [`responses_body`]; `cut_after` keeps the
/// opening events and that many text deltas.
pub(crate) fn responses_stream(a: &Answer, x: &Extras, cut_after: Option<u64>) -> Vec<Bytes> {
    let mut seq = 0u64;
    let mut out = Vec::new();
    let mut push = |kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(seq);
        seq += 1;
        out.push(event(kind, &data));
    };
    let opening = response(a, x, "in_progress", vec![], Value::Null);
    push("response.created", json!({"response": opening.clone()}));
    push("response.in_progress", json!({"response": opening}));
    let mut index = 0;
    if x.reasoning {
        push(
            "response.output_item.added",
            json!({"output_index": index, "item": reasoning_item(a)}),
        );
        push(
            "response.output_item.done",
            json!({"output_index": index, "item": reasoning_item(a)}),
        );
        index += 1;
    }
    let item_id = format!("msg_mock_{}", a.id);
    let mut open = message_item(a, "", "in_progress");
    open["content"] = json!([]);
    push(
        "response.output_item.added",
        json!({"output_index": index, "item": open}),
    );
    push(
        "response.content_part.added",
        json!({"item_id": item_id, "output_index": index, "content_index": 0,
        "part": {"type": "output_text", "text": "", "annotations": []}}),
    );
    let tokens = cut_after.map_or(a.tokens, |c| c.min(a.tokens));
    for _ in 0..tokens {
        push(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": index, "content_index": 0,
            "delta": "word ", "logprobs": []}),
        );
    }
    if cut_after.is_some() {
        return out;
    }
    let full = text(a);
    push(
        "response.output_text.done",
        json!({"item_id": item_id, "output_index": index, "content_index": 0,
        "text": full, "logprobs": []}),
    );
    push(
        "response.content_part.done",
        json!({"item_id": item_id, "output_index": index, "content_index": 0,
        "part": {"type": "output_text", "text": full, "annotations": []}}),
    );
    push(
        "response.output_item.done",
        json!({"output_index": index, "item": message_item(a, &full, "completed")}),
    );
    if let Some(tool) = &x.tool {
        index += 1;
        let fc_id = format!("fc_mock_{}", a.id);
        push(
            "response.output_item.added",
            json!({"output_index": index, "item": call_item(a, tool, "", "in_progress")}),
        );
        push(
            "response.function_call_arguments.delta",
            json!({"item_id": fc_id, "output_index": index,
            "delta": TOOL_ARGUMENTS}),
        );
        push(
            "response.function_call_arguments.done",
            json!({"item_id": fc_id, "output_index": index,
            "arguments": TOOL_ARGUMENTS}),
        );
        push(
            "response.output_item.done",
            json!({"output_index": index,
            "item": call_item(a, tool, TOOL_ARGUMENTS, "completed")}),
        );
    }
    let done = response(a, x, status(a), output(a, x), responses_usage(a, x));
    push(
        &format!("response.{}", status(a)),
        json!({"response": done}),
    );
    out
}
