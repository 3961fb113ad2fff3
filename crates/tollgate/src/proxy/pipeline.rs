//! One `/v1` request from top to bottom: authenticate, read and validate,
//! resolve the model, check access, admit (budgets, rate limits, loop
//! guard), forward with fallback, settle, record. Every request that got past
//! authentication is settled and written to the ledger exactly once,
//! whatever happens to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use serde_json::{Map, Value};

use super::{body, failover, forward, native, stream, validate};
use crate::cache;
use crate::config::{Config, ModelConfig, Target};
use crate::error::ApiError;
use crate::policy::{
    Admitted, BUDGET_REMAINING_HEADER, InputTokens, Outcome, PolicyEngine, RequestFacts, Settled,
    Subject, estimate, estimate_native,
};
use crate::providers::{Endpoint, UpstreamResponse, Usage, translate};
use crate::state::{Runtime, SharedState};
use crate::store::{JournalEntry, KeyRecord, LedgerRow, TeamRecord};
use crate::telemetry::histograms;
use crate::types::{NanoUsd, clip};

/// Which API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    OpenAi(Endpoint),
    /// `POST /v1/messages` (Anthropic Messages API).
    Anthropic,
    /// `POST /v1/responses` (OpenAI Responses API).
    Responses,
}

impl Ingress {
    /// The name the response cache keys this ingress's requests by; `None`:
    /// never cached. Each ingress decides here: a new one must say whether
    /// its answers are canonical chat/completions/embeddings answers that
    /// `cache::replay` can serve back.
    fn cache_name(self) -> Option<&'static str> {
        match self {
            Ingress::OpenAi(Endpoint::ChatCompletions) => Some("chat"),
            Ingress::OpenAi(Endpoint::Completions) => Some("completions"),
            Ingress::OpenAi(Endpoint::Embeddings) => Some("embeddings"),
            // The agent ingresses may be answered natively, in their own
            // format, which a hit served in canonical form would not match.
            Ingress::Anthropic | Ingress::Responses => None,
        }
    }
}

/// Runs the request on a task of its own that the server tracks, and
/// waits for its answer. A client that hangs up cancels only this wait: the
/// provider call goes on to its end, so the request is billed what the
/// provider bills for it (the whole answer), not just its prompt, and its
/// row says the client left (499).
pub(super) async fn handle(
    state: SharedState,
    request_id: String,
    ingress: Ingress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        let response = run(state, request_id, ingress, headers, body, &reply).await;
        // Fails only when the client is gone; the books are closed already.
        let _ = reply.send(response);
    });
    match answer.await {
        Ok(response) => response,
        // The task panicked; its books were closed as a 500 when dropped.
        Err(_) => ApiError::Internal("the request failed inside the gateway".into())
            .into_response_as(ingress.error_format()),
    }
}

async fn run(
    state: SharedState,
    request_id: String,
    ingress: Ingress,
    headers: HeaderMap,
    body: Body,
    reply: &tokio::sync::oneshot::Sender<Response>,
) -> Response {
    let started = Instant::now();
    let trace = super::traced::begin(&state, &headers, ingress);
    let format = ingress.error_format();
    let rt = state.runtime.load_full();
    let auth = match state.keys.authenticate(&headers, state.clock.now()).await {
        Ok(a) => a,
        Err(e) => {
            metrics::counter!("tollgate_rejections_total", "code" => e.code()).increment(1);
            tracing::info!(target: "tollgate::request", request_id, status = e.status().as_u16(), error_code = e.code(), "unauthenticated request");
            super::traced::unauthenticated(trace, &request_id, e.status().as_u16(), e.code());
            return e.into_response_as(format);
        }
    };
    // From here on every way out closes `books`: one ledger row per
    // authenticated request, whatever fails next.
    let mut books = Books {
        state: state.clone(),
        config: rt.config.clone(),
        key: auth.key,
        team: None,
        at: state.clock.now(),
        request_id,
        model: String::new(),
        provider: String::new(),
        provider_model: String::new(),
        input: InputCount {
            ingress,
            body: Bytes::new(),
            counted: None,
        },
        started,
        upstream: Duration::ZERO,
        first_byte: None,
        trace,
        admitted: None,
        journal: None,
        would_reject: Vec::new(),
        reserved_output: 0,
        forwarded: false,
        bill_reservation: false,
        attempts: 0,
        cache: cache::Mark::Off,
        refused_usage: None,
        rejected_by: None,
        retried: parking_lot::Mutex::new(Retried::default()),
        closed: false,
    };
    let result = proxy(&rt, &mut books, ingress, &headers, body).await;
    let cache_header = books.cache.header();
    let mut response = match result {
        Ok(Reply::Complete {
            body,
            usage,
            headers,
            native,
        }) => complete(
            books,
            ingress,
            native,
            body,
            usage,
            headers,
            reply.is_closed(),
        ),
        Ok(Reply::Stream {
            events,
            include_usage,
            headers,
            native,
        }) => stream::respond(books, ingress, native, events, include_usage, headers),
        Err(e) => {
            let e = books.looping_instead(e).await;
            books.rejected_by = e.policy().map(str::to_owned);
            let usage = books.failure_usage();
            let routed = routing_headers(&rt, &books.provider, books.attempts);
            books.close(e.status().as_u16(), usage, Some(e.code()));
            let mut resp = e.into_response_as(format);
            resp.headers_mut().extend(routed);
            resp
        }
    };
    if let Some(v) = cache_header {
        response.headers_mut().insert(cache::CACHE_HEADER, v);
    }
    response
}

