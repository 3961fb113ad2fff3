//! The SPEC fixtures load as they stand; problems come in file order with their lines.

use super::*;

#[test]
fn spec_full_example_loads_as_it_stands() {
    let config = load_str(SPEC_FULL, "spec.yaml", &spec_env).unwrap();
    assert_eq!(config.listen.to_string(), "127.0.0.1:4000");
    assert_eq!(config.admin_key.as_ref().unwrap().expose(), "admin-secret");
    assert_eq!(config.store.expose(), "sqlite://tollgate.db");
    assert_eq!(config.counters, CountersConfig::Memory);
    let openai = config.provider("openai").unwrap();
    assert_eq!(openai.kind, ProviderKind::OpenAi);
    assert_eq!(openai.base_url, "https://api.openai.com/v1");
    assert_eq!(
        openai.api_key.as_ref().unwrap().expose(),
        "sk-live-0123456789"
    );
    assert_eq!(openai.timeout, Duration::from_secs(600));
    let mini = config.model("gpt-4o-mini").unwrap();
    assert_eq!(mini.targets[0].provider, "openai");
    assert_eq!(mini.price.input_per_mtok, usd(0.15));
    assert_eq!(mini.price.output_per_mtok, usd(0.60));
    assert_eq!(mini.max_output_tokens, 16384);
    assert_eq!(
        config.policy("daily-budget-cap").unwrap().kind,
        PolicyKind::CostLimit(CostLimit {
            limit: usd(50.0),
            period: Period::Daily,
            action: CostAction::Reject,
            on_insufficient: OnInsufficient::Reject,
        })
    );
    assert_eq!(
        config.policy("team-rate").unwrap().kind,
        PolicyKind::RateLimit(RateLimit {
            requests_per_minute: Some(600),
            tokens_per_minute: Some(200_000),
            max_parallel: Some(32),
        })
    );
    assert_eq!(
        config.policy("loop-guard").unwrap().kind,
        PolicyKind::LoopGuard(LoopGuard {
            max_identical: 20,
            window: Duration::from_secs(60),
            on_trip: OnTrip::Throttle,
        })
    );
    assert_eq!(
        config.policy("cheap-models-only").unwrap().kind,
        PolicyKind::ModelAccess(ModelAccess {
            allow: vec!["gpt-4o-mini".into(), "claude-3-5-haiku*".into()],
        })
    );
    assert!(
        config
            .policies
            .iter()
            .all(|p| p.mode == PolicyMode::Enforce)
    );
    let search = config.team("search").unwrap();
    assert_eq!(search.policies, ["daily-budget-cap", "team-rate"]);
    assert_eq!(config.defaults.policies, ["loop-guard"]);
    let alerts = config.alerts.as_ref().unwrap();
    assert_eq!(alerts.webhook_url, "http://127.0.0.1:9000/hook");
    assert_eq!(alerts.thresholds, [0.5, 0.8, 1.0]);
}

#[test]
fn spec_daily_budget_cap_block_loads_as_it_stands() {
    let config = load_str(SPEC_DAILY_BUDGET_CAP, "cap.yaml", &no_env).unwrap();
    let policy = config.policy("daily-budget-cap").unwrap();
    assert_eq!(policy.mode, PolicyMode::Enforce);
    let PolicyKind::CostLimit(limit) = &policy.kind else {
        panic!("not a cost limit: {policy:?}");
    };
    assert_eq!(limit.limit, usd(50.0));
    assert_eq!(limit.period, Period::Daily);
    assert_eq!(limit.action, CostAction::Reject);
    // Everything else takes its documented default.
    assert_eq!(config.listen.to_string(), "127.0.0.1:4000");
    assert_eq!(config.store.expose(), "sqlite://tollgate.db");
    assert_eq!(config.counters, CountersConfig::Memory);
    assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert!(config.admin_key.is_none());
}

#[test]
fn bad_period_names_the_path_value_and_line() {
    let text = "policies:\n  - name: a\n    type: cost-limit\n    config:\n      limit_usd: 5\n      period: dayly\n";
    assert_problem(
        text,
        "6: policies[0].config.period: `dayly` is not one of hourly, daily, weekly, monthly, total",
    );
}

#[test]
fn unknown_key_is_an_error_with_its_line() {
    let text = "listen: 127.0.0.1:4000\npolicies:\n  - name: a\n    type: cost-limit\n    config: { limit_usd: 5, period: daily, limt_usd: 1 }\n";
    let found = problems(text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("5: "), "{found:?}");
    assert!(found[0].contains("`limt_usd`"), "{found:?}");
}

#[test]
fn every_problem_is_reported_in_file_order() {
    let text = "listen: nowhere
counters: memcached
policies:
  - name: cap
    type: cost-limit
    config: { limit_usd: -5, period: dayly }
teams:
  - id: search
    policies: [cap, nope]
";
    let found = problems(text);
    assert_eq!(
        found,
        [
            "1: listen: `nowhere` is not an IP address and port like `127.0.0.1:4000`",
            "2: counters: `memcached` is neither `memory` nor a `redis://host:port` URL",
            "6: policies[0].config.limit_usd: `-5` is negative; a cost limit is 0 or more USD",
            "6: policies[0].config.period: `dayly` is not one of hourly, daily, weekly, monthly, total",
            "9: teams[0].policies[1]: `nope` is not a policy in `policies` (known: cap)",
        ]
    );
    let errors = load_str(text, "conf/t.yaml", &no_env).unwrap_err();
    let display = errors.to_string();
    assert!(
        display.starts_with("conf/t.yaml:1: listen: `nowhere`"),
        "{display}"
    );
    assert_eq!(display.lines().count(), 5, "{display}");
}

#[test]
fn duplicate_names_point_at_the_repeat_and_the_first() {
    let text = with_providers(
        "  - name: openai
    kind: anthropic
models:
  - name: m
    targets: [{ provider: local, model: x }]
    price: { input_per_mtok: 0, output_per_mtok: 0 }
  - name: m
    targets: [{ provider: local, model: y }]
    price: { input_per_mtok: 0, output_per_mtok: 0 }
policies:
  - { name: p, type: rate-limit, config: { max_parallel: 1 } }
  - { name: p, type: rate-limit, config: { max_parallel: 2 } }
teams:
  - id: t
  - id: t
",
    );
    let found = problems(&text);
    assert_eq!(
        found,
        [
            "7: providers[2].name: `openai` is already defined by providers[0].name (line 2)",
            "13: models[1].name: `m` is already defined by models[0].name (line 10)",
            "18: policies[1].name: `p` is already defined by policies[0].name (line 17)",
            "21: teams[1].id: `t` is already defined by teams[0].id (line 20)",
        ]
    );
}

#[test]
fn references_to_unknown_policies_and_providers_are_errors() {
    let text = with_providers(
        "models:
  - name: gpt-4o-mini
    targets:
      - provider: opnai
policies:
  - { name: rate, type: rate-limit, config: { requests_per_minute: 10 } }
teams:
  - id: search
    policies: [rate, budget]
defaults:
  policies: [loop]
",
    );
    let found = problems(&text);
    assert_eq!(
        found,
        [
            "10: models[0].targets[0].provider: `opnai` is not a provider in `providers` (known: openai, local)",
            "15: teams[0].policies[1]: `budget` is not a policy in `policies` (known: rate)",
            "17: defaults.policies[0]: `loop` is not a policy in `policies` (known: rate)",
        ]
    );
}
