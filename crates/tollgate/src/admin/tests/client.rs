//! The CLI's client commands against the admin API bound on 127.0.0.1:0.

use super::*;

#[tokio::test]
async fn cli_commands_drive_a_running_admin_api() {
    let h = harness().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = super::super::router().with_state(h.state.clone());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let admin = || Some(Secret::new(ADMIN.to_owned()));
    let run = |args: &'static [&'static str]| {
        let url = url.clone();
        async move {
            let mut argv = vec!["tollgate"];
            argv.extend_from_slice(args);
            let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(argv).unwrap();
            let mut out = Vec::new();
            let res = crate::cli::run_client(cli.command, &url, admin(), &mut out).await;
            res.map(|()| String::from_utf8(out).unwrap())
        }
    };

    let out = run(&[
        "teams",
        "create",
        "ml",
        "--budget-usd",
        "25",
        "--period",
        "daily",
    ])
    .await
    .unwrap();
    assert!(out.starts_with("created team ml"), "{out}");
    let out = run(&["teams", "list"]).await.unwrap();
    assert!(out.lines().next().unwrap().starts_with("ID"), "{out}");
    assert!(
        out.contains("search") && out.contains("config") && out.contains("$25 daily"),
        "{out}"
    );

    let out = run(&[
        "keys",
        "create",
        "--team",
        "ml",
        "--name",
        "bot",
        "--models",
        "a,b",
        "--expires",
        "30d",
    ])
    .await
    .unwrap();
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with("sk-tg-") && !first.contains(' '),
        "the key alone on the first line: {out}"
    );
    assert!(out.contains("a,b"), "{out}");
    let rec = h.keys().await.remove(0);
    assert_eq!(rec.models, Some(vec!["a".to_owned(), "b".to_owned()]));
    let lifetime = rec.expires_at.unwrap() - Utc::now();
    assert!(
        (Duration::days(30) - lifetime).num_seconds().abs() < 60,
        "{lifetime}"
    );
    assert!(
        h.state
            .keys
            .authenticate(&key_headers(first), Utc::now())
            .await
            .is_ok()
    );

    let out = run(&["keys", "list", "--json"]).await.unwrap();
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["data"][0]["name"], "bot");

    let err = run(&["keys", "create", "--team", "nope"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no team `nope`"), "{err}");
    assert!(matches!(err, crate::cli::CliError::Api { status: 404, .. }));

    let mut row = ledger_row("ml", "gpt-4o", Utc::now(), 0.25);
    row.would_reject = vec![
        "trial:budget_exceeded".into(),
        "narrow:model_not_allowed".into(),
    ];
    h.ledger(&[row]).await;
    let out = run(&["spend", "--by", "team", "--since", "1d"])
        .await
        .unwrap();
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("TEAM"), "{out}");
    assert!(lines.next().unwrap().contains("0.250000"), "{out}");
    let out = run(&["requests", "--team", "ml"]).await.unwrap();
    assert!(
        out.lines().next().unwrap().ends_with("WOULD_REJECT"),
        "{out}"
    );
    let row = out.lines().nth(1).unwrap();
    assert!(row.contains("gpt-4o"), "{out}");
    assert!(
        row.contains("trial:budget_exceeded,narrow:model_not_allowed"),
        "{out}"
    );
    let out = run(&["budgets", "--team", "ml"]).await.unwrap();
    let row = out.lines().nth(1).unwrap();
    assert!(
        row.starts_with("team") && row.contains("25.000000"),
        "{out}"
    );
    server.abort();

    let unreachable = crate::cli::run_client(
        <crate::cli::Cli as clap::Parser>::try_parse_from(["tollgate", "teams", "list"])
            .unwrap()
            .command,
        "http://127.0.0.1:1",
        admin(),
        &mut Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(
        unreachable.to_string().contains("cannot reach tollgate"),
        "{unreachable}"
    );
}
