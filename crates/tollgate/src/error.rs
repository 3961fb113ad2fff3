//! The one error type of the HTTP surface: every variant knows its status,
//! its `code` from SPEC §3, its OpenAI- and Anthropic-shaped bodies, and a
//! payload-free label for metrics.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("{0}")]
    InvalidApiKey(String),
    #[error("{message}")]
    BudgetExceeded {
        message: String,
        retry_after_secs: u64,
        /// The policy that refused it, for the request log.
        policy: Option<String>,
    },
    #[error("{0}")]
    ModelNotAllowed(String),
    #[error("{0}")]
    ModelNotFound(String),
    #[error(
        "request body is larger than the {limit} bytes this gateway accepts (`max_body_bytes`)"
    )]
    RequestTooLarge { limit: usize },
    #[error("{message}")]
    RateLimitExceeded {
        message: String,
        retry_after_secs: u64,
        policy: Option<String>,
    },
    #[error("{message}")]
    LoopDetected {
        message: String,
        retry_after_secs: u64,
        policy: Option<String>,
    },
    #[error("{0}")]
    UpstreamError(String),
    #[error("{0}")]
    CountersUnavailable(String),
    #[error("{0}")]
    UpstreamTimeout(String),
    /// A provider's own 4xx, passed through with its status and body.
    #[error("provider answered {status}")]
    UpstreamPassthrough {
        status: StatusCode,
        body: Bytes,
        content_type: Option<HeaderValue>,
    },
    /// Admin API: a named thing does not exist (`team_not_found`, `key_not_found`).
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// Admin API: the change conflicts with what exists (duplicate id,
    /// read-only config team).
    #[error("{0}")]
    Conflict(String),
    /// Admin API called without the admin key.
    #[error("{0}")]
    AdminUnauthorized(String),
    #[error("{0}")]
    Internal(String),
}

