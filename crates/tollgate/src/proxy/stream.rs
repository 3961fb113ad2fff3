//! Streaming answers: events go to the client as they arrive, never
//! buffered whole. On the way the usage is picked up (and its extra chunk
//! stripped for clients that did not ask for it) and the generated text
//! is counted, so a stream is billed even when it is cut short: when the
//! stream ends, fails, or its client hangs up, the books are closed (the
//! ledger row at once, the counters on a tracked task that outlives the
//! connection).

use std::borrow::Cow;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use http::{HeaderName, HeaderValue, StatusCode, header};
use serde::Deserialize;

use super::pipeline::{Books, CLIENT_CLOSED, Ingress};
use crate::error::{ApiError, ErrorFormat};
use crate::providers::native::{self, StreamMeter};
use crate::providers::sse::WireUsage;
use crate::providers::translate::responses::ResponsesStreamTranslator;
use crate::providers::{
    EventStream, NativeApi, ProviderError, SseEvent, Usage, translate::MessagesStreamTranslator,
};

pub(super) fn respond(
    books: Books,
    ingress: Ingress,
    native: bool,
    events: EventStream,
    include_usage: bool,
    headers: Vec<(HeaderName, HeaderValue)>,
) -> Response {
    let encoder = match ingress {
        Ingress::OpenAi(_) => Encoder::OpenAi,
        Ingress::Anthropic if native => Encoder::Native(NativeApi::Messages, Box::default()),
        Ingress::Anthropic => {
            Encoder::Anthropic(Box::new(MessagesStreamTranslator::new(&books.model)))
        }
        Ingress::Responses if native => Encoder::Native(NativeApi::Responses, Box::default()),
        Ingress::Responses => {
            Encoder::Responses(Box::new(ResponsesStreamTranslator::new(&books.model)))
        }
    };
    let metered = Metered {
        inner: events,
        books: Some(books),
        strip_usage: !include_usage,
        encoder,
        usage: None,
        text: String::new(),
        ended: false,
    };
    let mut resp = (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(metered),
    )
        .into_response();
    for (name, value) in headers {
        resp.headers_mut().insert(name, value);
    }
    resp
}

/// How events are written to the client.
enum Encoder {
    /// As they came: canonical OpenAI chunks.
    OpenAi,
    /// Translated to Anthropic Messages events.
    Anthropic(Box<MessagesStreamTranslator>),
    /// Translated to Responses API events.
    Responses(Box<ResponsesStreamTranslator>),
    /// A native stream's own events, as they came; the meter reads their
    /// usage and text on the way.
    Native(NativeApi, Box<StreamMeter>),
}

impl Encoder {
    fn data(&mut self, data: &[u8]) -> Bytes {
        match self {
            Encoder::OpenAi => frame(data),
            Encoder::Anthropic(t) => t.chunk(data),
            Encoder::Responses(t) => t.chunk(data),
            // Canonical chunks never come from a native target.
            Encoder::Native(..) => Bytes::new(),
        }
    }

    /// One event of a native stream: metered, and passed on unchanged.
    fn native(&mut self, event: Option<&str>, data: &[u8]) -> Bytes {
        match self {
            Encoder::Native(api, meter) => {
                meter.observe(*api, data);
                native::frame(event, data)
            }
            // A native event on a translated stream is not expected; it is
            // dropped rather than shown in the wrong format.
            _ => Bytes::new(),
        }
    }

    fn done(&mut self) -> Bytes {
        match self {
            Encoder::OpenAi => Bytes::from_static(b"data: [DONE]\n\n"),
            Encoder::Anthropic(t) => t.finish(),
            Encoder::Responses(t) => t.finish(),
            // The provider's own terminal event went out already.
            Encoder::Native(..) => Bytes::new(),
        }
    }

    fn error(&mut self, err: &ApiError) -> Bytes {
        match self {
            Encoder::OpenAi => frame(err.body(ErrorFormat::OpenAi).to_string().as_bytes()),
            Encoder::Anthropic(_)
            | Encoder::Native(NativeApi::Messages | NativeApi::CountTokens, _) => {
                let body = err.body(ErrorFormat::Anthropic);
                Bytes::from(format!("event: error\ndata: {body}\n\n"))
            }
            // The Responses API's `error` event.
            Encoder::Responses(_) | Encoder::Native(NativeApi::Responses, _) => {
                let body = serde_json::json!({
                    "type": "error",
                    "code": err.code(),
                    "message": err.to_string(),
                    "param": null,
                });
                Bytes::from(format!("event: error\ndata: {body}\n\n"))
            }
        }
    }
}

