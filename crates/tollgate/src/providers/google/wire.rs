//! Canonical OpenAI chat and embeddings ↔ Google's Gemini wire format
//! (`generateContent`, `streamGenerateContent`, `embedContent`,
//! `batchEmbedContents`), the same on AI Studio and Vertex AI. Pure
//! functions of JSON: no HTTP here.

use std::collections::HashMap;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::providers::translate::{text_of, usage_to_openai};
use crate::providers::{SseEvent, Usage};
use crate::types::clip;

/// Gemini `finishReason` → OpenAI `finish_reason`. Every reason Google
/// gives for withholding content is a content filter to an OpenAI client.
pub(crate) fn finish_reason(reason: &str) -> &'static str {
    match reason {
        "STOP" => "stop",
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY"
        | "LANGUAGE" => "content_filter",
        _ => "stop",
    }
}

/// Where the request goes: AI Studio cannot fetch image URLs, Vertex can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    AiStudio,
    Vertex,
}

/// The Gemini `generateContent` body for a canonical chat request. The
/// error is a message for the client (a 400).
pub(crate) fn chat_request(body: &Map<String, Value>, host: Host) -> Result<Value, String> {
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("`messages` must be an array")?;
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Gemini answers a function call by name; OpenAI by the call's id.
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, message) in messages.iter().enumerate() {
        let at = |e: String| format!("`messages[{i}]`: {e}");
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("`messages[{i}].role` is missing"))?;
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, parts) = match role {
            "system" | "developer" => {
                let text = text_of(content).map_err(at)?;
                if !text.is_empty() {
                    system.push(json!({ "text": text }));
                }
                continue;
            }
            "user" => ("user", parts_of(content, host).map_err(at)?),
            "assistant" => {
                let mut parts = parts_of(content, host).map_err(at)?;
                for call in message
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let (id, part) = function_call(call).map_err(at)?;
                    if let (Some(id), Some(name)) = (id, part.pointer("/functionCall/name")) {
                        call_names.insert(id, name.as_str().unwrap_or_default().to_owned());
                    }
                    parts.push(part);
                }
                ("model", parts)
            }
            "tool" => {
                let id = message.get("tool_call_id").and_then(Value::as_str);
                let name = id
                    .and_then(|id| call_names.get(id).cloned())
                    .or_else(|| message.get("name").and_then(Value::as_str).map(str::to_owned))
                    .ok_or_else(|| {
                        at("a `tool` message must answer a `tool_calls` entry of an earlier assistant message (by `tool_call_id`)".to_owned())
                    })?;
                let text = text_of(content).map_err(at)?;
                // A JSON object result goes as is; anything else is wrapped.
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(o)) => Value::Object(o),
                    _ => json!({ "content": text }),
                };
                (
                    "user",
                    vec![json!({ "functionResponse": { "name": name, "response": response } })],
                )
            }
            other => {
                return Err(at(format!(
                    "role `{}` is not one of `system`, `developer`, `user`, `assistant`, `tool`",
                    clip(other)
                )));
            }
        };
        if parts.is_empty() {
            continue;
        }
        // Consecutive turns of one role (several tool results) become one.
        match contents.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(existing) = last["parts"].as_array_mut() {
                    existing.extend(parts);
                }
            }
            _ => contents.push(json!({ "role": role, "parts": parts })),
        }
    }
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    let config = generation_config(body)?;
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = body.get("tools").filter(|t| !t.is_null()) {
        let tools = tools.as_array().ok_or("`tools` must be an array")?;
        let declarations = tools
            .iter()
            .map(function_declaration)
            .collect::<Result<Vec<_>, _>>()?;
        if !declarations.is_empty() {
            out.insert(
                "tools".into(),
                json!([{ "functionDeclarations": declarations }]),
            );
        }
    }
    if let Some(choice) = tool_config(body.get("tool_choice"))? {
        out.insert("toolConfig".into(), choice);
    }
    Ok(Value::Object(out))
}

