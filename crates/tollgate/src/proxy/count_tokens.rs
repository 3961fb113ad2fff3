//! `POST /v1/messages/count_tokens`: how many input tokens a Messages
//! request would have. Authenticated with a virtual key and held to model
//! access like every `/v1` call; forwarded natively to the model's first
//! target that serves it (an `anthropic` provider), otherwise answered with
//! the gateway's own estimate (`{"input_tokens": N}`), the same count a
//! budget reservation would use, so never below what the provider bills.
//!
//! Nothing is generated and providers do not charge for counting, so it
//! does not go through [`super::pipeline`]: nothing is reserved, settled
//! or written to the ledger (a $0 row per count would only dilute the
//! request counts that `/admin/spend` reports), and it does not count
//! against rate limits or the loop guard.

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::{body, native};
use crate::error::{ApiError, ErrorFormat};
use crate::policy::{Subject, estimate, estimate_native};
use crate::providers::{Endpoint, NativeApi, NativeCall, ProviderError, UpstreamResponse};
use crate::state::SharedState;
use crate::types::RequestId;
use crate::types::clip;

pub(super) async fn handle(
    State(state): State<SharedState>,
    Extension(id): Extension<RequestId>,
    headers: HeaderMap,
    raw: Body,
) -> Response {
    match count(&state, &id.0, &headers, raw).await {
        Ok(resp) => resp,
        Err(e) => e.into_response_as(ErrorFormat::Anthropic),
    }
}

async fn count(
    state: &SharedState,
    request_id: &str,
    headers: &HeaderMap,
    raw: Body,
) -> Result<Response, ApiError> {
    let rt = state.runtime.load_full();
    let config = &rt.config;
    let auth = state.keys.authenticate(headers, state.clock.now()).await?;
    let team = state.keys.team(&auth.key.team).await?;
    let bytes = body::read(headers, raw, config.max_body_bytes).await?;
    let req = body::json_object(&bytes)?;
    let name = match req.get("model") {
        Some(Value::String(m)) if !m.trim().is_empty() => m.clone(),
        _ => {
            return Err(ApiError::invalid_param(
                "model",
                "`model` is required and must be a non-empty string",
            ));
        }
    };
    if !req.get("messages").is_some_and(Value::is_array) {
        return Err(ApiError::invalid_param(
            "messages",
            "`messages` is required and must be an array",
        ));
    }
    let model = config.model(&name).ok_or_else(|| {
        ApiError::ModelNotFound(format!(
            "model `{}` is not configured on this gateway; `GET /v1/models` lists the models your key may use",
            clip(&name)
        ))
    })?;
    let who = Subject {
        key: &auth.key,
        team: team.as_deref(),
    };
    state.policy.check_model_access(config, &who, &model.name)?;

    for target in &model.targets {
        let Some(provider) = rt.providers.get(&target.provider) else {
            continue;
        };
        if !provider.serves_natively(NativeApi::CountTokens, &target.model) {
            continue;
        }
        let timeout = config
            .provider(&target.provider)
            .map_or(std::time::Duration::from_secs(30), |p| p.timeout);
        let mut body = req.clone();
        body.insert("model".into(), Value::String(target.model.clone()));
        let call = NativeCall {
            api: NativeApi::CountTokens,
            body,
            headers: native::anthropic_headers(headers),
            stream: false,
            timeout,
            request_id: request_id.to_owned(),
        };
        match provider.send_native(call).await {
            Ok(UpstreamResponse::Complete { body, .. }) => {
                return Ok((
                    StatusCode::OK,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    body,
                )
                    .into_response());
            }
            Ok(UpstreamResponse::Stream(_)) => {
                return Err(ApiError::UpstreamError(format!(
                    "provider `{}` answered `count_tokens` with a stream",
                    target.provider
                )));
            }
            Err(ProviderError::Rejected {
                status,
                body,
                content_type,
                ..
            }) => {
                return Err(ApiError::UpstreamPassthrough {
                    status,
                    body,
                    content_type,
                });
            }
            Err(e @ ProviderError::Timeout { .. }) => {
                return Err(ApiError::UpstreamTimeout(e.to_string()));
            }
            Err(e) => {
                tracing::warn!(request_id, provider = %target.provider, error = %e,
                    "count_tokens failed upstream; answering with the gateway's estimate");
                break;
            }
        }
    }
    // The reservation's own count: Claude's for Claude-shaped targets, and
    // the translated request's for the others, whichever is larger.
    let mut n = estimate_native::messages_input_tokens(&req);
    if let Ok(canonical) = crate::providers::translate::messages_to_openai(&Value::Object(req)) {
        n = n.max(estimate::input_tokens_any_target(
            Endpoint::ChatCompletions,
            &canonical,
            model,
        ));
    }
    Ok(axum::Json(json!({ "input_tokens": n })).into_response())
}
