//! `models:`: prices, built-in prices, cache-write rates, target weights.

use super::*;

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