/// `generationConfig` from the OpenAI sampling fields. The output cap is
/// the smaller of `max_tokens` and `max_completion_tokens`: the gateway
/// writes its reservation into them, and it must reach Google.
fn generation_config(body: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut config = Map::new();
    let cap = ["max_tokens", "max_completion_tokens"]
        .iter()
        .filter_map(|f| body.get(*f).filter(|v| !v.is_null()))
        .map(|v| {
            v.as_u64()
                .ok_or("`max_tokens` must be a non-negative integer")
        })
        .collect::<Result<Vec<u64>, _>>()?
        .into_iter()
        .min();
    if let Some(cap) = cap {
        config.insert("maxOutputTokens".into(), json!(cap));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ] {
        if let Some(v) = body.get(from).filter(|v| !v.is_null()) {
            if !v.is_number() {
                return Err(format!("`{from}` must be a number"));
            }
            config.insert(to.into(), v.clone());
        }
    }
    if let Some(n) = body.get("n").and_then(Value::as_u64).filter(|n| *n > 1) {
        config.insert("candidateCount".into(), json!(n));
    }
    match body.get("stop") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            config.insert("stopSequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            config.insert("stopSequences".into(), Value::Array(a.clone()));
        }
        Some(_) => return Err("`stop` must be a string or an array of strings".to_owned()),
    }
    if let Some(format) = body.get("response_format").filter(|v| !v.is_null()) {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some("json_object") => {
                config.insert("responseMimeType".into(), json!("application/json"));
            }
            Some("json_schema") => {
                config.insert("responseMimeType".into(), json!("application/json"));
                if let Some(schema) = format.pointer("/json_schema/schema") {
                    config.insert("responseJsonSchema".into(), schema.clone());
                }
            }
            _ => {
                return Err(
                    "`response_format.type` must be `text`, `json_object` or `json_schema`"
                        .to_owned(),
                );
            }
        }
    }
    Ok(config)
}

/// OpenAI message content → Gemini `parts`.
fn parts_of(content: &Value, host: Host) -> Result<Vec<Value>, String> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({ "text": s })]),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part.get("type").and_then(Value::as_str) {
                Some("text") => match part.get("text") {
                    Some(Value::String(t)) => Ok(json!({ "text": t })),
                    _ => Err("a `text` part needs a string `text`".to_owned()),
                },
                Some("image_url") => {
                    let url = part
                        .pointer("/image_url/url")
                        .or_else(|| part.get("image_url"))
                        .and_then(Value::as_str)
                        .ok_or("an `image_url` part has no `image_url.url`")?;
                    image_part(url, host)
                }
                other => Err(format!(
                    "content parts of type `{}` cannot be sent to a Gemini model",
                    clip(other.unwrap_or("untyped"))
                )),
            })
            .collect(),
        _ => Err("`content` must be a string, an array of parts or null".to_owned()),
    }
}

/// An OpenAI image URL → `inlineData` (a `data:` URL) or `fileData` (a
/// URL Vertex fetches itself; AI Studio fetches none).
fn image_part(url: &str, host: Host) -> Result<Value, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or("an image `data:` URL has no `,` before its data")?;
        let mime = meta
            .strip_suffix(";base64")
            .ok_or("an image `data:` URL must be base64 (`data:image/png;base64,...`)")?;
        return Ok(json!({ "inlineData": { "mimeType": mime, "data": data } }));
    }
    let fetchable =
        url.starts_with("https://") || url.starts_with("http://") || url.starts_with("gs://");
    match host {
        Host::Vertex if fetchable => {
            Ok(json!({ "fileData": { "mimeType": mime_of(url), "fileUri": url } }))
        }
        Host::AiStudio if fetchable => Err(format!(
            "the Gemini API (AI Studio) does not fetch image URLs like `{}`: send the image inline as a `data:image/...;base64,` URL",
            clip(url)
        )),
        _ => Err(format!(
            "an image URL must be `https://`, `gs://` or a `data:` URL, not `{}`",
            clip(url)
        )),
    }
}

fn mime_of(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    if path.ends_with(".png") {
        "image/png"
    } else if path.ends_with(".webp") {
        "image/webp"
    } else if path.ends_with(".gif") {
        "image/gif"
    } else if path.ends_with(".heic") {
        "image/heic"
    } else {
        "image/jpeg"
    }
}

