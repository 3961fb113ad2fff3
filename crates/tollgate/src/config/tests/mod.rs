//! Loading and validation tests: the SPEC fixtures, every check with its
//! line, interpolation, the embedded default, and arbitrary input.

use std::time::Duration;

use super::*;
use crate::types::{NanoUsd, Period, Price};

mod loading;
mod models;
mod options;
mod policies;
mod providers;
mod spec;
mod text;

const SPEC_FULL: &str = include_str!("../fixtures/spec_full.yaml");
const SPEC_DAILY_BUDGET_CAP: &str = include_str!("../fixtures/spec_daily_budget_cap.yaml");

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
