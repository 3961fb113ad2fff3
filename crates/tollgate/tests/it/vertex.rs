//! Kind `vertex` end to end: a service account (a key pair generated for
//! the test) signs a JWT grant, the mock's token endpoint verifies it and
//! issues access tokens, and Gemini and Claude models on Vertex are served
//! with them. Token caching, single-flight refresh, refresh before expiry
//! and a failing token endpoint are checked against the token endpoint's
//! own count of grants.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair, RsaKeyPair};
use mock_provider::{GoogleAuth, MockConfig};
use serde_json::{Value, json};
use tollgate::types::SystemClock;

use crate::common::*;

const CLIENT_EMAIL: &str = "tollgate-test@test-project.iam.gserviceaccount.com";

/// A fresh RSA key pair, as a service-account file's PEM and the public key
/// the mock verifies grants with. Generated per test: no key is checked in.
fn key_pair() -> (String, Vec<u8>) {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
    let pem = mock_provider::pem_private_key(pkcs8.as_ref());
    (pem, pair.public_key().as_ref().to_vec())
}

struct Vertex {
    h: Harness,
    pem: String,
}

/// `vgem` (Gemini) and `vclaude` (Claude) on a `vertex` provider served by
/// the mock, with a service-account file whose `token_uri` is the mock's.
async fn harness() -> Vertex {
    harness_with(|_| {}).await
}

async fn harness_with(setup: impl FnOnce(&mock_provider::MockHandle)) -> Vertex {
    harness_tail(setup, "", "").await
}

/// [`harness_with`], with more `models:` entries and a config tail.
async fn harness_tail(
    setup: impl FnOnce(&mock_provider::MockHandle),
    more_models: &str,
    tail: &str,
) -> Vertex {
    let (pem, public_key) = key_pair();
    // The mock must be up before the config names its token endpoint, so
    // the credentials file is written in a directory of its own.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sa.json");
    let providers = format!(
        "  - name: vtx\n    kind: vertex\n    base_url: {{mock}}\n    project: test-project\n    region: us-east5\n    credentials_file: {}\n    timeout_s: 5\n",
        path.display()
    );
    let models = "  - name: vgem\n    targets:\n      - provider: vtx\n        model: gemini-2.5-flash\n    price: { input_per_mtok: 1.0, output_per_mtok: 2.0 }\n    max_output_tokens: 1000\n  - name: vclaude\n    targets:\n      - provider: vtx\n        model: claude-sonnet-4@20250514\n    price: { input_per_mtok: 1.0, output_per_mtok: 2.0 }\n    max_output_tokens: 1000\n  - name: vembed\n    targets:\n      - provider: vtx\n        model: gemini-embedding-001\n";
    // The harness starts the mock; the file needs its address first.
    let mock = mock_provider::MockProvider::start(MockConfig::default())
        .await
        .unwrap();
    let sa = json!({"type": "service_account", "project_id": "test-project",
        "private_key_id": "0123abcd", "private_key": pem, "client_email": CLIENT_EMAIL,
        "client_id": "1", "token_uri": mock.token_uri()});
    std::fs::write(&path, sa.to_string()).unwrap();
    mock.set_google_auth(Some(GoogleAuth {
        client_email: CLIENT_EMAIL.to_owned(),
        public_key,
    }));
    setup(&mock);
    let models = format!("{models}{more_models}");
    let h = harness_on(mock, &providers, &models, dir, tail).await;
    Vertex { h, pem }
}

