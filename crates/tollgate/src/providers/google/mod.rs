//! Kinds `gemini` (Google AI Studio, an API key in `x-goog-api-key`) and
//! `vertex` (Vertex AI, an OAuth token from a service account): the Gemini
//! wire format behind the OpenAI chat and embeddings format (Vertex embeds
//! through `predict`), and on Vertex
//! Claude through `rawPredict` with the Anthropic body, translated by
//! [`crate::providers::translate`]. [`wire`] owns the Gemini JSON, [`auth`]
//! the Vertex token; this module builds URLs, sends, and turns answers,
//! streams and safety blocks into canonical ones.

mod auth;
pub(crate) mod wire;

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderValue;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;
use tokio::time::Instant;

use super::translate::completions;
use super::translate::to_anthropic::{self, ChunkTranslator as AnthropicChunks};
use super::upstream::{self, Ctx};
use super::{
    Endpoint, Http, NativeApi, NativeCall, Provider, ProviderError, SseEvent, UpstreamCall,
    UpstreamResponse,
};
use crate::config::ProviderConfig;
use wire::Host;

/// The `anthropic_version` Vertex AI takes in a Claude request body (in
/// place of Anthropic's header).
pub const VERTEX_ANTHROPIC_VERSION: &str = "vertex-2023-10-16";

struct Vertex {
    /// `projects/{project}/locations/{region}`.
    location: String,
    tokens: auth::TokenSource,
}

pub(crate) struct Google {
    ctx: Ctx,
    http: Http,
    base_url: String,
    /// `None` on AI Studio.
    vertex: Option<Vertex>,
}

impl Google {
    pub fn gemini(config: &ProviderConfig, http: Http) -> Self {
        Google {
            ctx: Ctx::new(&config.name, config.api_key.clone()),
            http,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            vertex: None,
        }
    }

    pub fn vertex(config: &ProviderConfig, http: Http) -> Self {
        let ctx = Ctx::new(&config.name, None);
        let vertex = config.vertex.as_ref().map(|v| Vertex {
            location: format!(
                "projects/{}/locations/{}",
                segment(&v.project),
                segment(&v.region)
            ),
            tokens: auth::TokenSource::new(
                ctx.clone(),
                v.credentials.clone(),
                http.clone(),
                config.timeout,
            ),
        });
        Google {
            ctx,
            http,
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            vertex,
        }
    }

    fn host(&self) -> Host {
        match self.vertex {
            Some(_) => Host::Vertex,
            None => Host::AiStudio,
        }
    }

    /// `{base}/models/{m}` (AI Studio) or
    /// `{base}/projects/{p}/locations/{r}/publishers/{publisher}/models/{m}`.
    fn model_url(&self, publisher: &str, model: &str) -> String {
        match &self.vertex {
            None => format!("{}/models/{}", self.base_url, segment(model)),
            Some(v) => format!(
                "{}/{}/publishers/{publisher}/models/{}",
                self.base_url,
                v.location,
                segment(model)
            ),
        }
    }

    /// A POST of `body` to `url` carrying this provider's credentials.
    async fn request(
        &self,
        call: &UpstreamCall,
        url: String,
        body: &Value,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let body = serde_json::to_vec(body).map_err(|e| {
            self.ctx
                .failed(format!("could not encode the request body: {e}"))
        })?;
        let mut request = self
            .http
            .get()
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        match &self.vertex {
            None => {
                if let Some(key) = self.ctx.key() {
                    let value = upstream::secret_header(key).ok_or_else(|| {
                        self.ctx.failed(format!(
                            "the `api_key` of provider `{}` holds characters an HTTP header cannot carry",
                            self.ctx.provider
                        ))
                    })?;
                    request = request.header("x-goog-api-key", value);
                }
            }
            Some(v) => {
                let token = v.tokens.token().await?;
                let value = upstream::secret_header(&format!("Bearer {}", token.expose()))
                    .ok_or_else(|| {
                        self.ctx
                            .failed("the OAuth access token is not a header value")
                    })?;
                request = request.header(AUTHORIZATION, value);
            }
        }
        if let Some(id) = upstream::request_id_header(&call.request_id) {
            request = request.header("x-request-id", id);
        }
        if call.stream {
            request = request.header(ACCEPT, "text/event-stream");
        }
        Ok(request)
    }

