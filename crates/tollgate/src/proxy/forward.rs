//! Choosing a model's targets and calling them: in order as fallbacks, or
//! shuffled by weight when every target has one. A provider's own 4xx is
//! final (the request is wrong everywhere); failures, timeouts and a
//! provider refusing the gateway's own credentials move on to the next
//! target.

use rand::Rng;
use serde_json::{Map, Value};

use crate::config::{ModelConfig, ProviderKind, Target};
use crate::error::ApiError;
use crate::providers::{
    Endpoint, OUTPUT_CAP_FIELDS, ProviderError, UpstreamCall, UpstreamResponse, output_cap_field,
};
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

/// The output cap a forwarded request must carry.
#[derive(Debug, Clone, Copy)]
pub(super) struct OutputCap {
    /// What was reserved per choice (after any clamp).
    pub per_choice: u64,
    /// A budget or token limit reserved for it: every target gets an
    /// explicit cap no larger, so the provider enforces the reservation.
    pub enforced: bool,
}

/// The answer of the target that answered.
pub(super) struct Answered {
    pub provider: String,
    pub provider_model: String,
    pub response: UpstreamResponse,
}

/// Why no target answered.
pub(super) struct Unanswered {
    pub error: ApiError,
    /// The last target tried, if any was.
    pub provider: Option<(String, String)>,
    /// That target may have generated (and billed) an answer that was lost
    /// (see [`ProviderError::may_have_billed`]).
    pub may_have_billed: bool,
}

/// Sends the request to the first target that answers.
///
/// A failure after which the provider may have billed a generation (a
/// timeout, a lost answer) ends the request there: it is billed its
/// reservation, which covers one worst case, so trying another target
/// could bill a second one beyond what the budget reserved.
pub(super) async fn send(
    rt: &Runtime,
    targets: &[&Target],
    endpoint: Endpoint,
    body: Map<String, Value>,
    stream: bool,
    request_id: &str,
    cap: OutputCap,
) -> Result<Answered, Unanswered> {
    let mut last: Option<ProviderError> = None;
    let mut tried: Option<(String, String)> = None;
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
        apply_cap(&mut body, endpoint, pcfg.kind, &target.model, cap);
        let call = UpstreamCall {
            endpoint,
            body,
            stream,
            timeout: pcfg.timeout,
            request_id: request_id.to_owned(),
        };
        tried = Some((target.provider.clone(), target.model.clone()));
        match provider.send(call).await {
            Ok(response) => {
                return Ok(Answered {
                    provider: target.provider.clone(),
                    provider_model: target.model.clone(),
                    response,
                });
            }
            Err(ProviderError::Rejected {
                status,
                body,
                content_type,
                ..
            }) => {
                metrics::counter!("tollgate_upstream_errors_total", "provider" => target.provider.clone(), "kind" => "rejected").increment(1);
                return Err(Unanswered {
                    error: ApiError::UpstreamPassthrough {
                        status,
                        body,
                        content_type,
                    },
                    provider: tried,
                    may_have_billed: false,
                });
            }
            Err(e) => {
                let kind = match e {
                    ProviderError::Timeout { .. } => "timeout",
                    ProviderError::Lost { .. } => "lost",
                    ProviderError::Credentials { .. } => "credentials",
                    _ => "failed",
                };
                metrics::counter!("tollgate_upstream_errors_total", "provider" => target.provider.clone(), "kind" => kind).increment(1);
                if e.may_have_billed() {
                    tracing::warn!(request_id, provider = %target.provider, error = %e,
                        "upstream failed after it may have generated; billing the reservation, no fallback");
                    return Err(Unanswered {
                        error: upstream_failure(
                            e,
                            "the request was not sent elsewhere, as this provider may have generated (and billed) an answer; it is billed at its reserved worst case",
                        ),
                        provider: tried,
                        may_have_billed: true,
                    });
                }
                tracing::warn!(request_id, provider = %target.provider, error = %e, "upstream failed; trying the next target if any");
                last = Some(e);
            }
        }
    }
    Err(Unanswered {
        error: match last {
            Some(e) => upstream_failure(e, "no fallback target answered"),
            None => {
                ApiError::UpstreamError("no provider is configured for this model's targets".into())
            }
        },
        provider: tried,
        may_have_billed: false,
    })
}

