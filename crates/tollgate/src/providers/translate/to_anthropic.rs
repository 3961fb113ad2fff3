//! Canonical OpenAI chat → Anthropic Messages, and Anthropic's answers
//! (JSON, SSE, errors) back to canonical OpenAI, for the `anthropic`
//! provider.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{
    finish_reason_from_stop, image_source_from_url, text_of, tool_choice_to_anthropic,
    tool_to_anthropic, usage_from_anthropic, usage_to_openai,
};
use crate::providers::{SseEvent, Usage};
use crate::types::clip;

/// Anthropic requires `max_tokens`; this is used when the request sets neither
/// `max_tokens` nor `max_completion_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Builds the Anthropic request for a canonical chat request. The error is a
/// message for the client (it becomes a 400).
pub fn chat_request(body: &Map<String, Value>) -> Result<Value, String> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` must be an array")?;
    let mut system: Vec<Value> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("`messages[{i}].role` is missing"))?;
        let content = message.get("content").unwrap_or(&Value::Null);
        let at = |e: String| format!("`messages[{i}]`: {e}");
        let (role, blocks) = match role {
            "system" | "developer" => {
                let text = text_of(content).map_err(at)?;
                if !text.is_empty() {
                    system.push(json!({ "type": "text", "text": text }));
                }
                continue;
            }
            "user" => ("user", content_blocks(content).map_err(at)?),
            "assistant" => {
                let mut blocks = content_blocks(content).map_err(at)?;
                if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
                    for call in calls {
                        blocks.push(tool_use_block(call).map_err(at)?);
                    }
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = message
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| at("a `tool` message needs `tool_call_id`".to_owned()))?;
                let text = text_of(content).map_err(at)?;
                (
                    "user",
                    vec![json!({ "type": "tool_result", "tool_use_id": id, "content": text })],
                )
            }
            other => {
                return Err(at(format!(
                    "role `{}` is not one of `system`, `developer`, `user`, `assistant`, `tool`",
                    clip(other)
                )));
            }
        };
        if blocks.is_empty() {
            continue;
        }
        // Anthropic wants user and assistant turns to alternate: consecutive
        // messages of one role (e.g. several tool results) become one turn.
        match out.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(existing) = last["content"].as_array_mut() {
                    existing.extend(blocks);
                }
            }
            _ => out.push(json!({ "role": role, "content": blocks })),
        }
    }

    let mut req = Map::new();
    if let Some(model) = body.get("model") {
        req.insert("model".into(), model.clone());
    }
    req.insert("messages".into(), Value::Array(out));
    if !system.is_empty() {
        req.insert("system".into(), Value::Array(system));
    }
    let cap = ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .find_map(|k| body.get(k).filter(|v| !v.is_null()));
    let max_tokens = match cap {
        Some(v) => v
            .as_u64()
            .ok_or("`max_tokens` must be a non-negative integer")?,
        None => DEFAULT_MAX_TOKENS,
    };
    req.insert("max_tokens".into(), json!(max_tokens));
    if let Some(t) = body.get("temperature").and_then(Value::as_f64) {
        // OpenAI allows 0–2, Anthropic 0–1.
        req.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = body.get("top_p").filter(|v| !v.is_null()) {
        req.insert("top_p".into(), p.clone());
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            req.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(list)) if !list.is_empty() => {
            req.insert("stop_sequences".into(), Value::Array(list.clone()));
        }
        _ => {}
    }
    if let Some(n) = body.get("n").and_then(Value::as_u64).filter(|n| *n > 1) {
        return Err(format!(
            "`n` = {n}: Anthropic models give one choice per request"
        ));
    }
    if let Some(tools) = body
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        let tools: Result<Vec<Value>, String> = tools.iter().map(tool_to_anthropic).collect();
        req.insert("tools".into(), Value::Array(tools?));
        let parallel = body.get("parallel_tool_calls").and_then(Value::as_bool);
        if let Some(choice) = tool_choice_to_anthropic(body.get("tool_choice"), parallel)? {
            req.insert("tool_choice".into(), choice);
        }
    }
    if let Some(user) = body.get("user").and_then(Value::as_str) {
        req.insert("metadata".into(), json!({ "user_id": user }));
    }
    if body.get("stream").and_then(Value::as_bool) == Some(true) {
        req.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(req))
}

/// OpenAI message `content` → Anthropic content blocks.
fn content_blocks(content: &Value) -> Result<Vec<Value>, String> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({ "type": "text", "text": s })]),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => Ok(json!({ "type": "text", "text": part.get("text").cloned().unwrap_or(json!("")) })),
                Some("image_url") => {
                    let url = part
                        .pointer("/image_url/url")
                        .or_else(|| part.get("image_url"))
                        .and_then(Value::as_str)
                        .ok_or("an `image_url` part has no `image_url.url`")?;
                    Ok(json!({ "type": "image", "source": image_source_from_url(url)? }))
                }
                other => Err(format!("content parts of type `{}` cannot be sent to an Anthropic model", clip(other.unwrap_or("untyped")))),
            })
            .collect(),
        _ => Err("`content` must be a string, an array of parts or null".to_owned()),
    }
}

/// OpenAI assistant `tool_calls[]` entry → Anthropic `tool_use` block.
fn tool_use_block(call: &Value) -> Result<Value, String> {
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .ok_or("a tool call has no `id`")?;
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .ok_or("a tool call has no `function.name`")?;
    let args = call
        .pointer("/function/arguments")
        .and_then(Value::as_str)
        .unwrap_or("");
    let input = if args.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str::<Value>(args).map_err(|e| {
            format!(
                "tool call `{}`: `function.arguments` is not JSON: {e}",
                clip(id)
            )
        })?
    };
    Ok(json!({ "type": "tool_use", "id": id, "name": name, "input": input }))
}

/// Anthropic `message` JSON → OpenAI `chat.completion`, with its usage.
pub fn chat_response(body: &[u8], created: i64) -> Result<(Value, Usage), String> {
    let msg: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let content = msg
        .get("content")
        .and_then(Value::as_array)
        .ok_or("the message has no `content` array")?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => tool_calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            // Thinking and server-tool blocks have no OpenAI counterpart.
            _ => {}
        }
    }
    let usage = msg
        .get("usage")
        .map(usage_from_anthropic)
        .unwrap_or_default();
    let stop = msg
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !tool_calls.is_empty() { Value::Null } else { json!(text) },
        "refusal": null,
    });
    if !tool_calls.is_empty() {
        message["tool_calls"] = Value::Array(tool_calls);
    }
    let out = json!({
        "id": msg.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": created,
        "model": msg.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason_from_stop(stop) }],
        "usage": usage_to_openai(usage),
    });
    Ok((out, usage))
}

/// An Anthropic error body (`{"type":"error","error":{…}}`) in OpenAI's
/// error shape; `None` when the body is something else.
pub fn error_body(body: &[u8]) -> Option<Bytes> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let err = v.get("error")?;
    let out = json!({
        "error": {
            "message": err.get("message").cloned().unwrap_or(Value::Null),
            "type": err.get("type").cloned().unwrap_or(json!("invalid_request_error")),
            "code": null,
            "param": null,
        }
    });
    Some(Bytes::from(out.to_string()))
}

/// Anthropic stream events → canonical `chat.completion.chunk` events.
pub struct ChunkTranslator {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    /// Anthropic content block index → OpenAI `tool_calls[].index`.
    tool_index: HashMap<u64, u64>,
    usage: Value,
}

impl ChunkTranslator {
    pub fn new(model: &str, created: i64, include_usage: bool) -> Self {
        ChunkTranslator {
            id: String::new(),
            model: model.to_owned(),
            created,
            include_usage,
            tool_index: HashMap::new(),
            usage: json!({}),
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> SseEvent {
        let chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
        });
        SseEvent::Data(Bytes::from(chunk.to_string()))
    }

    /// Translates one Anthropic event (`event` name, `data` JSON). `Err` is
    /// an `error` event from Anthropic or a payload that is not JSON.
    pub fn on_event(&mut self, event: Option<&str>, data: &[u8]) -> Result<Vec<SseEvent>, String> {
        let v: Value =
            serde_json::from_slice(data).map_err(|e| format!("a stream event is not JSON: {e}"))?;
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .or(event)
            .unwrap_or_default();
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let msg = v.get("message").unwrap_or(&Value::Null);
                if let Some(id) = msg.get("id").and_then(Value::as_str) {
                    self.id = id.to_owned();
                }
                if let Some(model) = msg.get("model").and_then(Value::as_str) {
                    self.model = model.to_owned();
                }
                if let Some(u) = msg.get("usage") {
                    merge(&mut self.usage, u);
                }
                out.push(self.chunk(json!({ "role": "assistant", "content": "" }), None));
            }
            "content_block_start" => {
                let block = v.get("content_block").unwrap_or(&Value::Null);
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let tool_index = self.tool_index.len() as u64;
                        self.tool_index.insert(index, tool_index);
                        out.push(self.chunk(
                            json!({ "tool_calls": [{
                                "index": tool_index,
                                "id": block.get("id").cloned().unwrap_or(Value::Null),
                                "type": "function",
                                "function": { "name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": "" },
                            }]}),
                            None,
                        ));
                    }
                    Some("text") => {
                        if let Some(text) = block
                            .get("text")
                            .and_then(Value::as_str)
                            .filter(|t| !t.is_empty())
                        {
                            out.push(self.chunk(json!({ "content": text }), None));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = v.get("delta").unwrap_or(&Value::Null);
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let text = delta.get("text").cloned().unwrap_or(json!(""));
                        out.push(self.chunk(json!({ "content": text }), None));
                    }
                    Some("input_json_delta") => {
                        if let Some(&tool_index) = self.tool_index.get(&index) {
                            let args = delta.get("partial_json").cloned().unwrap_or(json!(""));
                            out.push(self.chunk(
                                json!({ "tool_calls": [{ "index": tool_index, "function": { "arguments": args } }] }),
                                None,
                            ));
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    merge(&mut self.usage, u);
                }
                let stop = v
                    .pointer("/delta/stop_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                out.push(self.chunk(json!({}), Some(finish_reason_from_stop(stop))));
            }
            "message_stop" => {
                if self.include_usage {
                    let chunk = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": usage_to_openai(self.usage()),
                    });
                    out.push(SseEvent::Data(Bytes::from(chunk.to_string())));
                }
                out.push(SseEvent::Done);
            }
            "error" => {
                let message = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                let kind = v
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("error");
                return Err(format!("sent `{kind}` mid-stream: {message}"));
            }
            // `ping`, `content_block_stop` and event types added later carry
            // nothing an OpenAI client needs.
            _ => {}
        }
        Ok(out)
    }

    /// The usage reported so far.
    pub fn usage(&self) -> Usage {
        usage_from_anthropic(&self.usage)
    }
}

/// Later usage fields (in `message_delta`) override earlier ones
/// (`message_start`): Anthropic sends cumulative counts.
fn merge(into: &mut Value, from: &Value) {
    if let (Some(into), Some(from)) = (into.as_object_mut(), from.as_object()) {
        for (k, v) in from {
            if !v.is_null() {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}
