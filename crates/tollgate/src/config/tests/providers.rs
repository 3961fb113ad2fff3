//! Addresses, URLs, store, counters and provider kinds.

use super::*;

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
