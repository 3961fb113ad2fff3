//! `/admin/teams`: create, list, validate, patch, delete.

use super::*;

#[tokio::test]
async fn teams_create_list_conflict_and_read_only() {
    let h = harness().await;
    let body = json!({"id": "ml", "policies": ["daily-budget-cap"], "budget_usd": 20.5, "period": "weekly"});
    let (status, team) = h
        .admin(Method::POST, "/admin/teams", Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{team}");
    assert_eq!(team["budget_usd"], 20.5);
    assert_eq!(team["period"], "weekly");
    assert_eq!(team["source"], "api");

    let (status, err) = h.admin(Method::POST, "/admin/teams", Some(body)).await;
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "conflict"));
    let (status, err) = h
        .admin(Method::POST, "/admin/teams", Some(json!({"id": "search"})))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a config team id is taken: {err}"
    );

    let (status, list) = h.admin(Method::GET, "/admin/teams", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["search", "ml"]);
    assert_eq!(list["data"][0]["source"], "config");
    assert_eq!(list["data"][0]["read_only"], true);

    let (status, team) = h.admin(Method::GET, "/admin/teams/search", None).await;
    assert_eq!((status, &team["read_only"]), (StatusCode::OK, &json!(true)));
    let (status, err) = h.admin(Method::GET, "/admin/teams/nope", None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "team_not_found")
    );
    for method in [Method::PATCH, Method::DELETE] {
        let (status, err) = h
            .admin(method, "/admin/teams/search", Some(json!({})))
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(message(&err).contains("read-only"), "{err}");
    }
}

#[tokio::test]
async fn team_bodies_are_validated_with_the_field_named() {
    let h = harness().await;
    let cases = [
        (
            json!({"id": "a", "policies": ["nope"]}),
            "policies",
            "no policy named `nope`",
        ),
        (
            json!({"id": "a", "budget_usd": 5}),
            "period",
            "needs a `period`",
        ),
        (
            json!({"id": "a", "period": "daily"}),
            "budget_usd",
            "without `budget_usd`",
        ),
        (
            json!({"id": "a", "budget_usd": 5, "period": "dayly"}),
            "period",
            "dayly",
        ),
        (
            json!({"id": "a", "budget_usd": -1, "period": "daily"}),
            "budget_usd",
            "0 or more",
        ),
        (
            json!({"id": "a", "budgett_usd": 5}),
            "",
            "unknown field `budgett_usd`",
        ),
        (json!({"id": 7}), "id", "invalid type"),
        (json!({"id": "a b"}), "id", "letters, digits"),
    ];
    for (body, param, needle) in cases {
        let (status, err) = h
            .admin(Method::POST, "/admin/teams", Some(body.clone()))
            .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{body}"
        );
        assert!(message(&err).contains(needle), "{body}: {err}");
        if !param.is_empty() {
            assert_eq!(err["error"]["param"], param, "{body}: {err}");
        }
    }
    let huge = format!("{{\"id\": \"{}\"}}", "x".repeat(2 << 20));
    let (status, err) = h
        .call(Method::POST, "/admin/teams", Some(ADMIN), Some(&huge))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
    );
    let (status, err) = h
        .call(Method::POST, "/admin/teams", Some(ADMIN), Some("{\"id\": "))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&err).contains("not valid JSON"), "{err}");
    assert!(
        h.state.store.list_teams().await.unwrap().is_empty(),
        "nothing invalid was stored"
    );
}

#[tokio::test]
async fn team_patch_and_delete() {
    let h = harness().await;
    h.admin(Method::POST, "/admin/teams", Some(json!({"id": "ml"})))
        .await;
    let (status, err) = h
        .admin(
            Method::PATCH,
            "/admin/teams/ml",
            Some(json!({"period": "daily"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a period alone needs a budget to re-schedule: {err}"
    );
    let (status, err) = h
        .admin(
            Method::PATCH,
            "/admin/teams/ml",
            Some(json!({"budget_usd": 3})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a budget alone needs a period to keep: {err}"
    );
    let patch = json!({"budget_usd": 10, "period": "monthly", "models": ["gpt-4o*"]});
    let (status, team) = h.admin(Method::PATCH, "/admin/teams/ml", Some(patch)).await;
    assert_eq!(status, StatusCode::OK, "{team}");
    assert_eq!(
        (team["budget_usd"].as_f64(), &team["models"]),
        (Some(10.0), &json!(["gpt-4o*"]))
    );
    let (_, team) = h
        .admin(
            Method::PATCH,
            "/admin/teams/ml",
            Some(json!({"period": "hourly"})),
        )
        .await;
    assert_eq!(
        (team["budget_usd"].as_f64(), &team["period"]),
        (Some(10.0), &json!("hourly"))
    );
    let (_, team) = h
        .admin(
            Method::PATCH,
            "/admin/teams/ml",
            Some(json!({"budget_usd": null, "models": null})),
        )
        .await;
    assert_eq!(
        (&team["budget_usd"], &team["period"], &team["models"]),
        (&Value::Null, &Value::Null, &Value::Null)
    );
    let (status, err) = h
        .admin(Method::PATCH, "/admin/teams/nope", Some(json!({})))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "team_not_found")
    );

    let key = h.create_key(json!({"team": "ml"})).await;
    let (status, err) = h.admin(Method::DELETE, "/admin/teams/ml", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(message(&err).contains("unrevoked"), "{err}");
    let id = key["id"].as_str().unwrap();
    h.admin(Method::POST, &format!("/admin/keys/{id}/revoke"), None)
        .await;
    let (status, body) = h.admin(Method::DELETE, "/admin/teams/ml", None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"id": "ml", "deleted": true}))
    );
    let (status, _) = h.admin(Method::GET, "/admin/teams/ml", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
