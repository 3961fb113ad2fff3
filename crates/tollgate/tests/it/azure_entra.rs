//! Kind `azure` with `entra:` (SPEC §11): the client-credentials grant
//! against the mock's Entra token endpoint (which verifies it), the token
//! as `Authorization: Bearer` on every Azure call, cached, refreshed before
//! expiry, fetched once however many requests wait for it, and a failing
//! token endpoint answered fast as a 502 naming the provider, never with
//! the secret. Also the config checks of the cloud provider keys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mock_provider::{EntraApp, MockConfig};
use serde_json::{Value, json};
use tollgate::types::SystemClock;

use crate::common::*;

const TENANT: &str = "7f3c1a2b-tenant-contoso";
const CLIENT_ID: &str = "app-0b1c2d3e";
const CLIENT_SECRET: &str = "entra~secret.d0n0tl3ak~Q8";

fn provider() -> String {
    format!(
        "  - name: azure-eu\n    kind: azure\n    base_url: {{mock_root}}\n    timeout_s: 5\n    entra:\n      tenant_id: {TENANT}\n      client_id: {CLIENT_ID}\n      client_secret: \"{CLIENT_SECRET}\"\n      authority_url: {{mock_root}}\n"
    )
}

const MODELS: &str = "  - name: azure-4o\n    targets: [{ provider: azure-eu, model: gpt-4o }]\n    price: { input_per_mtok: 1, output_per_mtok: 2 }\n    max_output_tokens: 1000\n";

fn app(lifetime: Duration) -> EntraApp {
    EntraApp {
        tenant_id: TENANT.into(),
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
        token_lifetime: lifetime,
    }
}

async fn start(lifetime: Duration) -> Harness {
    let h = Harness::start_with_models(
        MockConfig::default(),
        &provider(),
        MODELS,
        "",
        Arc::new(SystemClock),
    )
    .await;
    h.mock.set_entra_app(Some(app(lifetime)));
    h
}

fn chat() -> Value {
    json!({"model": "azure-4o", "messages": [{"role": "user", "content": "Hello Azure"}]})
}

