//! Translation between the canonical OpenAI chat format and Anthropic's
//! Messages API, in both directions:
//! - [`to_anthropic`]: the `anthropic` provider (an OpenAI request goes to
//!   Anthropic, its answer comes back as OpenAI);
//! - [`from_anthropic`]: the `/v1/messages` ingress (an Anthropic request is
//!   made canonical for any provider, the canonical answer goes back as
//!   Anthropic).
//!
//! Each mapping between the two vocabularies (stop reasons, images, tools,
//! tool choice, usage) is written once, here, as a pair of functions next to
//! each other, and both directions use it.

pub mod completions;
pub mod from_anthropic;
pub mod responses;
pub mod to_anthropic;

use serde_json::{Map, Value, json};

pub use from_anthropic::{
    MessagesStreamTranslator, messages_to_openai, openai_to_messages_response,
};

use super::Usage;
use crate::types::clip;

/// Anthropic `stop_reason` ↔ OpenAI `finish_reason`. The first row with a
/// given value wins when mapping that way.
const STOP_REASONS: &[(&str, &str)] = &[
    ("end_turn", "stop"),
    ("max_tokens", "length"),
    ("tool_use", "tool_calls"),
    ("stop_sequence", "stop"),
    ("pause_turn", "stop"),
    ("refusal", "content_filter"),
    ("tool_use", "function_call"),
];

pub(crate) fn finish_reason_from_stop(stop_reason: &str) -> &'static str {
    STOP_REASONS
        .iter()
        .find(|(a, _)| *a == stop_reason)
        .map_or("stop", |(_, o)| o)
}

pub(crate) fn stop_reason_from_finish(finish_reason: &str) -> &'static str {
    STOP_REASONS
        .iter()
        .find(|(_, o)| *o == finish_reason)
        .map_or("end_turn", |(a, _)| a)
}

/// OpenAI `image_url.url` → Anthropic image `source`: a `data:` URL becomes
/// a base64 source, anything else a URL source.
pub(crate) fn image_source_from_url(url: &str) -> Result<Value, String> {
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err("an image `data:` URL has no `,` before its data".to_owned());
        };
        let Some(media_type) = meta.strip_suffix(";base64") else {
            return Err(
                "an image `data:` URL must be base64 (`data:image/png;base64,...`)".to_owned(),
            );
        };
        return Ok(json!({ "type": "base64", "media_type": media_type, "data": data }));
    }
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(json!({ "type": "url", "url": url }));
    }
    Err(format!(
        "an image URL must be `http(s)://` or a `data:` URL, not `{}`",
        truncate(url, 40)
    ))
}

/// Anthropic image `source` → OpenAI `image_url.url`.
pub(crate) fn image_url_from_source(source: &Value) -> Result<String, String> {
    match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png");
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Ok(format!("data:{media};base64,{data}"))
        }
        Some("url") => match source.get("url").and_then(Value::as_str) {
            Some(url) => Ok(url.to_owned()),
            None => Err("an image `source` of type `url` has no `url`".to_owned()),
        },
        other => Err(format!(
            "image `source.type` `{}` is not supported; use `base64` or `url`",
            clip(other.unwrap_or("null"))
        )),
    }
}

/// OpenAI tool (`{"type":"function","function":{…}}`) → Anthropic tool.
pub(crate) fn tool_to_anthropic(tool: &Value) -> Result<Value, String> {
    if tool.get("type").and_then(Value::as_str) != Some("function") {
        return Err("only tools of `type` `function` can be sent to an Anthropic model".to_owned());
    }
    let f = tool.get("function").ok_or("a tool has no `function`")?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a tool `function` has no `name`")?;
    let mut out = Map::new();
    out.insert("name".into(), json!(name));
    if let Some(d) = f.get("description") {
        out.insert("description".into(), d.clone());
    }
    let schema = f
        .get("parameters")
        .cloned()
        .unwrap_or_else(|| json!({ "type": "object", "properties": {} }));
    out.insert("input_schema".into(), schema);
    Ok(Value::Object(out))
}

/// Anthropic tool → OpenAI function tool.
pub(crate) fn tool_to_openai(tool: &Value) -> Result<Value, String> {
    let name = tool
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a tool has no `name`")?;
    if let Some(kind) = tool
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| *t != "custom")
    {
        return Err(format!(
            "tool `{}`: Anthropic server tools (`type` `{}`) cannot be routed to other providers",
            clip(name),
            clip(kind)
        ));
    }
    let mut f = Map::new();
    f.insert("name".into(), json!(name));
    if let Some(d) = tool.get("description") {
        f.insert("description".into(), d.clone());
    }
    f.insert(
        "parameters".into(),
        tool.get("input_schema")
            .cloned()
            .unwrap_or_else(|| json!({ "type": "object" })),
    );
    Ok(json!({ "type": "function", "function": f }))
}

