//! The request's span, from the pipeline's side: what [`Books`] knows about
//! a request, put into [`SpanFacts`] when its books are closed.

use http::HeaderMap;

use super::pipeline::{Books, Ingress};
use crate::config::ProviderKind;
use crate::providers::{Endpoint, Usage};
use crate::state::AppState;
use crate::telemetry::spans::{RequestTrace, SpanFacts};
use crate::types::NanoUsd;

/// The request's trace ids when trace export is on; `None` (and no work)
/// when it is off.
pub(super) fn begin(
    state: &AppState,
    headers: &HeaderMap,
    ingress: Ingress,
) -> Option<RequestTrace> {
    let exporter = state.tracer.as_ref()?;
    Some(RequestTrace::begin(
        exporter,
        headers,
        operation(ingress.endpoint()),
    ))
}

/// The span of a request refused before it was authenticated.
pub(super) fn unauthenticated(
    trace: Option<RequestTrace>,
    request_id: &str,
    status: u16,
    code: &str,
) {
    if let Some(trace) = trace {
        trace.end(SpanFacts {
            request_id,
            key_id: None,
            team: None,
            request_model: "",
            response_model: "",
            provider: "",
            system: None,
            status,
            input_tokens: 0,
            output_tokens: 0,
            cost: NanoUsd::ZERO,
            error_code: Some(code),
            would_reject: &[],
            time_to_first_byte: None,
        });
    }
}

impl Books {
    /// Exports the request's span, if it has one.
    pub(super) fn end_trace(
        &self,
        status: u16,
        usage: Usage,
        cost: NanoUsd,
        error_code: Option<&str>,
    ) {
        let Some(trace) = &self.trace else {
            return;
        };
        let system = self.config.provider(&self.provider).map(|p| system(p.kind));
        trace.end(SpanFacts {
            request_id: &self.request_id,
            key_id: Some(self.key.id.as_str()),
            team: Some(self.key.team.as_str()),
            request_model: &self.model_text(),
            response_model: &self.provider_model,
            provider: &self.provider,
            system,
            status,
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            cost,
            error_code,
            would_reject: &self.would_reject,
            time_to_first_byte: self.first_byte,
        });
    }
}

/// `gen_ai.operation.name` (OpenTelemetry GenAI conventions).
fn operation(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "chat",
        Endpoint::Completions => "text_completion",
        Endpoint::Embeddings => "embeddings",
    }
}

/// `gen_ai.system` of a provider kind (OpenTelemetry GenAI conventions).
fn system(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::OpenAi => "openai",
        ProviderKind::Azure => "az.ai.openai",
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::Gemini => "gcp.gemini",
        ProviderKind::Vertex => "gcp.vertex_ai",
        ProviderKind::Bedrock => "aws.bedrock",
        ProviderKind::Mock => "mock",
    }
}
