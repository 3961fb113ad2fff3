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
    pub busy_poll_us: Option<Value>,
    pub journal_dir: Option<Text>,
    pub providers: Option<Vec<Spanned<RawProvider>>>,
    pub models: Option<Vec<Spanned<RawModel>>>,
    pub policies: Option<Vec<Spanned<RawPolicy>>>,
    pub teams: Option<Vec<Spanned<RawTeam>>>,
    pub defaults: Option<Spanned<RawDefaults>>,
    pub alerts: Option<Spanned<RawAlerts>>,
    pub routing: Option<Spanned<RawRouting>>,
    pub telemetry: Option<Spanned<RawTelemetry>>,
    pub cache: Option<Spanned<RawCache>>,
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
    /// `vertex`: the Google Cloud project, region and service-account key file.
    pub project: Option<Text>,
    pub region: Option<Text>,
    pub credentials_file: Option<Text>,
    pub aws_access_key_id: Option<Text>,
    pub aws_secret_access_key: Option<Text>,
    pub aws_session_token: Option<Text>,
    pub entra: Option<Spanned<RawEntra>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEntra {
    pub tenant_id: Option<Text>,
    pub client_id: Option<Text>,
    pub client_secret: Option<Text>,
    pub authority_url: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawModel {
    pub name: Option<Text>,
    pub targets: Option<Vec<Spanned<RawTarget>>>,
    pub price: Option<Spanned<RawPrice>>,
    pub max_output_tokens: Option<Value>,
    pub strategy: Option<Text>,
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
    pub cache_write_per_mtok: Option<Value>,
    pub cache_write_1h_per_mtok: Option<Value>,
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
    pub cache: Option<Value>,
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
    pub format: Option<Text>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    pub otlp_endpoint: Option<Text>,
    pub service_name: Option<Text>,
}

/// `routing:`, the retry, failover and circuit-breaker defaults (SPEC §8).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouting {
    pub retries: Option<Value>,
    pub backoff_ms: Option<Value>,
    pub max_backoff_ms: Option<Value>,
    pub failures_to_trip: Option<Value>,
    pub cooldown_s: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub enabled: Option<Value>,
    pub ttl_s: Option<Value>,
    pub max_mib: Option<Value>,
}

/// The keys each raw struct accepts, in declaration order. Serde enforces
/// them one error at a time; [`super::node::unknown_keys`] uses these lists
/// to report every unknown key at once. The test `key_lists_match_the_structs`
/// keeps them equal to the structs.
pub(crate) mod keys {
    pub(crate) const TOP: &[&str] = &[
        "listen",
        "admin_listen",
        "admin_key",
        "store",
        "counters",
        "counters_unavailable",
        "max_body_bytes",
        "log_bodies",
        "drain_timeout_s",
        "busy_poll_us",
        "journal_dir",
        "providers",
        "models",
        "policies",
        "teams",
        "defaults",
        "alerts",
        "routing",
        "telemetry",
        "cache",
    ];
    pub(crate) const PROVIDER: &[&str] = &[
        "name",
        "kind",
        "base_url",
        "api_key",
        "timeout_s",
        "api_version",
        "project",
        "region",
        "credentials_file",
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "entra",
    ];
    pub(crate) const ENTRA: &[&str] = &["tenant_id", "client_id", "client_secret", "authority_url"];
    pub(crate) const MODEL: &[&str] =
        &["name", "targets", "price", "max_output_tokens", "strategy"];
    pub(crate) const TARGET: &[&str] = &["provider", "model", "weight"];
    pub(crate) const PRICE: &[&str] = &[
        "input_per_mtok",
        "output_per_mtok",
        "cached_input_per_mtok",
        "cache_write_per_mtok",
        "cache_write_1h_per_mtok",
    ];
    pub(crate) const POLICY: &[&str] = &["name", "type", "mode", "config"];
    pub(crate) const POLICY_CONFIG: &[&str] = &[
        "limit_usd",
        "period",
        "action",
        "on_insufficient",
        "requests_per_minute",
        "tokens_per_minute",
        "max_parallel",
        "max_identical",
        "window_seconds",
        "on_trip",
        "allow",
    ];
    pub(crate) const TEAM: &[&str] = &["id", "policies", "models", "cache"];
    pub(crate) const DEFAULTS: &[&str] = &["policies"];
    pub(crate) const ALERTS: &[&str] = &["webhook_url", "thresholds", "format"];
    pub(crate) const ROUTING: &[&str] = &[
        "retries",
        "backoff_ms",
        "max_backoff_ms",
        "failures_to_trip",
        "cooldown_s",
    ];
    pub(crate) const TELEMETRY: &[&str] = &["otlp_endpoint", "service_name"];
    pub(crate) const CACHE: &[&str] = &["enabled", "ttl_s", "max_mib"];
}