/// OpenAI `tool_choice` (+ `parallel_tool_calls`) → Anthropic `tool_choice`.
pub(crate) fn tool_choice_to_anthropic(
    choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<Value>, String> {
    let mut out = match choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({ "type": "auto" }),
            "required" => json!({ "type": "any" }),
            "none" => json!({ "type": "none" }),
            other => return Err(format!("`tool_choice` `{}` is not one of `auto`, `required`, `none`", clip(other))),
        }),
        Some(obj) => match obj.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(json!({ "type": "tool", "name": name })),
            None => return Err("`tool_choice` must be a string or `{\"type\":\"function\",\"function\":{\"name\":…}}`".to_owned()),
        },
    };
    if parallel == Some(false) {
        let choice = out.get_or_insert_with(|| json!({ "type": "auto" }));
        if choice.get("type").and_then(Value::as_str) != Some("none") {
            choice["disable_parallel_tool_use"] = json!(true);
        }
    }
    Ok(out)
}

/// Anthropic `tool_choice` → OpenAI `tool_choice` and `parallel_tool_calls`.
pub(crate) fn tool_choice_to_openai(choice: &Value) -> Result<(Value, Option<bool>), String> {
    let openai = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            let name = choice
                .get("name")
                .and_then(Value::as_str)
                .ok_or("`tool_choice` of type `tool` has no `name`")?;
            json!({ "type": "function", "function": { "name": name } })
        }
        _ => {
            return Err(
                "`tool_choice.type` must be one of `auto`, `any`, `tool`, `none`".to_owned(),
            );
        }
    };
    let parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|d| !d);
    Ok((openai, parallel))
}

/// Anthropic `usage` → token counts. Anthropic's `input_tokens` leaves out
/// the prompt tokens read from or written to its cache; OpenAI's
/// `prompt_tokens` (and [`Usage::prompt_tokens`]) includes them.
pub(crate) fn usage_from_anthropic(usage: &Value) -> Usage {
    let n = |p: &str| usage.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let cache_read = n("/cache_read_input_tokens");
    let usage = Usage {
        completion_tokens: n("/output_tokens"),
        cached_tokens: cache_read,
        ..Usage::default()
    }
    .with_cache_writes(
        n("/cache_creation_input_tokens"),
        n("/cache_creation/ephemeral_5m_input_tokens"),
        n("/cache_creation/ephemeral_1h_input_tokens"),
    );
    Usage {
        prompt_tokens: n("/input_tokens")
            .saturating_add(cache_read)
            .saturating_add(usage.cache_write_tokens),
        ..usage
    }
}

/// Token counts → OpenAI `usage` object. Cache writes, which OpenAI does
/// not report, go in `prompt_tokens_details` as `cache_write_tokens`
/// (OpenRouter's name) with Anthropic's per-lifetime split beside it, so a
/// translated answer keeps everything its bill depends on.
pub(crate) fn usage_to_openai(u: Usage) -> Value {
    let mut details = json!({ "cached_tokens": u.cached_tokens });
    if u.cache_write_tokens > 0 {
        details["cache_write_tokens"] = json!(u.cache_write_tokens);
        details["cache_creation"] = cache_creation(u);
    }
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
        "prompt_tokens_details": details,
    })
}

fn cache_creation(u: Usage) -> Value {
    json!({
        "ephemeral_5m_input_tokens": u.cache_write_tokens.saturating_sub(u.cache_write_1h_tokens),
        "ephemeral_1h_input_tokens": u.cache_write_1h_tokens,
    })
}

/// Token counts → Anthropic `usage` object (the inverse of [`usage_from_anthropic`]).
pub(crate) fn usage_to_anthropic(u: Usage) -> Value {
    json!({
        "input_tokens": u
            .prompt_tokens
            .saturating_sub(u.cached_tokens)
            .saturating_sub(u.cache_write_tokens),
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_creation": cache_creation(u),
    })
}

