//! Loading and validation tests: the SPEC fixtures, every check with its
//! line, interpolation, the embedded default, and arbitrary input.

use std::time::Duration;

use super::*;
use crate::types::{NanoUsd, Period, Price};

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

/// Two providers, referenced by the model tests below.
const PROVIDERS: &str = "providers:
  - name: openai
    kind: openai
    api_key: ${OPENAI_API_KEY}
  - name: local
    kind: mock
";

fn with_providers(rest: &str) -> String {
    format!("{PROVIDERS}{rest}")
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

#[test]
fn a_model_without_any_price_is_an_error() {
    let text = with_providers(
        "models:
  - name: house-model
    targets:
      - provider: local
        model: llama-3-70b
",
    );
    let found = problems(&text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "8: models[0]: no price for model `house-model`: the built-in price table has no `llama-3-70b` of provider `local`"
        ),
        "{found:?}"
    );
    assert!(found[0].contains("input_per_mtok"), "{found:?}");
}

#[test]
fn prices_come_from_the_file_or_the_built_in_table() {
    let text = with_providers(
        "models:
  - name: free-local
    targets: [{ provider: local, model: llama }]
    price: { input_per_mtok: 0, output_per_mtok: 0 }
  - name: gpt-4o-mini
    targets: [{ provider: openai }]
  - name: smart
    targets:
      - { provider: openai, model: gpt-4o-mini }
      - { provider: openai, model: gpt-4.1 }
  - name: capped
    targets: [{ provider: local, model: llama }]
    price: { input_per_mtok: 1, output_per_mtok: 2.5, cached_input_per_mtok: 0.5 }
    max_output_tokens: 1000
  - name: house-claude
    targets: [{ provider: local, model: claude-custom }]
    price: { input_per_mtok: 2, output_per_mtok: 10 }
  - name: claude-overridden
    targets: [{ provider: local, model: claude-custom }]
    price: { input_per_mtok: 2, output_per_mtok: 10, cached_input_per_mtok: 0.2, cache_write_per_mtok: 3, cache_write_1h_per_mtok: 5 }
  - name: sonnet-or-mini
    targets:
      - { provider: openai, model: claude-sonnet-4-0 }
      - { provider: openai, model: gpt-4o-mini }
",
    );
    let config = load_str(&text, "t.yaml", &spec_env).unwrap();
    let free = config.model("free-local").unwrap();
    assert_eq!(free.price, Price::default());
    assert_eq!(
        free.max_output_tokens, 4096,
        "neither the file nor the table gives one"
    );

    let mini = config.model("gpt-4o-mini").unwrap();
    assert_eq!(
        mini.targets[0].model, "gpt-4o-mini",
        "the provider's model defaults to the name"
    );
    assert_eq!(mini.price, builtin_price("gpt-4o-mini").unwrap().price);
    assert_eq!(mini.max_output_tokens, 16384);

    // Priced at the dearest target, so a reservation covers either.
    let smart = config.model("smart").unwrap();
    assert_eq!(smart.price.input_per_mtok, usd(2.0));
    assert_eq!(smart.price.output_per_mtok, usd(8.0));
    assert_eq!(smart.price.cached_input_per_mtok, Some(usd(0.5)));
    assert_eq!(smart.max_output_tokens, 32768);

    let capped = config.model("capped").unwrap();
    assert_eq!(capped.price.output_per_mtok, usd(2.5));
    assert_eq!(capped.price.cached_input_per_mtok, Some(usd(0.5)));
    assert_eq!(capped.max_output_tokens, 1000);
    // Not Anthropic's: no write surcharge unless the price says so.
    assert_eq!(capped.price.cache_write_per_mtok, None);
    assert_eq!(mini.price.cache_write_1h_per_mtok, None);

    // A Claude model priced by hand bills cache writes as Anthropic does,
    // and reads (no rate given) at the full input rate.
    let house = config.model("house-claude").unwrap();
    assert_eq!(house.price.cache_write_per_mtok, Some(usd(2.5)));
    assert_eq!(house.price.cache_write_1h_per_mtok, Some(usd(4.0)));
    assert_eq!(house.price.cached_input_per_mtok, None);
    assert_eq!(house.price.cache_read_rate(), usd(2.0));
    // Rates written in the file win.
    let over = config.model("claude-overridden").unwrap();
    assert_eq!(over.price.cached_input_per_mtok, Some(usd(0.2)));
    assert_eq!(over.price.cache_write_per_mtok, Some(usd(3.0)));
    assert_eq!(over.price.cache_write_1h_per_mtok, Some(usd(5.0)));
    // Across targets, the dearest write rate.
    let mixed = config.model("sonnet-or-mini").unwrap();
    assert_eq!(mixed.price.input_per_mtok, usd(3.0));
    assert_eq!(mixed.price.cache_write_per_mtok, Some(usd(3.75)));
    assert_eq!(mixed.price.cache_write_1h_per_mtok, Some(usd(6.0)));
}

