//! Kind `mock`: a built-in provider with no network, so the gateway works
//! (README walkthrough, demos, tests) without any provider key. Answers are
//! deterministic: the same request always gets the same text, ids and usage.
//!
//! A "token" here is one word of [`MOCK_REPLY`]; prompt tokens are the
//! input's JSON size divided by four, about what real tokenizers give for
//! English text.

use async_trait::async_trait;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::upstream::Ctx;
use super::{Endpoint, Provider, ProviderError, SseEvent, UpstreamCall, UpstreamResponse, Usage};

/// The whole answer when `max_tokens` does not cut it short; one token per word.
pub const MOCK_REPLY: &str = "This is a deterministic reply from the tollgate mock provider, which never calls a real model.";

/// Embedding size when the request sets no `dimensions` (that of
/// `text-embedding-3-small`).
pub const DEFAULT_DIMENSIONS: usize = 1536;

/// More choices than this is a mistake in the request, not a load test.
const MAX_N: u64 = 16;
const MAX_DIMENSIONS: u64 = 8192;

pub(crate) struct Mock {
    ctx: Ctx,
}

impl Mock {
    pub fn new(name: &str) -> Self {
        Mock {
            ctx: Ctx::new(name, None),
        }
    }
}

#[async_trait]
impl Provider for Mock {
    fn name(&self) -> &str {
        &self.ctx.provider
    }

    async fn send(&self, call: UpstreamCall) -> Result<UpstreamResponse, ProviderError> {
        let body = &call.body;
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("mock")
            .to_owned();
        match call.endpoint {
            Endpoint::Embeddings => {
                if call.stream {
                    return Err(self
                        .ctx
                        .bad_request("`stream` is not supported for embeddings"));
                }
                self.embeddings(body, &model)
            }
            Endpoint::ChatCompletions | Endpoint::Completions => {
                let chat = call.endpoint == Endpoint::ChatCompletions;
                let input_field = if chat { "messages" } else { "prompt" };
                let input = match body.get(input_field) {
                    Some(Value::Array(a)) if chat && a.is_empty() => {
                        return Err(self
                            .ctx
                            .bad_request("`messages` must hold at least one message"));
                    }
                    Some(v @ Value::Array(_)) if chat => v,
                    Some(v @ (Value::String(_) | Value::Array(_))) if !chat => v,
                    _ => {
                        let want = if chat {
                            "an array of messages"
                        } else {
                            "a string or an array"
                        };
                        return Err(self.ctx.bad_request(&format!(
                            "`{input_field}` is required and must be {want}"
                        )));
                    }
                };
                let generation = Generation::new(&self.ctx, body, input, &model, chat)?;
                if call.stream {
                    Ok(generation.stream())
                } else {
                    Ok(generation.complete())
                }
            }
        }
    }
}

fn prompt_tokens(input: &Value) -> u64 {
    let size = serde_json::to_vec(input).map(|v| v.len()).unwrap_or(0) as u64;
    size.div_ceil(4).max(1)
}

/// FNV-1a: a stable seed from the request, so ids and vectors repeat.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn seed(input: &Value, model: &str) -> u64 {
    let bytes = serde_json::to_vec(input).unwrap_or_default();
    fnv1a(&bytes) ^ fnv1a(model.as_bytes())
}

fn usage_json(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": { "cached_tokens": 0 },
        "completion_tokens_details": { "reasoning_tokens": 0 },
    })
}

fn optional_u64(
    ctx: &Ctx,
    body: &Map<String, Value>,
    field: &str,
) -> Result<Option<u64>, ProviderError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| ctx.bad_request(&format!("`{field}` must be a non-negative integer"))),
    }
}

struct Generation {
    chat: bool,
    model: String,
    id: String,
    created: i64,
    n: u64,
    words: Vec<&'static str>,
    finish_reason: &'static str,
    usage: Usage,
    include_usage: bool,
}

impl Generation {
    fn new(
        ctx: &Ctx,
        body: &Map<String, Value>,
        input: &Value,
        model: &str,
        chat: bool,
    ) -> Result<Self, ProviderError> {
        let n = optional_u64(ctx, body, "n")?.unwrap_or(1);
        if n == 0 || n > MAX_N {
            return Err(ctx.bad_request(&format!("`n` must be between 1 and {MAX_N}")));
        }
        let cap = match optional_u64(ctx, body, "max_completion_tokens")? {
            Some(cap) => Some(cap),
            None => optional_u64(ctx, body, "max_tokens")?,
        };
        let all: Vec<&'static str> = MOCK_REPLY.split(' ').collect();
        let len = cap.map_or(all.len(), |c| {
            usize::try_from(c).unwrap_or(usize::MAX).min(all.len())
        });
        let finish_reason = if len < all.len() { "length" } else { "stop" };
        let words = all[..len].to_vec();
        let prompt_tokens = prompt_tokens(input);
        let completion_tokens = words.len() as u64 * n;
        let include_usage = body
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let prefix = if chat { "chatcmpl-mock-" } else { "cmpl-mock-" };
        Ok(Generation {
            chat,
            model: model.to_owned(),
            id: format!("{prefix}{:016x}", seed(input, model)),
            created: chrono::Utc::now().timestamp(),
            n,
            words,
            finish_reason,
            usage: Usage {
                prompt_tokens,
                completion_tokens,
                ..Usage::default()
            },
            include_usage,
        })
    }

