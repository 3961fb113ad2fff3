//! Checks the fields the gateway itself relies on (model, messages,
//! streaming, token limits). Everything else passes through untouched.

use serde_json::{Map, Value};

use super::body::kind_of;
use crate::error::ApiError;
use crate::providers::Endpoint;

/// What the pipeline needs to know about a valid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Parsed {
    pub model: String,
    pub stream: bool,
    /// The client asked for the final usage chunk of a stream.
    pub include_usage: bool,
    /// The output cap per choice the client sent: the larger of
    /// `max_tokens` and `max_completion_tokens` where both are set, since a
    /// provider may honour either. Fields a provider of this endpoint may
    /// ignore (`max_output_tokens` on chat) are not caps.
    pub max_tokens: Option<u64>,
    /// Completions the provider generates and bills per prompt: the larger
    /// of `n` and `best_of` (which generates that many server-side).
    pub choices: u64,
    /// Prompts of a `/v1/completions` prompt list, each completed on its
    /// own; 1 elsewhere.
    pub prompts: u64,
}

impl Parsed {
    /// How many times the per-choice output cap is generated and billed.
    pub fn multiplier(&self) -> u64 {
        self.choices.saturating_mul(self.prompts)
    }
}

/// OpenAI's own limit on `n`; servers that allow more are still held to it,
/// so that one request cannot multiply its cost without bound.
const MAX_CHOICES: u64 = 128;

pub(super) fn request(endpoint: Endpoint, body: &Map<String, Value>) -> Result<Parsed, ApiError> {
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        Some(Value::String(_)) => return Err(ApiError::invalid_param("model", "`model` is empty")),
        Some(other) => {
            return Err(ApiError::invalid_param(
                "model",
                format!("`model` must be a string, not {}", kind_of(other)),
            ));
        }
        None => return Err(ApiError::invalid_param("model", "`model` is required")),
    };
    match endpoint {
        Endpoint::ChatCompletions => messages(body)?,
        Endpoint::Completions => required(body, "prompt")?,
        Endpoint::Embeddings => required(body, "input")?,
    }
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::invalid_param(
                "stream",
                format!("`stream` must be a boolean, not {}", kind_of(other)),
            ));
        }
    };
    if stream && endpoint == Endpoint::Embeddings {
        return Err(ApiError::invalid_param(
            "stream",
            "embeddings cannot be streamed",
        ));
    }
    let include_usage = body
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // Both are validated whatever the endpoint: a lenient server may honour
    // either, and an ill-typed cap must never reach one as "no cap".
    let max_tokens = match (
        token_limit(body, "max_completion_tokens")?,
        token_limit(body, "max_tokens")?,
    ) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let choices = count_field(body, "n")?.max(count_field(body, "best_of")?);
    let prompts = match endpoint {
        Endpoint::Completions => prompt_count(body.get("prompt"))?,
        Endpoint::ChatCompletions | Endpoint::Embeddings => 1,
    };
    Ok(Parsed {
        model,
        stream,
        include_usage,
        max_tokens,
        choices,
        prompts,
    })
}

/// `n` or `best_of`: absent or null is 1; otherwise an integer from 1 to
/// [`MAX_CHOICES`]. `"3"` or `2.0` is refused rather than read as 1, or a
/// provider that accepts it would generate more than was reserved.
fn count_field(body: &Map<String, Value>, field: &str) -> Result<u64, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(1),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_CHOICES).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid_param(
                field,
                format!(
                    "`{field}` must be an integer from 1 to {MAX_CHOICES}, got `{}`",
                    super::body::snippet(v)
                ),
            )),
        },
    }
}

/// Prompts in a `/v1/completions` `prompt`: a string or one list of token
/// ids is one prompt; a list of strings or of token-id lists is one prompt
/// per item, each completed (and billed) on its own.
fn prompt_count(prompt: Option<&Value>) -> Result<u64, ApiError> {
    let bad = |what: &str| {
        ApiError::invalid_param(
            "prompt",
            format!(
                "`prompt` must be a string, a list of strings, a list of token ids or a list of token-id lists; {what}"
            ),
        )
    };
    match prompt {
        None | Some(Value::Null) => Err(ApiError::invalid_param("prompt", "`prompt` is required")),
        Some(Value::String(_)) => Ok(1),
        Some(Value::Array(items)) if items.is_empty() => Err(bad("got an empty list")),
        Some(Value::Array(items)) => {
            if items.iter().all(|i| i.is_u64()) {
                return Ok(1);
            }
            let each_is_a_prompt = items.iter().all(|i| match i {
                Value::String(_) => true,
                Value::Array(ids) => ids.iter().all(Value::is_u64),
                _ => false,
            });
            if each_is_a_prompt {
                Ok(items.len() as u64)
            } else {
                Err(bad("got a list mixing other kinds of items"))
            }
        }
        Some(other) => Err(bad(&format!("got {}", kind_of(other)))),
    }
}