#[test]
fn a_model_on_an_anthropic_provider_bills_anthropic_cache_writes() {
    let text = "providers:
  - name: claude-up
    kind: anthropic
    api_key: k
models:
  - name: house
    targets: [{ provider: claude-up, model: my-alias }]
    price: { input_per_mtok: 0.8, output_per_mtok: 4 }
";
    let config = load_str(text, "t.yaml", &spec_env).unwrap();
    let house = config.model("house").unwrap();
    assert_eq!(house.price.cache_write_per_mtok, Some(usd(1.0)));
    assert_eq!(house.price.cache_write_1h_per_mtok, Some(usd(1.6)));
}

#[test]
fn price_values_are_checked() {
    let text = with_providers(
        "models:
  - name: a
    targets: [{ provider: local }]
    price: { input_per_mtok: -1, output_per_mtok: cheap }
  - name: b
    targets: [{ provider: local }]
    price: { input_per_mtok: 1 }
    max_output_tokens: 0
  - name: c
    targets: [{ provider: local }]
    price:
      input_per_mtok: 1
      output_per_mtok: 1
      cached_input_per_mtok: free
      cache_write_per_mtok: -2
      cache_write_1h_per_mtok: \"NaN\"
",
    );
    assert_eq!(
        problems(&text),
        [
            "10: models[0].price.input_per_mtok: `-1` is negative; a price is 0 or more USD",
            "10: models[0].price.output_per_mtok: `cheap` is not a number",
            "13: models[1].price: missing `output_per_mtok`",
            "14: models[1].max_output_tokens: `0` is below the minimum of 1",
            "20: models[2].price.cached_input_per_mtok: `free` is not a number",
            "21: models[2].price.cache_write_per_mtok: `-2` is negative; a price is 0 or more USD",
            "22: models[2].price.cache_write_1h_per_mtok: `NaN` is not a number",
        ]
    );
    // A bare YAML `.nan` is refused by the parser, with its line.
    let nan = text.replace("\"NaN\"", ".nan");
    assert_eq!(
        problems(&nan),
        ["22: non-finite float `.nan` rejected by the configured policy"]
    );
}

#[test]
fn targets_weights_are_all_or_none() {
    let weighted = with_providers(
        "models:
  - name: m
    price: { input_per_mtok: 1, output_per_mtok: 1 }
    targets:
      - { provider: local, model: a, weight: 3 }
      - { provider: openai, model: b, weight: 1 }
",
    );
    let config = load_str(&weighted, "t.yaml", &spec_env).unwrap();
    let weights: Vec<_> = config.models[0].targets.iter().map(|t| t.weight).collect();
    assert_eq!(weights, [Some(3), Some(1)]);

    let mixed = weighted.replace(", weight: 1 }", " }");
    assert_problem(
        &mixed,
        "11: models[0].targets: set `weight` on every target (split by weight) or on none (fallback in order)",
    );
    let empty = with_providers("models:\n  - name: m\n    targets: []\n");
    assert_problem(
        &empty,
        "8: models[0]: needs at least one entry in `targets` (`- provider: NAME` with `model: PROVIDER_MODEL`)",
    );
}

