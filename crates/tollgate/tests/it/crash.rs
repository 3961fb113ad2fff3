//! SPEC §2 "Crashes and outages never reset a budget", on the embedded
//! default (SQLite, in-process counters): the real binary is SIGKILLed with
//! spend its ledger writer has not written yet, or with requests still at
//! the provider, and the restarted gateway must count all of it.

use std::path::Path;
use std::time::Duration;

use mock_provider::{FailureMode, MockConfig, MockProvider};
use serde_json::{Value, json};

use crate::common::*;
use crate::process::{Proc, spawn};

/// $1/M input, $2/M output, `max_tokens: 100` and a mock that generates
/// exactly 100 tokens: every request reserves a little over $0.0002 and
/// costs about as much, so $0.0005 fits exactly two and $0.0008 three.
fn capped(limit_usd: f64) -> String {
    format!(
        "policies:\n  - name: cap\n    type: cost-limit\n    config: {{ limit_usd: {limit_usd}, period: daily, action: reject }}\nteams:\n  - id: t1\n    policies: [cap]\n"
    )
}

fn body(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 100, "messages": [{"role": "user", "content": text}]})
}

fn mock_config() -> MockConfig {
    MockConfig {
        completion_tokens: 100,
        ..MockConfig::default()
    }
}

async fn create_key(http: &reqwest::Client, url: &str) -> String {
    let resp = http
        .post(format!("{url}/admin/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"team": "t1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn chat(http: &reqwest::Client, url: &str, key: &str, text: &str) -> reqwest::Response {
    http.post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body(text))
        .send()
        .await
        .unwrap()
}

/// SIGKILL, and wait until the process is gone.
fn kill(p: &mut Proc) {
    let ok = std::process::Command::new("kill")
        .args(["-KILL", &p.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -KILL");
    let _ = p.child.wait();
}

async fn ledger(dir: &Path) -> Vec<tollgate::store::LedgerRow> {
    let store =
        tollgate::store::connect(&format!("sqlite://{}", dir.join("tollgate.db").display()))
            .await
            .unwrap();
    store
        .requests(&tollgate::store::RequestsQuery {
            team: None,
            key: None,
            limit: 100_000,
        })
        .await
        .unwrap()
}

async fn team_budget(http: &reqwest::Client, url: &str) -> Value {
    let resp = http
        .get(format!("{url}/admin/budgets?team=t1"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let budgets: Value = resp.json().await.unwrap();
    budgets["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["policy"] == "cap")
        .cloned()
        .unwrap_or_else(|| panic!("no `cap` budget in {budgets}"))
}

#[tokio::test]
async fn sigkill_right_after_two_answers_does_not_reopen_a_cap_that_fits_two() {
    let mock = MockProvider::start(mock_config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let yaml = config_yaml(&mock.base_url(), &store, &capped(0.0005));
    let mut p = spawn(dir.path(), &yaml, "gateway.log");
    let http = reqwest::Client::new();
    let key = create_key(&http, &p.url).await;
    let mut answered = Vec::new();
    for text in ["one", "two"] {
        let r = chat(&http, &p.url, &key, text).await;
        assert_eq!(r.status(), 200);
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        let cost: f64 = r.headers()["x-tollgate-cost-usd"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        answered.push((id, cost));
    }
    // No pause: the ledger writer has most likely not written these rows.
    kill(&mut p);

    let p2 = spawn(dir.path(), &yaml, "gateway2.log");
    let r = chat(&http, &p2.url, &key, "three").await;
    assert_eq!(
        r.status(),
        402,
        "the restart forgot the two answered requests"
    );
    let (status, code, body) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (402, "budget_exceeded"),
        "the restart forgot the two answered requests: {body}"
    );
    // They are billed at what they cost, not at their reservation.
    let rows = ledger(dir.path()).await;
    for (id, cost) in &answered {
        let row = rows
            .iter()
            .find(|r| &r.request_id == id)
            .unwrap_or_else(|| panic!("request {id} is not in the ledger: {rows:?}"));
        assert_eq!(row.status, 200);
        assert!(
            (row.cost.0 as f64 / 1e9 - cost).abs() < 1e-9,
            "{id}: ledger {} vs answered {cost}",
            row.cost
        );
    }
    drop(p2);
}

#[tokio::test]
async fn sigkill_with_requests_at_the_provider_counts_their_reservations() {
    let mock = MockProvider::start(MockConfig {
        failure: FailureMode::Hang,
        ..mock_config()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let yaml = config_yaml(&mock.base_url(), &store, &capped(0.0008));
    let mut p = spawn(dir.path(), &yaml, "gateway.log");
    let http = reqwest::Client::new();
    let key = create_key(&http, &p.url).await;
    let before = team_budget(&http, &p.url).await;
    assert_eq!(before["spent_usd"], 0.0);
    let inflight: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|text| {
            let (http, url, key) = (http.clone(), p.url.clone(), key.clone());
            // Cut by the kill: the answer never comes.
            tokio::spawn(async move {
                http.post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(key)
                    .json(&body(text))
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    for _ in 0..500 {
        if mock.calls() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.calls(), 3, "three requests are at the provider");
    let reserved = team_budget(&http, &p.url).await["reserved_usd"]
        .as_f64()
        .unwrap();
    assert!(reserved > 0.0006, "three reservations: {reserved}");
    kill(&mut p);
    for t in inflight {
        let _ = t.await;
    }

    mock.set_failure(FailureMode::None);
    let p2 = spawn(dir.path(), &yaml, "gateway2.log");
    // A fourth does not fit next to the three the crash left unsettled.
    let r = chat(&http, &p2.url, &key, "d").await;
    assert_eq!(r.status(), 402, "the restart forgot the requests in flight");
    let (status, code, body) = error_code(r).await;
    assert_eq!(
        (status, code.as_str()),
        (402, "budget_exceeded"),
        "the restart forgot the requests in flight: {body}"
    );
    let after = team_budget(&http, &p2.url).await;
    let spent = after["spent_usd"].as_f64().unwrap();
    assert!(
        (spent - reserved).abs() < 1e-9,
        "spent after the crash {spent} vs reserved before it {reserved}"
    );
    // Each is in the ledger at its reservation, as a request the gateway
    // could not finish.
    let rows = ledger(dir.path()).await;
    let crashed: Vec<_> = rows
        .iter()
        .filter(|r| r.error_code.as_deref() == Some("gateway_crashed"))
        .collect();
    assert_eq!(crashed.len(), 3, "{rows:?}");
    assert!(crashed.iter().all(|r| r.status == 500 && r.cost.0 > 0));
    drop(p2);
}

#[tokio::test]
async fn only_requests_that_reserve_budget_are_journaled_and_a_clean_stop_leaves_nothing() {
    let journal_dir = tempfile::tempdir().unwrap();
    let dir = journal_dir.path().join("journal");
    let tail = format!(
        "journal_dir: {}\n{}  - id: free\n",
        dir.display(),
        capped(0.01)
    );
    let mut h = Harness::start_with(
        mock_config(),
        &tail,
        std::sync::Arc::new(tollgate::types::SystemClock),
    )
    .await;
    let (_, free) = h.key(json!({"team": "free"})).await;
    let (_, capped) = h.key(json!({"team": "t1"})).await;
    for text in ["a", "b", "c"] {
        assert_eq!(h.chat(&free, &body(text)).await.status(), 200);
    }
    assert_eq!(
        h.gw().state.journal.appended(),
        0,
        "a key without a budget costs the journal nothing"
    );
    assert_eq!(h.chat(&capped, &body("d")).await.status(), 200);
    h.settled().await;
    assert_eq!(h.gw().state.journal.appended(), 2, "admitted and settled");
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(files, 2, "its lock and its segment, in `journal_dir`");
    h.stop().await;
    assert!(
        !dir.exists(),
        "a clean shutdown leaves no journal behind: {:?}",
        std::fs::read_dir(&dir).map(|d| d.count())
    );
}
