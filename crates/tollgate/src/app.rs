//! The router and its layers. This is the only place that orders layers;
//! read [`app`] top to bottom for what every request passes through. The
//! server around it (state, listeners, shards, signals) is [`crate::server`].

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::HeaderValue;

use crate::error::ApiError;
use crate::state::SharedState;
use crate::types::RequestId;
use crate::{admin, proxy};

/// The router with every layer, outermost first:
/// 1. `request_id`: opens the busy-poll window (`crate::server::busy_poll`),
///    generates the request id, puts it in the request's extensions
///    (`RequestId`) and on every response as `x-request-id`, including
///    errors and 404s.
/// 2. the routes: `/v1/*` (proxy, authenticated by virtual key inside its
///    handlers because the error format depends on the route) and, unless
///    `admin_listen` moves them, `/admin/*`, `/ui/*`, `/healthz`, `/readyz`,
///    `/metrics`, each admin route inside the audit recorder
///    (`audited_admin`), which reads `ConnectInfo` (the peer address).
/// 3. `fallback`: unknown paths get the API's own 404 shape.
///
/// Body size limits are enforced per handler (the limit is hot-reloadable
/// config), so axum's default body limit is disabled here.
pub fn app(state: SharedState, with_admin: bool) -> Router {
    let mut router = Router::new().merge(proxy::router());
    if with_admin {
        router = router.merge(audited_admin(&state));
    }
    router
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

/// What `admin_listen` serves on its own address.
pub fn admin_app(state: SharedState) -> Router {
    audited_admin(&state)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), request_id))
        .with_state(state)
}

/// The admin routes (and `/ui`) with the audit log's recorder around each
/// route: every authenticated `/admin` mutation is recorded before its
/// answer leaves (`admin::audit`). It reads the peer address that the
/// servers put in the extensions (`ConnectInfo`).
fn audited_admin(state: &SharedState) -> Router<SharedState> {
    admin::router().layer(middleware::from_fn_with_state(
        state.clone(),
        admin::audit::record,
    ))
}

async fn request_id(State(state): State<SharedState>, mut req: Request, next: Next) -> Response {
    state.busy_poll.touch();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let header = HeaderValue::from_str(&id).ok();
    req.extensions_mut().insert(RequestId(id));
    let mut resp = next.run(req).await;
    // Again as the answer leaves: a client's next request follows it closely.
    state.busy_poll.touch();
    if let Some(h) = header {
        resp.headers_mut().insert("x-request-id", h);
    }
    resp
}

async fn not_found(req: Request) -> Response {
    ApiError::NotFound {
        code: "not_found",
        message: format!(
            "no route for `{} {}`",
            req.method(),
            crate::types::clip(req.uri().path())
        ),
    }
    .into_response()
}
