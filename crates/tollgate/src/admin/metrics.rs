//! `GET /metrics`: the Prometheus text format, behind the admin key through
//! the same [`Admin`] extractor as every admin route.

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use super::extract::Admin;

pub(crate) async fn metrics(Admin(state): Admin) -> Response {
    match &state.metrics {
        Some(h) => (
            [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response(),
    }
}
