//! The data plane runs thread-per-core: `workers` threads, each with its own
//! single-threaded tokio runtime and its own upstream connection pool, as
//! Envoy and nginx do. One acceptor hands each new connection to the next
//! worker in turn; from then on everything a request does (reading it,
//! calling the provider, streaming the answer, settling its counters) runs
//! on that one thread.
//!
//! Why: on a work-stealing runtime one proxied request hops between threads
//! several times (client connection, upstream connection, response body),
//! and waking an idle thread costs tens of microseconds on a virtual
//! machine: more than everything else the gateway does for a request.
//!
//! Shutdown: the acceptor stops first (new connections are refused), each
//! worker then drains its connections (axum's graceful shutdown), and the
//! runtimes keep running until [`Workers`] is dropped, so settlements they
//! started still finish and connections opened on them stay usable by the
//! ledger's final flush.

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use axum::Router;
use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

type Handoff = (std::net::TcpStream, SocketAddr);

/// The worker threads; dropping this stops their runtimes.
pub(crate) struct Workers {
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
        // Not joined: a drop inside an async context must not block. The
        // threads end as soon as their runtimes see `stop`.
        self.threads.clear();
    }
}

/// `n` workers (at least one) serving `router`, and the future that accepts
/// connections on `listener` and hands them out until `shutdown`; that
/// future ends once every worker has drained its connections.
pub(crate) fn start(
    n: usize,
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<(Workers, impl Future<Output = ()> + Send + 'static)> {
    let local = listener.local_addr()?;
    let stop = CancellationToken::new();
    let mut inboxes = Vec::with_capacity(n.max(1));
    let mut drained = Vec::with_capacity(n.max(1));
    let mut threads = Vec::with_capacity(n.max(1));
    for i in 0..n.max(1) {
        let (tx, rx) = mpsc::unbounded_channel::<Handoff>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let inbox = Inbox { rx, local };
        let (router, shutdown, stop) = (router.clone(), shutdown.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name(format!("tollgate-worker-{i}"))
            .spawn(move || run_worker(inbox, router, shutdown, stop, done_tx))?;
        inboxes.push(tx);
        drained.push(done_rx);
        threads.push(thread);
    }
    let serving = async move {
        accept_loop(listener, inboxes, shutdown).await;
        for done in drained {
            // An error means the worker is gone, which is also "drained".
            let _ = done.await;
        }
    };
    Ok((Workers { stop, threads }, serving))
}

fn run_worker(
    inbox: Inbox,
    router: Router,
    shutdown: CancellationToken,
    stop: CancellationToken,
    drained: oneshot::Sender<()>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            // Its inbox closes with it: the acceptor skips it from then on.
            tracing::error!(error = %e, "cannot start a worker runtime; running with one worker fewer");
            return;
        }
    };
    crate::providers::use_own_pool_on_this_thread();
    runtime.block_on(async move {
        tokio::select! {
            () = crate::app::serve_on(inbox, router, shutdown) => {
                let _ = drained.send(());
                stop.cancelled().await;
            }
            // Dropped without a shutdown (a test ending): stop at once.
            () = stop.cancelled() => {}
        }
    });
}

/// Accepts until `shutdown`, giving connections to the workers in turn.
async fn accept_loop(
    mut listener: TcpListener,
    mut inboxes: Vec<mpsc::UnboundedSender<Handoff>>,
    shutdown: CancellationToken,
) {
    let mut next = 0usize;
    loop {
        // `Listener::accept` retries transient errors (EMFILE...) itself.
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            conn = Listener::accept(&mut listener) => conn,
        };
        // Without TCP_NODELAY every small write (an SSE chunk, a short JSON
        // answer) waits for the peer's delayed ACK: ~40 ms per stream.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let mut handoff = match stream.into_std() {
            Ok(s) => (s, peer),
            Err(e) => {
                tracing::warn!(error = %e, %peer, "cannot hand a connection to a worker; dropped");
                continue;
            }
        };
        // A worker that failed to start has dropped its inbox: try the next.
        loop {
            if inboxes.is_empty() {
                tracing::error!("no data-plane worker is running; refusing connections");
                return;
            }
            next = (next + 1) % inboxes.len();
            match inboxes[next].send(handoff) {
                Ok(()) => break,
                Err(mpsc::error::SendError(back)) => {
                    inboxes.swap_remove(next);
                    handoff = back;
                }
            }
        }
    }
}

/// A worker's side of the acceptor: the connections handed to it.
struct Inbox {
    rx: mpsc::UnboundedReceiver<Handoff>,
    local: SocketAddr,
}

impl Listener for Inbox {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some((stream, peer)) = self.rx.recv().await else {
                // The acceptor stopped: nothing more comes; the graceful
                // shutdown that stopped it ends this worker's serve loop.
                return std::future::pending().await;
            };
            // Registers the socket with this worker's own reactor.
            match TcpStream::from_std(stream) {
                Ok(s) => return (s, peer),
                Err(e) => {
                    tracing::warn!(error = %e, %peer, "cannot adopt a handed-off connection; dropped")
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
