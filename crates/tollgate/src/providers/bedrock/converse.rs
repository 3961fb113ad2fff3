//! Canonical OpenAI chat ↔ Bedrock `Converse`, both ways: the request
//! (messages as content blocks, `system`, `inferenceConfig`, `toolConfig`),
//! the answer, and the `ConverseStream` events as `chat.completion.chunk`s.
//! Usage is read from Bedrock's own `usage` fields only; one that is
//! missing or ill-typed is `None`, so the gateway bills its own estimate
//! rather than a made-up zero.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::super::translate::text_of;
use super::super::{SseEvent, Usage};
use super::eventstream::Frame;
use crate::types::clip;

/// Bedrock `stopReason` → OpenAI `finish_reason`.
pub(crate) fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "guardrail_intervened" | "content_filtered" => "content_filter",
        // end_turn, stop_sequence and reasons added later.
        _ => "stop",
    }
}

/// The `Converse` body for a canonical chat request; the model goes in the
/// URL. The error is a message for the client (a 400).
pub(crate) fn request(body: &Map<String, Value>) -> Result<Value, String> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` must be an array")?;
    let mut system: Vec<Value> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    let mut has_tool_blocks = false;
    for (i, message) in messages.iter().enumerate() {
        let at = |e: String| format!("`messages[{i}]`: {e}");
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("`messages[{i}].role` is missing"))?;
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match role {
            "system" | "developer" => {
                let text = text_of(content).map_err(at)?;
                if !text.is_empty() {
                    system.push(json!({ "text": text }));
                }
                continue;
            }
            "user" => ("user", content_blocks(content).map_err(at)?),
            "assistant" => {
                let mut blocks = content_blocks(content).map_err(at)?;
                if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
                    for call in calls {
                        blocks.push(tool_use_block(call).map_err(at)?);
                        has_tool_blocks = true;
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
                has_tool_blocks = true;
                (
                    "user",
                    vec![json!({ "toolResult": {
                        "toolUseId": id,
                        "content": [{ "text": text }],
                        "status": "success",
                    }})],
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
        // Converse wants user and assistant turns to alternate.
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
    req.insert("messages".into(), Value::Array(out));
    if !system.is_empty() {
        req.insert("system".into(), Value::Array(system));
    }
    if let Some(n) = body.get("n").and_then(Value::as_u64).filter(|n| *n > 1) {
        return Err(format!(
            "`n` = {n}: Bedrock's Converse API gives one choice per request"
        ));
    }
    let mut inference = Map::new();
    let cap = ["max_completion_tokens", "max_tokens"]
        .into_iter()
        .find_map(|k| body.get(k).filter(|v| !v.is_null()));
    if let Some(cap) = cap {
        let cap = cap
            .as_u64()
            .ok_or("`max_tokens` must be a non-negative integer")?;
        inference.insert("maxTokens".into(), json!(cap));
    }
    if let Some(t) = body.get("temperature").and_then(Value::as_f64) {
        // OpenAI allows 0–2; Bedrock's models take 0–1.
        inference.insert("temperature".into(), json!(t.clamp(0.0, 1.0)));
    }
    if let Some(p) = body.get("top_p").and_then(Value::as_f64) {
        inference.insert("topP".into(), json!(p));
    }
    match body.get("stop") {
        Some(Value::String(s)) => {
            inference.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(list)) if !list.is_empty() => {
            inference.insert("stopSequences".into(), Value::Array(list.clone()));
        }
        _ => {}
    }
    if !inference.is_empty() {
        req.insert("inferenceConfig".into(), Value::Object(inference));
    }
    if let Some(tools) = body
        .get("tools")
        .and_then(Value::as_array)
        .filter(|t| !t.is_empty())
    {
        let choice = tool_choice(body.get("tool_choice"))?;
        // Converse has no "none": without a choice the tools are left out,
        // unless the conversation already holds tool blocks, which Bedrock
        // accepts only next to a `toolConfig`.
        if choice != ToolChoice::Never || has_tool_blocks {
            let tools: Result<Vec<Value>, String> = tools.iter().map(tool_spec).collect();
            let mut config = Map::new();
            config.insert("tools".into(), Value::Array(tools?));
            if let ToolChoice::Send(choice) = choice {
                config.insert("toolChoice".into(), choice);
            }
            req.insert("toolConfig".into(), Value::Object(config));
        }
    }
    Ok(Value::Object(req))
}

#[derive(Debug, PartialEq)]
enum ToolChoice {
    Default,
    Never,
    Send(Value),
}

fn tool_choice(choice: Option<&Value>) -> Result<ToolChoice, String> {
    Ok(match choice {
        None | Some(Value::Null) => ToolChoice::Default,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => ToolChoice::Send(json!({ "auto": {} })),
            "required" => ToolChoice::Send(json!({ "any": {} })),
            "none" => ToolChoice::Never,
            other => {
                return Err(format!(
                    "`tool_choice` `{}` is not one of `auto`, `required`, `none`",
                    clip(other)
                ));
            }
        },
        Some(obj) => match obj.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => ToolChoice::Send(json!({ "tool": { "name": name } })),
            None => {
                return Err("`tool_choice` must be a string or `{\"type\":\"function\",\"function\":{\"name\":…}}`".to_owned());
            }
        },
    })
}

