//! Conversions between the store's Rust types and the column values both
//! engines share: JSON text for lists and metadata, periods as text, and
//! unsigned counts and money as signed 64-bit integers (the widest integer
//! either engine has). Also the redaction of connection URLs for messages.

use crate::types::{NanoUsd, Period};

use super::StoreError;

/// Most rows a single SQLite statement carries: 13 columns each keeps it far
/// below SQLite's 32,766 bound variables.
pub(crate) const SQLITE_ROWS_PER_STATEMENT: usize = 1000;

/// `requests()` answers this many rows when the query names no limit.
pub(crate) const DEFAULT_REQUESTS_LIMIT: u32 = 100;
/// And never more than this many, whatever the query asks: it is a recent
/// request log, not an export.
pub(crate) const MAX_REQUESTS_LIMIT: u32 = 10_000;

pub(crate) fn requests_limit(limit: u32) -> u32 {
    if limit == 0 {
        DEFAULT_REQUESTS_LIMIT
    } else {
        limit.min(MAX_REQUESTS_LIMIT)
    }
}

/// Ledger text as both engines can store it: PostgreSQL refuses NUL in
/// `text`, and a model name is chosen by the client, so a NUL there must not
/// make a billed row unwritable. It becomes U+FFFD on both engines alike.
pub(crate) fn ledger_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// `u64` to a signed column; `field` names the value in the message.
pub(crate) fn to_i64(value: u64, field: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        StoreError::Backend(format!(
            "`{field}` = {value} does not fit a signed 64-bit column (max {})",
            i64::MAX
        ))
    })
}

pub(crate) fn opt_to_i64(value: Option<u64>, field: &str) -> Result<Option<i64>, StoreError> {
    value.map(|v| to_i64(v, field)).transpose()
}

/// A signed column back to `u64`; a negative value means someone wrote the
/// table by hand.
pub(crate) fn to_u64(value: i64, field: &str) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("`{field}` is negative ({value})")))
}

pub(crate) fn opt_to_u64(value: Option<i64>, field: &str) -> Result<Option<u64>, StoreError> {
    value.map(|v| to_u64(v, field)).transpose()
}

pub(crate) fn money(value: NanoUsd, field: &str) -> Result<i64, StoreError> {
    to_i64(value.0, field)
}

pub(crate) fn opt_money(value: Option<NanoUsd>, field: &str) -> Result<Option<i64>, StoreError> {
    value.map(|v| money(v, field)).transpose()
}

pub(crate) fn opt_nano(value: Option<i64>, field: &str) -> Result<Option<NanoUsd>, StoreError> {
    Ok(opt_to_u64(value, field)?.map(NanoUsd))
}

pub(crate) fn status_from(value: i64) -> Result<u16, StoreError> {
    u16::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("ledger `status` {value} is not an HTTP status")))
}

pub(crate) fn period_text(period: Option<Period>) -> Option<&'static str> {
    period.map(Period::as_str)
}

pub(crate) fn period_from(text: Option<String>) -> Result<Option<Period>, StoreError> {
    text.map(|t| {
        Period::parse(&t).ok_or_else(|| {
            StoreError::Corrupt(format!("period `{t}` is not one of {}", Period::NAMES))
        })
    })
    .transpose()
}

pub(crate) fn json_text<T: serde::Serialize>(value: &T, field: &str) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Backend(format!("cannot encode `{field}` as JSON: {e}")))
}

pub(crate) fn opt_json_text<T: serde::Serialize>(
    value: Option<&T>,
    field: &str,
) -> Result<Option<String>, StoreError> {
    value.map(|v| json_text(v, field)).transpose()
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    text: &str,
    field: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("`{field}` is not valid JSON ({e}): `{text}`")))
}

/// `ledger.would_reject`: a JSON list of `policy:code`, NULL when empty (as
/// in every row written before the column existed), so the common row stores
/// nothing.
pub(crate) fn would_reject_text(list: &[String]) -> Result<Option<String>, StoreError> {
    if list.is_empty() {
        return Ok(None);
    }
    json_text(&list, "would_reject").map(Some)
}

pub(crate) fn would_reject_from(text: Option<String>) -> Result<Vec<String>, StoreError> {
    Ok(opt_from_json(text, "ledger.would_reject")?.unwrap_or_default())
}

pub(crate) fn opt_from_json<T: serde::de::DeserializeOwned>(
    text: Option<String>,
    field: &str,
) -> Result<Option<T>, StoreError> {
    text.map(|t| from_json(&t, field)).transpose()
}

/// The URL with any password replaced by `*****`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let mut out = match url.find("://") {
        Some(scheme_end) => {
            let rest_start = scheme_end + 3;
            let rest = &url[rest_start..];
            let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            match authority.rfind('@') {
                Some(at) => {
                    let userinfo = &authority[..at];
                    let user = match userinfo.find(':') {
                        Some(colon) => format!("{}:*****", &userinfo[..colon]),
                        None => userinfo.to_owned(),
                    };
                    format!("{}{}{}", &url[..rest_start], user, &rest[at..])
                }
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    // libpq also accepts the password as a query parameter.
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=*****"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", redacted.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_userinfo_and_query() {
        assert_eq!(
            redact_url("postgres://u:s3cret@h:5432/db"),
            "postgres://u:*****@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://u@h/db?password=s3cret&x=1"),
            "postgres://u@h/db?password=*****&x=1"
        );
        assert_eq!(redact_url("postgresql://h/db"), "postgresql://h/db");
        assert_eq!(redact_url("sqlite://tollgate.db"), "sqlite://tollgate.db");
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:*****@h/db"
        );
    }

    #[test]
    fn requests_limit_defaults_and_caps() {
        assert_eq!(requests_limit(0), DEFAULT_REQUESTS_LIMIT);
        assert_eq!(requests_limit(7), 7);
        assert_eq!(requests_limit(u32::MAX), MAX_REQUESTS_LIMIT);
    }

    #[test]
    fn unsigned_values_beyond_i64_are_refused() {
        assert!(to_i64(u64::MAX, "cost").is_err());
        assert_eq!(to_i64(5, "cost").ok(), Some(5));
        assert!(to_u64(-1, "cost").is_err());
    }
}
