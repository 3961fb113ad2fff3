//! What a running mock shares between its connections and the test's
//! [`MockHandle`](crate::MockHandle): the settings a test changes while the
//! server runs, and the counters and request log it reads back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

/// How the mock misbehaves. Applies to every endpoint, to requests that
/// arrive after it was set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FailureMode {
    /// Answer normally.
    #[default]
    None,
    /// Answer with this status and this body (`content-type: application/json`).
    /// [`FailureMode::openai_error`] builds an OpenAI-shaped body.
    Status(u16, String),
    /// Accept the request and never answer (until the mock shuts down).
    Hang,
    /// Read the request, then close the connection with a TCP reset.
    Reset,
    /// `200` with a body that is not JSON.
    Malformed,
    /// Send the headers and `after_chunks` content chunks (for chat, after the
    /// role chunk; for Anthropic, after `message_start`, `content_block_start`
    /// and `ping`), then drop the connection: no finish chunk, no usage, no
    /// `[DONE]`. A non-streaming request gets half its body, then the drop.
    StreamCut { after_chunks: u32 },
    /// The next `n` requests (counted from when this is set) get `500`, later
    /// ones succeed.
    FailFirst(u64),
    /// The next `times` requests (counted from when this is set) get
    /// `status` with an error body and these extra headers (e.g.
    /// `retry-after: 2`, `retry-after-ms: 50`); later ones succeed. A
    /// provider that throttles, then recovers.
    FailFirstWith {
        times: u64,
        status: u16,
        headers: Vec<(String, String)>,
    },
}

impl FailureMode {
    /// `Status` with an OpenAI-shaped error body, e.g.
    /// `FailureMode::openai_error(400, "invalid_request_error", "bad things")`.
    pub fn openai_error(status: u16, error_type: &str, message: &str) -> FailureMode {
        FailureMode::Status(
            status,
            String::from_utf8_lossy(&crate::wire::openai_error_body(message, error_type, None))
                .into_owned(),
        )
    }
}

/// Usage numbers reported instead of the computed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageOverride {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// How many of an answer's prompt tokens the provider read from or wrote
/// to its prompt cache. They are parts of the prompt (the computed count or
/// [`UsageOverride::prompt_tokens`]), reported in each API's own way. On
/// OpenAI routes `read` is `prompt_tokens_details.cached_tokens`, included
/// in `prompt_tokens`; OpenAI reports no writes, so `write_5m`/`write_1h`
/// are not sent there. On `/v1/messages`, as Anthropic does, `input_tokens`
/// is the rest of the prompt and the cache counts go beside it:
/// `cache_read_input_tokens`, `cache_creation_input_tokens` (the writes'
/// sum) and the `cache_creation` split, in the answer and in a stream's
/// `message_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheUsage {
    pub read: u64,
    pub write_5m: u64,
    pub write_1h: u64,
}

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: Method,
    /// Path without the query, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The raw query string, e.g. `api-version=2024-06-01`.
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RecordedRequest {
    /// A header's value when it is valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The credential the caller presented: the bearer token of
    /// `Authorization`, else `api-key`, else `x-api-key`.
    pub fn api_key(&self) -> Option<&str> {
        credential(&self.headers)
    }

    /// The body parsed as JSON, `None` when it is not JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The credential a request carries, looked up in the order providers use.
pub(crate) fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .unwrap_or(auth);
        return Some(token.trim());
    }
    ["api-key", "x-api-key"]
        .into_iter()
        .find_map(|name| headers.get(name).and_then(|v| v.to_str().ok()))
}

/// Settings as one request sees them; copied out under a short read lock so
/// a test changing them mid-request never blocks the server.
#[derive(Clone)]
pub(crate) struct Settings {
    pub latency: Duration,
    pub chunk_delay: Duration,
    pub completion_tokens: u32,
    /// `"word "` repeated `completion_tokens` times, built once per setting so
    /// a request only slices it.
    pub content: Bytes,
    pub usage: Option<UsageOverride>,
    pub cache: Option<CacheUsage>,
    pub failure: FailureMode,
    pub expected_api_key: Option<Arc<str>>,
}

pub(crate) const WORD: &str = "word ";

pub(crate) fn content_for(tokens: u32) -> Bytes {
    Bytes::from(WORD.repeat(tokens as usize))
}

