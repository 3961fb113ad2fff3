//! `GET /v1/models`: the models this key may use, in OpenAI's list format.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use serde_json::json;

use crate::policy::Subject;
use crate::state::SharedState;

pub(super) async fn list(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let auth = match state.keys.authenticate(&headers, state.clock.now()).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let team = match state.keys.team(&auth.key.team).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let rt = state.runtime.load();
    let who = Subject {
        key: &auth.key,
        team: team.as_deref(),
    };
    let data: Vec<_> = rt
        .config
        .models
        .iter()
        .filter(|m| state.policy.model_allowed(&rt.config, &who, &m.name))
        .map(|m| json!({"id": m.name, "object": "model", "created": 0, "owned_by": "tollgate"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}
