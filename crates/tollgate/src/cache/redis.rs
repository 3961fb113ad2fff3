//! The shared store when counters are on Redis: every replica reads and
//! writes the same entries (`SET … EX ttl_s`), so a question answered on one
//! is a hit on all. The cache is an optimisation: a Redis that is slow,
//! down or answers garbage is a miss, never an error, and never holds a
//! request longer than [`LOOKUP_TIMEOUT`].

use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Entry, Key};
use crate::types::NanoUsd;

/// Longest a lookup may delay a request before it counts as a miss.
pub(super) const LOOKUP_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest a store may take (off the request path).
const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys are versioned like the counters' (`tg:v2:`), apart from them.
const PREFIX: &str = "tg:cache:v1:";

pub(super) struct RedisStore {
    conn: ConnectionManager,
    ttl_s: u64,
}

impl RedisStore {
    /// `None` (and a warning) when Redis cannot be reached now: the cache
    /// then runs in process only, and the gateway still starts.
    pub async fn connect(url: &str, ttl: Duration) -> Option<RedisStore> {
        let client = match redis::Client::open(url) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = ?e.kind(), "response cache: the Redis URL is not usable; caching in process only");
                return None;
            }
        };
        // No retries on the request path: a miss is cheaper than a wait.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(LOOKUP_TIMEOUT))
            .set_number_of_retries(0);
        match ConnectionManager::new_with_config(client, config).await {
            Ok(conn) => Some(RedisStore {
                conn,
                ttl_s: ttl.as_secs().max(1),
            }),
            Err(e) => {
                tracing::warn!(error = ?e.kind(), "response cache: Redis is unreachable; caching in process only");
                None
            }
        }
    }

    pub async fn get(&self, key: &Key) -> Option<Entry> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("GET").arg(redis_key(key)).to_owned();
        let got = tokio::time::timeout(
            LOOKUP_TIMEOUT,
            cmd.query_async::<Option<Vec<u8>>>(&mut conn),
        )
        .await;
        match got {
            Ok(Ok(Some(value))) => decode(value),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::debug!(error = ?e.kind(), "response cache: Redis lookup failed; a miss");
                None
            }
            Err(_) => {
                tracing::debug!("response cache: Redis lookup timed out; a miss");
                None
            }
        }
    }

    pub async fn put(&self, key: Key, entry: Entry) {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("SET")
            .arg(redis_key(&key))
            .arg(encode(&entry))
            .arg("EX")
            .arg(self.ttl_s)
            .to_owned();
        let done = tokio::time::timeout(STORE_TIMEOUT, cmd.query_async::<()>(&mut conn)).await;
        if !matches!(done, Ok(Ok(()))) {
            tracing::debug!("response cache: Redis store failed; the answer is not cached");
        }
    }
}

fn redis_key(key: &Key) -> String {
    format!("{PREFIX}{}", key.hex())
}

/// The cost as 8 big-endian bytes, then the body.
fn encode(entry: &Entry) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entry.body.len());
    out.extend_from_slice(&entry.cost.0.to_be_bytes());
    out.extend_from_slice(&entry.body);
    out
}

/// `None` for a value this version did not write (too short, or a body
/// that is not a JSON object): a miss, not garbage served to a client.
fn decode(mut value: Vec<u8>) -> Option<Entry> {
    if value.len() < 9 {
        return None;
    }
    let body = value.split_off(8);
    let cost = u64::from_be_bytes(value.try_into().ok()?);
    if body.first() != Some(&b'{') {
        return None;
    }
    Some(Entry {
        body: Bytes::from(body),
        cost: NanoUsd(cost),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_foreign_values_are_misses() {
        let e = Entry {
            body: Bytes::from_static(b"{\"a\":1}"),
            cost: NanoUsd(123_456_789),
        };
        let back = decode(encode(&e)).unwrap();
        assert_eq!((back.body, back.cost), (e.body, e.cost));
        assert!(decode(b"short".to_vec()).is_none());
        assert!(decode(b"12345678not json".to_vec()).is_none());
    }
}