/// OpenAI tool → Converse `toolSpec`.
fn tool_spec(tool: &Value) -> Result<Value, String> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err("only tools of `type` `function` can be sent to a Bedrock model".to_owned());
    }
    let f = tool.get("function").ok_or("a tool has no `function`")?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a tool `function` has no `name`")?;
    let mut spec = Map::new();
    spec.insert("name".into(), json!(name));
    if let Some(d) = f.get("description").filter(|d| d.is_string()) {
        spec.insert("description".into(), d.clone());
    }
    let schema = f
        .get("parameters")
        .cloned()
        .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
    spec.insert("inputSchema".into(), json!({ "json": schema }));
    Ok(json!({ "toolSpec": spec }))
}

/// OpenAI message `content` → Converse content blocks.
fn content_blocks(content: &Value) -> Result<Vec<Value>, String> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => Ok(
                    json!({ "text": part.get("text").and_then(Value::as_str).unwrap_or_default() }),
                ),
                Some("image_url") => {
                    let url = part
                        .pointer("/image_url/url")
                        .or_else(|| part.get("image_url"))
                        .and_then(Value::as_str)
                        .ok_or("an `image_url` part has no `image_url.url`")?;
                    image_block(url)
                }
                other => Err(format!(
                    "content parts of type `{}` cannot be sent to a Bedrock model",
                    clip(other.unwrap_or("untyped"))
                )),
            })
            .collect(),
        _ => Err("`content` must be a string, an array of parts or null".to_owned()),
    }
}

/// A `data:image/…;base64,…` URL → a Converse image block (its bytes go
/// base64 in JSON). Bedrock does not fetch URLs.
fn image_block(url: &str) -> Result<Value, String> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Err(
            "a Bedrock model takes images only inline, as `data:image/png;base64,...` URLs; it cannot fetch a URL"
                .to_owned(),
        );
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or("an image `data:` URL has no `,` before its data")?;
    let media = meta
        .strip_suffix(";base64")
        .ok_or("an image `data:` URL must be base64 (`data:image/png;base64,...`)")?;
    let format = match media {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        other => {
            return Err(format!(
                "image type `{}` is not one Bedrock takes (png, jpeg, gif, webp)",
                clip(other)
            ));
        }
    };
    Ok(json!({ "image": { "format": format, "source": { "bytes": data } } }))
}

/// OpenAI assistant `tool_calls[]` entry → Converse `toolUse` block.
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
    Ok(json!({ "toolUse": { "toolUseId": id, "name": name, "input": input } }))
}