/// A provider's answer, before the books are closed.
enum Reply {
    Complete {
        body: Bytes,
        usage: Usage,
        headers: Vec<(HeaderName, HeaderValue)>,
        /// In the ingress's own format, untranslated (a native target).
        native: bool,
    },
    Stream {
        events: crate::providers::EventStream,
        include_usage: bool,
        headers: Vec<(HeaderName, HeaderValue)>,
        native: bool,
    },
}

async fn proxy(
    rt: &Runtime,
    books: &mut Books,
    ingress: Ingress,
    headers: &HeaderMap,
    raw: Body,
) -> Result<Reply, ApiError> {
    let config = &rt.config;
    let endpoint = ingress.endpoint();
    books.team = books.state.keys.team(&books.key.team).await?;
    let bytes = body::read(headers, raw, config.max_body_bytes).await?;
    books.input.body = bytes.clone();
    // The agent ingresses keep the client's body for native targets and
    // carry a canonical one for the rest (`native`).
    let (mut req, native) = match ingress {
        Ingress::OpenAi(_) => (body::json_object(&bytes)?, None),
        Ingress::Anthropic | Ingress::Responses => {
            let prepared = native::prepare(rt, ingress, &bytes, headers)?;
            (prepared.canonical, Some(prepared.native))
        }
    };
    let parsed = validate::request(endpoint, &req)?;
    books.model = parsed.model.clone();
    let model = config.model(&parsed.model).ok_or_else(|| {
        ApiError::ModelNotFound(format!(
            "model `{}` is not configured on this gateway; `GET /v1/models` lists the models your key may use",
            clip(&parsed.model)
        ))
    })?;
    let who = Subject {
        key: &books.key,
        team: books.team.as_deref(),
    };
    // Resolved once for both the model-access check and the admission.
    let resolved = PolicyEngine::resolve(config, &who)?;
    books.would_reject =
        books
            .state
            .policy
            .check_model_access_resolved(config, &who, &model.name, &resolved)?;
    let question = cache::Question {
        team: books.key.team.as_str(),
        team_opted_out: books.team.as_ref().is_some_and(|t| !t.cache),
        ingress: ingress.cache_name(),
        endpoint,
        model: &model.name,
        body: &req,
        stream: parsed.stream,
        headers,
    };
    let (mark, served) = cache::lookup(&books.state.cache, config, &question).await;
    books.cache = mark;
    if let Some(served) = served {
        let facts = RequestFacts {
            request_id: &books.request_id,
            model,
            input_tokens: InputTokens::known(0),
            max_output_tokens: 0,
            output_multiplier: 1,
            body: &books.input.body,
        };
        let admitted = books
            .state
            .policy
            .admit_cached(config, &who, &facts, &resolved)
            .await?;
        return Ok(cached(books, admitted, served, parsed.include_usage));
    }

    // Agent ingresses: which targets may take the request (a body only a
    // native target can serve, or one pinned to a provider's stored state);
    // the attempt loop applies the same rule to its strategy order.
    let targets: Vec<&Target> = match &native {
        Some(n) => native::targets(rt, n, &model.name, model.targets.iter().collect())?,
        None => model.targets.iter().collect(),
    };
    // Whichever target answers, the reservation covers its tokenizer.
    let count_input = || match &native {
        Some(n) => native::input_tokens(rt, n, &req, model, &targets),
        None => estimate::input_tokens_any_target(endpoint, &req, model),
    };
    // Every choice of `n` (or `best_of`) and every prompt of a prompt list
    // is generated and billed: the worst case covers them all.
    let per_choice = match endpoint {
        Endpoint::Embeddings => 0,
        _ => parsed.max_tokens.unwrap_or(model.max_output_tokens),
    };
    let multiplier = parsed.multiplier();
    let facts = RequestFacts {
        request_id: &books.request_id,
        model,
        input_tokens: InputTokens::lazy(&count_input),
        max_output_tokens: per_choice.saturating_mul(multiplier),
        output_multiplier: multiplier,
        body: &bytes,
    };
    let admitted = books
        .state
        .policy
        .admit_resolved(config, &who, &facts, &resolved)
        .await;
    books.input.counted = facts.input_tokens.counted();
    let mut admitted = admitted?;
    books.at = admitted.at;
    if admitted.clamp_max_tokens.is_some() {
        // Not the answer to the request as the client asked it.
        books.cache.spoil();
    }
    let cap = forward::OutputCap {
        per_choice: admitted.clamp_max_tokens.unwrap_or(per_choice),
        enforced: admitted.enforces_output(),
    };
    books.reserved_output = match endpoint {
        Endpoint::Embeddings => 0,
        _ => cap.per_choice.saturating_mul(multiplier),
    };
    let reply_headers = admitted.headers.clone();
    let shadow = admitted.take_would_reject();
    if books.would_reject.is_empty() {
        books.would_reject = shadow;
    } else {
        books.would_reject.extend(shadow);
    }
    // Before it is forwarded: from here a crash must not forget it.
    books.journal = books.state.journal.admitted(
        &books.request_id,
        books.at,
        &books.key,
        &books.model,
        admitted.reserved(),
    );
    books.admitted = Some(admitted);

    if parsed.stream {
        ask_for_usage(&mut req);
    }
    // A retry or a fallback gets the body again from the client's bytes,
    // as it was when first sent.
    let again = || {
        let mut req = match ingress {
            Ingress::OpenAi(_) => body::json_object(&bytes).ok()?,
            Ingress::Anthropic | Ingress::Responses => {
                native::prepare(rt, ingress, &bytes, headers)
                    .ok()?
                    .canonical
            }
        };
        if parsed.stream {
            ask_for_usage(&mut req);
        }
        Some(req)
    };
    let upstream_started = Instant::now();
    books.forwarded = true;
    let traceparent = books.trace.as_ref().and_then(|t| t.upstream_traceparent());
    let max_output = books.reserved_output;
    let reserve = Rereserve {
        books: &*books,
        config,
        model,
        max_output,
        multiplier,
    };
    let send = failover::send(
        rt,
        &*books.state.clock,
        model,
        endpoint,
        failover::Bodies {
            first: Some(req),
            again: &again,
        },
        parsed.stream,
        &books.request_id,
        cap,
        native.as_ref(),
        &reserve,
    );
    let sent = crate::telemetry::spans::with_upstream_traceparent(traceparent, send).await;
    books.upstream = upstream_started.elapsed();
    let answered = match sent {
        Ok(answered) => answered,
        Err(failure) => {
            if let Some((provider, provider_model)) = failure.provider {
                books.provider = provider;
                books.provider_model = provider_model;
            }
            books.attempts = failure.attempts;
            books.bill_reservation = failure.may_have_billed;
            books.refused_usage = failure.billed;
            return Err(failure.error);
        }
    };
    books.provider = answered.provider;
    books.provider_model = answered.provider_model;
    books.attempts = answered.attempts;
    let mut reply_headers = reply_headers;
    reply_headers.extend(routing_headers(rt, &books.provider, books.attempts));
    let native = answered.native;
    Ok(match answered.response {
        UpstreamResponse::Complete { body, usage } => {
            let usage = match usage {
                Some(u) => u,
                None if native => books.usage_from_native_body(&body),
                None => books.usage_from_body(&body),
            };
            Reply::Complete {
                body,
                usage,
                headers: reply_headers,
                native,
            }
        }
        UpstreamResponse::Stream(events) => Reply::Stream {
            events,
            include_usage: parsed.include_usage,
            headers: reply_headers,
            native,
        },
    })
}

