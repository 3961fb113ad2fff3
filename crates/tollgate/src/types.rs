//! Small value types shared by every module: money, ids, secrets, periods and
//! the clock. Depends on nothing else in the crate.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// Money as integer nano-USD (1 USD = 10^9). Budgets are never computed in
/// floating point: `f64` appears only when reading a config value or
/// printing one.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NanoUsd(pub u64);

impl NanoUsd {
    pub const ZERO: NanoUsd = NanoUsd(0);
    pub const PER_USD: u64 = 1_000_000_000;

    /// Converts a USD amount from a config file or API call. `None` for
    /// negative, non-finite or absurdly large values.
    pub fn from_usd(usd: f64) -> Option<NanoUsd> {
        if !usd.is_finite() || !(0.0..=1e9).contains(&usd) {
            return None;
        }
        Some(NanoUsd((usd * Self::PER_USD as f64).round() as u64))
    }

    pub fn as_usd(self) -> f64 {
        self.0 as f64 / Self::PER_USD as f64
    }

    pub fn saturating_add(self, other: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: NanoUsd) -> NanoUsd {
        NanoUsd(self.0.saturating_sub(other.0))
    }
}

/// Prints as a plain decimal USD amount with nano precision, trailing zeros
/// trimmed: `0.000123`, `50`, `0`. Used in headers and messages.
impl fmt::Display for NanoUsd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / Self::PER_USD;
        let frac = self.0 % Self::PER_USD;
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let digits = format!("{frac:09}");
        write!(f, "{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// A model's price in nano-USD per one million tokens (so `$0.15/Mtok` is
/// `150_000_000`). Per-million keeps sub-nano per-token prices exact.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub input_per_mtok: NanoUsd,
    pub output_per_mtok: NanoUsd,
    /// Price of prompt tokens served from the provider's cache, where it
    /// has one; `None` bills them as ordinary input.
    pub cached_input_per_mtok: Option<NanoUsd>,
}

impl Price {
    /// Cost of a request, rounded up to the next nano-USD so that a
    /// reservation is never below what the settlement will charge.
    pub fn cost(&self, input_tokens: u64, output_tokens: u64) -> NanoUsd {
        let nanos = per_mtok(input_tokens, self.input_per_mtok)
            .saturating_add(per_mtok(output_tokens, self.output_per_mtok));
        NanoUsd(u64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(u64::MAX))
    }

    /// Cost with `cached_tokens` of the input billed at the cached price.
    pub fn cost_with_cache(
        &self,
        input_tokens: u64,
        cached_tokens: u64,
        output_tokens: u64,
    ) -> NanoUsd {
        let cached = cached_tokens.min(input_tokens);
        let Some(cached_price) = self.cached_input_per_mtok else {
            return self.cost(input_tokens, output_tokens);
        };
        let nanos = per_mtok(input_tokens - cached, self.input_per_mtok)
            .saturating_add(per_mtok(cached, cached_price))
            .saturating_add(per_mtok(output_tokens, self.output_per_mtok));
        NanoUsd(u64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(u64::MAX))
    }

    /// How many output tokens `budget` pays for once `input_tokens` are paid.
    pub fn affordable_output_tokens(&self, budget: NanoUsd, input_tokens: u64) -> u64 {
        let input_cost = self.cost(input_tokens, 0);
        let left = budget.saturating_sub(input_cost).0 as u128 * 1_000_000;
        match self.output_per_mtok.0 {
            0 => u64::MAX,
            p => u64::try_from(left / p as u128).unwrap_or(u64::MAX),
        }
    }
}

fn per_mtok(tokens: u64, price: NanoUsd) -> u128 {
    tokens as u128 * price.0 as u128
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }
    };
}

string_id!(
    /// The public id of a virtual key (the part between `sk-tg-` and the
    /// secret); safe to log and show.
    KeyId
);
string_id!(
    /// A team's id, as in the config file or `POST /admin/teams`.
    TeamId
);

/// A value that must never be printed: provider keys, the admin key,
/// connection strings with passwords. `Debug` and `Display` show `*****`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The only way to the value: grep for `expose` to audit every use.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

/// A budget period, on UTC calendar boundaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Total,
}

impl Period {
    pub const NAMES: &'static str = "hourly, daily, weekly, monthly, total";

