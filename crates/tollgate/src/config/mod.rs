//! Configuration: the YAML file plus the environment, read raw, validated and
//! frozen into [`Config`]. No sockets here.
//!
//! `raw` mirrors the file (serde, unknown keys denied, every value with its
//! line), `node` explains what serde rejected, `env` interpolates `${VAR}`,
//! `validate` checks everything into the `model` types and collects every
//! problem, `prices` is the built-in price table (`prices.json`), `defaults`
//! the embedded default config.

mod defaults;
mod env;
mod error;
mod google;
mod model;
mod node;
mod prices;
mod raw;
mod routing;
mod validate;

use std::path::{Path, PathBuf};

pub use defaults::embedded_default;
pub use error::{ConfigErrors, Problem};
pub use google::{ServiceAccount, VertexConfig};
pub use model::*;
pub use prices::{BuiltinPrice, builtin_price, price_table_source};
pub use routing::{RoutingConfig, Strategy};
#[cfg(test)]
pub(crate) use validate::RESERVED_POLICY_NAMES;

/// The file `serve` reads when neither `--config` nor `TOLLGATE_CONFIG` names one.
pub const DEFAULT_CONFIG_FILE: &str = "tollgate.yaml";

/// Reads and validates a config file. `env` supplies `${VAR}` values (the
/// process environment in production, a closure in tests).
pub fn load_file(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| {
        ConfigErrors::single(&origin, None, format!("cannot read the config file: {err}"))
    })?;
    load_str(&text, &origin, env)
}

/// Validates config text; `origin` names it in errors (usually the path).
pub fn load_str(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let raw = raw::parse(text).map_err(|problems| ConfigErrors {
        origin: origin.to_owned(),
        problems: problems
            .into_iter()
            .map(|(line, message)| Problem {
                line,
                message: scrub_secrets(text, message),
            })
            .collect(),
    })?;
    validate::Validator::new(env)
        .finish(&raw)
        .map_err(|problems| ConfigErrors {
            origin: origin.to_owned(),
            problems,
        })
}

/// What `tollgate config check FILE` runs: [`load_file`] against the
/// process environment.
pub fn check_file(path: &Path) -> Result<Config, ConfigErrors> {
    load_file(path, &|name| std::env::var(name).ok())
}

/// Which file to load: `--config`, else `TOLLGATE_CONFIG`, else
/// `./tollgate.yaml` if it exists, else `None` (run on [`embedded_default`]).
pub fn resolve_path(cli: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(path) = cli {
        return Some(path.to_owned());
    }
    if let Some(path) = env("TOLLGATE_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let local = Path::new(DEFAULT_CONFIG_FILE);
    local.is_file().then(|| local.to_owned())
}

/// A YAML syntax or type error may quote the text it tripped on; if that
/// text is an `api_key` value, the key must not reach a terminal or a log.
/// Finds every `api_key:` value as written (block or flow style) and masks
/// it in `message`.
fn scrub_secrets(text: &str, mut message: String) -> String {
    for name in SECRET_KEYS {
        message = scrub_secret(text, name, message);
    }
    message
}

/// Every config key whose value is a credential.
const SECRET_KEYS: [&str; 4] = [
    "api_key",
    "aws_secret_access_key",
    "aws_session_token",
    "client_secret",
];

fn scrub_secret(text: &str, name: &str, mut message: String) -> String {
    let mut rest = text;
    while let Some(at) = rest.find(name) {
        rest = &rest[at + name.len()..];
        let Some(value) = rest
            .trim_start_matches([' ', '\t', '"', '\''])
            .strip_prefix(':')
        else {
            continue;
        };
        let value = value.trim_start_matches([' ', '\t', '"', '\'', '[', '{']);
        let end = value
            .find(['\n', '\r', ',', '}', ']', '"', '\'', ' ', '#'])
            .unwrap_or(value.len());
        let secret = &value[..end];
        if secret.len() >= 4 && message.contains(secret) {
            message = message.replace(secret, "*****");
        }
    }
    message
}

#[cfg(test)]
mod tests;
