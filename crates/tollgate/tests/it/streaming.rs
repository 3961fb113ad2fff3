//! Streaming: chunks arrive as the provider sends them, the usage chunk is
//! stripped unless asked for, and every stream is billed — also when the
//! client hangs up halfway.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mock_provider::{FailureMode, MockConfig};
use serde_json::{Value, json};

use crate::common::*;

fn stream_body(include_usage: bool) -> Value {
    let mut b = json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "Tell me"}]});
    if include_usage {
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

/// Reads a whole SSE response; returns (data payloads, arrival times).
async fn read_events(resp: reqwest::Response) -> (Vec<String>, Vec<Instant>) {
    let mut events = Vec::new();
    let mut times = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        buf.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            if let Some(data) = event.trim().strip_prefix("data: ") {
                events.push(data.to_owned());
                times.push(Instant::now());
            }
        }
    }
    (events, times)
}

#[tokio::test]
async fn chunks_arrive_one_by_one_not_as_one_blob() {
    let h = Harness::start_with(
        MockConfig {
            chunk_delay: Duration::from_millis(40),
            completion_tokens: 8,
            ..MockConfig::default()
        },
        "",
        std::sync::Arc::new(tollgate::types::SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let resp = h.chat(&key, &stream_body(false)).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (events, times) = read_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    // 8 content chunks 40 ms apart: the first and the last content chunk
    // must arrive well apart if nothing buffers the stream.
    let spread = times[times.len() - 2].duration_since(times[1]);
    assert!(
        spread >= Duration::from_millis(200),
        "chunks arrived together ({spread:?}): the stream was buffered"
    );
    // The client did not ask for usage: no usage-only chunk reaches it.
    for e in &events[..events.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert!(
            !(v["choices"].as_array().is_some_and(|c| c.is_empty())),
            "usage chunk leaked: {e}"
        );
    }
    // …but the gateway asked for it upstream and billed from it.
    let sent: Value = serde_json::from_slice(&h.mock.last_request().unwrap().body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].completion_tokens, 8);
    assert!(rows[0].cost.0 > 0);
}

#[tokio::test]
async fn usage_chunk_is_kept_when_the_client_asks() {
    let h = Harness::start("").await;
    let (_, key) = h.key(json!({})).await;
    let (events, _) = read_events(h.chat(&key, &stream_body(true)).await).await;
    let usage: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|v| v["usage"].is_object())
        .collect();
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0]["usage"]["completion_tokens"], 16);
}

#[tokio::test]
async fn client_hanging_up_mid_stream_is_still_billed() {
    let h = Harness::start_with(
        MockConfig {
            chunk_delay: Duration::from_millis(30),
            completion_tokens: 200,
            ..MockConfig::default()
        },
        "",
        std::sync::Arc::new(tollgate::types::SystemClock),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let resp = h.chat(&key, &stream_body(false)).await;
    let mut body = resp.bytes_stream();
    let mut seen = 0;
    while let Some(chunk) = body.next().await {
        seen += chunk.unwrap().len();
        if seen > 400 {
            break;
        }
    }
    drop(body); // hang up
    // The settlement runs on a tracked task; the ledger shows the stream
    // billed for what was sent (no usage arrived).
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = h.ledger().await;
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows.len(), 1, "the hung-up stream has its ledger row");
    assert_eq!(rows[0].error_code.as_deref(), Some("client_closed"));
    assert!(
        rows[0].completion_tokens >= 1,
        "tokens sent before the hang-up are billed"
    );
    assert!(rows[0].completion_tokens < 200);
    // No policy counted the prompt at admission (the key has none): it is
    // counted from the body now, never billed as zero.
    assert!(
        rows[0].prompt_tokens >= 5,
        "the prompt is billed: {:?}",
        rows[0]
    );
    assert!(rows[0].cost.0 > 0);
}

#[tokio::test]
async fn a_stream_cut_by_the_provider_is_billed_for_what_was_sent() {
    let h = Harness::start("").await;
    let (_, key) = h.key(json!({})).await;
    h.mock
        .set_failure(FailureMode::StreamCut { after_chunks: 5 });
    let (events, _) = read_events(h.chat(&key, &stream_body(true)).await).await;
    assert!(!events.iter().any(|e| e == "[DONE]"));
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].completion_tokens >= 5, "{:?}", rows[0]);
    assert!(rows[0].cost.0 > 0);
}