pub(crate) struct Shared {
    settings: RwLock<Settings>,
    /// Remaining failures of [`FailureMode::FailFirst`]; kept outside the
    /// settings lock because every request decrements it.
    fail_first_left: AtomicU64,
    pub stats: Stats,
    pub models_body: Bytes,
    pub shutdown: watch::Sender<bool>,
    pub ids: AtomicU64,
    pub is_shut_down: AtomicBool,
    /// The token endpoint's and Vertex's credentials.
    pub google: crate::google::GoogleState,
    pub bedrock: crate::bedrock::BedrockState,
    pub entra: crate::entra::EntraState,
}

impl Shared {
    pub fn new(settings: Settings, models_body: Bytes, record_requests: usize) -> Shared {
        let fail_first = match settings.failure {
            FailureMode::FailFirst(n) => n,
            _ => 0,
        };
        Shared {
            settings: RwLock::new(settings),
            fail_first_left: AtomicU64::new(fail_first),
            stats: Stats::new(record_requests),
            models_body,
            shutdown: watch::channel(false).0,
            ids: AtomicU64::new(1),
            is_shut_down: AtomicBool::new(false),
            google: crate::google::GoogleState::default(),
            bedrock: Default::default(),
            entra: Default::default(),
        }
    }

    pub fn snapshot(&self) -> Settings {
        self.settings.read().clone()
    }

    pub fn update(&self, change: impl FnOnce(&mut Settings)) {
        let mut settings = self.settings.write();
        change(&mut settings);
        match settings.failure {
            FailureMode::FailFirst(n) | FailureMode::FailFirstWith { times: n, .. } => {
                self.fail_first_left.store(n, Ordering::SeqCst);
            }
            _ => {}
        }
    }

    /// Whether this request is one of the first `n` of `FailFirst(n)`.
    pub fn take_fail_first(&self) -> bool {
        self.fail_first_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }

    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }
}

pub(crate) struct Stats {
    calls: AtomicU64,
    in_flight: Arc<AtomicU64>,
    max_in_flight: Arc<AtomicU64>,
    /// Keyed by the exact path; a path is allocated only the first time it is seen.
    by_path: Mutex<HashMap<Box<str>, u64>>,
    recent: Mutex<VecDeque<RecordedRequest>>,
    record_cap: usize,
}

impl Stats {
    fn new(record_cap: usize) -> Stats {
        Stats {
            calls: AtomicU64::new(0),
            in_flight: Arc::new(AtomicU64::new(0)),
            max_in_flight: Arc::new(AtomicU64::new(0)),
            by_path: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::with_capacity(record_cap.min(1024))),
            record_cap,
        }
    }

    /// Counts a request as open until the returned guard is dropped, which
    /// for a stream is when its body ends or the client goes away.
    pub fn enter(&self) -> InFlight {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight {
            in_flight: Arc::clone(&self.in_flight),
        }
    }

    pub fn record(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &Bytes,
    ) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        {
            let mut by_path = self.by_path.lock();
            match by_path.get_mut(path) {
                Some(count) => *count += 1,
                None => {
                    by_path.insert(path.into(), 1);
                }
            }
        }
        if self.record_cap == 0 {
            return;
        }
        let request = RecordedRequest {
            method: method.clone(),
            path: path.to_owned(),
            query: query.map(str::to_owned),
            headers: headers.clone(),
            body: body.clone(),
        };
        let mut recent = self.recent.lock();
        if recent.len() == self.record_cap {
            recent.pop_front();
        }
        recent.push_back(request);
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn calls_to(&self, path: &str) -> u64 {
        self.by_path.lock().get(path).copied().unwrap_or(0)
    }

    pub fn calls_by_path(&self) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> = self
            .by_path
            .lock()
            .iter()
            .map(|(p, n)| (p.to_string(), *n))
            .collect();
        all.sort();
        all
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.recent.lock().back().cloned()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.recent.lock().iter().cloned().collect()
    }

    pub fn reset(&self) {
        self.calls.store(0, Ordering::SeqCst);
        // Requests still open stay counted, so a later peak is measured from them.
        self.max_in_flight.store(self.in_flight(), Ordering::SeqCst);
        self.by_path.lock().clear();
        self.recent.lock().clear();
    }
}

pub(crate) struct InFlight {
    in_flight: Arc<AtomicU64>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
