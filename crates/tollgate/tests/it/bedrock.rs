//! Kind `bedrock` end to end (SPEC §11): the gateway signs with SigV4 and
//! speaks Converse / ConverseStream to the mock, which verifies every
//! signature with the test's credentials and frames streams as AWS does.
//! Every ingress reaches it; the reserved cap reaches it as
//! `inferenceConfig.maxTokens`; its usage is what the ledger bills.

use std::sync::Arc;

use futures_util::StreamExt;
use mock_provider::{AwsCredentials, BedrockFault, MockConfig};
use serde_json::{Value, json};
use tollgate::types::SystemClock;

use crate::common::*;

const AKID: &str = "AKIDTESTBEDROCK0001";
const SECRET: &str = "bedrock-secret/K7MDENG+bPxRfiCYd0n0tl3ak";
const TOKEN: &str = "FwoGZXIvYXdzEBedrockSessionToken0001";
const CLAUDE: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

fn provider(secret: &str, token: Option<&str>) -> String {
    let token = token
        .map(|t| format!("    aws_session_token: {t}\n"))
        .unwrap_or_default();
    format!(
        "  - name: aws\n    kind: bedrock\n    region: us-east-1\n    base_url: {{mock_root}}\n    aws_access_key_id: {AKID}\n    aws_secret_access_key: \"{secret}\"\n{token}    timeout_s: 5\n"
    )
}

/// `claude` ($1/M in, $2/M out, so costs are whole nano-dollars) on Claude
/// through Bedrock, and `arn-claude` on an inference-profile ARN.
fn models() -> String {
    format!(
        "  - name: claude\n    targets: [{{ provider: aws, model: \"{CLAUDE}\" }}]\n    price: {{ input_per_mtok: 1, output_per_mtok: 2 }}\n    max_output_tokens: 1000\n\
         \x20 - name: arn-claude\n    targets: [{{ provider: aws, model: \"arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.{CLAUDE}\" }}]\n    price: {{ input_per_mtok: 1, output_per_mtok: 2 }}\n    max_output_tokens: 1000\n"
    )
}

fn creds(secret: &str, token: Option<&str>) -> AwsCredentials {
    AwsCredentials {
        access_key_id: AKID.into(),
        secret_access_key: secret.into(),
        session_token: token.map(str::to_owned),
        region: "us-east-1".into(),
    }
}

async fn start(mock: MockConfig, gateway_secret: &str, tail: &str) -> Harness {
    let h = Harness::start_with_models(
        mock,
        &provider(gateway_secret, Some(TOKEN)),
        &models(),
        tail,
        Arc::new(SystemClock),
    )
    .await;
    h.mock.set_aws_credentials(Some(creds(SECRET, Some(TOKEN))));
    h
}

fn capped(limit: f64) -> String {
    format!(
        "policies:\n  - name: cap\n    type: cost-limit\n    config: {{ limit_usd: {limit}, period: daily, action: reject }}\nteams:\n  - id: t1\n    policies: [cap]\n"
    )
}

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// The `data:` payloads of an SSE body.
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: ").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn chat_reaches_converse_signed_with_the_reserved_cap_and_usage_is_billed() {
    let h = start(
        MockConfig {
            completion_tokens: 5,
            ..MockConfig::default()
        },
        SECRET,
        &capped(10.0),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let resp = h.chat(&key, &chat("claude", "Hello there, Bedrock")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "word word word word word "
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // "Hello there, Bedrock" is 20 characters: the mock's 5 prompt tokens.
    assert_eq!(body["usage"]["prompt_tokens"], 5);
    assert_eq!(body["usage"]["completion_tokens"], 5);

    let sent = h.mock.last_request().unwrap();
    assert_eq!(
        sent.path,
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    assert!(
        sent.header("authorization")
            .unwrap()
            .starts_with(&format!("AWS4-HMAC-SHA256 Credential={AKID}/"))
    );
    assert_eq!(sent.header("x-amz-security-token"), Some(TOKEN));
    let converse = sent.json().unwrap();
    // No max_tokens from the client: the model's 1000 were reserved and sent.
    assert_eq!(converse["inferenceConfig"]["maxTokens"], 1000);
    assert_eq!(
        converse["messages"][0]["content"][0]["text"],
        "Hello there, Bedrock"
    );
    assert!(converse.get("model").is_none());
    assert_eq!(h.mock.bedrock_rejected_signatures(), 0);

    let rows = h.ledger().await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].prompt_tokens, rows[0].completion_tokens), (5, 5));
    assert_eq!(rows[0].cost.0, 5 * 1000 + 5 * 2000);
    assert_eq!(rows[0].provider, "aws");
}

