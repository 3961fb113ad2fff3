//! Input-token estimates for worst-case reservations. The one rule: an
//! estimate is never below what the provider will bill, or a budget could
//! be overshot. OpenAI models get a real BPE count (the provider's own
//! tokenizer) plus per-message overhead and a margin; every other model gets
//! the UTF-8 byte count of its text, a safe upper bound because a byte-level
//! BPE token always covers at least one byte. That holds for Gemini too: its
//! SentencePiece vocabulary falls back to single bytes, never below, so no
//! Gemini count exceeds the byte count (Gemini counts ~4 bytes per token of
//! English, so the bound reserves about 4x and settles to Google's count).

use std::sync::OnceLock;

use serde_json::{Map, Value};

use super::estimate_bpe::Bpe;
use crate::config::ModelConfig;
use crate::providers::Endpoint;

/// OpenAI's chat format wraps each message in `<|start|>role…<|end|>`:
/// 3 tokens in their own cookbook; one more here as margin.
const PER_MESSAGE: u64 = 4;
/// A message's `name` adds one token besides the name itself.
const PER_NAME: u64 = 1;
/// Every reply is primed with `<|start|>assistant<|message|>`.
const REPLY_PRIMING: u64 = 3;
/// Tool definitions are rendered into a hidden system message; its wrapper
/// text is not in the request, so it is budgeted on top of the schema.
const TOOLS_OVERHEAD: u64 = 32;
const PER_TOOL: u64 = 12;
/// Anthropic adds a tool-use system prompt of a few hundred tokens when
/// tools are present; the byte bound cannot see it.
const TOOLS_OVERHEAD_OTHER: u64 = 800;
/// An image part, whatever its size. The highest per-image token counts
/// billed today: `gpt-4o-mini` bills a 2048×768 high-detail image as
/// 2833 + 8 × 5667 tokens; other models stay below 4,000.
const IMAGE_TOKENS_4O_MINI: u64 = 48_200;
const IMAGE_TOKENS: u64 = 4_000;
/// Above this many bytes in one string the BPE pass would cost tens of
/// milliseconds; the byte count is a safe upper bound at no cost.
const BPE_MAX_BYTES: usize = 1 << 20;
/// BPE time grows with the square of a pre-tokenizer piece's length, and a
/// run of letters is one piece: a megabyte of `aaaa…` would take a second.
/// No real word is this long; such strings get the byte count.
const MAX_LETTER_RUN: usize = 512;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Counter {
    O200k,
    Cl100k,
    /// Not an OpenAI tokenizer we know: count UTF-8 bytes.
    Bytes,
}

/// Input tokens of a request body, never below the provider's real count.
pub fn input_tokens(
    endpoint: Endpoint,
    body: &Map<String, Value>,
    model: &ModelConfig,
    provider_model: &str,
) -> u64 {
    let counter = counter_for(model, provider_model);
    let image = image_tokens(model, provider_model);
    let n = match endpoint {
        Endpoint::ChatCompletions => chat_tokens(counter, body, image),
        Endpoint::Completions => {
            body.get("prompt").map_or(0, |p| prompt_tokens(counter, p)) + REPLY_PRIMING
        }
        Endpoint::Embeddings => body.get("input").map_or(0, |p| prompt_tokens(counter, p)),
    };
    with_margin(n)
}

/// Input tokens of a request for whichever of the model's targets counts
/// the most: a fallback to another tokenizer (Anthropic's counts 10-30 %
/// more than o200k) must not settle above the reservation.
pub fn input_tokens_any_target(
    endpoint: Endpoint,
    body: &Map<String, Value>,
    model: &ModelConfig,
) -> u64 {
    let mut seen: Vec<(Counter, u64)> = Vec::with_capacity(1);
    let mut worst = 0;
    let names = model.targets.iter().map(|t| t.model.as_str());
    // A model without targets is still counted by its own name.
    let names: Vec<&str> = if model.targets.is_empty() {
        vec![model.name.as_str()]
    } else {
        names.collect()
    };
    for name in names {
        let key = (counter_for(model, name), image_tokens(model, name));
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        worst = worst.max(input_tokens(endpoint, body, model, name));
    }
    worst
}

