//! `tollgate teams`: list and create teams.

use std::io::Write;

use clap::{Args, Subcommand};
use http::Method;
use serde_json::json;

use super::output::{budget_text, data, print_details, print_json, table, text};
use super::{CliError, Client, parse_period};
use crate::types::Period;

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

pub(super) async fn teams(
    client: &Client,
    cmd: TeamsCommand,
    out: &mut dyn Write,
) -> Result<(), CliError> {
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
