//! `tollgate audit`: the audit log of admin changes.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use http::Method;
use serde_json::Value;

use super::output::{data, print_json, table, text};
use super::{CliError, Client, before, parse_duration};

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

pub(super) async fn audit(
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
