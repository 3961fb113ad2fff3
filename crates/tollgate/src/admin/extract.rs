//! Extractors of the admin API: [`Admin`], the only way an admin handler
//! reaches the state (so no handler can forget the admin-key check), and
//! [`AdminJson`] / [`AdminQuery`], which answer malformed input in the API's
//! own error shape, naming the offending field.

use axum::extract::{FromRequest, FromRequestParts, Request};
use http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::SharedState;

/// Proof that the caller presented the admin key, carrying the state.
pub(crate) struct Admin(pub(crate) SharedState);

impl FromRequestParts<SharedState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &SharedState,
    ) -> Result<Self, Self::Rejection> {
        state.admin_key.check(&parts.headers)?;
        Ok(Admin(state.clone()))
    }
}

/// No admin request needs more; anything larger is a mistake or an attack.
pub(crate) const MAX_ADMIN_BODY_BYTES: usize = 1024 * 1024;

/// A JSON body. An empty body reads as `{}` so that bodies whose fields are
/// all optional (`rotate`) may be left out.
pub(crate) struct AdminJson<T>(pub(crate) T);

impl<T, S> FromRequest<S> for AdminJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        // The app turns axum's default body limit off (the data plane
        // enforces its own), so admin bodies get theirs here.
        let bytes = axum::body::to_bytes(req.into_body(), MAX_ADMIN_BODY_BYTES)
            .await
            .map_err(|_| ApiError::RequestTooLarge {
                limit: MAX_ADMIN_BODY_BYTES,
            })?;
        let body: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        parse_json(body).map(AdminJson)
    }
}

/// Parses a JSON body, naming the field at fault in the error.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::invalid(format!("the request body is not valid JSON: {inner}"));
        }
        // serde's own message names an unknown or missing field; for a
        // field of the wrong type only the path does.
        let message = inner.to_string();
        match path.as_str() {
            "." | "" => ApiError::invalid(format!("invalid request body: {message}")),
            field if message.starts_with("unknown field") => {
                ApiError::invalid_param(field, message)
            }
            field => ApiError::invalid_param(field, format!("invalid field `{field}`: {message}")),
        }
    })
}

/// A query string. Unknown parameters are rejected so that a typo
/// (`?teem=search`) does not silently widen a report.
pub(crate) struct AdminQuery<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for AdminQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Query structs hold strings and handlers parse them, so the only
        // failures here are unknown or repeated parameters, which serde names.
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| AdminQuery(q.0))
            .map_err(|e| ApiError::invalid(format!("invalid query string: {}", e.body_text())))
    }
}
