//! Server lifecycle: building the state ([`build`]), binding and serving
//! on the shards ([`shard`], [`busy_poll`]), signals ([`signals`]) and
//! shutdown. The command line ([`crate::cli`]) builds [`ServeOptions`];
//! nothing here depends on it. The router itself is [`crate::app`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::serve::ListenerExt as _;
use clap::ValueEnum;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{admin_app, app};
use crate::config::{self, Config};
use crate::counters::Counters;
use crate::state::SharedState;
use crate::telemetry;
use crate::types::{Clock, SystemClock};
use shard::Shards;

pub mod build;
pub mod busy_poll;
pub mod shard;
mod signals;
#[cfg(test)]
mod tests;

pub use build::{StartError, build_state};

/// Log line format. `ValueEnum` so `--log-format` parses straight into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What `tollgate serve` passes to [`serve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub log_format: LogFormat,
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
    let signals = signals::Signals::install();
    let gateway = start(config, path, Arc::new(SystemClock)).await?;
    println!("tollgate listening on http://{}", gateway.addr);
    if let Some(a) = gateway.admin_addr {
        println!("tollgate admin API on http://{a}");
    }
    tracing::info!(addr = %gateway.addr, admin_addr = ?gateway.admin_addr, "listening");
    signals::wait_for_stop(&gateway.state, signals).await;
    tracing::info!("shutting down: draining in-flight requests");
    gateway.shutdown().await;
    tracing::info!("ledger flushed; bye");
    Ok(())
}

fn load(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, StartError> {
    match path {
        Some(p) => config::load_file(p, env).map_err(StartError::Config),
        None => Ok(config::embedded_default(env)),
    }
}
