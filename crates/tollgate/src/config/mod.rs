//! Configuration: the YAML file plus the environment, read raw, validated and
//! frozen into [`Config`]. No sockets here.
//!
//! `raw` mirrors the file (serde, unknown keys denied, every value with its
//! line), `validate` checks it into the `model` types, `prices` is the
//! built-in price table, `defaults` the embedded default config.

mod defaults;
mod env;
mod error;
mod model;
mod prices;
mod raw;
mod validate;

use std::path::{Path, PathBuf};

pub use defaults::embedded_default;
pub use error::{ConfigErrors, Problem};
pub use model::*;
pub use prices::{BuiltinPrice, builtin_price, price_table_source};

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
    let raw = raw::parse(text).map_err(|(line, message)| ConfigErrors {
        origin: origin.to_owned(),
        problems: vec![Problem {
            line,
            message: scrub_secrets(text, message),
        }],
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

/// A YAML syntax error may quote the text around it; if that text is an
/// `api_key` line, the key must not reach the terminal or a log.
fn scrub_secrets(text: &str, mut message: String) -> String {
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if !key.trim().trim_start_matches("- ").eq("api_key") {
            continue;
        }
        let value = value
            .split(" #")
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches(['"', '\'']);
        if value.len() >= 4 && message.contains(value) {
            message = message.replace(value, "*****");
        }
    }
    message
}

#[cfg(test)]
mod tests;