/// Another worst case for a retry after an attempt that may have been
/// billed (`failover::Reserve`): admitted on the budgets alone, kept in
/// [`Books::retried`] to be billed in full when the books close, and
/// journaled together with the first reservation, so a crash bills both.
struct Rereserve<'a> {
    books: &'a Books,
    config: &'a Config,
    model: &'a ModelConfig,
    /// Output reserved, all choices together: the same worst case again.
    max_output: u64,
    multiplier: u64,
}

impl failover::Reserve for Rereserve<'_> {
    fn again(&self) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let b = self.books;
            let who = Subject {
                key: &b.key,
                team: b.team.as_deref(),
            };
            let facts = RequestFacts {
                request_id: &b.request_id,
                model: self.model,
                input_tokens: InputTokens::known(b.input.counted.unwrap_or(0)),
                max_output_tokens: self.max_output,
                output_multiplier: self.multiplier,
                body: &b.input.body,
            };
            // Attempts are sequential and a refused reservation ends the
            // retries, so this is the retry's number.
            let n = u32::try_from(b.retried.lock().admitted.len())
                .unwrap_or(u32::MAX)
                .saturating_add(1);
            let Some(extra) = b
                .state
                .policy
                .admit_retry(self.config, &who, &facts, n)
                .await
            else {
                return false;
            };
            let mut retried = b.retried.lock();
            let first = b
                .admitted
                .as_ref()
                .map_or(NanoUsd::ZERO, Admitted::reserved);
            let total = retried.admitted.iter().map(Admitted::reserved).fold(
                first.saturating_add(extra.reserved()),
                NanoUsd::saturating_add,
            );
            // The new admission (all reservations) is written before the
            // one it replaces is dropped: a crash in between finds both, and
            // the replay keeps the larger.
            if let Some(entry) =
                b.state
                    .journal
                    .admitted(&b.request_id, b.at, &b.key, &b.model, total)
            {
                retried.journal = Some(entry);
            }
            retried.admitted.push(extra);
            true
        })
    }
}

