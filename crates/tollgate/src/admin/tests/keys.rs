//! `/admin/keys`: create, validate, revoke, rotate, restore.

use super::*;

#[tokio::test]
async fn key_create_needs_an_existing_team_and_shows_the_key_once() {
    let h = harness().await;
    let (status, err) = h
        .admin(Method::POST, "/admin/keys", Some(json!({"team": "serach"})))
        .await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "team_not_found")
    );
    assert!(message(&err).contains("`serach`"));
    assert!(h.keys().await.is_empty());

    let body = json!({
        "team": "search", "name": "indexer", "models": ["gpt-4o-mini"], "policies": ["daily-budget-cap"],
        "budget_usd": 5, "period": "daily", "requests_per_minute": 60, "tokens_per_minute": 10000,
        "expires_at": "2027-01-01T00:00:00Z", "metadata": {"owner": "ana"}
    });
    let key = h.create_key(body).await;
    let full = key["key"].as_str().unwrap();
    let id = key["id"].as_str().unwrap();
    assert!(full.starts_with(&format!("sk-tg-{id}-")), "{key}");
    assert_eq!(key["prefix"], format!("sk-tg-{id}"));
    assert_eq!(
        (key["budget_usd"].as_f64(), &key["period"]),
        (Some(5.0), &json!("daily"))
    );
    assert_eq!(
        (&key["requests_per_minute"], &key["tokens_per_minute"]),
        (&json!(60), &json!(10000))
    );
    assert_eq!(
        (&key["expires_at"], &key["metadata"]),
        (&json!("2027-01-01T00:00:00Z"), &json!({"owner": "ana"}))
    );
    assert_eq!(key["status"], "active");

    let hash = h.keys().await[0].secret_hash.clone();
    let secret = full.rsplit('-').next().unwrap();
    for uri in [
        format!("/admin/keys/{id}"),
        "/admin/keys?team=search".to_owned(),
        "/admin/keys".to_owned(),
    ] {
        let (status, body) = h.admin(Method::GET, &uri, None).await;
        assert_eq!(status, StatusCode::OK);
        let text = body.to_string();
        assert!(text.contains(id), "{uri}: {text}");
        assert!(
            !text.contains(secret) && !text.contains(&hash) && !text.contains("\"key\""),
            "{uri}: {text}"
        );
    }
    let (status, err) = h.admin(Method::GET, "/admin/keys/0123456789ab", None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "key_not_found")
    );
    let (status, err) = h.admin(Method::GET, "/admin/keys?team=nope", None).await;
    assert_eq!(
        (status, code(&err)),
        (StatusCode::NOT_FOUND, "team_not_found")
    );
}

#[tokio::test]
async fn key_bodies_are_validated() {
    let h = harness().await;
    let cases = [
        (json!({"team": "search", "policies": ["nope"]}), "policies"),
        (json!({"team": "search", "budget_usd": 1}), "period"),
        (
            json!({"team": "search", "requests_per_minute": 0}),
            "requests_per_minute",
        ),
        (
            json!({"team": "search", "tokens_per_minute": -5}),
            "tokens_per_minute",
        ),
        (
            json!({"team": "search", "expires_at": "tomorrow"}),
            "expires_at",
        ),
        (
            json!({"team": "search", "requests_per_minute": 1.5}),
            "requests_per_minute",
        ),
        (
            // Beyond the store's signed 64-bit column: a 400, not a 500.
            json!({"team": "search", "tokens_per_minute": 10_000_000_000_000_000_000u64}),
            "tokens_per_minute",
        ),
        (json!({"team": "search", "models": [" "]}), "models"),
        (json!({"team": "search", "metadata": [1]}), "metadata"),
        (json!({"team": "search", "colour": "red"}), ""),
    ];
    for (body, param) in cases {
        let (status, err) = h
            .admin(Method::POST, "/admin/keys", Some(body.clone()))
            .await;
        assert_eq!(
            (status, code(&err)),
            (StatusCode::BAD_REQUEST, "invalid_request"),
            "{body}"
        );
        if !param.is_empty() {
            assert_eq!(err["error"]["param"], param, "{body}: {err}");
        }
    }
    assert!(h.keys().await.is_empty());
    // A whole number written as a float is the integer JSON Schema says
    // it is.
    let key = h
        .create_key(json!({"team": "search", "requests_per_minute": 60.0}))
        .await;
    assert_eq!(key["requests_per_minute"], 60, "{key}");
}

