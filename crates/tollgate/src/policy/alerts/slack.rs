//! `alerts.format: slack`: an alert as one readable line of text, the
//! `{"text": ...}` body that Slack and Microsoft Teams incoming webhooks
//! post as a message.

use super::AlertEvent;

/// What a person reads in the channel: which budget or guard, whose, how
/// far, and when it lifts.
pub(super) fn text(e: &AlertEvent) -> String {
    let whose = match &e.key {
        Some(key) => format!("team `{}`, key `{}`", e.team, key),
        None => format!("team `{}`", e.team),
    };
    let period = e.period.map(|p| format!(" {p}")).unwrap_or_default();
    let spent = e.spent_usd.map(usd).unwrap_or_else(|| "?".into());
    let limit = e.limit_usd.map(usd).unwrap_or_else(|| "?".into());
    let resets = e
        .resets_at
        .as_deref()
        .map(|t| format!(" It resets at {t}."))
        .unwrap_or_default();
    match e.event {
        "budget_threshold" => {
            let pct = e
                .threshold
                .map(|t| format!("{:.0}%", t * 100.0))
                .unwrap_or_default();
            format!(
                ":warning: tollgate: budget `{}` ({whose}) has reached {pct} of its{period} limit: {spent} spent of {limit}.{resets}",
                e.policy
            )
        }
        "budget_blocked" => format!(
            ":no_entry: tollgate: budget `{}` ({whose}) is refusing requests: {spent} spent of its{period} limit of {limit}.{resets}",
            e.policy
        ),
        "loop_detected" => {
            let until = e
                .resets_at
                .as_deref()
                .map(|t| format!(" until {t}"))
                .unwrap_or_default();
            format!(
                ":repeat: tollgate: loop guard `{}` stopped {whose}: the same request or error kept repeating; it is refused{until}.",
                e.policy
            )
        }
        other => format!("tollgate: `{other}` from policy `{}` ({whose})", e.policy),
    }
}

/// Dollars as a person writes them: `$50`, `$0.0016`.
fn usd(x: f64) -> String {
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("${s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &'static str) -> AlertEvent {
        AlertEvent {
            event: kind,
            team: "search".into(),
            key: Some("858a70455d3d".into()),
            policy: "daily-cap".into(),
            threshold: Some(0.8),
            spent_usd: Some(40.5),
            limit_usd: Some(50.0),
            period: Some("daily"),
            resets_at: Some("2026-12-07T00:00:00Z".into()),
            ts: "2026-12-06T21:00:00Z".into(),
        }
    }

    #[test]
    fn a_threshold_reads_as_a_sentence() {
        assert_eq!(
            text(&event("budget_threshold")),
            ":warning: tollgate: budget `daily-cap` (team `search`, key `858a70455d3d`) has reached 80% of its daily limit: $40.5 spent of $50. It resets at 2026-12-07T00:00:00Z."
        );
    }

    #[test]
    fn a_block_and_a_loop_say_what_is_refused_and_until_when() {
        let blocked = text(&event("budget_blocked"));
        assert!(
            blocked.contains("is refusing requests: $40.5 spent of its daily limit of $50"),
            "{blocked}"
        );
        let mut lp = event("loop_detected");
        lp.key = Some("k1".into());
        let looped = text(&lp);
        assert!(
            looped.contains("loop guard `daily-cap` stopped team `search`, key `k1`"),
            "{looped}"
        );
        assert!(
            looped.ends_with("refused until 2026-12-07T00:00:00Z."),
            "{looped}"
        );
        assert_eq!(usd(0.0016), "$0.0016");
        assert_eq!(usd(0.0), "$0");
    }
}