    /// Sends, with Google's (or, for Claude, Anthropic's) error bodies
    /// reworded as OpenAI's.
    async fn send_request(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Instant,
        timeout: Duration,
        reword: fn(&[u8]) -> Option<Bytes>,
    ) -> Result<reqwest::Response, ProviderError> {
        match upstream::send(&self.ctx, request, deadline, timeout).await {
            Err(ProviderError::Rejected {
                provider,
                status,
                body,
                content_type,
            }) => Err(match reword(&body) {
                Some(body) => ProviderError::Rejected {
                    provider,
                    status,
                    body,
                    content_type: Some(HeaderValue::from_static("application/json")),
                },
                None => ProviderError::Rejected {
                    provider,
                    status,
                    body,
                    content_type,
                },
            }),
            other => other,
        }
    }

    fn refused(&self, message: &str, usage: Option<super::Usage>) -> ProviderError {
        ProviderError::Blocked {
            provider: self.ctx.provider.clone(),
            status: http::StatusCode::BAD_REQUEST,
            body: wire::block_error_body(message),
            usage: usage.unwrap_or_default(),
        }
    }

    async fn chat(
        &self,
        call: UpstreamCall,
        model: &str,
    ) -> Result<UpstreamResponse, ProviderError> {
        let body =
            wire::chat_request(&call.body, self.host()).map_err(|m| self.ctx.bad_request(&m))?;
        let method = if call.stream {
            ":streamGenerateContent?alt=sse"
        } else {
            ":generateContent"
        };
        let url = format!("{}{method}", self.model_url("google", model));
        let deadline = Instant::now() + call.timeout;
        let request = self.request(&call, url, &body).await?;
        let response = self
            .send_request(request, deadline, call.timeout, wire::error_body)
            .await?;
        let created = chrono::Utc::now().timestamp();
        if call.stream {
            let response =
                upstream::expect_event_stream(&self.ctx, response, deadline, call.timeout).await?;
            return self
                .stream(response, model, created, deadline, call.timeout)
                .await;
        }
        let raw = upstream::read_body(&self.ctx, response, deadline, call.timeout).await?;
        if let Ok(v) = serde_json::from_slice::<Value>(&raw)
            && let Some(message) = wire::prompt_block(&v)
        {
            let usage = v.get("usageMetadata").and_then(wire::usage);
            return Err(self.refused(&message, usage));
        }
        let (body, usage) = wire::chat_response(&raw, model, created).map_err(|e| {
            self.ctx.lost(format!(
                "answered with a success status but an unusable body: {e}"
            ))
        })?;
        Ok(UpstreamResponse::Complete {
            body: Bytes::from(body.to_string()),
            usage,
        })
    }

    /// A Gemini stream. Its first chunk is read here: a blocked prompt
    /// arrives as a first (and only) chunk without candidates, and becomes
    /// the same error as without streaming.
    async fn stream(
        &self,
        response: reqwest::Response,
        model: &str,
        created: i64,
        deadline: Instant,
        idle: Duration,
    ) -> Result<UpstreamResponse, ProviderError> {
        let mut events = Box::pin(upstream::sse_events(self.ctx.clone(), response, idle));
        let first = match tokio::time::timeout_at(deadline, events.next()).await {
            Err(_) => return Err(self.ctx.timeout(idle)),
            Ok(None) => return Err(self.ctx.lost("the stream ended before its first chunk")),
            Ok(Some(Err(e))) => return Err(e),
            Ok(Some(Ok(raw))) => raw,
        };
        if let Ok(v) = serde_json::from_slice::<Value>(&first.data)
            && let Some(message) = wire::prompt_block(&v)
        {
            let usage = v.get("usageMetadata").and_then(wire::usage);
            return Err(self.refused(&message, usage));
        }
        let events = futures_util::stream::once(async move { Ok(first) }).chain(events);
        let translator = wire::ChunkTranslator::new(model, created);
        let ctx = self.ctx.clone();
        let translated =
            futures_util::stream::unfold(Some((Box::pin(events), translator)), move |state| {
                let ctx = ctx.clone();
                async move {
                    let (mut events, mut tr) = state?;
                    let out: Vec<Result<SseEvent, ProviderError>> = match events.next().await {
                        Some(Ok(raw)) => match tr.on_chunk(&raw.data) {
                            Ok(out) => {
                                return Some((
                                    out.into_iter().map(Ok).collect(),
                                    Some((events, tr)),
                                ));
                            }
                            Err(message) => cut(&tr, ctx.failed(message)),
                        },
                        // What Google reported so far is what a cut stream is billed.
                        Some(Err(e)) => cut(&tr, e),
                        None => tr.finish().into_iter().map(Ok).collect(),
                    };
                    Some((out, None))
                }
            })
            .flat_map(futures_util::stream::iter);
        Ok(UpstreamResponse::Stream(Box::pin(translated)))
    }

