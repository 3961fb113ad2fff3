//! `/v1/completions` on providers that only have a chat API (`gemini`,
//! `vertex`, `bedrock`): the prompt becomes one user message, the chat
//! answer (whole or streamed) comes back as a `text_completion`. Pure
//! functions of JSON and a stream adapter: no HTTP here.

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use crate::providers::{EventStream, SseEvent, UpstreamCall, UpstreamResponse};

/// Fields of a completions request that mean the same on chat and go
/// across unchanged; `prompt` is mapped, and anything else a chat API
/// would not understand is refused by [`to_chat`] rather than dropped.
const SAME_ON_CHAT: &[&str] = &[
    "model",
    "max_tokens",
    "stop",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "user",
];

/// Completions fields with no chat equivalent on these providers; each is
/// refused unless at its neutral value, so nothing is silently ignored.
fn unsupported(key: &str, value: &Value) -> bool {
    match key {
        "echo" => value.as_bool() == Some(true),
        "best_of" => value.as_u64().is_some_and(|n| n > 1),
        "logprobs" | "suffix" | "logit_bias" => !value.is_null(),
        _ => false,
    }
}

/// The chat request for a completions request. The error is a message for
/// the client (a 400): a prompt list is refused rather than sent as one
/// call per prompt, so one request is always one upstream call (and the
/// budget reserved for it, prompts × choices × cap, is never exceeded).
pub(crate) fn to_chat(body: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    let prompt = match body.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => match items.as_slice() {
            [Value::String(s)] => s.clone(),
            [Value::String(_), ..] => {
                return Err(format!(
                    "`prompt` is a list of {} prompts; this provider completes one prompt per request: send one request per prompt",
                    items.len()
                ));
            }
            _ => {
                return Err(
                    "`prompt` as token ids is not supported by this provider: send the text"
                        .to_owned(),
                );
            }
        },
        _ => return Err("`prompt` must be a string".to_owned()),
    };
    let mut chat = Map::new();
    for (key, value) in body {
        if SAME_ON_CHAT.contains(&key.as_str()) {
            chat.insert(key.clone(), value.clone());
        } else if unsupported(key, value) {
            return Err(format!(
                "`{key}` is not supported on `/v1/completions` by this provider"
            ));
        }
    }
    chat.insert(
        "messages".into(),
        json!([{ "role": "user", "content": prompt }]),
    );
    Ok(chat)
}

/// The chat call standing in for a completions call.
pub(crate) fn chat_call(call: UpstreamCall) -> Result<UpstreamCall, String> {
    Ok(UpstreamCall {
        endpoint: crate::providers::Endpoint::ChatCompletions,
        body: to_chat(&call.body)?,
        ..call
    })
}

/// A `chat.completion` body as a `text_completion`: each choice's message
/// text becomes its `text`; id, model, created and usage are kept.
pub(crate) fn from_chat(body: &[u8]) -> Result<Bytes, String> {
    let chat: Value =
        serde_json::from_slice(body).map_err(|e| format!("the chat answer is not JSON: {e}"))?;
    let choices: Vec<Value> = chat
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            let text = c
                .pointer("/message/content")
                .and_then(Value::as_str)
                .unwrap_or("");
            json!({ "text": text, "index": c.get("index").cloned().unwrap_or(json!(i)),
                "logprobs": null, "finish_reason": c.get("finish_reason").cloned().unwrap_or(Value::Null) })
        })
        .collect();
    let mut out = json!({ "id": chat.get("id").cloned().unwrap_or(Value::Null),
        "object": "text_completion", "created": chat.get("created").cloned().unwrap_or(json!(0)),
        "model": chat.get("model").cloned().unwrap_or(Value::Null), "choices": choices });
    if let Some(u) = chat.get("usage") {
        out["usage"] = u.clone();
    }
    serde_json::to_vec(&out)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// One `chat.completion.chunk` as a `text_completion` chunk, or `None`
/// for a chunk with nothing a completions client shows (the role-only
/// first delta, a tool-call delta). A usage chunk stays one.
fn chunk_from_chat(data: &[u8]) -> Option<Bytes> {
    let chunk: Value = serde_json::from_slice(data).ok()?;
    let mut choices = Vec::new();
    for (i, c) in chunk
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let text = c.pointer("/delta/content").and_then(Value::as_str);
        let finish = c.get("finish_reason").filter(|f| !f.is_null());
        if text.is_none() && finish.is_none() {
            continue;
        }
        choices.push(json!({ "text": text.unwrap_or(""),
            "index": c.get("index").cloned().unwrap_or(json!(i)),
            "logprobs": null, "finish_reason": finish.cloned().unwrap_or(Value::Null) }));
    }
    let usage = chunk.get("usage").filter(|u| !u.is_null());
    if choices.is_empty() && usage.is_none() {
        return None;
    }
    let mut out = json!({ "id": chunk.get("id").cloned().unwrap_or(Value::Null),
        "object": "text_completion", "created": chunk.get("created").cloned().unwrap_or(json!(0)),
        "model": chunk.get("model").cloned().unwrap_or(Value::Null), "choices": choices });
    if let Some(u) = usage {
        out["usage"] = u.clone();
    }
    serde_json::to_vec(&out).ok().map(Bytes::from)
}

/// The chat answer of a completions call, as a completions answer.
pub(crate) fn answer(response: UpstreamResponse) -> Result<UpstreamResponse, String> {
    match response {
        UpstreamResponse::Complete { body, usage } => Ok(UpstreamResponse::Complete {
            body: from_chat(&body)?,
            usage,
        }),
        UpstreamResponse::Stream(events) => Ok(UpstreamResponse::Stream(stream(events))),
    }
}

fn stream(events: EventStream) -> EventStream {
    Box::pin(events.filter_map(|event| async move {
        match event {
            Ok(SseEvent::Data(data)) => chunk_from_chat(&data).map(|d| Ok(SseEvent::Data(d))),
            other => Some(other),
        }
    }))
}

#[cfg(test)]
#[path = "completions_tests.rs"]
mod tests;