/// Parses the YAML text. Serde stops at the first shape error (unknown key,
/// wrong type), so on failure the document is read once more without a
/// schema to list every unknown key, not just the first. Each problem has
/// its line and a message naming the key path, never the value's text (it
/// may be a secret).
pub(crate) fn parse(text: &str) -> Result<RawConfig, Vec<(Option<usize>, String)>> {
    if is_blank(text) {
        return Ok(RawConfig::default());
    }
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let err = match serde_saphyr::from_str_with_options::<Option<RawConfig>>(text, options) {
        Ok(raw) => return Ok(raw.unwrap_or_default()),
        Err(err) => err,
    };
    let location = err.location().filter(|loc| loc.line() > 0);
    let line = location.and_then(|loc| usize::try_from(loc.line()).ok());
    let message = serde_saphyr::MessageFormatter::format_message(
        &serde_saphyr::DefaultMessageFormatter,
        err.without_snippet(),
    );
    let message = plain_message(&message.escape_debug().to_string());
    let Some(root) = super::node::parse(text) else {
        return Err(vec![(line, message)]);
    };
    let mut problems = super::node::unknown_keys(&root);
    let path = location
        .map(|loc| super::node::path_at(&root, (loc.line(), loc.column())))
        .unwrap_or_default();
    // The schema-free pass already names every unknown key, serde's among them.
    if !message.starts_with("unknown key ") || problems.is_empty() {
        let message = match path.as_str() {
            "" => message,
            path => format!("{path}: {message}"),
        };
        problems.push((line, message));
        problems.sort_by_key(|(line, _)| *line);
    }
    Err(problems)
}

/// Rewords serde-saphyr's messages for someone editing a config file.
fn plain_message(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!(
            "unknown key {}",
            rest.replacen(", expected one of", "; expected one of", 1)
        );
    }
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(rest);
        return format!("`{key}` is set twice");
    }
    match message {
        "expected sequence start" => "expected a list (`- item` lines or `[a, b]`)".to_owned(),
        "expected mapping start" => {
            "expected a mapping (`key: value` lines or `{ key: value }`)".to_owned()
        }
        "expected string scalar" => "expected a single value, not a list or mapping".to_owned(),
        other => other.to_owned(),
    }
}

/// A file of only comments and blank lines is an empty config, not an error.
fn is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;

    use super::*;

    /// Every listed key is accepted, and serde's own list of expected keys
    /// (from the unknown-key error) is exactly ours.
    fn check<T: DeserializeOwned + std::fmt::Debug>(keys: &[&str]) {
        let all: String = keys.iter().map(|k| format!("{k}: null\n")).collect();
        serde_saphyr::from_str::<T>(&all).unwrap();
        let err = serde_saphyr::from_str::<T>("not_a_key: 1\n").unwrap_err();
        let message = serde_saphyr::MessageFormatter::format_message(
            &serde_saphyr::DefaultMessageFormatter,
            err.without_snippet(),
        );
        assert!(
            message.ends_with(&format!("expected one of {}", keys.join(", "))),
            "{message}"
        );
    }

    #[test]
    fn key_lists_match_the_structs() {
        check::<RawConfig>(keys::TOP);
        check::<RawProvider>(keys::PROVIDER);
        check::<RawEntra>(keys::ENTRA);
        check::<RawModel>(keys::MODEL);
        check::<RawTarget>(keys::TARGET);
        check::<RawPrice>(keys::PRICE);
        check::<RawPolicy>(keys::POLICY);
        check::<RawPolicyConfig>(keys::POLICY_CONFIG);
        check::<RawTeam>(keys::TEAM);
        check::<RawDefaults>(keys::DEFAULTS);
        check::<RawAlerts>(keys::ALERTS);
        check::<RawRouting>(keys::ROUTING);
        check::<RawTelemetry>(keys::TELEMETRY);
        check::<RawCache>(keys::CACHE);
    }
}