    fn text(&self) -> String {
        self.words.join(" ")
    }

    fn complete(&self) -> UpstreamResponse {
        let text = self.text();
        let choices: Vec<Value> = (0..self.n)
            .map(|index| {
                if self.chat {
                    json!({
                        "index": index,
                        "message": { "role": "assistant", "content": text, "refusal": null },
                        "logprobs": null,
                        "finish_reason": self.finish_reason,
                    })
                } else {
                    json!({ "index": index, "text": text, "logprobs": null, "finish_reason": self.finish_reason })
                }
            })
            .collect();
        let body = json!({
            "id": self.id,
            "object": if self.chat { "chat.completion" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage_json(self.usage),
            "system_fingerprint": "tollgate-mock",
        });
        UpstreamResponse::Complete {
            body: Bytes::from(body.to_string()),
            usage: Some(self.usage),
        }
    }

    fn chunk(&self, choices: Value) -> SseEvent {
        let mut chunk = json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "tollgate-mock",
            "choices": choices,
        });
        if self.include_usage {
            // OpenAI sends `"usage": null` on every chunk but the last when asked for usage.
            chunk["usage"] = Value::Null;
        }
        SseEvent::Data(Bytes::from(chunk.to_string()))
    }

    fn stream(&self) -> UpstreamResponse {
        let mut events = Vec::with_capacity((self.words.len() + 2) * self.n as usize + 2);
        for index in 0..self.n {
            if self.chat {
                events.push(self.chunk(json!([{
                    "index": index,
                    "delta": { "role": "assistant", "content": "", "refusal": null },
                    "logprobs": null,
                    "finish_reason": null,
                }])));
            }
            for (i, word) in self.words.iter().enumerate() {
                let piece = if i == 0 {
                    (*word).to_owned()
                } else {
                    format!(" {word}")
                };
                let choice = if self.chat {
                    json!({ "index": index, "delta": { "content": piece }, "logprobs": null, "finish_reason": null })
                } else {
                    json!({ "index": index, "text": piece, "logprobs": null, "finish_reason": null })
                };
                events.push(self.chunk(json!([choice])));
            }
            let last = if self.chat {
                json!({ "index": index, "delta": {}, "logprobs": null, "finish_reason": self.finish_reason })
            } else {
                json!({ "index": index, "text": "", "logprobs": null, "finish_reason": self.finish_reason })
            };
            events.push(self.chunk(json!([last])));
        }
        if self.include_usage {
            let usage = json!({
                "id": self.id,
                "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
                "created": self.created,
                "model": self.model,
                "system_fingerprint": "tollgate-mock",
                "choices": [],
                "usage": usage_json(self.usage),
            });
            events.push(SseEvent::Data(Bytes::from(usage.to_string())));
        }
        events.push(SseEvent::Done);
        UpstreamResponse::Stream(Box::pin(futures_util::stream::iter(
            events.into_iter().map(Ok),
        )))
    }
}

impl Mock {
    fn embeddings(
        &self,
        body: &Map<String, Value>,
        model: &str,
    ) -> Result<UpstreamResponse, ProviderError> {
        let inputs: Vec<&Value> = match body.get("input") {
            Some(Value::Array(items)) if !items.is_empty() => {
                // An array of token ids is one input; an array of strings or
                // of token arrays is one input each.
                if items.iter().all(Value::is_number) {
                    vec![&body["input"]]
                } else {
                    items.iter().collect()
                }
            }
            Some(v @ Value::String(_)) => vec![v],
            _ => {
                return Err(self
                    .ctx
                    .bad_request("`input` is required and must be a string or a non-empty array"));
            }
        };
        let dims =
            optional_u64(&self.ctx, body, "dimensions")?.unwrap_or(DEFAULT_DIMENSIONS as u64);
        if dims == 0 || dims > MAX_DIMENSIONS {
            return Err(self.ctx.bad_request(&format!(
                "`dimensions` must be between 1 and {MAX_DIMENSIONS}"
            )));
        }
        let base64 = match body.get("encoding_format").and_then(Value::as_str) {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(self.ctx.bad_request(&format!(
                    "`encoding_format` `{other}` is not one of `float`, `base64`"
                )));
            }
        };
        let mut prompt = 0;
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(index, input)| {
                prompt += prompt_tokens(input);
                let vector = unit_vector(seed(input, model), dims as usize);
                let embedding = if base64 {
                    let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    json!(vector)
                };
                json!({ "object": "embedding", "index": index, "embedding": embedding })
            })
            .collect();
        let usage = Usage {
            prompt_tokens: prompt,
            completion_tokens: 0,
            ..Usage::default()
        };
        let body = json!({
            "object": "list",
            "data": data,
            "model": model,
            "usage": { "prompt_tokens": prompt, "total_tokens": prompt },
        });
        Ok(UpstreamResponse::Complete {
            body: Bytes::from(body.to_string()),
            usage: Some(usage),
        })
    }
}

/// A deterministic vector of length 1 (as real embeddings are), from xorshift.
fn unit_vector(seed: u64, dims: usize) -> Vec<f32> {
    let mut state = seed | 1;
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}