/// Which wire shape an error takes: OpenAI's on `/v1/*`, Anthropic's on
/// `/v1/messages`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorFormat {
    OpenAi,
    Anthropic,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: None,
        }
    }

    pub fn invalid_param(param: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest {
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::InvalidApiKey(_) | ApiError::AdminUnauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BudgetExceeded { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::ModelNotFound(_) | ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimitExceeded { .. } | ApiError::LoopDetected { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::UpstreamError(_) => StatusCode::BAD_GATEWAY,
            ApiError::CountersUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::UpstreamPassthrough { status, .. } => *status,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `code` field of SPEC §3; also the metric label and the ledger's
    /// `error_code`.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::InvalidApiKey(_) => "invalid_api_key",
            ApiError::BudgetExceeded { .. } => "budget_exceeded",
            ApiError::ModelNotAllowed(_) => "model_not_allowed",
            ApiError::ModelNotFound(_) => "model_not_found",
            ApiError::RequestTooLarge { .. } => "request_too_large",
            ApiError::RateLimitExceeded { .. } => "rate_limit_exceeded",
            ApiError::LoopDetected { .. } => "loop_detected",
            ApiError::UpstreamError(_) => "upstream_error",
            ApiError::CountersUnavailable(_) => "counters_unavailable",
            ApiError::UpstreamTimeout(_) => "upstream_timeout",
            ApiError::UpstreamPassthrough { .. } => "upstream_client_error",
            ApiError::NotFound { code, .. } => code,
            ApiError::Conflict(_) => "conflict",
            ApiError::AdminUnauthorized(_) => "invalid_admin_key",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// OpenAI's `type` field.
    fn openai_type(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. }
            | ApiError::RequestTooLarge { .. }
            | ApiError::ModelNotFound(_)
            | ApiError::NotFound { .. }
            | ApiError::Conflict(_) => "invalid_request_error",
            ApiError::InvalidApiKey(_) | ApiError::AdminUnauthorized(_) => "authentication_error",
            ApiError::BudgetExceeded { .. } => "insufficient_quota",
            ApiError::ModelNotAllowed(_) => "permission_error",
            ApiError::RateLimitExceeded { .. } | ApiError::LoopDetected { .. } => {
                "rate_limit_error"
            }
            ApiError::UpstreamError(_)
            | ApiError::UpstreamTimeout(_)
            | ApiError::UpstreamPassthrough { .. }
            | ApiError::CountersUnavailable(_)
            | ApiError::Internal(_) => "api_error",
        }
    }

    /// Anthropic's `error.type`.
    fn anthropic_type(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } | ApiError::NotFound { .. } | ApiError::Conflict(_) => {
                "invalid_request_error"
            }
            ApiError::RequestTooLarge { .. } => "request_too_large",
            ApiError::InvalidApiKey(_) | ApiError::AdminUnauthorized(_) => "authentication_error",
            ApiError::BudgetExceeded { .. } | ApiError::ModelNotAllowed(_) => "permission_error",
            ApiError::ModelNotFound(_) => "not_found_error",
            ApiError::RateLimitExceeded { .. } | ApiError::LoopDetected { .. } => {
                "rate_limit_error"
            }
            ApiError::CountersUnavailable(_) => "overloaded_error",
            ApiError::UpstreamTimeout(_)
            | ApiError::UpstreamError(_)
            | ApiError::UpstreamPassthrough { .. }
            | ApiError::Internal(_) => "api_error",
        }
    }

    /// The policy that refused the request, when one did.
    pub fn policy(&self) -> Option<&str> {
        match self {
            ApiError::BudgetExceeded { policy, .. }
            | ApiError::RateLimitExceeded { policy, .. }
            | ApiError::LoopDetected { policy, .. } => policy.as_deref(),
            _ => None,
        }
    }

    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::BudgetExceeded {
                retry_after_secs, ..
            }
            | ApiError::RateLimitExceeded {
                retry_after_secs, ..
            }
            | ApiError::LoopDetected {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidRequest { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// The JSON error body in the given wire format (also what a stream
    /// sends as its last event when it fails midway).
    pub fn body(&self, format: ErrorFormat) -> serde_json::Value {
        match format {
            ErrorFormat::OpenAi => json!({
                "error": {
                    "message": self.to_string(),
                    "type": self.openai_type(),
                    "code": self.code(),
                    "param": self.param(),
                }
            }),
            ErrorFormat::Anthropic => json!({
                "type": "error",
                "error": { "type": self.anthropic_type(), "message": self.to_string(), "code": self.code() }
            }),
        }
    }

    /// Renders the error in the given wire format.
    pub fn into_response_as(self, format: ErrorFormat) -> Response {
        let status = self.status();
        let retry_after = self.retry_after_secs();
        let body = match self {
            // `/v1/messages` clients speak Anthropic's error shape whatever
            // the provider's: keep the status and the provider's message.
            ApiError::UpstreamPassthrough { body, .. } if format == ErrorFormat::Anthropic => {
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/error/message")
                            .and_then(|m| m.as_str())
                            .map(str::to_owned)
                    })
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                let kind = match status.as_u16() {
                    401 => "authentication_error",
                    403 => "permission_error",
                    404 => "not_found_error",
                    413 => "request_too_large",
                    429 => "rate_limit_error",
                    _ => "invalid_request_error",
                };
                json!({"type": "error", "error": {"type": kind, "message": message}})
            }
            ApiError::UpstreamPassthrough {
                body, content_type, ..
            } => {
                let mut resp = (status, body).into_response();
                if let Some(ct) = content_type {
                    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                return resp;
            }
            ref e => e.body(format),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.into_response_as(ErrorFormat::OpenAi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn provider_errors_take_the_anthropic_shape_on_v1_messages() {
        let err = ApiError::UpstreamPassthrough {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: Bytes::from_static(
                br#"{"error":{"message":"bad tool schema","type":"invalid_request_error"}}"#,
            ),
            content_type: None,
        };
        let resp = err.into_response_as(ErrorFormat::Anthropic);
        assert_eq!(resp.status(), 422);
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "bad tool schema");
    }

    #[test]
    fn every_spec_code_has_its_status() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (ApiError::invalid("x"), 400, "invalid_request"),
            (ApiError::InvalidApiKey("x".into()), 401, "invalid_api_key"),
            (
                ApiError::BudgetExceeded {
                    message: "x".into(),
                    retry_after_secs: 1,
                    policy: None,
                },
                402,
                "budget_exceeded",
            ),
            (
                ApiError::ModelNotAllowed("x".into()),
                403,
                "model_not_allowed",
            ),
            (ApiError::ModelNotFound("x".into()), 404, "model_not_found"),
            (
                ApiError::RequestTooLarge { limit: 1 },
                413,
                "request_too_large",
            ),
            (
                ApiError::RateLimitExceeded {
                    message: "x".into(),
                    retry_after_secs: 1,
                    policy: None,
                },
                429,
                "rate_limit_exceeded",
            ),
            (
                ApiError::LoopDetected {
                    message: "x".into(),
                    retry_after_secs: 1,
                    policy: None,
                },
                429,
                "loop_detected",
            ),
            (ApiError::UpstreamError("x".into()), 502, "upstream_error"),
            (
                ApiError::CountersUnavailable("x".into()),
                503,
                "counters_unavailable",
            ),
            (
                ApiError::UpstreamTimeout("x".into()),
                504,
                "upstream_timeout",
            ),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{code}");
            assert_eq!(err.code(), code);
        }
    }
}
