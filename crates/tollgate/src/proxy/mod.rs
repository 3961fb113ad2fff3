//! The `/v1` data plane. Every handler runs the same pipeline
//! ([`pipeline::handle`]): read and validate the body, authenticate, resolve
//! the model, check access, admit through the policies (budgets, rate
//! limits, loop guard), forward with fallback, settle and record.

mod body;
mod forward;
mod models;
mod pipeline;
mod stream;
mod validate;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::HeaderMap;

use crate::app::RequestId;
use crate::error::ErrorFormat;
use crate::providers::Endpoint;
use crate::state::SharedState;

pub use pipeline::Ingress;

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/completions", post(completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/messages", post(messages))
        .route("/v1/models", get(models::list))
}

async fn chat_completions(
    State(state): State<SharedState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    pipeline::handle(
        state,
        id.0,
        Ingress::OpenAi(Endpoint::ChatCompletions),
        headers,
        body,
    )
    .await
}

async fn completions(
    State(state): State<SharedState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    pipeline::handle(
        state,
        id.0,
        Ingress::OpenAi(Endpoint::Completions),
        headers,
        body,
    )
    .await
}

async fn embeddings(
    State(state): State<SharedState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    pipeline::handle(
        state,
        id.0,
        Ingress::OpenAi(Endpoint::Embeddings),
        headers,
        body,
    )
    .await
}

/// Anthropic Messages API ingress: translated to the canonical (OpenAI)
/// request, routed to any provider, answered in Anthropic's format.
async fn messages(
    State(state): State<SharedState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    pipeline::handle(state, id.0, Ingress::Anthropic, headers, body).await
}

impl Ingress {
    fn endpoint(self) -> Endpoint {
        match self {
            Ingress::OpenAi(e) => e,
            Ingress::Anthropic => Endpoint::ChatCompletions,
        }
    }

    fn error_format(self) -> ErrorFormat {
        match self {
            Ingress::OpenAi(_) => ErrorFormat::OpenAi,
            Ingress::Anthropic => ErrorFormat::Anthropic,
        }
    }
}