/// OpenAI `usage` object → token counts (the inverse of
/// [`usage_to_openai`]); the same reading as [`super::sse::usage_from_body`].
pub(crate) fn usage_from_openai(usage: &Value) -> Usage {
    let n = |p: &str| usage.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        prompt_tokens: n("/prompt_tokens"),
        completion_tokens: n("/completion_tokens"),
        cached_tokens: n("/prompt_tokens_details/cached_tokens"),
        ..Usage::default()
    }
    .with_cache_writes(
        n("/prompt_tokens_details/cache_write_tokens"),
        n("/prompt_tokens_details/cache_creation/ephemeral_5m_input_tokens"),
        n("/prompt_tokens_details/cache_creation/ephemeral_1h_input_tokens"),
    )
}

/// An OpenAI message `content` (string, parts, or null) as plain text; used
/// where the other side only takes text (system prompts, tool results).
pub(crate) fn text_of(content: &Value) -> Result<String, String> {
    match content {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => {
                        if !text.is_empty() {
                            text.push('\n');
                        }
                        text.push_str(t);
                    }
                    (kind, _) => {
                        return Err(format!(
                            "only text can go here, not a `{}` part",
                            clip(kind.unwrap_or("untyped"))
                        ));
                    }
                }
            }
            Ok(text)
        }
        _ => Err("`content` must be a string or an array of parts".to_owned()),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_map_both_ways() {
        for (a, o) in [
            ("end_turn", "stop"),
            ("max_tokens", "length"),
            ("tool_use", "tool_calls"),
        ] {
            assert_eq!(finish_reason_from_stop(a), o);
            assert_eq!(stop_reason_from_finish(o), a);
        }
        assert_eq!(finish_reason_from_stop("stop_sequence"), "stop");
        assert_eq!(stop_reason_from_finish("content_filter"), "refusal");
    }

    #[test]
    fn images_map_both_ways() {
        let data = "data:image/png;base64,iVBORw0KGgo=";
        let source = image_source_from_url(data).unwrap();
        assert_eq!(
            source,
            json!({"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="})
        );
        assert_eq!(image_url_from_source(&source).unwrap(), data);
        let url = "https://example.com/cat.jpg";
        let source = image_source_from_url(url).unwrap();
        assert_eq!(source, json!({"type":"url","url":url}));
        assert_eq!(image_url_from_source(&source).unwrap(), url);
        assert!(
            image_source_from_url("data:image/png,raw")
                .unwrap_err()
                .contains("base64")
        );
        assert!(image_source_from_url("ftp://x").is_err());
    }

    #[test]
    fn tools_and_choice_round_trip() {
        let openai = json!({"type":"function","function":{"name":"get_weather","description":"Weather",
            "parameters":{"type":"object","properties":{"city":{"type":"string"}}}}});
        let anthropic = tool_to_anthropic(&openai).unwrap();
        assert_eq!(
            anthropic["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(tool_to_openai(&anthropic).unwrap(), openai);

        let choice = tool_choice_to_anthropic(Some(&json!("required")), Some(false))
            .unwrap()
            .unwrap();
        assert_eq!(
            choice,
            json!({"type":"any","disable_parallel_tool_use":true})
        );
        assert_eq!(
            tool_choice_to_openai(&choice).unwrap(),
            (json!("required"), Some(false))
        );
        let named = json!({"type":"function","function":{"name":"f"}});
        let choice = tool_choice_to_anthropic(Some(&named), None)
            .unwrap()
            .unwrap();
        assert_eq!(tool_choice_to_openai(&choice).unwrap(), (named, None));
    }

    #[test]
    fn usage_maps_both_ways() {
        let a = json!({"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":90});
        let u = usage_from_anthropic(&a);
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 100,
                completion_tokens: 5,
                cached_tokens: 90,
                ..Usage::default()
            }
        );
        assert_eq!(usage_from_openai(&usage_to_openai(u)), u);
        assert_eq!(usage_from_anthropic(&usage_to_anthropic(u)), u);

        // Cache writes: counted in `prompt_tokens` once, with their split.
        let a = json!({"input_tokens":10,"output_tokens":5,"cache_read_input_tokens":90,
            "cache_creation_input_tokens":300,
            "cache_creation":{"ephemeral_5m_input_tokens":200,"ephemeral_1h_input_tokens":100}});
        let u = usage_from_anthropic(&a);
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 400,
                completion_tokens: 5,
                cached_tokens: 90,
                cache_write_tokens: 300,
                cache_write_1h_tokens: 100,
            }
        );
        let openai = usage_to_openai(u);
        assert_eq!(openai["prompt_tokens_details"]["cache_write_tokens"], 300);
        assert_eq!(usage_from_openai(&openai), u);
        assert_eq!(usage_to_anthropic(u)["input_tokens"], 10);
        assert_eq!(usage_from_anthropic(&usage_to_anthropic(u)), u);
        // A total without its split is all 5-minute writes; a split larger
        // than the total wins.
        let total_only =
            usage_from_anthropic(&json!({"input_tokens":1,"cache_creation_input_tokens":7}));
        assert_eq!(
            (
                total_only.cache_write_tokens,
                total_only.cache_write_1h_tokens
            ),
            (7, 0)
        );
        let split = usage_from_anthropic(&json!({"cache_creation_input_tokens":1,
            "cache_creation":{"ephemeral_1h_input_tokens":5}}));
        assert_eq!(
            (
                split.prompt_tokens,
                split.cache_write_tokens,
                split.cache_write_1h_tokens
            ),
            (5, 5, 5)
        );
    }

    proptest::proptest! {
        /// Anthropic → canonical → Anthropic and canonical → OpenAI JSON →
        /// canonical keep every count: nothing billed twice or dropped.
        #[test]
        fn usage_round_trips(input in 0u64..1 << 40, output in 0u64..1 << 40,
                             read in 0u64..1 << 40, w5 in 0u64..1 << 40, w1 in 0u64..1 << 40) {
            let a = json!({"input_tokens":input,"output_tokens":output,"cache_read_input_tokens":read,
                "cache_creation_input_tokens":w5 + w1,
                "cache_creation":{"ephemeral_5m_input_tokens":w5,"ephemeral_1h_input_tokens":w1}});
            let u = usage_from_anthropic(&a);
            proptest::prop_assert_eq!(u.prompt_tokens, input + read + w5 + w1);
            proptest::prop_assert_eq!(usage_from_anthropic(&usage_to_anthropic(u)), u);
            proptest::prop_assert_eq!(usage_from_openai(&usage_to_openai(u)), u);
            let wire = serde_json::to_vec(&json!({"usage": usage_to_openai(u)})).unwrap();
            proptest::prop_assert_eq!(crate::providers::sse::usage_from_body(&wire).unwrap(), Some(u));
        }
    }

    /// JSON biased towards the keys and values the translators look at, so
    /// the fuzzing reaches past the first type check.
    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let key = prop_oneof![
            Just("type"),
            Just("role"),
            Just("content"),
            Just("text"),
            Just("messages"),
            Just("model"),
            Just("max_tokens"),
            Just("tool_calls"),
            Just("function"),
            Just("arguments"),
            Just("name"),
            Just("source"),
            Just("tools"),
            Just("tool_choice"),
            Just("delta"),
            Just("choices"),
            Just("usage"),
            Just("index"),
            Just("image_url"),
            Just("url"),
            Just("tool_use_id"),
            Just("system"),
            Just("stop"),
            Just("input"),
            Just("id"),
            Just("finish_reason"),
            Just("partial_json"),
            Just("content_block"),
        ]
        .prop_map(str::to_owned);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (0u64..5).prop_map(Value::from),
            prop_oneof![
                Just("user"),
                Just("assistant"),
                Just("tool"),
                Just("system"),
                Just("text"),
                Just("image"),
                Just("image_url"),
                Just("tool_use"),
                Just("tool_result"),
                Just("function"),
                Just("base64"),
                Just("data:image/png;base64,AA=="),
                Just("https://x"),
                Just("{\"a\":1}"),
                Just("auto"),
                Just("text_delta"),
                Just("input_json_delta"),
                Just("message_start"),
                Just("content_block_start"),
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(key.clone(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn translators_never_panic_on_any_json(v in json_value(), w in json_value()) {
            let _ = from_anthropic::messages_to_openai(&v);
            if let Some(obj) = v.as_object() {
                let _ = to_anthropic::chat_request(obj);
            }
            let bytes = v.to_string();
            let _ = to_anthropic::chat_response(bytes.as_bytes(), 0);
            let _ = from_anthropic::openai_to_messages_response(bytes.as_bytes(), "m");
            let mut up = to_anthropic::ChunkTranslator::new("m", 0, true);
            let _ = up.on_event(None, bytes.as_bytes());
            let _ = up.on_event(Some("message_delta"), w.to_string().as_bytes());
            let mut down = MessagesStreamTranslator::new("m");
            let _ = down.chunk(bytes.as_bytes());
            let _ = down.chunk(w.to_string().as_bytes());
            let _ = down.finish();
        }
    }
}
