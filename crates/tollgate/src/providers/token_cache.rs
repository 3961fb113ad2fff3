//! A cached bearer token fetched from somewhere slow (an OAuth token
//! endpoint): handed out until shortly before it expires, refreshed by ONE
//! caller at a time however many requests need it at once (single-flight:
//! the others wait for that refresh and share its result), and a failed
//! refresh remembered briefly so a broken token endpoint answers every
//! request at once instead of making each wait its own timeout.
//!
//! Generic over where the token comes from (Entra ID here; any OAuth
//! client-credentials or JWT-bearer flow fits), and it never sees HTTP.
//! Time comes from a [`Clock`], so tests drive expiry with a `ManualClock`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::types::{Clock, Secret};

/// A fetched token and how long its issuer says it lives.
pub(crate) struct Fetched {
    pub token: Secret<String>,
    pub lifetime: Duration,
}

struct Cached {
    token: Secret<String>,
    /// When it is refreshed (Unix ms): some time before it expires.
    refresh_at: i64,
}

struct Failure {
    message: String,
    until: i64,
}

#[derive(Default)]
struct State {
    token: Option<Cached>,
    failure: Option<Failure>,
}

pub(crate) struct TokenCache {
    state: parking_lot::Mutex<State>,
    /// Held by the one caller that refreshes.
    refresh: tokio::sync::Mutex<()>,
    /// How long a failed refresh is answered from memory.
    failure_ttl: Duration,
    clock: Arc<dyn Clock>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Refresh this long before expiry (at most half the lifetime), so a
/// request never goes out with a token that expires on the way.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

impl TokenCache {
    pub fn new(failure_ttl: Duration, clock: Arc<dyn Clock>) -> TokenCache {
        TokenCache {
            state: parking_lot::Mutex::new(State::default()),
            refresh: tokio::sync::Mutex::new(()),
            failure_ttl,
            clock,
        }
    }

    /// The current token, from the cache or from `fetch` (called by at most
    /// one caller at a time, and only when no usable token or recent
    /// failure is cached). `Err` is the failure's message.
    pub async fn get<F, Fut>(&self, fetch: F) -> Result<Secret<String>, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Fetched, String>>,
    {
        if let Some(answer) = self.cached(self.clock.now_ms()) {
            return answer;
        }
        let _refreshing = self.refresh.lock().await;
        // Whoever held the lock before may have just refreshed (or failed).
        if let Some(answer) = self.cached(self.clock.now_ms()) {
            return answer;
        }
        let fetched = fetch().await;
        let now = self.clock.now_ms();
        let mut state = self.state.lock();
        match fetched {
            Ok(Fetched { token, lifetime }) => {
                let margin = REFRESH_MARGIN.min(lifetime / 2);
                state.token = Some(Cached {
                    token: token.clone(),
                    refresh_at: now.saturating_add(ms(lifetime.saturating_sub(margin))),
                });
                state.failure = None;
                Ok(token)
            }
            Err(message) => {
                state.failure = Some(Failure {
                    message: message.clone(),
                    until: now.saturating_add(ms(self.failure_ttl)),
                });
                Err(message)
            }
        }
    }

    /// Forgets the token (the service refused it: revoked, or rotated
    /// early), so the next caller fetches a fresh one.
    pub fn invalidate(&self) {
        self.state.lock().token = None;
    }

    fn cached(&self, now: i64) -> Option<Result<Secret<String>, String>> {
        let state = self.state.lock();
        if let Some(t) = state.token.as_ref().filter(|t| now < t.refresh_at) {
            return Some(Ok(t.token.clone()));
        }
        state
            .failure
            .as_ref()
            .filter(|f| now < f.until)
            .map(|f| Err(f.message.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    use crate::types::ManualClock;

    fn clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(chrono::Utc::now()))
    }

    fn advance(clock: &ManualClock, d: Duration) {
        clock.advance(chrono::Duration::from_std(d).unwrap());
    }

    fn fetcher(
        calls: &Arc<AtomicU32>,
        lifetime: Duration,
        ok: bool,
    ) -> impl Future<Output = Result<Fetched, String>> + use<> {
        let calls = Arc::clone(calls);
        async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            if ok {
                Ok(Fetched {
                    token: Secret::new(format!("token-{n}")),
                    lifetime,
                })
            } else {
                Err("the token endpoint answered 500".to_owned())
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_refresh_serves_every_concurrent_caller() {
        let cache = Arc::new(TokenCache::new(Duration::from_secs(5), clock()));
        let calls = Arc::new(AtomicU32::new(0));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let cache = Arc::clone(&cache);
                let calls = Arc::clone(&calls);
                tokio::spawn(async move {
                    cache
                        .get(|| fetcher(&calls, Duration::from_secs(3600), true))
                        .await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap().expose(), "token-1");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refreshes_before_expiry() {
        let clock = clock();
        let cache = TokenCache::new(Duration::from_secs(5), clock.clone());
        let calls = Arc::new(AtomicU32::new(0));
        let hour = Duration::from_secs(3600);
        let get = || cache.get(|| fetcher(&calls, hour, true));
        assert_eq!(get().await.unwrap().expose(), "token-1");
        // Still fresh 54 minutes in.
        advance(&clock, Duration::from_secs(54 * 60));
        assert_eq!(get().await.unwrap().expose(), "token-1");
        // Five minutes before expiry it is replaced, while still valid.
        advance(&clock, Duration::from_secs(60));
        assert_eq!(get().await.unwrap().expose(), "token-2");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A short-lived token is refreshed at half its life.
        let short = TokenCache::new(Duration::from_secs(5), clock.clone());
        let n = Arc::new(AtomicU32::new(0));
        let minute = Duration::from_secs(60);
        short.get(|| fetcher(&n, minute, true)).await.unwrap();
        advance(&clock, Duration::from_secs(31));
        assert_eq!(
            short
                .get(|| fetcher(&n, minute, true))
                .await
                .unwrap()
                .expose(),
            "token-2"
        );
    }

    #[tokio::test]
    async fn a_failure_is_answered_from_memory_for_a_while() {
        let clock = clock();
        let cache = TokenCache::new(Duration::from_secs(5), clock.clone());
        let calls = Arc::new(AtomicU32::new(0));
        let hour = Duration::from_secs(3600);
        assert!(cache.get(|| fetcher(&calls, hour, false)).await.is_err());
        let started = std::time::Instant::now();
        for _ in 0..10 {
            let err = cache.get(|| fetcher(&calls, hour, true)).await.unwrap_err();
            assert!(err.contains("500"));
        }
        assert!(
            started.elapsed() < Duration::from_millis(20),
            "no caller waited"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        advance(&clock, Duration::from_secs(6));
        assert!(cache.get(|| fetcher(&calls, hour, true)).await.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
