//! The OpenAPI document against the routes and the handlers' answers.

use super::*;

#[tokio::test]
async fn openapi_describes_every_route_and_nothing_else() {
    let h = harness().await;
    let (status, doc) = h.admin(Method::GET, "/admin/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            assert!(op["responses"].is_object(), "{method} {path} has responses");
            assert!(op["summary"].is_string(), "{method} {path} has a summary");
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    let mut routed: Vec<(String, String)> = super::super::routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(documented, routed);
    // Every `$ref` points at something the document defines.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"").skip(1) {
        let target = &r[..r.find('"').unwrap()];
        let pointer = target.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "dangling $ref {target}");
    }
}

#[tokio::test]
async fn openapi_schemas_list_exactly_the_fields_the_handlers_return() {
    let h = harness().await;
    let doc: Value = serde_json::from_str(super::super::OPENAPI_JSON).unwrap();
    let fields = |v: &Value| {
        let mut f: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        f.sort();
        f
    };
    let schema = |name: &str| {
        let mut f: Vec<String> = doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        f.sort();
        f
    };
    let (_, team) = h
        .admin(Method::POST, "/admin/teams", Some(json!({"id": "ml"})))
        .await;
    assert_eq!(fields(&team), schema("Team"));
    let new = h.create_key(json!({"team": "ml"})).await;
    assert_eq!(fields(&new), schema("NewKey"));
    let (_, key) = h
        .admin(
            Method::GET,
            &format!("/admin/keys/{}", new["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(fields(&key), schema("Key"));
    let (_, err) = h.admin(Method::GET, "/admin/keys/nope", None).await;
    assert_eq!(
        fields(&err["error"]),
        fields(&doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"])
    );
    h.ledger(&[ledger_row("ml", "m", h.clock.now(), 0.1)]).await;
    let (_, spend) = h.admin(Method::GET, "/admin/spend", None).await;
    assert_eq!(fields(&spend["data"][0]), schema("SpendRow"));
    let (_, requests) = h.admin(Method::GET, "/admin/requests", None).await;
    assert_eq!(fields(&requests["data"][0]), schema("RequestRow"));
    let (_, ready) = h.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(fields(&ready), schema("Readiness"));
}
