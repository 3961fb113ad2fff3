//! `tollgate-bench`: a small HTTP load generator for comparing tollgate with
//! the mock provider it fronts. One thread, `--concurrency` keep-alive
//! connections, a fixed request count or a duration, latency percentiles
//! from an HDR histogram; `--json` for `bench/run.sh`.

mod load;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use hyper::Method;
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use serde_json::json;

use load::{LoadSpec, Outcome, Stop};

/// Load generator: N keep-alive connections against one URL.
#[derive(Debug, Parser)]
#[command(name = "tollgate-bench", version)]
struct Args {
    /// Full URL, e.g. `http://127.0.0.1:4000/v1/chat/completions` (loopback only).
    #[arg(long)]
    url: String,
    /// Extra header `Name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Request body from a file (default: a small chat completion request).
    #[arg(long)]
    body: Option<std::path::PathBuf>,
    /// Streaming: the built-in body asks for a stream with a usage chunk,
    /// each answer must end in `data: [DONE]`, and time to first byte is
    /// reported.
    #[arg(long)]
    stream: bool,
    /// Model in the built-in body.
    #[arg(long, default_value = "gpt-4o-mini")]
    model: String,
    /// The API of the built-in body and of the stream's end marker.
    #[arg(long, value_enum, default_value_t = Api::Chat)]
    api: Api,
    #[arg(long, default_value = "POST")]
    method: String,
    /// Connections, each with one request at a time.
    #[arg(long, short = 'c', default_value_t = 1)]
    concurrency: usize,
    /// Stop after this many requests.
    #[arg(long, short = 'n', conflicts_with = "duration")]
    requests: Option<u64>,
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, short = 'd')]
    duration: Option<f64>,
    /// Unmeasured requests sent first, over the same connections.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout_s: f64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The wire format a load speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Api {
    /// OpenAI `/v1/chat/completions`; a stream ends with `data: [DONE]`.
    Chat,
    /// Anthropic `/v1/messages`; a stream ends with `message_stop`.
    Messages,
    /// OpenAI `/v1/responses`; a stream ends with `response.completed`.
    Responses,
}