    async fn embeddings(
        &self,
        call: UpstreamCall,
        model: &str,
    ) -> Result<UpstreamResponse, ProviderError> {
        let bad = |m: String| self.ctx.bad_request(&m);
        // AI Studio: `embedContent` / `batchEmbedContents`; Vertex: `predict`.
        let (url, body, bound) = match self.vertex {
            None => {
                let (method, body, bound) =
                    wire::embeddings_request(&call.body, model).map_err(bad)?;
                (
                    format!("{}:{method}", self.model_url("google", model)),
                    body,
                    bound,
                )
            }
            Some(_) => {
                let (body, bound) = wire::vertex_embeddings_request(&call.body).map_err(bad)?;
                (
                    format!("{}:predict", self.model_url("google", model)),
                    body,
                    bound,
                )
            }
        };
        let base64 = call.body.get("encoding_format").and_then(Value::as_str) == Some("base64");
        let deadline = Instant::now() + call.timeout;
        let request = self.request(&call, url, &body).await?;
        let response = self
            .send_request(request, deadline, call.timeout, wire::error_body)
            .await?;
        let raw = upstream::read_body(&self.ctx, response, deadline, call.timeout).await?;
        let parsed = match self.vertex {
            None => wire::embeddings_response(&raw, model, base64, bound),
            Some(_) => wire::vertex_embeddings_response(&raw, model, base64, bound),
        };
        let (body, usage) = parsed.map_err(|e| {
            self.ctx.lost(format!(
                "answered with a success status but an unusable body: {e}"
            ))
        })?;
        Ok(UpstreamResponse::Complete {
            body: Bytes::from(body.to_string()),
            usage: Some(usage),
        })
    }

    /// Claude on Vertex: the Anthropic Messages body (no `model`, the
    /// Vertex `anthropic_version`) at `rawPredict` / `streamRawPredict`.
    async fn claude(
        &self,
        call: UpstreamCall,
        model: &str,
    ) -> Result<UpstreamResponse, ProviderError> {
        let mut body =
            to_anthropic::chat_request(&call.body).map_err(|m| self.ctx.bad_request(&m))?;
        if let Some(o) = body.as_object_mut() {
            o.remove("model");
            o.insert(
                "anthropic_version".into(),
                Value::from(VERTEX_ANTHROPIC_VERSION),
            );
        }
        let method = if call.stream {
            ":streamRawPredict"
        } else {
            ":rawPredict"
        };
        let url = format!("{}{method}", self.model_url("anthropic", model));
        let deadline = Instant::now() + call.timeout;
        let request = self.request(&call, url, &body).await?;
        let response = self
            .send_request(request, deadline, call.timeout, to_anthropic::error_body)
            .await?;
        let created = chrono::Utc::now().timestamp();
        if call.stream {
            let include_usage = call
                .body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let response =
                upstream::expect_event_stream(&self.ctx, response, deadline, call.timeout).await?;
            let translator = AnthropicChunks::new(model, created, include_usage);
            return Ok(UpstreamResponse::Stream(
                super::anthropic::translated_stream(
                    self.ctx.clone(),
                    response,
                    call.timeout,
                    translator,
                ),
            ));
        }
        let raw = upstream::read_body(&self.ctx, response, deadline, call.timeout).await?;
        let (body, usage) = to_anthropic::chat_response(&raw, created).map_err(|e| {
            self.ctx.lost(format!(
                "answered with a success status but an unusable body: {e}"
            ))
        })?;
        Ok(UpstreamResponse::Complete {
            body: Bytes::from(body.to_string()),
            usage: Some(usage),
        })
    }
}

