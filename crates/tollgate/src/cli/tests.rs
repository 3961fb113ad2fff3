//! Parsing every command and building its API request, without a server.

use super::*;
use chrono::TimeZone;
use serde_json::json;

use crate::server::{LogFormat, ServeOptions};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("tollgate").chain(args.iter().copied()))
}

fn command(args: &[&str]) -> Command {
    parse(args).unwrap().command
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
    assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
    assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
    assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    for bad in [
        "",
        "30",
        "d",
        "1.5h",
        "-1d",
        "10y",
        "1h30m",
        "99999999999999999999d",
    ] {
        let err = parse_duration(bad).unwrap_err();
        assert!(err.contains("`30d`"), "{bad}: {err}");
    }
}

#[test]
fn serve_and_config_check() {
    let Command::Serve(args) = command(&["serve"]) else {
        panic!("serve")
    };
    assert_eq!(ServeOptions::from(args).log_format, LogFormat::Text);
    let Command::Serve(args) = command(&["serve", "--config", "t.yaml", "--log-format", "json"])
    else {
        panic!("serve")
    };
    let opts = ServeOptions::from(args);
    assert_eq!(
        (opts.config, opts.log_format),
        (Some(PathBuf::from("t.yaml")), LogFormat::Json)
    );
    assert!(parse(&["serve", "--log-format", "xml"]).is_err());
    let Command::Config(ConfigCommand::Check { file }) = command(&["config", "check", "x.yaml"])
    else {
        panic!("config check")
    };
    assert_eq!(file, PathBuf::from("x.yaml"));
    assert!(parse(&["config", "check"]).is_err());
}

#[test]
fn global_url_and_admin_key() {
    let cli = parse(&["teams", "list"]).unwrap();
    assert_eq!(cli.url, "http://127.0.0.1:4000");
    let cli = parse(&[
        "keys",
        "list",
        "--url",
        "http://gw:4000",
        "--admin-key",
        "adm",
    ])
    .unwrap();
    assert_eq!(cli.url, "http://gw:4000");
    assert_eq!(cli.admin_key.unwrap().expose(), "adm");
    let cli = parse(&["--url", "http://a:1", "spend"]).unwrap();
    assert_eq!(cli.url, "http://a:1");
    assert!(
        !format!("{:?}", parse(&["--admin-key", "hunter2", "spend"]).unwrap()).contains("hunter2")
    );
}

#[test]
fn keys_create_builds_the_api_body() {
    let args = [
        "keys",
        "create",
        "--team",
        "search",
        "--name",
        "bot",
        "--models",
        "gpt-4o,claude-*",
        "--budget-usd",
        "12.5",
        "--period",
        "weekly",
        "--rpm",
        "60",
        "--tpm",
        "1000",
        "--expires",
        "30d",
    ];
    let Command::Keys(KeysCommand::Create(a)) = command(&args) else {
        panic!("keys create")
    };
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    let body = create_key_body(&a, now).unwrap();
    assert_eq!(
        body,
        json!({
            "team": "search", "name": "bot", "models": ["gpt-4o", "claude-*"], "budget_usd": 12.5,
            "period": "weekly", "requests_per_minute": 60, "tokens_per_minute": 1000,
            "expires_at": "2026-12-27T12:00:00Z"
        })
    );
    let Command::Keys(KeysCommand::Create(a)) = command(&["keys", "create", "--team", "t"]) else {
        panic!("keys create")
    };
    assert_eq!(create_key_body(&a, now).unwrap(), json!({"team": "t"}));
    assert!(parse(&["keys", "create"]).is_err(), "--team is required");
    assert!(
        parse(&["keys", "create", "--team", "t", "--budget-usd", "5"]).is_err(),
        "budget needs period"
    );
    assert!(
        parse(&["keys", "create", "--team", "t", "--period", "daily"]).is_err(),
        "period needs budget"
    );
    let err = parse(&[
        "keys",
        "create",
        "--team",
        "t",
        "--budget-usd",
        "5",
        "--period",
        "dayly",
    ])
    .unwrap_err();
    assert!(err.to_string().contains("hourly, daily"), "{err}");
    assert!(parse(&["keys", "create", "--team", "t", "--expires", "soon"]).is_err());
}

