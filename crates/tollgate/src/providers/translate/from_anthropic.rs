//! The `/v1/messages` ingress: an Anthropic Messages request made canonical
//! (OpenAI chat) so any provider can serve it, and the canonical answer —
//! JSON or chunk stream — turned back into Anthropic's format.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{
    image_url_from_source, stop_reason_from_finish, tool_choice_to_openai, tool_to_openai,
    usage_from_openai, usage_to_anthropic,
};
use crate::providers::{SseEvent, Usage};
use crate::types::clip;

/// Anthropic request → canonical OpenAI chat request. The error is a
/// validation message for the client.
pub fn messages_to_openai(body: &Value) -> Result<Map<String, Value>, String> {
    let req = body
        .as_object()
        .ok_or("the request body must be a JSON object")?;
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .ok_or("`model` is required and must be a string")?;
    let max_tokens = req
        .get("max_tokens")
        .and_then(Value::as_u64)
        .ok_or("`max_tokens` is required and must be a non-negative integer")?;
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` is required and must be an array")?;

    let mut out: Vec<Value> = Vec::new();
    match req.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => out.push(json!({ "role": "system", "content": s })),
        Some(Value::Array(blocks)) => {
            let text = blocks_text(blocks).map_err(|e| format!("`system`: {e}"))?;
            out.push(json!({ "role": "system", "content": text }));
        }
        Some(_) => return Err("`system` must be a string or an array of text blocks".to_owned()),
    }
    for (i, message) in messages.iter().enumerate() {
        let at = |e: String| format!("`messages[{i}]`: {e}");
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let content = message
            .get("content")
            .ok_or_else(|| at("`content` is required".to_owned()))?;
        match role {
            "user" => user_message(content, &mut out).map_err(at)?,
            "assistant" => out.push(assistant_message(content).map_err(at)?),
            other => {
                return Err(at(format!(
                    "`role` must be `user` or `assistant`, not `{}`",
                    clip(other)
                )));
            }
        }
    }

    let mut o = Map::new();
    o.insert("model".into(), json!(model));
    o.insert("messages".into(), Value::Array(out));
    o.insert("max_tokens".into(), json!(max_tokens));
    for key in ["temperature", "top_p"] {
        if let Some(v) = req.get(key).filter(|v| !v.is_null()) {
            if !v.is_number() {
                return Err(format!("`{key}` must be a number"));
            }
            o.insert(key.into(), v.clone());
        }
    }
    if let Some(stop) = req.get("stop_sequences").filter(|v| !v.is_null()) {
        let list = stop
            .as_array()
            .ok_or("`stop_sequences` must be an array of strings")?;
        if !list.is_empty() {
            o.insert("stop".into(), stop.clone());
        }
    }
    if let Some(tools) = req.get("tools").filter(|v| !v.is_null()) {
        let tools = tools.as_array().ok_or("`tools` must be an array")?;
        let tools: Result<Vec<Value>, String> = tools.iter().map(tool_to_openai).collect();
        let tools = tools?;
        if !tools.is_empty() {
            o.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = req.get("tool_choice").filter(|v| !v.is_null()) {
        let (choice, parallel) = tool_choice_to_openai(choice)?;
        o.insert("tool_choice".into(), choice);
        if let Some(p) = parallel {
            o.insert("parallel_tool_calls".into(), json!(p));
        }
    }
    if let Some(user) = req
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        o.insert("user".into(), json!(user));
    }
    match req.get("stream") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {
            o.insert("stream".into(), json!(true));
            o.insert("stream_options".into(), json!({ "include_usage": true }));
        }
        Some(_) => return Err("`stream` must be a boolean".to_owned()),
    }
    Ok(o)
}

fn blocks_text(blocks: &[Value]) -> Result<String, String> {
    let mut text = String::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(
                    block
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
            }
            other => {
                return Err(format!(
                    "only `text` blocks can go here, not `{}`",
                    clip(other.unwrap_or("untyped"))
                ));
            }
        }
    }
    Ok(text)
}

/// A user turn: its `tool_result` blocks become `tool` messages (first, as
/// they answer the previous assistant turn), the rest one `user` message.
fn user_message(content: &Value, out: &mut Vec<Value>) -> Result<(), String> {
    let blocks = match content {
        Value::String(s) => {
            out.push(json!({ "role": "user", "content": s }));
            return Ok(());
        }
        Value::Array(blocks) => blocks,
        _ => return Err("`content` must be a string or an array of blocks".to_owned()),
    };
    let mut parts = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => parts.push(
                json!({ "type": "text", "text": block.get("text").cloned().unwrap_or(json!("")) }),
            ),
            Some("image") => {
                let source = block
                    .get("source")
                    .ok_or("an `image` block has no `source`")?;
                parts.push(json!({ "type": "image_url", "image_url": { "url": image_url_from_source(source)? } }));
            }
            Some("tool_result") => {
                let id = block
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or("a `tool_result` has no `tool_use_id`")?;
                let text = match block.get("content") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Array(inner)) => {
                        blocks_text(inner).map_err(|e| format!("`tool_result`: {e}"))?
                    }
                    Some(_) => {
                        return Err(
                            "`tool_result.content` must be a string or an array of blocks"
                                .to_owned(),
                        );
                    }
                };
                out.push(json!({ "role": "tool", "tool_call_id": id, "content": text }));
            }
            other => {
                return Err(format!(
                    "`{}` blocks cannot be routed to other providers",
                    clip(other.unwrap_or("untyped"))
                ));
            }
        }
    }
    if !parts.is_empty() {
        out.push(json!({ "role": "user", "content": parts }));
    }
    Ok(())
}

fn assistant_message(content: &Value) -> Result<Value, String> {
    let blocks = match content {
        Value::String(s) => return Ok(json!({ "role": "assistant", "content": s })),
        Value::Array(blocks) => blocks,
        _ => return Err("`content` must be a string or an array of blocks".to_owned()),
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in blocks {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            })),
            // Earlier thinking is the model's scratchpad; other providers cannot use it.
            Some("thinking" | "redacted_thinking") => {}
            other => return Err(format!("`{}` blocks cannot be routed to other providers", clip(other.unwrap_or("untyped")))),
        }
    }
    let mut message = json!({ "role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) } });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    Ok(message)
}

/// `id` as an Anthropic message id.
fn message_id(id: Option<&str>) -> String {
    match id {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        _ => format!("msg_{}", uuid::Uuid::now_v7().simple()),
    }
}

/// Canonical `chat.completion` → Anthropic `message`, named `model` (the
/// name the client asked for).
pub fn openai_to_messages_response(body: &[u8], model: &str) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("the provider's answer is not JSON: {e}"))?;
    let choice = v
        .pointer("/choices/0")
        .ok_or("the provider's answer has no `choices`")?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    if let Some(text) = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({ "type": "text", "text": text }));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let args = call
            .pointer("/function/arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
        content.push(json!({
            "type": "tool_use",
            "id": call.get("id").cloned().unwrap_or(Value::Null),
            "name": call.pointer("/function/name").cloned().unwrap_or(Value::Null),
            "input": input,
        }));
    }
    let finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let usage = v.get("usage").map(usage_from_openai).unwrap_or_default();
    Ok(json!({
        "id": message_id(v.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason_from_finish(finish),
        "stop_sequence": null,
        "usage": usage_to_anthropic(usage),
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Tool,
}

/// Canonical chunk events → Anthropic SSE, for streaming `/v1/messages`.
/// Feed every chunk to [`Self::chunk`] and write what it returns; on `Done`
/// (or an end without it) write what [`Self::finish`] returns.
#[derive(Debug)]
pub struct MessagesStreamTranslator {
    model: String,
    started: bool,
    stopped: bool,
    /// The open content block: its kind and Anthropic index.
    open: Option<(Block, u64)>,
    next_index: u64,
    /// OpenAI `tool_calls[].index` → Anthropic block index.
    tools: HashMap<u64, u64>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl MessagesStreamTranslator {
    /// `model` is the name the client asked for.
    pub fn new(model: &str) -> Self {
        MessagesStreamTranslator {
            model: model.to_owned(),
            started: false,
            stopped: false,
            open: None,
            next_index: 0,
            tools: HashMap::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// The usage the stream reported, once its usage chunk went by.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The bytes to write for one canonical event.
    pub fn on_event(&mut self, event: &SseEvent) -> Bytes {
        match event {
            SseEvent::Data(data) => self.chunk(data),
            SseEvent::Done => self.finish(),
            // Not canonical: a native stream is never translated.
            SseEvent::Native { .. } => Bytes::new(),
        }
    }

    /// The bytes to write for one canonical chunk's `data` payload; payloads
    /// that are not JSON (nothing an Anthropic client could use) write nothing.
    pub fn chunk(&mut self, data: &[u8]) -> Bytes {
        let mut out = Vec::new();
        if let Ok(chunk) = serde_json::from_slice::<Value>(data) {
            self.on_chunk(&chunk, &mut out);
        }
        Bytes::from(out)
    }

    /// Closes the message (`content_block_stop`, `message_delta` with the
    /// stop reason and usage, `message_stop`): on `Done`, or when the stream
    /// ended without it. Nothing once the message is closed.
    pub fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        self.stop(&mut out);
        Bytes::from(out)
    }

    fn start(&mut self, id: Option<&str>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "type": "message_start",
            "message": {
                "id": message_id(id),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": { "input_tokens": 0, "output_tokens": 0 },
            }
        });
        write_event(out, "message_start", &message);
    }

    fn on_chunk(&mut self, chunk: &Value, out: &mut Vec<u8>) {
        if self.stopped {
            return;
        }
        self.start(chunk.get("id").and_then(Value::as_str), out);
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage_from_openai(usage));
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return;
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        if let Some(text) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            let index = self.open_block(Block::Text, out, |index| {
                json!({ "type": "content_block_start", "index": index, "content_block": { "type": "text", "text": "" } })
            });
            write_event(
                out,
                "content_block_delta",
                &json!({
                    "type": "content_block_delta", "index": index, "delta": { "type": "text_delta", "text": text },
                }),
            );
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let tool_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let index = match self.tools.get(&tool_index) {
                Some(&index) => index,
                None => {
                    let (id, name) = (
                        call.get("id").cloned(),
                        call.pointer("/function/name").cloned(),
                    );
                    self.close_block(out);
                    let index = self.open_block(Block::Tool, out, |index| {
                        json!({ "type": "content_block_start", "index": index, "content_block": {
                            "type": "tool_use", "id": id.unwrap_or(Value::Null), "name": name.unwrap_or(Value::Null), "input": {},
                        }})
                    });
                    self.tools.insert(tool_index, index);
                    index
                }
            };
            if let Some(args) = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
            {
                write_event(
                    out,
                    "content_block_delta",
                    &json!({
                        "type": "content_block_delta", "index": index, "delta": { "type": "input_json_delta", "partial_json": args },
                    }),
                );
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_owned());
        }
    }

    /// Index of the open block of `kind`, opening one if another kind is open.
    fn open_block(
        &mut self,
        kind: Block,
        out: &mut Vec<u8>,
        start: impl FnOnce(u64) -> Value,
    ) -> u64 {
        if let Some((open, index)) = self.open
            && open == kind
            && kind == Block::Text
        {
            return index;
        }
        self.close_block(out);
        let index = self.next_index;
        self.next_index += 1;
        write_event(out, "content_block_start", &start(index));
        self.open = Some((kind, index));
        index
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            write_event(
                out,
                "content_block_stop",
                &json!({ "type": "content_block_stop", "index": index }),
            );
        }
    }

    fn stop(&mut self, out: &mut Vec<u8>) {
        if self.stopped {
            return;
        }
        self.start(None, out);
        self.close_block(out);
        self.stopped = true;
        let reason = stop_reason_from_finish(self.finish_reason.as_deref().unwrap_or("stop"));
        let usage = usage_to_anthropic(self.usage.unwrap_or_default());
        write_event(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": { "stop_reason": reason, "stop_sequence": null },
                "usage": usage,
            }),
        );
        write_event(out, "message_stop", &json!({ "type": "message_stop" }));
    }
}

fn write_event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
}
