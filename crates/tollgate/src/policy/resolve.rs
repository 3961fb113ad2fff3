//! Which policies are in force for a caller, and on what scope: the team's
//! (config team or API team, plus an API team's `budget` as `team-budget`),
//! the key's own (plus its `budget` as `key-budget` and its per-minute
//! limits as `key-rate`), and `defaults.policies`, applied per key.

use std::borrow::Cow;

use crate::config::{
    Config, CostAction, CostLimit, OnInsufficient, PolicyKind, PolicyMode, RateLimit,
};
use crate::store::{KeyRecord, TeamRecord};
use crate::types::Period;

/// Who a policy counts: the team as a whole, or one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    Team,
    Key,
}

impl Scope {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scope::Team => "team",
            Scope::Key => "key",
        }
    }
}

/// One policy in force, with the scope it counts.
#[derive(Debug, Clone)]
pub(crate) struct Applied<'a> {
    pub scope: Scope,
    /// The team id or the key id.
    pub scope_id: &'a str,
    pub name: &'a str,
    pub mode: PolicyMode,
    pub kind: Cow<'a, PolicyKind>,
}

/// A policy name attached to a team or key that the loaded config no
/// longer defines (removed by a reload). Fails closed: a budget must not
/// silently stop applying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MissingPolicy {
    pub name: String,
    pub owner: String,
}

impl MissingPolicy {
    pub(crate) fn message(&self) -> String {
        format!(
            "policy `{}` attached to {} is not defined in the loaded config; restore it in the config file \
             or detach it over the admin API",
            self.name, self.owner
        )
    }
}

pub(crate) const TEAM_BUDGET: &str = "team-budget";
pub(crate) const KEY_BUDGET: &str = "key-budget";
pub(crate) const KEY_RATE: &str = "key-rate";

/// An API-set budget without a period never resets, like LiteLLM's
/// `max_budget` without `budget_duration`.
fn implicit_budget(limit: crate::types::NanoUsd, period: Option<Period>) -> PolicyKind {
    PolicyKind::CostLimit(CostLimit {
        limit,
        period: period.unwrap_or(Period::Total),
        action: CostAction::Reject,
        on_insufficient: OnInsufficient::Reject,
    })
}

/// Policies that count the team `team_id` as a whole.
pub(crate) fn team_policies<'a>(
    config: &'a Config,
    team_id: &'a str,
    api_team: Option<&'a TeamRecord>,
    out: &mut Vec<Applied<'a>>,
) -> Result<(), MissingPolicy> {
    let mut names: Vec<&'a str> = Vec::new();
    if let Some(t) = config.team(team_id) {
        names.extend(t.policies.iter().map(String::as_str));
    }
    if let Some(t) = api_team {
        names.extend(t.policies.iter().map(String::as_str));
    }
    for name in names {
        push_named(
            config,
            Scope::Team,
            team_id,
            name,
            || format!("team `{team_id}`"),
            out,
        )?;
    }
    if let Some(t) = api_team
        && let Some(limit) = t.budget
    {
        out.push(Applied {
            scope: Scope::Team,
            scope_id: team_id,
            name: TEAM_BUDGET,
            mode: PolicyMode::Enforce,
            kind: Cow::Owned(implicit_budget(limit, t.period)),
        });
    }
    Ok(())
}

/// Policies that count one key: its own and the config's defaults.
pub(crate) fn key_policies<'a>(
    config: &'a Config,
    key: &'a KeyRecord,
    out: &mut Vec<Applied<'a>>,
) -> Result<(), MissingPolicy> {
    let id = key.id.as_str();
    for name in &key.policies {
        push_named(config, Scope::Key, id, name, || format!("key `{id}`"), out)?;
    }
    if let Some(limit) = key.budget {
        out.push(Applied {
            scope: Scope::Key,
            scope_id: id,
            name: KEY_BUDGET,
            mode: PolicyMode::Enforce,
            kind: Cow::Owned(implicit_budget(limit, key.period)),
        });
    }
    if key.requests_per_minute.is_some() || key.tokens_per_minute.is_some() {
        out.push(Applied {
            scope: Scope::Key,
            scope_id: id,
            name: KEY_RATE,
            mode: PolicyMode::Enforce,
            kind: Cow::Owned(PolicyKind::RateLimit(RateLimit {
                requests_per_minute: key.requests_per_minute,
                tokens_per_minute: key.tokens_per_minute,
                max_parallel: None,
            })),
        });
    }
    for name in &config.defaults.policies {
        push_named(
            config,
            Scope::Key,
            id,
            name,
            || "`defaults.policies`".to_owned(),
            out,
        )?;
    }
    Ok(())
}

/// Every policy in force for a request by `key`, each (scope, policy) once:
/// the same policy named by a key and by the defaults must not reserve twice.
pub(crate) fn applied<'a>(
    config: &'a Config,
    key: &'a KeyRecord,
    api_team: Option<&'a TeamRecord>,
) -> Result<Vec<Applied<'a>>, MissingPolicy> {
    let mut out = Vec::new();
    team_policies(config, key.team.as_str(), api_team, &mut out)?;
    key_policies(config, key, &mut out)?;
    // The list is a handful of entries: a linear scan of the kept prefix is
    // cheaper than hashing each (scope, name) into a set.
    let mut kept = 0;
    for i in 0..out.len() {
        let (scope, name) = (out[i].scope, out[i].name);
        if !out[..kept]
            .iter()
            .any(|a| a.scope == scope && a.name == name)
        {
            out.swap(kept, i);
            kept += 1;
        }
    }
    out.truncate(kept);
    Ok(out)
}

fn push_named<'a>(
    config: &'a Config,
    scope: Scope,
    scope_id: &'a str,
    name: &'a str,
    owner: impl FnOnce() -> String,
    out: &mut Vec<Applied<'a>>,
) -> Result<(), MissingPolicy> {
    let policy = config.policy(name).ok_or_else(|| MissingPolicy {
        name: name.to_owned(),
        owner: owner(),
    })?;
    out.push(Applied {
        scope,
        scope_id,
        name: &policy.name,
        mode: policy.mode,
        kind: Cow::Borrowed(&policy.kind),
    });
    Ok(())
}