impl Api {
    fn done_marker(self) -> &'static [u8] {
        match self {
            Api::Chat => b"data: [DONE]",
            Api::Messages => b"event: message_stop",
            Api::Responses => b"event: response.completed",
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // One thread: the load generator should take about one core and no more,
    // since it shares the machine with the server it measures.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let spec = spec(&args).await?;
    let outcome = load::run(Arc::new(spec.clone())).await?;
    if args.json {
        println!("{}", report_json(&args, &spec, &outcome));
    } else {
        print!("{}", report_text(&args, &spec, &outcome));
    }
    Ok(())
}

async fn spec(args: &Args) -> anyhow::Result<LoadSpec> {
    if args.concurrency == 0 {
        bail!("`--concurrency` must be at least 1");
    }
    let stop = match (args.requests, args.duration) {
        (Some(n), None) => Stop::Requests(n),
        (None, Some(s)) if s > 0.0 && s.is_finite() => Stop::Duration(Duration::from_secs_f64(s)),
        (None, Some(s)) => bail!("`--duration {s}` must be a positive number of seconds"),
        (None, None) => bail!("give `--requests N` or `--duration SECONDS`"),
        (Some(_), Some(_)) => bail!("give either `--requests` or `--duration`, not both"),
    };
    if !(args.timeout_s > 0.0 && args.timeout_s.is_finite()) {
        bail!(
            "`--timeout-s {}` must be a positive number of seconds",
            args.timeout_s
        );
    }
    let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .with_context(|| format!("`--method {}` is not an HTTP method", args.method))?;
    let (addr, path, host) = load::target(&args.url).await?;
    let body = match &args.body {
        Some(file) => Bytes::from(
            std::fs::read(file)
                .with_context(|| format!("cannot read `--body {}`", file.display()))?,
        ),
        None if method == Method::GET => Bytes::new(),
        None => builtin_body(args.api, &args.model, args.stream),
    };
    let mut headers = HeaderMap::new();
    headers.insert(HOST, host);
    if !body.is_empty() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    for header in &args.headers {
        let (name, value) = header
            .split_once(':')
            .with_context(|| format!("`--header {header}` is not of the form `Name: value`"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .with_context(|| format!("`{}` is not a header name", name.trim()))?;
        let value = HeaderValue::from_str(value.trim())
            .with_context(|| format!("the value of `{name}` is not a valid header value"))?;
        headers.insert(name, value);
    }
    Ok(LoadSpec {
        addr,
        method,
        path,
        headers,
        body,
        stream: args.stream,
        done_marker: args.api.done_marker(),
        concurrency: args.concurrency,
        stop,
        warmup: args.warmup,
        timeout: Duration::from_secs_f64(args.timeout_s),
    })
}

fn builtin_body(api: Api, model: &str, stream: bool) -> Bytes {
    let system = "You are a terse assistant.";
    let user = "Say hello to the benchmark in a few words.";
    let mut body = match api {
        Api::Chat => chat_body(model),
        Api::Messages => json!({"model": model, "system": system, "max_tokens": 64,
            "messages": [{"role": "user", "content": user}]}),
        Api::Responses => json!({"model": model, "instructions": system, "input": user,
            "max_output_tokens": 64}),
    };
    if stream {
        body["stream"] = json!(true);
        if api == Api::Chat {
            body["stream_options"] = json!({"include_usage": true});
        }
    }
    Bytes::from(body.to_string())
}

fn chat_body(model: &str) -> serde_json::Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Say hello to the benchmark in a few words."}
        ],
        "max_tokens": 64
    })
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn percentiles(h: &hdrhistogram::Histogram<u64>) -> serde_json::Value {
    if h.is_empty() {
        return serde_json::Value::Null;
    }
    json!({
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

fn rps(outcome: &Outcome) -> f64 {
    let secs = outcome.elapsed.as_secs_f64();
    if secs > 0.0 {
        outcome.ok as f64 / secs
    } else {
        0.0
    }
}

fn report_json(args: &Args, spec: &LoadSpec, outcome: &Outcome) -> serde_json::Value {
    let secs = outcome.elapsed.as_secs_f64();
    json!({
        "url": args.url,
        "stream": spec.stream,
        "concurrency": spec.concurrency,
        "duration_s": (secs * 1000.0).round() / 1000.0,
        "ok": outcome.ok,
        "errors": outcome.errors,
        "error_count": outcome.errors.values().sum::<u64>(),
        "rps": (rps(outcome) * 10.0).round() / 10.0,
        "latency_us": percentiles(&outcome.latency),
        "ttfb_us": if spec.stream { percentiles(&outcome.ttfb) } else { serde_json::Value::Null },
        "bytes_per_request": outcome.body_bytes.checked_div(outcome.ok).unwrap_or(0),
        "bench_cpu_ms": outcome.cpu.map(|c| c.as_millis() as u64),
        "bench_cpu_pct": outcome.cpu.filter(|_| secs > 0.0).map(|c| (c.as_secs_f64() / secs * 1000.0).round() / 10.0),
    })
}

fn report_text(args: &Args, spec: &LoadSpec, outcome: &Outcome) -> String {
    let mut out = format!(
        "{} {}  concurrency {}{}\n  {} ok in {:.2} s = {:.1} req/s\n",
        spec.method,
        args.url,
        spec.concurrency,
        if spec.stream { "  (stream)" } else { "" },
        outcome.ok,
        outcome.elapsed.as_secs_f64(),
        rps(outcome),
    );
    let h = &outcome.latency;
    if !h.is_empty() {
        out += &format!(
            "  latency  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms\n",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.9)),
            ms(h.value_at_quantile(0.99)),
            ms(h.max())
        );
    }
    if spec.stream && !outcome.ttfb.is_empty() {
        let t = &outcome.ttfb;
        out += &format!(
            "  ttfb     p50 {:.3} ms  p99 {:.3} ms\n",
            ms(t.value_at_quantile(0.5)),
            ms(t.value_at_quantile(0.99))
        );
    }
    if outcome.errors.is_empty() {
        out += "  errors   none\n";
    } else {
        let list: Vec<String> = outcome
            .errors
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        out += &format!("  errors   {}\n", list.join(", "));
    }
    if let Some(cpu) = outcome.cpu {
        out += &format!("  bench cpu {} ms\n", cpu.as_millis());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mock_provider::{FailureMode, MockConfig, MockHandle, MockProvider};

    async fn mock() -> MockHandle {
        MockProvider::start(MockConfig {
            record_requests: 4,
            ..MockConfig::default()
        })
        .await
        .unwrap()
    }

    fn args(url: String, extra: &[&str]) -> Args {
        let mut argv = vec!["tollgate-bench", "--url", &url];
        argv.extend_from_slice(extra);
        Args::parse_from(argv)
    }

    async fn go(args: &Args) -> (LoadSpec, Outcome) {
        let spec = spec(args).await.unwrap();
        let outcome = load::run(Arc::new(spec.clone())).await.unwrap();
        (spec, outcome)
    }

    #[tokio::test]
    async fn counts_requests_and_latency() {
        let mock = mock().await;
        let url = format!("{}/chat/completions", mock.base_url());
        let a = args(
            url,
            &[
                "-c",
                "4",
                "-n",
                "200",
                "--warmup",
                "20",
                "-H",
                "Authorization: Bearer sk-x",
            ],
        );
        let (spec, outcome) = go(&a).await;
        assert_eq!(outcome.ok, 200);
        assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        assert_eq!(outcome.latency.len(), 200);
        assert!(outcome.latency.value_at_quantile(0.5) > 0);
        assert_eq!(mock.calls(), 220);
        // Four keep-alive connections, never more requests open at once.
        assert!(mock.max_in_flight() <= 4);
        let last = mock.last_request().unwrap();
        assert_eq!(last.api_key(), Some("sk-x"));
        assert_eq!(last.json().unwrap()["model"], "gpt-4o-mini");
        let report = report_json(&a, &spec, &outcome);
        assert_eq!(report["ok"], 200);
        assert_eq!(report["error_count"], 0);
        assert!(
            report["latency_us"]["p99"].as_u64().unwrap()
                >= report["latency_us"]["p50"].as_u64().unwrap()
        );
        assert!(report["bytes_per_request"].as_u64().unwrap() > 100);
        assert!(report_text(&a, &spec, &outcome).contains("200 ok"));
    }

    #[tokio::test]
    async fn streams_are_checked_for_done() {
        let mock = mock().await;
        let url = format!("{}/chat/completions", mock.base_url());
        let a = args(url, &["--stream", "-c", "2", "-n", "50", "--warmup", "0"]);
        let (spec, outcome) = go(&a).await;
        assert_eq!(outcome.ok, 50, "{:?}", outcome.errors);
        assert!(!outcome.ttfb.is_empty());
        assert!(
            report_json(&a, &spec, &outcome)["ttfb_us"]["p50"]
                .as_u64()
                .is_some()
        );
        let body = mock.last_request().unwrap().json().unwrap();
        assert_eq!(body["stream_options"]["include_usage"], true);

        // A stream cut before `[DONE]` is an error, not a success.
        mock.set_failure(FailureMode::StreamCut { after_chunks: 2 });
        let (_, outcome) = go(&args(
            format!("{}/chat/completions", mock.base_url()),
            &["--stream", "-n", "3", "--warmup", "0"],
        ))
        .await;
        assert_eq!(outcome.ok, 0);
        assert_eq!(
            outcome.errors.values().sum::<u64>(),
            3,
            "{:?}",
            outcome.errors
        );
    }

    #[tokio::test]
    async fn errors_by_status_and_reconnects_after_resets() {
        let mock = mock().await;
        let url = format!("{}/chat/completions", mock.base_url());
        mock.set_failure(FailureMode::FailFirst(5));
        let (_, outcome) = go(&args(url.clone(), &["-n", "20", "--warmup", "0"])).await;
        assert_eq!(outcome.errors.get("500"), Some(&5));
        assert_eq!(outcome.ok, 15);

        mock.set_failure(FailureMode::Reset);
        let (_, outcome) = go(&args(url.clone(), &["-n", "5", "--warmup", "0"])).await;
        assert_eq!(outcome.ok, 0);
        assert_eq!(outcome.errors.get("io"), Some(&5), "{:?}", outcome.errors);
        assert_eq!(mock.calls(), 25);

        mock.set_failure(FailureMode::Hang);
        let (_, outcome) = go(&args(
            url,
            &["-n", "2", "--warmup", "0", "--timeout-s", "0.2"],
        ))
        .await;
        assert_eq!(outcome.errors.get("timeout"), Some(&2));
    }

    #[tokio::test]
    async fn duration_mode_stops_on_time() {
        let mock = mock().await;
        let url = format!("{}/chat/completions", mock.base_url());
        let started = std::time::Instant::now();
        let (_, outcome) = go(&args(url, &["-c", "3", "-d", "0.3", "--warmup", "0"])).await;
        assert!(outcome.ok > 0);
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(outcome.elapsed >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn refuses_bad_input() {
        assert!(
            spec(&args("http://10.1.2.3:80/v1".into(), &["-n", "1"]))
                .await
                .is_err()
        );
        assert!(
            spec(&args("https://127.0.0.1:1/v1".into(), &["-n", "1"]))
                .await
                .is_err()
        );
        assert!(
            spec(&args("http://127.0.0.1:1/v1".into(), &[]))
                .await
                .is_err()
        );
        assert!(
            spec(&args(
                "http://127.0.0.1:1/v1".into(),
                &["-n", "1", "-H", "nocolon"]
            ))
            .await
            .is_err()
        );
        let ok = spec(&args(
            "http://localhost:1/v1/models?x=1".into(),
            &["-n", "1", "--method", "get"],
        ))
        .await
        .unwrap();
        assert_eq!(ok.path, "/v1/models?x=1");
        assert!(ok.body.is_empty());
    }
}
