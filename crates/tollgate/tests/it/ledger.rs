//! The request log (SPEC §4 `/admin/requests`, §6 one row per request):
//! every authenticated request leaves exactly one ledger row, and that row
//! records what the client actually got — the status and error code of a
//! failure, even when it came after a `200` went out — while still billing
//! what the provider charged.

use std::sync::Arc;

use futures_util::StreamExt;
use mock_provider::FailureMode;
use serde_json::{Value, json};
use tollgate::types::SystemClock;

use crate::common::*;

/// Reads a whole SSE response as (event name, data) pairs.
async fn read_sse(resp: reqwest::Response) -> Vec<(Option<String>, String)> {
    let mut raw = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        raw.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    raw.split("\n\n")
        .filter_map(|event| {
            let mut name = None;
            let mut data = None;
            for line in event.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                }
                if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(d.to_owned());
                }
            }
            data.map(|d| (name, d))
        })
        .collect()
}

/// The `error.code` of the error event a stream ended with.
fn terminal_error_code(events: &[(Option<String>, String)]) -> String {
    let (_, last) = events.last().expect("the stream sent events");
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last event is not JSON ({e}): {last}"));
    v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("the stream did not end with an error event: {last}"))
        .to_owned()
}

#[tokio::test]
async fn a_stream_cut_by_the_provider_is_logged_as_failed_and_still_billed() {
    let h = Harness::start("").await;
    let (_, key) = h.key(json!({})).await;
    h.mock
        .set_failure(FailureMode::StreamCut { after_chunks: 5 });
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "Tell me"}]});
    let resp = h.chat(&key, &body).await;
    assert_eq!(resp.status(), 200, "the headers went out before the cut");
    let events = read_sse(resp).await;
    let code = terminal_error_code(&events);
    assert_eq!(code, "upstream_error");

    let rows = h.ledger().await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.status, 502, "the row says the stream failed: {row:?}");
    assert_eq!(row.error_code.as_deref(), Some(code.as_str()));
    assert!(
        row.completion_tokens >= 5,
        "what was streamed is billed: {row:?}"
    );
    assert!(row.cost.0 > 0);
}

#[tokio::test]
async fn a_cut_stream_on_v1_messages_is_logged_with_the_error_event_it_ended_with() {
    let h = Harness::start("").await;
    let (_, key) = h.key(json!({})).await;
    h.mock
        .set_failure(FailureMode::StreamCut { after_chunks: 5 });
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "Tell me"}]});
    let resp = h.post("/v1/messages", &key, &body).await;
    assert_eq!(resp.status(), 200);
    let events = read_sse(resp).await;
    assert_eq!(
        events.last().and_then(|(name, _)| name.as_deref()),
        Some("error"),
        "{events:?}"
    );
    let code = terminal_error_code(&events);

    let rows = h.ledger().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, 502, "{:?}", rows[0]);
    assert_eq!(rows[0].error_code.as_deref(), Some(code.as_str()));
    assert!(rows[0].completion_tokens >= 5, "{:?}", rows[0]);
}

