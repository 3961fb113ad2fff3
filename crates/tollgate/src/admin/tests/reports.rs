//! The ledger reports: `/admin/spend`, `/admin/requests`, `/admin/budgets`.

use super::*;

#[tokio::test]
async fn spend_groups_and_validates_its_parameters() {
    let h = harness().await;
    let day = |d: u32| Utc.with_ymd_and_hms(2026, 11, d, 10, 0, 0).unwrap();
    h.ledger(&[
        ledger_row("search", "gpt-4o-mini", day(25), 0.5),
        ledger_row("search", "gpt-4o", day(26), 1.25),
        ledger_row("ml", "gpt-4o", day(27), 2.0),
    ])
    .await;
    let (status, body) = h
        .admin(Method::GET, "/admin/spend?group_by=team", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"data": [
            {"group": "ml", "requests": 1, "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": 2.0,
             "cache_hits": 0, "saved_usd": 0.0},
            {"group": "search", "requests": 2, "prompt_tokens": 20, "completion_tokens": 10, "cost_usd": 1.75,
             "cache_hits": 0, "saved_usd": 0.0},
        ]})
    );
    // A day as `to` includes that whole day.
    let (_, body) = h
        .admin(
            Method::GET,
            "/admin/spend?from=2026-11-26&to=2026-11-26",
            None,
        )
        .await;
    assert_eq!(
        body["data"],
        json!([{"group": "total", "requests": 1, "prompt_tokens": 10, "completion_tokens": 5, "cost_usd": 1.25,
            "cache_hits": 0, "saved_usd": 0.0}])
    );
    let (_, body) = h
        .admin(
            Method::GET,
            "/admin/spend?group_by=day&from=2026-11-26T00:00:00Z&team=search",
            None,
        )
        .await;
    assert_eq!(body["data"][0]["group"], "2026-11-26");
    assert_eq!(body["data"].as_array().unwrap().len(), 1);

    for (query, param) in [
        ("group_by=week", "group_by"),
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("to=", "to"),
        ("group_by=", "group_by"),
    ] {
        let (status, err) = h
            .admin(Method::GET, &format!("/admin/spend?{query}"), None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(err["error"]["param"], param, "{query}: {err}");
    }
    // A window that ends before it starts holds nothing.
    let (status, body) = h
        .admin(
            Method::GET,
            "/admin/spend?from=2026-11-27&to=2026-11-01",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"][0]["requests"], 0, "{body}");
    let (status, body) = h
        .admin(
            Method::GET,
            "/admin/spend?group_by=team&from=2026-11-27&to=2026-11-01",
            None,
        )
        .await;
    assert_eq!((status, body["data"].clone()), (StatusCode::OK, json!([])));
    let (status, err) = h
        .admin(Method::GET, "/admin/spend?grup_by=team", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message(&err).contains("grup_by"), "{err}");
}

#[tokio::test]
async fn requests_lists_newest_first_within_the_limit() {
    let h = harness().await;
    let start = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap();
    let rows: Vec<LedgerRow> = (0..5)
        .map(|i| ledger_row("search", "gpt-4o", start + Duration::minutes(i), 0.1))
        .collect();
    h.ledger(&rows).await;
    let (status, body) = h
        .admin(Method::GET, "/admin/requests?team=search&limit=2", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let rows = body["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["time"], "2026-11-27T10:04:00Z");
    let fields: Vec<&str> = rows[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for f in [
        "time",
        "request_id",
        "key_id",
        "team",
        "model",
        "provider",
        "status",
        "prompt_tokens",
    ] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    for f in [
        "completion_tokens",
        "cost_usd",
        "latency_ms",
        "error_code",
        "would_reject",
    ] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    let (_, body) = h.admin(Method::GET, "/admin/requests", None).await;
    assert_eq!(body["data"].as_array().unwrap().len(), 5);
    for limit in ["0", "1001", "ten", "-1", ""] {
        let (status, err) = h
            .admin(Method::GET, &format!("/admin/requests?limit={limit}"), None)
            .await;
        assert_eq!(
            (status, &err["error"]["param"]),
            (StatusCode::BAD_REQUEST, &json!("limit")),
            "{limit}"
        );
    }
}

#[tokio::test]
async fn budgets_report_team_and_key_cost_limits() {
    let h = harness().await;
    let key = h
        .create_key(json!({"team": "search", "budget_usd": 5, "period": "weekly"}))
        .await;
    let (status, body) = h
        .admin(Method::GET, "/admin/budgets?team=search", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let rows = body["data"].as_array().unwrap();
    let team_row = rows.iter().find(|r| r["scope"] == "team").unwrap();
    assert_eq!(
        (&team_row["policy"], &team_row["limit_usd"]),
        (&json!("daily-budget-cap"), &json!(50.0))
    );
    assert_eq!(team_row["resets_at"], "2026-11-28T00:00:00Z");
    let key_row = rows.iter().find(|r| r["scope"] == "key").unwrap();
    assert_eq!(
        (&key_row["id"], &key_row["limit_usd"]),
        (&key["id"], &json!(5.0))
    );
    assert_eq!(key_row["remaining_usd"], 5.0);

    let doc: Value = serde_json::from_str(super::super::OPENAPI_JSON).unwrap();
    let mut documented: Vec<&String> = doc["components"]["schemas"]["BudgetReport"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let mut returned: Vec<&String> = key_row.as_object().unwrap().keys().collect();
    documented.sort();
    returned.sort();
    assert_eq!(documented, returned);

    let (status, err) = h.admin(Method::GET, "/admin/budgets?team=nope", None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "team_not_found")
    );
}
