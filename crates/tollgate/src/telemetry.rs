//! Logging setup. Logs go to stderr, as text or JSON (`--log-format json`);
//! `TOLLGATE_LOG` takes an `EnvFilter` directive (default `info`). One line
//! per request is written by the proxy with the request id, key id, team,
//! model, provider, status, latency and cost — never a key or a prompt
//! (and the trace id when trace export is on).
//!
//! Its submodules own the rest of what operators' tools read: the buckets
//! of `/metrics`' histograms, and spans exported over OTLP.

pub(crate) mod histograms;
pub mod otlp;
pub(crate) mod spans;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::server::LogFormat;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // `try_init`: a second init (tests starting several gateways) is harmless.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