#[test]
fn addresses_urls_store_and_counters_are_checked() {
    assert_problem(
        "admin_listen: localhost:9000\n",
        "1: admin_listen: `localhost:9000` is not an IP address and port like `127.0.0.1:4000`",
    );
    assert_problem(
        "listen: 127.0.0.1:4000\nadmin_listen: 127.0.0.1:4000\n",
        "2: admin_listen: `127.0.0.1:4000` is also `listen`; leave `admin_listen` out to serve the admin API on the main listener",
    );
    assert_problem(
        "store: mysql://root:hunter2@db/x\n",
        "1: store: `mysql://root:*****@db/x` is neither a `sqlite:` nor a `postgres://` URL (e.g. `sqlite://tollgate.db`, `postgres://user@host/db`)",
    );
    assert_problem(
        "counters: redis:/oops\n",
        "1: counters: `redis:/oops` is neither `memory` nor a `redis://host:port` URL",
    );
    assert_problem(
        "providers:\n  - { name: a, kind: openai, base_url: 'ftp://x/v1' }\n",
        "2: providers[0].base_url: `ftp://x/v1` is not an `http://` or `https://` URL",
    );
    assert_problem(
        "providers:\n  - { name: a, kind: openai, base_url: api.openai.com/v1 }\n",
        "2: providers[0].base_url: `api.openai.com/v1` is not an absolute URL (it needs `http://` or `https://`)",
    );
    assert_problem(
        "alerts:\n  webhook_url: 'http://'\n",
        "2: alerts.webhook_url: `http://` is not a valid URL",
    );

    let ok = "listen: 0.0.0.0:8080
admin_listen: '[::1]:9000'
store: postgres://tollgate:pw@127.0.0.1:5432/test
counters: redis://127.0.0.1:6379
";
    let config = load_str(ok, "t.yaml", &no_env).unwrap();
    assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
    assert_eq!(config.admin_listen.unwrap().to_string(), "[::1]:9000");
    assert_eq!(
        config.store.expose(),
        "postgres://tollgate:pw@127.0.0.1:5432/test"
    );
    assert_eq!(
        config.counters,
        CountersConfig::Redis(crate::types::Secret::new("redis://127.0.0.1:6379".into()))
    );
    for store in [
        "sqlite::memory:",
        "sqlite:///tmp/x.db",
        "postgresql://u@h/db",
    ] {
        let config = load_str(&format!("store: '{store}'\n"), "t.yaml", &no_env).unwrap();
        assert_eq!(config.store.expose(), store);
    }
}

#[test]
fn provider_kinds_and_their_settings() {
    assert_problem(
        "providers:\n  - name: a\n    kind: openia\n",
        "3: providers[0].kind: `openia` is not one of openai, azure, anthropic, gemini, vertex, mock, bedrock",
    );
    assert_problem(
        "providers:\n  - name: a\n    kind: azure\n",
        "2: providers[0]: an `azure` provider needs `base_url` (e.g. `https://RESOURCE.openai.azure.com/openai`)",
    );
    assert_problem(
        "providers:\n  - name: a\n    kind: openai\n    api_version: '2024-10-21'\n",
        "4: providers[0].api_version: only an `azure` provider takes an `api_version`",
    );
    assert_problem(
        "providers:\n  - name: a\n    kind: mock\n    base_url: http://127.0.0.1:1/v1\n",
        "4: providers[0].base_url: a `mock` provider is built in and has no URL (to call a mock server over HTTP, use kind `openai`)",
    );
    assert_problem(
        "providers:\n  - kind: mock\n",
        "2: providers[0]: missing `name`",
    );
    assert_problem(
        "providers:\n  - { name: a, kind: openai, timeout_s: 0 }\n",
        "2: providers[0].timeout_s: `0` is not a number of seconds (more than 0)",
    );

    let text = "providers:
  - name: az
    kind: azure
    base_url: https://acme.openai.azure.com/openai/
    api_key: ${AZ_KEY}
    timeout_s: 30
  - name: az2
    kind: azure
    base_url: https://acme.openai.azure.com/openai
    api_version: 2025-01-01-preview
  - name: claude
    kind: anthropic
  - name: vllm
    kind: openai
    base_url: http://127.0.0.1:8000/v1
";
    let env = |name: &str| (name == "AZ_KEY").then(|| "az-secret".to_owned());
    let config = load_str(text, "t.yaml", &env).unwrap();
    let az = config.provider("az").unwrap();
    assert_eq!(az.kind, ProviderKind::Azure);
    assert_eq!(
        az.base_url, "https://acme.openai.azure.com/openai",
        "trailing slash trimmed"
    );
    assert_eq!(az.api_version.as_deref(), Some("2024-10-21"));
    assert_eq!(az.timeout, Duration::from_secs(30));
    assert_eq!(az.api_key.as_ref().unwrap().expose(), "az-secret");
    assert_eq!(
        config.provider("az2").unwrap().api_version.as_deref(),
        Some("2025-01-01-preview")
    );
    let claude = config.provider("claude").unwrap();
    assert_eq!(claude.base_url, "https://api.anthropic.com/v1");
    assert_eq!(claude.timeout, Duration::from_secs(600));
    assert!(claude.api_key.is_none());
    assert_eq!(
        config.provider("vllm").unwrap().base_url,
        "http://127.0.0.1:8000/v1"
    );
}

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

