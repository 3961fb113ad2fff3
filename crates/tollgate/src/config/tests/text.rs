//! Interpolation, secrets kept out of errors, YAML error messages and text values.

use super::*;

#[test]
fn environment_variables_fill_strings_and_numbers() {
    let text = "admin_key: ${ADMIN}
store: sqlite://${DATA_DIR}/tollgate.db
policies:
  - name: cap
    type: cost-limit
    config: { limit_usd: '${BUDGET}', period: daily }
";
    let env = |name: &str| match name {
        "ADMIN" => Some("adm".to_owned()),
        "DATA_DIR" => Some("/var/lib/tollgate".to_owned()),
        "BUDGET" => Some("12.5".to_owned()),
        _ => None,
    };
    let config = load_str(text, "t.yaml", &env).unwrap();
    assert_eq!(config.admin_key.unwrap().expose(), "adm");
    assert_eq!(
        config.store.expose(),
        "sqlite:///var/lib/tollgate/tollgate.db"
    );
    let PolicyKind::CostLimit(cap) = &config.policies[0].kind else {
        panic!("not a cost limit");
    };
    assert_eq!(cap.limit, usd(12.5));

    assert_eq!(
        problems(text),
        [
            "1: admin_key: environment variable `ADMIN` is not set (set it, or write `${ADMIN:-default}` for a fallback)",
            "2: store: environment variable `DATA_DIR` is not set (set it, or write `${DATA_DIR:-default}` for a fallback)",
            "6: policies[0].config.limit_usd: environment variable `BUDGET` is not set (set it, or write `${BUDGET:-default}` for a fallback)",
        ]
    );
    // An empty admin key means "none": the gateway generates one.
    let config = load_str("admin_key: ${TOLLGATE_ADMIN_KEY:-}\n", "t.yaml", &no_env).unwrap();
    assert!(config.admin_key.is_none());
}

#[test]
fn provider_keys_never_appear_in_errors() {
    let secret = "sk-live-0123456789";
    let env = |name: &str| (name == "KEY").then(|| secret.to_owned());
    let texts = [
        // A semantic problem on the provider that holds the key.
        format!("providers:\n  - name: a\n    kind: nope\n    api_key: {secret}\n"),
        "providers:\n  - name: a\n    kind: nope\n    api_key: ${KEY}\n".to_owned(),
        // The key where a list is expected, and a syntax error right after it.
        format!("providers:\n  - name: a\n    api_key: [{secret}\n"),
        format!("providers:\n  - name: a\n    api_key: \"{secret}\n"),
        format!("providers:\n  - name: a\n    api_key: {{ {secret}: 1 }}\n"),
        format!("providers:\n  - name: a\n    api_key: {secret}\n    api_key: {secret}\n"),
    ];
    for text in &texts {
        let errors = load_str(text, "t.yaml", &env).unwrap_err();
        let shown = errors.to_string();
        assert!(!shown.contains(secret), "{text}\n=> {shown}");
        assert!(
            !format!("{errors:?}").contains(secret),
            "{text}\n=> {errors:?}"
        );
    }
    let config = load_str(&texts[1].replace("nope", "openai"), "t.yaml", &env).unwrap();
    assert!(
        !format!("{config:?}").contains(secret),
        "Debug of Config shows the key"
    );
}

#[test]
fn yaml_errors_have_lines_and_say_what_is_wrong() {
    let found = problems("listen: 127.0.0.1:4000\nproviders: 5\n");
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("2: "), "{found:?}");
    let found = problems("teams:\n  - id: a\n    polices: [x]\n");
    assert!(
        found[0].starts_with("3: ") && found[0].contains("`polices`"),
        "{found:?}"
    );
    let found = problems("listen: 1\nlisten: 2\n");
    assert!(
        found[0].starts_with("2: ") && found[0].contains("listen"),
        "{found:?}"
    );
}

#[test]
fn yaml_error_messages_name_the_key_path() {
    assert_eq!(
        problems("listen: 127.0.0.1:4000\nproviders: 5\n"),
        ["2: providers: expected a list (`- item` lines or `[a, b]`)"]
    );
    assert_eq!(
        problems("providers:\n  - name: a\n    knd: openai\n"),
        [
            "3: providers[0]: unknown key `knd`; expected one of name, kind, base_url, api_key, timeout_s, api_version, project, region, credentials_file, aws_access_key_id, aws_secret_access_key, aws_session_token, entra"
        ]
    );
    assert_eq!(
        problems("policies:\n  - name: a\n    config: { limit_usd: 1, limt: 2 }\n"),
        [
            "3: policies[0].config: unknown key `limt`; expected one of limit_usd, period, action, on_insufficient, requests_per_minute, tokens_per_minute, max_parallel, max_identical, window_seconds, on_trip, allow"
        ]
    );
    assert_eq!(
        problems("lsiten: 127.0.0.1:4000\n"),
        [
            "1: unknown top-level key `lsiten`; expected one of listen, admin_listen, admin_key, store, counters, counters_unavailable, max_body_bytes, log_bodies, drain_timeout_s, busy_poll_us, journal_dir, providers, models, policies, teams, defaults, alerts, routing, telemetry, cache"
        ]
    );
    assert_eq!(
        problems("listen: 1\nlisten: 2\n"),
        ["2: `listen` is set twice"]
    );
    assert_eq!(
        problems("teams:\n  - id: a\n    policies: x\n"),
        ["3: teams[0].policies: expected a list (`- item` lines or `[a, b]`)"]
    );
}