fn frame(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 8);
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
    out.freeze()
}

/// The client-bound stream. Holds the books until the stream ends.
struct Metered {
    inner: EventStream,
    books: Option<Books>,
    strip_usage: bool,
    encoder: Encoder,
    usage: Option<Usage>,
    /// Generated text so far, to bill a stream that ends without usage.
    text: String,
    ended: bool,
}

impl Metered {
    /// Picks usage and generated text out of one chunk; `true` if the chunk
    /// carries nothing but usage.
    fn observe(&mut self, data: &[u8]) -> bool {
        let Ok(chunk) = serde_json::from_slice::<ChunkView<'_>>(data) else {
            return false;
        };
        for choice in &chunk.choices {
            if let Some(t) = &choice.text {
                self.text.push_str(t);
            }
            if let Some(delta) = &choice.delta {
                if let Some(c) = &delta.content {
                    self.text.push_str(c);
                }
                for call in delta.tool_calls.iter().flatten() {
                    if let Some(args) = call.function.as_ref().and_then(|f| f.arguments.as_ref()) {
                        self.text.push_str(args);
                    }
                }
            }
        }
        match chunk.usage {
            Some(u) => {
                self.usage = Some(u.into_usage());
                chunk.choices.is_empty()
            }
            None => false,
        }
    }

    /// Ends the stream with `err` as its last event. The `200` went out
    /// with the headers, but the ledger records what the client got in the
    /// end: this failure, billed for what was streamed before it.
    fn fail(&mut self, err: &ApiError) -> Bytes {
        let out = self.encoder.error(err);
        self.finish(err.status().as_u16(), Some(err.code()));
        out
    }

    /// Closes the books once, on a tracked task (the connection may be gone).
    fn finish(&mut self, status: u16, error_code: Option<&'static str>) {
        self.ended = true;
        let Some(books) = self.books.take() else {
            return;
        };
        let usage = match (&self.encoder, self.usage) {
            (Encoder::Native(_, meter), _) => {
                meter.usage(|| books.input_tokens(), books.text_tokens(&meter.text))
            }
            (_, Some(usage)) => usage,
            (_, None) => Usage {
                prompt_tokens: books.input_tokens(),
                completion_tokens: books.text_tokens(&self.text),
                ..Usage::default()
            },
        };
        books.close(status, usage, error_code);
    }
}

impl Stream for Metered {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(SseEvent::Data(data)))) => {
                    if let Some(books) = this.books.as_mut() {
                        books.cache.capture_chunk(&data);
                    }
                    if this.observe(&data) && this.strip_usage {
                        continue;
                    }
                    let out = this.encoder.data(&data);
                    if !out.is_empty() {
                        if let Some(books) = this.books.as_mut()
                            && books.first_byte.is_none()
                        {
                            books.first_byte = Some(books.started.elapsed());
                        }
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Ok(SseEvent::Native { event, data }))) => {
                    let out = this.encoder.native(event.as_deref(), &data);
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Ok(SseEvent::Done))) => {
                    let out = this.encoder.done();
                    this.finish(200, None);
                    return Poll::Ready(Some(Ok(out)));
                }
                Poll::Ready(Some(Err(e))) => {
                    let err = match e {
                        ProviderError::Timeout { .. } => {
                            ApiError::UpstreamTimeout(format!("{e}; the stream was cut"))
                        }
                        other => ApiError::UpstreamError(format!("{other}; the stream was cut")),
                    };
                    return Poll::Ready(Some(Ok(this.fail(&err))));
                }
                Poll::Ready(None) => {
                    // The provider closed cleanly but without `[DONE]` (or
                    // `message_stop`): the answer is incomplete, so the
                    // client is told, as for a cut.
                    let err = ApiError::UpstreamError(
                        "the provider ended the stream before it was complete (no `[DONE]`)".into(),
                    );
                    return Poll::Ready(Some(Ok(this.fail(&err))));
                }
            }
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        if self.books.is_some() {
            self.finish(CLIENT_CLOSED, Some("client_closed"));
        }
    }
}

#[derive(Deserialize)]
struct ChunkView<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChoiceView<'a>>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(default, borrow)]
    delta: Option<DeltaView<'a>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCallView<'a>>>,
}

#[derive(Deserialize)]
struct ToolCallView<'a> {
    #[serde(default, borrow)]
    function: Option<FunctionView<'a>>,
}

#[derive(Deserialize)]
struct FunctionView<'a> {
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}