#[tokio::test]
async fn streams_are_unframed_translated_and_billed_from_the_metadata_event() {
    let h = start(
        MockConfig {
            completion_tokens: 7,
            ..MockConfig::default()
        },
        SECRET,
        &capped(10.0),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let mut req = chat("claude", "Stream it please");
    req["stream"] = json!(true);
    req["max_tokens"] = json!(3);
    req["stream_options"] = json!({"include_usage": true});
    let resp = h.chat(&key, &req).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = resp.text().await.unwrap();
    let data = sse_data(&text);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "word word word ");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "length")
    );
    let usage = chunks.iter().find(|c| c["usage"].is_object()).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    let sent = h.mock.last_request().unwrap();
    assert!(sent.path.ends_with("/converse-stream"));
    assert_eq!(sent.json().unwrap()["inferenceConfig"]["maxTokens"], 3);
    let rows = h.ledger().await;
    assert_eq!(rows[0].status, 200);
    assert_eq!((rows[0].prompt_tokens, rows[0].completion_tokens), (4, 3));
    assert_eq!(rows[0].cost.0, 4 * 1000 + 3 * 2000);
}

#[tokio::test]
async fn tools_go_out_as_tool_config_and_come_back_as_tool_calls_streamed_or_not() {
    let h = start(MockConfig::default(), SECRET, "").await;
    let (_, key) = h.key(json!({})).await;
    let mut req = chat("claude", "Weather in Paris? [[mock:tool_use]]");
    req["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    req["tool_choice"] = json!("auto");
    let body: Value = h.chat(&key, &req).await.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls", "{body}");
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "tooluse_mock_1");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris"}));
    let sent = h.mock.last_request().unwrap().json().unwrap();
    assert_eq!(
        sent["toolConfig"]["tools"][0]["toolSpec"]["name"],
        "get_weather"
    );
    assert_eq!(sent["toolConfig"]["toolChoice"], json!({"auto": {}}));
    // No budget applies, yet a cap goes out: Bedrock's own default would
    // be the model's, not what the gateway priced.
    assert_eq!(sent["inferenceConfig"]["maxTokens"], 1000);

    // The tool's answer goes back as a toolResult block.
    let mut follow = req.clone();
    follow["messages"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "tooluse_mock_1", "content": "sunny"}
    ]);
    assert_eq!(h.chat(&key, &follow).await.status(), 200);
    let sent = h.mock.last_request().unwrap().json().unwrap();
    assert_eq!(
        sent["messages"][2]["content"][0]["toolResult"]["toolUseId"],
        "tooluse_mock_1"
    );

    req["stream"] = json!(true);
    let text = h.chat(&key, &req).await.text().await.unwrap();
    let chunks: Vec<Value> = sse_data(&text)
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let start = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["name"].as_str());
    assert_eq!(start, Some("get_weather"));
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"city": "Paris"})
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
}

