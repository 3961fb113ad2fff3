//! The official Python SDKs against the gateway (installed by `.ci/run`).

use std::process::Command;

use serde_json::json;

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
async fn openai_python_sdk_works_and_does_not_retry_a_402() {
    let h = Harness::start("").await;
    let (_, key) = h.key(json!({})).await;
    // A key whose budget cannot pay for even one worst-case request.
    let (_, broke) = h
        .key(json!({"budget_usd": 0.000001, "period": "daily"}))
        .await;
    let url = h.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_python(
            "openai_sdk.py",
            &[("TG_URL", &url), ("TG_KEY", &key), ("TG_BROKE_KEY", &broke)],
        )
    })
    .await
    .unwrap();
    assert!(out.contains("ok"));
    // 1 + 1 + 1 chat calls and 1 embedding reached the provider; the 402 was
    // neither forwarded nor retried by the SDK (max_retries=5).
    assert_eq!(h.mock.calls(), 4);
    let rows = h.ledger().await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.error_code.as_deref() == Some("budget_exceeded"))
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_python_sdk_works_through_v1_messages() {
    let h = Harness::start("").await;
    let (_, key) = h.key(json!({})).await;
    let url = h.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_python("anthropic_sdk.py", &[("TG_URL", &url), ("TG_KEY", &key)])
    })
    .await
    .unwrap();
    assert!(out.contains("ok"));
    assert_eq!(h.mock.calls(), 2);
}
