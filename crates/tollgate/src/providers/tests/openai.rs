//! Kinds `openai` and `azure` against a scripted server.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Body;
use futures_util::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::*;
use crate::providers::{Usage, build, http_client};

const CHAT_BODY: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10,"prompt_tokens_details":{"cached_tokens":2}}}"#;

fn chat() -> Value {
    json!({"model": "gpt-x", "messages": [{"role": "user", "content": "hello"}], "temperature": 0.2, "custom_field": [1, 2]})
}

#[tokio::test]
async fn sends_key_and_request_id_and_nothing_else() {
    let server = serve(|_| async { response(200, "application/json", CHAT_BODY) }).await;
    let provider = build(
        &config(
            ProviderKind::OpenAi,
            &format!("{}/v1", server.base_url),
            Some(KEY),
        ),
        http_client(),
    );
    let (body, usage) = expect_complete(
        provider
            .send(call(Endpoint::ChatCompletions, chat(), false))
            .await,
    );
    // The body comes back byte for byte; usage is read from it.
    assert_eq!(body, CHAT_BODY.as_bytes());
    assert_eq!(
        usage,
        Some(Usage {
            prompt_tokens: 7,
            completion_tokens: 3,
            cached_tokens: 2,
            ..Usage::default()
        })
    );

    let seen = server.seen.lock()[0].clone();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(seen.headers["x-request-id"], "req-42");
    assert_eq!(seen.headers["content-type"], "application/json");
    // The canonical body goes out as is, unknown fields included.
    assert_eq!(seen.json(), chat());
    let names: BTreeSet<&str> = seen.headers.keys().map(|k| k.as_str()).collect();
    let allowed: BTreeSet<&str> = [
        "host",
        "content-type",
        "content-length",
        "authorization",
        "x-request-id",
        "accept",
        "user-agent",
    ]
    .into();
    assert!(
        names.is_subset(&allowed),
        "unexpected headers sent upstream: {names:?}"
    );
}

#[tokio::test]
async fn no_key_means_no_authorization_header() {
    let server = serve(|_| async { response(200, "application/json", CHAT_BODY) }).await;
    let provider = build(
        &config(ProviderKind::OpenAi, &server.base_url, None),
        http_client(),
    );
    for endpoint in [Endpoint::Completions, Endpoint::Embeddings] {
        expect_complete(
            provider
                .send(call(endpoint, json!({"model": "m", "input": "x"}), false))
                .await,
        );
    }
    let seen = server.seen.lock().clone();
    assert_eq!(seen[0].path, "/completions");
    assert_eq!(seen[1].path, "/embeddings");
    assert!(
        seen.iter()
            .all(|r| !r.headers.contains_key("authorization"))
    );
}

#[tokio::test]
async fn stream_arrives_event_by_event() {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    let rx = std::sync::Arc::new(Mutex::new(Some(rx)));
    let server = serve(move |_| {
        let rx = rx.clone();
        async move {
            let rx = rx.lock().take().unwrap();
            response(
                200,
                "text/event-stream",
                Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
            )
        }
    })
    .await;
    let provider = build(
        &config(ProviderKind::OpenAi, &server.base_url, Some(KEY)),
        http_client(),
    );
    let mut body = chat();
    body["stream"] = json!(true);
    let mut events = expect_stream(
        provider
            .send(call(Endpoint::ChatCompletions, body, true))
            .await,
    );
    assert_eq!(server.seen.lock()[0].headers["accept"], "text/event-stream");

    // Each event is yielded while the server still holds back the next one:
    // nothing waits for the whole body. The second arrives split mid-line.
    tx.send(Ok(Bytes::from_static(b"data: {\"n\":1}\n\n")))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first, SseEvent::Data(Bytes::from_static(b"{\"n\":1}")));
    tx.send(Ok(Bytes::from_static(b"data: {\"n\":")))
        .await
        .unwrap();
    tx.send(Ok(Bytes::from_static(b"2}\r\n\r\n: comment\n\n")))
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(data_json(&second), json!({"n": 2}));
    let usage = r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#;
    tx.send(Ok(Bytes::from(format!(
        "data: {usage}\n\ndata: [DONE]\n\n"
    ))))
    .await
    .unwrap();
    let third = events.next().await.unwrap().unwrap();
    let SseEvent::Data(ref d) = third else {
        panic!("expected data")
    };
    assert_eq!(
        crate::providers::sse::usage_from_chunk(d),
        Some(Usage {
            prompt_tokens: 5,
            completion_tokens: 2,
            ..Usage::default()
        })
    );
    assert_eq!(events.next().await.unwrap().unwrap(), SseEvent::Done);
    // `[DONE]` ends the stream at once, though the server keeps the body open
    // (well within the 5 s idle timeout, which would end it otherwise).
    let end = tokio::time::timeout(Duration::from_secs(1), events.next()).await;
    assert!(end.expect("the stream ends right after `[DONE]`").is_none());
}

