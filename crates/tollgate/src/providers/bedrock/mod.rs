//! Kind `bedrock`: AWS Bedrock's runtime API, every request SigV4-signed
//! ([`sign`]). Chat goes through `Converse` / `ConverseStream`
//! ([`converse`] translates both ways, [`eventstream`] unframes the
//! stream), so every ingress reaches every Bedrock model in the canonical
//! OpenAI format. Claude can also be called natively, with an Anthropic
//! Messages body, through `InvokeModel` / `InvokeModelWithResponseStream`
//! ([`invoke`], the [`super::claude_native::NativeMessages`] capability).
//! Embeddings go to Titan and Cohere models through `InvokeModel` ([`embed`]).

pub(crate) mod converse;
mod embed;
pub(crate) mod eventstream;
pub(crate) mod invoke;
mod sign;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures_util::{Stream, StreamExt};
use http::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;
use tokio::time::Instant;

use super::translate::completions;
use super::upstream::{self, Ctx, path_segment};
use super::{
    Endpoint, EventStream, NativeApi, NativeCall, Provider, ProviderError, SseEvent, UpstreamCall,
    UpstreamResponse,
};
use crate::config::ProviderConfig;

pub(crate) const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

pub(crate) struct Bedrock {
    ctx: Ctx,
    base_url: String,
    /// `None` only for a config built without its `bedrock` section, which
    /// validation never lets through; each call then fails with a message.
    signer: Option<sign::Signer>,
    http: super::Http,
}

impl Bedrock {
    pub fn new(config: &ProviderConfig, http: super::Http) -> Self {
        // The secret key is what `Ctx` blanks out of every message.
        let secret = config.bedrock.as_ref().map(|b| b.secret_access_key.clone());
        Bedrock {
            ctx: Ctx::new(&config.name, secret),
            base_url: config.base_url.trim_end_matches('/').to_owned(),
            signer: config.bedrock.as_ref().map(sign::Signer::new),
            http,
        }
    }

    /// A signed `POST {base_url}/model/{model}/{operation}` of `body`. The
    /// model id is percent-encoded as one path segment (`:` and the `/` of
    /// an inference-profile ARN included), as the AWS SDKs do.
    pub(crate) fn signed_post(
        &self,
        model: &str,
        operation: &str,
        body: Vec<u8>,
        stream: bool,
        request_id: &str,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let Some(signer) = &self.signer else {
            return Err(self.ctx.failed(format!(
                "provider `{}` has no AWS credentials configured",
                self.ctx.provider
            )));
        };
        if model.is_empty() {
            return Err(self
                .ctx
                .bad_request("the request has no `model`; Bedrock needs its model id"));
        }
        let url = format!(
            "{}/model/{}/{operation}",
            self.base_url,
            path_segment(model)
        );
        let url = reqwest::Url::parse(&url).map_err(|e| {
            self.ctx.failed(format!(
                "`base_url` of provider `{}` does not make a valid URL: {e}",
                self.ctx.provider
            ))
        })?;
        let accept = if stream {
            EVENT_STREAM
        } else {
            "application/json"
        };
        let headers = [("content-type", "application/json"), ("accept", accept)];
        let signed = signer
            .sign(url.as_str(), &headers, &body, SystemTime::now())
            .map_err(|m| self.ctx.failed(m))?;
        let mut request = self
            .http
            .get()
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, accept)
            .body(body);
        for (name, value) in signed {
            request = request.header(name, value);
        }
        if let Some(id) = upstream::request_id_header(request_id) {
            request = request.header("x-request-id", id);
        }
        Ok(request)
    }

    /// Sends `request`; a Bedrock 4xx body (`{"message": …}`) comes back
    /// reworded in OpenAI's error shape.
    pub(crate) async fn send_signed(
        &self,
        request: reqwest::RequestBuilder,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<reqwest::Response, ProviderError> {
        match upstream::send(&self.ctx, request, deadline, timeout).await {
            Err(ProviderError::Rejected {
                provider,
                status,
                body,
                ..
            }) => Err(ProviderError::Rejected {
                provider,
                status,
                body: converse::error_body(&body, None),
                content_type: Some(http::HeaderValue::from_static("application/json")),
            }),
            other => other,
        }
    }
}

