//! `tollgate keys`: create, list, revoke, rotate and restore virtual keys.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use http::Method;
use serde_json::{Value, json};

use super::output::{budget_text, data, path_segment, print_details, print_json, table, text};
use super::{CliError, Client, after, parse_duration, parse_period};
use crate::types::Period;

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

pub(super) async fn keys(
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
