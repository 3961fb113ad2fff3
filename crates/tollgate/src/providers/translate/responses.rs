//! The `/v1/responses` ingress for targets that do not serve the Responses
//! API natively: the request made canonical (OpenAI chat, which every
//! provider takes and the `anthropic` provider turns into Messages), and
//! the canonical answer — JSON or chunk stream — turned into a Responses
//! `response` object or its typed events.
//!
//! What maps, and what is a clear 400 (never silently dropped when it would
//! change the answer or need the provider's storage):
//!
//! | Responses request             | canonical chat                               |
//! |-------------------------------|----------------------------------------------|
//! | `instructions`                | a leading `system` message                   |
//! | `input` string                | one `user` message                           |
//! | `input` message items (`role` user/assistant/system/developer; `input_text`, `output_text`, `refusal`, `input_image` with `image_url`) | messages with text / `image_url` parts |
//! | `function_call` items         | an assistant message's `tool_calls`          |
//! | `function_call_output` items  | `tool` messages                              |
//! | `reasoning` items             | dropped (another model cannot read them)     |
//! | `tools` of type `function`    | `tools` (`function` with name, description, parameters, strict) |
//! | `tool_choice` auto/none/required/function | `tool_choice`                    |
//! | `max_output_tokens`           | `max_tokens` (the cap the reservation sets)  |
//! | `temperature`, `top_p`, `parallel_tool_calls`, `user`, `stream` | same |
//! | `text.format` json_object / json_schema | `response_format`                  |
//! | `reasoning`, `include`, `truncation`, `metadata`, `service_tier`, `prompt_cache_key`, `safety_identifier`, `store: false` | ignored |
//! | `previous_response_id`, `store: true`, `conversation`, `background: true`, `prompt` | 400: they need OpenAI's storage |
//! | built-in tools (`web_search`, `file_search`, `computer_use_preview`, `code_interpreter`, `image_generation`, `mcp`, …), `input_file`, `input_image` by `file_id`, other item types | 400 |

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::usage_from_openai;
use crate::providers::Usage;
use crate::types::clip;

/// Fields that need the provider's own storage, and why.
const STATEFUL: [(&str, &str); 4] = [
    (
        "previous_response_id",
        "continues a conversation stored at OpenAI",
    ),
    ("conversation", "continues a conversation stored at OpenAI"),
    (
        "background",
        "runs the response in OpenAI's background queue",
    ),
    ("prompt", "names a prompt template stored at OpenAI"),
];

/// The stateful feature `body` uses, if any: such a request can only go to
/// an OpenAI (or Azure) target, and only to one (the one holding the state).
pub fn stateful_feature(body: &Map<String, Value>) -> Option<&'static str> {
    for (field, _) in STATEFUL {
        match body.get(field) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(_) => return Some(field),
        }
    }
    (body.get("store") == Some(&Value::Bool(true))).then_some("store")
}

