//! Kind `openai`: any OpenAI-compatible API (OpenAI, vLLM, Ollama, LM
//! Studio…). The canonical body goes out as is and the answer comes back as
//! is; only usage is read from it. Azure differs in URL and key header only
//! and reuses this provider through [`Dialect::Azure`].

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use http::HeaderName;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use tokio::time::Instant;

use super::native::{self, NativeApi, NativeCall};
use super::sse::{RawEvent, usage_from_body};
use super::upstream::{self, Ctx};
use super::{
    Endpoint, EventStream, Provider, ProviderError, SseEvent, UpstreamCall, UpstreamResponse,
};
use crate::config::ProviderConfig;

/// Where the request goes and how the key is presented.
pub(crate) enum Dialect {
    /// `POST {base_url}{endpoint}`, `Authorization: Bearer <key>`.
    OpenAi,
    /// `POST {base_url}/openai/deployments/{model}{endpoint}?api-version=…`, `api-key: <key>`.
    Azure { api_version: String },
}

pub(crate) struct OpenAiCompatible {
    ctx: Ctx,
    base_url: String,
    dialect: Dialect,
    http: super::Http,
    /// The three endpoint URLs of the OpenAI dialect, parsed once rather
    /// than on every request (URL parsing showed in the request profile).
    endpoints: Option<[reqwest::Url; 3]>,
    /// The key header, built once; `None` without a key or when the key
    /// cannot be a header value (reported per request).
    auth: Option<(HeaderName, http::HeaderValue)>,
    /// Azure with `entra:`: a bearer token per request instead of a key.
    entra: Option<super::entra::Entra>,
}

impl OpenAiCompatible {
    pub fn new(config: &ProviderConfig, dialect: Dialect, http: super::Http) -> Self {
        let ctx = Ctx::new(&config.name, config.api_key.clone());
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let endpoints = match dialect {
            Dialect::OpenAi => {
                let parse =
                    |e: Endpoint| reqwest::Url::parse(&format!("{base_url}{}", e.path())).ok();
                match (
                    parse(Endpoint::ChatCompletions),
                    parse(Endpoint::Completions),
                    parse(Endpoint::Embeddings),
                ) {
                    (Some(a), Some(b), Some(c)) => Some([a, b, c]),
                    _ => None,
                }
            }
            Dialect::Azure { .. } => None,
        };
        let entra = config
            .entra
            .as_ref()
            .map(|e| super::entra::Entra::new(&config.name, e, http.clone(), config.timeout));
        let auth = ctx.key().and_then(|key| {
            let (name, value) = match dialect {
                Dialect::OpenAi => (AUTHORIZATION, format!("Bearer {key}")),
                Dialect::Azure { .. } => (HeaderName::from_static("api-key"), key.to_owned()),
            };
            upstream::secret_header(&value).map(|v| (name, v))
        });
        OpenAiCompatible {
            ctx,
            base_url,
            dialect,
            http,
            endpoints,
            auth,
            entra,
        }
    }

    fn url(&self, call: &UpstreamCall) -> Result<reqwest::Url, ProviderError> {
        if let Some(urls) = &self.endpoints {
            let i = match call.endpoint {
                Endpoint::ChatCompletions => 0,
                Endpoint::Completions => 1,
                Endpoint::Embeddings => 2,
            };
            return Ok(urls[i].clone());
        }
        let url = match &self.dialect {
            Dialect::OpenAi => format!("{}{}", self.base_url, call.endpoint.path()),
            Dialect::Azure { api_version } => {
                super::azure::url(&self.ctx, &self.base_url, api_version, call)?
            }
        };
        reqwest::Url::parse(&url).map_err(|e| {
            self.ctx.failed(format!(
                "`base_url` of provider `{}` does not make a valid URL: {e}",
                self.ctx.provider
            ))
        })
    }