fn upstream_failure(e: ProviderError, what: &str) -> ApiError {
    match e {
        e @ ProviderError::Timeout { .. } => ApiError::UpstreamTimeout(format!("{e}; {what}")),
        e => ApiError::UpstreamError(format!("{e}; {what}")),
    }
}

/// Makes the body carry the output cap its target must honour. Under an
/// enforced reservation every cap field present is lowered to it (a clamp)
/// and, when none is, the field the target's family takes is inserted.
/// Otherwise only Anthropic gets one, since it requires `max_tokens` and
/// would pick its own default.
fn apply_cap(
    body: &mut Map<String, Value>,
    endpoint: Endpoint,
    kind: ProviderKind,
    model: &str,
    cap: OutputCap,
) {
    if endpoint == Endpoint::Embeddings {
        return;
    }
    let per_choice = cap.per_choice.max(1);
    let mut present = false;
    for field in OUTPUT_CAP_FIELDS {
        let Some(v) = body.get_mut(field).filter(|v| !v.is_null()) else {
            continue;
        };
        present = true;
        if cap.enforced && v.as_u64().is_none_or(|n| n > per_choice) {
            *v = Value::from(per_choice);
        }
    }
    if present {
        return;
    }
    if cap.enforced {
        body.insert(
            output_cap_field(endpoint, model).into(),
            Value::from(per_choice),
        );
    } else if matches!(kind, ProviderKind::Anthropic | ProviderKind::Bedrock)
        && endpoint == Endpoint::ChatCompletions
    {
        // Bedrock would pick its model's own default, which no reservation covers.
        body.insert("max_tokens".into(), Value::from(per_choice));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn capped(body: Value, kind: ProviderKind, model: &str, enforced: bool) -> Value {
        let Value::Object(mut map) = body else {
            unreachable!()
        };
        let cap = OutputCap {
            per_choice: 100,
            enforced,
        };
        apply_cap(&mut map, Endpoint::ChatCompletions, kind, model, cap);
        Value::Object(map)
    }

    #[test]
    fn an_enforced_reservation_always_goes_out_as_a_cap() {
        let none = json!({"messages": []});
        let b = capped(none.clone(), ProviderKind::OpenAi, "gpt-4o", true);
        assert_eq!(b["max_tokens"], 100);
        let b = capped(none.clone(), ProviderKind::OpenAi, "o3-mini", true);
        assert_eq!(
            (b["max_completion_tokens"].clone(), b.get("max_tokens")),
            (json!(100), None)
        );
        let b = capped(none.clone(), ProviderKind::Azure, "gpt-5", true);
        assert_eq!(b["max_completion_tokens"], 100);
        // Not enforced: only Anthropic, which requires one.
        assert_eq!(
            capped(none.clone(), ProviderKind::OpenAi, "gpt-4o", false),
            none
        );
        assert_eq!(
            capped(none, ProviderKind::Anthropic, "claude", false)["max_tokens"],
            100
        );
    }

    #[test]
    fn a_clamp_lowers_every_cap_field_present_and_keeps_smaller_ones() {
        let b = capped(
            json!({"max_tokens": 500, "max_completion_tokens": 50, "max_output_tokens": 900}),
            ProviderKind::OpenAi,
            "gpt-4o",
            true,
        );
        assert_eq!(b["max_tokens"], 100);
        assert_eq!(b["max_completion_tokens"], 50);
        // Not a chat cap: left as it is, and never counted as one.
        assert_eq!(b["max_output_tokens"], 900);
        let null = capped(
            json!({"max_tokens": null}),
            ProviderKind::OpenAi,
            "o1",
            true,
        );
        assert_eq!(null["max_completion_tokens"], 100);
    }
}
