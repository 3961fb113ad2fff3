//! Builds the state and the router, and runs the server. This is the only
//! place that orders layers; read [`app`] top to bottom for what every
//! request passes through.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt as _;
use http::HeaderValue;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AdminKey, KeyCache, key};
use crate::config::{self, Config, CountersConfig};
use crate::counters::Counters;
use crate::error::ApiError;
use crate::policy::PolicyEngine;
use crate::providers;
use crate::server::ServeOptions;
use crate::server::busy_poll::BusyPoll;
use crate::server::shard::Shards;
use crate::state::{AppState, Runtime, SharedState};
use crate::store::ledger::{LedgerHandle, LedgerOptions, LedgerWriter};
use crate::store::{self as store_mod, Journal, Store, journal};
use crate::telemetry::histograms;
use crate::types::{Clock, RequestId, SystemClock};
use crate::{admin, proxy, telemetry};

/// Setting under which a generated admin key's hash is kept.
const ADMIN_KEY_SETTING: &str = "admin_key_sha256";

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("cannot open the store: {0}")]
    Store(String),
    #[error("{0}")]
    Journal(String),
    #[error("cannot connect the counters: {0}")]
    Counters(String),
    #[error("cannot listen on `{addr}`: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The router with every layer, outermost first:
/// 1. `request_id`: opens the busy-poll window (`crate::server::busy_poll`),
///    generates the request id, puts it in the request's extensions
///    (`RequestId`) and on every response as `x-request-id`, including
///    errors and 404s.
/// 2. the routes: `/v1/*` (proxy, authenticated by virtual key inside its
///    handlers because the error format depends on the route) and, unless
///    `admin_listen` moves them, `/admin/*`, `/ui/*`, `/healthz`, `/readyz`,
///    `/metrics`, each admin route inside the audit recorder
///    (`audited_admin`), which reads `ConnectInfo` (the peer address).
/// 3. `fallback`: unknown paths get the API's own 404 shape.
///
/// Body size limits are enforced per handler (the limit is hot-reloadable
/// config), so axum's default body limit is disabled here.
pub fn app(state: SharedState, with_admin: bool) -> Router {
    let mut router = Router::new().merge(proxy::router());
    if with_admin {
        router = router.merge(audited_admin(&state));
    }
    router
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

/// What `admin_listen` serves on its own address.
pub fn admin_app(state: SharedState) -> Router {
    audited_admin(&state)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

/// The admin routes (and `/ui`) with the audit log's recorder around each
/// route: every authenticated `/admin` mutation is recorded before its
/// answer leaves (`admin::audit`). It reads the peer address that the
/// servers put in the extensions (`ConnectInfo`).
fn audited_admin(state: &SharedState) -> Router<SharedState> {
    admin::router().layer(middleware::from_fn_with_state(
        state.clone(),
        admin::audit::record,
    ))
}

async fn request_id(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    state.busy_poll.touch();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let header = HeaderValue::from_str(&id).ok();
    req.extensions_mut().insert(RequestId(id));
    let mut resp = next.run(req).await;
    // Again as the answer leaves: a client's next request follows it closely.
    state.busy_poll.touch();
    if let Some(h) = header {
        resp.headers_mut().insert("x-request-id", h);
    }
    resp
}

async fn not_found(req: Request) -> Response {
    ApiError::NotFound {
        code: "not_found",
        message: format!(
            "no route for `{} {}`",
            req.method(),
            crate::types::clip(req.uri().path())
        ),
    }
    .into_response()
}

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
                .map_err(|e| StartError::Counters(e.to_string()))?
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
        .map_err(|e| StartError::Store(e.to_string()))?;
    if let Some(hash) = stored {
        return Ok(AdminKey::from_hash(hash));
    }
    let generated = key::generate();
    let admin = AdminKey::from_plain(&generated.full);
    store
        .set_setting(ADMIN_KEY_SETTING, admin.hash())
        .await
        .map_err(|e| StartError::Store(e.to_string()))?;
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
        .map_err(|e| StartError::Store(e.to_string()))?;
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
                .map_err(|e| StartError::Journal(e.to_string()))?;
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

/// A running gateway: its addresses and a way to stop it.
pub struct Gateway {
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub state: SharedState,
    shutdown: CancellationToken,
    /// Ends the shards' runtimes: fired once nothing they run is needed.
    release: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Stops accepting, drains in-flight requests (up to the config's drain
    /// timeout), waits for settlements and flushes the ledger.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        let drain = self.state.runtime.load().config.drain_timeout;
        let drained = tokio::time::timeout(drain, &mut self.server).await.is_ok();
        if !drained {
            tracing::warn!(?drain, "drain timeout: in-flight requests were cut");
        }
        self.state.tasks.close();
        let settled = tokio::time::timeout(drain, self.state.tasks.wait())
            .await
            .is_ok();
        if !settled {
            tracing::warn!("drain timeout: some settlements did not finish");
        }
        self.state.ledger.shutdown().await;
        if let Some(tracer) = &self.state.tracer {
            tracer.flush(SPAN_FLUSH).await;
        }
        self.state.journal.retire(drained && settled);
        self.release.cancel();
    }
}

impl Drop for Gateway {
    /// A gateway dropped without [`Gateway::shutdown`] (a test that ends
    /// early) still stops its shard threads.
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.release.cancel();
    }
}

/// Binds the listeners and starts serving in the background.
pub async fn start(
    config: Config,
    config_path: Option<PathBuf>,
    clock: Arc<dyn Clock>,
) -> Result<Gateway, StartError> {
    let listen = config.listen;
    let admin_listen = config.admin_listen;
    let state = build_state(config, config_path, clock).await?;
    let bind = |addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let listener = bind(listen).await?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: listen,
        source,
    })?;
    let admin_listener = match admin_listen {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let shutdown = CancellationToken::new();
    let release = CancellationToken::new();
    if let Some(metrics) = state.metrics.clone() {
        tokio::spawn(metrics_upkeep(metrics, shutdown.clone()));
    }
    tokio::spawn(counters_upkeep(state.counters.clone(), shutdown.clone()));
    let shards = Shards::start(
        listener,
        app(state.clone(), admin_listener.is_none()),
        &state.busy_poll,
        &shutdown,
        &release,
    )
    .map_err(|source| {
        // Ends any shard already started.
        shutdown.cancel();
        release.cancel();
        StartError::Bind {
            addr: listen,
            source,
        }
    })?;
    let admin = admin_listener.map(|l| serve_on(l, admin_app(state.clone()), shutdown.clone()));
    let server = tokio::spawn(async move {
        match admin {
            Some(admin) => {
                tokio::join!(shards.served(), admin);
            }
            None => shards.served().await,
        }
    });
    Ok(Gateway {
        addr,
        admin_addr,
        state,
        shutdown,
        release,
        server,
    })
}