/// OpenAI assistant `tool_calls[]` entry → Gemini `functionCall` part
/// (and the call's id).
fn function_call(call: &Value) -> Result<(Option<String>, Value), String> {
    let name = call
        .pointer("/function/name")
        .and_then(Value::as_str)
        .ok_or("a tool call has no `function.name`")?;
    let args = call
        .pointer("/function/arguments")
        .and_then(Value::as_str)
        .unwrap_or("");
    let args = if args.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str::<Value>(args).map_err(|e| {
            format!(
                "tool call `{}`: `function.arguments` is not JSON: {e}",
                clip(name)
            )
        })?
    };
    let id = call.get("id").and_then(Value::as_str).map(str::to_owned);
    let mut part = json!({ "functionCall": { "name": name, "args": args } });
    // Gemini 3 refuses a follow-up turn whose function call lost the
    // signature it came with; it travels inside the id (see `call_id`).
    if let Some((_, signature)) = id.as_deref().and_then(|id| id.split_once(THOUGHT_SEP))
        && !signature.is_empty()
    {
        part["thoughtSignature"] = json!(signature);
    }
    Ok((id, part))
}

/// Between a tool call's id and the Gemini `thoughtSignature` it carries:
/// OpenAI and Anthropic clients echo a tool call's id back verbatim but
/// drop fields they do not know, so the id is the one place the signature
/// survives the round trip (LiteLLM's convention, so ids stay compatible).
pub(crate) const THOUGHT_SEP: &str = "__thought__";

/// The OpenAI id of a Gemini `functionCall` part: Google's id (or one made
/// up from the index and name), with the part's `thoughtSignature` after
/// [`THOUGHT_SEP`] when it has one.
fn call_id(part: &Value, call: &Value, index: usize, name: &str) -> String {
    let id = call
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| format!("call_{index}_{}", clip(name)), str::to_owned);
    match part.get("thoughtSignature").and_then(Value::as_str) {
        Some(signature) if !signature.is_empty() => format!("{id}{THOUGHT_SEP}{signature}"),
        _ => id,
    }
}

/// OpenAI function tool → Gemini `functionDeclaration`.
fn function_declaration(tool: &Value) -> Result<Value, String> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err("only tools of `type` `function` can be sent to a Gemini model".to_owned());
    }
    let f = tool.get("function").ok_or("a tool has no `function`")?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a tool `function` has no `name`")?;
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    if let Some(d) = f.get("description").filter(|d| d.is_string()) {
        out.insert("description".into(), d.clone());
    }
    if let Some(p) = f.get("parameters").filter(|p| p.is_object()) {
        out.insert("parametersJsonSchema".into(), p.clone());
    }
    Ok(Value::Object(out))
}

/// OpenAI `tool_choice` → Gemini `toolConfig.functionCallingConfig`.
fn tool_config(choice: Option<&Value>) -> Result<Option<Value>, String> {
    let config = match choice {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => json!({ "mode": "AUTO" }),
            "required" => json!({ "mode": "ANY" }),
            "none" => json!({ "mode": "NONE" }),
            other => {
                return Err(format!(
                    "`tool_choice` `{}` is not one of `auto`, `required`, `none`",
                    clip(other)
                ));
            }
        },
        Some(obj) => match obj.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => json!({ "mode": "ANY", "allowedFunctionNames": [name] }),
            None => {
                return Err("`tool_choice` must be a string or `{\"type\":\"function\",\"function\":{\"name\":…}}`".to_owned());
            }
        },
    };
    Ok(Some(json!({ "functionCallingConfig": config })))
}

/// Gemini `usageMetadata` → token counts, in OpenAI's accounting:
/// thinking tokens are billed as output (Google bills them at the output
/// rate), tool-use prompt tokens as input, and the cached part of the
/// prompt (already inside `promptTokenCount`) at the cache rate. `None`
/// when the prompt count is missing or not a count: the gateway then
/// bills its own estimate instead of a provider's zero.
pub(crate) fn usage(meta: &Value) -> Option<Usage> {
    let n = |f: &str| meta.get(f).and_then(Value::as_u64).unwrap_or(0);
    let prompt = meta.get("promptTokenCount")?.as_u64()?;
    Some(Usage {
        prompt_tokens: prompt.saturating_add(n("toolUsePromptTokenCount")),
        completion_tokens: n("candidatesTokenCount").saturating_add(n("thoughtsTokenCount")),
        cached_tokens: n("cachedContentTokenCount").min(prompt),
        ..Usage::default()
    })
}

