//! The ledger reports: `tollgate spend`, `budgets` and `requests`.

use std::io::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;
use http::Method;
use serde_json::Value;

use super::output::{data, print_json, table, text};
use super::{CliError, Client, before, parse_duration};

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

pub(super) async fn spend(
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

pub(super) async fn budgets(
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

pub(super) async fn requests(
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