/// Usage is always requested so that a stream can be billed (hidden
/// reasoning tokens appear nowhere else); the extra chunk is stripped again
/// for clients that did not ask for it. A `stream_options` that is not an
/// object (`null`, a string) is replaced: forwarded as is, it would turn
/// the usage chunk off.
fn ask_for_usage(req: &mut Map<String, Value>) {
    let opts = req
        .entry("stream_options")
        .or_insert_with(|| Value::Object(Map::new()));
    if !opts.is_object() {
        *opts = Value::Object(Map::new());
    }
    if let Value::Object(o) = opts {
        o.insert("include_usage".into(), Value::Bool(true));
    }
}

/// `x-tollgate-provider` and `x-tollgate-attempts`: who answered (or was
/// tried last) and after how many attempts. None before any attempt.
fn routing_headers(
    rt: &Runtime,
    provider: &str,
    attempts: u32,
) -> impl Iterator<Item = (HeaderName, HeaderValue)> + use<> {
    let provider = (attempts > 0)
        .then(|| rt.routes.health(provider))
        .flatten()
        .and_then(|h| h.header.clone())
        .map(|v| (HeaderName::from_static("x-tollgate-provider"), v));
    let attempts = (attempts > 0).then(|| {
        (
            HeaderName::from_static("x-tollgate-attempts"),
            HeaderValue::from(attempts),
        )
    });
    [provider, attempts].into_iter().flatten()
}

/// A cache hit, admitted without spending anything (rate limits and the
/// loop guard still count it, see `PolicyEngine::admit_cached`): answered
/// from the stored answer; the provider is not called.
fn cached(
    books: &mut Books,
    mut admitted: Admitted,
    served: cache::Served,
    include_usage: bool,
) -> Reply {
    books.at = admitted.at;
    books.would_reject.extend(admitted.take_would_reject());
    let headers = admitted.headers.clone();
    books.admitted = Some(admitted);
    match served {
        cache::Served::Complete(body) => Reply::Complete {
            body,
            usage: Usage::default(),
            headers,
            native: false,
        },
        cache::Served::Stream(events) => Reply::Stream {
            events,
            include_usage,
            headers,
            native: false,
        },
    }
}

