//! Server-rendered SVG charts for the console: spend per team as stacked
//! bars, one bar per time bucket. No JavaScript, no external assets; each
//! segment carries a `<title>` (shown on hover) and `data-team` /
//! `data-usd` attributes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::format::usd;
use crate::store::{Bucket, SeriesPoint};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// Colours for teams, in order of first appearance (sorted by id).
pub(crate) const PALETTE: &[&str] = &[
    "#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#14b8a6", "#ec4899",
];

/// One team's colour and total over the chart's window.
pub(crate) struct LegendItem {
    pub(crate) team: String,
    pub(crate) color: &'static str,
    pub(crate) total: String,
}

pub(crate) struct Chart {
    pub(crate) svg: String,
    pub(crate) legend: Vec<LegendItem>,
    pub(crate) total: String,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round number at or above `max` for the top of the axis, in nano-USD.
fn axis_top(max: u64) -> u64 {
    let mut step: u64 = 1_000; // $0.000001
    loop {
        for m in [1, 2, 5] {
            let top = step.saturating_mul(m);
            if top >= max || top == u64::MAX {
                return top;
            }
        }
        step = step.saturating_mul(10);
    }
}

/// Stacked bars of `points` over `buckets` buckets ending with the one
/// holding `end` (exclusive of later ones).
pub(crate) fn spend_chart(
    points: &[SeriesPoint],
    bucket: Bucket,
    buckets: usize,
    end: DateTime<Utc>,
) -> Chart {
    let width = bucket.seconds();
    let last = end.timestamp().div_euclid(width) * width;
    let first = last - width * (buckets as i64 - 1);
    // team -> per-bucket nano-USD
    let mut teams: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.cost.0 > 0) {
        let idx = (p.start.timestamp() - first).div_euclid(width);
        if let Ok(i) = usize::try_from(idx)
            && i < buckets
        {
            let row = teams
                .entry(p.team.as_str())
                .or_insert_with(|| vec![0; buckets]);
            row[i] = row[i].saturating_add(p.cost.0);
        }
    }
    let totals: Vec<u64> = (0..buckets)
        .map(|i| teams.values().map(|r| r[i]).fold(0u64, u64::saturating_add))
        .collect();
    let top = axis_top(totals.iter().copied().max().unwrap_or(0).max(1));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / buckets.max(1) as f64;
    let bar_w = (slot * 0.72).max(1.0);
    let y = |v: u64| plot_h * (v as f64 / top as f64);

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" xmlns="http://www.w3.org/2000/svg">"#
    );
    for i in 0..=4u64 {
        let v = top / 4 * i;
        let gy = TOP + plot_h - y(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{gy:.1}" y2="{gy:.1}" stroke="#e5e7eb"/><text x="{}" y="{:.1}" text-anchor="end" class="axis">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            gy + 4.0,
            usd(v)
        );
    }
    let label_every = match bucket {
        Bucket::Hour => 3,
        Bucket::Day => 5,
    };
    for i in 0..buckets {
        let start = first + width * i as i64;
        let x = LEFT + slot * i as f64 + (slot - bar_w) / 2.0;
        let when = DateTime::from_timestamp(start, 0).unwrap_or(end);
        let label = match bucket {
            Bucket::Hour => when.format("%H:00").to_string(),
            Bucket::Day => when.format("%b %d").to_string(),
        };
        let mut base = 0u64;
        for (n, (team, row)) in teams.iter().enumerate() {
            let v = row[i];
            if v == 0 {
                continue;
            }
            let h = y(v).max(1.0);
            let by = TOP + plot_h - y(base) - h;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{by:.1}" width="{bar_w:.1}" height="{h:.1}" rx="2" fill="{}" data-team="{}" data-usd="{}"><title>{} · {label} · {}</title></rect>"#,
                PALETTE[n % PALETTE.len()],
                escape(team),
                usd(v),
                escape(team),
                usd(v)
            );
            base = base.saturating_add(v);
        }
        if i % label_every == 0 || i + 1 == buckets {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{}" text-anchor="middle" class="axis">{label}</text>"#,
                LEFT + slot * i as f64 + slot / 2.0,
                HEIGHT - 8.0
            );
        }
    }
    if teams.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle" class="empty">No spend in this period</text>"#,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
    }
    svg.push_str("</svg>");
    let legend = teams
        .iter()
        .enumerate()
        .map(|(n, (team, row))| LegendItem {
            team: (*team).to_owned(),
            color: PALETTE[n % PALETTE.len()],
            total: usd(row.iter().copied().fold(0u64, u64::saturating_add)),
        })
        .collect();
    Chart {
        svg,
        legend,
        total: usd(totals.iter().copied().fold(0u64, u64::saturating_add)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{NanoUsd, TeamId};

    #[test]
    fn bars_stack_per_team_and_skip_points_outside_the_window() {
        let end = DateTime::parse_from_rfc3339("2026-12-06T10:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let point = |start: &str, team: &str, cost: u64| SeriesPoint {
            start: at(start),
            team: TeamId::from(team),
            requests: 1,
            cost: NanoUsd(cost),
        };
        let points = vec![
            point("2026-12-06T10:00:00Z", "a<b", 2_500_000_000),
            point("2026-12-06T09:00:00Z", "c", 500_000_000),
            point("2026-12-01T09:00:00Z", "c", 7_000_000_000),
        ];
        let chart = spend_chart(&points, Bucket::Hour, 24, end);
        assert_eq!(chart.legend.len(), 2);
        assert_eq!(chart.legend[0].team, "a<b");
        assert_eq!(chart.legend[0].total, "$2.50");
        assert_eq!(chart.total, "$3.00");
        assert!(chart.svg.contains(r#"data-team="a&lt;b""#), "{}", chart.svg);
        assert_eq!(chart.svg.matches("<rect").count(), 2);
        assert_eq!(axis_top(3_000_000_000), 5_000_000_000);
    }
}