/// A prompt Google refused to answer: `promptFeedback.blockReason` and no
/// candidates. The message names the reason for the client.
pub(crate) fn prompt_block(v: &Value) -> Option<String> {
    let reason = v.pointer("/promptFeedback/blockReason")?.as_str()?;
    let has_candidates = v
        .get("candidates")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    if has_candidates {
        return None;
    }
    let detail = v
        .pointer("/promptFeedback/blockReasonMessage")
        .and_then(Value::as_str)
        .map(|m| format!(": {}", clip(m)))
        .unwrap_or_default();
    Some(format!(
        "the provider's safety filters blocked the prompt (`blockReason` `{}`){detail}; rephrase the request",
        clip(reason)
    ))
}

/// The OpenAI error body for a blocked prompt.
pub(crate) fn block_error_body(message: &str) -> Bytes {
    Bytes::from(
        json!({ "error": { "message": message, "type": "invalid_request_error",
            "code": "content_filter", "param": null } })
        .to_string(),
    )
}

/// One candidate's parts → (text, tool calls). Thought summaries are
/// not part of the answer.
fn candidate_parts(candidate: &Value, first_call_index: usize) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if part.get("thought").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push_str(t);
        }
        if let Some(call) = part.get("functionCall") {
            let index = first_call_index + calls.len();
            let name = call.get("name").and_then(Value::as_str).unwrap_or_default();
            let args = call.get("args").cloned().unwrap_or_else(|| json!({}));
            let id = call_id(part, call, index, name);
            calls.push(json!({ "index": index, "id": id, "type": "function",
                "function": { "name": name, "arguments": args.to_string() } }));
        }
    }
    (text, calls)
}

fn candidate_finish(candidate: &Value, has_calls: bool) -> Option<&'static str> {
    let reason = candidate.get("finishReason").and_then(Value::as_str)?;
    Some(match finish_reason(reason) {
        "stop" if has_calls => "tool_calls",
        other => other,
    })
}

/// A Gemini `GenerateContentResponse` → OpenAI `chat.completion`, with its
/// usage if Google reported one.
pub(crate) fn chat_response(
    raw: &[u8],
    model: &str,
    created: i64,
) -> Result<(Value, Option<Usage>), String> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    if !v.is_object() {
        return Err("not a JSON object".to_owned());
    }
    let mut choices = Vec::new();
    for (i, candidate) in v
        .get("candidates")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let (text, calls) = candidate_parts(candidate, 0);
        let mut message = json!({ "role": "assistant", "content": text });
        if !calls.is_empty() {
            let calls: Vec<Value> = calls
                .into_iter()
                .map(|mut c| {
                    if let Some(o) = c.as_object_mut() {
                        o.remove("index");
                    }
                    c
                })
                .collect();
            message["tool_calls"] = Value::Array(calls);
        }
        let finish = candidate_finish(candidate, message.get("tool_calls").is_some());
        let index = candidate
            .get("index")
            .and_then(Value::as_u64)
            .unwrap_or(i as u64);
        choices.push(json!({ "index": index, "message": message,
            "finish_reason": finish.unwrap_or("stop"), "logprobs": null }));
    }
    let usage = v.get("usageMetadata").and_then(usage);
    let id = v.get("responseId").and_then(Value::as_str).map_or_else(
        || format!("chatcmpl-gemini-{created}"),
        |r| format!("chatcmpl-{}", clip(r)),
    );
    let mut out = json!({ "id": id, "object": "chat.completion", "created": created,
        "model": model, "choices": choices });
    if let Some(u) = usage {
        out["usage"] = usage_to_openai(u);
    }
    Ok((out, usage))
}

/// Turns Gemini stream chunks (each a whole `GenerateContentResponse`
/// with the text since the last one and the usage so far) into OpenAI
/// `chat.completion.chunk`s. Google sends no end marker: [`Self::finish`]
/// writes the usage chunk and `[DONE]` when the body ends.
pub(crate) struct ChunkTranslator {
    id: String,
    model: String,
    created: i64,
    started: bool,
    /// Tool calls sent so far, per candidate: OpenAI numbers them.
    calls: HashMap<u64, usize>,
    usage: Option<Usage>,
}

impl ChunkTranslator {
    pub fn new(model: &str, created: i64) -> Self {
        ChunkTranslator {
            id: format!("chatcmpl-gemini-{created}"),
            model: model.to_owned(),
            created,
            started: false,
            calls: HashMap::new(),
            usage: None,
        }
    }

