//! `${VAR}` interpolation of config strings from the environment.
//!
//! Syntax: `${NAME}` is the variable's value and an unset variable is an
//! error; `${NAME:-fallback}` uses `fallback` when the variable is unset or
//! empty (so `admin_key: ${TOLLGATE_ADMIN_KEY:-}` may be left unset); `$${`
//! is a literal `${`. A `$` not followed by `{` is kept as is, so prices such
//! as `$5` in a comment-like string survive.

/// Why a string could not be interpolated. Carries only variable names,
/// never values: the string may be an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InterpolateError {
    Unset(String),
    BadName(String),
    Unterminated,
}

impl InterpolateError {
    pub(crate) fn message(&self) -> String {
        match self {
            InterpolateError::Unset(name) => format!(
                "environment variable `{name}` is not set (set it, or write `${{{name}:-default}}` for a fallback)"
            ),
            InterpolateError::BadName(name) => format!(
                "`${{{name}}}` is not a valid variable reference: names are letters, digits and `_` (write `$${{` for a literal `${{`)"
            ),
            InterpolateError::Unterminated => {
                "`${` has no closing `}` (write `$${` for a literal `${`)".to_owned()
            }
        }
    }
}

pub(crate) fn interpolate(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    if !text.contains('$') {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or(InterpolateError::Unterminated)?;
            let inner = &body[..end];
            let (name, fallback) = match inner.split_once(":-") {
                Some((name, fallback)) => (name, Some(fallback)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                return Err(InterpolateError::BadName(inner.to_owned()));
            }
            match (env(name), fallback) {
                (Some(value), Some(fallback)) if value.is_empty() => out.push_str(fallback),
                (Some(value), _) => out.push_str(&value),
                (None, Some(fallback)) => out.push_str(fallback),
                (None, None) => return Err(InterpolateError::Unset(name.to_owned())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-123".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_variables_anywhere_in_a_string() {
        assert_eq!(interpolate("${KEY}", &env).unwrap(), "sk-123");
        assert_eq!(
            interpolate("Bearer ${KEY}!", &env).unwrap(),
            "Bearer sk-123!"
        );
        assert_eq!(interpolate("${KEY}${KEY}", &env).unwrap(), "sk-123sk-123");
        assert_eq!(interpolate("no vars", &env).unwrap(), "no vars");
    }

    #[test]
    fn unset_variable_is_an_error_naming_it() {
        let err = interpolate("x ${MISSING} y", &env).unwrap_err();
        assert_eq!(err, InterpolateError::Unset("MISSING".into()));
        assert!(err.message().contains("`MISSING`"));
    }

    #[test]
    fn fallbacks_escapes_and_lone_dollars() {
        assert_eq!(interpolate("${MISSING:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(interpolate("${MISSING:-}", &env).unwrap(), "");
        assert_eq!(interpolate("${EMPTY:-dflt}", &env).unwrap(), "dflt");
        assert_eq!(interpolate("${EMPTY}", &env).unwrap(), "");
        assert_eq!(interpolate("${KEY:-dflt}", &env).unwrap(), "sk-123");
        assert_eq!(interpolate("$${KEY}", &env).unwrap(), "${KEY}");
        assert_eq!(interpolate("costs $5 or $", &env).unwrap(), "costs $5 or $");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert_eq!(
            interpolate("${KEY", &env).unwrap_err(),
            InterpolateError::Unterminated
        );
        assert_eq!(
            interpolate("${1X}", &env).unwrap_err(),
            InterpolateError::BadName("1X".into())
        );
        assert_eq!(
            interpolate("${}", &env).unwrap_err(),
            InterpolateError::BadName(String::new())
        );
    }
}
