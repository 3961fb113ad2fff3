//! Between the two forms of one answer: a stored complete answer replayed as
//! the chunks of a stream (`chat.completion.chunk` / `text_completion`,
//! then the usage chunk, then `[DONE]`), and a stream's chunks assembled
//! into the complete answer that is stored. The cache keeps the complete
//! form only, so either kind of request can be served from either kind of
//! answer.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::providers::{Endpoint, EventStream, SseEvent};

/// The events of a stream that delivers `body`, a complete canonical
/// answer. The usage chunk is always there when the answer had usage; the
/// pipeline strips it for clients that did not ask for it, as it does for
/// a provider's stream. `None` when `body` is not an answer of `endpoint`.
pub fn events(endpoint: Endpoint, body: &[u8]) -> Option<EventStream> {
    let chunks = chunks(endpoint, body)?;
    let events = chunks
        .into_iter()
        .map(|c| Ok(SseEvent::Data(Bytes::from(c.to_string()))))
        .chain(std::iter::once(Ok(SseEvent::Done)));
    Some(Box::pin(futures_util::stream::iter(events)))
}

fn chunks(endpoint: Endpoint, body: &[u8]) -> Option<Vec<Value>> {
    let answer: Map<String, Value> = serde_json::from_slice(body).ok()?;
    let (object, chat) = match endpoint {
        Endpoint::ChatCompletions => ("chat.completion.chunk", true),
        Endpoint::Completions => ("text_completion", false),
        Endpoint::Embeddings => return None,
    };
    let mut head = Map::new();
    for field in [
        "id",
        "created",
        "model",
        "system_fingerprint",
        "service_tier",
    ] {
        if let Some(v) = answer.get(field).filter(|v| !v.is_null()) {
            head.insert(field.into(), v.clone());
        }
    }
    head.insert("object".into(), Value::from(object));
    let with = |choices: Vec<Value>| {
        let mut c = head.clone();
        c.insert("choices".into(), Value::Array(choices));
        Value::Object(c)
    };
    let mut out = Vec::new();
    for choice in answer.get("choices")?.as_array()? {
        let index = choice.get("index").cloned().unwrap_or(json!(0));
        let finish = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        let logprobs = choice.get("logprobs").cloned().unwrap_or(Value::Null);
        if chat {
            let message = choice.get("message")?.as_object()?;
            let mut delta = Map::new();
            for (k, v) in message {
                match (k.as_str(), v) {
                    (_, Value::Null) => {}
                    ("tool_calls", Value::Array(calls)) => {
                        let calls = calls
                            .iter()
                            .enumerate()
                            .map(|(i, call)| {
                                let mut call = call.as_object().cloned().unwrap_or_default();
                                call.insert("index".into(), Value::from(i));
                                Value::Object(call)
                            })
                            .collect();
                        delta.insert(k.clone(), Value::Array(calls));
                    }
                    _ => {
                        delta.insert(k.clone(), v.clone());
                    }
                }
            }
            delta
                .entry("role")
                .or_insert_with(|| Value::from("assistant"));
            out.push(with(vec![json!({
                "index": index, "delta": delta, "logprobs": logprobs, "finish_reason": null
            })]));
            out.push(with(vec![json!({
                "index": index, "delta": {}, "logprobs": null, "finish_reason": finish
            })]));
        } else {
            let text = choice.get("text").cloned().unwrap_or(json!(""));
            out.push(with(vec![json!({
                "index": index, "text": text, "logprobs": logprobs, "finish_reason": null
            })]));
            out.push(with(vec![json!({
                "index": index, "text": "", "logprobs": null, "finish_reason": finish
            })]));
        }
    }
    if let Some(usage) = answer.get("usage").filter(|u| u.is_object()) {
        let mut last = with(Vec::new());
        if let Value::Object(m) = &mut last {
            m.insert("usage".into(), usage.clone());
        }
        out.push(last);
    }
    Some(out)
}

/// One choice of a stream, as its chunks arrive.
#[derive(Default)]
struct Choice {
    message: Map<String, Value>,
    tool_calls: BTreeMap<u64, Map<String, Value>>,
    text: String,
    finish_reason: Value,
}

