//! The audit log over real HTTP: a row for every kind of admin mutation
//! (teams, keys, reload) with actor, action, target, source and change;
//! never a key; `GET /admin/audit` filters and pages; `tollgate audit`
//! prints it; the store refuses to edit it.

use reqwest::Method;
use serde_json::{Value, json};
use tollgate::store::AuditQuery;

use crate::common::{ADMIN_KEY, Harness};

fn rows(v: &Value) -> Vec<(String, String, u64)> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_owned(),
                r["target"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_admin_mutation_is_recorded_with_who_what_and_from_where() {
    let h = Harness::start("").await;
    use Method as M;
    let calls: Vec<(Method, &str, Option<Value>)> = vec![
        (
            M::POST,
            "/admin/teams",
            Some(json!({"id": "ml", "budget_usd": 5, "period": "daily"})),
        ),
        (M::PATCH, "/admin/teams/ml", Some(json!({"budget_usd": 7}))),
        (
            M::POST,
            "/admin/keys",
            Some(json!({"team": "ml", "name": "svc", "metadata": {"owner": "a", "api_key": "x"}})),
        ),
        (M::POST, "/admin/keys", Some(json!({"team": "missing"}))),
    ];
    let mut answers = Vec::new();
    for (m, p, b) in calls {
        answers.push(h.admin(m, p, b).await);
    }
    let key_id = answers[2].1["id"].as_str().unwrap().to_owned();
    let secret = answers[2].1["key"].as_str().unwrap().to_owned();
    let (status, rotated) = h
        .admin(
            M::POST,
            &format!("/admin/keys/sk-tg-{key_id}/rotate"),
            Some(json!({"grace_seconds": 60})),
        )
        .await;
    assert_eq!(status, 200);
    let rotated = rotated["key"].as_str().unwrap().to_owned();
    h.admin(M::POST, &format!("/admin/keys/{key_id}/revoke"), None)
        .await;
    h.admin(M::POST, &format!("/admin/keys/{key_id}/restore"), None)
        .await;
    h.admin(M::DELETE, "/admin/teams/ml", None).await;
    // Embedded-default-style gateway without a file: the reload is refused, and recorded.
    h.admin(M::POST, "/admin/reload", None).await;
    // Reads and unauthenticated calls are not changes.
    h.admin(M::GET, "/admin/keys", None).await;
    let resp = h
        .http
        .post(format!("{}/admin/teams", h.url))
        .bearer_auth("wrong")
        .json(&json!({"id": "evil"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let (status, log) = h.admin(M::GET, "/admin/audit", None).await;
    assert_eq!(status, 200, "{log}");
    let key = format!("key:{key_id}");
    assert_eq!(
        rows(&log),
        vec![
            ("config.reload".into(), "config".into(), 409),
            ("team.delete".into(), "team:ml".into(), 200),
            ("key.restore".into(), key.clone(), 200),
            ("key.revoke".into(), key.clone(), 200),
            ("key.rotate".into(), key.clone(), 200),
            ("key.create".into(), "team:missing".into(), 404),
            ("key.create".into(), key.clone(), 201),
            ("team.update".into(), "team:ml".into(), 200),
            ("team.create".into(), "team:ml".into(), 201),
        ]
    );
    for r in log["data"].as_array().unwrap() {
        assert_eq!(r["actor"], "admin-key");
        assert!(
            r["source"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{r}"
        );
        assert!(r["time"].as_str().unwrap().ends_with('Z'), "{r}");
    }
    let create = &log["data"][6]["change"];
    assert_eq!(create["team"], "ml");
    assert_eq!(create["metadata"]["owner"], "a");
    assert_eq!(create["metadata"]["api_key"], "[redacted]");
    assert_eq!(log["data"][4]["change"], json!({"grace_seconds": 60}));
    assert_eq!(log["data"][7]["change"], json!({"budget_usd": 7}));
    let text = log.to_string();
    assert!(
        !text.contains(&secret) && !text.contains(&rotated),
        "no key in the log"
    );
    assert!(!text.contains(ADMIN_KEY));
    assert!(
        !text.contains("evil"),
        "an unauthenticated call is not recorded"
    );
    assert_eq!(log["next_cursor"], Value::Null);
}

#[tokio::test]
async fn the_audit_log_filters_and_pages() {
    let h = Harness::start("").await;
    for i in 0..5 {
        let (s, _) = h
            .admin(
                Method::POST,
                "/admin/teams",
                Some(json!({"id": format!("t{i}x")})),
            )
            .await;
        assert_eq!(s, 201);
    }
    let (_, key) = h
        .admin(Method::POST, "/admin/keys", Some(json!({"team": "t1x"})))
        .await;
    let id = key["id"].as_str().unwrap();
    h.admin(Method::POST, &format!("/admin/keys/{id}/revoke"), None)
        .await;

    let get = |q: String| {
        let h = &h;
        async move {
            h.admin(Method::GET, &format!("/admin/audit{q}"), None)
                .await
        }
    };
    let (_, by_action) = get("?action=team.create".into()).await;
    assert_eq!(by_action["data"].as_array().unwrap().len(), 5);
    let (_, by_target) = get(format!("?target=key:{id}")).await;
    assert_eq!(
        rows(&by_target)
            .iter()
            .map(|r| r.0.as_str())
            .collect::<Vec<_>>(),
        vec!["key.revoke", "key.create"]
    );
    let (_, by_actor) = get("?actor=ui:nobody".into()).await;
    assert_eq!(by_actor["data"], json!([]));
    let (_, future) = get("?from=2999-01-01".into()).await;
    assert_eq!(future["data"], json!([]));
    let (_, past) = get("?to=2000-01-01".into()).await;
    assert_eq!(past["data"], json!([]));
    let (_, today) = get(format!("?from={}", chrono::Utc::now().format("%Y-%m-%d"))).await;
    assert_eq!(today["data"].as_array().unwrap().len(), 7);

    // Pages of 3: 3 + 3 + 1, no row twice, newest first throughout.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for want in [3, 3, 1] {
        let (_, page) = get(format!("?limit=3{cursor}")).await;
        let ids: Vec<u64> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids.len(), want, "{page}");
        seen.extend(ids);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => assert_eq!(want, 1),
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seen, sorted);

    for bad in [
        "?limit=0",
        "?limit=5000",
        "?limit=x",
        "?cursor=-1",
        "?from=yesterday",
        "?actr=x",
    ] {
        let (status, err) = get(bad.into()).await;
        assert_eq!(status, 400, "{bad}: {err}");
        assert_eq!(err["error"]["code"], "invalid_request", "{bad}");
    }
    // A virtual key cannot read it.
    let resp = h
        .http
        .get(format!("{}/admin/audit", h.url))
        .bearer_auth(key["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn the_audit_log_cannot_be_edited_or_deleted() {
    let h = Harness::start("").await;
    h.admin(Method::POST, "/admin/teams", Some(json!({"id": "a"})))
        .await;
    // No route edits it.
    for m in [Method::PATCH, Method::DELETE, Method::PUT, Method::POST] {
        let resp = h
            .http
            .request(m.clone(), format!("{}/admin/audit", h.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert!(
            [404, 405].contains(&resp.status().as_u16()),
            "{m} /admin/audit: {}",
            resp.status()
        );
    }
    // And the table itself refuses, whoever asks.
    let db = h.dir.path().join("tollgate.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    for sql in ["UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"] {
        let err = sqlx::query(sql).execute(&pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let store = &h.gw().state.store;
    let rows = store
        .audit(&AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].entry.actor, "admin-key");
}

#[tokio::test]
async fn reload_over_the_api_is_recorded_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let mock = mock_provider::MockProvider::start(Default::default())
        .await
        .unwrap();
    let store = format!("sqlite://{}", dir.path().join("t.db").display());
    let yaml = crate::common::config_yaml(&mock.base_url(), &store, "");
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, &yaml).unwrap();
    let env = |k: &str| std::env::var(k).ok();
    let config = tollgate::config::load_file(&path, &env).unwrap();
    let gw = tollgate::server::start(
        config,
        Some(path.clone()),
        std::sync::Arc::new(tollgate::types::SystemClock),
    )
    .await
    .unwrap();
    let url = format!("http://{}", gw.addr);
    let http = reqwest::Client::new();
    let reload = || async {
        http.post(format!("{url}/admin/reload"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(reload().await, 200);
    std::fs::write(&path, format!("{yaml}\nbogus_key: 1\n")).unwrap();
    assert_eq!(reload().await, 409);
    let log: Value = http
        .get(format!("{url}/admin/audit?action=config.reload"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        rows(&log),
        vec![
            ("config.reload".into(), "config".into(), 409),
            ("config.reload".into(), "config".into(), 200),
        ]
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn tollgate_audit_prints_a_table_or_json() {
    let h = Harness::start("").await;
    h.admin(
        Method::POST,
        "/admin/teams",
        Some(json!({"id": "cli-team"})),
    )
    .await;
    h.admin(
        Method::POST,
        "/admin/keys",
        Some(json!({"team": "cli-team"})),
    )
    .await;
    // The CLI runs as its own process, awaited so this runtime keeps
    // serving the gateway it talks to.
    let url = h.url.clone();
    let run = move |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args(args)
            .args(["--url", &url])
            .env("TOLLGATE_ADMIN_KEY", ADMIN_KEY);
        let shown = format!("{args:?}");
        async move {
            let out = cmd.output().await.unwrap();
            assert!(
                out.status.success(),
                "{shown}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        }
    };
    let table = run(&["audit"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("ACTION"),
        "{table}"
    );
    assert!(
        lines[1].contains("key.create") && lines[1].contains("admin-key"),
        "{table}"
    );
    assert!(
        lines[2].contains("team.create") && lines[2].contains("team:cli-team"),
        "{table}"
    );
    assert!(lines[2].contains(r#"{"id":"cli-team"}"#), "{table}");
    let json: Value = serde_json::from_str(
        &run(&[
            "audit",
            "--action",
            "team.create",
            "--since",
            "1h",
            "--json",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(
        rows(&json),
        vec![("team.create".into(), "team:cli-team".into(), 201)]
    );
    // A CLI mutation goes through the API, so it is recorded too.
    run(&["teams", "create", "from-cli"]).await;
    let json: Value =
        serde_json::from_str(&run(&["audit", "--target", "team:from-cli", "--json"]).await)
            .unwrap();
    assert_eq!(
        rows(&json),
        vec![("team.create".into(), "team:from-cli".into(), 201)]
    );
}

#[tokio::test]
async fn a_change_whose_audit_row_cannot_be_written_is_answered_500() {
    let h = Harness::start("").await;
    let (s, _) = crate::console::login(&h.url).await;
    let csrf = s.csrf().await;
    // Take the table away behind the gateway's back.
    let db = h.dir.path().join("tollgate.db");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("DROP TABLE audit_log")
        .execute(&pool)
        .await
        .unwrap();
    let (status, err) = h
        .admin(
            Method::POST,
            "/admin/teams",
            Some(json!({"id": "unaudited"})),
        )
        .await;
    assert_eq!(status, 500, "{err}");
    assert_eq!(err["error"]["code"], "internal_error");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("the change was made (HTTP 201)")
            && message.contains("audit record could not be written"),
        "{message}"
    );
    // The console says so too.
    let (status, page) = s
        .post(
            "/ui/teams",
            &[("csrf", csrf.as_str()), ("id", "unaudited-ui")],
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    assert!(page.contains("audit record could not be written"), "{page}");
    // Reads are not affected.
    let (status, _) = h.admin(Method::GET, "/admin/teams", None).await;
    assert_eq!(status, 200);
}

/// SIGHUP has no request and no credential: it is recorded as
/// `signal:SIGHUP`, with the outcome.
#[tokio::test]
async fn a_reload_by_sighup_is_recorded() {
    let mock = mock_provider::MockProvider::start(Default::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("t.db").display());
    let yaml = crate::common::config_yaml(&mock.base_url(), &store, "");
    let mut proc = crate::process::spawn(dir.path(), &yaml, "hup.log");
    let http = reqwest::Client::new();
    let audit = || async {
        http.get(format!("{}/admin/audit?actor=signal:SIGHUP", proc.url))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let wait_for = |n: usize| async move {
        for _ in 0..200 {
            let log = audit().await;
            if log["data"].as_array().unwrap().len() >= n {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("no SIGHUP row after 5 s");
    };
    crate::process::signal(&proc.child, "-HUP");
    wait_for(1).await;
    // A broken file: the reload is refused, and that is recorded too.
    std::fs::write(
        dir.path().join("tollgate.yaml"),
        format!("{yaml}\nbogus: 1\n"),
    )
    .unwrap();
    crate::process::signal(&proc.child, "-HUP");
    let log = wait_for(2).await;
    assert_eq!(
        rows(&log),
        vec![
            ("config.reload".into(), "config".into(), 409),
            ("config.reload".into(), "config".into(), 200),
        ]
    );
    assert_eq!(log["data"][0]["source"], "signal");
    crate::process::signal(&proc.child, "-TERM");
    let _ = proc.child.wait();
}

#[tokio::test]
async fn hostile_admin_bodies_are_answered_and_recorded_without_their_bytes() {
    let h = Harness::start("").await;
    // A new connection each time: after the 413 the server closes its
    // connection, and a pooled one could be reused just as it closes.
    let send = |body: Vec<u8>| {
        let h = &h;
        async move {
            reqwest::Client::new()
                .post(format!("{}/admin/teams", h.url))
                .bearer_auth(ADMIN_KEY)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| format!("{e:?}"))
        }
    };
    assert_eq!(send(b"{not json".to_vec()).await, Ok(400));
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    assert_eq!(send(deep.into_bytes()).await, Ok(400));
    // The server may answer 413 and close before the client has sent it all.
    let big = send(vec![b' '; 2 * 1024 * 1024]).await;
    assert!(matches!(big, Ok(413) | Err(_)), "{big:?}");
    assert_eq!(send(br#"{"id": ["wrong type"]}"#.to_vec()).await, Ok(400));
    let (_, log) = h.admin(Method::GET, "/admin/audit", None).await;
    let changes: Vec<&Value> = log["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["change"])
        .collect();
    // The 2 MiB body was refused before any handler: nothing changed, no row.
    assert_eq!(
        changes,
        vec![
            &json!({"id": ["wrong type"]}),
            &json!({"unparsed_body_bytes": 10_000}),
            &json!({"unparsed_body_bytes": 9}),
        ]
    );
    assert_eq!(rows(&log)[0], ("team.create".into(), "team:".into(), 400));
    // Still serving.
    let (status, _) = h
        .admin(Method::POST, "/admin/teams", Some(json!({"id": "fine"})))
        .await;
    assert_eq!(status, 201);
}