/// The events that end a cut stream: the usage so far (if Google reported
/// any), then the error.
fn cut(tr: &wire::ChunkTranslator, e: ProviderError) -> Vec<Result<SseEvent, ProviderError>> {
    let mut out: Vec<Result<SseEvent, ProviderError>> =
        tr.usage_chunk().into_iter().map(Ok).collect();
    out.push(Err(e));
    out
}

/// Whether a Vertex model is Anthropic's (served through `rawPredict`).
fn is_claude(model: &str) -> bool {
    model.to_ascii_lowercase().starts_with("claude")
}

/// One URL path segment; `@` (Vertex's version separator, as in
/// `claude-sonnet-4@20250514`) stays as it is, as RFC 3986 allows.
fn segment(s: &str) -> String {
    s.split('@')
        .map(upstream::path_segment)
        .collect::<Vec<_>>()
        .join("@")
}

#[async_trait]
impl Provider for Google {
    fn name(&self) -> &str {
        &self.ctx.provider
    }

    /// Claude on Vertex takes the client's Messages body itself
    /// (`rawPredict`), so `/v1/messages` reaches it untranslated.
    fn serves_natively(&self, api: NativeApi, model: &str) -> bool {
        self.vertex.is_some() && api == NativeApi::Messages && is_claude(model)
    }

    /// The client's Messages body with Vertex's `anthropic_version` instead
    /// of `model` (which goes into the URL), its `anthropic-beta` header
    /// passed on; Anthropic's answer and events come back untranslated.
    async fn send_native(&self, call: NativeCall) -> Result<UpstreamResponse, ProviderError> {
        let mut body = call.body;
        let model = body
            .remove("model")
            .and_then(|m| m.as_str().map(str::to_owned))
            .filter(|m| !m.is_empty())
            .ok_or_else(|| self.ctx.bad_request("the request has no `model`"))?;
        body.insert(
            "anthropic_version".into(),
            Value::from(VERTEX_ANTHROPIC_VERSION),
        );
        let method = if call.stream {
            ":streamRawPredict"
        } else {
            ":rawPredict"
        };
        let url = format!("{}{method}", self.model_url("anthropic", &model));
        let upstream_call = UpstreamCall {
            endpoint: Endpoint::ChatCompletions,
            body: serde_json::Map::new(),
            stream: call.stream,
            timeout: call.timeout,
            request_id: call.request_id,
        };
        let mut request = self
            .request(&upstream_call, url, &Value::Object(body))
            .await?;
        for (name, value) in &call.headers {
            if name.as_str() == "anthropic-beta" {
                request = request.header(name.clone(), value.clone());
            }
        }
        super::native::exchange(
            &self.ctx,
            request,
            NativeApi::Messages,
            call.stream,
            call.timeout,
            super::native::messages_usage,
        )
        .await
    }

    async fn send(&self, call: UpstreamCall) -> Result<UpstreamResponse, ProviderError> {
        let model = call
            .body
            .get("model")
            .and_then(Value::as_str)
            .map(|m| m.strip_prefix("models/").unwrap_or(m).to_owned())
            .filter(|m| !m.is_empty())
            .ok_or_else(|| self.ctx.bad_request("the request has no `model`"))?;
        match call.endpoint {
            Endpoint::ChatCompletions if self.vertex.is_some() && is_claude(&model) => {
                self.claude(call, &model).await
            }
            Endpoint::ChatCompletions => self.chat(call, &model).await,
            // Gemini and Claude on Vertex have no completions API: the
            // prompt goes as one chat turn, the answer comes back as text.
            Endpoint::Completions => {
                let call = completions::chat_call(call).map_err(|m| self.ctx.bad_request(&m))?;
                let answer = if self.vertex.is_some() && is_claude(&model) {
                    self.claude(call, &model).await?
                } else {
                    self.chat(call, &model).await?
                };
                completions::answer(answer).map_err(|m| self.ctx.failed(m))
            }
            Endpoint::Embeddings => self.embeddings(call, &model).await,
        }
    }
}