    fn request(
        &self,
        call: &UpstreamCall,
        bearer: Option<http::HeaderValue>,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let url = self.url(call)?;
        let body = serde_json::to_vec(&call.body).map_err(|e| {
            self.ctx
                .failed(format!("could not encode the request body: {e}"))
        })?;
        let mut request = self
            .http
            .get()
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        match (&self.auth, self.ctx.key()) {
            _ if bearer.is_some() => {
                if let Some(token) = bearer {
                    request = request.header(AUTHORIZATION, token);
                }
            }
            (Some((name, value)), _) => request = request.header(name.clone(), value.clone()),
            (None, Some(_)) => {
                return Err(self.ctx.failed(format!(
                    "the `api_key` of provider `{}` holds characters an HTTP header cannot carry",
                    self.ctx.provider
                )));
            }
            (None, None) => {}
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

impl OpenAiCompatible {
    /// `{base_url}/responses`; on Azure the v1 data plane,
    /// `{base_url}/openai/v1/responses`, where the body's `model` names the
    /// deployment and no `api-version` is taken.
    fn native_url(&self, api: NativeApi) -> String {
        match self.dialect {
            Dialect::OpenAi => format!("{}{}", self.base_url, api.path()),
            Dialect::Azure { .. } => format!("{}/openai/v1{}", self.base_url, api.path()),
        }
    }
}

#[async_trait]
impl Provider for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.ctx.provider
    }

    fn serves_natively(&self, api: NativeApi, _model: &str) -> bool {
        api == NativeApi::Responses
    }

    /// The client's Responses body goes out as it came (model and cap set
    /// by the gateway); the answer and every stream event come back as is.
    async fn send_native(&self, call: NativeCall) -> Result<UpstreamResponse, ProviderError> {
        let body = serde_json::to_vec(&call.body).map_err(|e| {
            self.ctx
                .failed(format!("could not encode the request body: {e}"))
        })?;
        let mut request = self
            .http
            .get()
            .post(self.native_url(call.api))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        match (&self.auth, self.ctx.key()) {
            (Some((name, value)), _) => request = request.header(name.clone(), value.clone()),
            (None, Some(_)) => {
                return Err(self.ctx.failed(format!(
                    "the `api_key` of provider `{}` holds characters an HTTP header cannot carry",
                    self.ctx.provider
                )));
            }
            (None, None) => {}
        }
        for (name, value) in &call.headers {
            request = request.header(name.clone(), value.clone());
        }
        if let Some(id) = upstream::request_id_header(&call.request_id) {
            request = request.header("x-request-id", id);
        }
        if call.stream {
            request = request.header(ACCEPT, "text/event-stream");
        }
        native::exchange(
            &self.ctx,
            request,
            call.api,
            call.stream,
            call.timeout,
            native::responses_body_usage,
        )
        .await
    }

    async fn send(&self, call: UpstreamCall) -> Result<UpstreamResponse, ProviderError> {
        let bearer = match &self.entra {
            Some(entra) => Some(entra.authorization().await?),
            None => None,
        };
        let deadline = Instant::now() + call.timeout;
        let request = self.request(&call, bearer)?;
        let response = match upstream::send(&self.ctx, request, deadline, call.timeout).await {
            Err(e @ ProviderError::Credentials { .. }) => {
                if let Some(entra) = &self.entra {
                    entra.invalidate();
                }
                return Err(e);
            }
            other => other?,
        };
        if call.stream {
            let response =
                upstream::expect_event_stream(&self.ctx, response, deadline, call.timeout).await?;
            return Ok(UpstreamResponse::Stream(openai_stream(
                self.ctx.clone(),
                response,
                call.timeout,
            )));
        }
        let body = upstream::read_body(&self.ctx, response, deadline, call.timeout).await?;
        let usage = usage_from_body(&body).map_err(|e| {
            self.ctx.lost(format!(
                "answered with a success status but a body that is not a JSON object: {e}"
            ))
        })?;
        Ok(UpstreamResponse::Complete { body, usage })
    }
}

/// OpenAI's SSE as canonical events: `data: [DONE]` ends the stream, every
/// other `data` payload is passed on untouched.
fn openai_stream(ctx: Ctx, response: reqwest::Response, idle: Duration) -> EventStream {
    let events = upstream::sse_events(ctx, response, idle).map(|item| item.map(to_event));
    let events = upstream::end_after(events, |item| matches!(item, Ok(SseEvent::Done)));
    Box::pin(events)
}

fn to_event(raw: RawEvent) -> SseEvent {
    if raw.data.as_ref() == b"[DONE]" {
        SseEvent::Done
    } else {
        SseEvent::Data(raw.data)
    }
}
