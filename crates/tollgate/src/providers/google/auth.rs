//! Vertex AI's credentials: a service account's RS256-signed JWT grant
//! exchanged at its `token_uri` for an OAuth access token, cached and
//! refreshed before it expires. One refresh at a time: under load every
//! request that finds the token stale waits on the same exchange. A failed
//! exchange is remembered for [`FAILURE_HOLD`], so an outage of the token
//! endpoint answers each request at once instead of making every one of
//! them wait out a timeout. Neither the key nor a token ever goes into an
//! error message.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::config::ServiceAccount;
use crate::providers::upstream::{Ctx, error_chain};
use crate::providers::{Http, ProviderError};
use crate::types::{Secret, clip};

/// The one OAuth scope Vertex AI needs.
pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google's grants live an hour at most.
const GRANT_LIFETIME_S: i64 = 3600;
/// A token is replaced this long before it expires (or at half its life,
/// if that is sooner), so no request goes out with one about to lapse.
const REFRESH_EARLY: Duration = Duration::from_secs(300);
/// How long a failed exchange is answered from memory.
pub(crate) const FAILURE_HOLD: Duration = Duration::from_secs(3);
/// The longest a token exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
enum State {
    Empty,
    Ready {
        token: Arc<Secret<String>>,
        refresh_at: Instant,
    },
    Failed {
        until: Instant,
        message: String,
    },
}

pub(crate) struct TokenSource {
    ctx: Ctx,
    account: Arc<ServiceAccount>,
    http: Http,
    timeout: Duration,
    state: parking_lot::Mutex<State>,
    /// Held by the one request exchanging a grant.
    refresh: tokio::sync::Mutex<()>,
}

