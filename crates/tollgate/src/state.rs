//! The state every handler shares: the hot-swappable runtime built from
//! the config (policies, models, providers) and the long-lived services
//! (store, counters, key cache, ledger, policy engine).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::auth::{AdminKey, KeyCache};
use crate::config::{self, Config, ConfigErrors};
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

impl Runtime {
    /// Builds one runtime (providers and their shared client) from a config.
    pub(crate) fn build(
        config: Config,
        http: &crate::providers::Http,
        registry: Arc<crate::routing::Registry>,
    ) -> Runtime {
        let providers: HashMap<String, Arc<dyn Provider>> = config
            .providers
            .iter()
            .map(|p| (p.name.clone(), crate::providers::build(p, http.clone())))
            .collect();
        Runtime {
            routes: crate::routing::Routes::new(&config, registry),
            config: Arc::new(config),
            providers,
        }
    }
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
    pub busy_poll: Arc<crate::server::busy_poll::BusyPoll>,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Span export (`telemetry:`); `None`: no span is built.
    pub tracer: Option<Arc<crate::telemetry::otlp::Exporter>>,
    /// Stored answers (SPEC §9); consulted only while `cache.enabled`.
    pub cache: Arc<crate::cache::ResponseCache>,
}

pub type SharedState = Arc<AppState>;

/// Why a reload left the running config in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Started on the embedded defaults: there is nothing to re-read.
    #[error("running on the embedded defaults: there is no config file to reload")]
    NoConfigFile,
    /// The file cannot be read or does not validate.
    #[error("the config file `{}` cannot be applied", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: ConfigErrors,
    },
}

impl ReloadError {
    /// What the operator has to fix, in full: for an invalid file one
    /// `FILE:LINE: message` per problem (the source), which a reporter that
    /// prints only `Display` would lose.
    pub fn problems(&self) -> String {
        match self {
            ReloadError::NoConfigFile => self.to_string(),
            ReloadError::Invalid { source, .. } => source.to_string(),
        }
    }
}

impl AppState {
    /// Re-reads the config file and swaps it in; on any problem the running
    /// config stays in force. Listen addresses, store, counters and telemetry
    /// are fixed at start and need a restart to change.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let Some(path) = &self.config_path else {
            return Err(ReloadError::NoConfigFile);
        };
        let env = |k: &str| std::env::var(k).ok();
        let config = config::load_file(path, &env).map_err(|source| ReloadError::Invalid {
            path: path.clone(),
            source,
        })?;
        self.busy_poll.set_window(config.busy_poll);
        let registry = self.runtime.load().routes.registry().clone();
        self.runtime
            .store(Arc::new(Runtime::build(config, &self.http, registry)));
        tracing::info!(path = %path.display(), "config reloaded");
        Ok(())
    }
}
