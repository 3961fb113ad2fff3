//! Checks and conversions the admin handlers share: store errors to API
//! errors, budgets from USD, policy names against the config, team lookup.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer};

use crate::config::Config;
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{StoreError, TeamRecord};
use crate::types::{NanoUsd, Period, TeamId};

/// Now, to the millisecond the store keeps, so a create response shows the
/// same times a later read does.
pub(crate) fn now(state: &AppState) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(state.clock.now_ms()).unwrap_or_else(|| state.clock.now())
}

pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(what) => ApiError::Conflict(format!("{what} already exists")),
        other => ApiError::Internal(other.to_string()),
    }
}

/// A budget as the API takes it: `budget_usd` and `period` go together.
/// Requiring both (rather than defaulting the period) keeps a budget from
/// resetting on a schedule nobody chose.
pub(crate) fn budget(
    budget_usd: Option<f64>,
    period: Option<Period>,
) -> Result<(Option<NanoUsd>, Option<Period>), ApiError> {
    match (budget_usd, period) {
        (None, None) => Ok((None, None)),
        (Some(usd), Some(period)) => Ok((Some(nano_usd(usd)?), Some(period))),
        (Some(_), None) => Err(ApiError::invalid_param(
            "period",
            format!("`budget_usd` needs a `period`: one of {}", Period::NAMES),
        )),
        (None, Some(_)) => Err(ApiError::invalid_param(
            "budget_usd",
            "`period` was given without `budget_usd`",
        )),
    }
}

pub(crate) fn nano_usd(usd: f64) -> Result<NanoUsd, ApiError> {
    NanoUsd::from_usd(usd).ok_or_else(|| {
        ApiError::invalid_param(
            "budget_usd",
            format!("`budget_usd` must be a USD amount of 0 or more, not `{usd}`"),
        )
    })
}

/// Every name must be a policy of the config file.
pub(crate) fn check_policies(config: &Config, names: &[String]) -> Result<(), ApiError> {
    if let Some(unknown) = names.iter().find(|n| config.policy(n).is_none()) {
        let known: Vec<String> = config
            .policies
            .iter()
            .map(|p| format!("`{}`", p.name))
            .collect();
        let known = if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        };
        return Err(ApiError::invalid_param(
            "policies",
            format!("no policy named `{unknown}` in the config file (it defines: {known})"),
        ));
    }
    Ok(())
}

pub(crate) fn check_models(models: Option<&[String]>) -> Result<(), ApiError> {
    if models.is_some_and(|m| m.iter().any(|g| g.trim().is_empty())) {
        return Err(ApiError::invalid_param(
            "models",
            "`models` entries must be non-empty model names or globs",
        ));
    }
    Ok(())
}

pub(crate) fn team_not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        code: "team_not_found",
        message: format!(
            "no team `{id}`: create it with `POST /admin/teams` or add it to the config file"
        ),
    }
}

/// Where a team is defined.
pub(crate) enum TeamSource {
    Config,
    Api(TeamRecord),
}

pub(crate) async fn find_team(
    state: &AppState,
    config: &Config,
    id: &str,
) -> Result<Option<TeamSource>, ApiError> {
    if config.team(id).is_some() {
        return Ok(Some(TeamSource::Config));
    }
    let rec = state
        .store
        .get_team(&TeamId::from(id))
        .await
        .map_err(store_error)?;
    Ok(rec.map(TeamSource::Api))
}

/// For PATCH bodies: tells a field set to `null` (`Some(None)`) from one
/// left out (`None`).
pub(crate) fn nullable<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

/// A whole number as JSON Schema counts one: `3600` and `3600.0` alike
/// (the OpenAPI document declares these fields `integer`, and a client
/// generator may send either). A fraction, a negative number or one beyond
/// `u64` is an error naming the value.
pub(crate) fn whole_number<'de, D>(de: D) -> Result<u64, D::Error>
where
    D: Deserializer<'de>,
{
    let n = serde_json::Number::deserialize(de)?;
    if let Some(v) = n.as_u64() {
        return Ok(v);
    }
    match n.as_f64() {
        // 2^64 as f64: every whole f64 below it converts exactly.
        Some(f) if f.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&f) =>
        {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(f as u64)
        }
        _ => Err(serde::de::Error::custom(format!(
            "expected a whole number of 0 or more, not `{n}`"
        ))),
    }
}

/// [`whole_number`] for an optional field.
pub(crate) fn optional_whole_number<'de, D>(de: D) -> Result<Option<u64>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Whole(#[serde(deserialize_with = "whole_number")] u64);
    Option::<Whole>::deserialize(de).map(|w| w.map(|Whole(n)| n))
}
