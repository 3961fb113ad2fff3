//! Virtual key lifecycle: revoke, rotate with grace, expiry, persistence
//! across restarts.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn revoke_takes_effect_on_the_next_request() {
    let h = Harness::start("").await;
    let (id, key) = h.key(json!({"name": "ci"})).await;
    assert_eq!(h.chat(&key, &chat_body("x")).await.status(), 200);
    let (status, _) = h
        .admin(Method::POST, &format!("/admin/keys/{id}/revoke"), None)
        .await;
    assert_eq!(status, 200);
    let (status, code, body) = error_code(h.chat(&key, &chat_body("x")).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_api_key"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("revoked")
    );
    assert_eq!(h.mock.calls(), 1);
}

#[tokio::test]
async fn rotation_keeps_the_old_key_for_the_grace_period_only() {
    let h = Harness::start("").await;
    let (id, old) = h.key(json!({})).await;
    let (status, rotated) = h
        .admin(
            Method::POST,
            &format!("/admin/keys/{id}/rotate"),
            Some(json!({"grace_seconds": 1})),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(h.chat(&new, &chat_body("x")).await.status(), 200);
    assert_eq!(
        h.chat(&old, &chat_body("x")).await.status(),
        200,
        "old key works during the grace period"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        h.chat(&old, &chat_body("x")).await.status(),
        401,
        "old key stops after the grace period"
    );
    assert_eq!(h.chat(&new, &chat_body("x")).await.status(), 200);
}

#[tokio::test]
async fn expired_keys_are_rejected() {
    let h = Harness::start("").await;
    let past = (chrono::Utc::now() - chrono::Duration::seconds(5)).to_rfc3339();
    let (status, born_expired) = h
        .admin(
            reqwest::Method::POST,
            "/admin/keys",
            Some(json!({"team": "t1", "expires_at": past})),
        )
        .await;
    assert_eq!(
        (status, born_expired["status"].as_str()),
        (201, Some("expired")),
        "a key born expired is created as such: {born_expired}"
    );
    let born_expired = born_expired["key"].as_str().unwrap();
    assert_eq!(
        h.chat(born_expired, &chat_body("x")).await.status(),
        401,
        "and refused on first use"
    );
    let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(800)).to_rfc3339();
    let (_, expiring) = h.key(json!({"expires_at": soon})).await;
    assert_eq!(h.chat(&expiring, &chat_body("x")).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (status, code, body) = error_code(h.chat(&expiring, &chat_body("x")).await).await;
    assert_eq!((status, code.as_str()), (401, "invalid_api_key"));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

#[tokio::test]
async fn keys_and_ledger_survive_a_restart() {
    let mut h = Harness::start("").await;
    let (id, key) = h.key(json!({})).await;
    for _ in 0..3 {
        assert_eq!(h.chat(&key, &chat_body("x")).await.status(), 200);
    }
    h.restart("").await;
    assert_eq!(
        h.chat(&key, &chat_body("x")).await.status(),
        200,
        "the key works after a restart"
    );
    let rows = h.ledger().await;
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r.key_id.as_str() == id));
    let (status, spend) = h
        .admin(Method::GET, "/admin/spend?group_by=key", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(spend["data"][0]["requests"], 4);
}

#[tokio::test]
async fn the_admin_api_refuses_virtual_keys() {
    let h = Harness::start("").await;
    let (_, key) = h.key(json!({})).await;
    let resp = h
        .http
        .get(format!("{}/admin/keys", h.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = h
        .http
        .get(format!("{}/admin/keys", h.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (status, listed) = h.admin(Method::GET, "/admin/keys", None).await;
    assert_eq!(status, 200);
    assert!(
        !listed.to_string().contains(&key),
        "listings never show the key"
    );
}

/// A team's PATCH or DELETE applies to the very next request on the node
/// that made it, not when that node's cached copy of the team expires.
#[tokio::test]
async fn team_changes_apply_on_the_next_request() {
    let h = Harness::start("").await;
    let create = |body: serde_json::Value| h.admin(Method::POST, "/admin/teams", Some(body));
    assert_eq!(create(json!({"id": "ml"})).await.0, 201);
    let (_, key) = h.key(json!({"team": "ml"})).await;
    assert_eq!(h.chat(&key, &chat_body("a")).await.status(), 200);
    let (status, body) = h
        .admin(
            Method::PATCH,
            "/admin/teams/ml",
            Some(json!({"models": ["other-model"]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, code, _) = error_code(h.chat(&key, &chat_body("b")).await).await;
    assert_eq!((status, code.as_str()), (403, "model_not_allowed"));

    // Deleted and made again with other settings: the new team applies.
    assert_eq!(
        create(json!({"id": "gone", "models": ["other-model"]}))
            .await
            .0,
        201
    );
    let (old_id, old_key) = h.key(json!({"team": "gone"})).await;
    let (status, _, _) = error_code(h.chat(&old_key, &chat_body("c")).await).await;
    assert_eq!(status, 403);
    let revoke = format!("/admin/keys/{old_id}/revoke");
    assert_eq!(h.admin(Method::POST, &revoke, None).await.0, 200);
    let (status, body) = h.admin(Method::DELETE, "/admin/teams/gone", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(create(json!({"id": "gone"})).await.0, 201);
    let (_, new_key) = h.key(json!({"team": "gone"})).await;
    assert_eq!(h.chat(&new_key, &chat_body("d")).await.status(), 200);
}