    fn chunk(&self, choices: Value) -> SseEvent {
        SseEvent::Data(Bytes::from(
            json!({ "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": choices })
            .to_string(),
        ))
    }

    /// One Gemini chunk's events.
    pub fn on_chunk(&mut self, data: &[u8]) -> Result<Vec<SseEvent>, String> {
        let v: Value =
            serde_json::from_slice(data).map_err(|e| format!("a stream chunk is not JSON: {e}"))?;
        if let Some(u) = v.get("usageMetadata").and_then(usage) {
            self.usage = Some(u);
        }
        if let Some(r) = v.get("responseId").and_then(Value::as_str)
            && !self.started
        {
            self.id = format!("chatcmpl-{}", clip(r));
        }
        let mut out = Vec::new();
        for (i, candidate) in v
            .get("candidates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let index = candidate
                .get("index")
                .and_then(Value::as_u64)
                .unwrap_or(i as u64);
            let sent = self.calls.get(&index).copied().unwrap_or(0);
            let (text, calls) = candidate_parts(candidate, sent);
            let mut delta = Map::new();
            if !self.started {
                delta.insert("role".into(), json!("assistant"));
            }
            if !text.is_empty() {
                delta.insert("content".into(), json!(text));
            }
            let has_calls = sent + calls.len() > 0;
            if !calls.is_empty() {
                self.calls.insert(index, sent + calls.len());
                delta.insert("tool_calls".into(), Value::Array(calls));
            }
            let finish = candidate_finish(candidate, has_calls);
            if delta.is_empty() && finish.is_none() {
                continue;
            }
            self.started = true;
            out.push(self.chunk(json!([{ "index": index, "delta": delta,
                "finish_reason": finish, "logprobs": null }])));
        }
        Ok(out)
    }

    /// The end of the stream: the usage chunk (always when Google reported
    /// usage, so the gateway bills it; stripped again for a client that
    /// did not ask) and `[DONE]`.
    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        if let Some(u) = self.usage_chunk() {
            out.push(u);
        }
        out.push(SseEvent::Done);
        out
    }

    /// The usage so far as a usage-only chunk: what a cut stream is billed.
    pub fn usage_chunk(&self) -> Option<SseEvent> {
        let u = self.usage?;
        Some(SseEvent::Data(Bytes::from(
            json!({ "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": usage_to_openai(u) })
            .to_string(),
        )))
    }
}

/// The texts of an OpenAI embeddings `input`.
fn embedding_inputs(body: &Map<String, Value>) -> Result<(Vec<String>, bool), String> {
    match body.get("input") {
        Some(Value::String(s)) => Ok((vec![s.clone()], true)),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                _ => Err("a Gemini embedding model takes `input` as text: a string or an array of strings (not token ids)".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| (v, false)),
        _ => Err("`input` must be a string or a non-empty array of strings".to_owned()),
    }
}

/// An embeddings request: the Gemini method (`embedContent` for one text,
/// `batchEmbedContents` for several), its body, and an upper bound on the
/// prompt tokens (UTF-8 bytes: every Gemini token covers at least one).
pub(crate) fn embeddings_request(
    body: &Map<String, Value>,
    model: &str,
) -> Result<(&'static str, Value, u64), String> {
    let (inputs, single) = embedding_inputs(body)?;
    let dims = match body.get("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or("`dimensions` must be a positive integer")?,
        ),
    };
    let bytes = inputs.iter().map(|s| s.len() as u64).sum::<u64>().max(1);
    let request = |text: &str| {
        let mut r = json!({ "model": format!("models/{model}"), "content": { "parts": [{ "text": text }] } });
        if let Some(d) = dims {
            r["outputDimensionality"] = json!(d);
        }
        r
    };
    if single {
        let mut r = request(&inputs[0]);
        if let Some(o) = r.as_object_mut() {
            o.remove("model");
        }
        return Ok(("embedContent", r, bytes));
    }
    let requests: Vec<Value> = inputs.iter().map(|t| request(t)).collect();
    Ok(("batchEmbedContents", json!({ "requests": requests }), bytes))
}

