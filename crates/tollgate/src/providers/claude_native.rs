//! A capability some providers have besides the canonical [`super::Provider`]
//! path: serving Claude natively, with an Anthropic Messages body in and
//! Anthropic's own answer out, untranslated, so `cache_control`,
//! `thinking`, documents and citations survive (SPEC §3, `/v1/messages`).
//! `bedrock` has it (`InvokeModel`); a provider without it answers `None`
//! from [`super::Provider::native_messages`].

use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use serde_json::{Map, Value};

use super::sse::RawEvent;
use super::{ProviderError, Usage};

/// One native call.
#[derive(Debug, Clone)]
pub struct NativeCall {
    /// An Anthropic Messages request body. Its `model`, `stream` and
    /// `anthropic_version` are the provider's business and are replaced;
    /// `max_tokens` is required and must already be the reserved cap.
    pub body: Map<String, Value>,
    /// The provider's own model id.
    pub model: String,
    pub stream: bool,
    /// `anthropic-beta` header values the client sent.
    pub betas: Vec<String>,
    pub timeout: Duration,
    pub request_id: String,
}

/// Anthropic stream events (`event` = its `type`, `data` = its JSON), in order.
pub type NativeEventStream = Pin<Box<dyn Stream<Item = Result<RawEvent, ProviderError>> + Send>>;

pub enum NativeResponse {
    /// An Anthropic `message` JSON body and the usage read from it.
    Complete { body: Bytes, usage: Option<Usage> },
    /// Anthropic's stream events; usage is in `message_start` and
    /// `message_delta`, as from Anthropic itself.
    Stream(NativeEventStream),
}

#[async_trait]
pub trait NativeMessages: Send + Sync {
    async fn messages(&self, call: NativeCall) -> Result<NativeResponse, ProviderError>;
}
