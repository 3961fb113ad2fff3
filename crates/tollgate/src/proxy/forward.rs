//! What every attempt at a target shares: the output cap a forwarded
//! request must carry, and what the attempt loop (`super::failover`)
//! answers.

use serde_json::{Map, Value};

use crate::config::ProviderKind;
use crate::error::ApiError;
use crate::providers::{Endpoint, OUTPUT_CAP_FIELDS, UpstreamResponse, Usage, output_cap_field};

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
    /// Attempts made, this one included.
    pub attempts: u32,
    /// The target took the client's body natively (`super::native`).
    pub native: bool,
}

/// Why no target answered.
pub(super) struct Unanswered {
    pub error: ApiError,
    /// The last target tried, if any was.
    pub provider: Option<(String, String)>,
    /// That target may have generated (and billed) an answer that was lost
    /// (see [`crate::providers::ProviderError::may_have_billed`]).
    pub may_have_billed: bool,
    /// Attempts made (0: no target could be tried).
    pub attempts: u32,
    /// What the provider billed for a prompt it refused
    /// ([`crate::providers::ProviderError::Blocked`]).
    pub billed: Option<Usage>,
}

/// Makes the body carry the output cap its target must honour. Under an
/// enforced reservation every cap field present is lowered to it (a clamp)
/// and, when none is, the field the target's family takes is inserted.
/// Otherwise only Anthropic gets one, since it requires `max_tokens` and
/// would pick its own default.
pub(super) fn apply_cap(
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
    } else if endpoint == Endpoint::ChatCompletions
        && (matches!(kind, ProviderKind::Anthropic | ProviderKind::Bedrock)
            || (kind == ProviderKind::Vertex && model.to_ascii_lowercase().starts_with("claude")))
    {
        // Anthropic requires one; Bedrock and Claude on Vertex would pick
        // their model's own default, which no reservation covers.
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
            capped(none.clone(), ProviderKind::Anthropic, "claude", false)["max_tokens"],
            100
        );
        assert_eq!(
            capped(
                none.clone(),
                ProviderKind::Vertex,
                "claude-sonnet-4@20250514",
                false
            )["max_tokens"],
            100
        );
        assert_eq!(
            capped(
                none.clone(),
                ProviderKind::Vertex,
                "gemini-2.5-flash",
                false
            ),
            none
        );
        // Enforced on Gemini: the generic field, which becomes `maxOutputTokens`.
        assert_eq!(
            capped(none, ProviderKind::Gemini, "gemini-2.5-pro", true)["max_tokens"],
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
