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
mod client;
mod mock;
mod openai;
pub mod sse;
#[cfg(test)]
mod tests;
pub mod translate;
mod upstream;

pub use client::{Http, http_client};
pub use mock::MOCK_REPLY;
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
        ProviderKind::Mock => Arc::new(mock::Mock::new(&config.name)),
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

/// Token usage as the provider reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's cache.
    pub cached_tokens: u64,
}

/// One server-sent event's `data` payload, in canonical OpenAI
/// `chat.completion.chunk` (or `text_completion`) JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseEvent {
    Data(Bytes),
    /// `data: [DONE]`.
    Done,
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
    /// The provider's own 4xx: passed to the client with its status, never retried.
    #[error("provider `{provider}` rejected the request with {status}")]
    Rejected {
        provider: String,
        status: StatusCode,
        body: Bytes,
        content_type: Option<HeaderValue>,
    },
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    fn name(&self) -> &str;

    async fn send(&self, call: UpstreamCall) -> Result<UpstreamResponse, ProviderError>;
}