#[test]
fn top_level_options() {
    let text = "counters_unavailable: allow_local
max_body_bytes: 1048576
log_bodies: false
drain_timeout_s: 5
busy_poll_us: 50
";
    let config = load_str(text, "t.yaml", &no_env).unwrap();
    assert_eq!(config.busy_poll, Duration::from_micros(50));
    assert_eq!(config.counters_unavailable, CountersUnavailable::AllowLocal);
    assert_eq!(config.max_body_bytes, 1_048_576);
    assert!(!config.log_bodies);
    // Body logging is not built: asking for it is an error, not a no-op.
    let err = load_str("log_bodies: true\n", "t.yaml", &no_env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.yaml:1: log_bodies: `true` is not supported yet"),
        "{err}"
    );
    assert_eq!(config.drain_timeout, Duration::from_secs(5));

    let defaults = load_str("", "t.yaml", &no_env).unwrap();
    assert_eq!(defaults.counters_unavailable, CountersUnavailable::Reject);
    assert!(!defaults.log_bodies);
    assert_eq!(defaults.drain_timeout, Duration::from_secs(30));
    assert_eq!(defaults.busy_poll, Duration::from_micros(200));
    assert!(
        defaults.providers.is_empty() && defaults.models.is_empty() && defaults.teams.is_empty()
    );

    assert_eq!(
        problems(
            "counters_unavailable: open\nmax_body_bytes: 1.5\nlog_bodies: maybe\ndrain_timeout_s: -1\nbusy_poll_us: 20000\n"
        ),
        [
            "1: counters_unavailable: `open` is not one of reject, allow_local",
            "2: max_body_bytes: `1.5` is not a whole number",
            "3: log_bodies: `maybe` is not `true` or `false`",
            "4: drain_timeout_s: `-1` is not a number of seconds (0 or more)",
            "5: busy_poll_us: `20000` is above the maximum of 10000 (a longer spin only burns CPU; 0 turns busy-polling off)",
        ]
    );
}

#[test]
fn journal_dir_is_a_path_or_left_out() {
    let config = load_str(
        "journal_dir: /var/lib/tollgate/journal\n",
        "t.yaml",
        &no_env,
    )
    .unwrap();
    assert_eq!(
        config.journal_dir,
        Some(std::path::PathBuf::from("/var/lib/tollgate/journal"))
    );
    assert_eq!(load_str("", "t.yaml", &no_env).unwrap().journal_dir, None);
    assert_eq!(
        problems("journal_dir: ''\n"),
        [
            "1: journal_dir: an empty path names no directory; leave the key out to keep the spend journal next to the store"
        ]
    );
}

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
fn embedded_default_without_provider_keys() {
    let config = embedded_default(&no_env);
    assert_eq!(config.listen.to_string(), "127.0.0.1:4000");
    assert_eq!(config.store.expose(), "sqlite://tollgate.db");
    assert_eq!(config.counters, CountersConfig::Memory);
    assert!(config.admin_key.is_none());
    let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["mock"]);
    assert_eq!(config.providers[0].kind, ProviderKind::Mock);
    let models: Vec<&str> = config.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(models, ["mock-chat", "mock-embed"]);
    for model in &config.models {
        assert_eq!(model.price.input_per_mtok, usd(1.0));
        assert_eq!(model.price.output_per_mtok, usd(2.0));
        assert_eq!(model.max_output_tokens, 4096);
        assert_eq!(model.targets[0].provider, "mock");
    }
    assert_eq!(config.teams.len(), 1);
    assert_eq!(config.teams[0].id, "default");
    assert!(config.teams[0].policies.is_empty());
    assert!(config.policies.is_empty());
}

