//! What a refused caller reads: rejection messages that say which policy,
//! what the numbers are and when to retry, and the OpenAI-style duration
//! format of `x-ratelimit-reset-*`.

use chrono::{DateTime, SecondsFormat, Utc};

/// `Retry-After` for a budget that never resets: a year, the largest value
/// clients treat sensibly.
pub(crate) const NEVER_SECS: u64 = 365 * 24 * 3600;

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Whole seconds, rounded up, at least 1: a client retrying after exactly
/// this long must pass.
pub(crate) fn retry_secs(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

/// OpenAI's reset format: `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
pub(crate) fn openai_duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let h = ms / 3_600_000;
    let m = ms / 60_000 % 60;
    let s_ms = ms % 60_000;
    let secs = if s_ms.is_multiple_of(1000) {
        format!("{}s", s_ms / 1000)
    } else {
        let frac = format!("{:03}", s_ms % 1000);
        format!("{}.{}s", s_ms / 1000, frac.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_look_like_openai_headers() {
        assert_eq!(openai_duration(20), "20ms");
        assert_eq!(openai_duration(1000), "1s");
        assert_eq!(openai_duration(1500), "1.5s");
        assert_eq!(openai_duration(360_000), "6m0s");
        assert_eq!(openai_duration(3_723_000), "1h2m3s");
        assert_eq!(retry_secs(1), 1);
        assert_eq!(retry_secs(0), 1);
        assert_eq!(retry_secs(1001), 2);
    }
}