#[tokio::test]
async fn client_errors_pass_through_with_status_body_and_type() {
    let server = serve(|rec: Recorded| async move {
        // A server that echoes the credentials it got: they must not come back.
        let auth = rec.headers["authorization"].to_str().unwrap().to_owned();
        let body = json!({"error": {"message": format!("bad model; you sent {auth}"), "type": "invalid_request_error"}});
        response(404, "application/json; charset=utf-8", body.to_string())
    })
    .await;
    let provider = build(
        &config(ProviderKind::OpenAi, &server.base_url, Some(KEY)),
        http_client(),
    );
    let err = provider
        .send(call(Endpoint::ChatCompletions, chat(), false))
        .await
        .err()
        .unwrap();
    let ProviderError::Rejected {
        status,
        ref body,
        ref content_type,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(status, 404);
    assert_eq!(
        content_type.as_ref().unwrap(),
        "application/json; charset=utf-8"
    );
    let body: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(body["error"]["message"], "bad model; you sent Bearer *****");
    assert_no_key(&err);
}

#[tokio::test]
async fn server_errors_and_garbage_are_failures() {
    let server = serve(|rec: Recorded| async move {
        let auth = rec.headers["authorization"].to_str().unwrap().to_owned();
        if rec.path == "/chat/completions" {
            response(503, "text/plain", format!("overloaded, key {auth}"))
        } else {
            response(200, "application/json", "{\"choices\": [")
        }
    })
    .await;
    let provider = build(
        &config(ProviderKind::OpenAi, &server.base_url, Some(KEY)),
        http_client(),
    );
    let err = provider
        .send(call(Endpoint::ChatCompletions, chat(), false))
        .await
        .err()
        .unwrap();
    // A 503 is a refusal: nothing generated, billed nothing, retryable.
    assert!(
        matches!(err, ProviderError::Refused { status, .. } if status == 503),
        "{err:?}"
    );
    assert!(!err.may_have_billed());
    assert!(err.to_string().contains("503"), "{err}");
    assert!(err.to_string().contains("overloaded"), "{err}");
    assert_no_key(&err);

    let err = provider
        .send(call(Endpoint::Completions, chat(), false))
        .await
        .err()
        .unwrap();
    // A 2xx the gateway cannot read was generated, and billed, all the same.
    assert!(matches!(err, ProviderError::Lost { .. }), "{err:?}");
    assert!(err.may_have_billed());
    assert!(err.to_string().contains("not a JSON object"), "{err}");
}

#[tokio::test]
async fn hang_times_out_within_the_timeout() {
    let server = serve(|_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        response(200, "application/json", CHAT_BODY)
    })
    .await;
    let provider = build(
        &config(ProviderKind::OpenAi, &server.base_url, Some(KEY)),
        http_client(),
    );
    let mut c = call(Endpoint::ChatCompletions, chat(), false);
    c.timeout = Duration::from_millis(200);
    let started = tokio::time::Instant::now();
    let err = provider.send(c).await.err().unwrap();
    assert!(matches!(err, ProviderError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_no_key(&err);
}

#[tokio::test]
async fn stream_that_stalls_times_out_between_chunks() {
    let server = serve(|_| async {
        let body = futures_util::stream::once(async {
            Ok::<_, std::io::Error>(Bytes::from_static(b"data: {}\n\n"))
        })
        .chain(futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(Bytes::from_static(b"data: [DONE]\n\n"))
        }));
        response(200, "text/event-stream", Body::from_stream(body))
    })
    .await;
    let provider = build(
        &config(ProviderKind::OpenAi, &server.base_url, Some(KEY)),
        http_client(),
    );
    let mut c = call(Endpoint::ChatCompletions, chat(), true);
    c.timeout = Duration::from_millis(300);
    let items = collect(expect_stream(provider.send(c).await)).await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(
        items[0].as_ref().unwrap(),
        &SseEvent::Data(Bytes::from_static(b"{}"))
    );
    assert!(
        matches!(items[1], Err(ProviderError::Timeout { .. })),
        "{items:?}"
    );
}

/// A raw TCP server that reads a request, optionally writes `head`, then
/// resets the connection.
async fn resetting_server(head: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let _ = sock.read(&mut buf).await;
            if !head.is_empty() {
                sock.write_all(head).await.unwrap();
                sock.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sock.set_zero_linger().unwrap();
            drop(sock);
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn connection_reset_and_refused_are_failures() {
    let base = resetting_server(b"").await;
    let provider = build(
        &config(ProviderKind::OpenAi, &base, Some(KEY)),
        http_client(),
    );
    let err = provider
        .send(call(Endpoint::ChatCompletions, chat(), false))
        .await
        .err()
        .unwrap();
    // The request went out before the reset: the provider may have billed it.
    assert!(matches!(err, ProviderError::Lost { .. }), "{err:?}");
    assert_no_key(&err);

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let provider = build(
        &config(ProviderKind::OpenAi, &format!("http://{closed}"), Some(KEY)),
        http_client(),
    );
    let err = provider
        .send(call(Endpoint::ChatCompletions, chat(), false))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ProviderError::Failed { .. }), "{err:?}");
    // The cause chain reaches the person reading the error.
    assert!(err.to_string().to_lowercase().contains("connect"), "{err}");
    assert_no_key(&err);
}

