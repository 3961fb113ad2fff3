//! Thread-per-core serving: the data plane runs on N single-threaded
//! runtimes ("shards"), one OS thread each, and every connection lives on
//! one shard from accept to close.
//!
//! Why not one work-stealing runtime: on a small machine its idle workers
//! are woken (a futex and a vCPU wake-up) to steal whatever a busy worker
//! just made ready, so one request hops between threads several times:
//! the socket read, the Redis reply, the provider's answer. Each hop costs
//! tens of microseconds on a VM. On a shard the request, its upstream
//! connection (a pool per shard, [`crate::providers::Http`]), its Redis
//! connection (one per shard) and its busy-poll window
//! ([`crate::server::busy_poll`]) share one thread, and the shards still use every
//! core because connections are dealt to them in turn.
//!
//! One acceptor (on the main runtime) hands each accepted socket to the next
//! shard, so the load is spread evenly whatever the client's port hashing.
//! `TOKIO_WORKER_THREADS` sets the number of shards (default: the CPUs).

use std::cell::Cell;
use std::future::IntoFuture as _;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::server::busy_poll::BusyPoll;

thread_local! {
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The shard this thread runs, if it is one.
pub fn current() -> Option<usize> {
    CURRENT.get()
}

/// Marks this thread as shard `index` (shard threads, and tests that act as one).
pub fn enter(index: usize) {
    CURRENT.set(Some(index));
}

/// How many shards to run: `TOKIO_WORKER_THREADS`, else the CPUs.
pub fn count() -> usize {
    let from_env = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0);
    from_env
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1)
        .min(MAX_SHARDS)
}

/// A sane ceiling: past this, more threads only add memory.
pub const MAX_SHARDS: usize = 64;

/// One `T` per shard, for what must live on the shard that uses it (an
/// upstream connection pool, a Redis connection). Indexed by shard, not by
/// thread: a thread id can be reused after its thread ends, and with it a
/// connection whose runtime is gone.
pub struct PerShard<T> {
    slots: Box<[T]>,
}

impl<T: Default> PerShard<T> {
    pub fn new() -> Self {
        PerShard {
            slots: (0..MAX_SHARDS).map(|_| T::default()).collect(),
        }
    }
}

impl<T: Default> Default for PerShard<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PerShard<T> {
    /// The slot of the shard this thread runs; `None` off a shard.
    pub fn get(&self) -> Option<&T> {
        current().and_then(|i| self.slots.get(i))
    }
}

type Handoff = (std::net::TcpStream, SocketAddr);

/// The running shards of one listener.
pub struct Shards {
    /// Each resolves once its shard stopped serving (every connection drained).
    served: Vec<tokio::sync::oneshot::Receiver<()>>,
}

impl Shards {
    /// Starts `busy.shards()` shards serving `router`, fed by one acceptor on
    /// `listener`. They stop accepting and drain when `shutdown` fires, and
    /// their runtimes (with any task a request spawned) live on until
    /// `release` fires.
    pub fn start(
        listener: TcpListener,
        router: Router,
        busy: &std::sync::Arc<BusyPoll>,
        shutdown: &CancellationToken,
        release: &CancellationToken,
    ) -> io::Result<Shards> {
        let addr = listener.local_addr()?;
        let mut senders = Vec::new();
        let mut served = Vec::new();
        for index in 0..busy.shards() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, rx) = mpsc::unbounded_channel::<Handoff>();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let (router, busy) = (router.clone(), std::sync::Arc::clone(busy));
            let (shutdown, release) = (shutdown.clone(), release.clone());
            std::thread::Builder::new()
                .name(format!("tollgate-shard-{index}"))
                .spawn(move || {
                    enter(index);
                    runtime.block_on(async move {
                        tokio::spawn(busy.run(index, shutdown.clone()));
                        // The peer address goes in each request's
                        // extensions, for the audit log. axum derives
                        // `ConnectInfo<SocketAddr>` for a `TapIo` listener,
                        // so the shard's listener is wrapped in a no-op one.
                        let listener = ShardListener { rx, addr }.tap_io(|_| {});
                        let server = axum::serve(
                            listener,
                            router.into_make_service_with_connect_info::<SocketAddr>(),
                        )
                            .with_graceful_shutdown(shutdown.cancelled_owned())
                            .into_future();
                        // `release` also ends a drain that outlived the drain timeout.
                        tokio::select! {
                            r = server => if let Err(e) = r {
                                tracing::error!(shard = index, error = %e, "server stopped with an error");
                            },
                            () = release.cancelled() => {}
                        }
                        let _ = done_tx.send(());
                        release.cancelled().await;
                    });
                })?;
            senders.push(tx);
            served.push(done_rx);
        }
        tokio::spawn(accept(listener, senders, shutdown.clone()));
        Ok(Shards { served })
    }

    /// Resolves once every shard has drained its connections.
    pub async fn served(self) {
        for done in self.served {
            let _ = done.await;
        }
    }
}

