//! The admin API client the commands share, and why a command failed.

use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::types::Secret;

/// Why a client command failed; printed as is, then the process exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no admin key: pass `--admin-key` or set `TOLLGATE_ADMIN_KEY`")]
    NoAdminKey,
    #[error(
        "`{0}` is not a valid gateway URL (pass `--url` or set `TOLLGATE_URL`, e.g. `http://127.0.0.1:4000`)"
    )]
    BadUrl(String),
    #[error(
        "cannot reach tollgate at `{url}`: {source} (is `tollgate serve` running? set `--url` or `TOLLGATE_URL`)"
    )]
    Unreachable { url: String, source: reqwest::Error },
    /// The server's own error message.
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("unexpected answer from `{url}`: {message}")]
    BadResponse { url: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// The admin API client.
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    admin_key: Secret<String>,
}

impl Client {
    pub fn new(url: &str, admin_key: Option<Secret<String>>) -> Result<Self, CliError> {
        let admin_key = admin_key
            .filter(|k| !k.expose().is_empty())
            .ok_or(CliError::NoAdminKey)?;
        let base = reqwest::Url::parse(url.trim_end_matches('/'))
            .map_err(|_| CliError::BadUrl(url.to_owned()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(CliError::BadUrl(url.to_owned()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::Unreachable {
                url: url.to_owned(),
                source: e,
            })?;
        Ok(Client {
            http,
            base,
            admin_key,
        })
    }

    /// Sends one admin request and returns the JSON answer; non-2xx answers
    /// become [`CliError::Api`] with the server's message.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let shown = url.to_string();
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(self.admin_key.expose());
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| CliError::Unreachable {
            url: shown.clone(),
            source: e,
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| CliError::Unreachable {
            url: shown.clone(),
            source: e,
        })?;
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let message = parsed
                .as_ref()
                .and_then(|v| v.pointer("/error/message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
            let message = if message.is_empty() {
                format!("`{shown}` answered {status}")
            } else {
                message
            };
            return Err(CliError::Api {
                status: status.as_u16(),
                message,
            });
        }
        parsed.ok_or_else(|| CliError::BadResponse {
            url: shown,
            message: "the body is not JSON".into(),
        })
    }
}
