//! The attempt loop of one request (SPEC §8): the model's targets in
//! strategy order (`crate::routing::strategy`), each tried with its
//! retries until one answers. A provider's own 4xx is final (the request
//! is wrong everywhere) and goes back unchanged; a refusal (429, 5xx, a
//! refused connection) is retried after a backoff or a `Retry-After` no
//! longer than `max_backoff_ms`, else the next target is tried; a failure
//! after which the provider may have billed an answer ends the request
//! (see [`crate::routing::retry::Next::Billed`]). Every attempt feeds the
//! provider's circuit breaker and, for `least_latency` models, its latency
//! estimate.
//!
//! A timeout or a lost answer (the provider may have generated, and billed,
//! an answer the gateway never got) is retried like a refusal only when the
//! budgets have room for another worst case ([`Reserve`]): the lost attempt
//! is billed at its reservation, the next one has its own, and both fit
//! every cap. Without room the request ends there, billed its reservation.
//!
//! A stream fails over only before its first byte reaches the client: a
//! provider's stream is handed on as soon as its head is a 2xx, and what
//! goes wrong after that belongs to the stream (`super::stream`).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::forward::{Answered, OutputCap, Unanswered, apply_cap};
use super::native::NativeRequest;
use crate::config::{ModelConfig, Strategy};
use crate::error::ApiError;
use crate::providers::{Endpoint, ProviderError, UpstreamCall};
use crate::routing::breaker::Pass;
use crate::routing::retry::{self, Next, Outcome};
use crate::routing::strategy;
use crate::state::Runtime;
use crate::types::Clock;

/// The request body for each attempt: the first one is moved in, and only
/// a retry or a fallback builds another (from the client's bytes), so the
/// happy path never copies a body.
pub(super) struct Bodies<'a> {
    pub first: Option<Map<String, Value>>,
    pub again: &'a (dyn Fn() -> Option<Map<String, Value>> + Send + Sync),
}

impl Bodies<'_> {
    fn take(&mut self) -> Option<Map<String, Value>> {
        self.first.take().or_else(|| (self.again)())
    }
}

