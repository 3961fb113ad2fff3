//! Console sessions: after a login with the admin key the browser holds
//! only a random session id, in an `HttpOnly`, `SameSite=Strict` cookie;
//! the session (its expiry and CSRF token) lives in this process's memory.
//! A restart logs everyone out, which is the safe failure. The cookie is
//! not marked `Secure` because tollgate serves plain HTTP; behind a TLS
//! terminator the `SameSite=Strict` and `HttpOnly` flags still hold, and
//! the proxy can add `Secure`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Redirect, Response};
use http::request::Parts;
use parking_lot::Mutex;
use rand::RngCore as _;
use subtle::ConstantTimeEq as _;

use crate::state::SharedState;

pub(crate) const COOKIE: &str = "tollgate_session";
/// A session ends this long after login, used or not.
pub(crate) const SESSION_TTL_MS: i64 = 8 * 3600 * 1000;
/// Live sessions kept at most; the oldest goes first. Only an admin-key
/// holder can create one, so this bounds memory, not abuse.
const MAX_SESSIONS: usize = 1024;

#[derive(Clone)]
pub(crate) struct Session {
    /// The cookie's value: 256 random bits, hex.
    pub(crate) id: String,
    /// Sent back in every form; checked in constant time.
    pub(crate) csrf: String,
    pub(crate) expires_at_ms: i64,
}

impl Session {
    /// The actor the audit log records for this session's changes: a
    /// prefix that tells sessions apart without being usable as one.
    pub(crate) fn actor(&self) -> String {
        format!("ui:{}", &self.id[..8])
    }

    pub(crate) fn csrf_ok(&self, presented: Option<&str>) -> bool {
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(self.csrf.as_bytes())))
    }
}

#[derive(Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Sessions {
    pub(crate) fn create(&self, now_ms: i64) -> Session {
        let session = Session {
            id: random_hex(),
            csrf: random_hex(),
            expires_at_ms: now_ms.saturating_add(SESSION_TTL_MS),
        };
        let mut live = self.live.lock();
        live.retain(|_, s| s.expires_at_ms > now_ms);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .values()
                .min_by_key(|s| s.expires_at_ms)
                .map(|s| s.id.clone())
        {
            live.remove(&oldest);
        }
        live.insert(session.id.clone(), session.clone());
        session
    }

    pub(crate) fn get(&self, id: &str, now_ms: i64) -> Option<Session> {
        let mut live = self.live.lock();
        match live.get(id) {
            Some(s) if s.expires_at_ms > now_ms => Some(s.clone()),
            Some(_) => {
                live.remove(id);
                None
            }
            None => None,
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        self.live.lock().remove(id);
    }
}

/// The session cookie's value in a request, if any.
pub(crate) fn cookie(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// `Set-Cookie` for a new session.
pub(crate) fn set_cookie(s: &Session) -> String {
    format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        s.id,
        SESSION_TTL_MS / 1000
    )
}

/// `Set-Cookie` that ends the session in the browser.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// A logged-in console user: the state and the session. Without a live
/// session every page redirects to the login form, so no data is shown.
pub(crate) struct UiUser {
    pub(crate) state: SharedState,
    pub(crate) session: Session,
}

impl FromRequestParts<SharedState> for UiUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        let sessions = parts.extensions.get::<Arc<Sessions>>().cloned();
        let now = state.clock.now_ms();
        let session = sessions
            .zip(cookie(&parts.headers))
            .and_then(|(sessions, id)| sessions.get(&id, now));
        match session {
            Some(session) => Ok(UiUser {
                state: state.clone(),
                session,
            }),
            None => Err(Redirect::to("/ui/login").into_response()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_and_the_oldest_goes_first_when_full() {
        let sessions = Sessions::default();
        let first = sessions.create(0);
        assert!(sessions.get(&first.id, SESSION_TTL_MS - 1).is_some());
        assert!(sessions.get(&first.id, SESSION_TTL_MS).is_none());
        assert!(
            sessions.get(&first.id, 0).is_none(),
            "an expired session is gone"
        );

        let oldest = sessions.create(1);
        for t in 2..(MAX_SESSIONS as i64 + 1) {
            sessions.create(t);
        }
        assert!(sessions.get(&oldest.id, 2).is_some());
        let newest = sessions.create(MAX_SESSIONS as i64 + 1);
        assert!(sessions.get(&oldest.id, 2).is_none(), "evicted");
        assert!(sessions.get(&newest.id, 2).is_some());
        assert_eq!(sessions.live.lock().len(), MAX_SESSIONS);
    }

    #[test]
    fn ids_and_tokens_are_random_and_compared_whole() {
        let sessions = Sessions::default();
        let (a, b) = (sessions.create(0), sessions.create(0));
        assert_ne!(a.id, b.id);
        assert_ne!(a.csrf, b.csrf);
        assert_eq!(a.id.len(), 64);
        assert!(a.csrf_ok(Some(&a.csrf)));
        assert!(!a.csrf_ok(Some(&b.csrf)));
        assert!(!a.csrf_ok(Some(&a.csrf[..63])));
        assert!(!a.csrf_ok(Some("")));
        assert!(!a.csrf_ok(None));
        assert_eq!(a.actor(), format!("ui:{}", &a.id[..8]));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; tollgate_session=abc".parse().unwrap(),
        );
        assert_eq!(cookie(&h).as_deref(), Some("abc"));
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "x_tollgate_session=no".parse().unwrap(),
        );
        assert_eq!(cookie(&h), None);
    }
}
