//! A mock LLM provider: a real HTTP server speaking the OpenAI
//! (`/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`),
//! Anthropic (`/v1/messages`, `/v1/messages/count_tokens`), OpenAI Responses
//! (`/v1/responses`) and Azure (`/openai/deployments/{d}/...`) wire
//! formats, streaming included. tollgate's integration tests start it
//! in-process on `127.0.0.1:0` and steer it through a [`MockHandle`]
//! (latency, chunk pacing, usage numbers, failure modes) and read back what
//! it received; the load benchmark runs it as the `mock-provider` binary.
//!
//! Answers are deterministic: the completion is `"word "` repeated once per
//! token (one token per stream chunk), never longer than the request's
//! `max_tokens`/`max_completion_tokens` (then `finish_reason` is `length`,
//! Anthropic's `stop_reason` `max_tokens`); prompt tokens are the characters
//! of the request's text (`messages`, `system`, `prompt`, `input`) divided
//! by 4, at least 1. The model in the answer is the one requested.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use mock_provider::{FailureMode, MockConfig, MockProvider};
//! let mock = MockProvider::start(MockConfig::default()).await?;
//! let base_url = mock.base_url(); // http://127.0.0.1:PORT/v1
//! mock.set_failure(FailureMode::FailFirst(2));
//! # let _ = base_url;
//! assert_eq!(mock.calls(), 0);
//! mock.shutdown();
//! # Ok(()) }
//! ```

mod agents;
mod bedrock;
mod body;
mod directive;
mod entra;
mod failures;
mod google;
mod handler;
mod server;
mod state;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::net::TcpListener;

pub use bedrock::{AwsCredentials, BedrockFault, event_frame, exception_frame};
pub use entra::EntraApp;
pub use google::{CLOUD_PLATFORM_SCOPE, GoogleAuth, pem_private_key};
pub use state::{CacheUsage, FailureMode, RecordedRequest, UsageOverride};
pub use wire::EMBEDDING_DIM;

use state::{Settings, Shared, content_for};

/// How a mock starts; everything but `addr`, `models` and `record_requests`
/// can be changed later through the [`MockHandle`].
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// `None` binds `127.0.0.1:0` (a free port).
    pub addr: Option<SocketAddr>,
    /// Wait before answering (before the first byte of a stream too).
    pub latency: Duration,
    /// Wait between two stream chunks.
    pub chunk_delay: Duration,
    /// Tokens in a completion (= content chunks in a stream) when the
    /// request's `max_tokens` allows as many.
    pub completion_tokens: u32,
    /// Usage numbers reported instead of the computed ones.
    pub usage: Option<UsageOverride>,
    pub failure: FailureMode,
    /// When set, a request whose `Authorization: Bearer`, `api-key` or
    /// `x-api-key` differs gets `401`.
    pub expected_api_key: Option<String>,
    /// What `GET /v1/models` lists (any model name is answered regardless).
    pub models: Vec<String>,
    /// How many recent requests [`MockHandle::requests`] keeps; 0 records
    /// none (the benchmark), counts are kept either way.
    pub record_requests: usize,
}

impl Default for MockConfig {
    fn default() -> MockConfig {
        MockConfig {
            addr: None,
            latency: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            completion_tokens: 16,
            usage: None,
            failure: FailureMode::None,
            expected_api_key: None,
            models: [
                "gpt-4o-mini",
                "gpt-4o",
                "text-embedding-3-small",
                "claude-3-5-haiku-latest",
                "mock-chat",
            ]
            .map(String::from)
            .to_vec(),
            record_requests: 256,
        }
    }
}

pub struct MockProvider;

impl MockProvider {
    /// Binds and starts serving on the current tokio runtime.
    pub async fn start(config: MockConfig) -> anyhow::Result<MockHandle> {
        let addr = config
            .addr
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("mock provider: cannot listen on `{addr}`"))?;
        let addr = listener
            .local_addr()
            .context("mock provider: the listener has no local address")?;
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let settings = Settings {
            latency: config.latency,
            chunk_delay: config.chunk_delay,
            completion_tokens: config.completion_tokens,
            content: content_for(config.completion_tokens),
            usage: config.usage,
            cache: None,
            failure: config.failure,
            expected_api_key: config.expected_api_key.map(Arc::from),
        };
        let shared = Arc::new(Shared::new(
            settings,
            wire::models_list(&config.models, created),
            config.record_requests,
        ));
        tokio::spawn(server::serve(listener, Arc::clone(&shared)));
        Ok(MockHandle { shared, addr })
    }
}

