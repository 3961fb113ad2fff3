//! Output formatting: tables, detail lines and `--json`.

use std::io::Write;

use serde_json::Value;

use super::CliError;

pub(super) fn path_segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

pub(super) fn data(v: &Value) -> &[Value] {
    v.get("data")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A field as a table cell: strings bare, lists comma-joined, `null` as `-`.
pub(super) fn text(v: &Value, field: &str) -> String {
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

pub(super) fn budget_text(v: &Value) -> String {
    match (
        v.get("budget_usd").and_then(Value::as_f64),
        v.get("period").and_then(Value::as_str),
    ) {
        (Some(usd), Some(period)) => format!("${usd} {period}"),
        (Some(usd), None) => format!("${usd}"),
        _ => "-".into(),
    }
}

pub(super) fn print_details(
    out: &mut dyn Write,
    v: &Value,
    fields: &[&str],
) -> Result<(), CliError> {
    for f in fields {
        writeln!(out, "  {f:<20} {}", text(v, f))?;
    }
    Ok(())
}

pub(super) fn print_json(out: &mut dyn Write, v: &Value) -> Result<(), CliError> {
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