/// Reserves another worst case for the attempt after one that may have
/// been billed (see [`crate::policy::PolicyEngine::admit_retry`]).
pub(super) trait Reserve: Sync {
    /// Whether the reservation was taken; `false`: no room, no retry.
    fn again(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// One failed attempt, for the error message when none answered.
struct Attempt {
    provider: String,
    what: String,
    elapsed: Duration,
}

/// What goes into an error message of a provider's failure text: enough
/// to see what it said.
const WHAT_MAX: usize = 160;

/// One request's whole attempt loop.
#[allow(clippy::too_many_arguments)]
pub(super) async fn send(
    rt: &Runtime,
    clock: &dyn Clock,
    model: &ModelConfig,
    endpoint: Endpoint,
    mut bodies: Bodies<'_>,
    stream: bool,
    request_id: &str,
    cap: OutputCap,
    native: Option<&NativeRequest>,
    reserve: &dyn Reserve,
) -> Result<Answered, Unanswered> {
    let routing = &rt.config.routing;
    let order = strategy::order(model, &rt.routes, routing, clock.now_ms());
    let order = match native {
        Some(n) => match super::native::targets(rt, n, &model.name, order) {
            Ok(order) => order,
            Err(error) => {
                return Err(Unanswered {
                    error,
                    provider: None,
                    may_have_billed: false,
                    attempts: 0,
                    billed: None,
                });
            }
        },
        None => order,
    };
    let measure = model.strategy == Strategy::LeastLatency;
    // Allocated only once an attempt fails.
    let mut failed: Vec<Attempt> = Vec::new();
    let mut attempts: u32 = 0;
    let mut last: Option<ProviderError> = None;
    let mut tried: Option<(String, String)> = None;
    // The last attempt may have been billed: the next one needs a
    // reservation of its own before it goes out.
    let mut owed = false;
    'targets: for target in &order {
        let (Some(provider), Some(pcfg), Some(health)) = (
            rt.providers.get(&target.provider),
            rt.config.provider(&target.provider),
            rt.routes.health(&target.provider),
        ) else {
            continue;
        };
        let mut retries = 0u32;
        loop {
            let pass = health.breaker.pass(clock.now_ms(), routing);
            // Open targets sort last: reaching one with nothing tried yet
            // means every target is open, and trying beats failing unseen.
            // After a failure elsewhere (or here, which opened it), it is
            // skipped.
            if pass == Pass::Open && attempts > 0 {
                continue 'targets;
            }
            if owed {
                if !reserve.again().await {
                    break 'targets;
                }
                owed = false;
            }
            let Some(mut body) = bodies.take() else {
                break 'targets;
            };
            body.insert("model".into(), Value::String(target.model.clone()));
            apply_cap(&mut body, endpoint, pcfg.kind, &target.model, cap);
            let call = UpstreamCall {
                endpoint,
                body,
                stream,
                timeout: pcfg.timeout,
                request_id: request_id.to_owned(),
            };
            tried = Some((target.provider.clone(), target.model.clone()));
            attempts = attempts.saturating_add(1);
            let in_flight = measure.then(|| health.latency.start());
            let started = Instant::now();
            let (result, native_used) =
                super::native::send(provider.as_ref(), native, target, cap, call).await;
            let elapsed = started.elapsed();
            if measure {
                health.latency.observe(elapsed);
            }
            drop(in_flight);
            let e = match result {
                Ok(response) => {
                    if health.breaker.success() {
                        rt.routes.registry().closed(&target.provider);
                    }
                    health.count(Outcome::Success);
                    return Ok(Answered {
                        provider: target.provider.clone(),
                        provider_model: target.model.clone(),
                        response,
                        attempts,
                        native: native_used,
                    });
                }
                // The provider read the prompt and refused to answer it (a
                // safety block): final, like its other 4xx, and billed for
                // the prompt it counted.
                Err(ProviderError::Blocked {
                    status,
                    body,
                    usage,
                    ..
                }) => {
                    if health.breaker.success() {
                        rt.routes.registry().closed(&target.provider);
                    }
                    health.count(Outcome::Rejected);
                    metrics::counter!("tollgate_upstream_errors_total", "provider" => target.provider.clone(), "kind" => "blocked").increment(1);
                    return Err(Unanswered {
                        error: ApiError::UpstreamPassthrough {
                            status,
                            body,
                            content_type: Some(http::HeaderValue::from_static("application/json")),
                        },
                        provider: tried,
                        may_have_billed: false,
                        attempts,
                        billed: Some(usage),
                    });
                }
                Err(e) => e,
            };
            health.count(Outcome::of(&e));
            if retry::trips(&e) {
                if health
                    .breaker
                    .failure(clock.now_ms(), pass == Pass::Probe, routing)
                {
                    rt.routes
                        .registry()
                        .opened(&target.provider, routing.cooldown);
                }
            } else if health.breaker.success() {
                // It answered: whatever it thinks of the request, it is up.
                rt.routes.registry().closed(&target.provider);
            }
            failed.push(Attempt {
                provider: target.provider.clone(),
                what: describe(&e),
                elapsed,
            });
            let kind = match Outcome::of(&e) {
                Outcome::Rejected => "rejected",
                Outcome::Timeout => "timeout",
                Outcome::Lost => "lost",
                Outcome::Credentials => "credentials",
                _ => "failed",
            };
            metrics::counter!("tollgate_upstream_errors_total", "provider" => target.provider.clone(), "kind" => kind).increment(1);
            match retry::next(&e) {
                Next::Final => {
                    let ProviderError::Rejected {
                        status,
                        body,
                        content_type,
                        ..
                    } = e
                    else {
                        break 'targets;
                    };
                    return Err(Unanswered {
                        error: ApiError::UpstreamPassthrough {
                            status,
                            body,
                            content_type,
                        },
                        provider: tried,
                        may_have_billed: false,
                        attempts,
                        billed: None,
                    });
                }
                Next::Billed => {
                    tracing::warn!(request_id, provider = %target.provider, error = %e,
                        "upstream failed after it may have generated; billing its reservation, retrying if the budget has room for another");
                    last = Some(e);
                    owed = true;
                    if retries >= routing.retries {
                        continue 'targets;
                    }
                    let wait = retry::wait(retries, None, routing).unwrap_or_default();
                    tokio::time::sleep(wait).await;
                    retries += 1;
                }
                Next::Failover => {
                    tracing::warn!(request_id, provider = %target.provider, error = %e, "upstream failed; trying the next target if any");
                    last = Some(e);
                    continue 'targets;
                }
                Next::Retry { retry_after } => {
                    tracing::warn!(request_id, provider = %target.provider, error = %e, "upstream attempt failed; retrying if retries are left");
                    last = Some(e);
                    if retries >= routing.retries {
                        continue 'targets;
                    }
                    let Some(wait) = retry::wait(retries, retry_after, routing) else {
                        tracing::info!(request_id, provider = %target.provider, ?retry_after,
                            "the provider asked to wait longer than `max_backoff_ms`; trying the next target");
                        if let Some(a) = failed.last_mut() {
                            a.what
                                .push_str(", asked to wait longer than `max_backoff_ms`");
                        }
                        continue 'targets;
                    };
                    tokio::time::sleep(wait).await;
                    retries += 1;
                }
            }
        }
    }
    // `owed`: the last attempt may have generated, and the budgets had no
    // room for another (or no target was left).
    let what = if owed {
        "the provider may have generated (and billed) an answer, so it is billed at its reserved worst case, and a retry would have needed another worst case the budget has no room for, or no retry was left"
    } else {
        "no target answered"
    };
    Err(Unanswered {
        error: match last {
            Some(e) => failure(e, what, &failed),
            None => {
                ApiError::UpstreamError("no provider is configured for this model's targets".into())
            }
        },
        provider: tried,
        may_have_billed: owed,
        attempts,
        billed: None,
    })
}

/// The client's error for `last`, the failure that ended the request:
/// 504 if it was a timeout, else 502, with every attempt listed.
fn failure(last: ProviderError, what: &str, attempts: &[Attempt]) -> ApiError {
    let list: Vec<String> = attempts
        .iter()
        .map(|a| {
            format!(
                "`{}` ({}, {} ms)",
                a.provider,
                a.what,
                a.elapsed.as_millis()
            )
        })
        .collect();
    let message = format!(
        "{last}; {what}; {} attempt{}: {}",
        attempts.len(),
        if attempts.len() == 1 { "" } else { "s" },
        list.join(", ")
    );
    match last {
        ProviderError::Timeout { .. } => ApiError::UpstreamTimeout(message),
        _ => ApiError::UpstreamError(message),
    }
}

/// One attempt's failure in a few words. Provider texts in it were
/// stripped of the provider key where they were made (`upstream::Ctx`).
fn describe(e: &ProviderError) -> String {
    let text = match e {
        ProviderError::Refused { status, .. } => status.as_u16().to_string(),
        ProviderError::Blocked { status, .. } => format!("{}, prompt blocked", status.as_u16()),
        ProviderError::Rejected { status, .. } => status.as_u16().to_string(),
        ProviderError::Credentials { status, .. } => {
            format!("{}, credentials refused", status.as_u16())
        }
        ProviderError::Timeout { timeout, .. } => format!("timed out after {timeout:?}"),
        ProviderError::Failed { message, .. } => message.clone(),
        ProviderError::Lost { message, .. } => format!("lost: {message}"),
    };
    match text.char_indices().nth(WHAT_MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}
