//! The command line (SPEC §5): clap definitions for every command, and the
//! client commands (`keys`, `teams`, `spend`), which talk to a running
//! gateway over its admin API and print tables or, with `--json`, the API's
//! JSON. `main.rs` only parses and dispatches.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};
use http::Method;
use serde_json::{Value, json};

use crate::types::{Period, Secret};

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An AI gateway: virtual keys, hard budgets, rate limits and loop guards in front of LLM providers"
)]
pub struct Cli {
    /// Address of the gateway the client commands (`keys`, `teams`, `spend`) talk to.
    #[arg(
        long,
        env = "TOLLGATE_URL",
        default_value = "http://127.0.0.1:4000",
        global = true
    )]
    pub url: String,
    /// The gateway's admin key, for the client commands.
    #[arg(long, env = "TOLLGATE_ADMIN_KEY", global = true, hide_env_values = true, value_parser = parse_secret)]
    pub admin_key: Option<Secret<String>>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Work with config files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create, list, revoke and rotate virtual keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List and create teams.
    #[command(subcommand)]
    Teams(TeamsCommand),
    /// Show spend from the ledger.
    Spend(SpendArgs),
    /// Show each cost limit in force: limit, spent, reserved, remaining, reset time.
    Budgets {
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show the most recent requests from the ledger.
    Requests {
        #[arg(long)]
        team: Option<String>,
        /// Key id or prefix.
        #[arg(long)]
        key: Option<String>,
        /// Rows to show, 1 to 1000.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Show the audit log of admin changes, newest first.
    Audit(AuditArgs),
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// `admin-key`, `ui:<session>` or `signal:SIGHUP`.
    #[arg(long)]
    pub actor: Option<String>,
    /// e.g. `key.revoke`, `team.create`, `config.reload`.
    #[arg(long)]
    pub action: Option<String>,
    /// e.g. `key:<id>`, `team:<id>`, `config`.
    #[arg(long)]
    pub target: Option<String>,
    /// Only the last part of the log, e.g. `7d`, `12h`.
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    /// Rows to show, 1 to 1000.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Older rows: the `next_cursor` of a previous `--json` answer.
    #[arg(long)]
    pub cursor: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Config file; without it `./tollgate.yaml` if present, else embedded defaults.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// What `tollgate serve` passes to [`crate::app`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub log_format: LogFormat,
}

impl From<ServeArgs> for ServeOptions {
    fn from(a: ServeArgs) -> Self {
        ServeOptions {
            config: a.config,
            log_format: a.log_format,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file: prints `ok`, or every problem as `FILE:LINE: message` and exits 1.
    Check { file: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a virtual key; prints the key (shown only this once) on the first line.
    Create(KeysCreateArgs),
    /// List keys (never the keys themselves: their prefixes).
    List {
        #[arg(long)]
        team: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: it is rejected from the next request on.
    Revoke {
        /// Key id or prefix (`sk-tg-…`) as `keys list` shows it.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Give a key a new secret; the old one keeps working for the grace period.
    Rotate {
        id: String,
        /// How long the old secret keeps working, e.g. `1h`; 0 ends it at once.
        #[arg(long, value_parser = parse_duration, default_value = "0s")]
        grace: Duration,
        #[arg(long)]
        json: bool,
    },
    /// Lift a loop-guard suspension.
    Restore {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct KeysCreateArgs {
    /// The team the key belongs to (must exist).
    #[arg(long)]
    pub team: String,
    #[arg(long)]
    pub name: Option<String>,
    /// Models (or globs) the key may use, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// Config policies attached to the key, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub policies: Option<Vec<String>>,
    /// A cost limit for this key, in USD per `--period`.
    #[arg(long, requires = "period")]
    pub budget_usd: Option<f64>,
    #[arg(long, requires = "budget_usd", value_parser = parse_period)]
    pub period: Option<Period>,
    /// Requests per minute.
    #[arg(long)]
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    #[arg(long)]
    pub tpm: Option<u64>,
    /// Lifetime, e.g. `30d`, `12h`.
    #[arg(long, value_parser = parse_duration)]
    pub expires: Option<Duration>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum TeamsCommand {
    /// List teams, the config file's included (read-only).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Create a team.
    Create(TeamsCreateArgs),
}

#[derive(Debug, Args)]
pub struct TeamsCreateArgs {
    pub id: String,
    /// A cost limit for the whole team, in USD per `--period`.
    #[arg(long, requires = "period")]
    pub budget_usd: Option<f64>,
    #[arg(long, requires = "budget_usd", value_parser = parse_period)]
    pub period: Option<Period>,
    /// Config policies attached to the team, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub policies: Option<Vec<String>>,
    /// Models (or globs) the team may use, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub models: Option<Vec<String>>,
    /// The team's requests skip the response cache.
    #[arg(long)]
    pub no_cache: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SpendArgs {
    /// Group rows by `team`, `key`, `model` or `day`; one `total` row without it.
    #[arg(long, value_parser = ["team", "key", "model", "day"])]
    pub by: Option<String>,
    #[arg(long)]
    pub team: Option<String>,
    #[arg(long)]
    pub key: Option<String>,
    /// Only the last part of the ledger, e.g. `7d`, `12h`.
    #[arg(long, value_parser = parse_duration)]
    pub since: Option<Duration>,
    #[arg(long)]
    pub json: bool,
}

fn parse_secret(s: &str) -> Result<Secret<String>, String> {
    Ok(Secret::new(s.to_owned()))
}

fn parse_period(s: &str) -> Result<Period, String> {
    Period::parse(s).ok_or_else(|| format!("`{s}` is not one of {}", Period::NAMES))
}

/// `30d`, `12h`, `90m`, `45s` (and `2w`): a whole number and one unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration such as `30d`, `12h`, `90m` or `45s`");
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    n.checked_mul(secs_per)
        .map(Duration::from_secs)
        .ok_or_else(bad)
}

/// Why a client command failed; printed as is, then the process exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no admin key: pass `--admin-key` or set `TOLLGATE_ADMIN_KEY`")]
    NoAdminKey,
    #[error(
        "`{0}` is not a valid gateway URL (pass `--url` or set `TOLLGATE_URL`, e.g. `http://127.0.0.1:4000`)"
    )]
    BadUrl(String),
    #[error(
        "cannot reach tollgate at `{url}`: {source} (is `tollgate serve` running? set `--url` or `TOLLGATE_URL`)"
    )]
    Unreachable { url: String, source: reqwest::Error },
    /// The server's own error message.
    #[error("{message} (HTTP {status})")]
    Api { status: u16, message: String },
    #[error("unexpected answer from `{url}`: {message}")]
    BadResponse { url: String, message: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

/// The admin API client.
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    admin_key: Secret<String>,
}

impl Client {
    pub fn new(url: &str, admin_key: Option<Secret<String>>) -> Result<Self, CliError> {
        let admin_key = admin_key
            .filter(|k| !k.expose().is_empty())
            .ok_or(CliError::NoAdminKey)?;
        let base = reqwest::Url::parse(url.trim_end_matches('/'))
            .map_err(|_| CliError::BadUrl(url.to_owned()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(CliError::BadUrl(url.to_owned()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| CliError::Unreachable {
                url: url.to_owned(),
                source: e,
            })?;
        Ok(Client {
            http,
            base,
            admin_key,
        })
    }

    /// Sends one admin request and returns the JSON answer; non-2xx answers
    /// become [`CliError::Api`] with the server's message.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        let shown = url.to_string();
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(self.admin_key.expose());
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| CliError::Unreachable {
            url: shown.clone(),
            source: e,
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| CliError::Unreachable {
            url: shown.clone(),
            source: e,
        })?;
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if !status.is_success() {
            let message = parsed
                .as_ref()
                .and_then(|v| v.pointer("/error/message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_owned());
            let message = if message.is_empty() {
                format!("`{shown}` answered {status}")
            } else {
                message
            };
            return Err(CliError::Api {
                status: status.as_u16(),
                message,
            });
        }
        parsed.ok_or_else(|| CliError::BadResponse {
            url: shown,
            message: "the body is not JSON".into(),
        })
    }
}

/// Runs a client command against the gateway at `url`, writing to `out`.
/// `serve` and `config check` are not client commands: `main` runs them.
pub async fn run_client(
    command: Command,
    url: &str,
    admin_key: Option<Secret<String>>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let client = Client::new(url, admin_key)?;
    let now = Utc::now();
    match command {
        Command::Serve(_) | Command::Config(_) => Err(CliError::Usage(
            "`serve` and `config` are not admin API commands".into(),
        )),
        Command::Keys(cmd) => keys(&client, cmd, now, out).await,
        Command::Teams(cmd) => teams(&client, cmd, out).await,
        Command::Spend(args) => spend(&client, args, now, out).await,
        Command::Budgets { team, json } => budgets(&client, team, json, out).await,
        Command::Requests {
            team,
            key,
            limit,
            json,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(team.map(|t| ("team", t)));
            query.extend(key.map(|k| ("key", k)));
            requests(&client, &query, json, out).await
        }
        Command::Audit(args) => audit(&client, args, now, out).await,
    }
}

async fn audit(
    client: &Client,
    a: AuditArgs,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut query = vec![("limit", a.limit.to_string())];
    query.extend(a.actor.map(|v| ("actor", v)));
    query.extend(a.action.map(|v| ("action", v)));
    query.extend(a.target.map(|v| ("target", v)));
    query.extend(a.cursor.map(|v| ("cursor", v)));
    if let Some(d) = a.since {
        query.push(("from", before(now, d)?.to_rfc3339()));
    }
    let log = client
        .send(Method::GET, "/admin/audit", &query, None)
        .await?;
    if a.json {
        return print_json(out, &log);
    }
    let rows = data(&log)
        .iter()
        .map(|r| {
            let change = r.get("change").map(Value::to_string).unwrap_or_default();
            ["time", "actor", "action", "target", "source", "status"]
                .iter()
                .map(|f| text(r, f))
                .chain(std::iter::once(change))
                .collect()
        })
        .collect();
    let headers = [
        "TIME", "ACTOR", "ACTION", "TARGET", "SOURCE", "STATUS", "CHANGE",
    ];
    write!(out, "{}", table(&headers, rows))?;
    Ok(())
}

fn after(now: DateTime<Utc>, d: Duration) -> Result<DateTime<Utc>, CliError> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| CliError::Usage(format!("duration `{}s` is too long", d.as_secs())))
}

fn before(now: DateTime<Utc>, d: Duration) -> Result<DateTime<Utc>, CliError> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| CliError::Usage(format!("duration `{}s` is too long", d.as_secs())))
}

/// Key request bodies (`keys create`).
pub fn create_key_body(a: &KeysCreateArgs, now: DateTime<Utc>) -> Result<Value, CliError> {
    let mut body = json!({ "team": a.team });
    let set = |body: &mut Value, k: &str, v: Value| {
        if let Some(obj) = body.as_object_mut() {
            obj.insert(k.to_owned(), v);
        }
    };
    if let Some(name) = &a.name {
        set(&mut body, "name", json!(name));
    }
    if let Some(models) = &a.models {
        set(&mut body, "models", json!(models));
    }
    if let Some(policies) = &a.policies {
        set(&mut body, "policies", json!(policies));
    }
    if let Some(usd) = a.budget_usd {
        set(&mut body, "budget_usd", json!(usd));
    }
    if let Some(period) = a.period {
        set(&mut body, "period", json!(period.as_str()));
    }
    if let Some(rpm) = a.rpm {
        set(&mut body, "requests_per_minute", json!(rpm));
    }
    if let Some(tpm) = a.tpm {
        set(&mut body, "tokens_per_minute", json!(tpm));
    }
    if let Some(d) = a.expires {
        set(
            &mut body,
            "expires_at",
            json!(after(now, d)?.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        );
    }
    Ok(body)
}

async fn keys(
    client: &Client,
    cmd: KeysCommand,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match cmd {
        KeysCommand::Create(a) => {
            let body = create_key_body(&a, now)?;
            let key = client
                .send(Method::POST, "/admin/keys", &[], Some(body))
                .await?;
            if a.json {
                return print_json(out, &key);
            }
            writeln!(out, "{}", text(&key, "key"))?;
            print_details(
                out,
                &key,
                &[
                    "id",
                    "prefix",
                    "team",
                    "name",
                    "models",
                    "policies",
                    "budget_usd",
                    "period",
                ],
            )?;
            print_details(
                out,
                &key,
                &[
                    "requests_per_minute",
                    "tokens_per_minute",
                    "expires_at",
                    "created_at",
                ],
            )?;
            writeln!(out, "The key is shown only this once: store it now.")?;
        }
        KeysCommand::List { team, json } => {
            let query: Vec<(&str, String)> = team.into_iter().map(|t| ("team", t)).collect();
            let list = client
                .send(Method::GET, "/admin/keys", &query, None)
                .await?;
            if json {
                return print_json(out, &list);
            }
            let rows = data(&list)
                .iter()
                .map(|k| {
                    vec![
                        text(k, "id"),
                        text(k, "prefix"),
                        text(k, "team"),
                        text(k, "name"),
                        text(k, "status"),
                        budget_text(k),
                        text(k, "expires_at"),
                        text(k, "created_at"),
                    ]
                })
                .collect();
            let headers = [
                "ID", "PREFIX", "TEAM", "NAME", "STATUS", "BUDGET", "EXPIRES", "CREATED",
            ];
            write!(out, "{}", table(&headers, rows))?;
        }
        KeysCommand::Revoke { id, json } => {
            let key = client
                .send(
                    Method::POST,
                    &format!("/admin/keys/{}/revoke", path_segment(&id)),
                    &[],
                    None,
                )
                .await?;
            if json {
                return print_json(out, &key);
            }
            writeln!(
                out,
                "revoked {} at {}",
                text(&key, "prefix"),
                text(&key, "revoked_at")
            )?;
        }
        KeysCommand::Rotate { id, grace, json } => {
            let body = json!({ "grace_seconds": grace.as_secs() });
            let path = format!("/admin/keys/{}/rotate", path_segment(&id));
            let key = client.send(Method::POST, &path, &[], Some(body)).await?;
            if json {
                return print_json(out, &key);
            }
            writeln!(out, "{}", text(&key, "key"))?;
            match key.get("previous_key_expires_at").and_then(Value::as_str) {
                Some(until) => writeln!(out, "The old key keeps working until {until}.")?,
                None => writeln!(out, "The old key no longer works.")?,
            }
            writeln!(out, "The new key is shown only this once: store it now.")?;
        }
        KeysCommand::Restore { id, json } => {
            let path = format!("/admin/keys/{}/restore", path_segment(&id));
            let key = client.send(Method::POST, &path, &[], None).await?;
            if json {
                return print_json(out, &key);
            }
            writeln!(out, "{} is {}", text(&key, "prefix"), text(&key, "status"))?;
        }
    }
    Ok(())
}

async fn teams(client: &Client, cmd: TeamsCommand, out: &mut dyn Write) -> Result<(), CliError> {
    match cmd {
        TeamsCommand::List { json } => {
            let list = client.send(Method::GET, "/admin/teams", &[], None).await?;
            if json {
                return print_json(out, &list);
            }
            let rows = data(&list)
                .iter()
                .map(|t| {
                    vec![
                        text(t, "id"),
                        text(t, "source"),
                        text(t, "policies"),
                        budget_text(t),
                        text(t, "models"),
                    ]
                })
                .collect();
            write!(
                out,
                "{}",
                table(&["ID", "SOURCE", "POLICIES", "BUDGET", "MODELS"], rows)
            )?;
        }
        TeamsCommand::Create(a) => {
            let mut body = json!({ "id": a.id });
            if let Some(obj) = body.as_object_mut() {
                if let Some(usd) = a.budget_usd {
                    obj.insert("budget_usd".into(), json!(usd));
                }
                if let Some(period) = a.period {
                    obj.insert("period".into(), json!(period.as_str()));
                }
                if let Some(policies) = &a.policies {
                    obj.insert("policies".into(), json!(policies));
                }
                if let Some(models) = &a.models {
                    obj.insert("models".into(), json!(models));
                }
                if a.no_cache {
                    obj.insert("cache".into(), json!(false));
                }
            }
            let team = client
                .send(Method::POST, "/admin/teams", &[], Some(body))
                .await?;
            if a.json {
                return print_json(out, &team);
            }
            writeln!(out, "created team {}", text(&team, "id"))?;
            print_details(
                out,
                &team,
                &["policies", "budget_usd", "period", "models", "cache"],
            )?;
        }
    }
    Ok(())
}

/// The `/admin/spend` query for `tollgate spend`.
pub fn spend_query(
    a: &SpendArgs,
    now: DateTime<Utc>,
) -> Result<Vec<(&'static str, String)>, CliError> {
    let mut q = Vec::new();
    if let Some(by) = &a.by {
        q.push(("group_by", by.clone()));
    }
    if let Some(team) = &a.team {
        q.push(("team", team.clone()));
    }
    if let Some(key) = &a.key {
        q.push(("key", key.clone()));
    }
    if let Some(since) = a.since {
        q.push((
            "from",
            before(now, since)?.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ));
    }
    Ok(q)
}

async fn spend(
    client: &Client,
    a: SpendArgs,
    now: DateTime<Utc>,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let query = spend_query(&a, now)?;
    let report = client
        .send(Method::GET, "/admin/spend", &query, None)
        .await?;
    if a.json {
        return print_json(out, &report);
    }
    let rows = data(&report)
        .iter()
        .map(|r| {
            vec![
                text(r, "group"),
                text(r, "requests"),
                text(r, "prompt_tokens"),
                text(r, "completion_tokens"),
                r.get("cost_usd")
                    .and_then(Value::as_f64)
                    .map(|c| format!("{c:.6}"))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let group = a.by.as_deref().unwrap_or("group").to_uppercase();
    write!(
        out,
        "{}",
        table(
            &[
                &group,
                "REQUESTS",
                "PROMPT_TOKENS",
                "COMPLETION_TOKENS",
                "COST_USD"
            ],
            rows
        )
    )?;
    Ok(())
}

async fn budgets(
    client: &Client,
    team: Option<String>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let query: Vec<(&str, String)> = team.into_iter().map(|t| ("team", t)).collect();
    let report = client
        .send(Method::GET, "/admin/budgets", &query, None)
        .await?;
    if json {
        return print_json(out, &report);
    }
    let usd = |v: &Value, f: &str| {
        v.get(f)
            .and_then(Value::as_f64)
            .map(|x| format!("{x:.6}"))
            .unwrap_or_default()
    };
    let rows = data(&report)
        .iter()
        .map(|b| {
            vec![
                text(b, "scope"),
                text(b, "id"),
                text(b, "policy"),
                text(b, "period"),
                text(b, "mode"),
                usd(b, "limit_usd"),
                usd(b, "spent_usd"),
                usd(b, "reserved_usd"),
                usd(b, "remaining_usd"),
                text(b, "resets_at"),
            ]
        })
        .collect();
    let headers = [
        "SCOPE",
        "ID",
        "POLICY",
        "PERIOD",
        "MODE",
        "LIMIT_USD",
        "SPENT_USD",
        "RESERVED_USD",
        "REMAINING_USD",
        "RESETS_AT",
    ];
    write!(out, "{}", table(&headers, rows))?;
    Ok(())
}

async fn requests(
    client: &Client,
    query: &[(&str, String)],
    json: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let log = client
        .send(Method::GET, "/admin/requests", query, None)
        .await?;
    if json {
        return print_json(out, &log);
    }
    let rows = data(&log)
        .iter()
        .map(|r| {
            vec![
                text(r, "time"),
                text(r, "key_id"),
                text(r, "team"),
                text(r, "model"),
                text(r, "status"),
                text(r, "prompt_tokens"),
                text(r, "completion_tokens"),
                r.get("cost_usd")
                    .and_then(Value::as_f64)
                    .map(|c| format!("{c:.6}"))
                    .unwrap_or_default(),
                text(r, "latency_ms"),
                text(r, "error_code"),
                text(r, "would_reject"),
            ]
        })
        .collect();
    let headers = [
        "TIME",
        "KEY",
        "TEAM",
        "MODEL",
        "STATUS",
        "PROMPT",
        "COMPLETION",
        "COST_USD",
        "LATENCY_MS",
        "ERROR",
        "WOULD_REJECT",
    ];
    write!(out, "{}", table(&headers, rows))?;
    Ok(())
}

fn path_segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

fn data(v: &Value) -> &[Value] {
    v.get("data")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A field as a table cell: strings bare, lists comma-joined, `null` as `-`.
fn text(v: &Value, field: &str) -> String {
    match v.get(field) {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            // f64's Display: `20` rather than serde_json's `20.0`.
            (None, Some(f)) => f.to_string(),
            _ => n.to_string(),
        },
        Some(Value::Array(items)) if items.is_empty() => "-".into(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| i.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

fn budget_text(v: &Value) -> String {
    match (
        v.get("budget_usd").and_then(Value::as_f64),
        v.get("period").and_then(Value::as_str),
    ) {
        (Some(usd), Some(period)) => format!("${usd} {period}"),
        (Some(usd), None) => format!("${usd}"),
        _ => "-".into(),
    }
}

fn print_details(out: &mut dyn Write, v: &Value, fields: &[&str]) -> Result<(), CliError> {
    for f in fields {
        writeln!(out, "  {f:<20} {}", text(v, f))?;
    }
    Ok(())
}

fn print_json(out: &mut dyn Write, v: &Value) -> Result<(), CliError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| CliError::Usage(e.to_string()))?;
    writeln!(out, "{s}")?;
    Ok(())
}

/// Left-aligned columns two spaces apart.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut s = line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        s.push_str(&line(row));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tollgate").chain(args.iter().copied()))
    }

    fn command(args: &[&str]) -> Command {
        parse(args).unwrap().command
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "30",
            "d",
            "1.5h",
            "-1d",
            "10y",
            "1h30m",
            "99999999999999999999d",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("`30d`"), "{bad}: {err}");
        }
    }

    #[test]
    fn serve_and_config_check() {
        let Command::Serve(args) = command(&["serve"]) else {
            panic!("serve")
        };
        assert_eq!(ServeOptions::from(args).log_format, LogFormat::Text);
        let Command::Serve(args) =
            command(&["serve", "--config", "t.yaml", "--log-format", "json"])
        else {
            panic!("serve")
        };
        let opts = ServeOptions::from(args);
        assert_eq!(
            (opts.config, opts.log_format),
            (Some(PathBuf::from("t.yaml")), LogFormat::Json)
        );
        assert!(parse(&["serve", "--log-format", "xml"]).is_err());
        let Command::Config(ConfigCommand::Check { file }) =
            command(&["config", "check", "x.yaml"])
        else {
            panic!("config check")
        };
        assert_eq!(file, PathBuf::from("x.yaml"));
        assert!(parse(&["config", "check"]).is_err());
    }

    #[test]
    fn global_url_and_admin_key() {
        let cli = parse(&["teams", "list"]).unwrap();
        assert_eq!(cli.url, "http://127.0.0.1:4000");
        let cli = parse(&[
            "keys",
            "list",
            "--url",
            "http://gw:4000",
            "--admin-key",
            "adm",
        ])
        .unwrap();
        assert_eq!(cli.url, "http://gw:4000");
        assert_eq!(cli.admin_key.unwrap().expose(), "adm");
        let cli = parse(&["--url", "http://a:1", "spend"]).unwrap();
        assert_eq!(cli.url, "http://a:1");
        assert!(
            !format!("{:?}", parse(&["--admin-key", "hunter2", "spend"]).unwrap())
                .contains("hunter2")
        );
    }

    #[test]
    fn keys_create_builds_the_api_body() {
        let args = [
            "keys",
            "create",
            "--team",
            "search",
            "--name",
            "bot",
            "--models",
            "gpt-4o,claude-*",
            "--budget-usd",
            "12.5",
            "--period",
            "weekly",
            "--rpm",
            "60",
            "--tpm",
            "1000",
            "--expires",
            "30d",
        ];
        let Command::Keys(KeysCommand::Create(a)) = command(&args) else {
            panic!("keys create")
        };
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
        let body = create_key_body(&a, now).unwrap();
        assert_eq!(
            body,
            json!({
                "team": "search", "name": "bot", "models": ["gpt-4o", "claude-*"], "budget_usd": 12.5,
                "period": "weekly", "requests_per_minute": 60, "tokens_per_minute": 1000,
                "expires_at": "2026-12-27T12:00:00Z"
            })
        );
        let Command::Keys(KeysCommand::Create(a)) = command(&["keys", "create", "--team", "t"])
        else {
            panic!("keys create")
        };
        assert_eq!(create_key_body(&a, now).unwrap(), json!({"team": "t"}));
        assert!(parse(&["keys", "create"]).is_err(), "--team is required");
        assert!(
            parse(&["keys", "create", "--team", "t", "--budget-usd", "5"]).is_err(),
            "budget needs period"
        );
        assert!(
            parse(&["keys", "create", "--team", "t", "--period", "daily"]).is_err(),
            "period needs budget"
        );
        let err = parse(&[
            "keys",
            "create",
            "--team",
            "t",
            "--budget-usd",
            "5",
            "--period",
            "dayly",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("hourly, daily"), "{err}");
        assert!(parse(&["keys", "create", "--team", "t", "--expires", "soon"]).is_err());
    }

    #[test]
    fn keys_list_revoke_rotate_restore() {
        let Command::Keys(KeysCommand::List { team, json }) =
            command(&["keys", "list", "--team", "a", "--json"])
        else {
            panic!("keys list")
        };
        assert_eq!((team.as_deref(), json), (Some("a"), true));
        let Command::Keys(KeysCommand::Revoke { id, .. }) = command(&["keys", "revoke", "abc"])
        else {
            panic!("revoke")
        };
        assert_eq!(id, "abc");
        assert!(parse(&["keys", "revoke"]).is_err());
        let Command::Keys(KeysCommand::Rotate { id, grace, .. }) =
            command(&["keys", "rotate", "abc", "--grace", "1h"])
        else {
            panic!("rotate")
        };
        assert_eq!((id.as_str(), grace), ("abc", Duration::from_secs(3600)));
        let Command::Keys(KeysCommand::Rotate { grace, .. }) = command(&["keys", "rotate", "abc"])
        else {
            panic!("rotate")
        };
        assert_eq!(grace, Duration::ZERO);
        assert!(matches!(
            command(&["keys", "restore", "abc"]),
            Command::Keys(KeysCommand::Restore { .. })
        ));
    }

    #[test]
    fn teams_and_spend() {
        assert!(matches!(
            command(&["teams", "list", "--json"]),
            Command::Teams(TeamsCommand::List { json: true })
        ));
        let Command::Teams(TeamsCommand::Create(a)) = command(&[
            "teams",
            "create",
            "ml",
            "--budget-usd",
            "100",
            "--period",
            "monthly",
        ]) else {
            panic!("teams create")
        };
        assert_eq!(
            (a.id.as_str(), a.budget_usd, a.period),
            ("ml", Some(100.0), Some(Period::Monthly))
        );
        assert!(parse(&["teams", "create"]).is_err());

        let Command::Spend(a) = command(&[
            "spend", "--by", "model", "--team", "ml", "--since", "7d", "--json",
        ]) else {
            panic!("spend")
        };
        let now = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
        let q = spend_query(&a, now).unwrap();
        assert_eq!(
            q,
            vec![
                ("group_by", "model".to_owned()),
                ("team", "ml".to_owned()),
                ("from", "2026-11-20T12:00:00Z".to_owned())
            ]
        );
        assert!(a.json);
        assert!(parse(&["spend", "--by", "week"]).is_err());
    }

    #[test]
    fn budgets_and_requests() {
        let Command::Budgets { team, json } = command(&["budgets", "--team", "ml", "--json"])
        else {
            panic!("budgets")
        };
        assert_eq!((team.as_deref(), json), (Some("ml"), true));
        let Command::Requests {
            team,
            key,
            limit,
            json,
        } = command(&["requests", "--key", "abc"])
        else {
            panic!("requests")
        };
        assert_eq!(
            (team, key.as_deref(), limit, json),
            (None, Some("abc"), 20, false)
        );
        assert!(parse(&["requests", "--limit", "many"]).is_err());
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONGER"],
            vec![
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq    22\n");
    }

    #[test]
    fn client_needs_an_admin_key_and_a_url() {
        assert!(matches!(
            Client::new("http://127.0.0.1:4000", None),
            Err(CliError::NoAdminKey)
        ));
        let key = || Some(Secret::new("k".to_owned()));
        assert!(matches!(
            Client::new("not a url", key()),
            Err(CliError::BadUrl(_))
        ));
        assert!(matches!(
            Client::new("ftp://x", key()),
            Err(CliError::BadUrl(_))
        ));
        assert!(Client::new("http://127.0.0.1:4000/", key()).is_ok());
    }
}
