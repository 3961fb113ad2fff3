//! Raw → validated: turns the [`RawConfig`] serde read into a [`Config`],
//! filling defaults, interpolating `${VAR}` and checking every value and
//! cross-reference. It does not stop at the first problem: everything wrong
//! is collected with its line so `config check` lists it all at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::env::interpolate;
use super::error::Problem;
use super::model::*;
use super::prices::builtin_price;
use super::raw::*;
use crate::types::{NanoUsd, Period, Price, Secret};

mod cache;
mod cloud;
mod google;
mod models;
mod policies;
mod providers;
mod routing;
mod teams;
mod telemetry;

pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:4000";
pub(crate) const DEFAULT_STORE: &str = "sqlite://tollgate.db";
pub(crate) const DEFAULT_PROVIDER_TIMEOUT: Duration = Duration::from_secs(600);
pub(crate) const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Worst-case completion length for a model neither the config nor the
/// price table gives one for.
pub(crate) const FALLBACK_MAX_OUTPUT_TOKENS: u64 = 4096;
pub(crate) const DEFAULT_OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
pub(crate) const DEFAULT_ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com/v1";
/// Azure OpenAI's current GA data-plane `api-version`.
pub(crate) const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";
/// Longest busy-poll window: past a few milliseconds the provider's own
/// latency dominates and spinning only burns CPU.
const MAX_BUSY_POLL_US: u64 = 10_000;

/// The names the gateway gives the policies it makes itself: a team's or a
/// key's `budget_usd` (`team-budget`, `key-budget`), a key's per-minute
/// limits (`key-rate`) and `models` lists (`team-models`, `key-models`). A
/// config policy of the same name would be taken for the implicit one where
/// policies are told apart by name (deduplication, counters, metrics).
pub(crate) const RESERVED_POLICY_NAMES: &[&str] = &[
    "team-budget",
    "key-budget",
    "key-rate",
    "team-models",
    "key-models",
];

fn line_of<T>(spanned: &Spanned<T>) -> Option<usize> {
    usize::try_from(spanned.referenced.line())
        .ok()
        .filter(|&line| line > 0)
}

fn names_of<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let names: Vec<&str> = names.map(String::as_str).collect();
    if names.is_empty() {
        "none are defined".to_owned()
    } else {
        format!("known: {}", names.join(", "))
    }
}

/// Shows a connection string with any password replaced by `*****`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:*****{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// An absolute `http(s)://host…` URL, or why not.
fn check_http_url(url: &str) -> Result<(), &'static str> {
    if !url.contains("://") {
        return Err("not an absolute URL (it needs `http://` or `https://`)");
    }
    let uri: http::Uri = url.parse().map_err(|_| "not a valid URL")?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err("not an `http://` or `https://` URL"),
        None => return Err("not an absolute URL (it needs `http://` or `https://`)"),
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err("a URL without a host"),
    }
}

pub(crate) struct Validator<'e> {
    env: &'e dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
}

impl<'e> Validator<'e> {
    pub(crate) fn new(env: &'e dyn Fn(&str) -> Option<String>) -> Self {
        Validator {
            env,
            problems: Vec::new(),
        }
    }

    fn error(&mut self, line: Option<usize>, message: String) {
        // One problem per output line, even when a quoted value holds a newline.
        let message = if message.contains(char::is_control) {
            message
                .chars()
                .map(|c| match c.is_control() {
                    true => c.escape_default().to_string(),
                    false => c.to_string(),
                })
                .collect::<String>()
        } else {
            message
        };
        self.problems.push(Problem { line, message });
    }

    /// The string with `${VAR}` replaced. The error names the variable,
    /// never the value: the string may be a key.
    fn text(&mut self, text: &Text, path: &str) -> Option<String> {
        match interpolate(&text.value, self.env) {
            Ok(value) => Some(value),
            Err(err) => {
                self.error(line_of(text), format!("{path}: {}", err.message()));
                None
            }
        }
    }

    /// A name as other entries will refer to it. Interpolation problems are
    /// reported where the name is defined, not at every reference.
    fn quiet_text(&self, text: &Text) -> String {
        interpolate(&text.value, self.env).unwrap_or_else(|_| text.value.clone())
    }