    pub fn parse(s: &str) -> Option<Period> {
        Some(match s {
            "hourly" => Period::Hourly,
            "daily" => Period::Daily,
            "weekly" => Period::Weekly,
            "monthly" => Period::Monthly,
            "total" => Period::Total,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Total => "total",
        }
    }

    /// Start of the period containing `now` (weeks start on Monday, as ISO
    /// 8601 has it). `Total` starts at the epoch.
    pub fn start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let day = now.date_naive();
        let midnight =
            |d: chrono::NaiveDate| Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN));
        match self {
            Period::Hourly => {
                let secs = now.timestamp() - now.timestamp().rem_euclid(3600);
                Utc.timestamp_opt(secs, 0).single().unwrap_or(now)
            }
            Period::Daily => midnight(day),
            Period::Weekly => {
                midnight(day - Duration::days(i64::from(day.weekday().num_days_from_monday())))
            }
            Period::Monthly => midnight(day.with_day(1).unwrap_or(day)),
            Period::Total => DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    /// End of the period containing `now` (the next reset); `None` for `Total`.
    pub fn end(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = self.start(now);
        Some(match self {
            Period::Hourly => start + Duration::hours(1),
            Period::Daily => start + Duration::days(1),
            Period::Weekly => start + Duration::weeks(1),
            Period::Monthly => start.checked_add_months(chrono::Months::new(1))?,
            Period::Total => return None,
        })
    }
}

/// Where "now" comes from. Production uses the system clock; tests move a
/// [`ManualClock`] to cross period boundaries and refill rate limits without
/// sleeping.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;

    fn now_ms(&self) -> i64 {
        self.now().timestamp_millis()
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Most characters of a client's own text (a model name, a field's value)
/// that go into an error message, a log line or the ledger: enough to
/// recognise it, never enough to flood a log or grow memory with it.
pub const CLIENT_TEXT_MAX: usize = 128;

/// `text` cut to [`CLIENT_TEXT_MAX`] characters, ending in `…` when cut.
pub fn clip(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(CLIENT_TEXT_MAX) {
        None => std::borrow::Cow::Borrowed(text),
        Some((end, _)) => std::borrow::Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(parking_lot::Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(start: DateTime<Utc>) -> Self {
        ManualClock(parking_lot::Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock() += by;
    }

    pub fn set(&self, to: DateTime<Utc>) {
        *self.0.lock() = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_is_clipped_on_a_char_boundary() {
        assert_eq!(clip("gpt-4o"), "gpt-4o");
        let exact = "é".repeat(CLIENT_TEXT_MAX);
        assert_eq!(clip(&exact), exact.as_str());
        let long = format!("{exact}x");
        assert_eq!(clip(&long), format!("{exact}…"));
        assert_eq!(
            clip(&"m".repeat(1_000_000)).chars().count(),
            CLIENT_TEXT_MAX + 1
        );
    }

    #[test]
    fn nano_usd_prints_exact_decimal() {
        assert_eq!(NanoUsd(0).to_string(), "0");
        assert_eq!(NanoUsd(50 * NanoUsd::PER_USD).to_string(), "50");
        assert_eq!(NanoUsd(123_000).to_string(), "0.000123");
        assert_eq!(NanoUsd(1_500_000_001).to_string(), "1.500000001");
    }

    #[test]
    fn price_rounds_up_and_is_exact() {
        let p = Price {
            input_per_mtok: NanoUsd::from_usd(0.15).unwrap(),
            output_per_mtok: NanoUsd::from_usd(0.60).unwrap(),
            cached_input_per_mtok: None,
        };
        // 1M input tokens at $0.15 is exactly $0.15.
        assert_eq!(p.cost(1_000_000, 0), NanoUsd::from_usd(0.15).unwrap());
        // One token costs 150 nano-USD input, 600 output.
        assert_eq!(p.cost(1, 1), NanoUsd(750));
        assert_eq!(p.affordable_output_tokens(NanoUsd(750), 1), 1);
        assert_eq!(p.affordable_output_tokens(NanoUsd(749), 1), 0);
    }

    #[test]
    fn periods_follow_utc_calendar() {
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 16, 58, 24).unwrap();
        assert_eq!(
            Period::Hourly.start(t),
            Utc.with_ymd_and_hms(2026, 11, 27, 16, 0, 0).unwrap()
        );
        assert_eq!(
            Period::Daily.end(t),
            Some(Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap())
        );
        // 2026-11-27 is a Friday; the week started Monday the 23rd.
        assert_eq!(
            Period::Weekly.start(t),
            Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap()
        );
        assert_eq!(
            Period::Monthly.end(t),
            Some(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap())
        );
        assert_eq!(Period::Total.end(t), None);
    }
}
