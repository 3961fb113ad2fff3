//! Kind `anthropic`: the Anthropic Messages API behind the OpenAI chat
//! format. Requests are translated on the way out and answers (JSON, SSE,
//! error bodies) on the way back, so the client only ever sees OpenAI.

use async_trait::async_trait;
use futures_util::StreamExt;
use http::HeaderName;
use http::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;
use tokio::time::Instant;

use super::native::{self, NativeApi, NativeCall};
use super::translate::to_anthropic::{self, ChunkTranslator};
use super::upstream::{self, Ctx};
use super::{
    Endpoint, EventStream, Provider, ProviderError, SseEvent, UpstreamCall, UpstreamResponse,
};
use crate::config::ProviderConfig;

pub const ANTHROPIC_VERSION: &str = "2023-06-01";

pub(crate) struct Anthropic {
    ctx: Ctx,
    base_url: String,
    http: super::Http,
}

impl Anthropic {
    pub fn new(config: &ProviderConfig, http: super::Http) -> Self {
        Anthropic {
            ctx: Ctx::new(&config.name, config.api_key.clone()),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            http,
        }
    }

    fn request(
        &self,
        call: &UpstreamCall,
        body: &Value,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let body = serde_json::to_vec(body).map_err(|e| {
            self.ctx
                .failed(format!("could not encode the request body: {e}"))
        })?;
        let mut request = self
            .http
            .get()
            .post(format!("{}/messages", self.base_url))
            .header(CONTENT_TYPE, "application/json")
            .header("anthropic-version", ANTHROPIC_VERSION)
            .body(body);
        if let Some(key) = self.ctx.key() {
            let value = upstream::secret_header(key).ok_or_else(|| {
                self.ctx.failed(format!(
                    "the `api_key` of provider `{}` holds characters an HTTP header cannot carry",
                    self.ctx.provider
                ))
            })?;
            request = request.header(HeaderName::from_static("x-api-key"), value);
        }
        if let Some(id) = upstream::request_id_header(&call.request_id) {
            request = request.header("x-request-id", id);
        }
        if call.stream {
            request = request.header(ACCEPT, "text/event-stream");
        }
        Ok(request)
    }
}

#[async_trait]
impl Provider for Anthropic {
    fn name(&self) -> &str {
        &self.ctx.provider
    }

    fn serves_natively(&self, api: NativeApi, _model: &str) -> bool {
        matches!(api, NativeApi::Messages | NativeApi::CountTokens)
    }

    /// The client's Messages body and its `anthropic-version` /
    /// `anthropic-beta` headers go out as they came, with the gateway's key;
    /// the answer comes back untranslated.
    async fn send_native(&self, call: NativeCall) -> Result<UpstreamResponse, ProviderError> {
        let body = serde_json::to_vec(&call.body).map_err(|e| {
            self.ctx
                .failed(format!("could not encode the request body: {e}"))
        })?;
        let mut request = self
            .http
            .get()
            .post(format!("{}{}", self.base_url, call.api.path()))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let mut version = false;
        for (name, value) in &call.headers {
            version |= name == "anthropic-version";
            request = request.header(name.clone(), value.clone());
        }
        if !version {
            request = request.header("anthropic-version", ANTHROPIC_VERSION);
        }
        if let Some(key) = self.ctx.key() {
            let value = upstream::secret_header(key).ok_or_else(|| {
                self.ctx.failed(format!(
                    "the `api_key` of provider `{}` holds characters an HTTP header cannot carry",
                    self.ctx.provider
                ))
            })?;
            request = request.header(HeaderName::from_static("x-api-key"), value);
        }
        if let Some(id) = upstream::request_id_header(&call.request_id) {
            request = request.header("x-request-id", id);
        }
        if call.stream {
            request = request.header(ACCEPT, "text/event-stream");
        }
        let usage = match call.api {
            NativeApi::Messages => native::messages_usage,
            _ => |_: &[u8]| None,
        };
        native::exchange(
            &self.ctx,
            request,
            call.api,
            call.stream,
            call.timeout,
            usage,
        )
        .await
    }

    async fn send(&self, call: UpstreamCall) -> Result<UpstreamResponse, ProviderError> {
        if call.endpoint != Endpoint::ChatCompletions {
            return Err(self.ctx.bad_request(&format!(
                "`/v1{}` is not supported by provider `{}` (kind `anthropic`): use `/v1/chat/completions`",
                call.endpoint.path(),
                self.ctx.provider
            )));
        }
        let body = to_anthropic::chat_request(&call.body).map_err(|m| self.ctx.bad_request(&m))?;
        let deadline = Instant::now() + call.timeout;
        let request = self.request(&call, &body)?;
        let response = match upstream::send(&self.ctx, request, deadline, call.timeout).await {
            Err(ProviderError::Rejected {
                provider,
                status,
                body,
                content_type,
            }) => {
                // Anthropic's error shape, reworded as OpenAI's for an OpenAI client.
                return Err(match to_anthropic::error_body(&body) {
                    Some(body) => ProviderError::Rejected {
                        provider,
                        status,
                        body,
                        content_type: Some(http::HeaderValue::from_static("application/json")),
                    },
                    None => ProviderError::Rejected {
                        provider,
                        status,
                        body,
                        content_type,
                    },
                });
            }
            other => other?,
        };
        let created = chrono::Utc::now().timestamp();
        let model = call
            .body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if call.stream {
            let include_usage = call
                .body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let response =
                upstream::expect_event_stream(&self.ctx, response, deadline, call.timeout).await?;
            let translator = ChunkTranslator::new(model, created, include_usage);
            return Ok(UpstreamResponse::Stream(translated_stream(
                self.ctx.clone(),
                response,
                call.timeout,
                translator,
            )));
        }
        let raw = upstream::read_body(&self.ctx, response, deadline, call.timeout).await?;
        let (body, usage) = to_anthropic::chat_response(&raw, created).map_err(|e| {
            self.ctx.lost(format!(
                "answered with a success status but an unusable body: {e}"
            ))
        })?;
        Ok(UpstreamResponse::Complete {
            body: bytes::Bytes::from(body.to_string()),
            usage: Some(usage),
        })
    }
}

/// Anthropic SSE → canonical chunks; also Claude on Vertex's `streamRawPredict`.
pub(crate) fn translated_stream(
    ctx: Ctx,
    response: reqwest::Response,
    idle: std::time::Duration,
    translator: ChunkTranslator,
) -> EventStream {
    let fail_ctx = ctx.clone();
    let events = upstream::sse_events(ctx, response, idle)
        .scan(translator, move |translator, item| {
            let out: Vec<Result<SseEvent, ProviderError>> = match item {
                Ok(raw) => match translator.on_event(raw.event.as_deref(), &raw.data) {
                    Ok(events) => events.into_iter().map(Ok).collect(),
                    Err(message) => vec![Err(fail_ctx.failed(message))],
                },
                Err(e) => vec![Err(e)],
            };
            std::future::ready(Some(out))
        })
        .flat_map(futures_util::stream::iter);
    // `message_stop` is Anthropic's `[DONE]`: the stream ends with it.
    let events = upstream::end_after(events, |item| matches!(item, Ok(SseEvent::Done)));
    Box::pin(events)
}