/// Deals accepted sockets to the shards in turn.
async fn accept(
    listener: TcpListener,
    shards: Vec<mpsc::UnboundedSender<Handoff>>,
    stop: CancellationToken,
) {
    let mut next = 0usize;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = stop.cancelled() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_error(e).await;
                continue;
            }
        };
        // Without TCP_NODELAY every small write (an SSE chunk, a short JSON
        // answer) waits for the peer's delayed ACK: ~40 ms per stream.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let std = match tcp.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand an accepted connection to a shard");
                continue;
            }
        };
        let Some(shard) = shards.get(next % shards.len().max(1)) else {
            return;
        };
        next = next.wrapping_add(1);
        if shard.send((std, peer)).is_err() {
            // The shard is gone: only during shutdown.
            return;
        }
    }
}

/// As axum's own listener does: a failed connection is the client's
/// problem; anything else (out of file descriptors) is worth a pause.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One shard's side of the hand-off, as an axum listener.
struct ShardListener {
    rx: mpsc::UnboundedReceiver<Handoff>,
    addr: SocketAddr,
}

impl axum::serve::Listener for ShardListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let Some((std, peer)) = self.rx.recv().await else {
                // The acceptor stopped: shutdown is under way and will end
                // the server; never hand it another connection.
                return std::future::pending().await;
            };
            // Registers the socket with this shard's own reactor.
            match TcpStream::from_std(std) {
                Ok(tcp) => return (tcp, peer),
                Err(e) => tracing::warn!(error = %e, "a shard cannot take a connection"),
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// One request on an open connection; returns the answer's body.
    async fn ask(tcp: &mut TcpStream) -> String {
        tcp.write_all(b"GET /shard HTTP/1.1\r\nhost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let mut got = String::new();
        while !got.contains("\r\n\r\n") || !got.ends_with(']') {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed early: {got:?}");
            got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        got.rsplit("\r\n\r\n").next().unwrap().to_owned()
    }

    #[tokio::test]
    async fn connections_are_dealt_to_every_shard_and_stay_there() {
        // The handler answers with the shard (and thread) it ran on.
        let router = Router::new().route(
            "/shard",
            get(|| async {
                let thread = std::thread::current().name().unwrap_or("").to_owned();
                format!("[{:?} {thread}]", current())
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let busy = BusyPoll::new(Duration::ZERO, 3);
        let (shutdown, release) = (CancellationToken::new(), CancellationToken::new());
        let shards = Shards::start(listener, router, &busy, &shutdown, &release).unwrap();

        let mut conns = Vec::new();
        for _ in 0..6 {
            conns.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut seen = Vec::new();
        for c in &mut conns {
            let first = ask(c).await;
            for _ in 0..3 {
                assert_eq!(ask(c).await, first, "a connection moved between shards");
            }
            seen.push(first);
        }
        // Dealt in turn: 0, 1, 2, 0, 1, 2.
        for (i, s) in seen.iter().enumerate() {
            let shard = i % 3;
            assert_eq!(s, &format!("[Some({shard}) tollgate-shard-{shard}]"));
        }

        drop(conns);
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), shards.served())
            .await
            .expect("every shard drains once its connections are gone");
        release.cancel();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "the listener is closed after shutdown"
        );
    }

    #[test]
    fn threads_outside_a_shard_have_none() {
        let other = std::thread::spawn(current).join().unwrap();
        assert_eq!(other, None);
        let inside = std::thread::spawn(|| {
            enter(4);
            current()
        })
        .join()
        .unwrap();
        assert_eq!(inside, Some(4));
    }
}