/// [`Harness::start_with_models`] on an already running mock.
async fn harness_on(
    mock: mock_provider::MockHandle,
    providers: &str,
    models: &str,
    keep: tempfile::TempDir,
    tail: &str,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let with_mock = |s: &str| s.replace("{mock}", &mock.base_url());
    let yaml = config_yaml(&mock.base_url(), &store, tail)
        .replacen(
            "providers:\n",
            &format!("providers:\n{}", with_mock(providers)),
            1,
        )
        .replacen("models:\n", &format!("models:\n{}", with_mock(models)), 1);
    let gw = start_gateway(&yaml, Arc::new(SystemClock)).await;
    let url = format!("http://{}", gw.addr);
    // The credentials file's directory lives as long as the store's.
    std::mem::forget(keep);
    Harness {
        gw: Some(gw),
        mock,
        url,
        http: reqwest::Client::new(),
        dir,
    }
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn bearer(req: &mock_provider::RecordedRequest) -> String {
    req.header("authorization").unwrap_or_default().to_owned()
}

#[tokio::test]
async fn gemini_on_vertex_goes_to_the_project_url_with_a_verified_grant_token() {
    let Vertex { h, .. } = harness().await;
    let (_, key) = h.key(json!({"budget_usd": 10, "period": "daily"})).await;
    let resp = h.chat(&key, &chat("vgem", "Hello there")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "word ".repeat(16));
    let req = h
        .mock
        .requests()
        .into_iter()
        .find(|r| r.path.contains("generateContent"))
        .unwrap();
    assert_eq!(
        req.path,
        "/v1/projects/test-project/locations/us-east5/publishers/google/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(bearer(&req), "Bearer ya29.mock-token-1");
    assert_eq!(
        req.json().unwrap()["generationConfig"]["maxOutputTokens"],
        1000
    );
    // The grant the token endpoint verified (RS256 with the test key).
    let grants = h.mock.grants();
    assert_eq!(grants.len(), 1);
    let g = &grants[0];
    assert_eq!(g["iss"], CLIENT_EMAIL);
    assert_eq!(g["aud"], h.mock.token_uri());
    assert_eq!(g["scope"], mock_provider::CLOUD_PLATFORM_SCOPE);
    assert_eq!(
        g["exp"].as_i64().unwrap() - g["iat"].as_i64().unwrap(),
        3600
    );
    // The token is cached: a second request makes no second grant.
    h.chat(&key, &chat("vgem", "Again")).await;
    assert_eq!(h.mock.calls_to("/token"), 1);
    let rows = h.ledger().await;
    assert!(rows.iter().all(|r| r.status == 200 && r.provider == "vtx"));
}

#[tokio::test]
async fn gemini_on_vertex_streams() {
    let Vertex { h, .. } = harness().await;
    let (_, key) = h.key(json!({})).await;
    let mut body = chat("vgem", "Hi [[mock:tokens=5]]");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = h.chat(&key, &body).await;
    let text = String::from_utf8(resp.bytes().await.unwrap().to_vec()).unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(text.matches("\"content\":\"word \"").count(), 5);
    let rows = h.ledger().await;
    assert_eq!(rows[0].completion_tokens, 5);
}

#[tokio::test]
async fn claude_on_vertex_uses_raw_predict_with_the_anthropic_body() {
    let Vertex { h, .. } = harness().await;
    let (_, key) = h.key(json!({"budget_usd": 10, "period": "daily"})).await;
    let resp = h.chat(&key, &chat("vclaude", "Hello Claude")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "word ".repeat(16));
    let req = h.mock.last_request().unwrap();
    assert_eq!(
        req.path,
        "/v1/projects/test-project/locations/us-east5/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"
    );
    assert!(bearer(&req).starts_with("Bearer ya29.mock-token-"));
    let sent = req.json().unwrap();
    assert_eq!(sent["anthropic_version"], "vertex-2023-10-16");
    assert!(sent.get("model").is_none());
    assert_eq!(sent["max_tokens"], 1000);
    let rows = h.ledger().await;
    assert_eq!(rows[0].completion_tokens, 16);

    // Streaming: streamRawPredict, Anthropic events back as OpenAI chunks.
    let mut body = chat("vclaude", "Stream it [[mock:tokens=4]]");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = h.chat(&key, &body).await;
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8(resp.bytes().await.unwrap().to_vec()).unwrap();
    assert!(text.contains("chat.completion.chunk"));
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let req = h.mock.last_request().unwrap();
    assert!(
        req.path
            .ends_with("claude-sonnet-4@20250514:streamRawPredict"),
        "{}",
        req.path
    );
    let rows = h.ledger().await;
    assert_eq!(rows[0].completion_tokens, 4);
}

#[tokio::test]
async fn embeddings_on_vertex_use_predict_and_its_token_counts() {
    let Vertex { h, .. } = harness().await;
    let (_, key) = h.key(json!({"budget_usd": 1, "period": "daily"})).await;
    let resp = h
        .post(
            "/v1/embeddings",
            &key,
            &json!({"model": "vembed", "input": ["hello world!", "abcdefgh"], "dimensions": 3}),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["data"][1]["embedding"].as_array().unwrap().len(), 3);
    // Vertex's own counts: 12 / 4 + 8 / 4.
    assert_eq!(body["usage"]["prompt_tokens"], 5);
    let req = h.mock.last_request().unwrap();
    assert_eq!(
        req.path,
        "/v1/projects/test-project/locations/us-east5/publishers/google/models/gemini-embedding-001:predict"
    );
    assert!(bearer(&req).starts_with("Bearer ya29."));
    let sent = req.json().unwrap();
    assert_eq!(sent["instances"][0]["content"], "hello world!");
    assert_eq!(sent["parameters"]["outputDimensionality"], 3);
    let rows = h.ledger().await;
    // gemini-embedding-001 from the built-in table: $0.15 per 1M tokens.
    assert_eq!((rows[0].prompt_tokens, rows[0].cost.0), (5, 750));
}

#[tokio::test]
async fn messages_ingress_reaches_claude_on_vertex() {
    let Vertex { h, .. } = harness().await;
    let (_, key) = h.key(json!({})).await;
    let resp = h
        .http
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .json(&json!({"model": "vclaude", "max_tokens": 5,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "word ".repeat(5));
    // Natively (rawPredict): the client's blocks as they came, `model` in
    // the URL only, the beta header passed on.
    let req = h.mock.last_request().unwrap();
    assert!(
        req.path
            .ends_with("/publishers/anthropic/models/claude-sonnet-4@20250514:rawPredict"),
        "{}",
        req.path
    );
    assert_eq!(
        req.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
    let sent = req.json().unwrap();
    assert_eq!(sent["max_tokens"], 5);
    assert_eq!(sent["anthropic_version"], "vertex-2023-10-16");
    assert_eq!(
        sent["messages"][0]["content"][0]["cache_control"],
        json!({"type": "ephemeral"}),
        "{sent}"
    );
    assert!(sent.get("model").is_none(), "{sent}");
}

#[tokio::test]
async fn a_hundred_concurrent_requests_make_one_token_request() {
    let Vertex { h, .. } = harness_with(|m| m.set_token_latency(Duration::from_millis(300))).await;
    let (_, key) = h.key(json!({})).await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let http = h.http.clone();
        let url = format!("{}/v1/chat/completions", h.url);
        let key = key.clone();
        let model = if i % 2 == 0 { "vgem" } else { "vclaude" };
        tasks.push(tokio::spawn(async move {
            let mut body = chat(model, "Hi [[mock:tokens=2]]");
            if i % 3 == 0 {
                body["stream"] = json!(true);
            }
            let resp = http
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(h.mock.calls_to("/token"), 1, "one refresh for all of them");
}

#[tokio::test]
async fn a_token_is_refreshed_before_it_expires() {
    // Tokens live 2 s; the gateway replaces one at half its life (or 5
    // minutes early, for real hour-long tokens).
    let Vertex { h, .. } = harness_with(|m| m.set_token_lifetime(Duration::from_secs(2))).await;
    let (_, key) = h.key(json!({})).await;
    assert_eq!(h.chat(&key, &chat("vgem", "one")).await.status(), 200);
    assert_eq!(h.chat(&key, &chat("vgem", "two")).await.status(), 200);
    assert_eq!(h.mock.calls_to("/token"), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Past half its life, still valid at the mock: replaced before use.
    assert_eq!(h.chat(&key, &chat("vgem", "three")).await.status(), 200);
    assert_eq!(h.mock.calls_to("/token"), 2);
    let last = h.mock.last_request().unwrap();
    assert_eq!(bearer(&last), "Bearer ya29.mock-token-2");
}

#[tokio::test]
async fn a_failing_token_endpoint_is_a_fast_502_without_credentials() {
    let Vertex { h, pem } = harness_with(|m| m.set_token_failure(Some(500))).await;
    let (_, key) = h.key(json!({"budget_usd": 1, "period": "daily"})).await;
    let started = Instant::now();
    let (status, code, err) = error_code(h.chat(&key, &chat("vgem", "Hi")).await).await;
    assert_eq!((status, code.as_str()), (502, "upstream_error"));
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("vtx") && message.contains("access token"),
        "{message}"
    );
    // No key material: not the PEM, not a JWT (base64url of `{"alg"`).
    let key_line = pem.lines().nth(1).unwrap();
    assert!(!err.to_string().contains(key_line));
    assert!(!err.to_string().contains("eyJhbGci"));
    // The failure is remembered briefly: ten more requests, no new grant,
    // each answered at once.
    for _ in 0..10 {
        let (status, _, _) = error_code(h.chat(&key, &chat("vgem", "Hi")).await).await;
        assert_eq!(status, 502);
    }
    assert_eq!(h.mock.calls_to("/token"), 1);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // Nothing reached the model, nothing was billed.
    assert_eq!(
        h.mock.calls(),
        1,
        "only the token endpoint was called: {:?}",
        h.mock.calls_by_path()
    );
    let rows = h.ledger().await;
    assert!(rows.iter().all(|r| r.cost.0 == 0));
    // Once the endpoint recovers (and the hold passed), requests flow again.
    h.mock.set_token_failure(None);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(h.chat(&key, &chat("vgem", "Hi")).await.status(), 200);
}

#[tokio::test]
async fn a_grant_signed_with_another_key_is_refused_and_named() {
    let Vertex { h, .. } = harness().await;
    let (_, other_public) = key_pair();
    h.mock.set_google_auth(Some(GoogleAuth {
        client_email: CLIENT_EMAIL.to_owned(),
        public_key: other_public,
    }));
    let (_, key) = h.key(json!({})).await;
    let (status, _, err) = error_code(h.chat(&key, &chat("vgem", "Hi")).await).await;
    assert_eq!(status, 502);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{err}"
    );
}

#[tokio::test]
async fn a_budget_for_n_requests_holds_on_vertex_under_concurrency() {
    let Vertex { h, .. } = harness().await;
    // "Hi there" = 8 characters -> 2 mock tokens; 8 output tokens.
    let per_request = 2 * 1_000 + 8 * 2_000;
    let n = 30u64;
    let cap = per_request * n;
    let (_, key) = h
        .key(json!({"budget_usd": cap as f64 / 1e9, "period": "daily"}))
        .await;
    let mut tasks = Vec::new();
    for i in 0..100 {
        let http = h.http.clone();
        let url = format!("{}/v1/chat/completions", h.url);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let model = if i % 2 == 0 { "vgem" } else { "vclaude" };
            let mut body = chat(model, "Hi there");
            body["max_tokens"] = json!(8);
            body["stream"] = json!(i % 4 < 2);
            let resp = http
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            status
        }));
    }
    let mut ok = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            402 => {}
            s => panic!("status {s}"),
        }
    }
    let rows = h.ledger().await;
    let spent: u64 = rows.iter().map(|r| r.cost.0).sum();
    assert!(spent <= cap, "spent {spent} > cap {cap}");
    assert!(ok > 0);
    let served: Vec<_> = rows.iter().filter(|r| r.status == 200).collect();
    assert_eq!(served.len() as u64, ok);
    for r in &served {
        assert_eq!(r.completion_tokens, 8, "{r:?}");
    }
    let priced: u64 = served
        .iter()
        .map(|r| r.prompt_tokens * 1_000 + r.completion_tokens * 2_000)
        .sum();
    assert_eq!(spent, priced);
}

#[tokio::test]
async fn config_check_names_a_missing_or_broken_credentials_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let yaml = |file: &std::path::Path| {
        format!(
            "store: sqlite://x.db\nproviders:\n  - name: vtx\n    kind: vertex\n    project: p\n    region: us-east5\n    credentials_file: {}\nmodels:\n  - name: m\n    targets: [{{provider: vtx, model: gemini-2.5-flash}}]\n",
            file.display()
        )
    };
    let env = |_: &str| None;
    let err = tollgate::config::load_str(&yaml(&missing), "t.yaml", &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.yaml:7:") && err.contains("credentials_file"),
        "{err}"
    );
    assert!(err.contains("nope.json"), "{err}");

    let (pem, _) = key_pair();
    let broken = dir.path().join("broken.json");
    let mangled = pem.replace('A', "!");
    std::fs::write(
        &broken,
        json!({"type": "service_account", "client_email": CLIENT_EMAIL, "private_key": mangled,
            "token_uri": "https://oauth2.googleapis.com/token"})
        .to_string(),
    )
    .unwrap();
    let err = tollgate::config::load_str(&yaml(&broken), "t.yaml", &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("private_key"), "{err}");
    assert!(
        !err.contains(mangled.lines().nth(1).unwrap()),
        "never the key: {err}"
    );

    // Unknown keys, a bad region and a missing project are all listed.
    let bad = "store: sqlite://x.db\nproviders:\n  - name: vtx\n    kind: vertex\n    region: 'us east'\n    credentials_file: x.json\n    regoin: x\n";
    let err = tollgate::config::load_str(bad, "t.yaml", &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("regoin"), "{err}");
    let bad = "store: sqlite://x.db\nproviders:\n  - name: vtx\n    kind: vertex\n    region: 'us east'\n    credentials_file: x.json\n";
    let err = tollgate::config::load_str(bad, "t.yaml", &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing `project`"), "{err}");
    assert!(err.contains("not a Google Cloud region"), "{err}");
    let gemini = "store: sqlite://x.db\nproviders:\n  - name: g\n    kind: gemini\n";
    let err = tollgate::config::load_str(gemini, "t.yaml", &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs `api_key`"), "{err}");
    let stray = "store: sqlite://x.db\nproviders:\n  - name: g\n    kind: openai\n    project: p\n";
    let err = tollgate::config::load_str(stray, "t.yaml", &env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("only a `vertex` provider takes `project`"),
        "{err}"
    );
}

/// The real binary at `debug` log level: a failing token endpoint, a
/// refused grant and a wrong Gemini key leave no key material in its logs.
#[tokio::test]
async fn credentials_never_reach_the_logs() {
    let (pem, public_key) = key_pair();
    let mock = mock_provider::MockProvider::start(MockConfig {
        expected_api_key: Some("the-right-gemini-key".to_owned()),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    mock.set_google_auth(Some(GoogleAuth {
        client_email: CLIENT_EMAIL.to_owned(),
        public_key,
    }));
    mock.set_token_failure(Some(503));
    let dir = tempfile::tempdir().unwrap();
    let sa_path = dir.path().join("sa.json");
    let sa = json!({"type": "service_account", "private_key_id": "0123abcd", "private_key": pem,
        "client_email": CLIENT_EMAIL, "token_uri": mock.token_uri()});
    std::fs::write(&sa_path, sa.to_string()).unwrap();
    let gemini_key = "AIzaSy-wrong-key-that-must-not-leak";
    let store = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let providers = format!(
        "providers:\n  - name: vtx\n    kind: vertex\n    base_url: {base}\n    project: p\n    region: us-east5\n    credentials_file: {sa}\n  - name: gem\n    kind: gemini\n    base_url: {base}beta\n    api_key: {gemini_key}\n",
        base = mock.base_url(),
        sa = sa_path.display()
    );
    let models = "models:\n  - name: vgem\n    targets: [{provider: vtx, model: gemini-2.5-flash}]\n  - name: gflash\n    targets: [{provider: gem, model: gemini-2.5-flash}]\n";
    let yaml = config_yaml(&mock.base_url(), &store, "")
        .replacen("providers:\n", &providers, 1)
        .replacen("models:\n", models, 1);
    let mut p = crate::process::spawn(dir.path(), &yaml, "gateway.log");
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/admin/keys", p.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"team": "t1", "budget_usd": 1, "period": "daily"}))
        .send()
        .await
        .unwrap();
    let key = resp.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    for model in ["vgem", "gflash"] {
        let resp = http
            .post(format!("{}/v1/chat/completions", p.url))
            .bearer_auth(&key)
            .json(&chat(model, "Hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502, "{model}");
    }
    // A refused grant too (the endpoint works, the key is not the one).
    mock.set_token_failure(None);
    let (_, other) = key_pair();
    mock.set_google_auth(Some(GoogleAuth {
        client_email: CLIENT_EMAIL.to_owned(),
        public_key: other,
    }));
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let resp = http
        .post(format!("{}/v1/chat/completions", p.url))
        .bearer_auth(&key)
        .json(&chat("vgem", "Hi again"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    crate::process::signal(&p.child, "-TERM");
    let _ = p.child.wait();
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains("access token"), "the failure is logged: {log}");
    for line in pem.lines().filter(|l| !l.starts_with("-----")) {
        assert!(
            !log.contains(line),
            "a line of the private key is in the log"
        );
    }
    assert!(!log.contains("eyJhbGci"), "a JWT is in the log");
    assert!(!log.contains(gemini_key), "the Gemini key is in the log");
    assert!(!log.contains("ya29."), "an access token is in the log");
}

/// Trips after two failures, and stays open for a minute.
const TRIP_TWICE: &str =
    "routing:\n  retries: 0\n  backoff_ms: 1\n  failures_to_trip: 2\n  cooldown_s: 60\n";

#[tokio::test]
async fn a_failing_token_endpoint_opens_the_circuit_and_traffic_fails_over() {
    // `vgem` first, then the healthy OpenAI-compatible `upstream`.
    let both = "  - name: vboth\n    targets:\n      - provider: vtx\n        model: gemini-2.5-flash\n      - provider: upstream\n        model: gpt-4o-mini\n    price: { input_per_mtok: 1.0, output_per_mtok: 2.0 }\n    max_output_tokens: 1000\n";
    let Vertex { h, pem } =
        harness_tail(|m| m.set_token_failure(Some(500)), both, TRIP_TWICE).await;
    let (_, key) = h.key(json!({})).await;
    // Each request fails on Vertex (the token endpoint) and is answered by
    // the second target; the second such failure opens vtx's circuit.
    for _ in 0..2 {
        let resp = h.chat(&key, &chat("vboth", "Hi")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-tollgate-provider"], "upstream");
    }
    let grants = h.mock.calls_to("/token");
    assert!(grants >= 1, "{grants}");
    // Past the token cache's own 3 s hold, an open circuit is what keeps
    // the token endpoint from being asked again: twenty requests go
    // straight to the healthy target.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    for _ in 0..20 {
        let resp = h.chat(&key, &chat("vboth", "Hi")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-tollgate-provider"], "upstream");
        assert_eq!(resp.headers()["x-tollgate-attempts"], "1");
    }
    assert_eq!(h.mock.calls_to("/token"), grants, "no grant while open");
    let metrics = h
        .http
        .get(format!("{}/metrics", h.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    // (`tollgate_circuit_state` is not asserted: the metrics registry is
    // the process's, and the other tests here also name `vtx`.)
    let metrics = metrics.text().await.unwrap();
    let key_line = pem.lines().nth(1).unwrap();
    assert!(!metrics.contains(key_line));
}

#[tokio::test]
async fn a_single_target_with_an_open_circuit_answers_fast() {
    // A token endpoint that fails slowly (1.5 s per grant).
    let Vertex { h, .. } = harness_tail(
        |m| {
            m.set_token_failure(Some(500));
            m.set_token_latency(Duration::from_millis(1500));
        },
        "",
        TRIP_TWICE,
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let (status, _, err) = error_code(h.chat(&key, &chat("vgem", "Hi")).await).await;
    assert_eq!(status, 502, "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("vtx"));
    // The failure is held: the next ones (which open the circuit) answer
    // at once, without another grant.
    let started = Instant::now();
    for _ in 0..10 {
        let (status, code, _) = error_code(h.chat(&key, &chat("vgem", "Hi")).await).await;
        assert_eq!((status, code.as_str()), (502, "upstream_error"));
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert_eq!(h.mock.calls_to("/token"), 1);
}

#[tokio::test]
async fn completions_on_vertex_reach_gemini_and_claude() {
    let Vertex { h, .. } = harness().await;
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "vgem", "prompt": "Complete me", "max_tokens": 2});
    let resp = h.post("/v1/completions", &key, &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"][0]["text"], "word word ");
    let sent = h.mock.last_request().unwrap();
    assert!(
        sent.path.ends_with("gemini-2.5-flash:generateContent"),
        "{}",
        sent.path
    );
    assert!(bearer(&sent).starts_with("Bearer "));

    let body =
        json!({"model": "vclaude", "prompt": "Complete me", "max_tokens": 2, "stream": true});
    let resp = h.post("/v1/completions", &key, &body).await;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let streamed: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .inspect(|c| assert_eq!(c["object"], "text_completion", "{c}"))
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(streamed, "word word ");
    let sent = h.mock.last_request().unwrap();
    assert!(sent.path.ends_with(":streamRawPredict"), "{}", sent.path);
    assert_eq!(sent.json().unwrap()["max_tokens"], 2);
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.status == 200 && r.completion_tokens == 2)
    );
}
