//! A webhook receiver for alert tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::Value;

pub type Received = Arc<Mutex<Vec<Value>>>;

pub async fn start() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |Json(v): Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), received)
}

/// Waits (bounded) until at least `n` events arrived, then a little longer
/// for duplicates to show up; returns them all.
pub async fn wait_for(received: &Received, n: usize, max: Duration) -> Vec<Value> {
    let start = Instant::now();
    while received.lock().len() < n && start.elapsed() < max {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    received.lock().clone()
}