/// Settles a complete answer and sends it with its cost headers. An
/// answer whose client hung up while it was generated is billed all the
/// same, and its row says the client left.
fn complete(
    mut books: Books,
    ingress: Ingress,
    native: bool,
    body: Bytes,
    usage: Usage,
    headers: Vec<(HeaderName, HeaderValue)>,
    client_gone: bool,
) -> Response {
    // The canonical answer, before any translation for the client.
    books.cache.capture_body(&body);
    if client_gone {
        books.close(CLIENT_CLOSED, usage, Some("client_closed"));
        return StatusCode::NO_CONTENT.into_response();
    }
    let translated = match ingress {
        _ if native => Ok(None),
        Ingress::OpenAi(_) => Ok(None),
        Ingress::Anthropic => translate::openai_to_messages_response(&body, &books.model).map(Some),
        Ingress::Responses => translate::responses::from_chat(&body, &books.model).map(Some),
    };
    let body = match translated {
        Ok(None) => body,
        Ok(Some(v)) => Bytes::from(v.to_string()),
        Err(e) => {
            let e = ApiError::UpstreamError(format!(
                "the provider's answer could not be translated: {e}"
            ));
            // The client gets an error, and the row says so; the
            // provider billed us for the answer all the same.
            books.close(e.status().as_u16(), usage, Some(e.code()));
            return e.into_response_as(ingress.error_format());
        }
    };
    let settled = books.close(200, usage, None);
    let mut resp = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    let h = resp.headers_mut();
    // The admission's budget figure still counts the worst case as
    // reserved; this answer is settled, so the exact figure is set below,
    // once, instead.
    for (name, value) in headers {
        if name != BUDGET_REMAINING_HEADER {
            h.insert(name, value);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&settled.cost.to_string()) {
        h.insert("x-tollgate-cost-usd", v);
    }
    if let Some(v) = settled
        .budget_remaining
        .and_then(|r| HeaderValue::from_str(&r.to_string()).ok())
    {
        h.insert(BUDGET_REMAINING_HEADER, v);
    }
    resp
}

/// Everything needed to close the books on one request. Owned, so that a
/// stream's books can move into a tracked task when its client hangs up.
pub(super) struct Books {
    pub state: SharedState,
    pub config: Arc<Config>,
    pub key: Arc<KeyRecord>,
    pub team: Option<Arc<TeamRecord>>,
    /// When the request was admitted (until then, when it arrived): its
    /// ledger row carries this time, so it lands in the period it was
    /// charged to even when it ends in the next one.
    pub at: chrono::DateTime<chrono::Utc>,
    pub request_id: String,
    /// The client-facing model name (empty until the body was read).
    pub model: String,
    pub provider: String,
    pub provider_model: String,
    pub input: InputCount,
    pub started: Instant,
    /// Time spent waiting for the provider's answer (its head, for streams).
    pub upstream: Duration,
    /// Streams: arrival to the first event sent on to the client.
    pub first_byte: Option<Duration>,
    /// The request's span ids, when trace export is on (`proxy::traced`).
    pub trace: Option<crate::telemetry::spans::RequestTrace>,
    pub admitted: Option<Admitted>,
    /// Set while a request that reserved budget is open (`store::journal`).
    pub journal: Option<JournalEntry>,
    /// `policy:code` of each shadow policy that would have refused the
    /// request (model access, then the counter-backed ones), for the ledger
    /// row; empty (never allocated) when none would.
    pub would_reject: Vec<String>,
    /// Output tokens reserved, all choices together (after any clamp).
    pub reserved_output: u64,
    /// The request went to a provider, which may bill its prompt.
    pub forwarded: bool,
    /// The provider may have generated an answer that was lost (a timeout
    /// after the request went out): bill the reserved worst case.
    pub bill_reservation: bool,
    /// Attempts made at providers (retries and fallbacks included).
    pub attempts: u32,
    /// What the response cache did for it, and what to store at the end.
    pub cache: cache::Mark,
    /// The provider refused the prompt and billed this for it.
    pub refused_usage: Option<Usage>,
    /// The enforcing policy that refused the request, for its row.
    pub rejected_by: Option<String>,
    /// Reservations taken for retries after attempts that may have been
    /// billed (`Rereserve`); a mutex only because the attempt loop holds
    /// the books shared.
    pub retried: parking_lot::Mutex<Retried>,
    closed: bool,
}

/// See [`Books::retried`].
#[derive(Default)]
pub(super) struct Retried {
    /// One per lost attempt that was retried: each is billed its worst case
    /// (the lost attempt's), while the first admission is settled to what
    /// the request's last attempt came to.
    admitted: Vec<Admitted>,
    /// Replaces [`Books::journal`]: it covers every reservation.
    journal: Option<JournalEntry>,
}

/// Ledger status of a request whose client went away before its answer:
/// nginx's 499 "client closed request", the status nginx and LiteLLM users
/// look for. What the provider generated for it is still billed.
pub(super) const CLIENT_CLOSED: u16 = 499;

/// The request's input tokens: counted at admission when a policy needed
/// them, else only if billing does (an answer that came without usage).
pub(super) struct InputCount {
    ingress: Ingress,
    /// The client's body as read (shared, not copied).
    body: Bytes,
    counted: Option<u64>,
}

/// Books dropped before they were closed: the request's task panicked, or
/// was cancelled as the runtime shut down (a client hanging up does not
/// cancel it, see [`handle`]). The reservation and any parallel slot must
/// not leak, and a request that reached a provider may have been generated
/// there whole: it is billed its reserved worst case.
impl Drop for Books {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        let (status, code) = if std::thread::panicking() {
            (500, "internal_error")
        } else {
            (CLIENT_CLOSED, "client_closed")
        };
        self.bill_reservation = self.forwarded;
        let usage = self.failure_usage();
        self.close_now(status, usage, Some(code));
    }
}