#[test]
fn embedded_default_with_provider_keys() {
    let env = |name: &str| match name {
        "OPENAI_API_KEY" => Some("sk-openai".to_owned()),
        "ANTHROPIC_API_KEY" => Some("sk-ant".to_owned()),
        "TOLLGATE_ADMIN_KEY" => Some("admin".to_owned()),
        _ => None,
    };
    let config = embedded_default(&env);
    assert_eq!(config.admin_key.as_ref().unwrap().expose(), "admin");
    let openai = config.provider("openai").unwrap();
    assert_eq!(openai.kind, ProviderKind::OpenAi);
    assert_eq!(openai.base_url, "https://api.openai.com/v1");
    assert_eq!(openai.api_key.as_ref().unwrap().expose(), "sk-openai");
    let anthropic = config.provider("anthropic").unwrap();
    assert_eq!(anthropic.kind, ProviderKind::Anthropic);
    assert_eq!(anthropic.api_key.as_ref().unwrap().expose(), "sk-ant");
    let mini = config.model("gpt-4o-mini").unwrap();
    assert_eq!(mini.targets[0].provider, "openai");
    assert_eq!(mini.price, builtin_price("gpt-4o-mini").unwrap().price);
    let haiku = config.model("claude-3-5-haiku-latest").unwrap();
    assert_eq!(haiku.targets[0].provider, "anthropic");
    assert_eq!(haiku.targets[0].model, "claude-3-5-haiku-latest");
    assert!(
        config.model("gemini-2.5-pro").is_none(),
        "no google provider in the default"
    );
    assert!(config.model("mock-chat").is_some());

    let only_openai =
        embedded_default(&|name: &str| (name == "OPENAI_API_KEY").then(|| "k".to_owned()));
    assert!(only_openai.provider("anthropic").is_none());
    assert!(
        only_openai
            .models
            .iter()
            .all(|m| !m.name.starts_with("claude"))
    );
    // Every model the default lists is priced and routes to a listed provider.
    for model in &only_openai.models {
        assert!(
            only_openai.provider(&model.targets[0].provider).is_some(),
            "{}",
            model.name
        );
    }
}

#[test]
fn resolve_path_order() {
    let dir = tempfile::tempdir().unwrap();
    let from_env = dir.path().join("env.yaml");
    let env_str = from_env.to_str().unwrap().to_owned();
    let env = move |name: &str| (name == "TOLLGATE_CONFIG").then(|| env_str.clone());
    let cli = dir.path().join("cli.yaml");
    assert_eq!(resolve_path(Some(&cli), &env), Some(cli.clone()));
    assert_eq!(resolve_path(None, &env), Some(from_env));
    // Without either, `./tollgate.yaml` only if the working directory has one
    // (the crate directory, where tests run, does not).
    assert_eq!(
        resolve_path(None, &no_env),
        std::path::Path::new("tollgate.yaml")
            .is_file()
            .then(|| "tollgate.yaml".into())
    );
}

#[test]
fn load_file_and_check_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.yaml");
    std::fs::write(&path, SPEC_DAILY_BUDGET_CAP).unwrap();
    let config = load_file(&path, &no_env).unwrap();
    assert_eq!(config.policies.len(), 1);
    assert!(check_file(&path).is_ok());

    std::fs::write(&path, "listen: nope\n").unwrap();
    let errors = check_file(&path).unwrap_err();
    assert_eq!(
        errors.to_string(),
        format!(
            "{}:1: listen: `nope` is not an IP address and port like `127.0.0.1:4000`",
            path.display()
        )
    );

    let missing = dir.path().join("missing.yaml");
    let errors = load_file(&missing, &no_env).unwrap_err();
    assert_eq!(errors.problems.len(), 1);
    assert!(errors.problems[0].line.is_none());
    assert!(
        errors
            .to_string()
            .starts_with(&format!("{}: cannot read", missing.display()))
    );
}