/// Tokens of a piece of generated text (a stream cut short with no usage),
/// never below the provider's count.
pub fn text_tokens(model: &ModelConfig, provider_model: &str, text: &str) -> u64 {
    count(counter_for(model, provider_model), text)
}

/// `text` counted with OpenAI's o200k tokenizer (the byte count where BPE
/// is too costly): the base of the Claude estimate in [`super::estimate_native`].
pub(crate) fn o200k_tokens(text: &str) -> u64 {
    count(Counter::O200k, text)
}

/// 1% plus a few tokens: tokenizer revisions and formatting details the
/// provider does not document.
fn with_margin(n: u64) -> u64 {
    n + n / 100 + 8
}

fn counter_for(model: &ModelConfig, provider_model: &str) -> Counter {
    // Claude (on Anthropic, Bedrock `anthropic.claude-…`, inference-profile
    // ARNs, Vertex) counts 10-30 % more than o200k: whatever name clients
    // use for it, its input is bounded by bytes, never an OpenAI tokenizer.
    if provider_model.to_ascii_lowercase().contains("claude") {
        return Counter::Bytes;
    }
    match openai_counter(provider_model) {
        Counter::Bytes => openai_counter(&model.name),
        c => c,
    }
}

fn openai_counter(name: &str) -> Counter {
    // Fine-tunes (`ft:gpt-4o-mini:org::id`) and routed names (`openai/gpt-4o`)
    // use their base model's tokenizer.
    let name = name.strip_prefix("ft:").unwrap_or(name);
    let name = name.rsplit('/').next().unwrap_or(name);
    const O200K: [&str; 9] = [
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "chatgpt-4o",
        "o1",
        "o3",
        "o4",
        "gpt-oss",
    ];
    const CL100K: [&str; 6] = [
        "gpt-4",
        "gpt-3.5",
        "gpt-35",
        "text-embedding-3",
        "text-embedding-ada-002",
        "davinci-002",
    ];
    if O200K.iter().any(|p| name.starts_with(p)) {
        Counter::O200k
    } else if CL100K.iter().any(|p| name.starts_with(p)) {
        Counter::Cl100k
    } else {
        Counter::Bytes
    }
}

pub(crate) fn image_tokens(model: &ModelConfig, provider_model: &str) -> u64 {
    let mini = |n: &str| n.contains("gpt-4o-mini");
    // Gemini bills 258 tokens per 768×768 tile and documents no cap on
    // the number of tiles: its images get the hungriest bound too.
    let gemini = |n: &str| n.to_ascii_lowercase().contains("gemini");
    if mini(provider_model) || mini(&model.name) || gemini(provider_model) {
        IMAGE_TOKENS_4O_MINI
    } else {
        IMAGE_TOKENS
    }
}

/// Each family is loaded the first time a configured model needs it.
fn bpe(counter: Counter) -> Option<&'static Bpe> {
    static O200K: OnceLock<Option<Bpe>> = OnceLock::new();
    static CL100K: OnceLock<Option<Bpe>> = OnceLock::new();
    let cell = match counter {
        Counter::O200k => O200K.get_or_init(|| load(Bpe::o200k())),
        Counter::Cl100k => CL100K.get_or_init(|| load(Bpe::cl100k())),
        Counter::Bytes => return None,
    };
    cell.as_ref()
}

fn load(loaded: Result<Bpe, String>) -> Option<Bpe> {
    loaded
        .inspect_err(|e| tracing::error!(error = %e, "cannot load a BPE table; counting UTF-8 bytes instead"))
        .ok()
}