#[test]
fn keys_list_revoke_rotate_restore() {
    let Command::Keys(KeysCommand::List { team, json }) =
        command(&["keys", "list", "--team", "a", "--json"])
    else {
        panic!("keys list")
    };
    assert_eq!((team.as_deref(), json), (Some("a"), true));
    let Command::Keys(KeysCommand::Revoke { id, .. }) = command(&["keys", "revoke", "abc"]) else {
        panic!("revoke")
    };
    assert_eq!(id, "abc");
    assert!(parse(&["keys", "revoke"]).is_err());
    let Command::Keys(KeysCommand::Rotate { id, grace, .. }) =
        command(&["keys", "rotate", "abc", "--grace", "1h"])
    else {
        panic!("rotate")
    };
    assert_eq!((id.as_str(), grace), ("abc", Duration::from_secs(3600)));
    let Command::Keys(KeysCommand::Rotate { grace, .. }) = command(&["keys", "rotate", "abc"])
    else {
        panic!("rotate")
    };
    assert_eq!(grace, Duration::ZERO);
    assert!(matches!(
        command(&["keys", "restore", "abc"]),
        Command::Keys(KeysCommand::Restore { .. })
    ));
}

#[test]
fn teams_and_spend() {
    assert!(matches!(
        command(&["teams", "list", "--json"]),
        Command::Teams(TeamsCommand::List { json: true })
    ));
    let Command::Teams(TeamsCommand::Create(a)) = command(&[
        "teams",
        "create",
        "ml",
        "--budget-usd",
        "100",
        "--period",
        "monthly",
    ]) else {
        panic!("teams create")
    };
    assert_eq!(
        (a.id.as_str(), a.budget_usd, a.period),
        ("ml", Some(100.0), Some(Period::Monthly))
    );
    assert!(parse(&["teams", "create"]).is_err());

    let Command::Spend(a) = command(&[
        "spend", "--by", "model", "--team", "ml", "--since", "7d", "--json",
    ]) else {
        panic!("spend")
    };
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    let q = spend_query(&a, now).unwrap();
    assert_eq!(
        q,
        vec![
            ("group_by", "model".to_owned()),
            ("team", "ml".to_owned()),
            ("from", "2026-11-20T12:00:00Z".to_owned())
        ]
    );
    assert!(a.json);
    assert!(parse(&["spend", "--by", "week"]).is_err());
}

#[test]
fn budgets_and_requests() {
    let Command::Budgets { team, json } = command(&["budgets", "--team", "ml", "--json"]) else {
        panic!("budgets")
    };
    assert_eq!((team.as_deref(), json), (Some("ml"), true));
    let Command::Requests {
        team,
        key,
        limit,
        json,
    } = command(&["requests", "--key", "abc"])
    else {
        panic!("requests")
    };
    assert_eq!(
        (team, key.as_deref(), limit, json),
        (None, Some("abc"), 20, false)
    );
    assert!(parse(&["requests", "--limit", "many"]).is_err());
}

#[test]
fn tables_align_columns() {
    let t = table(
        &["A", "LONGER"],
        vec![
            vec!["xyz".into(), "1".into()],
            vec!["q".into(), "22".into()],
        ],
    );
    assert_eq!(t, "A    LONGER\nxyz  1\nq    22\n");
}

#[test]
fn client_needs_an_admin_key_and_a_url() {
    assert!(matches!(
        Client::new("http://127.0.0.1:4000", None),
        Err(CliError::NoAdminKey)
    ));
    let key = || Some(Secret::new("k".to_owned()));
    assert!(matches!(
        Client::new("not a url", key()),
        Err(CliError::BadUrl(_))
    ));
    assert!(matches!(
        Client::new("ftp://x", key()),
        Err(CliError::BadUrl(_))
    ));
    assert!(Client::new("http://127.0.0.1:4000/", key()).is_ok());
}