/// Responses request → canonical chat request. The error is a message for
/// the client (a 400).
pub fn to_chat(body: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    if let Some(field) = stateful_feature(body) {
        let why = STATEFUL
            .iter()
            .find(|(f, _)| *f == field)
            .map_or("keeps the response in OpenAI's storage", |(_, w)| *w);
        return Err(format!(
            "`{field}` {why}; it is only supported when the model's target is an `openai` or `azure` provider"
        ));
    }
    let mut messages = Vec::new();
    match body.get("instructions") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(_) => return Err("`instructions` must be a string".into()),
    }
    match body.get("input") {
        Some(Value::String(s)) => messages.push(json!({"role": "user", "content": s})),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, &mut messages).map_err(|e| format!("`input[{i}]`: {e}"))?;
            }
        }
        None | Some(Value::Null) => return Err("`input` is required".into()),
        Some(_) => return Err("`input` must be a string or an array of items".into()),
    }
    let mut out = Map::new();
    if let Some(model) = body.get("model") {
        out.insert("model".into(), model.clone());
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(v) = body.get("max_output_tokens").filter(|v| !v.is_null()) {
        out.insert("max_tokens".into(), v.clone());
    }
    for key in [
        "temperature",
        "top_p",
        "parallel_tool_calls",
        "user",
        "stream",
    ] {
        if let Some(v) = body.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    if out.get("stream") == Some(&Value::Bool(true)) {
        // `response.completed` carries the usage: the translator needs the
        // canonical usage chunk.
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if let Some(tools) = body.get("tools").filter(|v| !v.is_null()) {
        let tools = tools.as_array().ok_or("`tools` must be an array")?;
        let mut list = Vec::with_capacity(tools.len());
        for (i, t) in tools.iter().enumerate() {
            list.push(tool(t).map_err(|e| format!("`tools[{i}]`: {e}"))?);
        }
        if !list.is_empty() {
            out.insert("tools".into(), Value::Array(list));
        }
    }
    if let Some(choice) = body.get("tool_choice").filter(|v| !v.is_null()) {
        out.insert("tool_choice".into(), tool_choice(choice)?);
    }
    if let Some(format) = body
        .get("text")
        .and_then(|t| t.get("format"))
        .filter(|v| !v.is_null())
        && let Some(rf) = response_format(format)?
    {
        out.insert("response_format".into(), rf);
    }
    Ok(out)
}

fn input_item(item: &Value, out: &mut Vec<Value>) -> Result<(), String> {
    let kind = item.get("type").and_then(Value::as_str);
    match kind {
        // An item with a `role` and no `type` is a message too.
        Some("message") | None if item.get("role").is_some() => {
            let role = item.get("role").and_then(Value::as_str).unwrap_or_default();
            let role = match role {
                "user" | "assistant" | "system" => role,
                "developer" => "system",
                other => {
                    return Err(format!(
                        "`role` `{}` is not one of user, assistant, system, developer",
                        clip(other)
                    ));
                }
            };
            let content = match item.get("content") {
                Some(Value::String(s)) => json!(s),
                Some(Value::Array(parts)) => {
                    let mut list = Vec::with_capacity(parts.len());
                    for p in parts {
                        list.push(content_part(p)?);
                    }
                    if role == "user" {
                        Value::Array(list)
                    } else {
                        // Assistant and system turns take text only.
                        json!(
                            list.iter()
                                .filter_map(|p| p.get("text").and_then(Value::as_str))
                                .collect::<Vec<_>>()
                                .join("")
                        )
                    }
                }
                _ => return Err("`content` must be a string or an array of parts".into()),
            };
            out.push(json!({"role": role, "content": content}));
        }
        Some("function_call") => {
            let call = json!({
                "id": item.get("call_id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": item.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": item.get("arguments").cloned().unwrap_or(json!("{}")),
                },
            });
            // Consecutive calls are one assistant turn.
            if let Some(last) = out.last_mut().filter(|m| {
                m["role"] == "assistant" && m.get("tool_calls").is_some() && m["content"].is_null()
            }) && let Some(Value::Array(calls)) = last.get_mut("tool_calls")
            {
                calls.push(call);
                return Ok(());
            }
            out.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
        }
        Some("function_call_output") => {
            let content = match item.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
                _ => return Err("`output` of a `function_call_output` must be a string".into()),
            };
            out.push(json!({
                "role": "tool",
                "tool_call_id": item.get("call_id").cloned().unwrap_or(Value::Null),
                "content": content,
            }));
        }
        // Encrypted or summarised reasoning of an earlier OpenAI turn.
        Some("reasoning") => {}
        Some(other) => {
            return Err(format!(
                "items of type `{}` are only supported by `openai`/`azure` targets",
                clip(other)
            ));
        }
        None => return Err("an item needs a `type` (or a `role`)".into()),
    }
    Ok(())
}

fn content_part(part: &Value) -> Result<Value, String> {
    match part.get("type").and_then(Value::as_str) {
        Some("input_text" | "output_text" | "text") => {
            Ok(json!({"type": "text", "text": part.get("text").cloned().unwrap_or(json!(""))}))
        }
        Some("refusal") => {
            Ok(json!({"type": "text", "text": part.get("refusal").cloned().unwrap_or(json!(""))}))
        }
        Some("input_image") => {
            let Some(url) = part.get("image_url").and_then(Value::as_str) else {
                return Err(
                    "an `input_image` needs an `image_url` (a `file_id` is only supported by `openai`/`azure` targets)"
                        .into(),
                );
            };
            let mut image = json!({"url": url});
            if let Some(detail) = part.get("detail").filter(|d| d.is_string()) {
                image["detail"] = detail.clone();
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        other => Err(format!(
            "content parts of type `{}` are only supported by `openai`/`azure` targets",
            clip(other.unwrap_or("untyped"))
        )),
    }
}

fn tool(t: &Value) -> Result<Value, String> {
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {
            let name = t
                .get("name")
                .filter(|n| n.is_string())
                .ok_or("a `function` tool needs a `name`")?;
            let mut function = json!({"name": name});
            for k in ["description", "parameters", "strict"] {
                if let Some(v) = t.get(k).filter(|v| !v.is_null()) {
                    function[k] = v.clone();
                }
            }
            Ok(json!({"type": "function", "function": function}))
        }
        other => Err(format!(
            "built-in tool `{}` is only supported by `openai`/`azure` targets; use a `function` tool",
            clip(other.unwrap_or("untyped"))
        )),
    }
}

fn tool_choice(choice: &Value) -> Result<Value, String> {
    match choice {
        Value::String(s) if matches!(s.as_str(), "auto" | "none" | "required") => {
            Ok(choice.clone())
        }
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("name")
                .ok_or("`tool_choice` of type `function` needs a `name`")?;
            Ok(json!({"type": "function", "function": {"name": name}}))
        }
        _ => Err(format!(
            "`tool_choice` `{}` is only supported by `openai`/`azure` targets",
            clip(&choice.to_string())
        )),
    }
}

fn response_format(format: &Value) -> Result<Option<Value>, String> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let mut schema = Map::new();
            for k in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(k).filter(|v| !v.is_null()) {
                    schema.insert(k.into(), v.clone());
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": schema})))
        }
        _ => Err("`text.format.type` must be `text`, `json_object` or `json_schema`".into()),
    }
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Token counts → Responses `usage`.
pub fn usage_json(u: Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

/// The `response` object around `output`, as the Responses API shapes it.
fn response_object(
    id: &str,
    created: i64,
    model: &str,
    status: &str,
    output: Vec<Value>,
    usage: Option<Usage>,
) -> Value {
    let incomplete = (status == "incomplete").then(|| json!({"reason": "max_output_tokens"}));
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": null,
        "incomplete_details": incomplete,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage.map(usage_json),
        "user": null,
        "metadata": {},
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({
        "type": "function_call",
        "id": id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    })
}

/// Canonical `chat.completion` → Responses `response`, named `model`.
pub fn from_chat(body: &[u8], model: &str) -> Result<Value, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let choice = v
        .pointer("/choices/0")
        .ok_or("the answer has no `choices[0]`")?;
    let message = choice.get("message").cloned().unwrap_or(Value::Null);
    let mut output = Vec::new();
    if let Some(text) = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        output.push(message_item(&new_id("msg"), text, "completed"));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = |p: &str| call.pointer(p).and_then(Value::as_str).unwrap_or_default();
        output.push(call_item(
            &new_id("fc"),
            s("/id"),
            s("/function/name"),
            s("/function/arguments"),
            "completed",
        ));
    }
    let status = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("length") => "incomplete",
        _ => "completed",
    };
    let usage = v.get("usage").map(usage_from_openai);
    let created = v
        .get("created")
        .and_then(Value::as_i64)
        .unwrap_or_else(|| chrono::Utc::now().timestamp());
    Ok(response_object(
        &new_id("resp"),
        created,
        model,
        status,
        output,
        usage,
    ))
}