fn count(counter: Counter, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match bpe(counter) {
        // Special-token text such as `<|endoftext|>` in a prompt is encoded
        // as ordinary text by the API, which is what `encode_ordinary` does.
        Some(bpe) if text.len() <= BPE_MAX_BYTES && !has_long_letter_run(text) => {
            bpe.count(text).unwrap_or(text.len() as u64)
        }
        _ => text.len() as u64,
    }
}

fn has_long_letter_run(text: &str) -> bool {
    // Short strings cannot hold a long run; skip the scan.
    if text.len() <= MAX_LETTER_RUN {
        return false;
    }
    let mut run = 0;
    for c in text.chars() {
        if c.is_alphabetic() {
            run += 1;
            if run > MAX_LETTER_RUN {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

fn chat_tokens(counter: Counter, body: &Map<String, Value>, image: u64) -> u64 {
    let mut n = REPLY_PRIMING;
    // Anthropic-shaped bodies carry the system prompt outside `messages`.
    if let Some(system) = body.get("system") {
        n += PER_MESSAGE + content_tokens(counter, system, image);
    }
    if let Some(Value::Array(messages)) = body.get("messages") {
        for m in messages {
            n += PER_MESSAGE + message_tokens(counter, m, image);
        }
    }
    let tools = ["tools", "functions"]
        .iter()
        .filter_map(|k| body.get(*k))
        .filter_map(Value::as_array);
    for list in tools {
        if list.is_empty() {
            continue;
        }
        n += if counter == Counter::Bytes {
            TOOLS_OVERHEAD_OTHER
        } else {
            TOOLS_OVERHEAD
        };
        for t in list {
            n += PER_TOOL + json_tokens(counter, t);
        }
    }
    // Structured-output schemas and forced tool choices are also rendered
    // into the prompt.
    for k in ["response_format", "tool_choice", "function_call"] {
        if let Some(v @ Value::Object(_)) = body.get(k) {
            n += json_tokens(counter, v);
        }
    }
    n
}

fn message_tokens(counter: Counter, m: &Value, image: u64) -> u64 {
    let Value::Object(m) = m else {
        return json_tokens(counter, m);
    };
    let mut n = 0;
    for (k, v) in m {
        n += match (k.as_str(), v) {
            ("content", v) => content_tokens(counter, v, image),
            ("name", Value::String(s)) => PER_NAME + count(counter, s),
            ("role", Value::String(s)) => count(counter, s),
            ("tool_calls" | "function_call", v) => json_tokens(counter, v),
            (_, Value::String(s)) => count(counter, s),
            (_, Value::Null | Value::Bool(_) | Value::Number(_)) => 0,
            (_, v) => json_tokens(counter, v),
        };
    }
    n
}

fn content_tokens(counter: Counter, content: &Value, image: u64) -> u64 {
    match content {
        Value::String(s) => count(counter, s),
        Value::Array(parts) => parts.iter().map(|p| part_tokens(counter, p, image)).sum(),
        Value::Null => 0,
        other => json_tokens(counter, other),
    }
}

fn part_tokens(counter: Counter, part: &Value, image: u64) -> u64 {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "text" | "input_text" => part
            .get("text")
            .and_then(Value::as_str)
            .map_or(0, |s| count(counter, s)),
        // Counting an image's base64 bytes would reserve millions of tokens
        // for a picture the provider bills at a few thousand.
        "image_url" | "input_image" | "image" => image,
        // Audio, files and anything new: every byte of the part, which is
        // more than any provider bills for it.
        _ => serde_json::to_string(part).map_or(0, |s| s.len() as u64),
    }
}

fn json_tokens(counter: Counter, v: &Value) -> u64 {
    match v {
        Value::String(s) => count(counter, s),
        other => serde_json::to_string(other).map_or(0, |s| count(counter, &s)),
    }
}

/// `prompt` of `/v1/completions` or `input` of `/v1/embeddings`: a string,
/// strings, or pre-tokenized ids.
fn prompt_tokens(counter: Counter, p: &Value) -> u64 {
    match p {
        Value::String(s) => count(counter, s),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Number(_) => 1,
                other => prompt_tokens(counter, other),
            })
            .sum(),
        Value::Null => 0,
        other => json_tokens(counter, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Price;
    use serde_json::json;

    fn model(name: &str) -> ModelConfig {
        ModelConfig {
            name: name.into(),
            targets: vec![],
            price: Price::default(),
            max_output_tokens: 4096,
            strategy: Default::default(),
        }
    }

    fn body(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn known_tiktoken_counts_are_exact_before_overhead() {
        // Reference counts from OpenAI's tiktoken.
        assert_eq!(count(Counter::Cl100k, "hello world"), 2);
        assert_eq!(count(Counter::O200k, "hello world"), 2);
        assert_eq!(count(Counter::Cl100k, "tiktoken is great!"), 6);
        assert_eq!(count(Counter::Bytes, "héllo"), 6);
    }

    #[test]
    fn chat_estimate_covers_openai_reported_prompt_tokens() {
        // OpenAI's cookbook example: gpt-4o / gpt-4 report 129 prompt tokens
        // for these messages.
        let b = body(json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}
        ]}));
        for name in ["gpt-4o", "gpt-4", "gpt-4o-mini"] {
            let n = input_tokens(Endpoint::ChatCompletions, &b, &model(name), name);
            assert!(n >= 129, "{name}: {n}");
            assert!(n < 129 * 2, "{name}: {n} is not a tight estimate");
        }
        // Short prompt: "Say this is a test" reports 12 prompt tokens on
        // gpt-3.5-turbo/gpt-4o.
        let b = body(json!({"messages": [{"role": "user", "content": "Say this is a test"}]}));
        let n = input_tokens(Endpoint::ChatCompletions, &b, &model("gpt-4o"), "gpt-4o");
        assert!((12..40).contains(&n), "{n}");
    }

    #[test]
    fn non_openai_models_count_bytes() {
        let text = "Zählen wir Bytes: 日本語";
        let b = body(json!({"messages": [{"role": "user", "content": text}]}));
        let n = input_tokens(
            Endpoint::ChatCompletions,
            &b,
            &model("claude-3-5-haiku"),
            "claude-3-5-haiku-20241022",
        );
        assert!(n >= text.len() as u64);
        assert_eq!(
            text_tokens(&model("claude"), "claude-3-5-haiku", text),
            text.len() as u64
        );
    }

    #[test]
    fn claude_on_bedrock_is_counted_by_bytes_whatever_its_client_name() {
        let text = "Hello there, how are you doing today? ".repeat(20);
        let b = body(json!({"messages": [{"role": "user", "content": text}]}));
        for provider_model in [
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet-20250219-v1:0",
        ] {
            // A client-facing name of an OpenAI model must not pick o200k.
            let n = input_tokens(
                Endpoint::ChatCompletions,
                &b,
                &model("gpt-4o"),
                provider_model,
            );
            assert!(n >= text.len() as u64, "{provider_model}: {n}");
        }
    }

    #[test]
    fn provider_model_decides_the_tokenizer() {
        // A client-facing alias routed to gpt-4o still gets the BPE count.
        assert_eq!(
            counter_for(&model("fast"), "gpt-4o-2024-08-06"),
            Counter::O200k
        );
        assert_eq!(
            counter_for(&model("gpt-4o-mini"), "my-azure-deployment"),
            Counter::O200k
        );
        assert_eq!(
            counter_for(&model("legacy"), "gpt-3.5-turbo"),
            Counter::Cl100k
        );
        assert_eq!(
            counter_for(&model("x"), "ft:gpt-4.1-mini:acme::abc"),
            Counter::O200k
        );
        assert_eq!(counter_for(&model("mock-1"), "mock-1"), Counter::Bytes);
    }

    #[test]
    fn images_tools_and_embeddings_are_counted() {
        let m = model("gpt-4o");
        let text_only = body(
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "what is this?"}]}]}),
        );
        let with_image = body(json!({"messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is this?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", "A".repeat(100_000))}}
        ]}]}));
        let a = input_tokens(Endpoint::ChatCompletions, &text_only, &m, "gpt-4o");
        let b = input_tokens(Endpoint::ChatCompletions, &with_image, &m, "gpt-4o");
        assert!(
            b >= a + IMAGE_TOKENS && b < a + IMAGE_TOKENS + 100,
            "{a} {b}"
        );

        let tools = body(
            json!({"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function",
            "function": {"name": "get_weather", "description": "Get the weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}),
        );
        let t = input_tokens(Endpoint::ChatCompletions, &tools, &m, "gpt-4o");
        let plain = input_tokens(
            Endpoint::ChatCompletions,
            &body(json!({"messages": [{"role": "user", "content": "hi"}]})),
            &m,
            "gpt-4o",
        );
        let schema = json_tokens(Counter::O200k, &tools["tools"][0]);
        assert!(t >= plain + schema + TOOLS_OVERHEAD, "{t} {plain} {schema}");

        let emb = body(json!({"input": ["hello world", "hello world"]}));
        let e = input_tokens(
            Endpoint::Embeddings,
            &emb,
            &model("text-embedding-3-small"),
            "text-embedding-3-small",
        );
        assert!((4..20).contains(&e), "{e}");
        let ids = body(json!({"prompt": [1, 2, 3, 4]}));
        assert!(input_tokens(Endpoint::Completions, &ids, &m, "gpt-4o") >= 4);
    }

    #[test]
    fn several_targets_are_counted_by_the_hungriest_tokenizer() {
        let mut m = model("alias");
        let target = |name: &str| crate::config::Target {
            provider: "p".into(),
            model: name.into(),
            weight: None,
        };
        m.targets = vec![target("gpt-4o"), target("claude-3-5-haiku")];
        let b =
            body(json!({"messages": [{"role": "user", "content": "hello world, hello world"}]}));
        let bpe = input_tokens(Endpoint::ChatCompletions, &b, &m, "gpt-4o");
        let bytes = input_tokens(Endpoint::ChatCompletions, &b, &m, "claude-3-5-haiku");
        assert!(bytes > bpe, "{bytes} {bpe}");
        assert_eq!(
            input_tokens_any_target(Endpoint::ChatCompletions, &b, &m),
            bytes
        );
        m.targets.reverse();
        assert_eq!(
            input_tokens_any_target(Endpoint::ChatCompletions, &b, &m),
            bytes
        );
    }

    #[test]
    fn pathological_strings_stay_fast_and_safe() {
        let m = model("gpt-4o");
        let blob = "a".repeat(1_000_000);
        let start = std::time::Instant::now();
        let n = text_tokens(&m, "gpt-4o", &blob);
        assert!(
            start.elapsed() < std::time::Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        // tiktoken needs 125,000 tokens for it; bytes are an upper bound.
        assert_eq!(n, 1_000_000);
        // Ordinary long text keeps the exact count.
        let prose = "the quick brown fox jumps over the lazy dog ".repeat(100);
        // Nine tokens a sentence, plus the trailing space.
        assert_eq!(text_tokens(&m, "gpt-4o", &prose), 901);
        assert!(!has_long_letter_run(&prose));
    }

    #[test]
    fn short_prompt_is_fast_once_loaded() {
        let m = model("gpt-4o");
        let b = body(
            json!({"messages": [{"role": "user", "content": "Say this is a test, please, quickly."}]}),
        );
        input_tokens(Endpoint::ChatCompletions, &b, &m, "gpt-4o");
        let start = std::time::Instant::now();
        for _ in 0..100 {
            input_tokens(Endpoint::ChatCompletions, &b, &m, "gpt-4o");
        }
        // Generous for an unoptimised test build on a shared machine.
        assert!(
            start.elapsed() < std::time::Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
    }
}
