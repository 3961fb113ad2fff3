//! The load itself: `concurrency` keep-alive HTTP/1.1 connections, each
//! driven by one task sending a request, reading the whole answer, and
//! sending the next; latencies go into one histogram per task, merged at
//! the end. Everything runs on the caller's (single-threaded) runtime.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Slowest latency the histograms hold (a minute, in microseconds).
const MAX_LATENCY_US: u64 = 60_000_000;

#[derive(Debug, Clone)]
pub(crate) struct LoadSpec {
    pub addr: SocketAddr,
    pub method: Method,
    /// Path and query sent on the request line.
    pub path: String,
    /// Every header sent, `host` included.
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Check each answer holds `done_marker` and measure time to first byte.
    pub stream: bool,
    /// What a complete stream of this API contains: `data: [DONE]`
    /// (OpenAI chat), `event: message_stop` (Anthropic Messages),
    /// `event: response.completed` (OpenAI Responses).
    pub done_marker: &'static [u8],
    pub concurrency: usize,
    pub stop: Stop,
    pub warmup: u64,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stop {
    Requests(u64),
    Duration(Duration),
}

/// What one measured phase saw.
pub(crate) struct Outcome {
    pub elapsed: Duration,
    pub ok: u64,
    /// Non-2xx answers by status, transport failures by kind
    /// (`connect`, `io`, `timeout`, `no_done`).
    pub errors: BTreeMap<String, u64>,
    /// Whole-answer latency of successful requests, microseconds.
    pub latency: Histogram<u64>,
    /// Time to the first body byte of successful requests, microseconds.
    pub ttfb: Histogram<u64>,
    pub body_bytes: u64,
    /// CPU time this process used during the phase.
    pub cpu: Option<Duration>,
}

/// Resolves `url` (which must be `http://` on a loopback address) into where
/// to connect and what to put on the request line.
pub(crate) async fn target(url: &str) -> anyhow::Result<(SocketAddr, String, HeaderValue)> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("`{url}` is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("`{url}`: only `http://` URLs are supported (the benchmark targets local servers)");
    }
    let authority = uri
        .authority()
        .with_context(|| format!("`{url}` has no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((authority.host(), port))
        .await
        .with_context(|| format!("cannot resolve `{}`", authority.host()))?
        .next()
        .with_context(|| format!("`{}` resolves to no address", authority.host()))?;
    if !addr.ip().is_loopback() {
        bail!(
            "`{url}` is not a loopback address: the benchmark only loads servers on this machine"
        );
    }
    let path = uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let host = HeaderValue::from_str(authority.as_str())
        .context("the URL's host is not a valid `Host` header")?;
    Ok((addr, path, host))
}

pub(crate) async fn run(spec: Arc<LoadSpec>) -> anyhow::Result<Outcome> {
    // Connect everything up front so connection setup is not measured.
    let mut conns = Vec::with_capacity(spec.concurrency);
    for _ in 0..spec.concurrency {
        conns.push(Some(
            connect(spec.addr)
                .await
                .with_context(|| format!("cannot connect to `{}`", spec.addr))?,
        ));
    }
    if spec.warmup > 0 {
        let (back, _) = phase(&spec, conns, Stop::Requests(spec.warmup)).await?;
        conns = back;
    }
    let cpu_before = process_cpu();
    let started = Instant::now();
    let (_, mut outcome) = phase(&spec, conns, spec.stop).await?;
    outcome.elapsed = started.elapsed();
    outcome.cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    Ok(outcome)
}

struct WorkerResult {
    conn: Option<SendRequest<Full<Bytes>>>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    ttfb: Histogram<u64>,
    body_bytes: u64,
}

async fn phase(
    spec: &Arc<LoadSpec>,
    conns: Vec<Option<SendRequest<Full<Bytes>>>>,
    stop: Stop,
) -> anyhow::Result<(Vec<Option<SendRequest<Full<Bytes>>>>, Outcome)> {
    let claimed = Arc::new(AtomicU64::new(0));
    let deadline = match stop {
        Stop::Duration(d) => Some(Instant::now() + d),
        Stop::Requests(_) => None,
    };
    let mut tasks = Vec::with_capacity(conns.len());
    for conn in conns {
        let spec = Arc::clone(spec);
        let claimed = Arc::clone(&claimed);
        tasks.push(tokio::spawn(async move {
            worker(&spec, conn, stop, deadline, &claimed).await
        }));
    }
    let mut outcome = Outcome {
        elapsed: Duration::ZERO,
        ok: 0,
        errors: BTreeMap::new(),
        latency: histogram()?,
        ttfb: histogram()?,
        body_bytes: 0,
        cpu: None,
    };
    let mut back = Vec::with_capacity(tasks.len());
    for task in tasks {
        let result = task.await.context("a load task failed")??;
        outcome.ok += result.ok;
        for (kind, n) in result.errors {
            *outcome.errors.entry(kind).or_default() += n;
        }
        outcome
            .latency
            .add(&result.latency)
            .context("cannot merge latency histograms")?;
        outcome
            .ttfb
            .add(&result.ttfb)
            .context("cannot merge latency histograms")?;
        outcome.body_bytes += result.body_bytes;
        back.push(result.conn);
    }
    Ok((back, outcome))
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).context("cannot create a latency histogram")
}

async fn worker(
    spec: &LoadSpec,
    mut conn: Option<SendRequest<Full<Bytes>>>,
    stop: Stop,
    deadline: Option<Instant>,
    claimed: &AtomicU64,
) -> anyhow::Result<WorkerResult> {
    let mut result = WorkerResult {
        conn: None,
        ok: 0,
        errors: BTreeMap::new(),
        latency: histogram()?,
        ttfb: histogram()?,
        body_bytes: 0,
    };
    loop {
        match (stop, deadline) {
            (Stop::Requests(n), _) if claimed.fetch_add(1, Ordering::Relaxed) >= n => break,
            (_, Some(deadline)) if Instant::now() >= deadline => break,
            _ => {}
        }
        let mut sender = match conn.take() {
            Some(sender) => sender,
            None => match connect(spec.addr).await {
                Ok(sender) => sender,
                Err(_) => {
                    *result.errors.entry("connect".to_owned()).or_default() += 1;
                    // The server is down or refusing: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let started = Instant::now();
        match tokio::time::timeout(spec.timeout, one_request(spec, &mut sender, started)).await {
            Ok(Ok(answer)) => {
                let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
                if !answer.status_ok {
                    *result.errors.entry(answer.status.to_string()).or_default() += 1;
                } else if spec.stream && !answer.done {
                    *result.errors.entry("no_done".to_owned()).or_default() += 1;
                } else {
                    result.ok += 1;
                    result.latency.saturating_record(us(started.elapsed()));
                    result.ttfb.saturating_record(us(answer.first_byte));
                    result.body_bytes += answer.bytes;
                }
                if answer.keep_alive {
                    conn = Some(sender);
                }
            }
            Ok(Err(_)) => *result.errors.entry("io".to_owned()).or_default() += 1,
            Err(_) => *result.errors.entry("timeout".to_owned()).or_default() += 1,
        }
    }
    result.conn = conn;
    Ok(result)
}

struct Answer {
    status: u16,
    status_ok: bool,
    first_byte: Duration,
    bytes: u64,
    /// The body ended with `data: [DONE]`.
    done: bool,
    keep_alive: bool,
}

async fn one_request(
    spec: &LoadSpec,
    sender: &mut SendRequest<Full<Bytes>>,
    started: Instant,
) -> Result<Answer, hyper::Error> {
    sender.ready().await?;
    let mut request = Request::new(Full::new(spec.body.clone()));
    *request.method_mut() = spec.method.clone();
    *request.uri_mut() =
        Uri::try_from(spec.path.as_str()).unwrap_or_else(|_| Uri::from_static("/"));
    *request.headers_mut() = spec.headers.clone();
    let response = sender.send_request(request).await?;
    let status = response.status();
    let keep_alive = response
        .headers()
        .get(hyper::header::CONNECTION)
        .is_none_or(|v| v.as_bytes() != b"close");
    let mut body = response.into_body();
    let mut first_byte = None;
    let mut bytes = 0u64;
    // The last few bytes seen, to find the marker split across frames.
    let marker = spec.done_marker;
    let mut tail: Vec<u8> = Vec::with_capacity(64);
    let mut done = false;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Some(data) = frame.data_ref() {
            if first_byte.is_none() && !data.is_empty() {
                first_byte = Some(started.elapsed());
            }
            bytes += data.len() as u64;
            if spec.stream && !done {
                tail.extend_from_slice(data);
                done = tail.windows(marker.len()).any(|w| w == marker);
                let excess = tail.len().saturating_sub(marker.len());
                tail.drain(..excess);
            }
        }
    }
    Ok(Answer {
        status: status.as_u16(),
        status_ok: status.is_success(),
        first_byte: first_byte.unwrap_or_else(|| started.elapsed()),
        bytes,
        done,
        keep_alive,
    })
}

async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes; either way
        // the worker notices on its next request and reconnects.
        let _ = connection.await;
    });
    Ok(sender)
}

/// CPU time (user + system) this process has used so far, from
/// `/proc/self/stat`; `None` where that file does not exist.
pub(crate) fn process_cpu() -> Option<Duration> {
    // USER_HZ, the unit of these fields, is 100 on every Linux architecture.
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the `(comm)`, which may itself contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SECOND,
    ))
}