/// Steers and observes a running mock. Clones share the same server.
#[derive(Clone)]
pub struct MockHandle {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl std::fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/v1`: the `base_url` of an `openai` or
    /// `anthropic` provider.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT`: the `base_url` of an `azure` provider, which
    /// appends `/openai/deployments/...` itself.
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_latency(&self, latency: Duration) {
        self.shared.update(|s| s.latency = latency);
    }

    pub fn set_chunk_delay(&self, delay: Duration) {
        self.shared.update(|s| s.chunk_delay = delay);
    }

    /// Tokens per completion, which is also the number of content chunks in a stream.
    pub fn set_completion_tokens(&self, tokens: u32) {
        let content = content_for(tokens);
        self.shared.update(|s| {
            s.completion_tokens = tokens;
            s.content = content;
        });
    }

    /// Reported usage; `None` goes back to the computed numbers.
    pub fn set_usage(&self, usage: Option<UsageOverride>) {
        self.shared.update(|s| s.usage = usage);
    }

    /// Prompt-cache numbers reported with every chat or messages answer;
    /// `None` (the start) reports none.
    pub fn set_cache_usage(&self, cache: Option<CacheUsage>) {
        self.shared.update(|s| s.cache = cache);
    }

    /// Setting `FailFirst(n)` (again) restarts its count at `n`.
    pub fn set_failure(&self, failure: FailureMode) {
        self.shared.update(|s| s.failure = failure);
    }

    pub fn set_expected_api_key(&self, key: Option<&str>) {
        let key = key.map(Arc::from);
        self.shared.update(|s| s.expected_api_key = key);
    }

    /// Requests received (every path, failed ones included).
    pub fn calls(&self) -> u64 {
        self.shared.stats.calls()
    }

    /// Requests received on exactly this path, e.g. `/v1/chat/completions`.
    pub fn calls_to(&self, path: &str) -> u64 {
        self.shared.stats.calls_to(path)
    }

    /// `(path, count)` for every path seen, sorted by path.
    pub fn calls_by_path(&self) -> Vec<(String, u64)> {
        self.shared.stats.calls_by_path()
    }

    /// Requests open right now (a stream stays open until its last byte).
    pub fn in_flight(&self) -> u64 {
        self.shared.stats.in_flight()
    }

    /// The most requests that were open at the same time.
    pub fn max_in_flight(&self) -> u64 {
        self.shared.stats.max_in_flight()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.stats.last_request()
    }

    /// The most recent requests, oldest first (at most `record_requests`).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.stats.requests()
    }

    /// Zeroes the counts and forgets the recorded requests; settings stay.
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// Stops accepting, closes idle connections, releases hanging requests
    /// and lets open streams finish. Returns at once.
    pub fn shutdown(&self) {
        self.shared.is_shut_down.store(true, Ordering::SeqCst);
        self.shared.shutdown.send_replace(true);
    }

    pub fn is_shut_down(&self) -> bool {
        self.shared.is_shut_down.load(Ordering::SeqCst)
    }

    /// Bedrock (`/model/{id}/...`, see `bedrock.rs`): verify every
    /// request's SigV4 signature with these credentials; `None` checks none.
    pub fn set_aws_credentials(&self, credentials: Option<AwsCredentials>) {
        self.shared.bedrock.set_credentials(credentials);
    }

    pub fn set_bedrock_fault(&self, fault: BedrockFault) {
        self.shared.bedrock.set_fault(fault);
    }

    /// Bedrock answers carry this `usage` object as is (hostile numbers);
    /// `None` goes back to the computed one.
    pub fn set_bedrock_usage_json(&self, usage: Option<serde_json::Value>) {
        self.shared.bedrock.set_usage_json(usage);
    }

    /// Bedrock requests refused for their signature.
    pub fn bedrock_rejected_signatures(&self) -> u64 {
        self.shared.bedrock.rejected_signatures()
    }

    /// Entra ID (`/{tenant}/oauth2/v2.0/token`, see `entra.rs`): the app
    /// whose client-credentials grant is accepted; while set, Azure calls
    /// need one of its tokens.
    pub fn set_entra_app(&self, app: Option<EntraApp>) {
        self.shared.entra.set_app(app);
    }

    /// Every token request answers this status (an Entra outage); `None` heals it.
    pub fn set_entra_failure(&self, status: Option<u16>) {
        self.shared.entra.set_fail_status(status);
    }

    pub fn set_entra_delay(&self, delay: Duration) {
        self.shared.entra.set_delay(delay);
    }

    /// Every Entra token issued so far is refused from now on.
    pub fn revoke_entra_tokens(&self) {
        self.shared.entra.revoke_all();
    }

    /// Token requests received, failed ones included.
    pub fn entra_token_requests(&self) -> u64 {
        self.shared.entra.token_requests()
    }
}
