//! The embedded default, the config path order, loading files, and arbitrary input.

use super::*;

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