/// An OpenAI-compatible upstream on 127.0.0.1 that answers every chat
/// request with `sse` as a complete, cleanly ended `text/event-stream` body.
async fn fixed_stream_upstream(sse: &'static str) -> String {
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || async move {
            ([(http::header::CONTENT_TYPE, "text/event-stream")], sse)
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

#[tokio::test]
async fn a_stream_the_provider_ends_without_done_is_logged_as_failed() {
    let chunk = |text: &str| {
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    };
    let sse: &'static str = format!(
        "data: {}\n\ndata: {}\n\n",
        chunk("half an "),
        chunk("answer ")
    )
    .leak();
    let base = fixed_stream_upstream(sse).await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("t.db").display());
    let gw = start_gateway(&config_yaml(&base, &store, ""), Arc::new(SystemClock)).await;
    let h = Harness {
        url: format!("http://{}", gw.addr),
        gw: Some(gw),
        // Unused: the gateway's provider is the fixed upstream above.
        mock: mock_provider::MockProvider::start(Default::default())
            .await
            .unwrap(),
        http: reqwest::Client::new(),
        dir,
    };
    let (_, key) = h.key(json!({})).await;
    let body = json!({"model": "gpt-4o-mini", "stream": true,
        "messages": [{"role": "user", "content": "Tell me"}]});
    let resp = h.chat(&key, &body).await;
    assert_eq!(resp.status(), 200);
    let events = read_sse(resp).await;
    assert!(!events.iter().any(|(_, d)| d == "[DONE]"));
    let code = terminal_error_code(&events);
    assert_eq!(
        code, "upstream_error",
        "the client is told the answer is incomplete"
    );

    let rows = h.ledger().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, 502, "{:?}", rows[0]);
    assert_eq!(rows[0].error_code.as_deref(), Some(code.as_str()));
    assert!(rows[0].completion_tokens >= 2, "{:?}", rows[0]);
    assert!(rows[0].cost.0 > 0);
}

#[tokio::test]
async fn an_answer_v1_messages_cannot_translate_is_logged_as_the_error_the_client_got() {
    let h = Harness::start("").await;
    let (_, key) = h.key(json!({})).await;
    // A 200 whose body is JSON with usage (the provider billed us) but no
    // `choices`: nothing to translate into an Anthropic message.
    h.mock.set_failure(FailureMode::Status(
        200,
        json!({"id": "x", "object": "chat.completion",
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
        .to_string(),
    ));
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hello"}]});
    let resp = h.post("/v1/messages", &key, &body).await;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(status, 502, "{v}");
    assert_eq!(v["type"], "error", "Anthropic's error shape: {v}");
    let code = v["error"]["code"].as_str().unwrap().to_owned();

    let rows = h.ledger().await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.status, status, "{row:?}");
    assert_eq!(row.error_code.as_deref(), Some(code.as_str()));
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens),
        (7, 3),
        "the provider's usage is still billed"
    );
    assert!(row.cost.0 > 0);
}

