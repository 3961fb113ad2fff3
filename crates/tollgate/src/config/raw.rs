//! The config file as written: serde structs that mirror the YAML one to one,
//! every leaf wrapped in [`Spanned`] so validation can name the line. Every
//! struct denies unknown fields, so a typo is an error rather than a budget
//! that silently does not apply. Values stay loose here (strings for enums,
//! [`Scalar`] for numbers, so `${VAR}` can fill a number too); `validate`
//! turns them into the typed [`super::Config`].

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_saphyr::Spanned;

pub(crate) type Text = Spanned<String>;
pub(crate) type Value = Spanned<Scalar>;

/// A YAML scalar whose type is decided by the field reading it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int(n) => write!(f, "{n}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Str(s) => f.write_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number, a boolean or a string")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar::Int(i128::from(v)))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Int(i128::from(v)))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Scalar, E> {
        i128::try_from(v)
            .map(Scalar::Int)
            .map_err(|_| E::custom(format!("`{v}` is too large")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar::Str(v))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub listen: Option<Text>,
    pub admin_listen: Option<Text>,
    pub admin_key: Option<Text>,
    pub store: Option<Text>,
    pub counters: Option<Text>,
    pub counters_unavailable: Option<Text>,
    pub max_body_bytes: Option<Value>,
    pub log_bodies: Option<Value>,
    pub drain_timeout_s: Option<Value>,
    pub providers: Option<Vec<Spanned<RawProvider>>>,
    pub models: Option<Vec<Spanned<RawModel>>>,
    pub policies: Option<Vec<Spanned<RawPolicy>>>,
    pub teams: Option<Vec<Spanned<RawTeam>>>,
    pub defaults: Option<Spanned<RawDefaults>>,
    pub alerts: Option<Spanned<RawAlerts>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProvider {
    pub name: Option<Text>,
    pub kind: Option<Text>,
    pub base_url: Option<Text>,
    pub api_key: Option<Text>,
    pub timeout_s: Option<Value>,
    pub api_version: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModel {
    pub name: Option<Text>,
    pub targets: Option<Vec<Spanned<RawTarget>>>,
    pub price: Option<Spanned<RawPrice>>,
    pub max_output_tokens: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub provider: Option<Text>,
    pub model: Option<Text>,
    pub weight: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPrice {
    pub input_per_mtok: Option<Value>,
    pub output_per_mtok: Option<Value>,
    pub cached_input_per_mtok: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub name: Option<Text>,
    #[serde(rename = "type")]
    pub kind: Option<Text>,
    pub mode: Option<Text>,
    pub config: Option<Spanned<RawPolicyConfig>>,
}

/// The union of every policy type's keys. Which of them a policy may set
/// depends on its `type`, a sibling of `config`, so serde cannot pick the
/// variant; `validate` rejects keys that belong to another type.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicyConfig {
    // cost-limit
    pub limit_usd: Option<Value>,
    pub period: Option<Text>,
    pub action: Option<Text>,
    pub on_insufficient: Option<Text>,
    // rate-limit
    pub requests_per_minute: Option<Value>,
    pub tokens_per_minute: Option<Value>,
    pub max_parallel: Option<Value>,
    // loop-guard
    pub max_identical: Option<Value>,
    pub window_seconds: Option<Value>,
    pub on_trip: Option<Text>,
    // model-access
    pub allow: Option<Spanned<Vec<Text>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTeam {
    pub id: Option<Text>,
    pub policies: Option<Vec<Text>>,
    pub models: Option<Vec<Text>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefaults {
    pub policies: Option<Vec<Text>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlerts {
    pub webhook_url: Option<Text>,
    pub thresholds: Option<Vec<Value>>,
}

/// Parses the YAML text. A syntax or shape error (unknown key, wrong type)
/// stops serde at the first one, so this returns a single problem: its line
/// and a message without the value's text (it may be a secret).
pub(crate) fn parse(text: &str) -> Result<RawConfig, (Option<usize>, String)> {
    if is_blank(text) {
        return Ok(RawConfig::default());
    }
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<Option<RawConfig>>(text, options)
        .map(Option::unwrap_or_default)
        .map_err(|err| {
            let line = err
                .location()
                .map(|loc| loc.line())
                .filter(|&line| line > 0)
                .and_then(|line| usize::try_from(line).ok());
            let message = serde_saphyr::MessageFormatter::format_message(
                &serde_saphyr::DefaultMessageFormatter,
                err.without_snippet(),
            );
            (line, message.escape_debug().to_string())
        })
}

/// A file of only comments and blank lines is an empty config, not an error.
fn is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}