    fn required<'a, T>(
        &mut self,
        value: &'a Option<T>,
        parent_line: Option<usize>,
        parent: &str,
        key: &str,
    ) -> Option<&'a T> {
        if value.is_none() {
            self.error(parent_line, format!("{parent}: missing `{key}`"));
        }
        value.as_ref()
    }

    /// A scalar as a string; numbers are accepted as written (`name: 2024`).
    fn scalar_text(&mut self, value: &Value, path: &str) -> Option<String> {
        match &value.value {
            Scalar::Str(s) => match interpolate(s, self.env) {
                Ok(s) => Some(s),
                Err(err) => {
                    self.error(line_of(value), format!("{path}: {}", err.message()));
                    None
                }
            },
            other => Some(other.to_string()),
        }
    }

    fn number(&mut self, value: &Value, path: &str) -> Option<f64> {
        let parsed = match &value.value {
            Scalar::Int(n) => Some(*n as f64),
            Scalar::Float(x) => Some(*x),
            Scalar::Bool(_) => None,
            Scalar::Str(_) => {
                let text = self.scalar_text(value, path)?;
                text.trim().parse::<f64>().ok()
            }
        };
        match parsed {
            Some(x) if x.is_finite() => Some(x),
            _ => {
                let shown = self.scalar_text(value, path)?;
                self.error(line_of(value), format!("{path}: `{shown}` is not a number"));
                None
            }
        }
    }

    /// A whole number of at least `min`.
    fn whole(&mut self, value: &Value, path: &str, min: u64) -> Option<u64> {
        let parsed: Option<i128> = match &value.value {
            Scalar::Int(n) => Some(*n),
            Scalar::Float(x) if x.fract() == 0.0 && x.abs() < 1e30 => Some(*x as i128),
            Scalar::Float(_) | Scalar::Bool(_) => None,
            Scalar::Str(_) => {
                let text = self.scalar_text(value, path)?;
                text.trim().parse::<i128>().ok()
            }
        };
        let Some(n) = parsed else {
            let shown = self.scalar_text(value, path)?;
            self.error(
                line_of(value),
                format!("{path}: `{shown}` is not a whole number"),
            );
            return None;
        };
        if n < i128::from(min) {
            self.error(
                line_of(value),
                format!("{path}: `{n}` is below the minimum of {min}"),
            );
            return None;
        }
        match u64::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(line_of(value), format!("{path}: `{n}` is too large"));
                None
            }
        }
    }

    fn whole_u32(&mut self, value: &Value, path: &str, min: u64) -> Option<u32> {
        let n = self.whole(value, path, min)?;
        match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    line_of(value),
                    format!("{path}: `{n}` is too large (at most {})", u32::MAX),
                );
                None
            }
        }
    }

    fn boolean(&mut self, value: &Value, path: &str) -> Option<bool> {
        let parsed = match &value.value {
            Scalar::Bool(b) => Some(*b),
            Scalar::Str(_) => match self.scalar_text(value, path)?.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            Scalar::Int(_) | Scalar::Float(_) => None,
        };
        if parsed.is_none() {
            let shown = self.scalar_text(value, path)?;
            self.error(
                line_of(value),
                format!("{path}: `{shown}` is not `true` or `false`"),
            );
        }
        parsed
    }

    /// Seconds as a duration, strictly positive unless `allow_zero`.
    fn seconds(&mut self, value: &Value, path: &str, allow_zero: bool) -> Option<Duration> {
        let secs = self.number(value, path)?;
        if secs < 0.0 || (!allow_zero && secs == 0.0) || secs > 1e9 {
            let bound = if allow_zero {
                "0 or more"
            } else {
                "more than 0"
            };
            self.error(
                line_of(value),
                format!("{path}: `{secs}` is not a number of seconds ({bound})"),
            );
            return None;
        }
        Some(Duration::from_secs_f64(secs))
    }

    fn usd(&mut self, value: &Value, path: &str, what: &str) -> Option<NanoUsd> {
        let usd = self.number(value, path)?;
        if usd < 0.0 {
            self.error(
                line_of(value),
                format!("{path}: `{usd}` is negative; {what} is 0 or more USD"),
            );
            return None;
        }
        match NanoUsd::from_usd(usd) {
            Some(nanos) => Some(nanos),
            None => {
                self.error(line_of(value), format!("{path}: `{usd}` USD is too large"));
                None
            }
        }
    }

    fn one_of<T: Copy>(&mut self, text: &Text, path: &str, choices: &[(&str, T)]) -> Option<T> {
        let value = self.text(text, path)?;
        if let Some((_, choice)) = choices.iter().find(|(name, _)| *name == value) {
            return Some(*choice);
        }
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        self.error(
            line_of(text),
            format!("{path}: `{value}` is not one of {}", names.join(", ")),
        );
        None
    }

    fn address(&mut self, text: &Text, path: &str) -> Option<SocketAddr> {
        let value = self.text(text, path)?;
        match value.trim().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    line_of(text),
                    format!(
                        "{path}: `{value}` is not an IP address and port like `127.0.0.1:4000`"
                    ),
                );
                None
            }
        }
    }

    fn http_url(&mut self, text: &Text, path: &str) -> Option<String> {
        let value = self.text(text, path)?;
        match check_http_url(&value) {
            Ok(()) => Some(value.trim_end_matches('/').to_owned()),
            Err(why) => {
                self.error(
                    line_of(text),
                    format!("{path}: `{}` is {why}", redact_url(&value)),
                );
                None
            }
        }
    }

    /// Each name once; a repeat is reported with the line of the first.
    fn unique(
        &mut self,
        seen: &mut HashMap<String, (String, Option<usize>)>,
        name: &str,
        line: Option<usize>,
        path: &str,
    ) {
        if let Some((first_path, first_line)) = seen.get(name) {
            let at = first_line
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            self.error(
                line,
                format!("{path}: `{name}` is already defined by {first_path}{at}"),
            );
        } else {
            seen.insert(name.to_owned(), (path.to_owned(), line));
        }
    }

    pub(crate) fn finish(mut self, raw: &RawConfig) -> Result<Config, Vec<Problem>> {
        let config = self.config(raw);
        // File order; problems without a line (absent top-level keys) first.
        self.problems.sort_by_key(|p| p.line);
        match config {
            Some(config) if self.problems.is_empty() => Ok(config),
            _ if self.problems.is_empty() => Err(vec![Problem {
                line: None,
                message: "the config is invalid, but no single problem was identified; please report this".to_owned(),
            }]),
            _ => Err(self.problems),
        }
    }

    /// Validates everything, returning a config only when every part was
    /// valid (problems are collected on `self` either way).
    fn config(&mut self, raw: &RawConfig) -> Option<Config> {
        let listen = match &raw.listen {
            Some(text) => self.address(text, "listen"),
            None => DEFAULT_LISTEN.parse().ok(),
        };
        let admin_listen = raw.admin_listen.as_ref().map(|t| {
            let addr = self.address(t, "admin_listen")?;
            if Some(addr) == listen {
                self.error(
                    line_of(t),
                    format!("admin_listen: `{addr}` is also `listen`; leave `admin_listen` out to serve the admin API on the main listener"),
                );
                return None;
            }
            Some(addr)
        });
        let admin_key = raw.admin_key.as_ref().map(|t| self.text(t, "admin_key"));
        let store = match &raw.store {
            Some(text) => self.store(text),
            None => Some(DEFAULT_STORE.to_owned()),
        };
        let counters = match &raw.counters {
            Some(text) => self.counters(text),
            None => Some(CountersConfig::Memory),
        };
        let counters_unavailable = raw.counters_unavailable.as_ref().map(|t| {
            self.one_of(
                t,
                "counters_unavailable",
                &[
                    ("reject", CountersUnavailable::Reject),
                    ("allow_local", CountersUnavailable::AllowLocal),
                ],
            )
        });
        let max_body_bytes = raw.max_body_bytes.as_ref().map(|v| {
            self.whole(v, "max_body_bytes", 1)
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
        });
        let log_bodies = raw.log_bodies.as_ref().map(|v| {
            let on = self.boolean(v, "log_bodies");
            // Storing prompts and completions is not built yet; saying so
            // beats silently storing nothing when the file asks for it.
            if on == Some(true) {
                self.error(
                    line_of(v),
                    "log_bodies: `true` is not supported yet: tollgate stores no prompts or completions; \
                     remove the key or set it to `false`"
                        .to_owned(),
                );
            }
            on
        });
        let drain_timeout = raw
            .drain_timeout_s
            .as_ref()
            .map(|v| self.seconds(v, "drain_timeout_s", true));
        let busy_poll = raw.busy_poll_us.as_ref().map(|v| {
            let us = self.whole(v, "busy_poll_us", 0)?;
            if us > MAX_BUSY_POLL_US {
                self.error(
                    line_of(v),
                    format!(
                        "busy_poll_us: `{us}` is above the maximum of {MAX_BUSY_POLL_US} \
                         (a longer spin only burns CPU; 0 turns busy-polling off)"
                    ),
                );
                return None;
            }
            Some(Duration::from_micros(us))
        });
        let journal_dir = raw.journal_dir.as_ref().map(|t| {
            let dir = self.text(t, "journal_dir")?;
            if dir.trim().is_empty() {
                self.error(
                    line_of(t),
                    "journal_dir: an empty path names no directory; leave the key out to keep the spend journal next to the store".to_owned(),
                );
                return None;
            }
            Some(std::path::PathBuf::from(dir))
        });

        let providers = self.providers(raw.providers.as_deref().unwrap_or_default());
        let provider_names: Vec<String> = raw
            .providers
            .iter()
            .flatten()
            .filter_map(|p| p.value.name.as_ref().map(|n| self.quiet_text(n)))
            .collect();
        let models = self.models(raw.models.as_deref().unwrap_or_default(), &provider_names);
        let policies = self.policies(raw.policies.as_deref().unwrap_or_default());
        let policy_names: Vec<String> = raw
            .policies
            .iter()
            .flatten()
            .filter_map(|p| p.value.name.as_ref().map(|n| self.quiet_text(n)))
            .collect();
        let teams = self.teams(raw.teams.as_deref().unwrap_or_default(), &policy_names);
        let defaults = match &raw.defaults {
            Some(defaults) => self.defaults(defaults, &policy_names),
            None => Some(Defaults::default()),
        };
        let alerts = raw.alerts.as_ref().map(|a| self.alerts(a));
        let routing = raw.routing.as_ref().map(|r| self.routing(r));
        let telemetry = raw.telemetry.as_ref().map(|t| self.telemetry(t));
        let cache = raw.cache.as_ref().map(|c| self.cache(c));

        let providers = providers?;
        let mut models = models?;
        self.bedrock_region_prices(
            raw.models.as_deref().unwrap_or_default(),
            &models,
            &providers,
        );
        models::anthropic_cache_writes(&mut models, &providers);
        Some(Config {
            listen: listen?,
            admin_listen: present(admin_listen)?,
            admin_key: present(admin_key)?
                .filter(|key| !key.is_empty())
                .map(Secret::new),
            store: Secret::new(store?),
            counters: counters?,
            counters_unavailable: present(counters_unavailable)?.unwrap_or_default(),
            max_body_bytes: present(max_body_bytes)?.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            log_bodies: present(log_bodies)?.unwrap_or(false),
            drain_timeout: present(drain_timeout)?.unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            busy_poll: present(busy_poll)?.unwrap_or(crate::server::busy_poll::DEFAULT_WINDOW),
            journal_dir: present(journal_dir)?,
            providers,
            models,
            policies: policies?,
            teams: teams?,
            defaults: defaults?,
            alerts: present(alerts)?,
            routing: present(routing)?.unwrap_or_default(),
            telemetry: present(telemetry)?,
            cache: present(cache)?.flatten(),
        })
    }

    fn store(&mut self, text: &Text) -> Option<String> {
        let value = self.text(text, "store")?;
        let ok = value.starts_with("sqlite:")
            || value.starts_with("postgres://")
            || value.starts_with("postgresql://");
        if !ok {
            self.error(
                line_of(text),
                format!(
                    "store: `{}` is neither a `sqlite:` nor a `postgres://` URL (e.g. `sqlite://tollgate.db`, `postgres://user@host/db`)",
                    redact_url(&value)
                ),
            );
            return None;
        }
        Some(value)
    }

    fn counters(&mut self, text: &Text) -> Option<CountersConfig> {
        let value = self.text(text, "counters")?;
        if value == "memory" {
            return Some(CountersConfig::Memory);
        }
        let host = value
            .strip_prefix("redis://")
            .or_else(|| value.strip_prefix("rediss://"));
        match host {
            Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => {
                Some(CountersConfig::Redis(Secret::new(value)))
            }
            _ => {
                self.error(
                    line_of(text),
                    format!(
                        "counters: `{}` is neither `memory` nor a `redis://host:port` URL",
                        redact_url(&value)
                    ),
                );
                None
            }
        }
    }
}

/// An optional key's validated value: absent is fine (`Some(None)`),
/// present and valid is `Some(Some(v))`, present and invalid is `None`.
fn present<T>(value: Option<Option<T>>) -> Option<Option<T>> {
    match value {
        None => Some(None),
        Some(Some(v)) => Some(Some(v)),
        Some(None) => None,
    }
}
