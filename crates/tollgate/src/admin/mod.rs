//! The admin API (SPEC §4): teams, virtual keys, spend and request reports,
//! budgets, reload, `/metrics` and the OpenAPI document, all behind the admin
//! key; plus the open health endpoints `/healthz` and `/readyz`; the audit
//! log of its mutations (`audit`) and the operators' console `/ui` (`ui`).
//!
//! Every `/admin` handler takes [`extract::Admin`] as its first argument:
//! it is the only way to the state, so a handler cannot exist without the
//! admin-key check. The route table below is the single list of routes; a
//! test holds the OpenAPI document to it.

pub(crate) mod audit;
mod common;
mod extract;
mod health;
mod keys;
mod metrics;
mod openapi;
mod reports;
mod teams;
#[cfg(test)]
mod tests;
pub(crate) mod ui;

use axum::Router;
use axum::routing::{self, MethodRouter};
use http::Method;

use crate::state::SharedState;

pub use openapi::OPENAPI_JSON;

/// One row of the route table.
#[cfg_attr(
    not(test),
    allow(
        dead_code,
        reason = "`method` and `open` are read by the route-table tests"
    )
)]
pub(crate) struct Route {
    pub(crate) method: Method,
    pub(crate) path: &'static str,
    /// Served without the admin key (health probes only).
    pub(crate) open: bool,
    handler: MethodRouter<SharedState>,
}

macro_rules! route {
    ($open:literal, $method:ident, $path:literal, $handler:path) => {
        Route {
            method: Method::$method,
            path: $path,
            open: $open,
            handler: routing::on(routing::MethodFilter::$method, $handler),
        }
    };
}

pub(crate) fn routes() -> Vec<Route> {
    vec![
        route!(true, GET, "/healthz", health::healthz),
        route!(true, GET, "/readyz", health::readyz),
        route!(false, GET, "/admin/openapi.json", openapi::serve),
        route!(false, POST, "/admin/teams", teams::create),
        route!(false, GET, "/admin/teams", teams::list),
        route!(false, GET, "/admin/teams/{id}", teams::get),
        route!(false, PATCH, "/admin/teams/{id}", teams::patch),
        route!(false, DELETE, "/admin/teams/{id}", teams::delete),
        route!(false, POST, "/admin/keys", keys::create),
        route!(false, GET, "/admin/keys", keys::list),
        route!(false, GET, "/admin/keys/{id}", keys::get),
        route!(false, POST, "/admin/keys/{id}/revoke", keys::revoke),
        route!(false, POST, "/admin/keys/{id}/rotate", keys::rotate),
        route!(false, POST, "/admin/keys/{id}/restore", keys::restore),
        route!(false, GET, "/admin/spend", reports::spend),
        route!(false, GET, "/admin/requests", reports::requests),
        route!(false, GET, "/admin/budgets", reports::budgets),
        route!(false, POST, "/admin/reload", reports::reload),
        route!(false, GET, "/admin/audit", audit::list),
        route!(false, GET, "/metrics", metrics::metrics),
    ]
}

/// The admin API and the health endpoints, to be merged into the app's
/// router (on the main listener or on `admin_listen`).
///
/// The operators' console (`/ui`) rides along, so it is wherever the admin
/// API is.
pub fn router() -> Router<SharedState> {
    routes()
        .into_iter()
        .fold(Router::new(), |r, route| r.route(route.path, route.handler))
        .merge(ui::router())
}
