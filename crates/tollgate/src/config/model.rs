//! The validated, frozen configuration every other module reads. Built only
//! by [`super::load`]; nothing here parses or touches the file system.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::types::{NanoUsd, Period, Price, Secret};

/// Default request body limit (SPEC §3: 8 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where `/admin`, `/ui` and `/metrics` are served when not on `listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `None`: the gateway generates one at first start and keeps its hash.
    pub admin_key: Option<Secret<String>>,
    /// `sqlite://…` or `postgres://…`; may hold a password.
    pub store: Secret<String>,
    pub counters: CountersConfig,
    pub counters_unavailable: CountersUnavailable,
    pub max_body_bytes: usize,
    pub log_bodies: bool,
    /// How long SIGTERM waits for in-flight requests.
    pub drain_timeout: Duration,
    /// How long the runtime busy-polls after each request; zero: never
    /// (see `crate::server::busy_poll`).
    pub busy_poll: Duration,
    /// Where the spend journal lives (`crate::store::journal`); `None`:
    /// derived from the store.
    pub journal_dir: Option<PathBuf>,
    pub providers: Vec<ProviderConfig>,
    pub models: Vec<ModelConfig>,
    pub policies: Vec<Policy>,
    pub teams: Vec<TeamConfig>,
    pub defaults: Defaults,
    pub alerts: Option<AlertsConfig>,
    /// Retries, backoff and circuit breaking (`routing:`).
    pub routing: super::RoutingConfig,
    /// `telemetry:`; `None`: no trace export, and no span is built.
    pub telemetry: Option<TelemetryConfig>,
    /// The response cache (SPEC §9); `None`: off.
    pub cache: Option<CacheConfig>,
}

/// `cache:` when `enabled: true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long a stored answer is served.
    pub ttl: Duration,
    /// Bound on the answers held in process memory, in bytes.
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountersConfig {
    Memory,
    /// `redis://…` URL (may hold a password).
    Redis(Secret<String>),
}

/// What a request for a budgeted or limited key gets while the shared
/// counters are unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CountersUnavailable {
    /// 503 `counters_unavailable` (fail closed; the default).
    #[default]
    Reject,
    /// Fall back to this process's own in-memory counters.
    AllowLocal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// Any OpenAI-compatible API: OpenAI, vLLM, Ollama, LM Studio…
    OpenAi,
    Azure,
    Anthropic,
    /// Google AI Studio's Gemini API.
    Gemini,
    /// Google Cloud Vertex AI: Gemini models and Claude.
    Vertex,
    /// Built in, no network, deterministic.
    Mock,
    /// AWS Bedrock (`Converse`, SigV4).
    Bedrock,
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    /// Without a trailing slash, e.g. `https://api.openai.com/v1`. Empty for `mock`.
    pub base_url: String,
    pub api_key: Option<Secret<String>>,
    pub timeout: Duration,
    /// Azure's `api-version` query parameter.
    pub api_version: Option<String>,
    /// A `vertex` provider's project, region and credentials.
    pub vertex: Option<super::google::VertexConfig>,
    /// Kind `bedrock`: its region and AWS credentials.
    pub bedrock: Option<BedrockConfig>,
    /// Kind `azure` with Entra ID instead of `api_key`.
    pub entra: Option<EntraConfig>,
}

/// A `bedrock` provider's signing inputs.
#[derive(Debug, Clone)]
pub struct BedrockConfig {
    /// e.g. `us-east-1`: part of the default URL, the SigV4 scope, and the price.
    pub region: String,
    pub access_key_id: Secret<String>,
    pub secret_access_key: Secret<String>,
    /// Temporary (STS) credentials come with one; sent as `x-amz-security-token`.
    pub session_token: Option<Secret<String>>,
}

/// An `azure` provider's Entra ID app registration (client-credentials flow).
#[derive(Debug, Clone)]
pub struct EntraConfig {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret<String>,
    /// Without a trailing slash; default `https://login.microsoftonline.com`.
    pub authority_url: String,
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The name clients send.
    pub name: String,
    pub targets: Vec<Target>,
    /// From `models[].price` or the built-in price table; always present.
    pub price: Price,
    /// Worst-case completion length when a request sets no `max_tokens`.
    pub max_output_tokens: u64,
    /// In what order `targets` are tried.
    pub strategy: super::Strategy,
}

#[derive(Debug, Clone)]
pub struct Target {
    /// Name of an entry in `providers`.
    pub provider: String,
    /// The provider's own model name.
    pub model: String,
    /// Under the `weighted` strategy, this target's share of the traffic.
    pub weight: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub mode: PolicyMode,
    pub kind: PolicyKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PolicyMode {
    #[default]
    Enforce,
    /// Decides as usual but only records what it would have rejected.
    Shadow,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PolicyKind {
    CostLimit(CostLimit),
    RateLimit(RateLimit),
    LoopGuard(LoopGuard),
    ModelAccess(ModelAccess),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostLimit {
    pub limit: NanoUsd,
    pub period: Period,
    pub action: CostAction,
    pub on_insufficient: OnInsufficient,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CostAction {
    #[default]
    Reject,
    Alert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnInsufficient {
    #[default]
    Reject,
    /// Lower `max_tokens` to what the remaining budget pays for.
    Clamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimit {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub max_parallel: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopGuard {
    pub max_identical: u32,
    pub window: Duration,
    pub on_trip: OnTrip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTrip {
    /// Reject with `loop_detected` until the window has passed.
    #[default]
    Throttle,
    /// Suspend the key until an admin restores it.
    Suspend,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelAccess {
    /// Glob patterns (`*`, `?`) of client-facing model names.
    pub allow: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct TeamConfig {
    pub id: String,
    /// Names of entries in `policies`.
    pub policies: Vec<String>,
    /// Model globs this team may use; `None` means every model.
    pub models: Option<Vec<String>>,
    /// `cache: false` opts the team out of the response cache.
    pub cache: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Defaults {
    /// Applied to every key in addition to its own.
    pub policies: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AlertsConfig {
    pub webhook_url: String,
    /// Fractions of a budget's limit, e.g. `[0.5, 0.8, 1.0]`.
    pub thresholds: Vec<f64>,
    pub format: AlertFormat,
}

/// The shape of an alert webhook's body (`alerts.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlertFormat {
    /// The structured event (`policy::alerts::AlertEvent`).
    #[default]
    Json,
    /// `{"text": "..."}`, what Slack and Teams incoming webhooks take.
    Slack,
}

/// Trace export over OTLP/HTTP (`telemetry:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// The collector's base URL, e.g. `http://127.0.0.1:4318`; spans go to
    /// `{otlp_endpoint}/v1/traces`.
    pub otlp_endpoint: String,
    /// The `service.name` resource attribute (default `tollgate`).
    pub service_name: String,
}

impl Config {
    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }

    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    pub fn team(&self, id: &str) -> Option<&TeamConfig> {
        self.teams.iter().find(|t| t.id == id)
    }
}