/// Bedrock `usage` → token counts, or `None` when it is missing or any
/// count is not a non-negative integer (hostile or broken: the gateway
/// then bills its own estimate). As on Anthropic, `inputTokens` leaves out
/// the cache reads and writes, which are added into `prompt_tokens`; were a
/// model to count them in `inputTokens` too, this bills more, never less.
pub(crate) fn usage(usage: &Value) -> Option<Usage> {
    let usage = usage.as_object()?;
    let required = |k: &str| usage.get(k)?.as_u64();
    let optional = |k: &str| match usage.get(k) {
        None | Some(Value::Null) => Some(0),
        Some(v) => v.as_u64(),
    };
    let input = required("inputTokens")?;
    let output = required("outputTokens")?;
    let read = optional("cacheReadInputTokens")?;
    let write = optional("cacheWriteInputTokens")?;
    Some(Usage {
        prompt_tokens: input.saturating_add(read).saturating_add(write),
        completion_tokens: output,
        cached_tokens: read,
        cache_write_tokens: write,
        cache_write_1h_tokens: 0,
    })
}

/// A `Converse` answer → OpenAI `chat.completion`, with its usage.
pub(crate) fn response(
    raw: &[u8],
    id: &str,
    model: &str,
    created: i64,
) -> Result<(Value, Option<Usage>), String> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| format!("the body is not JSON: {e}"))?;
    let content = v
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .ok_or("the answer has no `output.message.content` array")?;
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in content {
        if let Some(t) = block.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(tool) = block.get("toolUse") {
            tool_calls.push(json!({
                "id": tool.get("toolUseId").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": tool.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": tool.get("input").map_or_else(|| "{}".to_owned(), Value::to_string),
                },
            }));
        }
        // Reasoning, citations and guard content have no OpenAI counterpart.
    }
    let usage = v.get("usage").and_then(usage);
    let stop = v
        .get("stopReason")
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
    let mut out = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{ "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(stop) }],
    });
    if let Some(u) = usage {
        out["usage"] = super::super::translate::usage_to_openai(u);
    }
    Ok((out, usage))
}

