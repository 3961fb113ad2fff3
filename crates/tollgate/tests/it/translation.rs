//! Provider translation end to end: an `anthropic` provider behind
//! `/v1/chat/completions` (the client sees pure OpenAI format, streaming
//! included) and an `azure` provider's deployment URLs, against the mock.

use std::sync::Arc;

use futures_util::StreamExt;
use mock_provider::{MockConfig, MockProvider};
use serde_json::{Value, json};
use tollgate::types::SystemClock;

use crate::common::*;

/// A gateway whose `claude` model goes to an anthropic provider and whose
/// `azure-4o` model to an azure provider, both served by the mock.
async fn gateway() -> (
    tollgate::server::Gateway,
    String,
    mock_provider::MockHandle,
    tempfile::TempDir,
) {
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("t.db").display());
    let providers = format!(
        "  - name: claude-up\n    kind: anthropic\n    base_url: {base}\n    api_key: {UPSTREAM_KEY}\n  - name: azure-up\n    kind: azure\n    base_url: {root}\n    api_key: {UPSTREAM_KEY}\n    api_version: 2024-10-21\nmodels:\n  - name: claude\n    targets:\n      - provider: claude-up\n        model: claude-3-5-haiku-latest\n  - name: azure-4o\n    targets:\n      - provider: azure-up\n        model: my-deployment\n    price: {{ input_per_mtok: 1.0, output_per_mtok: 2.0 }}\n",
        base = mock.base_url(),
        root = mock.root_url(),
    );
    let yaml = config_yaml(&mock.base_url(), &store, "").replacen("models:\n", &providers, 1);
    let gw = start_gateway(&yaml, Arc::new(SystemClock)).await;
    let url = format!("http://{}", gw.addr);
    (gw, url, mock, dir)
}

async fn key(url: &str) -> String {
    let http = reqwest::Client::new();
    let v: Value = http
        .post(format!("{url}/admin/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"team": "t1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn anthropic_provider_answers_in_openai_format_both_ways() {
    let (gw, url, mock, _dir) = gateway().await;
    let key = key(&url).await;
    let http = reqwest::Client::new();
    let body = json!({"model": "claude", "max_tokens": 64, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"}]});
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{v}"
    );
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.path, "/v1/messages", "translated to the Messages API");
    let sent_body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        sent_body["system"][0]["text"], "Be brief.",
        "system message moved to `system`: {sent_body}"
    );
    assert_eq!(sent_body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(sent.header("x-api-key"), Some(UPSTREAM_KEY));
    assert!(sent.header("authorization").is_none());

    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    stream_body["stream_options"] = json!({"include_usage": true});
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&stream_body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    let mut raw = String::new();
    let mut s = resp.bytes_stream();
    while let Some(c) = s.next().await {
        raw.push_str(std::str::from_utf8(&c.unwrap()).unwrap());
    }
    let mut usage = None;
    for line in raw.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if line == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(line).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk", "{chunk}");
        if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
        if chunk["usage"].is_object() {
            usage = Some(chunk["usage"].clone());
        }
    }
    assert!(raw.trim_end().ends_with("data: [DONE]"));
    assert!(!text.is_empty());
    assert!(usage.is_some_and(|u| u["completion_tokens"].as_u64().unwrap() > 0));
    gw.shutdown().await;
}

#[tokio::test]
async fn azure_provider_uses_the_deployment_url_and_api_key_header() {
    let (gw, url, mock, _dir) = gateway().await;
    let key = key(&url).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "azure-4o", "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent.path,
        "/openai/deployments/my-deployment/chat/completions"
    );
    assert_eq!(sent.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(sent.header("api-key"), Some(UPSTREAM_KEY));
    gw.shutdown().await;
}
