//! Provider tests against small axum servers on 127.0.0.1:0 that record
//! what they received and answer what each test scripts.

mod anthropic;
mod mock;
mod openai;
mod recorded;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderMap;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use super::{Endpoint, EventStream, ProviderError, SseEvent, UpstreamCall, UpstreamResponse};
use crate::config::{ProviderConfig, ProviderKind};
use crate::types::Secret;

pub(super) const KEY: &str = "sk-provider-SECRET-0123456789";

#[derive(Debug, Clone)]
pub(super) struct Recorded {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

pub(super) struct TestServer {
    pub base_url: String,
    pub seen: Arc<Mutex<Vec<Recorded>>>,
}

/// Serves every request with `respond`, recording it first.
pub(super) async fn serve<F, Fut>(respond: F) -> TestServer
where
    F: Fn(Recorded) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let seen: Arc<Mutex<Vec<Recorded>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: Request| {
        let respond = respond.clone();
        let log = log.clone();
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let headers = req.headers().clone();
            let body = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap();
            let rec = Recorded {
                path,
                headers,
                body,
            };
            log.lock().push(rec.clone());
            respond(rec).await
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    TestServer {
        base_url: format!("http://{addr}"),
        seen,
    }
}

pub(super) fn response(status: u16, content_type: &str, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(body.into())
        .unwrap()
}

pub(super) fn config(kind: ProviderKind, base_url: &str, key: Option<&str>) -> ProviderConfig {
    ProviderConfig {
        name: "up".into(),
        kind,
        base_url: base_url.to_owned(),
        api_key: key.map(|k| Secret::new(k.to_owned())),
        timeout: Duration::from_secs(5),
        api_version: Some("2024-10-21".into()),
        vertex: None,
        bedrock: None,
        entra: None,
    }
}

pub(super) fn call(endpoint: Endpoint, body: Value, stream: bool) -> UpstreamCall {
    let body: Map<String, Value> = body.as_object().unwrap().clone();
    UpstreamCall {
        endpoint,
        body,
        stream,
        timeout: Duration::from_secs(5),
        request_id: "req-42".into(),
    }
}

pub(super) fn expect_complete(
    r: Result<UpstreamResponse, ProviderError>,
) -> (Bytes, Option<super::Usage>) {
    match r {
        Ok(UpstreamResponse::Complete { body, usage }) => (body, usage),
        Ok(UpstreamResponse::Stream(_)) => panic!("expected a complete answer, got a stream"),
        Err(e) => panic!("expected a complete answer, got {e:?}"),
    }
}

pub(super) fn expect_stream(r: Result<UpstreamResponse, ProviderError>) -> EventStream {
    match r {
        Ok(UpstreamResponse::Stream(s)) => s,
        Ok(UpstreamResponse::Complete { body, .. }) => panic!("expected a stream, got {body:?}"),
        Err(e) => panic!("expected a stream, got {e:?}"),
    }
}

/// Every item of a stream (bounded by a generous timeout).
pub(super) async fn collect(mut s: EventStream) -> Vec<Result<SseEvent, ProviderError>> {
    let mut out = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .unwrap()
    {
        out.push(item);
    }
    out
}

pub(super) fn data_json(event: &SseEvent) -> Value {
    match event {
        SseEvent::Data(d) => serde_json::from_slice(d).unwrap(),
        SseEvent::Done => panic!("expected data, got Done"),
        SseEvent::Native { data, .. } => serde_json::from_slice(data).unwrap(),
    }
}

/// The key must not show in any form of the error.
pub(super) fn assert_no_key(e: &ProviderError) {
    let shown = format!("{e} / {e:?}");
    assert!(!shown.contains(KEY), "the provider key leaked: {shown}");
    if let ProviderError::Rejected { body, .. } = e {
        assert!(
            !String::from_utf8_lossy(body).contains(KEY),
            "the provider key leaked in the body"
        );
    }
}

#[test]
fn output_cap_field_follows_the_model_family() {
    use super::output_cap_field;
    let chat = Endpoint::ChatCompletions;
    for model in [
        "o1",
        "o1-mini",
        "o3-mini",
        "o4-mini-2025-04-16",
        "gpt-5",
        "gpt-5.1",
        "gpt-5-mini",
        "ft:o4-mini:acme::x",
        "openai/o3",
    ] {
        assert_eq!(
            output_cap_field(chat, model),
            "max_completion_tokens",
            "{model}"
        );
    }
    for model in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-50x",
        "o10",
        "llama-3",
        "claude-3-5-haiku",
    ] {
        assert_eq!(output_cap_field(chat, model), "max_tokens", "{model}");
    }
    assert_eq!(
        output_cap_field(Endpoint::Completions, "o3-mini"),
        "max_tokens"
    );
}
