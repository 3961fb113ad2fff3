//! The console in a real browser: headless Chromium driven over WebDriver
//! (chromedriver, started here on a free 127.0.0.1 port and stopped by its
//! PID). Log in, see a team's spend on the chart, create a key and use it,
//! revoke it and see it refused, a form without its CSRF token refused,
//! log out and see no data. A screenshot of every page is saved under
//! `target/ui-screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them). Without them the test fails under `CI=true` and is skipped, loudly,
//! elsewhere.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use tollgate::store::LedgerRow;
use tollgate::types::{KeyId, NanoUsd, TeamId};

use crate::common::{ADMIN_KEY, Harness, chat_body};

const CHROMEDRIVER: &str = "chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver, stopped (TERM, then KILL) when dropped, so a failing test
/// leaves no browser behind.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn installed(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts chromedriver, or says why it cannot (`None` = skip locally).
async fn driver() -> Option<Driver> {
    if !installed(CHROMEDRIVER) || !std::path::Path::new(CHROMIUM).exists() {
        let msg = "the browser test needs Debian's `chromium` and `chromium-driver` \
                   (`apt-get install -y chromium chromium-driver`; `.ci/run` does it)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("\n\n!!!!! SKIPPED: {msg} !!!!!\n\n");
        return None;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _profile: tempfile::tempdir().unwrap(),
    };
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Some(driver);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not answer on {}", driver.url);
}

async fn browser(driver: &Driver) -> Client {
    let profile = driver._profile.path().display().to_string();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--window-size=1280,1400",
                format!("--user-data-dir={profile}"),
            ],
        }),
    );
    ClientBuilder::rustls()
        .expect("TLS roots")
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session starts")
}

fn shots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    let path = shots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
}

async fn source(c: &Client) -> String {
    c.source().await.unwrap()
}

