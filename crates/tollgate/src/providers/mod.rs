//! Upstream providers: wire formats, SSE framing, usage extraction and
//! provider errors. A provider takes the canonical request (an OpenAI-format
//! JSON object, with every field the client sent kept as is) and answers in
//! canonical OpenAI format, translating when its own API differs. Providers
//! never touch the store, the counters or policies.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderValue, StatusCode};
use serde_json::{Map, Value};

use crate::config::{ProviderConfig, ProviderKind};

mod anthropic;
mod azure;
mod bedrock;
pub mod claude_native;
mod client;
mod entra;
mod google;
mod mock;
pub mod native;
mod openai;
mod retry_after;
pub mod sse;
#[cfg(test)]
mod tests;
mod token_cache;
pub mod translate;
mod upstream;

pub use client::{Http, http_client};
pub use mock::MOCK_REPLY;
pub use native::{NativeApi, NativeCall};
pub use translate::{MessagesStreamTranslator, messages_to_openai, openai_to_messages_response};

/// The provider a config entry describes. `http` is the one pooled client
/// ([`http_client`]) shared by every networked provider.
pub fn build(config: &ProviderConfig, http: Http) -> Arc<dyn Provider> {
    match config.kind {
        ProviderKind::OpenAi => Arc::new(openai::OpenAiCompatible::new(
            config,
            openai::Dialect::OpenAi,
            http,
        )),
        ProviderKind::Azure => Arc::new(azure::provider(config, http)),
        ProviderKind::Anthropic => Arc::new(anthropic::Anthropic::new(config, http)),
        ProviderKind::Gemini => Arc::new(google::Google::gemini(config, http)),
        ProviderKind::Vertex => Arc::new(google::Google::vertex(config, http)),
        ProviderKind::Mock => Arc::new(mock::Mock::new(&config.name)),
        ProviderKind::Bedrock => Arc::new(bedrock::Bedrock::new(config, http)),
    }
}

/// Which OpenAI endpoint a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    /// Path below the provider's `base_url`.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }
}

/// OpenAI model families that refuse `max_tokens` on chat and take only
/// `max_completion_tokens` (which also bounds their hidden reasoning
/// tokens). Source: OpenAI API reference, chat `max_tokens`: "deprecated in
/// favor of `max_completion_tokens`, and is not compatible with o-series
/// models"; the gpt-5 family answers `max_tokens` with "Unsupported
/// parameter ... Use 'max_completion_tokens' instead" (checked 2026-11).
const COMPLETION_TOKENS_ONLY: [&str; 4] = ["o1", "o3", "o4", "gpt-5"];

/// The field that caps the output of `model` on `endpoint`: what the
/// gateway inserts so a reservation is enforced by the provider, not hoped
/// for.
pub fn output_cap_field(endpoint: Endpoint, model: &str) -> &'static str {
    // Fine-tunes (`ft:o4-mini:org::id`) and routed names (`openai/o3`)
    // belong to their base model's family.
    let name = model.strip_prefix("ft:").unwrap_or(model);
    let name = name.rsplit('/').next().unwrap_or(name);
    let completion_tokens_only = COMPLETION_TOKENS_ONLY.iter().any(|family| {
        name.strip_prefix(family)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['-', '.']))
    });
    if endpoint == Endpoint::ChatCompletions && completion_tokens_only {
        "max_completion_tokens"
    } else {
        "max_tokens"
    }
}

/// Every output-cap field a provider of `endpoint` may honour.
pub const OUTPUT_CAP_FIELDS: [&str; 2] = ["max_tokens", "max_completion_tokens"];

/// One call to one provider.
#[derive(Debug, Clone)]
pub struct UpstreamCall {
    pub endpoint: Endpoint,
    /// Canonical OpenAI-format body; `model` already holds the provider's
    /// own model name, and for streams `stream_options.include_usage` is set.
    pub body: Map<String, Value>,
    pub stream: bool,
    pub timeout: Duration,
    /// Sent upstream as `x-request-id` for correlation.
    pub request_id: String,
}

