//! The state every handler shares: the hot-swappable runtime built from
//! the config (policies, models, providers) and the long-lived services
//! (store, counters, key cache, ledger, policy engine).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::{AdminKey, KeyCache};
use crate::config::Config;
use crate::counters::Counters;
use crate::policy::PolicyEngine;
use crate::providers::Provider;
use crate::store::ledger::LedgerHandle;
use crate::store::{Journal, Store};
use crate::types::Clock;

/// Everything derived from one version of the config file. Replaced as a
/// whole on reload, so a request sees one consistent version from start to end.
pub struct Runtime {
    pub config: Arc<Config>,
    /// By provider name.
    pub providers: HashMap<String, Arc<dyn Provider>>,
    /// Each provider's circuit and latency, kept across reloads.
    pub routes: crate::routing::Routes,
}

pub struct AppState {
    pub runtime: ArcSwap<Runtime>,
    pub store: Arc<dyn Store>,
    pub counters: Arc<dyn Counters>,
    pub keys: KeyCache,
    pub ledger: LedgerHandle,
    /// Requests that reserved budget, until their ledger row is durable:
    /// what a restart after a crash replays (`crate::store::journal`).
    pub journal: Journal,
    pub policy: PolicyEngine,
    pub admin_key: AdminKey,
    pub clock: Arc<dyn Clock>,
    /// The file `POST /admin/reload` and SIGHUP re-read; `None` on embedded defaults.
    pub config_path: Option<PathBuf>,
    /// The upstream HTTP client every provider shares (a pool per thread).
    pub http: crate::providers::Http,
    /// Side effects that must outlive the request that started them
    /// (settling a stream whose client hung up, ledger rows); shutdown waits
    /// for them.
    pub tasks: tokio_util::task::TaskTracker,
    /// Keeps the runtime polling for a moment after each request.
    pub busy_poll: Arc<crate::busy_poll::BusyPoll>,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Span export (`telemetry:`); `None`: no span is built.
    pub tracer: Option<Arc<crate::telemetry::otlp::Exporter>>,
    /// Stored answers (SPEC §9); consulted only while `cache.enabled`.
    pub cache: Arc<crate::cache::ResponseCache>,
}

pub type SharedState = Arc<AppState>;