impl TokenSource {
    pub fn new(ctx: Ctx, account: Arc<ServiceAccount>, http: Http, timeout: Duration) -> Self {
        TokenSource {
            ctx,
            account,
            http,
            timeout: timeout.min(EXCHANGE_TIMEOUT),
            state: parking_lot::Mutex::new(State::Empty),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    /// A fresh token, `Err` for a remembered failure, `None` when one must
    /// be fetched.
    fn cached(&self) -> Option<Result<Arc<Secret<String>>, ProviderError>> {
        let now = Instant::now();
        match &*self.state.lock() {
            State::Ready { token, refresh_at } if now < *refresh_at => Some(Ok(token.clone())),
            State::Failed { until, message } if now < *until => {
                Some(Err(self.ctx.failed(message.clone())))
            }
            _ => None,
        }
    }

    /// The access token to send, fetching a new one if the cached one is
    /// stale.
    pub async fn token(&self) -> Result<Arc<Secret<String>>, ProviderError> {
        if let Some(cached) = self.cached() {
            return cached;
        }
        let _one_at_a_time = self.refresh.lock().await;
        // Whoever held the lock before may have just refreshed it.
        if let Some(cached) = self.cached() {
            return cached;
        }
        match self.exchange().await {
            Ok((token, lifetime)) => {
                let token = Arc::new(token);
                *self.state.lock() = State::Ready {
                    token: token.clone(),
                    refresh_at: Instant::now() + refresh_after(lifetime),
                };
                Ok(token)
            }
            Err(message) => {
                let message = format!(
                    "could not get an OAuth access token for service account `{}` from `{}`: {message}",
                    clip(&self.account.client_email),
                    clip(&self.account.token_uri)
                );
                *self.state.lock() = State::Failed {
                    until: Instant::now() + FAILURE_HOLD,
                    message: message.clone(),
                };
                Err(self.ctx.failed(message))
            }
        }
    }

    /// One JWT-bearer exchange: the token and how long it lives.
    async fn exchange(&self) -> Result<(Secret<String>, Duration), String> {
        let assertion = self.assertion(chrono::Utc::now().timestamp())?;
        let form = format!(
            "grant_type={}&assertion={assertion}",
            form_encode(GRANT_TYPE)
        );
        let request = self
            .http
            .get()
            .post(&self.account.token_uri)
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form);
        let response = match tokio::time::timeout(self.timeout, request.send()).await {
            Err(_) => return Err(format!("no answer within {:?}", self.timeout)),
            Ok(Err(e)) => return Err(format!("request failed: {}", error_chain(&e))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        let body = match tokio::time::timeout(self.timeout, response.bytes()).await {
            Ok(Ok(b)) => b,
            _ => return Err(format!("answered `{status}` but its body did not arrive")),
        };
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            // Google's `error` is a plain code (`invalid_grant`), kept only
            // if it looks like one; its description says why, but an
            // endpoint (or a proxy before it) may quote the request, so the
            // grant we sent is cut out before anything is kept.
            let code = v.get("error").and_then(Value::as_str).filter(|c| {
                c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            });
            let why = v
                .get("error_description")
                .and_then(Value::as_str)
                .map(|w| clip(&scrub(w, &assertion)).into_owned());
            return Err(match (code, why) {
                (Some(c), Some(w)) => format!("answered `{status}`: `{c}`: {w}"),
                (Some(c), None) => format!("answered `{status}`: `{c}`"),
                _ => format!("answered `{status}`"),
            });
        }
        let token = v
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| {
                !t.is_empty() && http::HeaderValue::from_str(&format!("Bearer {t}")).is_ok()
            })
            .ok_or("answered without a usable `access_token`")?;
        // A missing or absurd lifetime is taken as Google's usual hour, but
        // never trusted beyond it.
        let lifetime = v
            .get("expires_in")
            .and_then(Value::as_u64)
            .filter(|s| *s > 0)
            .unwrap_or(3600)
            .min(GRANT_LIFETIME_S as u64);
        Ok((Secret::new(token.to_owned()), Duration::from_secs(lifetime)))
    }

    /// The signed JWT grant (RFC 7523) issued at `iat`.
    fn assertion(&self, iat: i64) -> Result<String, String> {
        let mut header = json!({ "alg": "RS256", "typ": "JWT" });
        if let Some(kid) = &self.account.private_key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({
            "iss": self.account.client_email,
            "scope": SCOPE,
            "aud": self.account.token_uri,
            "iat": iat,
            "exp": iat + GRANT_LIFETIME_S,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key = self.account.key();
        let mut signature = vec![0; key.public_modulus_len()];
        key.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            signing_input.as_bytes(),
            &mut signature,
        )
        .map_err(|_| "the service account's key could not sign the grant".to_owned())?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

/// How long a token that lives `lifetime` is used before it is replaced.
fn refresh_after(lifetime: Duration) -> Duration {
    lifetime.saturating_sub(REFRESH_EARLY.min(lifetime / 2))
}

/// `application/x-www-form-urlencoded` for the few characters a grant
/// type holds.
/// `text` without the JWT `assertion` that was sent, nor any of its three
/// parts: the whole is a grant good for an hour, and no part of one is ever
/// quoted back to a client or a log.
fn scrub(text: &str, assertion: &str) -> String {
    let mut out = text.replace(assertion, "[redacted]");
    for part in assertion.split('.').filter(|p| p.len() >= 8) {
        out = out.replace(part, "[redacted]");
    }
    out
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_grant_is_cut_out_of_an_error() {
        let jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJhQGIuYyJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";
        let echoed = format!("grant_type=x&assertion={jwt} was refused");
        let out = scrub(&echoed, jwt);
        assert_eq!(out, "grant_type=x&assertion=[redacted] was refused");
        // Any one part, e.g. the signature alone, is cut too.
        let out = scrub("bad signature c2lnbmF0dXJlLXNpZ25hdHVyZQ", jwt);
        assert!(!out.contains("c2lnbmF0dXJl"), "{out}");
        assert_eq!(
            scrub("Invalid JWT Signature.", jwt),
            "Invalid JWT Signature."
        );
    }

    #[test]
    fn tokens_are_replaced_five_minutes_early_or_at_half_their_life() {
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(3300)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(400)),
            Duration::from_secs(200)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(
            form_encode(GRANT_TYPE),
            "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
        );
    }
}
