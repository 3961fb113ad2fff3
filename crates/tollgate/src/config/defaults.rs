//! The embedded default config (SPEC §1): what `tollgate serve` runs on when
//! there is no config file. Built in code rather than parsed, so it cannot
//! fail.

use super::model::*;
use super::prices::{builtin_models, builtin_price};
use super::validate::{
    DEFAULT_ANTHROPIC_BASE_URL, DEFAULT_DRAIN_TIMEOUT, DEFAULT_LISTEN, DEFAULT_OPENAI_BASE_URL,
    DEFAULT_PROVIDER_TIMEOUT, DEFAULT_STORE,
};
use super::{RoutingConfig, Strategy};
use crate::types::{NanoUsd, Price, Secret};

/// The mock models' price: written out (not $0) so budgets can be seen
/// working on the default config with no provider key.
const MOCK_PRICE: Price = Price {
    input_per_mtok: NanoUsd(NanoUsd::PER_USD),
    output_per_mtok: NanoUsd(2 * NanoUsd::PER_USD),
    cached_input_per_mtok: None,
    cache_write_per_mtok: None,
    cache_write_1h_per_mtok: None,
};
const MOCK_MAX_OUTPUT_TOKENS: u64 = 4096;

fn non_empty(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

pub fn embedded_default(env: &dyn Fn(&str) -> Option<String>) -> Config {
    let mut providers = vec![ProviderConfig {
        name: "mock".to_owned(),
        kind: ProviderKind::Mock,
        base_url: String::new(),
        api_key: None,
        timeout: DEFAULT_PROVIDER_TIMEOUT,
        api_version: None,
        vertex: None,
        bedrock: None,
        entra: None,
    }];
    let mut models: Vec<ModelConfig> = ["mock-chat", "mock-embed"]
        .into_iter()
        .map(|name| ModelConfig {
            name: name.to_owned(),
            targets: vec![Target {
                provider: "mock".to_owned(),
                model: name.to_owned(),
                weight: None,
            }],
            price: MOCK_PRICE,
            max_output_tokens: MOCK_MAX_OUTPUT_TOKENS,
            strategy: Strategy::Ordered,
        })
        .collect();
    let upstreams = [
        (
            "openai",
            ProviderKind::OpenAi,
            DEFAULT_OPENAI_BASE_URL,
            "OPENAI_API_KEY",
        ),
        (
            "anthropic",
            ProviderKind::Anthropic,
            DEFAULT_ANTHROPIC_BASE_URL,
            "ANTHROPIC_API_KEY",
        ),
    ];
    for (name, kind, base_url, key_var) in upstreams {
        let Some(key) = non_empty(env, key_var) else {
            continue;
        };
        providers.push(ProviderConfig {
            name: name.to_owned(),
            kind,
            base_url: base_url.to_owned(),
            api_key: Some(Secret::new(key)),
            timeout: DEFAULT_PROVIDER_TIMEOUT,
            api_version: None,
            vertex: None,
            bedrock: None,
            entra: None,
        });
        for model in builtin_models(name) {
            let Some(builtin) = builtin_price(model) else {
                continue;
            };
            models.push(ModelConfig {
                name: model.to_owned(),
                targets: vec![Target {
                    provider: name.to_owned(),
                    model: model.to_owned(),
                    weight: None,
                }],
                price: builtin.price,
                max_output_tokens: builtin.max_output_tokens,
                strategy: Strategy::Ordered,
            });
        }
    }
    Config {
        listen: DEFAULT_LISTEN
            .parse()
            .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 4000))),
        admin_listen: None,
        admin_key: non_empty(env, "TOLLGATE_ADMIN_KEY").map(Secret::new),
        store: Secret::new(DEFAULT_STORE.to_owned()),
        counters: CountersConfig::Memory,
        counters_unavailable: CountersUnavailable::default(),
        max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        log_bodies: false,
        drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        busy_poll: crate::server::busy_poll::DEFAULT_WINDOW,
        journal_dir: None,
        routing: RoutingConfig::default(),
        providers,
        models,
        policies: Vec::new(),
        teams: vec![TeamConfig {
            id: "default".to_owned(),
            policies: Vec::new(),
            models: None,
            cache: true,
        }],
        defaults: Defaults::default(),
        alerts: None,
        telemetry: None,
        cache: None,
    }
}
