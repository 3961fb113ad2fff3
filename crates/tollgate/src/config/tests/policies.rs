//! Policy values, reserved names, config keys, defaults and alert thresholds.

use super::*;

#[test]
fn policy_values_are_checked() {
    let text = "policies:
  - name: cap
    type: cost-limit
    config: { limit_usd: 10, period: weekly, action: warn }
  - name: rate
    type: rate-limit
    config: {}
  - name: loops
    type: loop-guard
    config: { max_identical: 0 }
  - name: what
    type: budget
    config: { limit_usd: 1 }
  - name: dry
    type: model-access
    mode: dry-run
    config: { allow: [] }
  - name: bare
    type: cost-limit
";
    assert_eq!(
        problems(text),
        [
            "4: policies[0].config.action: `warn` is not one of reject, alert",
            "7: policies[1].config: a `rate-limit` policy needs at least one of requests_per_minute, tokens_per_minute, max_parallel",
            "10: policies[2].config.max_identical: `0` is below the minimum of 1",
            "12: policies[3].type: `budget` is not one of cost-limit, rate-limit, loop-guard, model-access",
            "16: policies[4].mode: `dry-run` is not one of enforce, shadow",
            "18: policies[5]: missing `config`",
        ]
    );
}

#[test]
fn implicit_policy_names_are_reserved() {
    let text = "policies:
  - name: team-budget
    type: cost-limit
    config: { limit_usd: 10, period: daily }
  - name: ok
    type: rate-limit
    config: { requests_per_minute: 5 }
  - name: key-rate
    type: rate-limit
    config: { requests_per_minute: 5 }
  - { name: key-budget, type: cost-limit, config: { limit_usd: 1, period: daily } }
  - { name: team-models, type: model-access, config: { allow: ['*'] } }
  - { name: key-models, type: model-access, config: { allow: ['*'] } }
";
    let reserved = "is reserved for a policy the gateway makes itself (reserved: team-budget, key-budget, \
                    key-rate, team-models, key-models); choose another name";
    assert_eq!(
        problems(text),
        [
            format!("2: policies[0].name: `team-budget` {reserved}"),
            format!("8: policies[2].name: `key-rate` {reserved}"),
            format!("11: policies[3].name: `key-budget` {reserved}"),
            format!("12: policies[4].name: `team-models` {reserved}"),
            format!("13: policies[5].name: `key-models` {reserved}"),
        ]
    );
}

#[test]
fn policy_config_keys_belong_to_its_type() {
    let text = "policies:
  - name: cap
    type: cost-limit
    config:
      limit_usd: 10
      period: daily
      requests_per_minute: 5
  - name: access
    type: model-access
    config: { allow: ['gpt-*'], max_identical: 3 }
";
    assert_eq!(
        problems(text),
        [
            "7: policies[0].config.requests_per_minute: not a setting of a `cost-limit` policy (its settings: limit_usd, period, action, on_insufficient)",
            "10: policies[1].config.max_identical: not a setting of a `model-access` policy (its settings: allow)",
        ]
    );
}

#[test]
fn policy_options_and_defaults() {
    let text = "policies:
  - name: cap
    type: cost-limit
    mode: shadow
    config: { limit_usd: 0.5, period: monthly, action: alert, on_insufficient: clamp }
  - name: total
    type: cost-limit
    config: { limit_usd: 0, period: total }
  - name: loops
    type: loop-guard
    config: { max_identical: 3, window_seconds: 10, on_trip: suspend }
  - name: loops-default
    type: loop-guard
    config: { max_identical: 3 }
  - name: tpm
    type: rate-limit
    config: { tokens_per_minute: 1000 }
";
    let config = load_str(text, "t.yaml", &no_env).unwrap();
    let cap = config.policy("cap").unwrap();
    assert_eq!(cap.mode, PolicyMode::Shadow);
    assert_eq!(
        cap.kind,
        PolicyKind::CostLimit(CostLimit {
            limit: usd(0.5),
            period: Period::Monthly,
            action: CostAction::Alert,
            on_insufficient: OnInsufficient::Clamp,
        })
    );
    let PolicyKind::CostLimit(total) = &config.policy("total").unwrap().kind else {
        panic!("not a cost limit");
    };
    assert_eq!((total.limit, total.period), (NanoUsd::ZERO, Period::Total));
    assert_eq!(
        config.policy("loops").unwrap().kind,
        PolicyKind::LoopGuard(LoopGuard {
            max_identical: 3,
            window: Duration::from_secs(10),
            on_trip: OnTrip::Suspend,
        })
    );
    let PolicyKind::LoopGuard(guard) = &config.policy("loops-default").unwrap().kind else {
        panic!("not a loop guard");
    };
    assert_eq!(
        (guard.window, guard.on_trip),
        (Duration::from_secs(60), OnTrip::Throttle)
    );
    assert_eq!(
        config.policy("tpm").unwrap().kind,
        PolicyKind::RateLimit(RateLimit {
            requests_per_minute: None,
            tokens_per_minute: Some(1000),
            max_parallel: None,
        })
    );
}

#[test]
fn alert_thresholds_are_fractions_of_the_limit() {
    assert_eq!(
        problems("alerts:\n  webhook_url: http://127.0.0.1:9/h\n  thresholds: [0, 0.5, 1.5, 80]\n"),
        [
            "3: alerts.thresholds[0]: `0` is not a fraction of the limit in (0, 1], e.g. `0.8` for 80%",
            "3: alerts.thresholds[2]: `1.5` is not a fraction of the limit in (0, 1], e.g. `0.8` for 80%",
            "3: alerts.thresholds[3]: `80` is not a fraction of the limit in (0, 1], e.g. `0.8` for 80%",
        ]
    );
    assert_problem(
        "alerts:\n  thresholds: [0.5]\n",
        "2: alerts: missing `webhook_url`",
    );
    let config = load_str(
        "alerts:\n  webhook_url: https://hooks.example.com/x\n",
        "t.yaml",
        &no_env,
    )
    .unwrap();
    assert_eq!(config.alerts.unwrap().thresholds, [0.5, 0.8, 1.0]);
}
