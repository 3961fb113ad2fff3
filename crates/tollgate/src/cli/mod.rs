//! The command line (SPEC §5): clap definitions for every command, and the
//! client commands (`keys`, `teams`, `spend`), which talk to a running
//! gateway over its admin API and print tables or, with `--json`, the API's
//! JSON. `main.rs` only parses and dispatches.
//!
//! One file per command family ([`keys`], [`teams`], [`spend`] with the
//! other ledger reports, [`audit`], [`serve`]), the admin HTTP [`client`] and
//! the table [`output`] they share.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};

use crate::types::{Period, Secret};

mod audit;
mod client;
mod keys;
mod output;
mod serve;
mod spend;
mod teams;
#[cfg(test)]
mod tests;

pub use audit::AuditArgs;
pub use client::{CliError, Client};
pub use keys::{KeysCommand, KeysCreateArgs, create_key_body};
pub use output::table;
pub use serve::ServeArgs;
pub use spend::{SpendArgs, spend_query};
pub use teams::{TeamsCommand, TeamsCreateArgs};

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

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file: prints `ok`, or every problem as `FILE:LINE: message` and exits 1.
    Check { file: PathBuf },
}

fn parse_secret(s: &str) -> Result<Secret<String>, String> {
    Ok(Secret::new(s.to_owned()))
}

pub(super) fn parse_period(s: &str) -> Result<Period, String> {
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
        Command::Keys(cmd) => keys::keys(&client, cmd, now, out).await,
        Command::Teams(cmd) => teams::teams(&client, cmd, out).await,
        Command::Spend(args) => spend::spend(&client, args, now, out).await,
        Command::Budgets { team, json } => spend::budgets(&client, team, json, out).await,
        Command::Requests {
            team,
            key,
            limit,
            json,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(team.map(|t| ("team", t)));
            query.extend(key.map(|k| ("key", k)));
            spend::requests(&client, &query, json, out).await
        }
        Command::Audit(args) => audit::audit(&client, args, now, out).await,
    }
}

pub(super) fn after(now: DateTime<Utc>, d: Duration) -> Result<DateTime<Utc>, CliError> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| CliError::Usage(format!("duration `{}s` is too long", d.as_secs())))
}

pub(super) fn before(now: DateTime<Utc>, d: Duration) -> Result<DateTime<Utc>, CliError> {
    chrono::TimeDelta::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| CliError::Usage(format!("duration `{}s` is too long", d.as_secs())))
}
