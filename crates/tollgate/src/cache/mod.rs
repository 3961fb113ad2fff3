//! The response cache (SPEC §9): exact-match answers, scoped to the team,
//! served without calling the provider. This module owns the decision for
//! one request (off, skipped, hit, miss), the key, where entries live (in
//! process, or in Redis when the counters are there so replicas share
//! them) and what is stored: only complete `200` answers, in their complete
//! canonical form with what they cost, whether they came streamed or not.
//!
//! What it does not own: admission. A hit is admitted by the policy engine
//! without any budget or token reservation (it costs $0) but still through
//! the request rate limits, parallelism and the loop guard
//! (`PolicyEngine::admit_cached`).

mod key;
mod memory;
mod redis;
pub mod replay;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde_json::{Map, Value};

pub use key::Key;

use crate::config::{Config, CountersConfig};
use crate::providers::{Endpoint, EventStream};
use crate::types::NanoUsd;

/// `hit` | `miss` | `skip` (see [`Mark`]).
pub const CACHE_HEADER: &str = "x-tollgate-cache";
/// Largest answer stored, whatever `max_mib`: a cache of a few huge
/// answers helps nobody, and a Redis value stays a sane size.
const MAX_ENTRY_BYTES: u64 = 8 * 1024 * 1024;

/// A stored answer: the complete canonical (OpenAI-format) body and what
/// the call cost when it was made, which is what every hit on it saves.
#[derive(Debug, Clone)]
pub struct Entry {
    pub body: Bytes,
    pub cost: NanoUsd,
}

/// Where entries live. Fixed at start, like the store and the counters.
pub struct ResponseCache {
    store: Store,
    max_entry: u64,
}

enum Store {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
}

impl ResponseCache {
    /// In process, or in Redis when `cache` is on and the counters are on
    /// Redis. Sized from `config.cache` (its defaults when it is off now:
    /// a reload may turn it on; moka allocates nothing until used).
    pub async fn new(config: &Config) -> ResponseCache {
        let (ttl, max_bytes) = match config.cache {
            Some(c) => (c.ttl, c.max_bytes),
            None => (std::time::Duration::from_secs(300), 64 * 1024 * 1024),
        };
        let max_entry = (max_bytes / 8).clamp(1, MAX_ENTRY_BYTES);
        if let (Some(_), CountersConfig::Redis(url)) = (config.cache, &config.counters)
            && let Some(r) = redis::RedisStore::connect(url.expose(), ttl).await
        {
            return ResponseCache {
                store: Store::Redis(r),
                max_entry,
            };
        }
        ResponseCache {
            store: Store::Memory(memory::MemoryStore::new(max_bytes, ttl)),
            max_entry,
        }
    }

    async fn get(&self, key: &Key) -> Option<Entry> {
        match &self.store {
            Store::Memory(m) => m.get(key),
            Store::Redis(r) => r.get(key).await,
        }
    }

    /// Bytes held in process (after moka's pending evictions); `None` on Redis.
    pub fn memory_size(&self) -> Option<u64> {
        match &self.store {
            Store::Memory(m) => {
                m.sync();
                Some(m.size())
            }
            Store::Redis(_) => None,
        }
    }
}

/// What the cache did for one request: the `x-tollgate-cache` header and
/// the ledger's `cache` column say the same.
#[derive(Default)]
pub enum Mark {
    /// The cache is off, or does not know this kind of request: no header.
    #[default]
    Off,
    /// Not looked up: `Cache-Control: no-cache` (the answer still refreshes
    /// the entry) or `no-store` (nor stored), or the team opted out.
    Skip(Option<Box<Pending>>),
    /// Looked up, not found; the answer is stored if it completes.
    Miss(Box<Pending>),
    /// Served from the cache; `saved` is what the stored call cost.
    Hit { saved: NanoUsd },
}

/// A hit, in the form the client asked for.
pub enum Served {
    Complete(Bytes),
    Stream(EventStream),
}

/// What one request needs for its answer to be stored.
pub struct Pending {
    cache: Arc<ResponseCache>,
    key: Key,
    endpoint: Endpoint,
    /// A streamed answer's chunks, as they went by.
    chunks: Vec<Bytes>,
    captured: u64,
    /// A complete answer's body.
    body: Option<Bytes>,
    /// The answer is not the whole answer to the request as asked (a
    /// budget clamped its output), or grew past the entry bound.
    spoiled: bool,
}

/// What a request asks of the cache (RFC 9111 request directives).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Directives {
    no_cache: bool,
    no_store: bool,
}

fn directives(headers: &HeaderMap) -> Directives {
    let mut d = Directives::default();
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',') {
            let name = token.split('=').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("no-cache") {
                d.no_cache = true;
            } else if name.eq_ignore_ascii_case("no-store") {
                d.no_store = true;
            }
        }
    }
    d
}

/// One request's question to the cache.
pub struct Question<'a> {
    pub team: &'a str,
    /// The team is an API team that opted out (`cache: false` on
    /// `/admin/teams`); config teams say so in the config.
    pub team_opted_out: bool,
    /// The ingress's name in the key, `None` for requests the cache does
    /// not know how to serve (never cached).
    pub ingress: Option<&'static str>,
    pub endpoint: Endpoint,
    pub model: &'a str,
    /// The canonical request as the client sent it (before the gateway
    /// adds `stream_options` or an output cap).
    pub body: &'a Map<String, Value>,
    pub stream: bool,
    pub headers: &'a HeaderMap,
}

