//! How long a provider asked to be left alone: `retry-after-ms`
//! (OpenAI's and Anthropic's SDKs read it first) or `Retry-After`, in
//! seconds or as an HTTP date (RFC 9110 §10.2.3). The values are the
//! provider's text: anything that is not a sane non-negative number or a
//! date is ignored (the gateway's own backoff applies), and a huge one
//! saturates rather than overflowing, so it only ever means "longer than
//! the gateway will wait".

use std::time::Duration;

use http::HeaderMap;

/// Longest wait a header can express here; anything longer is as good as
/// "do not wait for this provider".
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// The wait the headers ask for, if they ask for one. `now` is the time
/// an HTTP date is measured from.
pub(crate) fn parse(headers: &HeaderMap, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| non_negative(v.trim()))
    {
        return Some(seconds(ms / 1000.0));
    }
    let text = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Some(secs) = non_negative(text) {
        return Some(seconds(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(text).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - now;
    // A date in the past asks for no wait at all.
    Some(wait.to_std().unwrap_or(Duration::ZERO).min(LONGEST))
}

fn non_negative(text: &str) -> Option<f64> {
    let n: f64 = text.parse().ok()?;
    (n.is_finite() && n >= 0.0).then_some(n)
}

fn seconds(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).map_or(LONGEST, |d| d.min(LONGEST))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, value.parse().unwrap());
        }
        h
    }

    fn now() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap()
    }

    #[test]
    fn reads_milliseconds_first_then_seconds_then_a_date() {
        let ms = headers(&[("retry-after-ms", "250"), ("retry-after", "7")]);
        assert_eq!(parse(&ms, now()), Some(Duration::from_millis(250)));
        let secs = headers(&[("retry-after", " 7 ")]);
        assert_eq!(parse(&secs, now()), Some(Duration::from_secs(7)));
        let frac = headers(&[("retry-after", "1.5")]);
        assert_eq!(parse(&frac, now()), Some(Duration::from_millis(1500)));
        let date = headers(&[("retry-after", "Sun, 06 Dec 2026 12:00:30 GMT")]);
        assert_eq!(parse(&date, now()), Some(Duration::from_secs(30)));
        let past = headers(&[("retry-after", "Sun, 06 Dec 2026 11:00:00 GMT")]);
        assert_eq!(parse(&past, now()), Some(Duration::ZERO));
        assert_eq!(parse(&HeaderMap::new(), now()), None);
    }

    #[test]
    fn hostile_values_are_ignored_or_saturate() {
        for bad in ["-1", "NaN", "inf", "soon", "", "1e400x"] {
            let h = headers(&[("retry-after", bad)]);
            assert_eq!(parse(&h, now()), None, "{bad}");
        }
        // A bad `retry-after-ms` falls back to `retry-after`.
        let h = headers(&[("retry-after-ms", "-5"), ("retry-after", "2")]);
        assert_eq!(parse(&h, now()), Some(Duration::from_secs(2)));
        let huge = headers(&[("retry-after", "1e300")]);
        assert_eq!(parse(&huge, now()), Some(LONGEST));
        let far = headers(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]);
        assert_eq!(parse(&far, now()), Some(LONGEST));
    }
}