fn messages(body: &Map<String, Value>) -> Result<(), ApiError> {
    let Some(messages) = body.get("messages") else {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` is required",
        ));
    };
    let Value::Array(list) = messages else {
        return Err(ApiError::invalid_param(
            "messages",
            format!("`messages` must be an array, not {}", kind_of(messages)),
        ));
    };
    if list.is_empty() {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    for (i, m) in list.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(ApiError::invalid_param(
                "messages",
                format!("`messages[{i}]` must be an object"),
            ));
        };
        if !m.get("role").is_some_and(Value::is_string) {
            return Err(ApiError::invalid_param(
                "messages",
                format!("`messages[{i}].role` must be a string"),
            ));
        }
    }
    Ok(())
}

fn required(body: &Map<String, Value>, field: &str) -> Result<(), ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Err(ApiError::invalid_param(
            field,
            format!("`{field}` is required"),
        )),
        Some(_) => Ok(()),
    }
}

fn token_limit(body: &Map<String, Value>, field: &'static str) -> Result<Option<u64>, ApiError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n)),
            _ => Err(ApiError::invalid_param(
                field,
                format!(
                    "`{field}` must be a positive integer, got `{}`",
                    super::body::snippet(v)
                ),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn accepts_a_plain_chat_request() {
        let p = request(
            Endpoint::ChatCompletions,
            &obj(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})),
        )
        .unwrap();
        assert_eq!(p.model, "m");
        assert_eq!(p.max_tokens, Some(5));
        assert_eq!(p.multiplier(), 1);
        assert!(!p.stream);
    }

    #[test]
    fn rejects_what_the_gateway_relies_on() {
        let cases = [
            json!({"messages": [{"role": "user", "content": "x"}]}),
            json!({"model": 3, "messages": [{"role": "user", "content": "x"}]}),
            json!({"model": "m"}),
            json!({"model": "m", "messages": []}),
            json!({"model": "m", "messages": "hi"}),
            json!({"model": "m", "messages": [{"content": "x"}]}),
            json!({"model": "m", "messages": [{"role": "user"}], "stream": "yes"}),
            json!({"model": "m", "messages": [{"role": "user"}], "max_tokens": -1}),
            json!({"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}),
            json!({"model": "m", "messages": [{"role": "user"}], "max_tokens": "5"}),
            json!({"model": "m", "messages": [{"role": "user"}], "max_tokens": 5.5}),
            json!({"model": "m", "messages": [{"role": "user"}], "max_completion_tokens": 5.0}),
            json!({"model": "m", "messages": [{"role": "user"}], "n": "3"}),
            json!({"model": "m", "messages": [{"role": "user"}], "n": 2.0}),
            json!({"model": "m", "messages": [{"role": "user"}], "n": 0}),
            json!({"model": "m", "messages": [{"role": "user"}], "n": 129}),
            json!({"model": "m", "messages": [{"role": "user"}], "best_of": "4"}),
            json!({"model": "m", "messages": [{"role": "user"}], "best_of": [4]}),
        ];
        for c in cases {
            let err = request(Endpoint::ChatCompletions, &obj(c.clone())).unwrap_err();
            assert_eq!(err.code(), "invalid_request", "{c}");
        }
        assert!(request(Endpoint::Embeddings, &obj(json!({"model": "m"}))).is_err());
        assert!(request(Endpoint::Completions, &obj(json!({"model": "m"}))).is_err());
        for prompt in [
            json!([]),
            json!([["a"]]),
            json!([1, "a"]),
            json!({"a": 1}),
            json!(3),
        ] {
            let body = obj(json!({"model": "m", "prompt": prompt}));
            assert!(request(Endpoint::Completions, &body).is_err(), "{prompt}");
        }
    }

    #[test]
    fn every_multiplier_the_provider_applies_is_counted() {
        let p = |endpoint, v| request(endpoint, &obj(v)).unwrap();
        let chat = p(
            Endpoint::ChatCompletions,
            json!({"model": "m", "messages": [{"role": "user"}], "n": 3, "best_of": 5,
                   "max_tokens": 10, "max_completion_tokens": 20, "max_output_tokens": 1}),
        );
        assert_eq!((chat.max_tokens, chat.multiplier()), (Some(20), 5));
        let completions = p(
            Endpoint::Completions,
            json!({"model": "m", "prompt": ["a", "b", "c"], "n": 2, "max_tokens": 7}),
        );
        assert_eq!(
            (completions.max_tokens, completions.multiplier()),
            (Some(7), 6)
        );
        let ids = p(
            Endpoint::Completions,
            json!({"model": "m", "prompt": [1, 2, 3]}),
        );
        assert_eq!(ids.multiplier(), 1);
        let id_lists = p(
            Endpoint::Completions,
            json!({"model": "m", "prompt": [[1], [2]]}),
        );
        assert_eq!(id_lists.multiplier(), 2);
    }
}