#[tokio::test]
async fn revoke_rejects_the_next_request() {
    let h = harness().await;
    let key = h.create_key(json!({"team": "search"})).await;
    let (full, id) = (key["key"].as_str().unwrap(), key["id"].as_str().unwrap());
    let now = h.clock.now();
    // Warm the cache: revocation must not wait for the entry to go stale.
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(full), now)
            .await
            .is_ok()
    );
    let (status, body) = h
        .admin(Method::POST, &format!("/admin/keys/{id}/revoke"), None)
        .await;
    assert_eq!(
        (status, &body["status"]),
        (StatusCode::OK, &json!("revoked"))
    );
    let err = h
        .state
        .keys
        .authenticate(&key_headers(full), now)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_api_key");
    assert!(err.to_string().contains("revoked"));
    let (status, err) = h
        .admin(Method::POST, &format!("/admin/keys/{id}/rotate"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    let (status, _) = h
        .admin(Method::POST, "/admin/keys/0123456789ab/revoke", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn rotate_keeps_the_old_secret_for_the_grace_period_only() {
    let h = harness().await;
    let key = h.create_key(json!({"team": "search"})).await;
    let (old, id) = (key["key"].as_str().unwrap(), key["id"].as_str().unwrap());
    let now = h.clock.now();
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(old), now)
            .await
            .is_ok()
    );

    let uri = format!("/admin/keys/{id}/rotate");
    let (status, rotated) = h
        .admin(Method::POST, &uri, Some(json!({"grace_seconds": 3600})))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new = rotated["key"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(rotated["id"], id);
    assert_eq!(rotated["previous_key_expires_at"], "2026-11-27T13:00:00Z");
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(new), now)
            .await
            .is_ok()
    );
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(old), now)
            .await
            .is_ok(),
        "old key works in the grace period"
    );
    let later = now + Duration::seconds(3601);
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(old), later)
            .await
            .is_err(),
        "old key stops after it"
    );
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(new), later)
            .await
            .is_ok()
    );

    // Without a body the grace is zero: the replaced secret stops at once.
    let (status, again) = h.admin(Method::POST, &uri, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(new), now)
            .await
            .is_err()
    );
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(again["key"].as_str().unwrap()), now)
            .await
            .is_ok()
    );

    for bad in [json!("1h"), json!(1.5), json!(-1)] {
        let (status, err) = h
            .admin(Method::POST, &uri, Some(json!({ "grace_seconds": bad })))
            .await;
        assert_eq!(
            (status, &err["error"]["param"]),
            (StatusCode::BAD_REQUEST, &json!("grace_seconds")),
            "{bad}"
        );
    }
    let (status, _) = h
        .admin(Method::POST, &uri, Some(json!({"grace_seconds": 60.0})))
        .await;
    assert_eq!(status, StatusCode::OK, "`60.0` is the whole number 60");
}

#[tokio::test]
async fn restore_lifts_a_suspension_and_status_tracks_expiry() {
    let h = harness().await;
    let key = h
        .create_key(json!({"team": "search", "expires_at": "2026-11-27T12:30:00Z"}))
        .await;
    let (full, id) = (key["key"].as_str().unwrap(), key["id"].as_str().unwrap());
    let mut rec = h.keys().await.remove(0);
    rec.suspended_at = Some(h.clock.now());
    h.state.store.update_key(&rec).await.unwrap();
    let (_, view) = h
        .admin(Method::GET, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(view["status"], "suspended");
    let (status, view) = h
        .admin(
            Method::POST,
            &format!("/admin/keys/sk-tg-{id}/restore"),
            None,
        )
        .await;
    assert_eq!(
        (status, &view["status"]),
        (StatusCode::OK, &json!("active"))
    );
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(full), h.clock.now())
            .await
            .is_ok()
    );
    h.clock.advance(Duration::hours(1));
    let (_, view) = h
        .admin(Method::GET, &format!("/admin/keys/{id}"), None)
        .await;
    assert_eq!(view["status"], "expired");
}