/// A Gemini embeddings answer → OpenAI `list` of `embedding`s.
pub(crate) fn embeddings_response(
    raw: &[u8],
    model: &str,
    base64: bool,
    prompt_bound: u64,
) -> Result<(Value, Usage), String> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    let vectors: Vec<&Value> = match (v.get("embedding"), v.get("embeddings")) {
        (Some(one), _) => vec![one],
        (None, Some(Value::Array(many))) => many.iter().collect(),
        _ => return Err("has neither `embedding` nor `embeddings`".to_owned()),
    };
    let mut data = Vec::with_capacity(vectors.len());
    for (index, e) in vectors.into_iter().enumerate() {
        let values = e
            .get("values")
            .and_then(Value::as_array)
            .ok_or("an embedding has no `values`")?;
        let embedding = if base64 {
            let mut bytes = Vec::with_capacity(values.len() * 4);
            for x in values {
                let f = x.as_f64().ok_or("an embedding value is not a number")? as f32;
                bytes.extend_from_slice(&f.to_le_bytes());
            }
            json!(base64::engine::general_purpose::STANDARD.encode(bytes))
        } else {
            Value::Array(values.clone())
        };
        data.push(json!({ "object": "embedding", "index": index, "embedding": embedding }));
    }
    // Google reports no usage for embeddings (newer versions may): its own
    // count when given, else the byte bound, never below what it bills.
    let prompt = v
        .pointer("/usageMetadata/promptTokenCount")
        .and_then(Value::as_u64)
        .unwrap_or(prompt_bound);
    let usage = Usage {
        prompt_tokens: prompt,
        ..Usage::default()
    };
    Ok((
        json!({ "object": "list", "data": data, "model": model,
            "usage": { "prompt_tokens": prompt, "total_tokens": prompt } }),
        usage,
    ))
}

/// A Vertex AI embeddings request (`:predict`, one instance per text) and
/// the byte bound of its prompt tokens.
pub(crate) fn vertex_embeddings_request(body: &Map<String, Value>) -> Result<(Value, u64), String> {
    let (inputs, _) = embedding_inputs(body)?;
    let bytes = inputs.iter().map(|s| s.len() as u64).sum::<u64>().max(1);
    let instances: Vec<Value> = inputs.iter().map(|t| json!({ "content": t })).collect();
    let mut request = json!({ "instances": instances });
    match body.get("dimensions") {
        None | Some(Value::Null) => {}
        Some(v) => {
            let d = v
                .as_u64()
                .ok_or("`dimensions` must be a positive integer")?;
            request["parameters"] = json!({ "outputDimensionality": d });
        }
    }
    Ok((request, bytes))
}

/// A Vertex `:predict` embeddings answer → OpenAI `list`. Vertex counts
/// each instance's tokens (`statistics.token_count`); if any count is
/// missing or not a count, the byte bound is billed instead.
pub(crate) fn vertex_embeddings_response(
    raw: &[u8],
    model: &str,
    base64: bool,
    prompt_bound: u64,
) -> Result<(Value, Usage), String> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| format!("not JSON: {e}"))?;
    let predictions = v
        .get("predictions")
        .and_then(Value::as_array)
        .ok_or("has no `predictions`")?;
    let mut vectors = Vec::with_capacity(predictions.len());
    let mut counted: Option<u64> = Some(0);
    for p in predictions {
        let e = p
            .get("embeddings")
            .ok_or("a prediction has no `embeddings`")?;
        let n = e.pointer("/statistics/token_count").and_then(|n| {
            // Vertex writes the count as a float (`6.0`) or an integer.
            n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && f.fract() == 0.0 && *f < 1e15)
                    .map(|f| f as u64)
            })
        });
        counted = counted.zip(n).map(|(a, b)| a.saturating_add(b));
        vectors.push(e.clone());
    }
    let wrapped = json!({ "embeddings": vectors, "usageMetadata": { "promptTokenCount": counted.unwrap_or(prompt_bound) } });
    embeddings_response(wrapped.to_string().as_bytes(), model, base64, prompt_bound)
}

/// A Google error body (`{"error":{"code","message","status"}}`) reworded
/// as OpenAI's for an OpenAI client.
pub(crate) fn error_body(raw: &[u8]) -> Option<Bytes> {
    let v: Value = serde_json::from_slice(raw).ok()?;
    let e = v.get("error")?;
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the provider rejected the request");
    let status = e
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("INVALID_ARGUMENT");
    Some(Bytes::from(
        json!({ "error": { "message": message, "type": "invalid_request_error",
            "code": status.to_ascii_lowercase(), "param": null } })
        .to_string(),
    ))
}

#[cfg(test)]
mod tests;