/// The complete answer a finished stream delivered, as the provider would
/// have sent it unstreamed. `None` for anything it cannot rebuild exactly
/// (log probabilities, an error chunk, a chunk that is not JSON): such an
/// answer is simply not stored.
pub fn assemble(endpoint: Endpoint, chunks: &[Bytes]) -> Option<Bytes> {
    let chat = match endpoint {
        Endpoint::ChatCompletions => true,
        Endpoint::Completions => false,
        Endpoint::Embeddings => return None,
    };
    let mut head = Map::new();
    let mut usage = None;
    let mut choices: BTreeMap<u64, Choice> = BTreeMap::new();
    for raw in chunks {
        let chunk: Map<String, Value> = serde_json::from_slice(raw).ok()?;
        if chunk.contains_key("error") {
            return None;
        }
        for field in [
            "id",
            "created",
            "model",
            "system_fingerprint",
            "service_tier",
        ] {
            if let Some(v) = chunk.get(field).filter(|v| !v.is_null()) {
                head.entry(field).or_insert_with(|| v.clone());
            }
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            usage = Some(u.clone());
        }
        let list = match chunk.get("choices") {
            None | Some(Value::Null) => continue,
            Some(v) => v.as_array()?,
        };
        for c in list {
            let index = match c.get("index") {
                None => 0,
                Some(i) => i.as_u64()?,
            };
            if c.get("logprobs").is_some_and(|l| !l.is_null()) {
                return None;
            }
            let acc = choices.entry(index).or_default();
            if let Some(f) = c.get("finish_reason").filter(|f| !f.is_null()) {
                acc.finish_reason = f.clone();
            }
            if !chat {
                if let Some(t) = c.get("text") {
                    acc.text.push_str(t.as_str()?);
                }
                continue;
            }
            let Some(delta) = c.get("delta").filter(|d| !d.is_null()) else {
                continue;
            };
            for (k, v) in delta.as_object()? {
                match (k.as_str(), v) {
                    (_, Value::Null) => {}
                    ("tool_calls", Value::Array(calls)) => {
                        for call in calls {
                            merge_call(&mut acc.tool_calls, call.as_object()?)?;
                        }
                    }
                    ("role", v) => {
                        acc.message.insert(k.clone(), v.clone());
                    }
                    (_, Value::String(s)) => match acc.message.get_mut(k) {
                        Some(Value::String(prev)) => prev.push_str(s),
                        _ => {
                            acc.message.insert(k.clone(), v.clone());
                        }
                    },
                    _ => {
                        acc.message.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    if choices.is_empty() {
        return None;
    }
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|(index, c)| {
            if chat {
                let mut message = c.message;
                message
                    .entry("role")
                    .or_insert_with(|| Value::from("assistant"));
                message.entry("content").or_insert(Value::Null);
                if !c.tool_calls.is_empty() {
                    let calls = c.tool_calls.into_values().map(Value::Object).collect();
                    message.insert("tool_calls".into(), Value::Array(calls));
                }
                json!({"index": index, "message": message, "logprobs": null, "finish_reason": c.finish_reason})
            } else {
                json!({"index": index, "text": c.text, "logprobs": null, "finish_reason": c.finish_reason})
            }
        })
        .collect();
    let mut answer = head;
    answer.insert(
        "object".into(),
        Value::from(if chat {
            "chat.completion"
        } else {
            "text_completion"
        }),
    );
    answer.insert("choices".into(), Value::Array(choices));
    if let Some(u) = usage {
        answer.insert("usage".into(), u);
    }
    Some(Bytes::from(Value::Object(answer).to_string()))
}

/// Folds one tool-call delta into the call it continues (by its `index`):
/// `id`, `type` and the function's `name` arrive once, `arguments` in pieces.
fn merge_call(
    calls: &mut BTreeMap<u64, Map<String, Value>>,
    delta: &Map<String, Value>,
) -> Option<()> {
    let index = match delta.get("index") {
        None => calls.len() as u64,
        Some(i) => i.as_u64()?,
    };
    let call = calls.entry(index).or_default();
    for (k, v) in delta {
        match (k.as_str(), v) {
            ("index", _) | (_, Value::Null) => {}
            ("function", Value::Object(f)) => {
                let Value::Object(into) = call
                    .entry("function")
                    .or_insert_with(|| Value::Object(Map::new()))
                else {
                    return None;
                };
                for (fk, fv) in f {
                    match (into.get_mut(fk), fv) {
                        (Some(Value::String(prev)), Value::String(s)) => prev.push_str(s),
                        (_, Value::Null) => {}
                        _ => {
                            into.insert(fk.clone(), fv.clone());
                        }
                    }
                }
            }
            _ => {
                call.insert(k.clone(), v.clone());
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn b(v: Value) -> Bytes {
        Bytes::from(v.to_string())
    }

    #[tokio::test]
    async fn a_stream_assembles_into_the_answer_it_delivered_and_replays_back() {
        let head =
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 7, "model": "m"});
        let with = |choices: Value, usage: Value| {
            let mut c = head.clone();
            c["choices"] = choices;
            if !usage.is_null() {
                c["usage"] = usage;
            }
            b(c)
        };
        let chunks = vec![
            with(
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""}}]),
                Value::Null,
            ),
            with(
                json!([{"index": 0, "delta": {"content": "Hel"}}]),
                Value::Null,
            ),
            with(
                json!([{"index": 0, "delta": {"content": "lo", "tool_calls": [{"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]}}]),
                Value::Null,
            ),
            with(
                json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}]),
                Value::Null,
            ),
            with(
                json!([]),
                json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
            ),
        ];
        let whole = assemble(Endpoint::ChatCompletions, &chunks).unwrap();
        let v: Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["id"], "c1");
        let m = &v["choices"][0]["message"];
        assert_eq!(m["content"], "Hello");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(m["tool_calls"][0]["id"], "t1");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(v["usage"]["total_tokens"], 5);

        // And back: the replay of the assembled answer assembles to it again.
        let replayed = chunks_of(Endpoint::ChatCompletions, &whole).await;
        assert_eq!(
            assemble(Endpoint::ChatCompletions, &replayed).unwrap(),
            whole
        );
    }

    #[tokio::test]
    async fn completions_replay_and_assemble() {
        let whole = b(
            json!({"id": "x", "object": "text_completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "text": "ab", "logprobs": null, "finish_reason": "stop"},
                        {"index": 1, "text": "cd", "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}),
        );
        let replayed = chunks_of(Endpoint::Completions, &whole).await;
        let v: Value =
            serde_json::from_slice(&assemble(Endpoint::Completions, &replayed).unwrap()).unwrap();
        let w: Value = serde_json::from_slice(&whole).unwrap();
        assert_eq!(v, w);
    }

    #[test]
    fn what_cannot_be_rebuilt_exactly_is_not_assembled() {
        let e = Endpoint::ChatCompletions;
        assert!(assemble(e, &[]).is_none());
        assert!(assemble(e, &[Bytes::from_static(b"not json")]).is_none());
        assert!(assemble(e, &[b(json!({"error": {"message": "x"}}))]).is_none());
        assert!(assemble(e, &[b(json!({"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": []}}]}))]).is_none());
        assert!(
            assemble(
                e,
                &[b(json!({"choices": [{"index": "zero", "delta": {}}]}))]
            )
            .is_none()
        );
        assert!(assemble(Endpoint::Embeddings, &[b(json!({"choices": []}))]).is_none());
        // A stored body that is not an answer replays as nothing.
        assert!(events(e, b"[1,2]").is_none());
        assert!(events(e, b"{\"choices\": 3}").is_none());
    }

    async fn chunks_of(endpoint: Endpoint, body: &[u8]) -> Vec<Bytes> {
        let all: Vec<_> = events(endpoint, body).unwrap().collect().await;
        assert_eq!(all.last().unwrap().as_ref().unwrap(), &SseEvent::Done);
        all.into_iter()
            .filter_map(|e| match e.unwrap() {
                SseEvent::Data(d) => Some(d),
                SseEvent::Done | SseEvent::Native { .. } => None,
            })
            .collect()
    }
}
