//! What operators' tools read: `/metrics` histograms, spans exported over
//! OTLP/HTTP to a collector the test runs, and the Grafana dashboard built
//! on the exported series.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use mock_provider::FailureMode;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use prost::Message;
use serde_json::{Value, json};

use crate::common::{ADMIN_KEY, Harness, chat_body};

/// Spans a test collector received, with the `service.name` of their resource.
type Spans = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP collector on 127.0.0.1: decodes each protobuf export.
async fn collector() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .as_ref()
                        .and_then(|r| text_attr(&r.attributes, "service.name"))
                        .unwrap_or_default();
                    for ss in rs.scope_spans {
                        for span in ss.spans {
                            sink.lock().push((service.clone(), span));
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn text_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)? {
        any_value::Value::IntValue(n) => Some(*n),
        _ => None,
    }
}

/// The span of the request with `request_id`, waiting (bounded) for it.
async fn span_of(spans: &Spans, request_id: &str) -> (String, Span) {
    let start = Instant::now();
    loop {
        let found = spans
            .lock()
            .iter()
            .find(|(_, s)| {
                text_attr(&s.attributes, "tollgate.request_id").as_deref() == Some(request_id)
            })
            .cloned();
        if let Some(found) = found {
            return found;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no span for request {request_id}; got {} spans",
            spans.lock().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn request_id(resp: &reqwest::Response) -> String {
    resp.headers()["x-request-id"].to_str().unwrap().to_owned()
}

fn telemetry(endpoint: &str) -> String {
    format!("telemetry: {{ otlp_endpoint: '{endpoint}' }}\n")
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test]
async fn a_span_per_request_continues_the_client_trace_and_is_forwarded_upstream() {
    let (endpoint, spans) = collector().await;
    let h = Harness::start(&telemetry(&endpoint)).await;
    let (key_id, key) = h.key(json!({})).await;
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&json!({"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "Hello there"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    let body: Value = resp.json().await.unwrap();
    let (service, span) = span_of(&spans, &id).await;

    assert_eq!(service, "tollgate");
    assert_eq!(
        hex::encode(&span.trace_id),
        CLIENT_TRACE,
        "the client's trace is continued"
    );
    assert_eq!(
        hex::encode(&span.parent_span_id),
        CLIENT_SPAN,
        "the client's span is the parent"
    );
    assert_eq!(span.name, "chat gpt-4o-mini");
    let a = &span.attributes;
    assert_eq!(
        text_attr(a, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(text_attr(a, "gen_ai.system").as_deref(), Some("openai"));
    assert_eq!(
        text_attr(a, "gen_ai.request.model").as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(
        text_attr(a, "gen_ai.response.model").as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(
        int_attr(a, "gen_ai.usage.input_tokens"),
        body["usage"]["prompt_tokens"].as_i64()
    );
    assert_eq!(
        int_attr(a, "gen_ai.usage.output_tokens"),
        body["usage"]["completion_tokens"].as_i64()
    );
    assert_eq!(text_attr(a, "tollgate.key_id"), Some(key_id));
    assert_eq!(text_attr(a, "tollgate.team").as_deref(), Some("t1"));
    assert_eq!(
        text_attr(a, "tollgate.provider").as_deref(),
        Some("upstream")
    );
    assert_eq!(int_attr(a, "http.response.status_code"), Some(200));
    assert!(int_attr(a, "tollgate.cost_nanousd").unwrap() > 0);
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);

    // The provider got this request's span as its parent, in the same trace.
    let upstream = h.mock.last_request().unwrap();
    let tp = upstream
        .header("traceparent")
        .expect("traceparent forwarded");
    assert_eq!(
        tp,
        format!("00-{CLIENT_TRACE}-{}-01", hex::encode(&span.span_id)),
        "the provider's parent is the gateway's span"
    );
}

#[tokio::test]
async fn rejections_streams_and_bad_traceparents_get_spans_too() {
    let (endpoint, spans) = collector().await;
    let h = Harness::start(&telemetry(&endpoint)).await;

    // Unauthenticated: a span with the code, and no key.
    let resp = h.chat("sk-tg-nope-nope", &chat_body("hi")).await;
    assert_eq!(resp.status(), 401);
    let (_, span) = span_of(&spans, &request_id(&resp)).await;
    assert_eq!(
        text_attr(&span.attributes, "error.type").as_deref(),
        Some("invalid_api_key")
    );
    assert_eq!(
        int_attr(&span.attributes, "http.response.status_code"),
        Some(401)
    );
    assert!(text_attr(&span.attributes, "tollgate.key_id").is_none());

    // A budget refusal: the code is on the span; the provider never saw it.
    let (_, poor) = h
        .key(json!({"budget_usd": 0.000001, "period": "daily"}))
        .await;
    let calls = h.mock.calls();
    let resp = h.chat(&poor, &chat_body("hi")).await;
    assert_eq!(resp.status(), 402);
    assert_eq!(h.mock.calls(), calls);
    let (_, span) = span_of(&spans, &request_id(&resp)).await;
    let a = &span.attributes;
    assert_eq!(
        text_attr(a, "tollgate.error_code").as_deref(),
        Some("budget_exceeded")
    );
    assert_eq!(
        text_attr(a, "gen_ai.request.model").as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(text_attr(a, "tollgate.team").as_deref(), Some("t1"));
    assert!(
        int_attr(a, "gen_ai.usage.input_tokens").is_none(),
        "nothing was used"
    );

    // A client's model name reaches the span clipped, and an ill-typed one
    // not at all.
    let (_, key) = h.key(json!({})).await;
    let resp = h
        .chat(
            &key,
            &json!({"model": "m".repeat(10_000), "messages": [{"role": "user", "content": "Hi"}]}),
        )
        .await;
    assert_eq!(resp.status(), 404);
    let (_, span) = span_of(&spans, &request_id(&resp)).await;
    let model = text_attr(&span.attributes, "gen_ai.request.model").unwrap();
    assert!(model.chars().count() <= 129, "{}", model.len());
    assert!(span.name.chars().count() <= 140);
    let resp = h.chat(&key, &json!({"model": 42, "messages": []})).await;
    assert_eq!(resp.status(), 400);
    let (_, span) = span_of(&spans, &request_id(&resp)).await;
    assert_eq!(span.name, "chat");
    assert_eq!(
        text_attr(&span.attributes, "error.type").as_deref(),
        Some("invalid_request")
    );
    assert!(text_attr(&span.attributes, "gen_ai.request.model").is_none());

    // Hostile traceparents (malformed, all-zero, huge) start a new trace:
    // the request is served, and the provider still gets a valid one.
    for bad in [
        "garbage".to_owned(),
        format!("00-{}-{CLIENT_SPAN}-01", "0".repeat(32)),
        format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01{}", "a".repeat(6000)),
    ] {
        let resp = h
            .http
            .post(format!("{}/v1/chat/completions", h.url))
            .bearer_auth(&key)
            .header("traceparent", bad.clone())
            .json(&json!({"model": "gpt-4o-mini", "stream": true, "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{bad:.40}");
        let id = request_id(&resp);
        resp.bytes().await.unwrap();
        let (_, span) = span_of(&spans, &id).await;
        assert!(
            span.parent_span_id.is_empty(),
            "a new trace has no parent: {bad:.40}"
        );
        assert_ne!(hex::encode(&span.trace_id), CLIENT_TRACE);
        assert!(
            int_attr(&span.attributes, "tollgate.time_to_first_byte_ms").is_some(),
            "a stream's span says when its first byte went out"
        );
        let tp = h
            .mock
            .last_request()
            .unwrap()
            .header("traceparent")
            .unwrap()
            .to_owned();
        assert_eq!(
            tp,
            format!(
                "00-{}-{}-01",
                hex::encode(&span.trace_id),
                hex::encode(&span.span_id)
            )
        );
    }
}

#[tokio::test]
async fn a_shutdown_exports_the_spans_still_queued() {
    let (endpoint, spans) = collector().await;
    let mut h = Harness::start(&telemetry(&endpoint)).await;
    let (_, key) = h.key(json!({})).await;
    let resp = h.chat(&key, &chat_body("last words")).await;
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    h.stop().await;
    // No waiting: the span went out before the shutdown returned (a
    // batch otherwise waits half a second to fill up).
    assert!(
        spans.lock().iter().any(|(_, s)| {
            text_attr(&s.attributes, "tollgate.request_id").as_deref() == Some(id.as_str())
        }),
        "the last request's span was flushed"
    );
}

#[tokio::test]
async fn without_telemetry_nothing_is_traced_or_forwarded() {
    let h = Harness::start("").await;
    assert!(h.gw().state.tracer.is_none());
    let (_, key) = h.key(json!({})).await;
    let resp = h
        .http
        .post(format!("{}/v1/chat/completions", h.url))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&chat_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The client's headers are never passed on, this one neither.
    assert!(
        h.mock
            .last_request()
            .unwrap()
            .header("traceparent")
            .is_none()
    );
}

/// A collector that accepts connections and never answers.
async fn silent_collector() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (format!("http://{addr}"), task)
}

#[tokio::test]
async fn a_dead_or_silent_collector_never_slows_or_fails_a_request() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let (silent, _task) = silent_collector().await;
    for endpoint in [dead, silent] {
        let h = Harness::start(&telemetry(&endpoint)).await;
        let (_, key) = h.key(json!({})).await;
        let mut slowest = Duration::ZERO;
        for i in 0..40 {
            let started = Instant::now();
            let resp = h.chat(&key, &chat_body(&format!("hello {i}"))).await;
            assert_eq!(resp.status(), 200, "{endpoint}");
            resp.bytes().await.unwrap();
            slowest = slowest.max(started.elapsed());
        }
        // An export that blocked a request would take its 5 s timeout.
        assert!(
            slowest < Duration::from_secs(2),
            "{endpoint}: slowest request took {slowest:?}"
        );
    }
}

/// `GET /metrics` as text.
async fn scrape(h: &Harness) -> String {
    let resp = h
        .http
        .get(format!("{}/metrics", h.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap()
}

/// Every series name in a Prometheus text exposition.
fn series_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

/// Traffic that makes every series the dashboard shows exist: successes,
/// a stream, a budget refusal (with a budget in force), a bad key, an
/// upstream failure.
async fn traffic(h: &Harness) {
    let (_, key) = h.key(json!({"budget_usd": 0.001, "period": "daily"})).await;
    let small = json!({"model": "gpt-4o-mini", "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]});
    assert_eq!(h.chat(&key, &small).await.status(), 200);
    let mut stream = small.clone();
    stream["stream"] = json!(true);
    let resp = h.chat(&key, &stream).await;
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    // The model's 1000 output tokens cost more than the budget left.
    assert_eq!(h.chat(&key, &chat_body("Hi")).await.status(), 402);
    assert_eq!(h.chat("sk-tg-bad-key", &small).await.status(), 401);
    h.mock.set_failure(FailureMode::Status(500, "{}".into()));
    assert_eq!(h.chat(&key, &small).await.status(), 502);
    h.mock.set_failure(FailureMode::None);
    // Models no one configured never become label values.
    for i in 0..5 {
        let resp = h.chat(&key, &json!({"model": format!("evil-{i}"), "messages": [{"role": "user", "content": "Hi"}]})).await;
        assert_eq!(resp.status(), 404);
    }
    h.settled().await;
}

#[tokio::test]
async fn latency_series_are_histograms_with_configured_labels_only() {
    let h = Harness::start("").await;
    traffic(&h).await;
    let text = scrape(&h).await;
    for series in [
        "tollgate_request_duration_seconds",
        "tollgate_gateway_overhead_seconds",
        "tollgate_stream_first_byte_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {series} histogram")),
            "{series} is a histogram:\n{text}"
        );
        for suffix in ["_bucket", "_sum", "_count"] {
            assert!(
                text.contains(&format!("{series}{suffix}")),
                "{series}{suffix}"
            );
        }
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with(series) && l.contains("quantile=")),
            "{series}: no summary quantiles"
        );
    }
    assert!(
        text.contains(
            r#"tollgate_request_duration_seconds_bucket{model="gpt-4o-mini",le="0.005"}"#
        )
    );
    assert!(text.contains(r#"tollgate_gateway_overhead_seconds_bucket{le="0.0001"}"#));
    assert!(
        text.contains(r#"tollgate_request_duration_seconds_bucket{model="gpt-4o-mini",le="+Inf"}"#)
    );
    assert!(
        !text.contains("evil-"),
        "a client's model name became a label value"
    );

    // Fixed buckets: more traffic adds no series, only counts. (Only this
    // gateway's own series are compared: other tests share the recorder.)
    let buckets = |text: &str, prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();
    let duration = "tollgate_request_duration_seconds_bucket{model=\"gpt-4o-mini\"";
    let overhead = "tollgate_gateway_overhead_seconds_bucket{";
    assert_eq!(buckets(&text, duration), 17, "16 bounds and +Inf");
    assert_eq!(buckets(&text, overhead), 14, "13 bounds and +Inf");
    traffic(&h).await;
    let text = scrape(&h).await;
    assert_eq!(buckets(&text, duration), 17);
    assert_eq!(buckets(&text, overhead), 14);
}

/// The metric names a PromQL expression reads: identifiers that are not
/// functions, keywords, label names or inside strings or brackets.
fn promql_metrics(expr: &str) -> Vec<String> {
    const WORDS: &[&str] = &[
        "sum",
        "rate",
        "irate",
        "increase",
        "histogram_quantile",
        "by",
        "without",
        "max",
        "min",
        "avg",
        "count",
        "topk",
        "bottomk",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "clamp_min",
        "clamp_max",
        "delta",
        "abs",
        "sort_desc",
        "le",
        "offset",
        "bool",
        "vector",
        "scalar",
        "label_replace",
    ];
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let (mut i, mut depth_brace, mut depth_bracket, mut in_str) = (0, 0, 0, None::<u8>);
    // After `by (` / `without (`: label names until the `)`.
    let mut in_grouping = false;
    let mut last_word = String::new();
    while i < bytes.len() {
        let c = bytes[i];
        if let Some(q) = in_str {
            if c == q {
                in_str = None;
            }
            i += 1;
            continue;
        }
        match c {
            b'"' | b'\'' | b'`' => in_str = Some(c),
            b'{' => depth_brace += 1,
            b'}' => depth_brace -= 1,
            b'[' => depth_bracket += 1,
            b']' => depth_bracket -= 1,
            b'(' if matches!(last_word.as_str(), "by" | "without" | "on" | "ignoring") => {
                in_grouping = true
            }
            b')' if in_grouping => in_grouping = false,
            _ => {}
        }
        if c.is_ascii_digit() {
            // A number (`0.99`, `1e9`, `5m` outside brackets): no name.
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                i += 1;
            }
            last_word.clear();
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b':'))
            {
                i += 1;
            }
            let word = &expr[start..i];
            let is_call = expr[i..].trim_start().starts_with('(');
            if depth_brace == 0
                && depth_bracket == 0
                && !in_grouping
                && !is_call
                && !WORDS.contains(&word)
                && !word.starts_with('$')
            {
                out.push(word.to_owned());
            }
            last_word = word.to_owned();
            continue;
        }
        if !c.is_ascii_whitespace() {
            last_word.clear();
        }
        i += 1;
    }
    out
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

#[test]
fn promql_metric_names_are_picked_out() {
    assert_eq!(
        promql_metrics(
            r#"histogram_quantile(0.99, sum by (le, model) (rate(tollgate_request_duration_seconds_bucket{team=~"$team"}[5m])))"#
        ),
        ["tollgate_request_duration_seconds_bucket"]
    );
    assert_eq!(
        promql_metrics("sum(tollgate_spend_nanousd_total) / 1e9 + on (x) tollgate_tokens_total"),
        ["tollgate_spend_nanousd_total", "tollgate_tokens_total"]
    );
}

#[tokio::test]
async fn every_grafana_query_names_a_series_the_gateway_exports() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana-dashboard.json"
    );
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("docs/grafana-dashboard.json"))
            .expect("the dashboard is JSON");
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(
        queries.len() >= 10,
        "the dashboard has its panels: {queries:?}"
    );

    let h = Harness::start("").await;
    traffic(&h).await;
    let exported = series_names(&scrape(&h).await);
    for q in &queries {
        let names = promql_metrics(q);
        assert!(!names.is_empty(), "query names no series: {q}");
        for name in names {
            assert!(
                exported.contains(&name),
                "`{name}` in `{q}` is not exported; the gateway exports {exported:?}"
            );
        }
    }
}

#[tokio::test]
async fn the_binary_logs_the_trace_id_and_exports_its_spans_before_exiting() {
    let (endpoint, spans) = collector().await;
    let mock = mock_provider::MockProvider::start(mock_provider::MockConfig::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("tollgate.db").display());
    let yaml = crate::common::config_yaml(&mock.base_url(), &store, &telemetry(&endpoint));
    let mut p = crate::process::spawn(dir.path(), &yaml, "gateway.log");
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("{}/admin/keys", p.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"team": "t1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = http
        .post(format!("{}/v1/chat/completions", p.url))
        .bearer_auth(created["key"].as_str().unwrap())
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .json(&chat_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = request_id(&resp);
    crate::process::signal(&p.child, "-TERM");
    assert!(p.child.wait().unwrap().success());
    // Flushed on the way out, not lost with the process.
    let (_, span) = span_of(&spans, &id).await;
    assert_eq!(hex::encode(&span.trace_id), CLIENT_TRACE);
    let log = std::fs::read_to_string(&p.log).unwrap();
    let line: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["request_id"] == id.as_str() && l["message"] == "request")
        .unwrap_or_else(|| panic!("no request line for {id}: {log}"));
    assert_eq!(line["trace_id"], CLIENT_TRACE, "{line}");
}
