//! `/v1/embeddings` on Bedrock: Amazon Titan Text Embeddings
//! (`amazon.titan-embed-*`, one text per `InvokeModel` call, so a list of
//! inputs is one call each) and Cohere Embed (`cohere.embed-*`, a list in
//! one call), answered in OpenAI's embedding list format. Usage is Titan's
//! `inputTextTokenCount`, else the `x-amzn-bedrock-input-token-count`
//! header Bedrock sets on every `InvokeModel` answer; with neither the
//! gateway bills its own estimate.

use base64::Engine;
use serde_json::{Map, Value, json};

use super::super::Usage;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Titan,
    Cohere,
}

impl Family {
    /// The embedding family of a Bedrock model id (or profile/ARN).
    pub fn of(model: &str) -> Option<Family> {
        let name = model.rsplit('/').next().unwrap_or(model);
        let name = name.strip_prefix("us.").unwrap_or(name);
        if name.starts_with("amazon.titan-embed") {
            Some(Family::Titan)
        } else if name.starts_with("cohere.embed") {
            Some(Family::Cohere)
        } else {
            None
        }
    }
}

/// The texts of an OpenAI `input` (a string or a list of strings).
pub(crate) fn inputs(body: &Map<String, Value>) -> Result<Vec<String>, String> {
    match body.get("input") {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_owned).ok_or_else(|| {
                    "`input` must be a string or a list of strings for a Bedrock embedding model (token arrays are not supported)".to_owned()
                })
            })
            .collect(),
        _ => Err("`input` must be a string or a non-empty list of strings".to_owned()),
    }
}

/// The `InvokeModel` bodies for `texts`: one per text for Titan, one for
/// all of them for Cohere.
pub(crate) fn requests(family: Family, body: &Map<String, Value>, texts: &[String]) -> Vec<Value> {
    match family {
        Family::Titan => texts
            .iter()
            .map(|t| {
                let mut req = json!({ "inputText": t });
                if let Some(d) = body.get("dimensions").and_then(Value::as_u64) {
                    req["dimensions"] = json!(d);
                }
                req
            })
            .collect(),
        Family::Cohere => vec![json!({ "texts": texts, "input_type": "search_document" })],
    }
}

/// The vectors of one answer and the input tokens it reports (`None`
/// when it reports none).
pub(crate) fn vectors(family: Family, raw: &[u8]) -> Result<(Vec<Vec<f64>>, Option<u64>), String> {
    let v: Value = serde_json::from_slice(raw).map_err(|e| format!("the body is not JSON: {e}"))?;
    let vector = |v: &Value| -> Result<Vec<f64>, String> {
        v.as_array()
            .ok_or("an embedding is not a list of numbers")?
            .iter()
            .map(|x| {
                x.as_f64()
                    .ok_or_else(|| "an embedding is not a list of numbers".to_owned())
            })
            .collect()
    };
    match family {
        Family::Titan => {
            let embedding = vector(v.get("embedding").unwrap_or(&Value::Null))?;
            Ok((
                vec![embedding],
                v.get("inputTextTokenCount").and_then(Value::as_u64),
            ))
        }
        Family::Cohere => {
            let list = v
                .get("embeddings")
                .and_then(Value::as_array)
                .ok_or("the answer has no `embeddings` list")?;
            Ok((list.iter().map(vector).collect::<Result<_, _>>()?, None))
        }
    }
}

/// OpenAI's embedding list for `vectors`, as floats or, with
/// `encoding_format: base64`, as little-endian f32 bytes in base64.
pub(crate) fn openai_list(
    body: &Map<String, Value>,
    model: &str,
    vectors: &[Vec<f64>],
    usage: Option<Usage>,
) -> Value {
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| (*x as f32).to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": embedding })
        })
        .collect();
    let mut out = json!({ "object": "list", "data": data, "model": model });
    if let Some(u) = usage {
        out["usage"] = json!({ "prompt_tokens": u.prompt_tokens, "total_tokens": u.prompt_tokens });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_requests_and_answers() {
        assert_eq!(
            Family::of("amazon.titan-embed-text-v2:0"),
            Some(Family::Titan)
        );
        assert_eq!(Family::of("cohere.embed-english-v3"), Some(Family::Cohere));
        assert_eq!(Family::of("anthropic.claude-3-haiku-20240307-v1:0"), None);
        let body = json!({"input": ["a", "b"], "dimensions": 256})
            .as_object()
            .unwrap()
            .clone();
        let texts = inputs(&body).unwrap();
        let titan = requests(Family::Titan, &body, &texts);
        assert_eq!(
            titan,
            vec![
                json!({"inputText": "a", "dimensions": 256}),
                json!({"inputText": "b", "dimensions": 256})
            ]
        );
        let cohere = requests(Family::Cohere, &body, &texts);
        assert_eq!(cohere[0]["texts"], json!(["a", "b"]));
        let bad = json!({"input": [1, 2]}).as_object().unwrap().clone();
        assert!(inputs(&bad).is_err());
        let (v, n) = vectors(
            Family::Titan,
            br#"{"embedding":[0.5,-1],"inputTextTokenCount":3}"#,
        )
        .unwrap();
        assert_eq!((v, n), (vec![vec![0.5, -1.0]], Some(3)));
        assert!(vectors(Family::Titan, br#"{"embedding":"x"}"#).is_err());
        let list = openai_list(
            &json!({"encoding_format": "base64"})
                .as_object()
                .unwrap()
                .clone(),
            "m",
            &[vec![1.0]],
            None,
        );
        assert_eq!(list["data"][0]["embedding"], "AACAPw==");
    }
}