/// An output item being streamed.
struct Open {
    output_index: usize,
    id: String,
    /// Function calls: the call id and name.
    call: Option<(String, String)>,
    text: String,
}

/// Canonical chat chunks → Responses stream events, in the order the
/// Responses API sends them: `response.created`, `response.in_progress`,
/// per item `response.output_item.added` (and `response.content_part.added`
/// for text), its deltas, its `.done` events, and `response.completed` with
/// the usage (`response.incomplete` when the cap cut it).
pub struct ResponsesStreamTranslator {
    id: String,
    model: String,
    created: i64,
    seq: u64,
    started: bool,
    message: Option<Open>,
    /// Open function calls by the chunk's `tool_calls[].index`.
    calls: BTreeMap<u64, Open>,
    done: Vec<Value>,
    next_index: usize,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl ResponsesStreamTranslator {
    pub fn new(model: &str) -> Self {
        ResponsesStreamTranslator {
            id: new_id("resp"),
            model: model.to_owned(),
            created: chrono::Utc::now().timestamp(),
            seq: 0,
            started: false,
            message: None,
            calls: BTreeMap::new(),
            done: Vec::new(),
            next_index: 0,
            finish: None,
            usage: None,
        }
    }

    fn event(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(data.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let r = response_object(
            &self.id,
            self.created,
            &self.model,
            "in_progress",
            vec![],
            None,
        );
        self.event(out, "response.created", json!({"response": r.clone()}));
        self.event(out, "response.in_progress", json!({"response": r}));
    }

    /// The events for one canonical chunk (possibly none).
    pub fn chunk(&mut self, data: &[u8]) -> Bytes {
        let mut out = Vec::new();
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return Bytes::new();
        };
        self.start(&mut out);
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage_from_openai(u));
        }
        let Some(choice) = v.pointer("/choices/0") else {
            return Bytes::from(out);
        };
        if let Some(text) = choice
            .pointer("/delta/content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            if self.message.is_none() {
                let open = Open {
                    output_index: self.next_index,
                    id: new_id("msg"),
                    call: None,
                    text: String::new(),
                };
                self.next_index += 1;
                let mut item = message_item(&open.id, "", "in_progress");
                item["content"] = json!([]);
                let (index, id) = (open.output_index, open.id.clone());
                self.message = Some(open);
                self.event(
                    &mut out,
                    "response.output_item.added",
                    json!({"output_index": index, "item": item}),
                );
                self.event(&mut out, "response.content_part.added", json!({"item_id": id, "output_index": index,
                    "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}));
            }
            if let Some(m) = self.message.as_mut() {
                m.text.push_str(text);
                let (index, id) = (m.output_index, m.id.clone());
                self.event(
                    &mut out,
                    "response.output_text.delta",
                    json!({"item_id": id, "output_index": index,
                    "content_index": 0, "delta": text, "logprobs": []}),
                );
            }
        }
        for call in choice
            .pointer("/delta/tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            if !self.calls.contains_key(&index) {
                let s = |p: &str| {
                    call.pointer(p)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                let open = Open {
                    output_index: self.next_index,
                    id: new_id("fc"),
                    call: Some((s("/id"), s("/function/name"))),
                    text: String::new(),
                };
                self.next_index += 1;
                let item = call_item(&open.id, &s("/id"), &s("/function/name"), "", "in_progress");
                let output_index = open.output_index;
                self.calls.insert(index, open);
                self.event(
                    &mut out,
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": item}),
                );
            }
            if let Some(args) = call
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                && let Some(open) = self.calls.get_mut(&index)
            {
                open.text.push_str(args);
                let (output_index, id) = (open.output_index, open.id.clone());
                self.event(
                    &mut out,
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": output_index, "delta": args}),
                );
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_owned());
        }
        Bytes::from(out)
    }

    /// The closing events, after the canonical `[DONE]`.
    pub fn finish(&mut self) -> Bytes {
        let mut out = Vec::new();
        self.start(&mut out);
        if let Some(m) = self.message.take() {
            let item = message_item(&m.id, &m.text, "completed");
            self.event(
                &mut out,
                "response.output_text.done",
                json!({"item_id": m.id, "output_index": m.output_index,
                "content_index": 0, "text": m.text, "logprobs": []}),
            );
            self.event(
                &mut out,
                "response.content_part.done",
                json!({"item_id": m.id, "output_index": m.output_index,
                "content_index": 0, "part": item["content"][0].clone()}),
            );
            self.event(
                &mut out,
                "response.output_item.done",
                json!({"output_index": m.output_index, "item": item.clone()}),
            );
            self.done.push(item);
        }
        let calls = std::mem::take(&mut self.calls);
        for open in calls.into_values() {
            let (call_id, name) = open.call.clone().unwrap_or_default();
            let item = call_item(&open.id, &call_id, &name, &open.text, "completed");
            self.event(&mut out, "response.function_call_arguments.done",
                json!({"item_id": open.id, "output_index": open.output_index, "arguments": open.text}));
            self.event(
                &mut out,
                "response.output_item.done",
                json!({"output_index": open.output_index, "item": item.clone()}),
            );
            self.done.push(item);
        }
        let status = if self.finish.as_deref() == Some("length") {
            "incomplete"
        } else {
            "completed"
        };
        let output = std::mem::take(&mut self.done);
        let r = response_object(
            &self.id,
            self.created,
            &self.model,
            status,
            output,
            self.usage,
        );
        self.event(
            &mut out,
            &format!("response.{status}"),
            json!({"response": r}),
        );
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn maps_instructions_items_tools_and_the_cap() {
        let chat = to_chat(&obj(json!({
            "model": "m", "instructions": "be brief", "max_output_tokens": 50,
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "hi"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "42"},
                {"type": "reasoning", "id": "rs_1", "summary": []}
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}
        })))
        .unwrap();
        assert_eq!(chat["max_tokens"], 50);
        assert_eq!(
            chat["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(chat["messages"][1]["content"][1]["type"], "image_url");
        assert_eq!(chat["messages"][2]["tool_calls"][0]["id"], "c1");
        assert_eq!(chat["messages"][3]["role"], "tool");
        assert_eq!(chat["messages"].as_array().unwrap().len(), 4);
        assert_eq!(chat["tools"][0]["function"]["name"], "f");
        assert_eq!(chat["response_format"]["json_schema"]["name"], "x");
    }

    #[test]
    fn refuses_what_needs_openai() {
        for bad in [
            json!({"input": "x", "previous_response_id": "resp_1"}),
            json!({"input": "x", "store": true}),
            json!({"input": "x", "tools": [{"type": "web_search"}]}),
            json!({"input": [{"type": "file_search_call", "id": "x"}]}),
            json!({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}),
        ] {
            assert!(to_chat(&obj(bad.clone())).is_err(), "{bad}");
        }
        assert!(to_chat(&obj(json!({"input": "x", "store": false}))).is_ok());
    }

    #[test]
    fn streams_text_and_calls_as_typed_events() {
        let mut t = ResponsesStreamTranslator::new("m");
        let mut all = Vec::new();
        all.extend_from_slice(&t.chunk(br#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#));
        all.extend_from_slice(&t.chunk(br#"{"choices":[{"index":0,"delta":{"content":"lo"}}]}"#));
        all.extend_from_slice(&t.chunk(
            br#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","function":{"name":"f","arguments":"{\"a\""}}]}}]}"#,
        ));
        all.extend_from_slice(&t.chunk(
            br#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
        ));
        all.extend_from_slice(&t.finish());
        let text = String::from_utf8(all).unwrap();
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(kinds[0], "response.created");
        assert_eq!(kinds[1], "response.in_progress");
        assert!(kinds.contains(&"response.output_text.delta"));
        assert!(kinds.contains(&"response.function_call_arguments.delta"));
        assert_eq!(*kinds.last().unwrap(), "response.completed");
        let last = text
            .lines()
            .rev()
            .find(|l| l.starts_with("data: "))
            .unwrap();
        let v: Value = serde_json::from_str(&last[6..]).unwrap();
        assert_eq!(v["response"]["usage"]["output_tokens"], 4);
        assert_eq!(v["response"]["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(v["response"]["output"][1]["arguments"], "{\"a\"");
    }
}