#[tokio::test]
async fn reset_mid_stream_is_a_failure_after_the_events_sent() {
    let head: &'static [u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
                                f\r\ndata: {\"n\":1}\n\n\r\n";
    let base = resetting_server(head).await;
    let provider = build(
        &config(ProviderKind::OpenAi, &base, Some(KEY)),
        http_client(),
    );
    let items = collect(expect_stream(
        provider
            .send(call(Endpoint::ChatCompletions, chat(), true))
            .await,
    ))
    .await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(data_json(items[0].as_ref().unwrap()), json!({"n": 1}));
    let err = items[1].as_ref().err().unwrap();
    assert!(matches!(err, ProviderError::Failed { .. }), "{err:?}");
    assert_no_key(err);
}

#[tokio::test]
async fn azure_uses_deployment_url_and_api_key_header() {
    let server = serve(|_| async { response(200, "application/json", CHAT_BODY) }).await;
    let provider = build(
        &config(ProviderKind::Azure, &server.base_url, Some(KEY)),
        http_client(),
    );
    let mut body = chat();
    body["model"] = json!("my gpt/4o");
    expect_complete(
        provider
            .send(call(Endpoint::ChatCompletions, body.clone(), false))
            .await,
    );
    body["input"] = json!("x");
    expect_complete(provider.send(call(Endpoint::Embeddings, body, false)).await);
    let seen = server.seen.lock().clone();
    assert_eq!(
        seen[0].path,
        "/openai/deployments/my%20gpt%2F4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(
        seen[1].path,
        "/openai/deployments/my%20gpt%2F4o/embeddings?api-version=2024-10-21"
    );
    assert_eq!(seen[0].headers["api-key"], KEY);
    assert_eq!(seen[0].headers["x-request-id"], "req-42");
    assert!(!seen[0].headers.contains_key("authorization"));

    let err = provider
        .send(call(
            Endpoint::ChatCompletions,
            json!({"messages": []}),
            false,
        ))
        .await
        .err()
        .unwrap();
    let ProviderError::Rejected { status, body, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("`model`"));
    assert_eq!(
        server.seen.lock().len(),
        2,
        "a request without a deployment is not sent"
    );
}

#[tokio::test]
async fn https_goes_through_rustls() {
    // A plain-HTTP server behind an `https://` URL: the client must get as
    // far as a TLS handshake (so TLS is built in) and fail it cleanly.
    let server = serve(|_| async { response(200, "application/json", CHAT_BODY) }).await;
    let base = server.base_url.replace("http://", "https://");
    let provider = build(
        &config(ProviderKind::OpenAi, &base, Some(KEY)),
        http_client(),
    );
    let err = provider
        .send(call(Endpoint::ChatCompletions, chat(), false))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ProviderError::Failed { .. }), "{err:?}");
    assert_no_key(&err);
}

#[tokio::test]
async fn json_answer_to_a_stream_request_is_a_failure() {
    let server = serve(|_| async { response(200, "application/json", CHAT_BODY) }).await;
    for kind in [ProviderKind::OpenAi, ProviderKind::Anthropic] {
        let provider = build(&config(kind, &server.base_url, Some(KEY)), http_client());
        let err = match provider
            .send(call(Endpoint::ChatCompletions, chat(), true))
            .await
        {
            Err(e) => e,
            Ok(_) => panic!("{kind:?}: a JSON body must not pass for an event stream"),
        };
        assert!(matches!(err, ProviderError::Lost { .. }), "{err:?}");
        assert!(
            err.to_string().contains("instead of server-sent events"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn proxy_from_env_is_used_except_for_local_hosts() {
    let proxy = serve(|_| async { response(200, "application/json", CHAT_BODY) }).await;
    let direct = serve(|_| async { response(200, "application/json", CHAT_BODY) }).await;
    let proxy_url = proxy.base_url.clone();
    let client = crate::providers::client::client_with_env(move |name| match name {
        "HTTP_PROXY" => Some(proxy_url.clone()),
        "NO_PROXY" => Some("internal.example".to_owned()),
        _ => None,
    });
    // A local provider is called directly, never through the proxy.
    let local = build(
        &config(ProviderKind::OpenAi, &direct.base_url, Some(KEY)),
        client.clone(),
    );
    expect_complete(
        local
            .send(call(Endpoint::ChatCompletions, chat(), false))
            .await,
    );
    assert_eq!(direct.seen.lock().len(), 1);
    assert_eq!(proxy.seen.lock().len(), 0);
    // A remote one goes through the proxy (which answers in its place here).
    let remote = build(
        &config(
            ProviderKind::OpenAi,
            "http://api.remote.example/v1",
            Some(KEY),
        ),
        client,
    );
    expect_complete(
        remote
            .send(call(Endpoint::ChatCompletions, chat(), false))
            .await,
    );
    let seen = proxy.seen.lock().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["host"], "api.remote.example");
}