/// A Bedrock error body (`{"message": …}`) in OpenAI's error shape, typed
/// by the `x-amzn-errortype` header's name (`ValidationException:…`).
pub(crate) fn error_body(raw: &[u8], error_type: Option<&str>) -> Bytes {
    let message = serde_json::from_slice::<Value>(raw)
        .ok()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.get("Message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&raw[..raw.len().min(300)]).into_owned());
    let kind = error_type
        .and_then(|t| t.split(':').next())
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or("invalid_request_error");
    let out = json!({
        "error": { "message": message, "type": kind, "code": null, "param": null }
    });
    Bytes::from(out.to_string())
}

/// `ConverseStream` events → canonical `chat.completion.chunk` events.
pub(crate) struct StreamTranslator {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    /// Bedrock `contentBlockIndex` → OpenAI `tool_calls[].index`.
    tool_index: HashMap<u64, u64>,
    stopped: bool,
    done: bool,
}

impl StreamTranslator {
    pub fn new(id: &str, model: &str, created: i64, include_usage: bool) -> Self {
        StreamTranslator {
            id: id.to_owned(),
            model: model.to_owned(),
            created,
            include_usage,
            tool_index: HashMap::new(),
            stopped: false,
            done: false,
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

    /// Translates one frame. `Err` is an exception or error frame from
    /// Bedrock, or a payload that is not JSON.
    pub fn on_frame(&mut self, frame: &Frame) -> Result<Vec<SseEvent>, String> {
        if frame.message_type != "event" {
            let message = serde_json::from_slice::<Value>(&frame.payload)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .or_else(|| frame.error_message.clone())
                .unwrap_or_else(|| "no message".to_owned());
            return Err(format!(
                "sent `{}` mid-stream: {}",
                clip(&frame.kind),
                clip(&message)
            ));
        }
        let v: Value = serde_json::from_slice(&frame.payload)
            .map_err(|e| format!("a stream event is not JSON: {e}"))?;
        let mut out = Vec::new();
        match frame.kind.as_str() {
            "messageStart" => {
                out.push(self.chunk(json!({ "role": "assistant", "content": "" }), None));
            }
            "contentBlockStart" => {
                let index = v
                    .get("contentBlockIndex")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                if let Some(tool) = v.pointer("/start/toolUse") {
                    let tool_index = self.tool_index.len() as u64;
                    self.tool_index.insert(index, tool_index);
                    out.push(self.chunk(
                        json!({ "tool_calls": [{
                            "index": tool_index,
                            "id": tool.get("toolUseId").cloned().unwrap_or(Value::Null),
                            "type": "function",
                            "function": { "name": tool.get("name").cloned().unwrap_or(Value::Null), "arguments": "" },
                        }]}),
                        None,
                    ));
                }
            }
            "contentBlockDelta" => {
                let index = v
                    .get("contentBlockIndex")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let delta = v.get("delta").unwrap_or(&Value::Null);
                if let Some(text) = delta.get("text").and_then(Value::as_str) {
                    out.push(self.chunk(json!({ "content": text }), None));
                } else if let Some(args) = delta.pointer("/toolUse/input").and_then(Value::as_str)
                    && let Some(&tool_index) = self.tool_index.get(&index)
                {
                    out.push(self.chunk(
                        json!({ "tool_calls": [{ "index": tool_index, "function": { "arguments": args } }] }),
                        None,
                    ));
                }
            }
            "messageStop" => {
                self.stopped = true;
                let stop = v
                    .get("stopReason")
                    .and_then(Value::as_str)
                    .unwrap_or("end_turn");
                out.push(self.chunk(json!({}), Some(finish_reason(stop))));
            }
            "metadata" => {
                // The last event: usage (and latency) after `messageStop`.
                if let Some(u) = v.get("usage").and_then(usage)
                    && self.include_usage
                {
                    let chunk = json!({
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "choices": [],
                        "usage": super::super::translate::usage_to_openai(u),
                    });
                    out.push(SseEvent::Data(Bytes::from(chunk.to_string())));
                }
                self.done = true;
                out.push(SseEvent::Done);
            }
            // contentBlockStop and event types added later carry nothing
            // an OpenAI client needs.
            _ => {}
        }
        Ok(out)
    }

    /// At the end of the body: a stream that stopped but sent no
    /// `metadata` is complete all the same (billed by its text); one that
    /// never stopped was cut short and gets no `[DONE]`.
    pub fn finish(&mut self) -> Option<SseEvent> {
        (self.stopped && !self.done).then(|| {
            self.done = true;
            SseEvent::Done
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_chat_request_becomes_converse() {
        let req = request(&body(json!({
            "model": "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "t1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "t1", "content": "a cat"},
                {"role": "tool", "tool_call_id": "t1", "content": "again"}
            ],
            "max_tokens": 77, "temperature": 1.7, "top_p": 0.5, "stop": "END",
            "tools": [{"type": "function", "function": {"name": "look", "description": "Look",
                "parameters": {"type": "object"}}}],
            "tool_choice": "required"
        })))
        .unwrap();
        assert_eq!(req["system"], json!([{"text": "Be brief."}]));
        assert_eq!(
            req["inferenceConfig"],
            json!({"maxTokens": 77, "temperature": 1.0, "topP": 0.5, "stopSequences": ["END"]})
        );
        assert_eq!(
            req["messages"][0]["content"][1],
            json!({"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}})
        );
        assert_eq!(
            req["messages"][1]["content"][0],
            json!({"toolUse": {"toolUseId": "t1", "name": "look", "input": {"x": 1}}})
        );
        // Two tool results: one user turn, as Converse wants turns to alternate.
        assert_eq!(req["messages"].as_array().unwrap().len(), 3);
        assert_eq!(req["messages"][2]["content"].as_array().unwrap().len(), 2);
        assert_eq!(
            req["toolConfig"],
            json!({"tools": [{"toolSpec": {"name": "look", "description": "Look",
                "inputSchema": {"json": {"type": "object"}}}}], "toolChoice": {"any": {}}})
        );
        assert!(req.get("model").is_none());
    }

    #[test]
    fn unusable_requests_are_client_errors() {
        let url_image = body(json!({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}));
        assert!(request(&url_image).unwrap_err().contains("inline"));
        let n = body(json!({"messages": [], "n": 3}));
        assert!(request(&n).unwrap_err().contains("one choice"));
        let bad_cap = body(json!({"messages": [], "max_tokens": "9"}));
        assert!(request(&bad_cap).is_err());
        let none = request(&body(json!({"messages": [{"role":"user","content":"x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "none"})))
        .unwrap();
        assert!(none.get("toolConfig").is_none());
    }

    #[test]
    fn stop_reasons_and_usage() {
        for (b, o) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
            ("guardrail_intervened", "content_filter"),
            ("content_filtered", "content_filter"),
        ] {
            assert_eq!(finish_reason(b), o);
        }
        let u = usage(
            &json!({"inputTokens": 10, "outputTokens": 5, "totalTokens": 115,
            "cacheReadInputTokens": 90, "cacheWriteInputTokens": 10}),
        )
        .unwrap();
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 110,
                completion_tokens: 5,
                cached_tokens: 90,
                cache_write_tokens: 10,
                cache_write_1h_tokens: 0
            }
        );
        // Hostile or broken: no usage, so the gateway bills its estimate.
        for bad in [
            json!(null),
            json!({"inputTokens": "10", "outputTokens": 5}),
            json!({"inputTokens": -1, "outputTokens": 5}),
            json!({"inputTokens": 1e300, "outputTokens": 5}),
            json!({"outputTokens": 5}),
            json!({"inputTokens": 1, "outputTokens": 5, "cacheReadInputTokens": "x"}),
        ] {
            assert_eq!(usage(&bad), None, "{bad}");
        }
    }

    #[test]
    fn never_panics_on_any_json() {
        for v in [
            json!(null),
            json!([]),
            json!({"messages": [1, null, {"role": 3}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}]}),
            json!({"messages": [], "tools": [null], "tool_choice": {"function": 1}}),
        ] {
            if let Some(m) = v.as_object() {
                let _ = request(m);
            }
            let _ = response(v.to_string().as_bytes(), "id", "m", 0);
        }
    }
}

#[cfg(test)]
mod published {
    use super::*;

    /// The Converse answers the Bedrock User Guide shows, parsed.
    #[test]
    fn the_published_converse_answers_parse() {
        let raw = include_bytes!("../tests/fixtures/bedrock_converse_response.json");
        let (body, usage) = response(raw, "chatcmpl-x", "anthropic.claude-3-sonnet", 7).unwrap();
        assert!(
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .starts_with("Here is a list of 3 pop songs")
        );
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
        let usage = usage.unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (125, 60));
        assert_eq!(body["usage"]["total_tokens"], 185);

        let raw = include_bytes!("../tests/fixtures/bedrock_converse_tool_use_response.json");
        let (body, usage) = response(raw, "chatcmpl-y", "m", 7).unwrap();
        let choice = &body["choices"][0];
        assert_eq!(choice["finish_reason"], "tool_calls");
        let call = &choice["message"]["tool_calls"][0];
        assert_eq!(call["id"], "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q");
        assert_eq!(call["function"]["name"], "top_song");
        assert_eq!(call["function"]["arguments"], r#"{"sign":"WZPZ"}"#);
        assert_eq!(usage.unwrap().prompt_tokens, 474);
    }
}