/// Waits (bounded) until the page's HTML contains `text`: a click that
/// submits a form returns before the next page has loaded.
async fn wait_for(c: &Client, text: &str) -> String {
    let mut html = String::new();
    for _ in 0..100 {
        html = source(c).await;
        if html.contains(text) {
            return html;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("`{text}` never appeared; the page is:\n{html}");
}

async fn path(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_owned()
}

#[tokio::test]
async fn the_console_works_in_a_real_browser() {
    let Some(driver) = driver().await else {
        return;
    };
    let tail = "policies:\n  - name: team-cap\n    type: cost-limit\n    config: { limit_usd: 0.001, period: daily }\n  - name: trial\n    type: cost-limit\n    mode: shadow\n    config: { limit_usd: 0.02, period: monthly }\nteams:\n  - id: search\n    policies: [team-cap, trial]\n  - id: t1\n";
    let h = Harness::start(tail).await;
    // Real traffic through the gateway to the mock, so the chart has data.
    let (_, search_key) = h.key(json!({"team": "search", "name": "search-api"})).await;
    let (_, t1_key) = h.key(json!({"team": "t1", "name": "batch"})).await;
    for i in 0..4 {
        let mut body = chat_body(&format!("question {i}"));
        body["max_tokens"] = json!(50);
        assert_eq!(h.chat(&search_key, &body).await.status(), 200);
    }
    assert_eq!(h.chat(&t1_key, &chat_body("hello")).await.status(), 200);
    // Its worst case does not fit the team's cap: rejected, listed as such.
    let mut dear = chat_body("a long answer please");
    dear["max_tokens"] = json!(1000);
    assert_eq!(h.chat(&search_key, &dear).await.status(), 402);
    h.ledger().await;
    // Earlier days and hours, so the charts have a shape (the store query
    // is the same whatever wrote the rows).
    let now = chrono::Utc::now();
    let mut history = Vec::new();
    for i in 1..60i64 {
        let (team, key) = if i % 3 == 0 {
            ("t1", "hist-t1")
        } else {
            ("search", "hist-search")
        };
        let ago = if i < 24 {
            chrono::TimeDelta::hours(i)
        } else {
            chrono::TimeDelta::days(i - 23)
        };
        history.push(LedgerRow {
            ts: now - ago,
            request_id: format!("history-{i}"),
            key_id: KeyId::from(key),
            team: TeamId::from(team),
            model: if i % 4 == 0 {
                "other-model"
            } else {
                "gpt-4o-mini"
            }
            .into(),
            provider: "upstream".into(),
            status: 200,
            prompt_tokens: 20,
            completion_tokens: 40,
            cost: NanoUsd(20_000 + (i as u64 % 7) * 9_000),
            latency_ms: 3,
            error_code: None,
            would_reject: Vec::new(),
            attempts: 1,
            cache: None,
            cache_saved: NanoUsd(0),
            policy: None,
        });
    }
    h.gw().state.store.insert_ledger(&history).await.unwrap();

    let c = browser(&driver).await;
    let base = &h.url;

    // No session: the console shows the login form, nothing else.
    c.goto(&format!("{base}/ui")).await.unwrap();
    assert_eq!(path(&c).await, "/ui/login");
    assert!(!source(&c).await.contains("data-team"));
    shot(&c, "1-login").await;
    c.find(Locator::Css("#admin_key"))
        .await
        .unwrap()
        .send_keys(ADMIN_KEY)
        .await
        .unwrap();
    c.find(Locator::Css("#login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "Spend per team").await;
    assert_eq!(path(&c).await, "/ui");

    // The team's spend is on the 24 h chart, as a bar and in the legend.
    let bars = c
        .find_all(Locator::Css("#chart-24h rect[data-team='search']"))
        .await
        .unwrap();
    assert!(
        !bars.is_empty(),
        "no bar for `search`:\n{}",
        source(&c).await
    );
    let legend = c
        .find(Locator::Css("#chart-24h .legend [data-team='search']"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(legend.starts_with("search $0.0"), "{legend}");
    let budgets = c
        .find(Locator::Css("#budgets"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        budgets.contains("team-cap") && budgets.contains("shadow"),
        "{budgets}"
    );
    shot(&c, "2-overview").await;

    // Create a key in the console; the revealed key works on the data plane.
    c.goto(&format!("{base}/ui/keys")).await.unwrap();
    c.find(Locator::XPath(
        "//select[@id='key-team']/option[text()='t1']",
    ))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    c.find(Locator::Css("#key-name"))
        .await
        .unwrap()
        .send_keys("from-the-browser")
        .await
        .unwrap();
    c.find(Locator::Css("#create-key-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "id=\"revealed-key\"").await;
    let revealed = c
        .find(Locator::Css("#revealed-key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(revealed.starts_with("sk-tg-"), "{revealed}");
    shot(&c, "3-key-created").await;
    let resp = h.chat(&revealed, &chat_body("made in the browser")).await;
    assert_eq!(resp.status(), 200);
    let new_id = revealed
        .strip_prefix("sk-tg-")
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .to_owned();

    // A form stripped of its CSRF token is refused and changes nothing.
    c.goto(&format!("{base}/ui/keys")).await.unwrap();
    c.execute(
        &format!(
            "document.querySelector(\"tr[data-key='{new_id}'] form[action$='/revoke'] input[name=csrf]\").remove();"
        ),
        vec![],
    )
    .await
    .unwrap();
    c.find(Locator::Css(&format!(
        "tr[data-key='{new_id}'] button.revoke"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    wait_for(&c, "CSRF check failed").await;
    shot(&c, "4-csrf-refused").await;
    assert_eq!(
        h.chat(&revealed, &chat_body("still alive")).await.status(),
        200
    );

    // Revoke it in the console: refused at once.
    c.goto(&format!("{base}/ui/keys")).await.unwrap();
    c.find(Locator::Css(&format!(
        "tr[data-key='{new_id}'] button.revoke"
    )))
    .await
    .unwrap()
    .click()
    .await
    .unwrap();
    wait_for(&c, "it is refused from now on").await;
    let flash = c
        .find(Locator::Css("#flash"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(flash.contains("revoked"), "{flash}");
    let status = c
        .find(Locator::Css(&format!("tr[data-key='{new_id}'] .badge")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(status, "revoked");
    shot(&c, "5-keys-revoked").await;
    let resp = h.chat(&revealed, &chat_body("after revoke")).await;
    assert_eq!(resp.status(), 401);

    for (page, name) in [
        ("/ui/teams", "6-teams"),
        ("/ui/requests", "7-requests"),
        ("/ui/audit", "8-audit"),
    ] {
        c.goto(&format!("{base}{page}")).await.unwrap();
        assert_eq!(path(&c).await, page);
        shot(&c, name).await;
    }
    let audit = source(&c).await;
    assert!(
        audit.contains("key.revoke") && audit.contains("ui:"),
        "{audit}"
    );

    // Log out: back to the form, and no page shows data any more.
    c.find(Locator::Css("#logout"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&c, "id=\"admin_key\"").await;
    assert_eq!(path(&c).await, "/ui/login");
    for page in ["/ui", "/ui/keys", "/ui/requests"] {
        c.goto(&format!("{base}{page}")).await.unwrap();
        assert_eq!(path(&c).await, "/ui/login", "{page}");
        let html = source(&c).await;
        assert!(
            !html.contains("search-api") && !html.contains("data-team"),
            "{html}"
        );
    }
    shot(&c, "9-logged-out").await;
    c.close().await.unwrap();
}
