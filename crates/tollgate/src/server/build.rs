//! Building a gateway's shared state from its config: the store (after
//! replaying a crashed gateway's journal), the counters, the admin key and
//! the services every handler uses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::task::TaskTracker;

use crate::auth::{AdminKey, KeyCache, key};
use crate::config::{Config, ConfigErrors, CountersConfig};
use crate::counters::{Counters, CountersError};
use crate::policy::PolicyEngine;
use crate::providers;
use crate::server::busy_poll::BusyPoll;
use crate::state::{AppState, Runtime, SharedState};
use crate::store::journal::JournalError;
use crate::store::ledger::{LedgerHandle, LedgerOptions, LedgerWriter};
use crate::store::{self as store_mod, Journal, Store, StoreError, journal};
use crate::telemetry::{self, histograms};
use crate::types::Clock;

/// Setting under which a generated admin key's hash is kept.
const ADMIN_KEY_SETTING: &str = "admin_key_sha256";

/// Why a gateway did not start. Each variant keeps its cause as its
/// source: `main` prints the chain (`{:#}`), so the message says what to
/// check and the source says what failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the config is invalid (`tollgate config check FILE` lists every problem)")]
    Config(#[source] ConfigErrors),
    #[error("cannot open the store: check `store:` and that the database is reachable")]
    Store(#[source] StoreError),
    #[error("cannot open the spend journal: check `journal_dir` and its permissions")]
    Journal(#[source] JournalError),
    #[error("cannot connect the counters: check `counters:` and that Redis is reachable")]
    Counters(#[source] CountersError),
    #[error("cannot listen on `{addr}`: is another process using it, or is the address wrong?")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How often a ledger writer that has no rows to write says it is alive.
const WRITER_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// One Prometheus recorder per process (several gateways in one test
/// process share it).
fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match histograms::builder().install_recorder() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "no Prometheus recorder: /metrics disabled");
                None
            }
        })
        .clone()
}

async fn counters(
    config: &Config,
    clock: Arc<dyn Clock>,
    ledger: &LedgerHandle,
) -> Result<Arc<dyn Counters>, StartError> {
    use crate::counters::{MemoryCounters, RedisCounters};
    Ok(match &config.counters {
        CountersConfig::Memory => Arc::new(MemoryCounters::new(clock)),
        CountersConfig::Redis(url) => {
            let redis = RedisCounters::connect(url.expose(), clock.clone())
                .await
                .map_err(StartError::Counters)?
                .with_ledger(ledger.clone());
            crate::counters::with_fail_mode(Arc::new(redis), config.counters_unavailable, clock)
        }
    })
}

/// The admin key: from the config, else the hash generated at first start.
async fn admin_key(config: &Config, store: &dyn Store) -> Result<AdminKey, StartError> {
    if let Some(k) = &config.admin_key {
        return Ok(AdminKey::from_plain(k));
    }
    let stored = store
        .get_setting(ADMIN_KEY_SETTING)
        .await
        .map_err(StartError::Store)?;
    if let Some(hash) = stored {
        return Ok(AdminKey::from_hash(hash));
    }
    let generated = key::generate();
    let admin = AdminKey::from_plain(&generated.full);
    store
        .set_setting(ADMIN_KEY_SETTING, admin.hash())
        .await
        .map_err(StartError::Store)?;
    // Printed once, to the terminal only (never to the log): only its hash is kept.
    println!(
        "No admin_key configured: generated one. It is shown only this once; keep it safe:\n\n    {}\n",
        generated.full.expose()
    );
    Ok(admin)
}

/// Opens the store and counters and builds the shared state.
pub async fn build_state(
    config: Config,
    config_path: Option<PathBuf>,
    clock: Arc<dyn Clock>,
) -> Result<SharedState, StartError> {
    let store = store_mod::connect(config.store.expose())
        .await
        .map_err(StartError::Store)?;
    // Before anything can be served: the spend of a gateway that crashed
    // must be in the ledger before a budget is restored from it.
    let journal = match config
        .journal_dir
        .clone()
        .or_else(|| journal::default_dir(config.store.expose()))
    {
        Some(dir) => {
            let (journal, replayed) = Journal::open(&dir, store.as_ref())
                .await
                .map_err(StartError::Journal)?;
            if replayed.journals > 0 {
                tracing::warn!(dir = %dir.display(), journals = replayed.journals,
                    requests = replayed.requests, unsettled = replayed.unsettled,
                    "a gateway did not shut down cleanly: its spend journal is replayed into the ledger, \
                     requests it never settled billed at their reservation (error code `gateway_crashed`)");
            }
            journal
        }
        None => Journal::disabled(),
    };
    // Gateways sharing counters mark their ledger rows, so that a budget
    // counter rebuilt from the ledger knows which each of them has written
    // and which gateways are alive to add the rest (see `counters`).
    let ledger = LedgerWriter::spawn(
        store.clone(),
        LedgerOptions {
            writer_heartbeat: matches!(config.counters, CountersConfig::Redis(_))
                .then_some(WRITER_HEARTBEAT),
            ..LedgerOptions::default()
        },
    );
    let counters = match counters(&config, clock.clone(), &ledger).await {
        Ok(c) => c,
        Err(e) => {
            ledger.shutdown().await;
            return Err(e);
        }
    };
    let admin_key = admin_key(&config, store.as_ref()).await?;
    let http = providers::http_client();
    let keys = KeyCache::new(store.clone());
    journal.start_upkeep(ledger.clone());
    let busy_poll = BusyPoll::new(config.busy_poll, crate::server::shard::count());
    let policy = PolicyEngine::new(
        counters.clone(),
        store.clone(),
        keys.clone(),
        clock.clone(),
        // Alerts go out from the main runtime, not a shard.
        http.get().clone(),
    )
    .with_ledger(ledger.clone());
    let registry = Arc::new(crate::routing::Registry::default());
    if let CountersConfig::Redis(url) = &config.counters
        && let Err(e) = crate::routing::shared::start(url.expose(), &registry, clock.clone()).await
    {
        // Circuits stay per replica until it is reachable; budgets are
        // what must fail closed, and they do in the counters.
        tracing::warn!(error = %e, "cannot share circuit breakers through Redis; each replica decides alone");
    }
    let config_telemetry = config.telemetry.clone();
    let cache = Arc::new(crate::cache::ResponseCache::new(&config).await);
    Ok(Arc::new(AppState {
        runtime: ArcSwap::from_pointee(Runtime::build(config, &http, registry)),
        store,
        counters,
        keys,
        ledger,
        journal,
        policy,
        admin_key,
        clock,
        config_path,
        http,
        tasks: TaskTracker::new(),
        busy_poll,
        metrics: metrics_handle(),
        tracer: telemetry::otlp::start(config_telemetry.as_ref()),
        cache,
    }))
}