/// Decides what the cache does for `q` and looks it up if it should.
pub async fn lookup(
    cache: &Arc<ResponseCache>,
    config: &Config,
    q: &Question<'_>,
) -> (Mark, Option<Served>) {
    let (Some(_), Some(ingress)) = (config.cache, q.ingress) else {
        return (Mark::Off, None);
    };
    if q.team_opted_out || config.team(q.team).is_some_and(|t| !t.cache) {
        return (Mark::Skip(None), None);
    }
    let d = directives(q.headers);
    if d.no_store {
        return (Mark::Skip(None), None);
    }
    let pending = Box::new(Pending {
        cache: cache.clone(),
        key: Key::new(q.team, ingress, q.model, q.body),
        endpoint: q.endpoint,
        chunks: Vec::new(),
        captured: 0,
        body: None,
        spoiled: false,
    });
    if d.no_cache {
        return (Mark::Skip(Some(pending)), None);
    }
    let served = cache.get(&pending.key).await.and_then(|entry| {
        let served = if q.stream {
            Served::Stream(replay::events(q.endpoint, &entry.body)?)
        } else {
            Served::Complete(entry.body)
        };
        Some((served, entry.cost))
    });
    match served {
        Some((served, saved)) => {
            metrics::counter!("tollgate_cache_requests_total", "result" => "hit").increment(1);
            (Mark::Hit { saved }, Some(served))
        }
        None => {
            metrics::counter!("tollgate_cache_requests_total", "result" => "miss").increment(1);
            (Mark::Miss(pending), None)
        }
    }
}

impl Mark {
    pub fn is_hit(&self) -> bool {
        matches!(self, Mark::Hit { .. })
    }

    /// The `x-tollgate-cache` value and the ledger's `cache` column.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Mark::Off => None,
            Mark::Skip(_) => Some("skip"),
            Mark::Miss(_) => Some("miss"),
            Mark::Hit { .. } => Some("hit"),
        }
    }

    pub fn header(&self) -> Option<HeaderValue> {
        self.label().map(HeaderValue::from_static)
    }

    /// What a hit saved (zero otherwise), for the ledger.
    pub fn saved(&self) -> NanoUsd {
        match self {
            Mark::Hit { saved } => *saved,
            _ => NanoUsd::ZERO,
        }
    }

    fn pending(&mut self) -> Option<&mut Pending> {
        match self {
            Mark::Skip(Some(p)) | Mark::Miss(p) => Some(p),
            _ => None,
        }
    }

    /// The answer will not be the whole answer to the request as asked (a
    /// budget clamped its output): never store it.
    pub fn spoil(&mut self) {
        if let Some(p) = self.pending() {
            p.spoiled = true;
        }
    }

    /// One chunk of a streamed answer (the usage chunk included).
    pub fn capture_chunk(&mut self, data: &Bytes) {
        let Some(p) = self.pending() else { return };
        if p.spoiled {
            return;
        }
        p.captured += data.len() as u64;
        if p.captured > p.cache.max_entry {
            p.spoiled = true;
            p.chunks = Vec::new();
            return;
        }
        p.chunks.push(data.clone());
    }

    /// A complete answer's canonical body.
    pub fn capture_body(&mut self, body: &Bytes) {
        if let Some(p) = self.pending() {
            p.body = Some(body.clone());
        }
    }

    /// Stores the captured answer if the request ended as a complete `200`
    /// (a stream only after its `[DONE]`): never a cut, failed or abandoned
    /// one. `cost` is what it was billed. A Redis store runs on `tasks`.
    pub fn finish(
        &mut self,
        status: u16,
        error_code: Option<&str>,
        cost: NanoUsd,
        tasks: &tokio_util::task::TaskTracker,
    ) {
        let Some(p) = self.pending() else { return };
        if status != 200 || error_code.is_some() || p.spoiled {
            return;
        }
        let body = match p.body.take() {
            Some(b) => Some(b),
            None => replay::assemble(p.endpoint, &p.chunks),
        };
        let Some(body) = body.filter(|b| (b.len() as u64) <= p.cache.max_entry) else {
            return;
        };
        let (cache, key) = (p.cache.clone(), p.key);
        let entry = Entry { body, cost };
        match &cache.store {
            // In process: one insert, done on the spot.
            Store::Memory(m) => {
                m.put(key, entry);
                metrics::gauge!("tollgate_cache_size_bytes").set(m.size() as f64);
            }
            Store::Redis(_) => {
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    let put = async move {
                        if let Store::Redis(r) = &cache.store {
                            r.put(key, entry).await;
                        }
                    };
                    tasks.spawn_on(put, &handle);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_directives_are_read_from_every_header_value() {
        let mut h = HeaderMap::new();
        assert_eq!(directives(&h), Directives::default());
        h.append(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, No-Cache"),
        );
        assert!(directives(&h).no_cache && !directives(&h).no_store);
        h.append(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        );
        assert!(directives(&h).no_store);
        let mut h = HeaderMap::new();
        h.append(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cachex, private"),
        );
        assert_eq!(directives(&h), Directives::default());
    }
}