#[tokio::test]
async fn the_messages_ingress_reaches_a_bedrock_claude_target() {
    let h = start(
        MockConfig {
            completion_tokens: 4,
            ..MockConfig::default()
        },
        SECRET,
        &capped(10.0),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let req = json!({"model": "claude", "max_tokens": 50, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi from Anthropic SDK"}]});
    let resp = h
        .http
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", &key)
        .header("anthropic-version", "2023-06-01")
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "message", "{body}");
    assert_eq!(body["content"][0]["text"], "word word word word ");
    assert_eq!(body["usage"]["output_tokens"], 4);
    // Claude on Bedrock is reached natively (InvokeModel): the client's
    // Messages body, untranslated but for Bedrock's version field.
    let sent = h.mock.last_request().unwrap();
    assert!(sent.path.ends_with("/invoke"), "{}", sent.path);
    let invoked = sent.json().unwrap();
    assert_eq!(invoked["system"], "Be brief.");
    assert_eq!(invoked["max_tokens"], 50);
    assert_eq!(invoked["anthropic_version"], "bedrock-2023-05-31");
    assert!(invoked.get("model").is_none(), "{invoked}");

    let mut stream = req.clone();
    stream["stream"] = json!(true);
    let text = h
        .http
        .post(format!("{}/v1/messages", h.url))
        .header("x-api-key", &key)
        .json(&stream)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("event: message_start") && text.contains("event: message_stop"),
        "{text}"
    );
    assert!(text.contains("\"text\":\"word \""));
    let sent = h.mock.last_request().unwrap();
    assert!(
        sent.path.ends_with("/invoke-with-response-stream"),
        "{}",
        sent.path
    );
    // Billed from the native stream's own usage.
    h.settled().await;
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.status == 200 && r.completion_tokens == 4),
        "{rows:?}"
    );
}

#[tokio::test]
async fn an_inference_profile_arn_is_percent_encoded_and_signed_as_aws_expects() {
    let h = start(MockConfig::default(), SECRET, "").await;
    let (_, key) = h.key(json!({})).await;
    let resp = h.chat(&key, &chat("arn-claude", "hello")).await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let sent = h.mock.last_request().unwrap();
    assert_eq!(
        sent.path,
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    );
    assert_eq!(h.mock.bedrock_rejected_signatures(), 0);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_provider_and_is_a_502_naming_it() {
    let wrong = "not-the-secret-the-mock-knows-0000000000";
    let h = start(MockConfig::default(), wrong, &capped(10.0)).await;
    let (_, key) = h.key(json!({})).await;
    let resp = h.chat(&key, &chat("claude", "hello")).await;
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (502, "upstream_error"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("`aws`"), "{message}");
    let text = body.to_string();
    assert!(!text.contains(wrong) && !text.contains(SECRET) && !text.contains(TOKEN));
    assert_eq!(
        h.mock.bedrock_rejected_signatures(),
        1,
        "the mock checked the signature"
    );
    // Nothing was generated: nothing billed. The mock's 403 quotes the
    // canonical request with the session token, as AWS does: it is in no
    // ledger row and no admin view.
    let rows = h.ledger().await;
    assert_eq!(rows[0].cost.0, 0);
    let recorded = format!("{rows:?}");
    assert!(!recorded.contains(TOKEN) && !recorded.contains(wrong));
    let (_, requests) = h.admin(reqwest::Method::GET, "/admin/requests", None).await;
    let requests = requests.to_string();
    assert!(!requests.contains(TOKEN) && !requests.contains(wrong));

    // The right secret but a stale session token: refused too.
    h.mock
        .set_aws_credentials(Some(creds(wrong, Some("another-token"))));
    let (status, ..) = error_code(h.chat(&key, &chat("claude", "hello")).await).await;
    assert_eq!(status, 502);
    // And with everything right, it goes through: signing is what mattered.
    h.mock.set_aws_credentials(Some(creds(wrong, Some(TOKEN))));
    assert_eq!(h.chat(&key, &chat("claude", "hello")).await.status(), 200);
}

#[tokio::test]
async fn a_corrupt_frame_or_an_exception_ends_the_stream_cleanly() {
    let h = start(MockConfig::default(), SECRET, &capped(10.0)).await;
    let (_, key) = h.key(json!({})).await;
    let mut req = chat("claude", "stream");
    req["stream"] = json!(true);
    for (fault, expect) in [
        (BedrockFault::CorruptCrc, "corrupt event-stream frame"),
        (BedrockFault::ExceptionAfter(3), "throttlingException"),
    ] {
        h.mock.set_bedrock_fault(fault);
        let resp = h.chat(&key, &req).await;
        // Either refused before the first byte or ended with an error event.
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert!(text.contains(expect), "{status}: {text}");
        assert!(!text.contains("[DONE]"), "{text}");
    }
    h.mock.set_bedrock_fault(BedrockFault::None);
    assert_eq!(
        h.chat(&key, &req).await.status(),
        200,
        "the gateway lives on"
    );
    let mut rows = h.ledger().await;
    for _ in 0..50 {
        if rows.len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        rows = h.ledger().await;
    }
    assert_eq!(rows.len(), 3, "{rows:#?}");
    // The exception came after 3 generated tokens: at least those are billed.
    let after_exception = &rows[1];
    assert!(
        after_exception.completion_tokens >= 3,
        "{after_exception:?}"
    );
}

#[tokio::test]
async fn embeddings_go_through_invoke_model_for_titan_and_cohere() {
    let h = Harness::start_with_models(
        MockConfig::default(),
        &provider(SECRET, None),
        "  - name: titan\n    targets: [{ provider: aws, model: \"amazon.titan-embed-text-v2:0\" }]\n\
         \x20 - name: cohere\n    targets: [{ provider: aws, model: cohere.embed-english-v3 }]\n\
         \x20 - name: nova\n    targets: [{ provider: aws, model: \"amazon.nova-lite-v1:0\" }]\n",
        &capped(1.0),
        Arc::new(SystemClock),
    )
    .await;
    h.mock.set_aws_credentials(Some(creds(SECRET, None)));
    let (_, key) = h.key(json!({})).await;
    let input = json!(["first text to embed", "second one"]);
    for model in ["titan", "cohere"] {
        let resp = h
            .post(
                "/v1/embeddings",
                &key,
                &json!({"model": model, "input": input}),
            )
            .await;
        assert_eq!(resp.status(), 200, "{model}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["object"], "list");
        assert_eq!(body["data"].as_array().unwrap().len(), 2, "{body}");
        assert_eq!(body["data"][1]["index"], 1);
        assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 8);
        // 19 and 10 characters: 4 + 2 tokens as the provider counted them.
        assert_eq!(body["usage"]["prompt_tokens"], 6, "{model}");
    }
    // Titan takes one text per call, Cohere a list.
    assert_eq!(
        h.mock
            .calls_to("/model/amazon.titan-embed-text-v2%3A0/invoke"),
        2
    );
    assert_eq!(h.mock.calls_to("/model/cohere.embed-english-v3/invoke"), 1);
    assert_eq!(h.mock.bedrock_rejected_signatures(), 0);
    let rows = h.ledger().await;
    // $0.02/M for Titan v2, $0.10/M for Cohere, from the built-in table.
    let mut costs: Vec<u64> = rows.iter().map(|r| r.cost.0).collect();
    costs.sort_unstable();
    assert_eq!(costs, vec![6 * 20, 6 * 100]);

    // A chat model has no embeddings: a clear 400 that never reaches AWS.
    let calls = h.mock.calls();
    let resp = h
        .post(
            "/v1/embeddings",
            &key,
            &json!({"model": "nova", "input": "x"}),
        )
        .await;
    let (status, code, body) = error_code(resp).await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bedrock")
    );
    assert_eq!(h.mock.calls(), calls);
}