#[tokio::test]
async fn azure_calls_carry_a_cached_entra_token_from_a_verified_grant() {
    let h = start(Duration::from_secs(3600)).await;
    let (_, key) = h.key(json!({})).await;
    for _ in 0..3 {
        let resp = h.chat(&key, &chat()).await;
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    let mut stream = chat();
    stream["stream"] = json!(true);
    let text = h.chat(&key, &stream).await.text().await.unwrap();
    assert!(text.contains("[DONE]"), "{text}");
    assert_eq!(h.mock.entra_token_requests(), 1, "the token is cached");
    let token_request = h
        .mock
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/oauth2/v2.0/token"))
        .unwrap();
    assert_eq!(token_request.path, format!("/{TENANT}/oauth2/v2.0/token"));
    let sent = h.mock.last_request().unwrap();
    assert_eq!(sent.path, "/openai/deployments/gpt-4o/chat/completions");
    assert!(
        sent.header("authorization")
            .unwrap()
            .starts_with("Bearer mock-entra-token-")
    );
    assert!(sent.header("api-key").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_requests_make_one_token_request() {
    let h = start(Duration::from_secs(3600)).await;
    h.mock.set_entra_delay(Duration::from_millis(200));
    let (_, key) = h.key(json!({})).await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (http, url, key) = (h.http.clone(), h.url.clone(), key.clone());
            tokio::spawn(async move {
                let resp = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&chat())
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let mut s = resp.bytes_stream();
                while s.next().await.is_some() {}
                status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(h.mock.entra_token_requests(), 1, "single-flight refresh");
}

#[tokio::test]
async fn the_token_is_refreshed_before_it_expires() {
    // A 2 s token is replaced at half its life, while still valid: the mock
    // refuses expired tokens, so a late refresh would show as a 401/502.
    let h = start(Duration::from_secs(2)).await;
    let (_, key) = h.key(json!({})).await;
    assert_eq!(h.chat(&key, &chat()).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(h.chat(&key, &chat()).await.status(), 200);
    assert_eq!(h.mock.entra_token_requests(), 2);
    assert_eq!(h.chat(&key, &chat()).await.status(), 200);
    assert_eq!(h.mock.entra_token_requests(), 2);
}

#[tokio::test]
async fn a_failing_token_endpoint_is_a_fast_502_naming_the_provider_and_never_the_secret() {
    let h = start(Duration::from_secs(3600)).await;
    let (_, key) = h.key(json!({})).await;
    h.mock.set_entra_failure(Some(503));
    let (status, code, body) = error_code(h.chat(&key, &chat()).await).await;
    assert_eq!((status, code.as_str()), (502, "upstream_error"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`azure-eu`") && message.contains("Entra"),
        "{message}"
    );
    // Requests meanwhile fail at once, without asking the endpoint again.
    let started = Instant::now();
    for _ in 0..20 {
        let resp = h.chat(&key, &chat()).await;
        assert_eq!(resp.status(), 502);
        assert!(!resp.text().await.unwrap().contains(CLIENT_SECRET));
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(h.mock.entra_token_requests(), 1, "the failure is cached");
    assert_eq!(
        h.mock
            .calls_to("/openai/deployments/gpt-4o/chat/completions"),
        0
    );
    let rows = h.ledger().await;
    assert!(
        rows.iter()
            .all(|r| r.cost.0 == 0 && r.error_code.as_deref() == Some("upstream_error"))
    );
    assert!(!format!("{rows:?}").contains(CLIENT_SECRET));
    // Admin views never hold it either.
    let (_, requests) = h.admin(reqwest::Method::GET, "/admin/requests", None).await;
    assert!(!requests.to_string().contains(CLIENT_SECRET));
}

#[tokio::test]
async fn a_token_azure_refuses_is_dropped_and_the_next_request_signs_in_again() {
    let h = start(Duration::from_secs(3600)).await;
    let (_, key) = h.key(json!({})).await;
    assert_eq!(h.chat(&key, &chat()).await.status(), 200);
    h.mock.revoke_entra_tokens();
    let (status, code, body) = error_code(h.chat(&key, &chat()).await).await;
    assert_eq!((status, code.as_str()), (502, "upstream_error"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`azure-eu`")
    );
    assert_eq!(h.chat(&key, &chat()).await.status(), 200);
    assert_eq!(h.mock.entra_token_requests(), 2);
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused_by_entra_and_is_a_502() {
    let h = start(Duration::from_secs(3600)).await;
    let mut wrong = app(Duration::from_secs(3600));
    wrong.client_secret = "the-secret-entra-has".into();
    h.mock.set_entra_app(Some(wrong));
    let (_, key) = h.key(json!({})).await;
    let (status, code, body) = error_code(h.chat(&key, &chat()).await).await;
    assert_eq!((status, code.as_str()), (502, "upstream_error"), "{body}");
    let text = body.to_string();
    assert!(text.contains("invalid_client"), "{text}");
    assert!(!text.contains(CLIENT_SECRET) && !text.contains("the-secret-entra-has"));
}

fn check(yaml: &str) -> String {
    match tollgate::config::load_str(yaml, "t.yaml", &|_| None) {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn cloud_provider_keys_are_validated_with_lines_and_no_secret_in_messages() {
    let base = "store: \"sqlite::memory:\"\nproviders:\n";
    let both = format!(
        "{base}  - name: az\n    kind: azure\n    base_url: https://x.openai.azure.com\n    api_key: sk-azure-secret-value\n    entra: {{ tenant_id: t, client_id: c, client_secret: entra-secret-value }}\n"
    );
    let e = check(&both);
    assert!(
        e.contains("t.yaml:6:") && e.contains("either `api_key` or `entra`"),
        "{e}"
    );
    assert!(!e.contains("secret-value"), "{e}");

    let missing = format!(
        "{base}  - name: az\n    kind: azure\n    base_url: https://x.openai.azure.com\n    entra: {{ tenant_id: t, client_id: c }}\n"
    );
    let e = check(&missing);
    assert!(
        e.contains("providers[0].entra: missing `client_secret`"),
        "{e}"
    );

    let typo = format!(
        "{base}  - name: az\n    kind: azure\n    base_url: https://x.openai.azure.com\n    entra: {{ tenant_id: t, client_id: c, client_secret: s, authorty_url: \"https://l\" }}\n"
    );
    let e = check(&typo);
    assert!(e.contains("authorty_url"), "{e}");

    let entra_on_openai = format!(
        "{base}  - name: o\n    kind: openai\n    entra: {{ tenant_id: t, client_id: c, client_secret: s }}\n"
    );
    assert!(check(&entra_on_openai).contains("only an `azure` provider takes `entra`"));

    let no_region = format!(
        "{base}  - name: aws\n    kind: bedrock\n    aws_access_key_id: AKID\n    aws_secret_access_key: aws-secret-value-xyz\n"
    );
    let e = check(&no_region);
    assert!(
        e.contains("t.yaml:3: providers[0]: missing `region`"),
        "{e}"
    );
    assert!(!e.contains("aws-secret-value-xyz"), "{e}");

    let bad = format!(
        "{base}  - name: aws\n    kind: bedrock\n    region: \"US East\"\n    aws_access_key_id: AKID\n    aws_secret_access_key: aws-secret-value-xyz\n    api_key: k\n    regin: x\n"
    );
    let e = check(&bad);
    assert!(e.contains("regin"), "{e}");

    let region_on_openai = format!("{base}  - name: o\n    kind: openai\n    region: us-east-1\n");
    assert!(check(&region_on_openai).contains("only a `bedrock` provider takes `region`"));

    // A built-in Bedrock price holds in the regions it lists only.
    let eu = format!(
        "{base}  - name: aws\n    kind: bedrock\n    region: eu-central-1\n    aws_access_key_id: AKID\n    aws_secret_access_key: s3cr3t-value\nmodels:\n  - name: c\n    targets: [{{ provider: aws, model: anthropic.claude-3-5-sonnet-20240620-v1:0 }}]\n"
    );
    let e = check(&eu);
    assert!(e.contains("t.yaml:9: models[0]: the built-in price of `anthropic.claude-3-5-sonnet-20240620-v1:0` is AWS's for us-east-1"), "{e}");
    let us = eu.replace("eu-central-1", "us-west-2");
    assert_eq!(check(&us), "");
    let config = tollgate::config::load_str(&us, "t.yaml", &|_| None).unwrap();
    let aws = config.provider("aws").unwrap();
    assert_eq!(
        aws.base_url,
        "https://bedrock-runtime.us-west-2.amazonaws.com"
    );
    assert!(!format!("{config:?}").contains("s3cr3t-value"));
    let priced = config.model("c").unwrap().price;
    assert_eq!(priced.input_per_mtok.0, 3_000_000_000);
}

#[tokio::test]
async fn a_failing_entra_endpoint_opens_the_circuit_and_traffic_fails_over() {
    let models = format!(
        "{MODELS}  - name: azure-both\n    targets: [{{ provider: azure-eu, model: gpt-4o }}, {{ provider: upstream, model: gpt-4o-mini }}]\n    price: {{ input_per_mtok: 1, output_per_mtok: 2 }}\n    max_output_tokens: 1000\n"
    );
    let tail = "routing:\n  retries: 0\n  backoff_ms: 1\n  failures_to_trip: 2\n  cooldown_s: 60\n";
    let h = Harness::start_with_models(
        MockConfig::default(),
        &provider(),
        &models,
        tail,
        Arc::new(SystemClock),
    )
    .await;
    h.mock.set_entra_app(Some(app(Duration::from_secs(3600))));
    h.mock.set_entra_failure(Some(503));
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "azure-both", "messages": [{"role": "user", "content": "Hi"}]});
    for _ in 0..2 {
        let resp = h.chat(&key, &body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-tollgate-provider"], "upstream");
    }
    let asked = h.mock.entra_token_requests();
    assert!(asked >= 1);
    // Past the 5 s failure hold of the token cache, the open circuit alone
    // keeps Entra from being asked: the traffic goes to the healthy target.
    tokio::time::sleep(Duration::from_millis(5200)).await;
    for _ in 0..20 {
        let resp = h.chat(&key, &body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-tollgate-provider"], "upstream");
        assert_eq!(resp.headers()["x-tollgate-attempts"], "1");
    }
    assert_eq!(h.mock.entra_token_requests(), asked, "no grant while open");
    let metrics = h
        .http
        .get(format!("{}/metrics", h.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // (`tollgate_circuit_state` is not asserted: the metrics registry is
    // the process's, and the other tests here also name `azure-eu`.)
    assert!(!metrics.contains(CLIENT_SECRET));
}
