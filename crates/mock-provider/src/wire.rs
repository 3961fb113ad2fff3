//! The OpenAI and Anthropic wire formats: reading the few request fields the
//! mock acts on, and writing response bodies and SSE events byte by byte
//! (no JSON tree per request: the benchmark measures the mock too).

use std::fmt;

use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::state::CacheUsage;

/// Dimension of the mock's embedding vectors.
pub const EMBEDDING_DIM: usize = 8;

/// The request fields the mock acts on; every other field is accepted and ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawRequest {
    model: Option<String>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    n: Option<u64>,
    best_of: Option<u64>,
    messages: Option<Text>,
    system: Option<Text>,
    prompt: Option<Text>,
    input: Option<Text>,
    encoding_format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StreamOptions {
    include_usage: Option<bool>,
}

#[derive(Debug)]
pub(crate) struct ParsedRequest {
    pub model: Option<String>,
    pub stream: bool,
    pub include_usage: bool,
    /// The smaller of `max_tokens` and `max_completion_tokens` when set.
    pub max_tokens: Option<u64>,
    /// Completions generated: the larger of `n` and `best_of`, at least 1.
    pub choices: u64,
    /// Characters of text in `messages`, `system`, `prompt` and `input`.
    pub prompt_chars: u64,
    /// Number of embedding inputs.
    pub inputs: u64,
    pub base64: bool,
}

impl ParsedRequest {
    /// The deterministic prompt token count: a quarter of the text's
    /// characters, at least one.
    pub fn prompt_tokens(&self) -> u64 {
        (self.prompt_chars / 4).max(1)
    }
}

pub(crate) fn parse_request(body: &[u8]) -> Result<ParsedRequest, String> {
    let raw: RawRequest = serde_json::from_slice(body)
        .map_err(|e| format!("the request body is not valid JSON: {e}"))?;
    let max_tokens = match (raw.max_tokens, raw.max_completion_tokens) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let text = |t: &Option<Text>| t.as_ref().map_or(0, |t| t.chars);
    Ok(ParsedRequest {
        model: raw.model,
        stream: raw.stream.unwrap_or(false),
        include_usage: raw
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        max_tokens,
        choices: raw.n.unwrap_or(1).max(raw.best_of.unwrap_or(1)).max(1),
        prompt_chars: text(&raw.messages)
            + text(&raw.system)
            + text(&raw.prompt)
            + text(&raw.input),
        inputs: raw.input.as_ref().map_or(1, |t| t.items.max(1)),
        base64: raw.encoding_format.as_deref() == Some("base64"),
    })
}

