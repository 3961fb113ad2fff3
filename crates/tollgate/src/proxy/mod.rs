//! The `/v1` data plane. Every handler runs the same pipeline
//! ([`pipeline::handle`]): read and validate the body, authenticate, resolve
//! the model, check access, admit through the policies (budgets, rate
//! limits, loop guard), forward with fallback, settle and record.

mod body;
mod count_tokens;
mod failover;
mod forward;
mod models;
mod native;
mod pipeline;
mod stream;
mod traced;
mod validate;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::routing::{MethodRouter, get, post};
use http::HeaderMap;

use crate::error::ErrorFormat;
use crate::providers::Endpoint;
use crate::state::SharedState;
use crate::types::RequestId;

pub use pipeline::Ingress;

pub fn router() -> Router<SharedState> {
    Router::new()
        .route(
            "/v1/chat/completions",
            handler(Ingress::OpenAi(Endpoint::ChatCompletions)),
        )
        .route(
            "/v1/completions",
            handler(Ingress::OpenAi(Endpoint::Completions)),
        )
        .route(
            "/v1/embeddings",
            handler(Ingress::OpenAi(Endpoint::Embeddings)),
        )
        // Anthropic Messages API ingress: translated to the canonical
        // (OpenAI) request, routed to any provider, answered in Anthropic's format.
        .route("/v1/messages", handler(Ingress::Anthropic))
        // Natively to `anthropic` targets (untranslated), else counted here.
        .route("/v1/messages/count_tokens", post(count_tokens::handle))
        // OpenAI Responses API ingress: natively to `openai`/`azure`
        // targets, translated to the canonical request for the others.
        .route("/v1/responses", handler(Ingress::Responses))
        .route("/v1/models", get(models::list))
}

/// A `POST` route running the pipeline for one ingress.
fn handler(ingress: Ingress) -> MethodRouter<SharedState> {
    post(
        move |State(state): State<SharedState>,
              Extension(id): Extension<RequestId>,
              headers: HeaderMap,
              body: Body| async move {
            pipeline::handle(state, id.0, ingress, headers, body).await
        },
    )
}

impl Ingress {
    fn endpoint(self) -> Endpoint {
        match self {
            Ingress::OpenAi(e) => e,
            Ingress::Anthropic | Ingress::Responses => Endpoint::ChatCompletions,
        }
    }

    fn error_format(self) -> ErrorFormat {
        match self {
            Ingress::OpenAi(_) | Ingress::Responses => ErrorFormat::OpenAi,
            Ingress::Anthropic => ErrorFormat::Anthropic,
        }
    }
}
