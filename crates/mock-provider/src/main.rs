//! The `mock-provider` binary: the mock as a standalone server for the load
//! benchmark and for trying a gateway by hand.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use mock_provider::{MockConfig, MockProvider};

/// An OpenAI- and Anthropic-compatible mock LLM provider.
#[derive(Debug, Parser)]
#[command(name = "mock-provider", version)]
struct Args {
    /// Address to listen on; port 0 picks a free one (printed at start).
    #[arg(long, default_value = "127.0.0.1:18090")]
    listen: SocketAddr,
    /// Wait before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Tokens per completion = content chunks per stream.
    #[arg(long, default_value_t = 16)]
    chunks: u32,
    /// Wait between stream chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Only accept requests carrying this provider key.
    #[arg(long, env = "MOCK_PROVIDER_API_KEY")]
    api_key: Option<String>,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = MockConfig {
        addr: Some(args.listen),
        latency: Duration::from_millis(args.latency_ms),
        chunk_delay: Duration::from_millis(args.chunk_delay_ms),
        completion_tokens: args.chunks,
        expected_api_key: args.api_key,
        // Recording every request would cost the benchmark an allocation per call.
        record_requests: 0,
        ..MockConfig::default()
    };
    let mock = MockProvider::start(config).await?;
    println!("mock-provider listening on {}", mock.base_url());
    wait_for_signal().await?;
    mock.shutdown();
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT"),
        _ = term.recv() => Ok(()),
    }
}