impl Bedrock {
    /// `/v1/embeddings` through `InvokeModel` (see [`embed`]).
    async fn embed(
        &self,
        call: &UpstreamCall,
        model: &str,
        family: embed::Family,
    ) -> Result<UpstreamResponse, ProviderError> {
        let texts = embed::inputs(&call.body).map_err(|m| self.ctx.bad_request(&m))?;
        let deadline = Instant::now() + call.timeout;
        let mut vectors = Vec::with_capacity(texts.len());
        let mut tokens = Some(0u64);
        for (i, req) in embed::requests(family, &call.body, &texts)
            .into_iter()
            .enumerate()
        {
            // After a first answer, a failure loses what AWS already billed.
            let lost = |e: ProviderError| match e {
                e @ ProviderError::Rejected { .. } if i == 0 => e,
                e if i == 0 => e,
                e => self.ctx.lost(e.to_string()),
            };
            let body = serde_json::to_vec(&req).map_err(|e| {
                self.ctx
                    .failed(format!("could not encode the request body: {e}"))
            })?;
            let request = self.signed_post(model, "invoke", body, false, &call.request_id)?;
            let response = self
                .send_signed(request, deadline, call.timeout)
                .await
                .map_err(lost)?;
            let counted = response
                .headers()
                .get("x-amzn-bedrock-input-token-count")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let raw = upstream::read_body(&self.ctx, response, deadline, call.timeout)
                .await
                .map_err(lost)?;
            let (v, reported) = embed::vectors(family, &raw).map_err(|e| {
                self.ctx.lost(format!(
                    "answered with a success status but an unusable body: {e}"
                ))
            })?;
            vectors.extend(v);
            tokens = match (tokens, reported.or(counted)) {
                (Some(sum), Some(n)) => Some(sum.saturating_add(n)),
                _ => None,
            };
        }
        let usage = tokens.map(|prompt_tokens| super::Usage {
            prompt_tokens,
            ..super::Usage::default()
        });
        let body = embed::openai_list(&call.body, model, &vectors, usage);
        Ok(UpstreamResponse::Complete {
            body: bytes::Bytes::from(body.to_string()),
            usage,
        })
    }
}

#[async_trait]
impl Provider for Bedrock {
    fn name(&self) -> &str {
        &self.ctx.provider
    }