/// How long a shutdown waits for queued spans to reach the collector.
const SPAN_FLUSH: std::time::Duration = std::time::Duration::from_secs(2);

/// How often histogram samples are folded into their buckets.
const METRICS_UPKEEP: std::time::Duration = std::time::Duration::from_secs(1);

/// `install_recorder` leaves upkeep to its caller: without it every
/// histogram sample is kept until a scrape of `/metrics` drains them, so a
/// gateway nobody scrapes grew by ~40 bytes per request, forever.
async fn metrics_upkeep(handle: PrometheusHandle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(METRICS_UPKEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            () = stop.cancelled() => return,
        }
    }
}

/// How often a ledger writer that has no rows to write says it is alive.
const WRITER_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);

/// Shared counters hand what this gateway holds to budget counters rebuilt
/// after a loss, and mend those that missed its spend (`allow_local`).
async fn counters_upkeep(counters: Arc<dyn Counters>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(crate::counters::MAINTAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => counters.maintain().await,
            () = stop.cancelled() => return,
        }
    }
}

async fn serve_on(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    // Without TCP_NODELAY every small write (an SSE chunk, a short JSON
    // answer) waits for the peer's delayed ACK: ~40 ms per stream.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await });
    if let Err(e) = server.await {
        tracing::error!(error = %e, "server stopped with an error");
    }
}

/// `tollgate serve`: starts, prints where it listens, reloads on SIGHUP, and
/// shuts down cleanly on SIGTERM/SIGINT.
pub async fn serve(opts: ServeOptions) -> Result<(), StartError> {
    telemetry::init(opts.log_format);
    let env = |k: &str| std::env::var(k).ok();
    let path = config::resolve_path(opts.config.as_deref(), &env);
    let config = load(path.as_deref(), &env)?;
    let gateway = start(config, path, Arc::new(SystemClock)).await?;
    println!("tollgate listening on http://{}", gateway.addr);
    if let Some(a) = gateway.admin_addr {
        println!("tollgate admin API on http://{a}");
    }
    tracing::info!(addr = %gateway.addr, admin_addr = ?gateway.admin_addr, "listening");
    wait_for_stop(&gateway.state).await;
    tracing::info!("shutting down: draining in-flight requests");
    gateway.shutdown().await;
    tracing::info!("ledger flushed; bye");
    Ok(())
}

fn load(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, StartError> {
    match path {
        Some(p) => config::load_file(p, env).map_err(|e| StartError::Config(e.to_string())),
        None => Ok(config::embedded_default(env)),
    }
}

/// Returns on SIGTERM or SIGINT; reloads on SIGHUP meanwhile.
async fn wait_for_stop(state: &AppState) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("cannot install signal handlers; stopping on Ctrl-C only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hup.recv() => {
                let outcome = state.reload();
                if let Err(e) = &outcome {
                    tracing::error!(error = %e, problems = %e.problems(),
                        "reload on SIGHUP rejected; the previous config stays in force");
                }
                admin::audit::reloaded_by_signal(state, outcome.is_ok()).await;
            }
        }
    }
}