/// Hostile `usage` from the provider (wrong types, negative, absurd):
/// billed by the gateway's own estimate or at most the reservation, and
/// the cap holds.
#[tokio::test]
async fn hostile_usage_never_lets_spend_past_the_cap() {
    let h = start(
        MockConfig {
            completion_tokens: 50,
            ..MockConfig::default()
        },
        SECRET,
        &capped(0.01),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let mut req = chat("claude", "hostile numbers");
    req["max_tokens"] = json!(50);
    for usage in [
        json!({"inputTokens": "12", "outputTokens": 50}),
        json!({"inputTokens": -4, "outputTokens": -50}),
        json!({"inputTokens": 1e30, "outputTokens": 1e30}),
        json!({"inputTokens": 18446744073709551615u64, "outputTokens": 18446744073709551615u64}),
        json!(null),
        json!({"outputTokens": null}),
    ] {
        h.mock.set_bedrock_usage_json(Some(usage.clone()));
        for stream in [false, true] {
            req["stream"] = json!(stream);
            let resp = h.chat(&key, &req).await;
            if resp.status() == 402 {
                continue;
            }
            assert_eq!(resp.status(), 200, "{usage}");
            resp.bytes().await.unwrap();
        }
    }
    let rows = h.ledger().await;
    let spent: u64 = rows.iter().map(|r| r.cost.0).sum();
    assert!(spent <= 10_000_000, "spent {spent} over the cap");
    // Each answer generated 50 tokens: none was billed as free.
    for row in rows.iter().filter(|r| r.status == 200) {
        assert!(row.cost.0 >= 50 * 2000, "{row:?}");
        // The reservation: the estimate of a short prompt plus 50 tokens.
        assert!(row.cost.0 <= 2_000 * 1000 + 50 * 2000, "{row:?}");
    }
}

/// ~100 concurrent requests, half of them streams, against a cap that
/// fits far fewer: no 402 reaches the provider, spend never passes the
/// cap, and every billed row is exactly the provider's usage priced.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_and_streams_never_overshoot_and_bill_the_providers_usage() {
    let h = start(
        MockConfig {
            completion_tokens: 1000,
            chunk_delay: std::time::Duration::from_millis(1),
            ..MockConfig::default()
        },
        SECRET,
        &capped(0.01),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let text = "Count to one hundred, slowly";
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let (http, url, key) = (h.http.clone(), h.url.clone(), key.clone());
            let mut body = chat("claude", text);
            body["max_tokens"] = json!(100);
            if i % 2 == 0 {
                body["stream"] = json!(true);
            }
            tokio::spawn(async move {
                let resp = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&body)
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
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            402 => {}
            other => panic!("status {other}"),
        }
    }
    assert!(ok > 0 && ok < 100, "{ok} admitted");
    assert_eq!(
        h.mock.calls() as usize,
        ok,
        "no rejected request reached Bedrock"
    );
    // What is left is spent one request at a time: the cap is usable to
    // within one worst case, never past it.
    let mut body = chat("claude", text);
    body["max_tokens"] = json!(100);
    for _ in 0..200 {
        let resp = h.chat(&key, &body).await;
        if resp.status() == 402 {
            break;
        }
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
        ok += 1;
    }
    assert_eq!(h.mock.calls() as usize, ok);
    for r in h.mock.requests() {
        assert_eq!(r.json().unwrap()["inferenceConfig"]["maxTokens"], 100);
    }
    let rows = h.ledger().await;
    let billed: Vec<_> = rows.iter().filter(|r| r.status == 200).collect();
    assert_eq!(billed.len(), ok);
    let prompt = (text.len() as u64 / 4).max(1);
    for row in &billed {
        assert_eq!(
            (row.prompt_tokens, row.completion_tokens),
            (prompt, 100),
            "{row:?}"
        );
        assert_eq!(row.cost.0, prompt * 1000 + 100 * 2000);
    }
    let spent: u64 = rows.iter().map(|r| r.cost.0).sum();
    assert!(spent <= 10_000_000, "spent {spent} over the cap");
    assert_eq!(spent, ok as u64 * (prompt * 1000 + 100 * 2000));
    let worst = 300_000; // > the input estimate at $1/M + 100 tokens at $2/M
    assert!(
        spent + worst >= 10_000_000,
        "spent {spent}: the cap was not usable"
    );
}