#[test]
fn plain_numbers_and_booleans_read_as_strings_where_text_is_expected() {
    let text =
        "providers:\n  - { name: 2024, kind: openai, api_key: 123456789 }\nteams:\n  - id: 42\n";
    match load_str(text, "t.yaml", &no_env) {
        Ok(config) => {
            assert_eq!(config.providers[0].name, "2024");
            assert_eq!(
                config.providers[0].api_key.as_ref().unwrap().expose(),
                "123456789"
            );
            assert_eq!(config.teams[0].id, "42");
        }
        Err(errors) => {
            // If the YAML reader insists on strings, the key must still not leak.
            assert!(!errors.to_string().contains("123456789"), "{errors}");
            panic!("numbers should be accepted as names: {errors}");
        }
    }
}

#[test]
fn scrubbing_masks_api_key_values_in_any_style() {
    let text = "providers:\n  - { name: a, api_key: 'sk-flow-1234', kind: x }\n  - name: b\n    \"api_key\": sk-block-5678 # comment\n";
    let message = "near sk-flow-1234 and sk-block-5678".to_owned();
    assert_eq!(scrub_secrets(text, message), "near ***** and *****");
}

#[test]
fn interpolated_names_can_be_referenced() {
    let text = "providers:
  - { name: '${UPSTREAM}', kind: mock }
models:
  - name: m
    targets: [{ provider: local }]
    price: { input_per_mtok: 1, output_per_mtok: 1 }
policies:
  - { name: '${TEAM}-rate', type: rate-limit, config: { max_parallel: 2 } }
teams:
  - { id: '${TEAM}', policies: [search-rate] }
";
    let env = |name: &str| match name {
        "UPSTREAM" => Some("local".to_owned()),
        "TEAM" => Some("search".to_owned()),
        _ => None,
    };
    let config = load_str(text, "t.yaml", &env).unwrap();
    assert_eq!(config.team("search").unwrap().policies, ["search-rate"]);
    assert_eq!(config.models[0].targets[0].provider, "local");
}

#[test]
fn values_with_newlines_stay_on_one_line() {
    let found = problems("listen: \"a\\nb\"\n");
    assert_eq!(
        found,
        ["1: listen: `a\\nb` is not an IP address and port like `127.0.0.1:4000`"]
    );
}

#[test]
fn every_unknown_key_is_reported_at_once() {
    let text = "lsiten: 127.0.0.1:4000
providers:
  - { name: a, kind: mock, timeout: 5 }
models:
  - name: m
    targets: [{ provider: a, modle: x }]
    price: { input: 1, output_per_mtok: 1 }
policies:
  - name: p
    type: cost-limit
    config: { limit_usd: 1, period: daily, actoin: alert }
teams:
  - id: t
    budget_usd: 5
defaults: { polices: [p] }
alerts: { webhook: 'http://x' }
";
    assert_eq!(
        problems(text),
        [
            "1: unknown top-level key `lsiten`; expected one of listen, admin_listen, admin_key, store, counters, counters_unavailable, max_body_bytes, log_bodies, drain_timeout_s, busy_poll_us, journal_dir, providers, models, policies, teams, defaults, alerts, routing, telemetry, cache",
            "3: providers[0]: unknown key `timeout`; expected one of name, kind, base_url, api_key, timeout_s, api_version, project, region, credentials_file, aws_access_key_id, aws_secret_access_key, aws_session_token, entra",
            "6: models[0].targets[0]: unknown key `modle`; expected one of provider, model, weight",
            "7: models[0].price: unknown key `input`; expected one of input_per_mtok, output_per_mtok, cached_input_per_mtok, cache_write_per_mtok, cache_write_1h_per_mtok",
            "11: policies[0].config: unknown key `actoin`; expected one of limit_usd, period, action, on_insufficient, requests_per_minute, tokens_per_minute, max_parallel, max_identical, window_seconds, on_trip, allow",
            "14: teams[0]: unknown key `budget_usd`; expected one of id, policies, models, cache",
            "15: defaults: unknown key `polices`; expected one of policies",
            "16: alerts: unknown key `webhook`; expected one of webhook_url, thresholds, format",
        ]
    );
    // A shape error next to an unknown key: both are reported.
    assert_eq!(
        problems("providers: 5\nlisten_addr: x\n"),
        [
            "1: providers: expected a list (`- item` lines or `[a, b]`)",
            "2: unknown top-level key `listen_addr`; expected one of listen, admin_listen, admin_key, store, counters, counters_unavailable, max_body_bytes, log_bodies, drain_timeout_s, busy_poll_us, journal_dir, providers, models, policies, teams, defaults, alerts, routing, telemetry, cache",
        ]
    );
}
