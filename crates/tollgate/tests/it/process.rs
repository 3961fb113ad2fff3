//! The real binary as a child process: SIGTERM drains and flushes the
//! ledger, SIGKILL loses at most the documented window, and the provider
//! key never shows up in a log line.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mock_provider::{FailureMode, MockConfig, MockProvider};
use serde_json::json;

use crate::common::*;

pub struct Proc {
    pub child: Child,
    pub url: String,
    pub log: std::path::PathBuf,
    /// What the process printed on stdout before its listening line.
    pub banner: Vec<String>,
}

/// A test that fails half-way must not leave its gateway running.
impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `tollgate serve --config FILE` and waits for its listening line.
pub fn spawn(dir: &Path, yaml: &str, log_name: &str) -> Proc {
    let cfg = dir.join("tollgate.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let log = dir.join(log_name);
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .args(["--log-format", "json"])
        .env("TOLLGATE_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("the tollgate binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = Vec::new();
    let url = loop {
        let line = lines.next().expect("tollgate printed its address").unwrap();
        if let Some(rest) = line.strip_prefix("tollgate listening on ") {
            break rest.trim().to_owned();
        }
        banner.push(line);
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Proc {
        child,
        url,
        log,
        banner,
    }
}

pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

async fn create_key(http: &reqwest::Client, url: &str, body: serde_json::Value) -> String {
    let resp = http
        .post(format!("{url}/admin/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    resp.json::<serde_json::Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn ledger_rows(dir: &Path) -> Vec<tollgate::store::LedgerRow> {
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

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_flushes_the_ledger() {
    let mock = MockProvider::start(MockConfig {
        latency: Duration::from_millis(1000),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let mut p = spawn(
        dir.path(),
        &config_yaml(&mock.base_url(), &store, ""),
        "gateway.log",
    );
    let http = reqwest::Client::new();
    let key = create_key(&http, &p.url, json!({"team": "t1"})).await;
    // 20 requests in flight when SIGTERM arrives: all must finish and be billed.
    let mut inflight = Vec::new();
    for i in 0..20 {
        let (http, url, key) = (http.clone(), p.url.clone(), key.clone());
        inflight.push(tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&chat_body(&format!("request {i}")))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    // Signal only once every request has reached the provider: one still in
    // the kernel's accept queue is not in flight yet, and a shutdown may refuse it.
    for _ in 0..500 {
        if mock.calls() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.calls(), 20, "all 20 requests reached the provider");
    signal(&p.child, "-TERM");
    for t in inflight {
        assert_eq!(
            t.await.unwrap().unwrap(),
            200,
            "in-flight requests finish during the drain"
        );
    }
    let status = tokio::task::spawn_blocking(move || p.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit 0 after SIGTERM, got {status:?}");
    let rows = ledger_rows(dir.path()).await;
    assert_eq!(
        rows.len(),
        20,
        "every billed request is in the ledger after SIGTERM"
    );
    assert!(rows.iter().all(|r| r.cost.0 > 0));
}

#[tokio::test]
async fn sigkill_loses_at_most_the_last_second_and_budgets_survive() {
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let yaml = config_yaml(&mock.base_url(), &store, "");
    let mut p = spawn(dir.path(), &yaml, "gateway.log");
    let http = reqwest::Client::new();
    let key = create_key(
        &http,
        &p.url,
        json!({"team": "t1", "budget_usd": 0.05, "period": "daily"}),
    )
    .await;
    for _ in 0..10 {
        let r = http
            .post(format!("{}/v1/chat/completions", p.url))
            .bearer_auth(&key)
            .json(&chat_body("x"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // The documented bound: rows older than one second are durable.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    signal(&p.child, "-KILL");
    let _ = p.child.wait();
    let rows = ledger_rows(dir.path()).await;
    assert_eq!(rows.len(), 10, "rows older than 1 s survive SIGKILL");
    let spent: u64 = rows.iter().map(|r| r.cost.0).sum();

    // After the restart the budget remembers that spend.
    let p2 = spawn(dir.path(), &yaml, "gateway2.log");
    let resp = http
        .get(format!("{}/admin/budgets", p2.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    let budgets: serde_json::Value = resp.json().await.unwrap();
    let r = http
        .post(format!("{}/v1/chat/completions", p2.url))
        .bearer_auth(&key)
        .json(&chat_body("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let remaining: f64 = r.headers()["x-tollgate-budget-remaining-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let cost: f64 = r.headers()["x-tollgate-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = 0.05 - (spent as f64 / 1e9) - cost;
    assert!(
        (remaining - expected).abs() < 1e-6,
        "remaining {remaining} vs {expected}; budgets: {budgets}"
    );
    drop(p2); // kills it
}

#[tokio::test]
async fn the_provider_key_never_appears_in_logs_or_responses() {
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let mut p = spawn(
        dir.path(),
        &config_yaml(&mock.base_url(), &store, ""),
        "gateway.log",
    );
    let http = reqwest::Client::new();
    let key = create_key(&http, &p.url, json!({"team": "t1"})).await;
    let mut bodies = String::new();
    for failure in [
        FailureMode::None,
        FailureMode::Status(
            401,
            r#"{"error":{"message":"Incorrect API key provided"}}"#.into(),
        ),
        FailureMode::Status(500, "oops".into()),
        FailureMode::Reset,
        FailureMode::Malformed,
    ] {
        mock.set_failure(failure);
        for stream in [false, true] {
            let mut body = chat_body("x");
            body["stream"] = json!(stream);
            let r = http
                .post(format!("{}/v1/chat/completions", p.url))
                .bearer_auth(&key)
                .json(&body)
                .send()
                .await
                .unwrap();
            bodies.push_str(&format!("{:?}", r.headers()));
            bodies.push_str(&r.text().await.unwrap_or_default());
        }
    }
    signal(&p.child, "-TERM");
    let _ = p.child.wait();
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(
        log.contains("\"request_id\""),
        "the log has one line per request: {log}"
    );
    assert!(
        !log.contains(UPSTREAM_KEY),
        "provider key leaked into the log"
    );
    assert!(!log.contains(&key), "a virtual key leaked into the log");
    assert!(
        !bodies.contains(UPSTREAM_KEY),
        "provider key leaked into a response"
    );
    // The mock got it, so it was really in play.
    assert!(
        mock.requests()
            .iter()
            .any(|r| format!("{:?}", r.headers).contains(UPSTREAM_KEY))
    );
}

#[tokio::test]
async fn sighup_reloads_the_config_and_an_invalid_file_keeps_the_old_one() {
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let yaml = config_yaml(&mock.base_url(), &store, "");
    let mut p = spawn(dir.path(), &yaml, "gateway.log");
    let http = reqwest::Client::new();
    let key = create_key(&http, &p.url, json!({"team": "t1"})).await;
    let ask = |model: &'static str| {
        let (http, url, key) = (http.clone(), p.url.clone(), key.clone());
        async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "x"}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(ask("renamed").await, 404);
    // A new model appears after SIGHUP, on the same connection pool.
    let renamed = yaml.replace("  - name: other-model\n", "  - name: renamed\n");
    std::fs::write(dir.path().join("tollgate.yaml"), &renamed).unwrap();
    signal(&p.child, "-HUP");
    let mut reloaded = false;
    for _ in 0..50 {
        if ask("renamed").await == 200 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "SIGHUP reloaded the models");
    // An invalid file is rejected and the running config stays.
    std::fs::write(
        dir.path().join("tollgate.yaml"),
        format!("{renamed}\nbudgte: 5\n"),
    )
    .unwrap();
    signal(&p.child, "-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ask("renamed").await,
        200,
        "the previous config stays in force"
    );
    let resp = http
        .post(format!("{}/admin/reload", p.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        409,
        "a file that cannot be applied is a conflict"
    );
    assert!(
        resp.text().await.unwrap().contains("budgte"),
        "the reload error names the problem"
    );
    signal(&p.child, "-TERM");
    assert!(p.child.wait().unwrap().success());
}

#[test]
fn config_check_lists_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "listen: nope\npolicies:\n  - name: a\n    type: cost-limit\n    config: {limit_usd: 5, period: dayly}\nteams:\n  - id: t\n    policies: [b]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let shown = bad.display().to_string();
    for expected in [
        format!("{shown}:1: listen: `nope`"),
        format!(
            "{shown}:5: policies[0].config.period: `dayly` is not one of hourly, daily, weekly, monthly, total"
        ),
        format!("{shown}:8: teams[0].policies[0]: `b` is not a policy"),
    ] {
        assert!(err.contains(&expected), "missing `{expected}` in:\n{err}");
    }
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        config_yaml("http://127.0.0.1:9/v1", "sqlite://x.db", ""),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["config", "check"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The example config in the repository is valid as shipped.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tollgate.example.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["config", "check", example])
        .env("TOLLGATE_ADMIN_KEY", "x")
        .env("OPENAI_API_KEY", "x")
        .env("ANTHROPIC_API_KEY", "x")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn without_an_admin_key_one_is_generated_printed_once_and_only_its_hash_kept() {
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let yaml =
        config_yaml(&mock.base_url(), &store, "").replace(&format!("admin_key: {ADMIN_KEY}\n"), "");
    let mut p = spawn(dir.path(), &yaml, "gateway.log");
    let generated = p
        .banner
        .iter()
        .find_map(|l| {
            l.trim()
                .strip_prefix("sk-tg-")
                .map(|rest| format!("sk-tg-{rest}"))
        })
        .unwrap_or_else(|| panic!("no generated admin key printed: {:?}", p.banner));
    let http = reqwest::Client::new();
    let ok = http
        .get(format!("{}/admin/keys", p.url))
        .bearer_auth(&generated)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    signal(&p.child, "-TERM");
    assert!(p.child.wait().unwrap().success());
    // Only its hash is stored; a restart prints nothing new and the same key works.
    for file in ["tollgate.db", "tollgate.db-wal"] {
        let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
        assert!(
            !bytes
                .windows(generated.len())
                .any(|w| w == generated.as_bytes()),
            "the admin key is stored in clear in {file}"
        );
    }
    let mut p2 = spawn(dir.path(), &yaml, "gateway2.log");
    assert!(
        p2.banner.iter().all(|l| !l.contains("sk-tg-")),
        "printed again: {:?}",
        p2.banner
    );
    let ok = http
        .get(format!("{}/admin/keys", p2.url))
        .bearer_auth(&generated)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    signal(&p2.child, "-TERM");
    assert!(p2.child.wait().unwrap().success());
}

/// User + system CPU time of a process, in clock ticks (`/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test]
async fn busy_polling_stops_once_requests_stop() {
    let mock = MockProvider::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    // The longest window there is, so that a spinner that never stops
    // would be plain in the figures.
    let yaml = format!(
        "busy_poll_us: 10000\n{}",
        config_yaml(&mock.base_url(), &store, "")
    );
    let mut p = spawn(dir.path(), &yaml, "gateway.log");
    let http = reqwest::Client::new();
    let key = create_key(&http, &p.url, json!({"team": "t1"})).await;
    for _ in 0..20 {
        let resp = http
            .post(format!("{}/v1/chat/completions", p.url))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let pid = p.child.id();
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu_ticks(pid) - before;
    // 100 ticks would be one core spinning the whole second.
    assert!(
        used <= 10,
        "an idle gateway used {used} ticks of CPU in one second"
    );
    signal(&p.child, "-TERM");
    assert!(p.child.wait().unwrap().success());
}
