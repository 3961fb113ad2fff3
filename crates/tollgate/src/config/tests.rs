//! Loading and validation tests: the SPEC fixtures, every check with its
//! line, interpolation, the embedded default, and arbitrary input.

use std::time::Duration;

use super::*;
use crate::types::{NanoUsd, Period};

const SPEC_FULL: &str = include_str!("fixtures/spec_full.yaml");
const SPEC_DAILY_BUDGET_CAP: &str = include_str!("fixtures/spec_daily_budget_cap.yaml");

fn spec_env(name: &str) -> Option<String> {
    match name {
        "TOLLGATE_ADMIN_KEY" => Some("admin-secret".into()),
        "OPENAI_API_KEY" => Some("sk-live-0123456789".into()),
        _ => None,
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn usd(x: f64) -> NanoUsd {
    NanoUsd::from_usd(x).unwrap()
}

/// Loads `text` and returns its problems as `LINE: message` strings.
fn problems(text: &str) -> Vec<String> {
    let errors = load_str(text, "t.yaml", &spec_env).expect_err("config should be invalid");
    assert_eq!(errors.origin, "t.yaml");
    errors
        .problems
        .iter()
        .map(|p| match p.line {
            Some(line) => format!("{line}: {}", p.message),
            None => format!("-: {}", p.message),
        })
        .collect()
}

fn assert_problem(text: &str, expected: &str) {
    let found = problems(text);
    assert!(
        found.iter().any(|p| p == expected),
        "expected problem\n  {expected}\nfound\n  {}",
        found.join("\n  ")
    );
}

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
