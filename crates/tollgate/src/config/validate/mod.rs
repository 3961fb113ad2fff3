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

mod cloud;
mod google;
mod routing;
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
const DEFAULT_THRESHOLDS: [f64; 3] = [0.5, 0.8, 1.0];
/// `cache.ttl_s` and `cache.max_mib` when `cache.enabled` sets neither (SPEC §9).
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(300);
const DEFAULT_CACHE_MIB: u64 = 64;
const MAX_CACHE_TTL_S: u64 = 30 * 86_400;
const MAX_CACHE_MIB: u64 = 1024 * 1024;

const COST_LIMIT_KEYS: &[&str] = &["limit_usd", "period", "action", "on_insufficient"];
const RATE_LIMIT_KEYS: &[&str] = &["requests_per_minute", "tokens_per_minute", "max_parallel"];
const LOOP_GUARD_KEYS: &[&str] = &["max_identical", "window_seconds", "on_trip"];
const MODEL_ACCESS_KEYS: &[&str] = &["allow"];
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
        anthropic_cache_writes(&mut models, &providers);
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
            busy_poll: present(busy_poll)?.unwrap_or(crate::busy_poll::DEFAULT_WINDOW),
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

    fn providers(&mut self, raw: &[Spanned<RawProvider>]) -> Option<Vec<ProviderConfig>> {
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in raw.iter().enumerate() {
            let path = format!("providers[{i}]");
            match self.provider(item, &path, &mut seen) {
                Some(provider) => out.push(provider),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn provider(
        &mut self,
        item: &Spanned<RawProvider>,
        path: &str,
        seen: &mut HashMap<String, (String, Option<usize>)>,
    ) -> Option<ProviderConfig> {
        let raw = &item.value;
        let line = line_of(item);
        let name = self.required(&raw.name, line, path, "name").and_then(|t| {
            let name = self.text(t, &format!("{path}.name"))?;
            self.unique(seen, &name, line_of(t), &format!("{path}.name"));
            Some(name)
        });
        let kind = self.required(&raw.kind, line, path, "kind").and_then(|t| {
            self.one_of(
                t,
                &format!("{path}.kind"),
                &[
                    ("openai", ProviderKind::OpenAi),
                    ("azure", ProviderKind::Azure),
                    ("anthropic", ProviderKind::Anthropic),
                    ("gemini", ProviderKind::Gemini),
                    ("vertex", ProviderKind::Vertex),
                    ("mock", ProviderKind::Mock),
                    ("bedrock", ProviderKind::Bedrock),
                ],
            )
        });
        let base_url = raw
            .base_url
            .as_ref()
            .map(|t| (self.http_url(t, &format!("{path}.base_url")), line_of(t)));
        let api_key = raw
            .api_key
            .as_ref()
            .map(|t| self.text(t, &format!("{path}.api_key")));
        let timeout = raw
            .timeout_s
            .as_ref()
            .map(|v| self.seconds(v, &format!("{path}.timeout_s"), false));
        let api_version = raw
            .api_version
            .as_ref()
            .map(|t| (self.text(t, &format!("{path}.api_version")), line_of(t)));

        let kind = kind?;
        let vertex = self.google_keys(raw, kind, line, path);
        let cloud = self.cloud(raw, kind, path, line);
        let base_url = match (kind, base_url) {
            (_, Some((url, _))) if kind != ProviderKind::Mock => url?,
            (ProviderKind::Mock, Some((_, url_line))) => {
                self.error(
                    url_line,
                    format!("{path}.base_url: a `mock` provider is built in and has no URL (to call a mock server over HTTP, use kind `openai`)"),
                );
                return None;
            }
            (ProviderKind::OpenAi, _) => DEFAULT_OPENAI_BASE_URL.to_owned(),
            (ProviderKind::Anthropic, _) => DEFAULT_ANTHROPIC_BASE_URL.to_owned(),
            (ProviderKind::Gemini, _) => google::DEFAULT_GEMINI_BASE_URL.to_owned(),
            (ProviderKind::Vertex, _) => match &vertex {
                Some(Some(v)) => google::default_vertex_base_url(&v.region),
                _ => return None,
            },
            (ProviderKind::Azure, _) => {
                self.error(
                    line,
                    format!("{path}: an `azure` provider needs `base_url` (e.g. `https://RESOURCE.openai.azure.com/openai`)"),
                );
                return None;
            }
            (ProviderKind::Mock, None) => String::new(),
            (ProviderKind::Bedrock, Some((url, _))) => url?,
            (ProviderKind::Bedrock, None) => {
                match cloud.as_ref().and_then(|c| c.bedrock.as_ref()) {
                    Some(b) => format!("https://bedrock-runtime.{}.amazonaws.com", b.region),
                    None => return None,
                }
            }
        };
        let cloud = cloud?;
        let api_version = match (kind, api_version) {
            (ProviderKind::Azure, Some((version, _))) => Some(version?),
            (ProviderKind::Azure, None) => Some(DEFAULT_AZURE_API_VERSION.to_owned()),
            (_, Some((_, version_line))) => {
                self.error(
                    version_line,
                    format!("{path}.api_version: only an `azure` provider takes an `api_version`"),
                );
                return None;
            }
            (_, None) => None,
        };
        Some(ProviderConfig {
            name: name?,
            kind,
            base_url,
            api_key: present(api_key)?.filter(|k| !k.is_empty()).map(Secret::new),
            timeout: present(timeout)?.unwrap_or(DEFAULT_PROVIDER_TIMEOUT),
            api_version,
            vertex: vertex?,
            bedrock: cloud.bedrock,
            entra: cloud.entra,
        })
    }

    fn models(
        &mut self,
        raw: &[Spanned<RawModel>],
        providers: &[String],
    ) -> Option<Vec<ModelConfig>> {
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in raw.iter().enumerate() {
            match self.model(item, &format!("models[{i}]"), providers, &mut seen) {
                Some(model) => out.push(model),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn model(
        &mut self,
        item: &Spanned<RawModel>,
        path: &str,
        providers: &[String],
        seen: &mut HashMap<String, (String, Option<usize>)>,
    ) -> Option<ModelConfig> {
        let raw = &item.value;
        let line = line_of(item);
        let name = self.required(&raw.name, line, path, "name").and_then(|t| {
            let name = self.text(t, &format!("{path}.name"))?;
            self.unique(seen, &name, line_of(t), &format!("{path}.name"));
            Some(name)
        });
        let targets = match raw.targets.as_deref() {
            None | Some([]) => {
                self.error(
                    line,
                    format!("{path}: needs at least one entry in `targets` (`- provider: NAME` with `model: PROVIDER_MODEL`)"),
                );
                None
            }
            Some(targets) => self.targets(targets, path, name.as_deref(), providers),
        };
        let price = raw
            .price
            .as_ref()
            .map(|p| self.price(p, &format!("{path}.price")));
        let max_output_tokens = raw
            .max_output_tokens
            .as_ref()
            .map(|v| self.whole(v, &format!("{path}.max_output_tokens"), 1));

        let name = name?;
        let targets = targets?;
        let strategy = self.strategy(raw.strategy.as_ref(), path, &targets)?;
        let builtin: Vec<_> = targets
            .iter()
            .map(|t| (t, builtin_price(&t.model)))
            .collect();
        let price = match price {
            Some(price) => price?,
            None => {
                let unpriced: Vec<String> = builtin
                    .iter()
                    .filter(|(_, price)| price.is_none())
                    .map(|(t, _)| format!("`{}` of provider `{}`", t.model, t.provider))
                    .collect();
                if !unpriced.is_empty() {
                    self.error(
                        line,
                        format!(
                            "{path}: no price for model `{name}`: the built-in price table has no {}; add `price: {{ input_per_mtok: …, output_per_mtok: … }}` (USD per 1M tokens; write 0 for a free model) so nothing is billed at $0 by accident",
                            unpriced.join(", ")
                        ),
                    );
                    return None;
                }
                worst_price(builtin.iter().filter_map(|(_, p)| p.map(|p| p.price)))
            }
        };
        let table_max = builtin
            .iter()
            .filter_map(|(_, p)| p.map(|p| p.max_output_tokens))
            .max();
        let max_output_tokens = present(max_output_tokens)?
            .or(table_max)
            .unwrap_or(FALLBACK_MAX_OUTPUT_TOKENS);
        Some(ModelConfig {
            name,
            targets,
            price,
            max_output_tokens,
            strategy,
        })
    }

    fn targets(
        &mut self,
        raw: &[Spanned<RawTarget>],
        model_path: &str,
        model_name: Option<&str>,
        providers: &[String],
    ) -> Option<Vec<Target>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (j, item) in raw.iter().enumerate() {
            let path = format!("{model_path}.targets[{j}]");
            let line = line_of(item);
            let provider = self.required(&item.value.provider, line, &path, "provider").and_then(|t| {
                let provider = self.text(t, &format!("{path}.provider"))?;
                if providers.contains(&provider) {
                    Some(provider)
                } else {
                    let known = names_of(providers.iter());
                    self.error(
                        line_of(t),
                        format!("{path}.provider: `{provider}` is not a provider in `providers` ({known})"),
                    );
                    None
                }
            });
            let model = match &item.value.model {
                Some(t) => self.text(t, &format!("{path}.model")),
                // The provider's name for the model defaults to the client's.
                None => model_name.map(str::to_owned),
            };
            let weight = item
                .value
                .weight
                .as_ref()
                .map(|v| self.whole_u32(v, &format!("{path}.weight"), 1));
            match (provider, model, present(weight)) {
                (Some(provider), Some(model), Some(weight)) => out.push(Target {
                    provider,
                    model,
                    weight,
                }),
                _ => ok = false,
            }
        }
        let weighted = raw.iter().filter(|t| t.value.weight.is_some()).count();
        if weighted != 0 && weighted != raw.len() {
            let line = raw.first().and_then(line_of);
            self.error(
                line,
                format!("{model_path}.targets: set `weight` on every target (split by weight) or on none (fallback in order)"),
            );
            return None;
        }
        ok.then_some(out)
    }

    fn price(&mut self, item: &Spanned<RawPrice>, path: &str) -> Option<Price> {
        let raw = &item.value;
        let line = line_of(item);
        let input = self
            .required(&raw.input_per_mtok, line, path, "input_per_mtok")
            .and_then(|v| self.usd(v, &format!("{path}.input_per_mtok"), "a price"));
        let output = self
            .required(&raw.output_per_mtok, line, path, "output_per_mtok")
            .and_then(|v| self.usd(v, &format!("{path}.output_per_mtok"), "a price"));
        let mut optional = |value: &Option<Value>, key: &str| {
            value
                .as_ref()
                .map(|v| self.usd(v, &format!("{path}.{key}"), "a price"))
        };
        let cached = optional(&raw.cached_input_per_mtok, "cached_input_per_mtok");
        let write = optional(&raw.cache_write_per_mtok, "cache_write_per_mtok");
        let write_1h = optional(&raw.cache_write_1h_per_mtok, "cache_write_1h_per_mtok");
        Some(Price {
            input_per_mtok: input?,
            output_per_mtok: output?,
            cached_input_per_mtok: present(cached)?,
            cache_write_per_mtok: present(write)?,
            cache_write_1h_per_mtok: present(write_1h)?,
        })
    }

    fn policies(&mut self, raw: &[Spanned<RawPolicy>]) -> Option<Vec<Policy>> {
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in raw.iter().enumerate() {
            match self.policy(item, &format!("policies[{i}]"), &mut seen) {
                Some(policy) => out.push(policy),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn policy(
        &mut self,
        item: &Spanned<RawPolicy>,
        path: &str,
        seen: &mut HashMap<String, (String, Option<usize>)>,
    ) -> Option<Policy> {
        let raw = &item.value;
        let line = line_of(item);
        let name = self.required(&raw.name, line, path, "name").and_then(|t| {
            let name = self.text(t, &format!("{path}.name"))?;
            self.unique(seen, &name, line_of(t), &format!("{path}.name"));
            if RESERVED_POLICY_NAMES.contains(&name.as_str()) {
                self.error(
                    line_of(t),
                    format!(
                        "{path}.name: `{name}` is reserved for a policy the gateway makes itself (reserved: {}); \
                         choose another name",
                        RESERVED_POLICY_NAMES.join(", ")
                    ),
                );
                return None;
            }
            Some(name)
        });
        let mode = match &raw.mode {
            Some(t) => self.one_of(
                t,
                &format!("{path}.mode"),
                &[
                    ("enforce", PolicyMode::Enforce),
                    ("shadow", PolicyMode::Shadow),
                ],
            ),
            None => Some(PolicyMode::Enforce),
        };
        #[derive(Clone, Copy)]
        enum Type {
            Cost,
            Rate,
            Loop,
            Access,
        }
        let kind = self.required(&raw.kind, line, path, "type").and_then(|t| {
            self.one_of(
                t,
                &format!("{path}.type"),
                &[
                    ("cost-limit", Type::Cost),
                    ("rate-limit", Type::Rate),
                    ("loop-guard", Type::Loop),
                    ("model-access", Type::Access),
                ],
            )
        });
        let config = self.required(&raw.config, line, path, "config");
        let (kind, config) = (kind?, config?);
        let config_path = format!("{path}.config");
        let (type_name, allowed) = match kind {
            Type::Cost => ("cost-limit", COST_LIMIT_KEYS),
            Type::Rate => ("rate-limit", RATE_LIMIT_KEYS),
            Type::Loop => ("loop-guard", LOOP_GUARD_KEYS),
            Type::Access => ("model-access", MODEL_ACCESS_KEYS),
        };
        let mut foreign = false;
        for (key, key_line) in set_keys(&config.value) {
            if !allowed.contains(&key) {
                foreign = true;
                self.error(
                    key_line.or(line_of(config)),
                    format!(
                        "{config_path}.{key}: not a setting of a `{type_name}` policy (its settings: {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
        let kind = match kind {
            Type::Cost => self
                .cost_limit(config, &config_path)
                .map(PolicyKind::CostLimit),
            Type::Rate => self
                .rate_limit(config, &config_path)
                .map(PolicyKind::RateLimit),
            Type::Loop => self
                .loop_guard(config, &config_path)
                .map(PolicyKind::LoopGuard),
            Type::Access => self
                .model_access(config, &config_path)
                .map(PolicyKind::ModelAccess),
        };
        if foreign {
            return None;
        }
        Some(Policy {
            name: name?,
            mode: mode?,
            kind: kind?,
        })
    }

    fn cost_limit(&mut self, item: &Spanned<RawPolicyConfig>, path: &str) -> Option<CostLimit> {
        let raw = &item.value;
        let line = line_of(item);
        let limit = self
            .required(&raw.limit_usd, line, path, "limit_usd")
            .and_then(|v| self.usd(v, &format!("{path}.limit_usd"), "a cost limit"));
        let period = self
            .required(&raw.period, line, path, "period")
            .and_then(|t| {
                let value = self.text(t, &format!("{path}.period"))?;
                let period = Period::parse(&value);
                if period.is_none() {
                    self.error(
                        line_of(t),
                        format!("{path}.period: `{value}` is not one of {}", Period::NAMES),
                    );
                }
                period
            });
        let action = match &raw.action {
            Some(t) => self.one_of(
                t,
                &format!("{path}.action"),
                &[("reject", CostAction::Reject), ("alert", CostAction::Alert)],
            ),
            None => Some(CostAction::default()),
        };
        let on_insufficient = match &raw.on_insufficient {
            Some(t) => self.one_of(
                t,
                &format!("{path}.on_insufficient"),
                &[
                    ("reject", OnInsufficient::Reject),
                    ("clamp", OnInsufficient::Clamp),
                ],
            ),
            None => Some(OnInsufficient::default()),
        };
        Some(CostLimit {
            limit: limit?,
            period: period?,
            action: action?,
            on_insufficient: on_insufficient?,
        })
    }

    fn rate_limit(&mut self, item: &Spanned<RawPolicyConfig>, path: &str) -> Option<RateLimit> {
        let raw = &item.value;
        let mut field = |value: &Option<Value>, key: &str| -> Option<Option<u64>> {
            match value {
                Some(v) => self.whole(v, &format!("{path}.{key}"), 1).map(Some),
                None => Some(None),
            }
        };
        let rpm = field(&raw.requests_per_minute, "requests_per_minute");
        let tpm = field(&raw.tokens_per_minute, "tokens_per_minute");
        let parallel = field(&raw.max_parallel, "max_parallel");
        if raw.requests_per_minute.is_none()
            && raw.tokens_per_minute.is_none()
            && raw.max_parallel.is_none()
        {
            self.error(
                line_of(item),
                format!(
                    "{path}: a `rate-limit` policy needs at least one of {}",
                    RATE_LIMIT_KEYS.join(", ")
                ),
            );
            return None;
        }
        Some(RateLimit {
            requests_per_minute: rpm?,
            tokens_per_minute: tpm?,
            max_parallel: parallel?,
        })
    }

    fn loop_guard(&mut self, item: &Spanned<RawPolicyConfig>, path: &str) -> Option<LoopGuard> {
        let raw = &item.value;
        let line = line_of(item);
        let max_identical = self
            .required(&raw.max_identical, line, path, "max_identical")
            .and_then(|v| self.whole_u32(v, &format!("{path}.max_identical"), 1));
        let window = match &raw.window_seconds {
            Some(v) => self
                .whole(v, &format!("{path}.window_seconds"), 1)
                .map(Duration::from_secs),
            None => Some(Duration::from_secs(60)),
        };
        let on_trip = match &raw.on_trip {
            Some(t) => self.one_of(
                t,
                &format!("{path}.on_trip"),
                &[("throttle", OnTrip::Throttle), ("suspend", OnTrip::Suspend)],
            ),
            None => Some(OnTrip::default()),
        };
        Some(LoopGuard {
            max_identical: max_identical?,
            window: window?,
            on_trip: on_trip?,
        })
    }

    fn model_access(&mut self, item: &Spanned<RawPolicyConfig>, path: &str) -> Option<ModelAccess> {
        let allow = self.required(&item.value.allow, line_of(item), path, "allow")?;
        let mut out = Vec::new();
        let mut ok = true;
        for (k, pattern) in allow.value.iter().enumerate() {
            match self.glob(pattern, &format!("{path}.allow[{k}]")) {
                Some(p) => out.push(p),
                None => ok = false,
            }
        }
        ok.then_some(ModelAccess { allow: out })
    }

    fn glob(&mut self, text: &Text, path: &str) -> Option<String> {
        let pattern = self.text(text, path)?;
        if pattern.trim().is_empty() {
            self.error(
                line_of(text),
                format!("{path}: an empty pattern matches no model"),
            );
            return None;
        }
        Some(pattern)
    }

    fn policy_refs(&mut self, raw: &[Text], path: &str, known: &[String]) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (k, name) in raw.iter().enumerate() {
            let item_path = format!("{path}[{k}]");
            let Some(value) = self.text(name, &item_path) else {
                ok = false;
                continue;
            };
            if known.contains(&value) {
                out.push(value);
            } else {
                ok = false;
                let names = names_of(known.iter());
                self.error(
                    line_of(name),
                    format!("{item_path}: `{value}` is not a policy in `policies` ({names})"),
                );
            }
        }
        ok.then_some(out)
    }

    fn teams(&mut self, raw: &[Spanned<RawTeam>], policies: &[String]) -> Option<Vec<TeamConfig>> {
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in raw.iter().enumerate() {
            let path = format!("teams[{i}]");
            let team = &item.value;
            let id = self
                .required(&team.id, line_of(item), &path, "id")
                .and_then(|t| {
                    let id = self.text(t, &format!("{path}.id"))?;
                    if id.trim().is_empty() {
                        self.error(line_of(t), format!("{path}.id: a team id cannot be empty"));
                        return None;
                    }
                    self.unique(&mut seen, &id, line_of(t), &format!("{path}.id"));
                    Some(id)
                });
            let refs = self.policy_refs(
                team.policies.as_deref().unwrap_or_default(),
                &format!("{path}.policies"),
                policies,
            );
            let models = team.models.as_ref().map(|globs| {
                let mut out = Vec::new();
                let mut ok = true;
                for (k, glob) in globs.iter().enumerate() {
                    match self.glob(glob, &format!("{path}.models[{k}]")) {
                        Some(g) => out.push(g),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            });
            let cache = team
                .cache
                .as_ref()
                .map(|v| self.boolean(v, &format!("{path}.cache")));
            match (id, refs, present(models), present(cache)) {
                (Some(id), Some(policies), Some(models), Some(cache)) => out.push(TeamConfig {
                    id,
                    policies,
                    models,
                    cache: cache.unwrap_or(true),
                }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn defaults(&mut self, item: &Spanned<RawDefaults>, policies: &[String]) -> Option<Defaults> {
        let refs = self.policy_refs(
            item.value.policies.as_deref().unwrap_or_default(),
            "defaults.policies",
            policies,
        )?;
        Some(Defaults { policies: refs })
    }

    fn alerts(&mut self, item: &Spanned<RawAlerts>) -> Option<AlertsConfig> {
        let raw = &item.value;
        let url = self
            .required(&raw.webhook_url, line_of(item), "alerts", "webhook_url")
            .and_then(|t| self.http_url(t, "alerts.webhook_url"));
        let thresholds = match &raw.thresholds {
            None => Some(DEFAULT_THRESHOLDS.to_vec()),
            Some(values) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (k, value) in values.iter().enumerate() {
                    let path = format!("alerts.thresholds[{k}]");
                    match self.number(value, &path) {
                        Some(x) if x > 0.0 && x <= 1.0 => out.push(x),
                        Some(x) => {
                            ok = false;
                            self.error(
                                line_of(value),
                                format!("{path}: `{x}` is not a fraction of the limit in (0, 1], e.g. `0.8` for 80%"),
                            );
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
        };
        let format = match &raw.format {
            None => Some(AlertFormat::default()),
            Some(t) => self.one_of(
                t,
                "alerts.format",
                &[("json", AlertFormat::Json), ("slack", AlertFormat::Slack)],
            ),
        };
        Some(AlertsConfig {
            webhook_url: url?,
            thresholds: thresholds?,
            format: format?,
        })
    }
}

impl Validator<'_> {
    /// `cache:`; `Some(None)` when it is written but not enabled.
    fn cache(&mut self, item: &Spanned<RawCache>) -> Option<Option<CacheConfig>> {
        let raw = &item.value;
        let enabled = raw
            .enabled
            .as_ref()
            .map(|v| self.boolean(v, "cache.enabled"));
        let ttl = raw.ttl_s.as_ref().map(|v| {
            let secs = self.whole(v, "cache.ttl_s", 1)?;
            if secs > MAX_CACHE_TTL_S {
                self.error(
                    line_of(v),
                    format!(
                        "cache.ttl_s: `{secs}` is above the maximum of {MAX_CACHE_TTL_S} (30 days)"
                    ),
                );
                return None;
            }
            Some(Duration::from_secs(secs))
        });
        let max_mib = raw.max_mib.as_ref().map(|v| {
            let mib = self.whole(v, "cache.max_mib", 1)?;
            if mib > MAX_CACHE_MIB {
                self.error(
                    line_of(v),
                    format!(
                        "cache.max_mib: `{mib}` is above the maximum of {MAX_CACHE_MIB} (1 TiB)"
                    ),
                );
                return None;
            }
            Some(mib)
        });
        let (enabled, ttl, max_mib) = (present(enabled)?, present(ttl)?, present(max_mib)?);
        // Off unless asked for: a cache serves answers without the provider,
        // which a config must say it wants.
        if enabled != Some(true) {
            return Some(None);
        }
        Some(Some(CacheConfig {
            ttl: ttl.unwrap_or(DEFAULT_CACHE_TTL),
            max_bytes: max_mib.unwrap_or(DEFAULT_CACHE_MIB) * 1024 * 1024,
        }))
    }
}

/// The keys set in a policy's `config`, with their lines.
fn set_keys(config: &RawPolicyConfig) -> Vec<(&'static str, Option<usize>)> {
    let mut keys = Vec::new();
    let mut value = |key: &'static str, v: &Option<Value>| {
        if let Some(v) = v {
            keys.push((key, line_of(v)));
        }
    };
    value("limit_usd", &config.limit_usd);
    value("requests_per_minute", &config.requests_per_minute);
    value("tokens_per_minute", &config.tokens_per_minute);
    value("max_parallel", &config.max_parallel);
    value("max_identical", &config.max_identical);
    value("window_seconds", &config.window_seconds);
    let mut text = |key: &'static str, t: &Option<Text>| {
        if let Some(t) = t {
            keys.push((key, line_of(t)));
        }
    };
    text("period", &config.period);
    text("action", &config.action);
    text("on_insufficient", &config.on_insufficient);
    text("on_trip", &config.on_trip);
    if let Some(allow) = &config.allow {
        keys.push(("allow", line_of(allow)));
    }
    keys.sort_by_key(|(_, line)| *line);
    keys
}

/// The highest of each price over a model's targets, so a reservation made
/// before the target is chosen covers whichever one serves the request.
/// The cached-input price is kept only when every target has one; a
/// cache-write price is the highest any target bills a write at (its own
/// rate, or its input rate), set when some target has one.
fn worst_price(prices: impl Iterator<Item = Price>) -> Price {
    let mut worst = Price::default();
    let mut cached = Some(NanoUsd::ZERO);
    let (mut write, mut write_1h) = (None, None);
    for p in prices {
        worst.input_per_mtok = worst.input_per_mtok.max(p.input_per_mtok);
        worst.output_per_mtok = worst.output_per_mtok.max(p.output_per_mtok);
        cached = match (cached, p.cached_input_per_mtok) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        write = write.max(Some(p.cache_write_rate()));
        write_1h = write_1h.max(Some(p.cache_write_1h_rate()));
    }
    worst.cached_input_per_mtok = cached;
    // A rate equal to the input rate needs no entry of its own.
    let own = |rate: Option<NanoUsd>| rate.filter(|&r| r > worst.input_per_mtok);
    worst.cache_write_per_mtok = own(write);
    worst.cache_write_1h_per_mtok = own(write_1h);
    worst
}

/// Gives the models Anthropic serves the cache-write rates Anthropic bills
/// (1.25× input for 5-minute writes, 2× for 1-hour ones) where their price
/// sets none: an Anthropic answer reports its writes, and a price written
/// with only `input_per_mtok` must not bill them below the provider. A
/// model is Anthropic's when a target goes to an `anthropic` provider or
/// names a Claude model (as Bedrock, Vertex and OpenAI-compatible routers
/// do). Any other model bills a write at its input rate unless its price
/// says otherwise.
fn anthropic_cache_writes(models: &mut [ModelConfig], providers: &[ProviderConfig]) {
    let anthropic = |t: &Target| {
        t.model.to_ascii_lowercase().contains("claude")
            || providers
                .iter()
                .any(|p| p.name == t.provider && p.kind == ProviderKind::Anthropic)
    };
    for model in models {
        if model.targets.iter().any(anthropic) {
            model.price = model.price.with_anthropic_cache_writes();
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
