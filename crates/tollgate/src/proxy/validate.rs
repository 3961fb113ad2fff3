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
    /// `max_completion_tokens` if set, else `max_tokens`.
    pub max_tokens: Option<(&'static str, u64)>,
}

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
    let max_tokens = match token_limit(body, "max_completion_tokens")? {
        Some(n) => Some(("max_completion_tokens", n)),
        None => token_limit(body, "max_tokens")?.map(|n| ("max_tokens", n)),
    };
    Ok(Parsed {
        model,
        stream,
        include_usage,
        max_tokens,
    })
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
                    crate::types::clip(&v.to_string())
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
        assert_eq!(p.max_tokens, Some(("max_tokens", 5)));
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
        ];
        for c in cases {
            let err = request(Endpoint::ChatCompletions, &obj(c.clone())).unwrap_err();
            assert_eq!(err.code(), "invalid_request", "{c}");
        }
        assert!(request(Endpoint::Embeddings, &obj(json!({"model": "m"}))).is_err());
        assert!(request(Endpoint::Completions, &obj(json!({"model": "m"}))).is_err());
    }
}