impl Books {
    fn model_config(&self) -> Option<&ModelConfig> {
        self.config.model(&self.model)
    }

    /// The model as the ledger and the log line show it: a client's name
    /// for a model that is not configured is clipped.
    pub(super) fn model_text(&self) -> std::borrow::Cow<'_, str> {
        match self.model_config() {
            Some(_) => std::borrow::Cow::Borrowed(&self.model),
            None => clip(&self.model),
        }
    }

    /// The input estimate: the one admission counted, else counted now
    /// from the body (a body that does not parse here never got this far).
    pub fn input_tokens(&self) -> u64 {
        if let Some(n) = self.input.counted {
            return n;
        }
        let Some(model) = self.model_config() else {
            return 0;
        };
        let native = match self.input.ingress {
            Ingress::OpenAi(_) => 0,
            Ingress::Anthropic => body::json_object(&self.input.body)
                .map_or(0, |m| estimate_native::messages_input_tokens(&m)),
            Ingress::Responses => body::json_object(&self.input.body)
                .map_or(0, |m| estimate_native::responses_input_tokens(&m, model)),
        };
        let req = body::json_object(&self.input.body)
            .ok()
            .and_then(|m| match self.input.ingress {
                Ingress::OpenAi(_) => Some(m),
                Ingress::Anthropic => translate::messages_to_openai(&Value::Object(m)).ok(),
                Ingress::Responses => translate::responses::to_chat(&m).ok(),
            });
        req.map_or(0, |req| {
            estimate::input_tokens(
                self.input.ingress.endpoint(),
                &req,
                model,
                &self.provider_model,
            )
        })
        .max(native)
    }

    /// Usage of a native answer that reported none it could trust: the
    /// input estimate, and every byte of the answer counted as generated
    /// text (more than its text, never less).
    fn usage_from_native_body(&self, body: &[u8]) -> Usage {
        Usage {
            prompt_tokens: self.input_tokens(),
            completion_tokens: self.text_tokens(&String::from_utf8_lossy(body)),
            ..Usage::default()
        }
    }

    /// What a request that got no answer is billed: nothing, unless the
    /// provider may have generated one that was lost, which it bills and
    /// which is then billed at the reserved worst case (input estimate plus
    /// all the output reserved), since its real usage cannot be known.
    pub fn failure_usage(&self) -> Usage {
        if let Some(usage) = self.refused_usage {
            return usage;
        }
        if !self.bill_reservation {
            return Usage::default();
        }
        Usage {
            prompt_tokens: self.input_tokens(),
            completion_tokens: self.reserved_output,
            ..Usage::default()
        }
    }

    /// Tokens of generated text, for answers that came without usage.
    pub fn text_tokens(&self, text: &str) -> u64 {
        match self.model_config() {
            Some(m) => estimate::text_tokens(m, &self.provider_model, text),
            None => text.len() as u64,
        }
    }

    /// Usage of a complete answer that reported none: the input estimate and
    /// the tokens of every generated text in it. Never $0 for real output.
    fn usage_from_body(&self, body: &[u8]) -> Usage {
        let mut text = String::new();
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            for choice in v
                .get("choices")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let message = choice.get("message");
                for s in [
                    message
                        .and_then(|m| m.get("content"))
                        .and_then(Value::as_str),
                    choice.get("text").and_then(Value::as_str),
                ]
                .into_iter()
                .flatten()
                {
                    text.push_str(s);
                }
                let calls = message
                    .and_then(|m| m.get("tool_calls"))
                    .and_then(Value::as_array);
                for call in calls.into_iter().flatten() {
                    if let Some(args) = call.pointer("/function/arguments").and_then(Value::as_str)
                    {
                        text.push_str(args);
                    }
                }
            }
        }
        Usage {
            prompt_tokens: self.input_tokens(),
            completion_tokens: self.text_tokens(&text),
            ..Usage::default()
        }
    }

    /// A key whose error streak tripped the loop guard gets `loop_detected`
    /// instead of repeating the same error.
    async fn looping_instead(&self, err: ApiError) -> ApiError {
        if !err.status().is_client_error() || matches!(err, ApiError::LoopDetected { .. }) {
            return err;
        }
        let who = Subject {
            key: &self.key,
            team: self.team.as_deref(),
        };
        match self.state.policy.check_streak(&self.config, &who).await {
            Err(looped) => looped,
            Ok(()) => err,
        }
    }

    /// Writes the ledger row, the metrics and the request's log line, and
    /// returns the cost and the budget left. The counter work — settling the
    /// reservation, feeding the error-streak guard — never makes the client
    /// wait: in-process counters finish it on the spot, and what has to wait
    /// (on Redis, one round trip) goes on a tracked task that shutdown still
    /// waits for.
    pub fn close(mut self, status: u16, usage: Usage, error_code: Option<&str>) -> Settled {
        self.close_now(status, usage, error_code)
    }

    fn close_now(&mut self, status: u16, usage: Usage, error_code: Option<&str>) -> Settled {
        self.closed = true;
        // A hit spends nothing: no cost, no tokens (its answer's usage is
        // the stored call's, billed when that call was made).
        let usage = match self.cache.is_hit() {
            true => Usage::default(),
            false => usage.bounded(),
        };
        let mut outcome = Outcome {
            usage: Some(usage),
            error_code: error_code.map(str::to_owned),
            ledger_seq: 0,
        };
        let mut settled = match &self.admitted {
            Some(admitted) => admitted.settled(&outcome),
            None => Settled {
                cost: NanoUsd::ZERO,
                budget_remaining: None,
            },
        };
        self.cache
            .finish(status, error_code, settled.cost, &self.state.tasks);
        // Each lost attempt that was retried is billed its worst case, on
        // the reservation taken for the retry, and shows in the row.
        let retried = std::mem::take(self.retried.get_mut());
        let mut usage = usage;
        // Only built when an attempt was retried: the input estimate may
        // re-read (and for an agent ingress translate) the whole body.
        let lost = (!retried.admitted.is_empty()).then(|| Outcome {
            usage: Some(Usage {
                prompt_tokens: self.input_tokens(),
                completion_tokens: self.reserved_output,
                ..Usage::default()
            }),
            error_code: Some("upstream_lost".to_owned()),
            ledger_seq: 0,
        });
        for (extra, lost) in retried.admitted.iter().zip(lost.iter().cycle()) {
            let cost = extra.settled(lost).cost;
            settled.cost = settled.cost.saturating_add(cost);
            settled.budget_remaining = settled.budget_remaining.map(|r| r.saturating_sub(cost));
            if let Some(u) = lost.usage {
                usage.prompt_tokens = usage.prompt_tokens.saturating_add(u.prompt_tokens);
                usage.completion_tokens =
                    usage.completion_tokens.saturating_add(u.completion_tokens);
            }
        }
        if let Some(entry) = retried.journal {
            // Replaces the first admission's entry, which `take` drops.
            self.journal.take();
            self.journal = Some(entry);
        }
        // The ledger row goes first: it is the durable record a budget is
        // rebuilt from, so it must not wait behind a settlement that is
        // stuck on unreachable counters.
        let latency = self.started.elapsed();
        self.end_trace(status, usage, settled.cost, error_code);
        let row = LedgerRow {
            ts: self.at,
            request_id: self.request_id.clone(),
            key_id: self.key.id.clone(),
            team: self.key.team.clone(),
            model: self.model_text().into_owned(),
            provider: self.provider.clone(),
            status,
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            cost: settled.cost,
            latency_ms: u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            error_code: error_code.map(str::to_owned),
            would_reject: std::mem::take(&mut self.would_reject),
            attempts: self.attempts,
            cache: self.cache.label().map(str::to_owned),
            cache_saved: self.cache.saved(),
            policy: self.rejected_by.take(),
        };
        // Journaled too while the journal holds the request, in the order
        // a crash needs (see `JournalEntry::settle`).
        outcome.ledger_seq = match self.journal.take() {
            Some(entry) => entry.settle(&self.state.ledger, row),
            None => self.state.ledger.record(row),
        };
        self.observe(status, usage, settled.cost, error_code, latency);

        let admitted = self.admitted.take();
        // Only the key's own mistakes (4xx) build its error streak, and a
        // success ends it. A client hanging up is not a mistake, and a
        // failure of the provider or of the gateway (5xx) is not the key's
        // doing: an outage must not leave keys throttled as looping once it
        // is over.
        let feeds_streak = match error_code {
            // An admitted success ends its streaks in the settlement's call.
            None => admitted.is_none(),
            Some("client_closed") => false,
            Some(_) => (400..500).contains(&status),
        };
        let tasks = self.state.tasks.clone();
        let (state, config, key, team) = (
            self.state.clone(),
            self.config.clone(),
            self.key.clone(),
            self.team.clone(),
        );
        let counters_work = async move {
            let who = Subject {
                key: &key,
                team: team.as_deref(),
            };
            // Different counters: run both at once (one round trip's wait).
            let settle = async {
                if let Some(admitted) = admitted {
                    state.policy.settle(&config, admitted, &outcome).await;
                }
                for (extra, lost) in retried.admitted.into_iter().zip(lost.iter().cycle()) {
                    state.policy.settle(&config, extra, lost).await;
                }
            };
            let streak = async {
                if feeds_streak {
                    state
                        .policy
                        .record_outcome(&config, &who, outcome.error_code.as_deref())
                        .await;
                }
            };
            tokio::join!(settle, streak);
        };
        finish_or_track(&tasks, counters_work);
        settled
    }

    fn observe(
        &self,
        status: u16,
        usage: Usage,
        cost: NanoUsd,
        error_code: Option<&str>,
        latency: Duration,
    ) {
        let team = self.key.team.to_string();
        // Labels never take a client's string: each distinct value is a
        // series kept for good.
        let model = match self.model_config() {
            Some(m) => m.name.clone(),
            None => "other".to_owned(),
        };
        let provider = self.provider.clone();
        metrics::counter!("tollgate_requests_total", "team" => team.clone(), "model" => model.clone(),
            "provider" => provider.clone(), "status" => status.to_string())
        .increment(1);
        if let Some(code) = error_code {
            metrics::counter!("tollgate_rejections_total", "code" => code.to_owned()).increment(1);
        }
        metrics::histogram!(histograms::REQUEST_DURATION, "model" => model.clone())
            .record(latency.as_secs_f64());
        metrics::histogram!(histograms::GATEWAY_OVERHEAD)
            .record(latency.saturating_sub(self.upstream).as_secs_f64());
        if let Some(first) = self.first_byte {
            metrics::histogram!(histograms::STREAM_FIRST_BYTE, "model" => model.clone())
                .record(first.as_secs_f64());
        }
        if usage.prompt_tokens + usage.completion_tokens > 0 {
            metrics::counter!("tollgate_tokens_total", "team" => team.clone(), "model" => model.clone(),
                "provider" => provider.clone(), "kind" => "prompt")
            .increment(usage.prompt_tokens);
            metrics::counter!("tollgate_tokens_total", "team" => team.clone(), "model" => model.clone(),
                "provider" => provider.clone(), "kind" => "completion")
            .increment(usage.completion_tokens);
        }
        if cost > NanoUsd::ZERO {
            metrics::counter!("tollgate_spend_nanousd_total", "team" => team, "model" => model, "provider" => provider)
                .increment(cost.0);
        }
        tracing::info!(
            target: "tollgate::request",
            request_id = %self.request_id,
            key_id = %self.key.id,
            team = %self.key.team,
            model = %self.model_text(),
            provider = %self.provider,
            status,
            latency_ms = latency.as_millis() as u64,
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            cost_usd = %cost,
            error_code = error_code.unwrap_or(""),
            trace_id = self.trace.as_ref().map(|t| tracing::field::display(t.trace_id())),
            "request"
        );
    }
}

/// Runs `work` as far as it goes without waiting, and hands the rest, if
/// any, to a tracked task. In-process counters settle in one poll, so the
/// common case spawns nothing: a spawned task costs an allocation and
/// often the wake-up of another worker thread, more than the settlement.
fn finish_or_track(
    tasks: &tokio_util::task::TaskTracker,
    work: impl Future<Output = ()> + Send + 'static,
) {
    // Counter futures may arm timers: polling one outside the runtime panics.
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        tracing::error!("a request closed outside the runtime: its reservation is not settled");
        return;
    };
    let mut work = Box::pin(work);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if work.as_mut().poll(&mut cx).is_pending() {
        // The task polls it again at once, registering a real waker; a
        // future re-checks its state on every poll, so nothing that became
        // ready in between is missed.
        tasks.spawn_on(work, &handle);
    }
}
