//! How the console writes numbers and times: dollars from nano-USD (exact,
//! integer arithmetic), compact times in UTC.

use chrono::{DateTime, Utc};

/// `$1,234.56`; below a cent, up to six decimals (`$0.000042`).
pub(crate) fn usd(nano: u64) -> String {
    let dollars = nano / 1_000_000_000;
    let frac = nano % 1_000_000_000;
    if dollars == 0 && frac > 0 && frac < 10_000_000 {
        let micros = frac.div_ceil(1_000);
        let s = format!("{micros:06}");
        return format!("${}.{}", dollars, s.trim_end_matches('0'));
    }
    let cents = (frac + 5_000_000) / 10_000_000;
    let (dollars, cents) = if cents == 100 {
        (dollars + 1, 0)
    } else {
        (dollars, cents)
    };
    let digits = dollars.to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("${grouped}.{cents:02}")
}

/// From the admin views' `f64` dollars (display only, never billing).
pub(crate) fn usd_f64(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        return usd(0);
    }
    usd(crate::types::NanoUsd::from_usd(v).map_or(u64::MAX, |n| n.0))
}

pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// An RFC 3339 string as the console shows times; the raw text if unparsable.
pub(crate) fn time_str(raw: &str) -> String {
    DateTime::parse_from_rfc3339(raw).map_or_else(
        |_| raw.to_owned(),
        |t| t.with_timezone(&Utc).format("%Y-%m-%d %H:%M").to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_are_exact_and_grouped() {
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(1_234_567_890_000), "$1,234.57");
        assert_eq!(usd(42_000), "$0.000042");
        assert_eq!(usd(9_999_999_999), "$10.00");
        assert_eq!(usd(10_000_000), "$0.01");
        assert_eq!(usd(u64::MAX), "$18,446,744,073.71");
        assert_eq!(usd_f64(f64::NAN), "$0.00");
        assert_eq!(usd_f64(2.5), "$2.50");
    }
}
