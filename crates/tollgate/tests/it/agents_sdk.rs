//! Coding agents' own SDKs through the gateway (issue 14): the `anthropic`
//! SDK as Claude Code drives it, the `openai` SDK's Responses API as Codex
//! does; the mock checks what arrived. The SDKs are installed by `.ci/run`.

use std::process::Command;

use serde_json::{Value, json};

use crate::agents::{TAIL, gateway};
use crate::common::*;

fn run_python(script: &str, envs: &[(&str, &str)]) -> String {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("python3")
        .arg(&path)
        .envs(envs.iter().copied())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed (is the SDK installed? `pip install openai anthropic`):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_style_tool_use_with_caching_and_thinking_passes_through() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({"team": "capped"})).await;
    let url = h.url.clone();
    let script_key = key.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_python(
            "anthropic_agent.py",
            &[
                ("TG_URL", &url),
                ("TG_KEY", &script_key),
                ("TG_MODEL", "claude"),
            ],
        )
    })
    .await
    .unwrap();
    assert!(out.contains("ok"));
    let requests = h.mock.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        ["/v1/messages", "/v1/messages", "/v1/messages/count_tokens"]
    );
    for r in &requests {
        // The gateway's key, never the virtual key the SDK sent.
        assert_eq!(r.api_key(), Some(UPSTREAM_KEY));
        assert!(!format!("{:?}", r.headers).contains(&key));
        let body = r.json().unwrap();
        assert_eq!(body["model"], "claude-sonnet-4-5");
        assert_eq!(body["system"][1]["cache_control"]["type"], "ephemeral");
        assert_eq!(body["tools"][0]["cache_control"]["type"], "ephemeral");
    }
    for r in &requests[..2] {
        assert_eq!(
            r.header("anthropic-beta"),
            Some("interleaved-thinking-2025-05-14")
        );
        let body = r.json().unwrap();
        assert_eq!(
            body["thinking"],
            json!({"type": "enabled", "budget_tokens": 1024})
        );
    }
    assert_eq!(requests[0].json().unwrap()["stream"], true);
    // Turn 2 carries turn 1's thinking (with its signature) and tool call
    // back, and the tool result, as the SDK sent them.
    let second = requests[1].json().unwrap();
    let turn = &second["messages"][1]["content"];
    assert_eq!(turn[0]["type"], "thinking");
    assert_eq!(turn[0]["signature"], "mock-signature");
    assert!(
        turn.as_array()
            .unwrap()
            .iter()
            .any(|b| b["type"] == "tool_use")
    );
    let results = &second["messages"][2]["content"];
    assert_eq!(results[0]["type"], "tool_result");
    assert_eq!(results[1]["cache_control"]["type"], "ephemeral");
    // Two billed turns (count_tokens is not billed), thinking as output.
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.status == 200 && r.cost.0 > 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_style_responses_work_natively_and_translated() {
    let h = gateway(TAIL).await;
    let (_, key) = h.key(json!({"team": "capped"})).await;
    let url = h.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_python(
            "openai_responses.py",
            &[
                ("TG_URL", &url),
                ("TG_KEY", &key),
                ("TG_MODELS", "gpt-4o-mini,claude"),
                ("TG_PLAIN_MODELS", "mock-chat"),
            ],
        )
    })
    .await
    .unwrap();
    assert!(
        out.contains("gpt-4o-mini ok") && out.contains("claude ok"),
        "{out}"
    );
    let requests = h.mock.requests();
    let native: Vec<Value> = requests
        .iter()
        .filter(|r| r.path == "/v1/responses")
        .map(|r| r.json().unwrap())
        .collect();
    let translated = requests.iter().filter(|r| r.path == "/v1/messages").count();
    // 4 calls per model: plain, tool call, tool result, stream (the
    // built-in mock, 2, never reaches the mock server).
    assert_eq!((native.len(), translated), (4, 4));
    // The tool round trip reached OpenAI as the SDK sent it.
    let result_turn = &native[2]["input"];
    assert!(
        result_turn
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["type"] == "function_call_output" && i["output"] == "18C")
    );
    assert_eq!(native[1]["tools"][0]["strict"], true);
    // Budgeted: every native call carried a cap.
    assert!(native.iter().all(|b| b["max_output_tokens"].is_u64()));
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 10);
    assert!(rows.iter().all(|r| r.status == 200), "{rows:?}");
}