/// The native Claude capability (`InvokeModel`), called directly the way
/// the native `/v1/messages` passthrough calls it.
#[tokio::test]
async fn claude_natively_through_invoke_model_with_an_anthropic_body() {
    use tollgate::providers::claude_native::{NativeCall, NativeResponse};
    let h = start(
        MockConfig {
            completion_tokens: 3,
            ..MockConfig::default()
        },
        SECRET,
        "",
    )
    .await;
    let yaml = config_yaml(&h.mock.base_url(), "\"sqlite::memory:\"", "").replacen(
        "providers:\n",
        &format!(
            "providers:\n{}",
            provider(SECRET, Some(TOKEN)).replace("{mock_root}", &h.mock.root_url())
        ),
        1,
    );
    let config = tollgate::config::load_str(&yaml, "t.yaml", &|_| None).unwrap();
    let provider = tollgate::providers::build(
        config.provider("aws").unwrap(),
        tollgate::providers::http_client(),
    );
    let native = provider
        .native_messages()
        .expect("bedrock serves Claude natively");
    let call = |stream: bool| NativeCall {
        body: json!({"max_tokens": 10, "messages": [{"role": "user", "content": "hi there you"}],
            "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]})
        .as_object()
        .unwrap()
        .clone(),
        model: CLAUDE.into(),
        stream,
        betas: vec![],
        timeout: std::time::Duration::from_secs(5),
        request_id: "req-native".into(),
    };
    let Ok(NativeResponse::Complete { body, usage }) = native.messages(call(false)).await else {
        panic!("a complete answer");
    };
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(usage.unwrap().completion_tokens, 3);
    let sent = h.mock.last_request().unwrap();
    assert_eq!(
        sent.path,
        "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke"
    );
    let sent = sent.json().unwrap();
    assert_eq!(sent["anthropic_version"], "bedrock-2023-05-31");
    assert_eq!(sent["system"][0]["cache_control"]["type"], "ephemeral");

    let Ok(NativeResponse::Stream(mut events)) = native.messages(call(true)).await else {
        panic!("a stream");
    };
    let mut kinds = Vec::new();
    while let Some(event) = events.next().await {
        kinds.push(event.unwrap().event.unwrap_or_default());
    }
    assert_eq!(kinds.first().map(String::as_str), Some("message_start"));
    assert_eq!(kinds.last().map(String::as_str), Some("message_stop"));
    assert_eq!(
        kinds.iter().filter(|k| *k == "content_block_delta").count(),
        3
    );
    assert!(
        h.mock
            .last_request()
            .unwrap()
            .path
            .ends_with("/invoke-with-response-stream")
    );
    assert_eq!(h.mock.bedrock_rejected_signatures(), 0);
}

#[tokio::test]
async fn completions_go_through_converse_as_one_turn_streamed_or_not() {
    let h = start(
        MockConfig {
            completion_tokens: 7,
            ..MockConfig::default()
        },
        SECRET,
        &capped(10.0),
    )
    .await;
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "claude", "prompt": "Hello there, Bedrock", "max_tokens": 3,
        "stop": ["END"]});
    let resp = h.post("/v1/completions", &key, &body).await;
    assert_eq!(resp.status(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["object"], "text_completion");
    assert_eq!(answer["choices"][0]["text"], "word word word ");
    assert_eq!(answer["choices"][0]["finish_reason"], "length");
    assert_eq!(answer["usage"]["prompt_tokens"], 5);
    assert_eq!(answer["usage"]["completion_tokens"], 3);
    let sent = h.mock.last_request().unwrap();
    assert!(sent.path.ends_with("/converse"), "{}", sent.path);
    let converse = sent.json().unwrap();
    assert_eq!(converse["messages"][0]["role"], "user");
    assert_eq!(
        converse["messages"][0]["content"][0]["text"],
        "Hello there, Bedrock"
    );
    assert_eq!(converse["inferenceConfig"]["maxTokens"], 3);
    assert_eq!(converse["inferenceConfig"]["stopSequences"], json!(["END"]));

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let resp = h.post("/v1/completions", &key, &streamed).await;
    assert_eq!(resp.status(), 200);
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "text_completion"));
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert_eq!(text, "word word word ");
    let usage = chunks.iter().find(|c| c["usage"].is_object()).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3);
    assert!(
        h.mock
            .last_request()
            .unwrap()
            .path
            .ends_with("/converse-stream")
    );

    // A prompt list is one call per prompt elsewhere; here it is refused,
    // before anything is sent or billed.
    let calls = h.mock.calls();
    let list = json!({"model": "claude", "prompt": ["one", "two"], "max_tokens": 3});
    let (status, code, err) = error_code(h.post("/v1/completions", &key, &list).await).await;
    assert_eq!((status, code.as_str()), (400, "invalid_request"), "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("one prompt per request")
    );
    assert_eq!(h.mock.calls(), calls);

    let rows = h.ledger().await;
    let billed: Vec<_> = rows.iter().filter(|r| r.status == 200).collect();
    assert_eq!(billed.len(), 2);
    for row in billed {
        assert_eq!((row.prompt_tokens, row.completion_tokens), (5, 3));
        assert_eq!(row.cost.0, 5 * 1000 + 3 * 2000);
    }
    assert!(
        rows.iter()
            .filter(|r| r.status == 400)
            .all(|r| r.cost.0 == 0)
    );
}