mod never_panics {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text(text in "\\PC{0,200}") {
            let _ = load_str(&text, "fuzz.yaml", &spec_env);
        }

        #[test]
        fn yaml_shaped_text(text in "([a-z_]{1,12}: ?(\\[|\\{|-|\\$\\{|[0-9.-]{1,6}|[a-z:/]{1,10}|\"|')?\n {0,6}){0,12}") {
            let _ = load_str(&text, "fuzz.yaml", &spec_env);
        }

        #[test]
        fn mutated_spec_example(cut in 0usize..2000, len in 0usize..40, insert in "\\PC{0,8}") {
            let mut text = SPEC_FULL.to_owned();
            let start = text.char_indices().map(|(i, _)| i).nth(cut % SPEC_FULL.chars().count()).unwrap_or(0);
            let end = text[start..].char_indices().map(|(i, _)| start + i).nth(len).unwrap_or(text.len());
            text.replace_range(start..end, &insert);
            match load_str(&text, "fuzz.yaml", &spec_env) {
                Ok(_) => {}
                Err(errors) => {
                    prop_assert!(!errors.problems.is_empty());
                    prop_assert!(!errors.to_string().contains("sk-live-0123456789"));
                }
            }
        }
    }
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

#[test]
fn the_response_cache_is_off_unless_enabled_and_defaults_to_300_s_and_64_mib() {
    let load = |text: &str| load_str(text, "t.yaml", &no_env).unwrap();
    assert_eq!(load("listen: 127.0.0.1:4000\n").cache, None);
    assert_eq!(load("cache: { enabled: false, ttl_s: 10 }\n").cache, None);
    assert_eq!(load("cache: {}\n").cache, None);
    assert_eq!(
        load("cache: { enabled: true }\n").cache,
        Some(CacheConfig {
            ttl: Duration::from_secs(300),
            max_bytes: 64 * 1024 * 1024,
        })
    );
    assert_eq!(
        load("cache:\n  enabled: \"true\"\n  ttl_s: 5\n  max_mib: 2\n").cache,
        Some(CacheConfig {
            ttl: Duration::from_secs(5),
            max_bytes: 2 * 1024 * 1024,
        })
    );
    let teams = load("teams:\n  - id: a\n    cache: false\n  - id: b\n").teams;
    assert_eq!((teams[0].cache, teams[1].cache), (false, true));
}

#[test]
fn cache_settings_are_checked_with_their_lines() {
    assert_problem(
        "cache:\n  enabled: yes please\n",
        "2: cache.enabled: `yes please` is not `true` or `false`",
    );
    assert_problem(
        "cache:\n  enabled: true\n  ttl_s: 0\n",
        "3: cache.ttl_s: `0` is below the minimum of 1",
    );
    assert_problem(
        "cache:\n  enabled: true\n  ttl_s: 99999999\n",
        "3: cache.ttl_s: `99999999` is above the maximum of 2592000 (30 days)",
    );
    assert_problem(
        "cache:\n  enabled: true\n  max_mib: 1.5\n",
        "3: cache.max_mib: `1.5` is not a whole number",
    );
    assert_problem(
        "cache:\n  enabled: true\n  max_mib: -1\n",
        "3: cache.max_mib: `-1` is below the minimum of 1",
    );
    assert_problem(
        "teams:\n  - id: a\n    cache: sometimes\n",
        "3: teams[0].cache: `sometimes` is not `true` or `false`",
    );
    // A typo must not silently leave the cache off (or on).
    let found = problems("cache:\n  enabled: true\n  ttl: 5\n");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("3: ") && p.contains("`ttl`")),
        "{found:?}"
    );
    let found = problems("teams:\n  - id: a\n    caching: false\n");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("3: ") && p.contains("`caching`")),
        "{found:?}"
    );
}