/// Token usage as the provider reported it, in OpenAI's accounting:
/// `prompt_tokens` counts every prompt token, and the cache counts are
/// parts of it. OpenAI reports it that way (`prompt_tokens_details.
/// cached_tokens` is included in `prompt_tokens`). Anthropic does not: its
/// `input_tokens` excludes `cache_read_input_tokens` and
/// `cache_creation_input_tokens`, so [`translate::usage_from_anthropic`]
/// adds them in and [`translate::usage_to_anthropic`] takes them out again;
/// each token is billed once, at its own rate
/// ([`crate::types::Price::cost_with_cache`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// All prompt tokens: fresh input, cache reads and cache writes.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Of `prompt_tokens`, read from the provider's cache (OpenAI
    /// `cached_tokens`, Anthropic `cache_read_input_tokens`).
    pub cached_tokens: u64,
    /// Of `prompt_tokens`, written to the provider's cache, both lifetimes
    /// (Anthropic `cache_creation_input_tokens`).
    pub cache_write_tokens: u64,
    /// Of `cache_write_tokens`, written with the 1-hour lifetime (Anthropic
    /// `cache_creation.ephemeral_1h_input_tokens`).
    pub cache_write_1h_tokens: u64,
}

impl Usage {
    /// The prompt tokens billed at a cache rate.
    pub fn cache(&self) -> crate::types::CacheTokens {
        crate::types::CacheTokens {
            read: self.cached_tokens,
            write: self.cache_write_tokens,
            write_1h: self.cache_write_1h_tokens,
        }
    }

    /// Sets the cache writes from a provider's total and its per-lifetime
    /// split (either may be missing, as 0). The larger of the total and
    /// the split's sum is kept, so no write is dropped; writes reported
    /// without a split are billed as 5-minute ones, the default lifetime
    /// (Anthropic reports the split whenever a request writes for an hour).
    pub(crate) fn with_cache_writes(mut self, total: u64, split_5m: u64, split_1h: u64) -> Usage {
        self.cache_write_tokens = total.max(split_5m.saturating_add(split_1h));
        self.cache_write_1h_tokens = split_1h;
        self
    }
}

impl Usage {
    /// Any one count above this is not a real request's: a provider's
    /// absurd numbers are cut here, so sums and conversions to the ledger's
    /// signed integers can never overflow (the cost is then bounded by the
    /// reservation, see `Admitted::cost`).
    pub const MAX_TOKENS: u64 = 1_000_000_000_000;

    /// This usage with every count at most [`Usage::MAX_TOKENS`] and the
    /// cache counts no more than the prompt's.
    pub fn bounded(self) -> Usage {
        let prompt_tokens = self.prompt_tokens.min(Self::MAX_TOKENS);
        let cache_write_tokens = self.cache_write_tokens.min(prompt_tokens);
        Usage {
            prompt_tokens,
            completion_tokens: self.completion_tokens.min(Self::MAX_TOKENS),
            cached_tokens: self.cached_tokens.min(prompt_tokens),
            cache_write_tokens,
            cache_write_1h_tokens: self.cache_write_1h_tokens.min(cache_write_tokens),
        }
    }
}

/// One server-sent event's `data` payload, in canonical OpenAI
/// `chat.completion.chunk` (or `text_completion`) JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseEvent {
    Data(Bytes),
    /// `data: [DONE]`.
    Done,
    /// One event of a stream passed through natively ([`Provider::send_native`]),
    /// named and framed as the provider sent it; the client gets it unchanged.
    Native {
        event: Option<String>,
        data: Bytes,
    },
}

pub type EventStream = Pin<Box<dyn Stream<Item = Result<SseEvent, ProviderError>> + Send>>;

