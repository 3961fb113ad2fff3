//! Config reload: a valid file swaps in, an invalid one leaves the config.

use super::*;

#[tokio::test]
async fn reload_swaps_a_valid_file_in_and_keeps_the_config_on_an_invalid_one() {
    let h = harness().await;
    let (status, err) = h.admin(Method::POST, "/admin/reload", None).await;
    // The request is fine; the gateway's file is what cannot be applied.
    assert_eq!((status, code(&err)), (StatusCode::CONFLICT, "conflict"));
    assert!(message(&err).contains("no config file"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, "teams:\n  - id: reloaded\n").unwrap();
    let h = harness_with(None, Some(path.clone())).await;
    let (status, body) = h.admin(Method::POST, "/admin/reload", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"reloaded": true})));
    let (_, teams) = h.admin(Method::GET, "/admin/teams/reloaded", None).await;
    assert_eq!(teams["source"], "config");

    std::fs::write(&path, "teams:\n  - id: x\n    polices: []\n").unwrap();
    let (status, err) = h.admin(Method::POST, "/admin/reload", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        message(&err).contains("polices") && message(&err).contains("stays in force"),
        "{err}"
    );
    let (status, _) = h.admin(Method::GET, "/admin/teams/reloaded", None).await;
    assert_eq!(status, StatusCode::OK, "the old config is still in force");
}
