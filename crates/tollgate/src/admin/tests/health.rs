//! Admin auth on every route, `/metrics`, health and readiness.

use super::*;

#[tokio::test]
async fn admin_routes_need_the_admin_key() {
    let h = harness().await;
    let key = h.create_key(json!({"team": "search"})).await;
    let virtual_key = key["key"].as_str().unwrap();
    for route in super::super::routes().iter().filter(|r| !r.open) {
        let uri = route.path.replace("{id}", "x");
        for auth in [None, Some("wrong"), Some(virtual_key)] {
            let (status, body) = h.call(route.method.clone(), &uri, auth, None).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{} {uri} with {auth:?}",
                route.method
            );
            assert_eq!(code(&body), "invalid_admin_key");
        }
    }
}

/// `/metrics` is an admin route like the others: in the route table (so
/// the admin-key test above covers it), the OpenAPI document and behind
/// the `Admin` extractor.
#[tokio::test]
async fn metrics_is_an_admin_route() {
    assert!(
        super::super::routes()
            .iter()
            .any(|r| r.path == "/metrics" && r.method == Method::GET && !r.open)
    );
    let h = harness().await;
    let get = |auth: Option<&str>| {
        let mut req = Request::builder().method(Method::GET).uri("/metrics");
        if let Some(auth) = auth {
            req = req.header("authorization", format!("Bearer {auth}"));
        }
        super::super::router()
            .with_state(h.state.clone())
            .oneshot(req.body(Body::empty()).unwrap())
    };
    assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    // This harness installs no recorder: the route is reached, and says so.
    let resp = get(Some(ADMIN)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn health_is_open_and_readiness_names_the_failing_dependency() {
    let h = harness().await;
    let (status, body) = h.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, body) = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"status": "ready", "store": "ok", "counters": "ok"})
    );
    let h = harness_with(Some(Arc::new(DownCounters)), None).await;
    let (status, body) = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["counters"]["error"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "{body}"
    );
    assert_eq!(
        (&body["status"], &body["store"]),
        (&json!("unavailable"), &json!("ok"))
    );
}