/// The amount of text in a JSON value, counting strings and, inside objects,
/// only the `text` and `content` fields (so roles, ids and image data do not
/// count). A number counts as one token (4 characters): token-array inputs.
#[derive(Debug, Default)]
struct Text {
    chars: u64,
    /// Top-level items: 1 for a string, the element count for an array of
    /// strings or token arrays.
    items: u64,
    number: bool,
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Text, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
        Ok(Text {
            chars: s.chars().count() as u64,
            items: 1,
            number: false,
        })
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text, E> {
        Ok(Text {
            chars: 4,
            items: 1,
            number: true,
        })
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text, E> {
        Ok(Text {
            chars: 4,
            items: 1,
            number: true,
        })
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text, E> {
        Ok(Text {
            chars: 4,
            items: 1,
            number: true,
        })
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text, E> {
        Ok(Text::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
        Ok(Text::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<Text, E> {
        Ok(Text::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Text, D::Error> {
        Text::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
        let (mut chars, mut items, mut numbers) = (0, 0, 0);
        while let Some(element) = seq.next_element::<Text>()? {
            chars += element.chars;
            if element.number {
                numbers += 1;
            } else {
                items += 1;
            }
        }
        // A flat array of numbers is one tokenised input, not many.
        if items == 0 && numbers > 0 {
            items = 1;
        }
        Ok(Text {
            chars,
            items,
            number: false,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
        let mut chars = 0;
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Counted => chars += map.next_value::<Text>()?.chars,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Text {
            chars,
            items: 1,
            number: false,
        })
    }
}

enum Key {
    Counted,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(if s == "text" || s == "content" {
                    Key::Counted
                } else {
                    Key::Other
                })
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

// ---- writing ---------------------------------------------------------------

pub(crate) fn push_u64(buf: &mut BytesMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[i..]);
}

/// Writes `s` as a JSON string, quotes included.
pub(crate) fn push_json_str(buf: &mut BytesMut, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.put_u8(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        buf.put_slice(&bytes[start..i]);
        match escape {
            Some(e) => buf.put_slice(e),
            None => buf.put_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]),
        }
        start = i + 1;
    }
    buf.put_slice(&bytes[start..]);
    buf.put_u8(b'"');
}

pub(crate) fn openai_error_body(message: &str, error_type: &str, code: Option<&str>) -> Bytes {
    let mut buf = BytesMut::with_capacity(112 + message.len());
    buf.put_slice(b"{\"error\":{\"message\":");
    push_json_str(&mut buf, message);
    buf.put_slice(b",\"type\":");
    push_json_str(&mut buf, error_type);
    buf.put_slice(b",\"param\":null,\"code\":");
    match code {
        Some(code) => push_json_str(&mut buf, code),
        None => buf.put_slice(b"null"),
    }
    buf.put_slice(b"}}");
    buf.freeze()
}

pub(crate) fn anthropic_error_body(message: &str, error_type: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(96 + message.len());
    buf.put_slice(b"{\"type\":\"error\",\"error\":{\"type\":");
    push_json_str(&mut buf, error_type);
    buf.put_slice(b",\"message\":");
    push_json_str(&mut buf, message);
    buf.put_slice(b"}}");
    buf.freeze()
}

/// What one successful answer contains, whatever its format.
pub(crate) struct Answer<'a> {
    pub id: u64,
    pub created: u64,
    pub model: &'a str,
    /// `"word "` repeated once per generated token.
    pub content: &'a [u8],
    pub tokens: u64,
    /// The completion was cut by `max_tokens`.
    pub truncated: bool,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt-cache numbers to report, if set.
    pub cache: Option<CacheUsage>,
}

fn push_usage_openai(buf: &mut BytesMut, a: &Answer) {
    buf.put_slice(b"{\"prompt_tokens\":");
    push_u64(buf, a.prompt_tokens);
    buf.put_slice(b",\"completion_tokens\":");
    push_u64(buf, a.completion_tokens);
    buf.put_slice(b",\"total_tokens\":");
    push_u64(buf, a.prompt_tokens + a.completion_tokens);
    if let Some(cache) = a.cache {
        buf.put_slice(b",\"prompt_tokens_details\":{\"cached_tokens\":");
        push_u64(buf, cache.read);
        buf.put_u8(b'}');
    }
    buf.put_u8(b'}');
}

/// Anthropic's `input_tokens`: the prompt but its cache reads and writes.
fn anthropic_input(a: &Answer) -> u64 {
    a.cache.map_or(a.prompt_tokens, |c| {
        a.prompt_tokens
            .saturating_sub(c.read)
            .saturating_sub(c.write_5m)
            .saturating_sub(c.write_1h)
    })
}

/// Anthropic's cache fields, after `input_tokens`: `,"cache_read_input_tokens":..`.
fn push_cache_anthropic(buf: &mut BytesMut, a: &Answer) {
    let Some(cache) = a.cache else {
        return;
    };
    buf.put_slice(b",\"cache_read_input_tokens\":");
    push_u64(buf, cache.read);
    buf.put_slice(b",\"cache_creation_input_tokens\":");
    push_u64(buf, cache.write_5m.saturating_add(cache.write_1h));
    buf.put_slice(b",\"cache_creation\":{\"ephemeral_5m_input_tokens\":");
    push_u64(buf, cache.write_5m);
    buf.put_slice(b",\"ephemeral_1h_input_tokens\":");
    push_u64(buf, cache.write_1h);
    buf.put_u8(b'}');
}

fn finish_reason(a: &Answer) -> &'static [u8] {
    if a.truncated {
        b"\"length\""
    } else {
        b"\"stop\""
    }
}

/// Opening of every chat/completion object: `{"id":..,"object":..,"created":..,"model":..,`
fn push_head(buf: &mut BytesMut, id_prefix: &[u8], object: &[u8], a: &Answer) {
    buf.put_slice(b"{\"id\":\"");
    buf.put_slice(id_prefix);
    push_u64(buf, a.id);
    buf.put_slice(b"\",\"object\":\"");
    buf.put_slice(object);
    buf.put_slice(b"\",\"created\":");
    push_u64(buf, a.created);
    buf.put_slice(b",\"model\":");
    push_json_str(buf, a.model);
    buf.put_u8(b',');
}

pub(crate) fn chat_completion(a: &Answer) -> Bytes {
    let mut buf = BytesMut::with_capacity(320 + a.model.len() + a.content.len());
    push_head(&mut buf, b"chatcmpl-mock-", b"chat.completion", a);
    buf.put_slice(b"\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"");
    buf.put_slice(a.content);
    buf.put_slice(b"\",\"refusal\":null},\"logprobs\":null,\"finish_reason\":");
    buf.put_slice(finish_reason(a));
    buf.put_slice(b"}],\"usage\":");
    push_usage_openai(&mut buf, a);
    buf.put_slice(b",\"system_fingerprint\":\"fp_mock\"}");
    buf.freeze()
}

pub(crate) fn text_completion(a: &Answer) -> Bytes {
    let mut buf = BytesMut::with_capacity(320 + a.model.len() + a.content.len());
    push_head(&mut buf, b"cmpl-mock-", b"text_completion", a);
    buf.put_slice(b"\"choices\":[{\"text\":\"");
    buf.put_slice(a.content);
    buf.put_slice(b"\",\"index\":0,\"logprobs\":null,\"finish_reason\":");
    buf.put_slice(finish_reason(a));
    buf.put_slice(b"}],\"usage\":");
    push_usage_openai(&mut buf, a);
    buf.put_u8(b'}');
    buf.freeze()
}

fn sse_data(head: &[u8], middle: &[u8], tail: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(8 + head.len() + middle.len() + tail.len());
    buf.put_slice(b"data: ");
    buf.put_slice(head);
    buf.put_slice(middle);
    buf.put_slice(tail);
    buf.put_slice(b"\n\n");
    buf.freeze()
}

pub(crate) const SSE_DONE: &[u8] = b"data: [DONE]\n\n";

/// The events of an OpenAI stream, in order: for chat a role chunk, one chunk
/// per token, the finish chunk, the usage chunk when asked for, `[DONE]`.
/// `cut_after` keeps only the opening events and that many token chunks.
pub(crate) fn openai_stream(
    a: &Answer,
    chat: bool,
    include_usage: bool,
    cut_after: Option<u64>,
) -> Vec<Bytes> {
    let mut head = BytesMut::with_capacity(128 + a.model.len());
    if chat {
        push_head(&mut head, b"chatcmpl-mock-", b"chat.completion.chunk", a);
    } else {
        push_head(&mut head, b"cmpl-mock-", b"text_completion", a);
    }
    // Like OpenAI: with `include_usage`, every chunk carries `"usage":null`.
    let tail: &[u8] = if include_usage {
        b",\"usage\":null}"
    } else {
        b"}"
    };
    let tokens = cut_after.map_or(a.tokens, |c| c.min(a.tokens));
    let mut events = Vec::with_capacity(tokens as usize + 4);
    if chat {
        events.push(sse_data(
            &head,
            b"\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]",
            tail,
        ));
    }
    let content_chunk = if chat {
        sse_data(
            &head,
            b"\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"},\"logprobs\":null,\"finish_reason\":null}]",
            tail,
        )
    } else {
        sse_data(&head, b"\"choices\":[{\"text\":\"word \",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]", tail)
    };
    events.extend(std::iter::repeat_n(content_chunk, tokens as usize));
    if cut_after.is_some() {
        return events;
    }
    let mut finish = BytesMut::with_capacity(96);
    if chat {
        finish.put_slice(
            b"\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":",
        );
    } else {
        finish.put_slice(
            b"\"choices\":[{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":",
        );
    }
    finish.put_slice(finish_reason(a));
    finish.put_slice(b"}]");
    events.push(sse_data(&head, &finish, tail));
    if include_usage {
        let mut usage = BytesMut::with_capacity(96);
        usage.put_slice(b"\"choices\":[],\"usage\":");
        push_usage_openai(&mut usage, a);
        events.push(sse_data(&head, &usage, b"}"));
    }
    events.push(Bytes::from_static(SSE_DONE));
    events
}

pub(crate) fn embeddings(
    model: &str,
    inputs: u64,
    prompt_tokens: u64,
    seed: u64,
    base64: bool,
) -> Bytes {
    let mut buf =
        BytesMut::with_capacity(128 + model.len() + inputs as usize * (48 + EMBEDDING_DIM * 12));
    buf.put_slice(b"{\"object\":\"list\",\"data\":[");
    for index in 0..inputs {
        if index > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(b"{\"object\":\"embedding\",\"index\":");
        push_u64(&mut buf, index);
        buf.put_slice(b",\"embedding\":");
        let vector: [f32; EMBEDDING_DIM] =
            std::array::from_fn(|j| ((seed + index * 31 + j as u64 * 7) % 100) as f32 / 100.0);
        if base64 {
            let mut raw = [0u8; EMBEDDING_DIM * 4];
            for (chunk, v) in raw.chunks_exact_mut(4).zip(vector) {
                chunk.copy_from_slice(&v.to_le_bytes());
            }
            buf.put_u8(b'"');
            buf.put_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(raw)
                    .as_bytes(),
            );
            buf.put_u8(b'"');
        } else {
            buf.put_u8(b'[');
            for (j, v) in vector.iter().enumerate() {
                if j > 0 {
                    buf.put_u8(b',');
                }
                // Values are k/100, so two decimals are exact enough and never print exponents.
                buf.put_slice(format!("{v:.2}").as_bytes());
            }
            buf.put_u8(b']');
        }
        buf.put_u8(b'}');
    }
    buf.put_slice(b"],\"model\":");
    push_json_str(&mut buf, model);
    buf.put_slice(b",\"usage\":{\"prompt_tokens\":");
    push_u64(&mut buf, prompt_tokens);
    buf.put_slice(b",\"total_tokens\":");
    push_u64(&mut buf, prompt_tokens);
    buf.put_slice(b"}}");
    buf.freeze()
}

pub(crate) fn models_list(models: &[String], created: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(32 + models.len() * 96);
    buf.put_slice(b"{\"object\":\"list\",\"data\":[");
    for (i, model) in models.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        buf.put_slice(b"{\"id\":");
        push_json_str(&mut buf, model);
        buf.put_slice(b",\"object\":\"model\",\"created\":");
        push_u64(&mut buf, created);
        buf.put_slice(b",\"owned_by\":\"mock\"}");
    }
    buf.put_slice(b"]}");
    buf.freeze()
}

fn anthropic_stop_reason(a: &Answer) -> &'static [u8] {
    if a.truncated {
        b"\"max_tokens\""
    } else {
        b"\"end_turn\""
    }
}

pub(crate) fn anthropic_message(a: &Answer) -> Bytes {
    let mut buf = BytesMut::with_capacity(256 + a.model.len() + a.content.len());
    buf.put_slice(b"{\"id\":\"msg_mock_");
    push_u64(&mut buf, a.id);
    buf.put_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    push_json_str(&mut buf, a.model);
    buf.put_slice(b",\"content\":[{\"type\":\"text\",\"text\":\"");
    buf.put_slice(a.content);
    buf.put_slice(b"\"}],\"stop_reason\":");
    buf.put_slice(anthropic_stop_reason(a));
    buf.put_slice(b",\"stop_sequence\":null,\"usage\":{\"input_tokens\":");
    push_u64(&mut buf, anthropic_input(a));
    push_cache_anthropic(&mut buf, a);
    buf.put_slice(b",\"output_tokens\":");
    push_u64(&mut buf, a.completion_tokens);
    buf.put_slice(b"}}");
    buf.freeze()
}

fn sse_event(name: &[u8], data: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(16 + name.len() + data.len());
    buf.put_slice(b"event: ");
    buf.put_slice(name);
    buf.put_slice(b"\ndata: ");
    buf.put_slice(data);
    buf.put_slice(b"\n\n");
    buf.freeze()
}

/// Anthropic's stream: `message_start`, `content_block_start`, `ping`, one
/// `content_block_delta` per token, `content_block_stop`, `message_delta`,
/// `message_stop`. `cut_after` keeps the opening events and that many deltas.
pub(crate) fn anthropic_stream(a: &Answer, cut_after: Option<u64>) -> Vec<Bytes> {
    let tokens = cut_after.map_or(a.tokens, |c| c.min(a.tokens));
    let mut events = Vec::with_capacity(tokens as usize + 7);
    let mut start = BytesMut::with_capacity(256 + a.model.len());
    start.put_slice(b"{\"type\":\"message_start\",\"message\":{\"id\":\"msg_mock_");
    push_u64(&mut start, a.id);
    start.put_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"model\":");
    push_json_str(&mut start, a.model);
    start.put_slice(
        b",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":",
    );
    push_u64(&mut start, anthropic_input(a));
    push_cache_anthropic(&mut start, a);
    start.put_slice(b",\"output_tokens\":1}}}");
    events.push(sse_event(b"message_start", &start));
    events.push(sse_event(
        b"content_block_start",
        b"{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}",
    ));
    events.push(sse_event(b"ping", b"{\"type\":\"ping\"}"));
    let delta = sse_event(
        b"content_block_delta",
        b"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"word \"}}",
    );
    events.extend(std::iter::repeat_n(delta, tokens as usize));
    if cut_after.is_some() {
        return events;
    }
    events.push(sse_event(
        b"content_block_stop",
        b"{\"type\":\"content_block_stop\",\"index\":0}",
    ));
    let mut message_delta = BytesMut::with_capacity(128);
    message_delta.put_slice(b"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":");
    message_delta.put_slice(anthropic_stop_reason(a));
    message_delta.put_slice(b",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
    push_u64(&mut message_delta, a.completion_tokens);
    message_delta.put_slice(b"}}");
    events.push(sse_event(b"message_delta", &message_delta));
    events.push(sse_event(b"message_stop", b"{\"type\":\"message_stop\"}"));
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_text_of_messages_and_parts_only() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"abcd"},
            {"role":"user","content":[{"type":"text","text":"efghijkl"},{"type":"image_url","image_url":{"url":"data:xxxxxxxxxxxx"}}]}],
            "max_tokens":5,"max_completion_tokens":3,"stream":true,"stream_options":{"include_usage":true}}"#;
        let parsed = parse_request(body).unwrap();
        assert_eq!(parsed.prompt_chars, 12);
        assert_eq!(parsed.prompt_tokens(), 3);
        assert_eq!(parsed.max_tokens, Some(3));
        assert!(parsed.stream && parsed.include_usage);
        assert_eq!(parsed.model.as_deref(), Some("m"));
    }

    #[test]
    fn counts_embedding_inputs() {
        assert_eq!(parse_request(br#"{"input":"abc"}"#).unwrap().inputs, 1);
        assert_eq!(
            parse_request(br#"{"input":["a","b","c"]}"#).unwrap().inputs,
            3
        );
        assert_eq!(parse_request(br#"{"input":[1,2,3]}"#).unwrap().inputs, 1);
        assert_eq!(
            parse_request(br#"{"input":[[1,2],[3]]}"#).unwrap().inputs,
            2
        );
        assert_eq!(
            parse_request(br#"{"input":[[1,2],[3]]}"#)
                .unwrap()
                .prompt_tokens(),
            3
        );
    }

    #[test]
    fn rejects_non_json_and_wrong_types() {
        assert!(parse_request(b"nope").is_err());
        assert!(parse_request(br#"{"max_tokens":"ten"}"#).is_err());
        assert!(parse_request(br#"{"stream":null,"max_tokens":null}"#).is_ok());
    }

    #[test]
    fn escapes_json_strings() {
        let mut buf = BytesMut::new();
        push_json_str(&mut buf, "a\"b\\c\nd\u{1}é");
        let back: String = serde_json::from_slice(&buf).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn writes_numbers() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut buf = BytesMut::new();
            push_u64(&mut buf, n);
            assert_eq!(std::str::from_utf8(&buf).unwrap(), n.to_string());
        }
    }

    fn answer(content: &[u8], tokens: u64) -> Answer<'_> {
        Answer {
            id: 7,
            created: 1,
            model: "m\"x",
            content,
            tokens,
            truncated: true,
            prompt_tokens: 3,
            completion_tokens: tokens,
            cache: None,
        }
    }

    #[test]
    fn bodies_are_valid_json() {
        let a = answer(b"word word ", 2);
        for body in [
            chat_completion(&a),
            text_completion(&a),
            anthropic_message(&a),
        ] {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["model"] == "m\"x", "{v}");
        }
        let v: serde_json::Value = serde_json::from_slice(&chat_completion(&a)).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], "length");
        assert_eq!(v["usage"]["total_tokens"], 5);
        let v: serde_json::Value =
            serde_json::from_slice(&embeddings("e", 2, 4, 9, false)).unwrap();
        assert_eq!(
            v["data"][1]["embedding"].as_array().unwrap().len(),
            EMBEDDING_DIM
        );
        let v: serde_json::Value = serde_json::from_slice(&embeddings("e", 1, 4, 9, true)).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["data"][0]["embedding"].as_str().unwrap())
            .unwrap();
        assert_eq!(raw.len(), EMBEDDING_DIM * 4);
        let v: serde_json::Value =
            serde_json::from_slice(&models_list(&["a".into(), "b".into()], 1)).unwrap();
        assert_eq!(v["data"][1]["id"], "b");
    }

    #[test]
    fn stream_events_parse() {
        let a = answer(b"word word ", 2);
        let events = openai_stream(&a, true, true, None);
        assert_eq!(events.len(), 2 + 4);
        for e in &events[..events.len() - 1] {
            let json = e
                .strip_prefix(b"data: ")
                .unwrap()
                .strip_suffix(b"\n\n")
                .unwrap();
            serde_json::from_slice::<serde_json::Value>(json).unwrap();
        }
        let events = anthropic_stream(&a, None);
        assert_eq!(events.len(), 2 + 6);
        for e in &events {
            let text = std::str::from_utf8(e).unwrap();
            let data = text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap();
            serde_json::from_str::<serde_json::Value>(data).unwrap();
        }
    }
}