    async fn send(&self, call: UpstreamCall) -> Result<UpstreamResponse, ProviderError> {
        let model = call
            .body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if call.endpoint == Endpoint::Embeddings
            && let Some(family) = embed::Family::of(&model)
        {
            return self.embed(&call, &model, family).await;
        }
        // Converse is chat only: a completions prompt goes as one chat
        // turn, the answer comes back as text (the send is boxed by
        // `async_trait`, so calling it again here is fine).
        if call.endpoint == Endpoint::Completions {
            let call = completions::chat_call(call).map_err(|m| self.ctx.bad_request(&m))?;
            let answer = self.send(call).await?;
            return completions::answer(answer).map_err(|m| self.ctx.failed(m));
        }
        if call.endpoint != Endpoint::ChatCompletions {
            return Err(self.ctx.bad_request(&format!(
                "`/v1{}` is not supported by model `{}` of provider `{}` (kind `bedrock`): use `/v1/chat/completions` or `/v1/messages`, or an Amazon Titan or Cohere model for `/v1/embeddings`",
                call.endpoint.path(),
                crate::types::clip(&model),
                self.ctx.provider
            )));
        }
        let body = converse::request(&call.body).map_err(|m| self.ctx.bad_request(&m))?;
        let body = serde_json::to_vec(&body).map_err(|e| {
            self.ctx
                .failed(format!("could not encode the request body: {e}"))
        })?;
        let operation = if call.stream {
            "converse-stream"
        } else {
            "converse"
        };
        let deadline = Instant::now() + call.timeout;
        let request = self.signed_post(&model, operation, body, call.stream, &call.request_id)?;
        let response = self.send_signed(request, deadline, call.timeout).await?;
        let created = chrono::Utc::now().timestamp();
        let id = format!("chatcmpl-{}", call.request_id);
        if call.stream {
            let include_usage = call
                .body
                .get("stream_options")
                .and_then(|o| o.get("include_usage"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let response =
                upstream::expect_event_stream(&self.ctx, response, deadline, call.timeout).await?;
            let translator = converse::StreamTranslator::new(&id, &model, created, include_usage);
            let frames = eventstream::frames(self.ctx.clone(), response, call.timeout);
            return Ok(UpstreamResponse::Stream(translated(
                self.ctx.clone(),
                frames,
                translator,
            )));
        }
        let raw = upstream::read_body(&self.ctx, response, deadline, call.timeout).await?;
        let (body, usage) = converse::response(&raw, &id, &model, created).map_err(|e| {
            self.ctx.lost(format!(
                "answered with a success status but an unusable body: {e}"
            ))
        })?;
        Ok(UpstreamResponse::Complete {
            body: bytes::Bytes::from(body.to_string()),
            usage,
        })
    }

    fn native_messages(&self) -> Option<&dyn super::claude_native::NativeMessages> {
        Some(self)
    }

    /// Claude on Bedrock takes the client's Messages body itself
    /// (`InvokeModel`), so `/v1/messages` reaches it untranslated; other
    /// Bedrock models speak only Converse.
    fn serves_natively(&self, api: NativeApi, model: &str) -> bool {
        api == NativeApi::Messages && model.contains("anthropic.")
    }

    async fn send_native(&self, call: NativeCall) -> Result<UpstreamResponse, ProviderError> {
        let model = call
            .body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        // `anthropic-beta: a,b` (one header or several) goes into the body's
        // `anthropic_beta` list on Bedrock.
        let betas = call
            .headers
            .iter()
            .filter(|(name, _)| name.as_str() == "anthropic-beta")
            .filter_map(|(_, v)| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|b| b.trim().to_owned())
            .filter(|b| !b.is_empty())
            .collect();
        let native = super::claude_native::NativeCall {
            body: call.body,
            model,
            stream: call.stream,
            betas,
            timeout: call.timeout,
            request_id: call.request_id,
        };
        use super::claude_native::{NativeMessages as _, NativeResponse};
        Ok(match self.messages(native).await? {
            NativeResponse::Complete { body, usage } => UpstreamResponse::Complete { body, usage },
            NativeResponse::Stream(events) => UpstreamResponse::Stream(Box::pin(
                events
                    .map(|e| {
                        e.map(|e| SseEvent::Native {
                            event: e.event,
                            data: e.data,
                        })
                    })
                    .chain(futures_util::stream::once(async { Ok(SseEvent::Done) })),
            )),
        })
    }
}

struct Translating<S> {
    frames: std::pin::Pin<Box<S>>,
    translator: converse::StreamTranslator,
    ready: VecDeque<Result<SseEvent, ProviderError>>,
    ended: bool,
    ctx: Ctx,
}

/// `ConverseStream` frames as canonical events, ending at `[DONE]`.
fn translated<S>(ctx: Ctx, frames: S, translator: converse::StreamTranslator) -> EventStream
where
    S: Stream<Item = Result<eventstream::Frame, ProviderError>> + Send + 'static,
{
    let state = Translating {
        frames: Box::pin(frames),
        translator,
        ready: VecDeque::new(),
        ended: false,
        ctx,
    };
    let events = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(item) = st.ready.pop_front() {
                return Some((item, st));
            }
            if st.ended {
                return None;
            }
            match st.frames.next().await {
                Some(Ok(frame)) => match st.translator.on_frame(&frame) {
                    Ok(events) => st.ready.extend(events.into_iter().map(Ok)),
                    Err(message) => {
                        st.ended = true;
                        st.ready.push_back(Err(st.ctx.failed(message)));
                    }
                },
                Some(Err(e)) => {
                    st.ended = true;
                    st.ready.push_back(Err(e));
                }
                None => {
                    st.ended = true;
                    if let Some(done) = st.translator.finish() {
                        st.ready.push_back(Ok(done));
                    }
                }
            }
        }
    });
    Box::pin(upstream::end_after(events, |item| {
        matches!(item, Ok(SseEvent::Done))
    }))
}
