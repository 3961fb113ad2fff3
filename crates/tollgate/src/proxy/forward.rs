//! Choosing a model's targets and calling them: in order as fallbacks, or
//! shuffled by weight when every target has one. A provider's own 4xx is
//! final (the request is wrong everywhere); failures, timeouts and a
//! provider refusing the gateway's own credentials move on to the next
//! target.

use rand::Rng;
use serde_json::{Map, Value};

use crate::config::{ModelConfig, ProviderKind, Target};
use crate::error::ApiError;
use crate::providers::{Endpoint, ProviderError, UpstreamCall, UpstreamResponse};
use crate::state::Runtime;

/// The order in which to try a model's targets.
pub(super) fn order(model: &ModelConfig) -> Vec<&Target> {
    let weighted = !model.targets.is_empty()
        && model
            .targets
            .iter()
            .all(|t| t.weight.is_some_and(|w| w > 0));
    if !weighted {
        return model.targets.iter().collect();
    }
    // Weighted shuffle: repeatedly pick one of the remaining by weight.
    let mut left: Vec<&Target> = model.targets.iter().collect();
    let mut out = Vec::with_capacity(left.len());
    let mut rng = rand::rng();
    while !left.is_empty() {
        let total: u64 = left.iter().map(|t| u64::from(t.weight.unwrap_or(1))).sum();
        let mut pick = rng.random_range(0..total.max(1));
        let mut idx = 0;
        for (i, t) in left.iter().enumerate() {
            let w = u64::from(t.weight.unwrap_or(1));
            if pick < w {
                idx = i;
                break;
            }
            pick -= w;
        }
        out.push(left.remove(idx));
    }
    out
}

/// Sends the request to the first target that answers; returns that
/// provider's name, its model name and its answer.
pub(super) async fn send(
    rt: &Runtime,
    targets: &[&Target],
    endpoint: Endpoint,
    body: Map<String, Value>,
    stream: bool,
    request_id: &str,
    reserved_output: u64,
) -> Result<(String, String, UpstreamResponse), ApiError> {
    let mut last: Option<ProviderError> = None;
    // The body is moved into the last attempt and cloned only for the ones
    // before it: a single-target model (the common case) never copies it.
    let mut body = Some(body);
    for (i, target) in targets.iter().enumerate() {
        let (Some(provider), Some(pcfg)) = (
            rt.providers.get(&target.provider),
            rt.config.provider(&target.provider),
        ) else {
            continue;
        };
        let mut body = match (i + 1 == targets.len(), &mut body) {
            (true, owned) => match owned.take() {
                Some(b) => b,
                None => break,
            },
            (false, Some(b)) => b.clone(),
            (false, None) => break,
        };
        body.insert("model".into(), Value::String(target.model.clone()));
        // Anthropic requires `max_tokens` and would pick its own default;
        // send the per-choice output the budget reserved for instead.
        if pcfg.kind == ProviderKind::Anthropic
            && !body.contains_key("max_tokens")
            && !body.contains_key("max_completion_tokens")
            && endpoint == Endpoint::ChatCompletions
        {
            body.insert("max_tokens".into(), Value::from(reserved_output.max(1)));
        }
        let call = UpstreamCall {
            endpoint,
            body,
            stream,
            timeout: pcfg.timeout,
            request_id: request_id.to_owned(),
        };
        match provider.send(call).await {
            Ok(resp) => return Ok((target.provider.clone(), target.model.clone(), resp)),
            Err(ProviderError::Rejected {
                status,
                body,
                content_type,
                ..
            }) => {
                metrics::counter!("tollgate_upstream_errors_total", "provider" => target.provider.clone(), "kind" => "rejected").increment(1);
                return Err(ApiError::UpstreamPassthrough {
                    status,
                    body,
                    content_type,
                });
            }
            Err(e) => {
                let kind = match e {
                    ProviderError::Timeout { .. } => "timeout",
                    ProviderError::Credentials { .. } => "credentials",
                    _ => "failed",
                };
                metrics::counter!("tollgate_upstream_errors_total", "provider" => target.provider.clone(), "kind" => kind).increment(1);
                tracing::warn!(request_id, provider = %target.provider, error = %e, "upstream failed; trying the next target if any");
                last = Some(e);
            }
        }
    }
    Err(match last {
        Some(e @ ProviderError::Timeout { .. }) => {
            ApiError::UpstreamTimeout(format!("{e}; no fallback target answered"))
        }
        Some(e) => ApiError::UpstreamError(format!("{e}; no fallback target answered")),
        None => {
            ApiError::UpstreamError("no provider is configured for this model's targets".into())
        }
    })
}
