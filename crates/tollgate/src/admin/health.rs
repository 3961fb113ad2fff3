//! The open endpoints: `GET /healthz` (the process answers) and
//! `GET /readyz` (the store and the counters answer too).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use http::StatusCode;
use serde_json::{Value, json};

use crate::state::SharedState;

/// A dependency slower than this counts as down: a load balancer's probe
/// must get an answer, not hang with the store.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub(crate) async fn readyz(State(state): State<SharedState>) -> (StatusCode, Json<Value>) {
    let (store, counters) = tokio::join!(
        tokio::time::timeout(PING_TIMEOUT, state.store.ping()),
        tokio::time::timeout(PING_TIMEOUT, state.counters.ping()),
    );
    let store = match store {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "store did not answer within {}s",
            PING_TIMEOUT.as_secs()
        )),
    };
    let counters = match counters {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "counters did not answer within {}s",
            PING_TIMEOUT.as_secs()
        )),
    };
    let ready = store.is_ok() && counters.is_ok();
    let show = |r: &Result<(), String>| match r {
        Ok(()) => json!("ok"),
        Err(e) => json!({ "error": e }),
    };
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "store": show(&store),
        "counters": show(&counters),
    });
    (
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}
