//! The test harness: a mock provider and a gateway, both on 127.0.0.1:0,
//! the gateway's store in a temp directory.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use mock_provider::{MockConfig, MockHandle, MockProvider};
use serde_json::{Value, json};
use tollgate::server::{self, Gateway};
use tollgate::types::{Clock, SystemClock};

pub const ADMIN_KEY: &str = "test-admin-key-0123456789";
pub const UPSTREAM_KEY: &str = "sk-upstream-secret-d0n0tl3ak";

pub struct Harness {
    pub gw: Option<Gateway>,
    pub mock: MockHandle,
    pub url: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

/// The config every test starts from; `tail` adds top-level sections
/// (policies, teams, defaults, alerts…). A team `t1` exists unless `tail`
/// declares `teams:` itself.
pub fn config_yaml(mock_base: &str, store: &str, tail: &str) -> String {
    let teams = if tail.contains("teams:") {
        ""
    } else {
        "teams:\n  - id: t1\n"
    };
    format!(
        r#"listen: 127.0.0.1:0
admin_key: {ADMIN_KEY}
store: {store}
counters: memory
providers:
  - name: upstream
    kind: openai
    base_url: {mock_base}
    api_key: {UPSTREAM_KEY}
    timeout_s: 2
models:
  - name: gpt-4o-mini
    targets:
      - provider: upstream
        model: gpt-4o-mini
    price: {{ input_per_mtok: 1.0, output_per_mtok: 2.0 }}
    max_output_tokens: 1000
  - name: other-model
    targets:
      - provider: upstream
        model: other-model
    price: {{ input_per_mtok: 1.0, output_per_mtok: 2.0 }}
    max_output_tokens: 1000
  - name: embed
    targets:
      - provider: upstream
        model: text-embedding-3-small
    price: {{ input_per_mtok: 0.02, output_per_mtok: 0 }}
{teams}{tail}"#
    )
}

impl Harness {
    pub async fn start(tail: &str) -> Harness {
        Self::start_with(MockConfig::default(), tail, Arc::new(SystemClock)).await
    }

    pub async fn start_with(mock: MockConfig, tail: &str, clock: Arc<dyn Clock>) -> Harness {
        Self::start_with_models(mock, "", "", tail, clock).await
    }

    /// [`Harness::start_with`] with `providers` and `models` entries (YAML
    /// list items indented by two spaces, `{mock}` standing for the mock's
    /// base URL) added before the standard ones.
    pub async fn start_with_models(
        mock: MockConfig,
        providers: &str,
        models: &str,
        tail: &str,
        clock: Arc<dyn Clock>,
    ) -> Harness {
        let mock = MockProvider::start(mock)
            .await
            .expect("mock provider starts");
        let dir = tempfile::tempdir().expect("temp dir");
        let store = format!("sqlite://{}", dir.path().join("tollgate.db").display());
        let with_mock = |s: &str| {
            s.replace("{mock_root}", &mock.root_url())
                .replace("{mock}", &mock.base_url())
        };
        let yaml = config_yaml(&mock.base_url(), &store, tail)
            .replacen(
                "providers:\n",
                &format!("providers:\n{}", with_mock(providers)),
                1,
            )
            .replacen("models:\n", &format!("models:\n{}", with_mock(models)), 1);
        let gw = start_gateway(&yaml, clock).await;
        let url = format!("http://{}", gw.addr);
        Harness {
            gw: Some(gw),
            mock,
            url,
            http: reqwest::Client::new(),
            dir,
        }
    }

    pub fn gw(&self) -> &Gateway {
        self.gw.as_ref().expect("gateway running")
    }

    /// Stops the gateway the way SIGTERM does (drain, settle, flush).
    pub async fn stop(&mut self) {
        if let Some(gw) = self.gw.take() {
            gw.shutdown().await;
        }
    }

    /// Starts the gateway again on the same store.
    pub async fn restart(&mut self, tail: &str) {
        self.stop().await;
        let store = format!("sqlite://{}", self.dir.path().join("tollgate.db").display());
        let yaml = config_yaml(&self.mock.base_url(), &store, tail);
        let gw = start_gateway(&yaml, Arc::new(SystemClock)).await;
        self.url = format!("http://{}", gw.addr);
        self.gw = Some(gw);
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("admin request");
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Creates a key (team `t1` unless the body names one); returns (id, key).
    pub async fn key(&self, mut body: Value) -> (String, String) {
        if body.get("team").is_none() {
            body["team"] = json!("t1");
        }
        let (status, created) = self
            .admin(reqwest::Method::POST, "/admin/keys", Some(body))
            .await;
        assert_eq!(status, 201, "key creation failed: {created}");
        (
            created["id"].as_str().unwrap().to_owned(),
            created["key"].as_str().unwrap().to_owned(),
        )
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request reaches the gateway")
    }

    /// `GET /v1/models` with a virtual key, as JSON.
    pub async fn models(&self, key: &str) -> Value {
        self.http
            .get(format!("{}/v1/models", self.url))
            .bearer_auth(key)
            .send()
            .await
            .expect("request reaches the gateway")
            .json()
            .await
            .expect("/v1/models answers JSON")
    }

    pub async fn chat(&self, key: &str, body: &Value) -> reqwest::Response {
        self.post("/v1/chat/completions", key, body).await
    }

    /// Waits (bounded) until every settlement has been applied to the
    /// counters: they run on tracked tasks after each answer.
    pub async fn settled(&self) {
        let state = &self.gw().state;
        for _ in 0..250 {
            if state.tasks.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Every ledger row, newest first, after flushing the writer.
    pub async fn ledger(&self) -> Vec<tollgate::store::LedgerRow> {
        self.settled().await;
        let state = &self.gw().state;
        state.ledger.flush().await;
        state
            .store
            .requests(&tollgate::store::RequestsQuery {
                team: None,
                key: None,
                limit: 100_000,
            })
            .await
            .expect("ledger query")
    }
}

pub async fn start_gateway(yaml: &str, clock: Arc<dyn Clock>) -> Gateway {
    let env = |k: &str| std::env::var(k).ok();
    let config = tollgate::config::load_str(yaml, "test.yaml", &env)
        .unwrap_or_else(|e| panic!("config: {e}\n{yaml}"));
    server::start(config, None, clock)
        .await
        .expect("gateway starts")
}

pub fn chat_body(text: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]})
}

/// The error code of an OpenAI-shaped error response.
pub async fn error_code(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("error body is JSON");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error has a message: {body}"
    );
    assert!(
        body["error"].get("type").is_some() && body["error"].get("param").is_some(),
        "OpenAI shape: {body}"
    );
    (status, code, body)
}