pub enum UpstreamResponse {
    /// A complete 2xx JSON body in canonical format, with its usage if the
    /// provider reported one.
    Complete { body: Bytes, usage: Option<Usage> },
    /// A 2xx stream, yielded event by event as it arrives.
    Stream(EventStream),
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No answer (or no next chunk) within the provider's timeout.
    #[error("provider `{provider}` did not answer within {timeout:?}")]
    Timeout { provider: String, timeout: Duration },
    /// Connection refused/reset, 5xx, malformed body: worth a fallback.
    #[error("provider `{provider}` failed: {message}")]
    Failed { provider: String, message: String },
    /// The request reached the provider, but its answer was lost: the
    /// connection broke after the request was sent, the body broke off or
    /// was unusable after a 2xx, or a gateway in front of it answered 502 or
    /// 504. The provider may have generated, and billed, the answer.
    #[error("provider `{provider}` failed after it was sent the request: {message}")]
    Lost { provider: String, message: String },
    /// The provider refused the gateway's own credentials (its 401/403):
    /// the client cannot fix that, so it is the provider's failure, worth a
    /// fallback. `code` is the provider's error code, if it gave a plain one;
    /// its message is dropped, as providers echo a fragment of the key.
    #[error(
        "provider `{provider}` refused the gateway's credentials ({status}{}): the provider key in the \
         gateway's config is wrong, revoked or lacks access; an operator must fix it",
        code.as_deref().map(|c| format!(", provider code `{c}`")).unwrap_or_default()
    )]
    Credentials {
        provider: String,
        status: StatusCode,
        code: Option<String>,
    },
    /// The provider refused the request without generating an answer: 408,
    /// 429, or a 5xx other than 502/504 (which are [`ProviderError::Lost`]).
    /// Billed nothing; `retry_after` is the wait it asked for
    /// (`retry-after-ms` / `Retry-After`). Whether it is worth a retry on
    /// the same target is the status's business (`crate::routing::retry`).
    #[error("provider `{provider}` answered `{status}`: {message}")]
    Refused {
        provider: String,
        status: StatusCode,
        retry_after: Option<Duration>,
        message: String,
    },
    /// The provider read the prompt and refused to answer it (Gemini's
    /// safety block): the client gets `body` with `status`, the request is
    /// not tried elsewhere, and it is billed `usage`, the prompt the
    /// provider counted.
    #[error("provider `{provider}` refused the prompt ({status})")]
    Blocked {
        provider: String,
        status: StatusCode,
        body: Bytes,
        usage: Usage,
    },
    /// The provider's own 4xx: passed to the client with its status, never retried.
    #[error("provider `{provider}` rejected the request with {status}")]
    Rejected {
        provider: String,
        status: StatusCode,
        body: Bytes,
        content_type: Option<HeaderValue>,
    },
}

impl ProviderError {
    /// Whether the provider may have generated, and billed, an answer the
    /// gateway never got whole: a timeout after the request went out (the
    /// connect has its own, shorter timeout that fails as `Failed`) or a
    /// lost answer.
    pub fn may_have_billed(&self) -> bool {
        matches!(
            self,
            ProviderError::Timeout { .. } | ProviderError::Lost { .. }
        )
    }
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    fn name(&self) -> &str;

    async fn send(&self, call: UpstreamCall) -> Result<UpstreamResponse, ProviderError>;

    /// Whether this provider serves `api` in its own wire format, so that
    /// the client's body goes out untranslated ([`Provider::send_native`]).
    /// The default is no: the gateway then translates the request to the
    /// canonical chat format and calls [`Provider::send`].
    ///
    /// A provider serving Claude models implements [`NativeApi::Messages`]
    /// (and [`NativeApi::CountTokens`] where its API has one): Bedrock's
    /// `InvokeModel` / `InvokeModelWithResponseStream` take the Messages body
    /// with `anthropic_version: "bedrock-2023-05-31"` in it and the model in
    /// the URL instead of the body; Vertex's `rawPredict` /
    /// `streamRawPredict` take it with `anthropic_version:
    /// "vertex-2023-10-16"`, model in the URL. Each answers in Anthropic's
    /// own JSON and event shapes, so the provider returns the body as
    /// [`UpstreamResponse::Complete`] (with [`native::messages_usage`]) and
    /// each event as [`SseEvent::Native`] followed by [`SseEvent::Done`]
    /// after `message_stop` (Bedrock's binary event-stream frames decoded to
    /// their JSON payloads first).
    /// `model` is the target's own model name: a provider may serve an API
    /// natively for some of its models only (Bedrock: Claude).
    fn serves_natively(&self, api: NativeApi, model: &str) -> bool {
        let _ = (api, model);
        false
    }

    /// Sends the client's own body (model and output cap already set by the
    /// gateway) to the provider's native endpoint for `call.api`. Called
    /// only when [`Provider::serves_natively`] said yes.
    async fn send_native(&self, call: NativeCall) -> Result<UpstreamResponse, ProviderError> {
        Err(ProviderError::Failed {
            provider: self.name().to_owned(),
            message: format!(
                "`{}` is not served natively by this provider",
                call.api.path()
            ),
        })
    }

    /// The provider's native Anthropic Messages path, if it serves Claude
    /// natively (see [`claude_native`]).
    fn native_messages(&self) -> Option<&dyn claude_native::NativeMessages> {
        None
    }
}