/// Renames a table of the harness's SQLite store behind the gateway's
/// back. Taking `teams` away makes looking up a key's team (when not
/// cached yet) fail with a store error.
async fn rename_table(h: &Harness, from: &str, to: &str) {
    let db = h.dir.path().join("tollgate.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER TABLE {from} RENAME TO {to}"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn a_team_lookup_failure_still_leaves_one_ledger_row() {
    let h = Harness::start("").await;
    let (key_id, key) = h.key(json!({})).await;
    rename_table(&h, "teams", "teams_gone").await;

    let (status, code, _) = error_code(h.chat(&key, &chat_body("x")).await).await;
    assert_eq!(status, 500);
    assert_eq!(h.mock.calls(), 0);

    let rows = h.ledger().await;
    assert_eq!(rows.len(), 1, "one row per authenticated request");
    assert_eq!(rows[0].key_id.to_string(), key_id);
    assert_eq!(rows[0].status, status);
    assert_eq!(rows[0].error_code.as_deref(), Some(code.as_str()));
    assert_eq!(rows[0].cost.0, 0);
}

#[tokio::test]
async fn a_store_outage_does_not_count_toward_the_keys_error_streak() {
    let guard = "policies:\n  - name: lg\n    type: loop-guard\n    config: { max_identical: 2, window_seconds: 60 }\ndefaults:\n  policies: [lg]\n";
    let h = Harness::start(guard).await;
    let (_, key) = h.key(json!({})).await;
    rename_table(&h, "teams", "teams_gone").await;
    for i in 0..4 {
        let resp = h.chat(&key, &chat_body(&format!("try {i}"))).await;
        assert_eq!(resp.status(), 500);
    }
    rename_table(&h, "teams_gone", "teams").await;
    h.settled().await;

    // The failures were the gateway's, not a loop of the key's: once the
    // store is back, the key is served.
    let resp = h.chat(&key, &chat_body("back")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(h.ledger().await.len(), 5);
}

/// A client that gives up on a slow non-streaming answer (its own timeout)
/// makes the server drop the request midway. The books must close all the
/// same: one row (499 `client_closed`, the prompt billed because it was
/// sent), the budget reservation released, and the parallel slot freed:
/// with `max_parallel: 1`, a leaked slot would lock the key out for good.
#[tokio::test]
async fn a_client_hanging_up_on_a_slow_answer_releases_everything_and_leaves_a_row() {
    let tail = "policies:\n  - name: one-at-a-time\n    type: rate-limit\n    config: { max_parallel: 1 }\nteams:\n  - id: t1\n    policies: [one-at-a-time]\n";
    let h = Harness::start(tail).await;
    let (id, key) = h.key(json!({"budget_usd": 1.0, "period": "daily"})).await;
    h.mock.set_latency(std::time::Duration::from_millis(1500));
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let err = impatient
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(&key)
        .json(&chat_body("slow one"))
        .send()
        .await
        .expect_err("the client times out first");
    assert!(err.is_timeout(), "{err}");

    // The server notices the hang-up and closes the books (bounded wait).
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = h.ledger().await;
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(rows.len(), 1, "one row for the abandoned request: {rows:?}");
    let row = &rows[0];
    assert_eq!(row.status, 499, "{row:?}");
    assert_eq!(row.error_code.as_deref(), Some("client_closed"));
    assert!(
        row.prompt_tokens > 0 && row.cost.0 > 0,
        "the prompt went to the provider, so it is billed: {row:?}"
    );

    h.settled().await;
    let (status, budgets) = h
        .admin(reqwest::Method::GET, "/admin/budgets?team=t1", None)
        .await;
    assert_eq!(status, 200);
    let key_budget = budgets["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id.as_str())
        .unwrap_or_else(|| panic!("the key's budget is listed: {budgets}"));
    assert_eq!(
        key_budget["reserved_usd"].as_f64(),
        Some(0.0),
        "nothing stays reserved: {key_budget}"
    );

    // The slot is free again: the next request is admitted.
    h.mock.set_latency(std::time::Duration::ZERO);
    let resp = h.chat(&key, &chat_body("next")).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
}

/// A refused request's row names the enforcing policy that refused it
/// (`/admin/requests` shows it), beside the code; other rows name none.
#[tokio::test]
async fn a_refusal_names_the_policy_that_refused_it() {
    let tail = "policies:\n  - name: slow\n    type: rate-limit\n    config: { requests_per_minute: 1 }\nteams:\n  - id: t1\n    policies: [slow]\n";
    let h = Harness::start(tail).await;
    let (_, key) = h.key(json!({})).await;
    let (_, poor) = h
        .key(json!({"budget_usd": 0.000001, "period": "daily"}))
        .await;
    assert_eq!(h.chat(&key, &chat_body("one")).await.status(), 200);
    assert_eq!(h.chat(&key, &chat_body("two")).await.status(), 429);
    assert_eq!(h.chat(&poor, &chat_body("dear")).await.status(), 402);
    let rows = h.ledger().await;
    let by_code = |code: Option<&str>| {
        rows.iter()
            .find(|r| r.error_code.as_deref() == code)
            .unwrap_or_else(|| panic!("no row with {code:?}: {rows:?}"))
            .policy
            .clone()
    };
    assert_eq!(by_code(None), None);
    assert_eq!(
        by_code(Some("rate_limit_exceeded")).as_deref(),
        Some("slow")
    );
    assert_eq!(
        by_code(Some("budget_exceeded")).as_deref(),
        Some("key-budget")
    );
    let (status, log) = h.admin(reqwest::Method::GET, "/admin/requests", None).await;
    assert_eq!(status, 200);
    let policies: Vec<&Value> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["policy"])
        .collect();
    assert!(policies.contains(&&json!("slow")), "{log}");
    assert!(policies.contains(&&Value::Null), "{log}");
}
