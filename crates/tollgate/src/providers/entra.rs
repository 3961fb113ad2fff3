//! Entra ID (Azure AD) sign-in for `azure` providers configured with
//! `entra:` instead of `api_key`: the OAuth 2.0 client-credentials grant
//! (`POST {authority}/{tenant}/oauth2/v2.0/token` with the app's id and
//! secret, scope `https://cognitiveservices.azure.com/.default`), its
//! access token sent as `Authorization: Bearer`. The token is cached and
//! refreshed before expiry, one refresh at a time ([`TokenCache`]). A
//! token endpoint that fails is a `Failed` naming the provider (a 502, and
//! a failure the routing counts towards opening the target's circuit),
//! remembered for [`FAILURE_TTL`] so requests meanwhile fail at once. No
//! message ever holds the client secret or a token.

use std::time::Duration;

use http::HeaderValue;
use http::header::{ACCEPT, CONTENT_TYPE};
use serde_json::Value;

use super::token_cache::{Fetched, TokenCache};
use super::upstream::{Ctx, error_chain, path_segment, secret_header};
use super::{Http, ProviderError};
use crate::config::EntraConfig;
use crate::types::Secret;

/// The scope of Azure OpenAI (Azure AI services) data-plane calls.
pub(crate) const SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// Longest wait for the token endpoint; it answers in well under a second.
const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a failed sign-in is answered from memory.
pub(crate) const FAILURE_TTL: Duration = Duration::from_secs(5);

/// A token said to live longer than this is refreshed after this anyway.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// When a token answer gives no usable `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

pub(crate) struct Entra {
    /// Carries the client secret, so every message is redacted of it.
    ctx: Ctx,
    token_url: String,
    client_id: String,
    client_secret: Secret<String>,
    cache: TokenCache,
    http: Http,
    timeout: Duration,
}

impl Entra {
    pub fn new(provider: &str, config: &EntraConfig, http: Http, timeout: Duration) -> Entra {
        Entra {
            ctx: Ctx::new(provider, Some(config.client_secret.clone())),
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                config.authority_url.trim_end_matches('/'),
                path_segment(&config.tenant_id)
            ),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            cache: TokenCache::new(FAILURE_TTL, std::sync::Arc::new(crate::types::SystemClock)),
            http,
            timeout: timeout.min(TOKEN_TIMEOUT),
        }
    }

    /// `Bearer <token>` for the next Azure call.
    pub async fn authorization(&self) -> Result<HeaderValue, ProviderError> {
        let token = self.cache.get(|| self.fetch()).await.map_err(|message| {
            self.ctx.failed(format!(
                "could not sign in to Entra ID for provider `{}`: {message}",
                self.ctx.provider
            ))
        })?;
        secret_header(&format!("Bearer {}", token.expose())).ok_or_else(|| {
            self.ctx
                .failed("Entra ID issued a token that cannot be sent in a header")
        })
    }

    /// Azure refused the token: the next call signs in again.
    pub fn invalidate(&self) {
        self.cache.invalidate();
    }

    async fn fetch(&self) -> Result<Fetched, String> {
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            path_segment(&self.client_id),
            path_segment(self.client_secret.expose()),
            path_segment(SCOPE)
        );
        let request = self
            .http
            .get()
            .post(&self.token_url)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(form);
        let response = match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => {
                return Err(format!(
                    "the token endpoint did not answer within {:?}",
                    self.timeout
                ));
            }
            Ok(Err(e)) => {
                return Err(self.ctx.redact(&format!(
                    "the token endpoint could not be reached: {}",
                    error_chain(&e)
                )));
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let body = match tokio::time::timeout(self.timeout, response.bytes()).await {
            Ok(Ok(body)) => body,
            _ => return Err("the token endpoint's answer broke off".to_owned()),
        };
        token_answer(status, &body)
    }
}

/// A token endpoint's answer → the token and its lifetime, or a message
/// naming only the status and the OAuth error code (an error's description
/// can quote the request).
pub(crate) fn token_answer(status: http::StatusCode, body: &[u8]) -> Result<Fetched, String> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if !status.is_success() {
        let code = json
            .as_ref()
            .and_then(|v| v.get("error")?.as_str().map(str::to_owned))
            .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        return Err(match code {
            Some(code) => format!("the token endpoint answered `{status}` (`{code}`)"),
            None => format!("the token endpoint answered `{status}`"),
        });
    }
    let Some(v) = json else {
        return Err("the token endpoint answered with a body that is not JSON".to_owned());
    };
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("the token endpoint's answer has no `access_token`")?;
    // A number, or a string of one (the v1 endpoint's way).
    let lifetime = match v.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .map_or(DEFAULT_LIFETIME, Duration::from_secs)
    .min(MAX_LIFETIME);
    Ok(Fetched {
        token: Secret::new(token.to_owned()),
        lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_token_answers_parse() {
        let ok = include_bytes!("tests/fixtures/entra_token_response.json");
        let fetched = token_answer(http::StatusCode::OK, ok).unwrap();
        assert!(fetched.token.expose().starts_with("eyJ0eXAi"));
        assert_eq!(fetched.lifetime, Duration::from_secs(3599));
        let err = include_bytes!("tests/fixtures/entra_error_response.json");
        let message = token_answer(http::StatusCode::BAD_REQUEST, err)
            .err()
            .unwrap();
        assert_eq!(
            message,
            "the token endpoint answered `400 Bad Request` (`invalid_scope`)"
        );
        assert!(
            !message.contains("AADSTS"),
            "no description, which may quote the request"
        );
    }

    #[test]
    fn hostile_token_answers_are_bounded() {
        let ok = http::StatusCode::OK;
        let life = |body: &str| token_answer(ok, body.as_bytes()).map(|f| f.lifetime);
        assert_eq!(
            life(r#"{"access_token":"t","expires_in":"3600"}"#),
            Ok(Duration::from_secs(3600))
        );
        assert_eq!(
            life(r#"{"access_token":"t","expires_in":1e300}"#),
            Ok(DEFAULT_LIFETIME)
        );
        assert_eq!(
            life(r#"{"access_token":"t","expires_in":-5}"#),
            Ok(DEFAULT_LIFETIME)
        );
        assert_eq!(
            life(r#"{"access_token":"t","expires_in":99999999999}"#),
            Ok(MAX_LIFETIME)
        );
        assert!(life(r#"{"access_token":"","expires_in":60}"#).is_err());
        assert!(life(r#"{"access_token":5}"#).is_err());
        assert!(life("not json").is_err());
        let weird = token_answer(
            http::StatusCode::UNAUTHORIZED,
            br#"{"error":"bad code; with secret=x"}"#,
        );
        assert_eq!(
            weird.err().unwrap(),
            "the token endpoint answered `401 Unauthorized`"
        );
    }
}
