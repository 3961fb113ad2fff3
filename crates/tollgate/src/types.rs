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
    /// The most one request can cost or reserve: $1,000,000. Every cost is
    /// bounded by it, so sums of thousands of them stay far inside the
    /// signed 64-bit integers of Redis, SQL and Lua's `%d`, whatever
    /// `max_tokens` or `usage` numbers a client or provider sends.
    pub const MAX_REQUEST: NanoUsd = NanoUsd(1_000_000 * Self::PER_USD);

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
///
/// A prompt token costs one of four rates, by what the provider did with
/// it: fresh input, a read from its prompt cache, or a write to that cache
/// (5-minute or 1-hour lifetime). A rate left `None` falls back to one that
/// never bills below the provider: reads and writes to the input rate, 1-hour
/// writes to the 5-minute write rate when that is higher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub input_per_mtok: NanoUsd,
    pub output_per_mtok: NanoUsd,
    /// Prompt tokens read from the provider's cache (OpenAI
    /// `cached_tokens`, Anthropic `cache_read_input_tokens`).
    pub cached_input_per_mtok: Option<NanoUsd>,
    /// Prompt tokens written to the provider's cache with its default
    /// 5-minute lifetime (Anthropic `cache_creation_input_tokens`: 1.25×
    /// input).
    #[serde(default)]
    pub cache_write_per_mtok: Option<NanoUsd>,
    /// Prompt tokens written to the cache with a 1-hour lifetime
    /// (Anthropic `cache_creation.ephemeral_1h_input_tokens`: 2× input).
    #[serde(default)]
    pub cache_write_1h_per_mtok: Option<NanoUsd>,
}

/// The part of a request's prompt tokens the provider billed at a cache
/// rate. Each count is part of the prompt total given beside it;
/// `write_1h` is part of `write`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheTokens {
    /// Read from the cache.
    pub read: u64,
    /// Written to the cache, both lifetimes.
    pub write: u64,
    /// Of `write`, written with the 1-hour lifetime.
    pub write_1h: u64,
}

impl Price {
    /// Anthropic's cache-write multipliers over its input rate, as
    /// (numerator, denominator): 5-minute writes 1.25×, 1-hour writes 2×.
    pub const ANTHROPIC_CACHE_WRITE: (u64, u64) = (5, 4);
    pub const ANTHROPIC_CACHE_WRITE_1H: (u64, u64) = (2, 1);

    pub fn cache_read_rate(&self) -> NanoUsd {
        self.cached_input_per_mtok.unwrap_or(self.input_per_mtok)
    }

    pub fn cache_write_rate(&self) -> NanoUsd {
        self.cache_write_per_mtok.unwrap_or(self.input_per_mtok)
    }

    pub fn cache_write_1h_rate(&self) -> NanoUsd {
        self.cache_write_1h_per_mtok
            .unwrap_or_else(|| self.cache_write_rate().max(self.input_per_mtok))
    }

    /// The dearest rate a prompt token can be billed at.
    pub fn max_input_rate(&self) -> NanoUsd {
        self.input_per_mtok
            .max(self.cache_read_rate())
            .max(self.cache_write_rate())
            .max(self.cache_write_1h_rate())
    }

    /// This price with the cache-write rates it lacks set the way Anthropic
    /// bills them (rounded up); rates already set are kept.
    pub fn with_anthropic_cache_writes(mut self) -> Price {
        let times = |(num, den): (u64, u64)| {
            let nanos = u128::from(self.input_per_mtok.0) * u128::from(num);
            NanoUsd(u64::try_from(nanos.div_ceil(u128::from(den))).unwrap_or(u64::MAX))
        };
        self.cache_write_per_mtok = self
            .cache_write_per_mtok
            .or(Some(times(Self::ANTHROPIC_CACHE_WRITE)));
        self.cache_write_1h_per_mtok = self
            .cache_write_1h_per_mtok
            .or(Some(times(Self::ANTHROPIC_CACHE_WRITE_1H)));
        self
    }

    /// The most `input_tokens` prompt and `output_tokens` completion tokens
    /// can cost, rounded up: what a reservation holds. Every prompt token is
    /// priced at [`Price::max_input_rate`], because whether the provider
    /// writes its cache is only known from its answer: it depends on markers
    /// the gateway may translate, on automatic caching and on the provider,
    /// and a reservation too low lets the spend pass its cap, one too high
    /// only holds headroom until the settlement. For a model without a
    /// cache-write surcharge this is the plain input rate.
    pub fn worst_case(&self, input_tokens: u64, output_tokens: u64) -> NanoUsd {
        let nanos = per_mtok(input_tokens, self.max_input_rate())
            .saturating_add(per_mtok(output_tokens, self.output_per_mtok));
        bounded(nanos)
    }

    /// What the provider bills: of `input_tokens`, the cache reads and
    /// writes in `cache` at their rates, the rest at the input rate; rounded
    /// up to the next nano-USD. Cache counts the provider reports beyond
    /// the prompt total are cut to it, writes (the dearer) first, so an
    /// inconsistent report is never billed below its total at input.
    pub fn cost_with_cache(
        &self,
        input_tokens: u64,
        cache: CacheTokens,
        output_tokens: u64,
    ) -> NanoUsd {
        let write = cache.write.min(input_tokens);
        let write_1h = cache.write_1h.min(write);
        let read = cache.read.min(input_tokens - write);
        let fresh = input_tokens - write - read;
        let nanos = per_mtok(fresh, self.input_per_mtok)
            .saturating_add(per_mtok(read, self.cache_read_rate()))
            .saturating_add(per_mtok(write - write_1h, self.cache_write_rate()))
            .saturating_add(per_mtok(write_1h, self.cache_write_1h_rate()))
            .saturating_add(per_mtok(output_tokens, self.output_per_mtok));
        bounded(nanos)
    }

    /// How many output tokens `budget` pays for once `input_tokens` are
    /// paid at their worst case ([`Price::worst_case`]).
    pub fn affordable_output_tokens(&self, budget: NanoUsd, input_tokens: u64) -> u64 {
        let input_cost = self.worst_case(input_tokens, 0);
        let left = budget.saturating_sub(input_cost).0 as u128 * 1_000_000;
        match self.output_per_mtok.0 {
            0 => u64::MAX,
            p => u64::try_from(left / p as u128).unwrap_or(u64::MAX),
        }
    }
}

/// Nano-USD times a million, rounded up to nano-USD and bounded by
/// [`NanoUsd::MAX_REQUEST`].
fn bounded(nanos_per_mtok: u128) -> NanoUsd {
    let nanos = nanos_per_mtok.div_ceil(1_000_000);
    NanoUsd(u64::try_from(nanos).map_or(NanoUsd::MAX_REQUEST.0, |n| n.min(NanoUsd::MAX_REQUEST.0)))
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
            ..Price::default()
        };
        // 1M input tokens at $0.15 is exactly $0.15.
        assert_eq!(p.worst_case(1_000_000, 0), NanoUsd::from_usd(0.15).unwrap());
        // One token costs 150 nano-USD input, 600 output.
        assert_eq!(p.worst_case(1, 1), NanoUsd(750));
        assert_eq!(p.affordable_output_tokens(NanoUsd(750), 1), 1);
        assert_eq!(p.affordable_output_tokens(NanoUsd(749), 1), 0);
    }

    fn usd(v: f64) -> NanoUsd {
        NanoUsd::from_usd(v).unwrap()
    }

    /// Claude Sonnet 4 as Anthropic lists it: $3 input, $3.75 5-minute
    /// writes, $6 1-hour writes, $0.30 reads, $15 output.
    fn sonnet() -> Price {
        Price {
            input_per_mtok: usd(3.0),
            output_per_mtok: usd(15.0),
            cached_input_per_mtok: Some(usd(0.30)),
            ..Price::default()
        }
        .with_anthropic_cache_writes()
    }

    #[test]
    fn anthropic_cache_rates_are_derived_from_input_and_billed_by_kind() {
        let p = sonnet();
        assert_eq!(p.cache_write_per_mtok, Some(usd(3.75)));
        assert_eq!(p.cache_write_1h_per_mtok, Some(usd(6.0)));
        assert_eq!(p.max_input_rate(), usd(6.0));
        // 1000 prompt tokens: 100 fresh, 500 read, 300 written for 5
        // minutes, 100 for an hour; 10 output tokens.
        let cache = CacheTokens {
            read: 500,
            write: 400,
            write_1h: 100,
        };
        let expected = 100 * 3_000 + 500 * 300 + 300 * 3_750 + 100 * 6_000 + 10 * 15_000;
        assert_eq!(p.cost_with_cache(1000, cache, 10), NanoUsd(expected));
        // Rates already set are kept.
        let set = Price {
            cache_write_per_mtok: Some(usd(4.0)),
            ..sonnet()
        }
        .with_anthropic_cache_writes();
        assert_eq!(set.cache_write_per_mtok, Some(usd(4.0)));
    }

    #[test]
    fn missing_cache_rates_never_bill_below_input() {
        let plain = Price {
            input_per_mtok: usd(2.0),
            output_per_mtok: usd(8.0),
            ..Price::default()
        };
        let cache = CacheTokens {
            read: 300,
            write: 200,
            write_1h: 50,
        };
        assert_eq!(
            plain.cost_with_cache(1000, cache, 5),
            plain.worst_case(1000, 5)
        );
        // A 1-hour write without its own rate costs the 5-minute one.
        let five = Price {
            cache_write_per_mtok: Some(usd(2.5)),
            ..plain
        };
        assert_eq!(five.cache_write_1h_rate(), usd(2.5));
        // Counts beyond the prompt total are cut to it, writes first.
        let over = CacheTokens {
            read: 900,
            write: 900,
            write_1h: 0,
        };
        assert_eq!(
            five.cost_with_cache(1000, over, 0),
            NanoUsd(900 * 2_500 + 100 * 2_000)
        );
    }

    proptest::proptest! {
        /// Whatever the provider reports, the bill never exceeds the
        /// reservation's worst case for the same token counts.
        #[test]
        fn bill_never_exceeds_worst_case(
            input in 0u64..10_000_000,
            output in 0u64..1_000_000,
            read in 0u64..20_000_000,
            write in 0u64..20_000_000,
            write_1h in 0u64..20_000_000,
            rates in proptest::collection::vec(0u64..100_000_000_000, 5),
            set in proptest::collection::vec(proptest::bool::ANY, 3),
        ) {
            let opt = |on: bool, v: u64| on.then_some(NanoUsd(v));
            let p = Price {
                input_per_mtok: NanoUsd(rates[0]),
                output_per_mtok: NanoUsd(rates[1]),
                cached_input_per_mtok: opt(set[0], rates[2]),
                cache_write_per_mtok: opt(set[1], rates[3]),
                cache_write_1h_per_mtok: opt(set[2], rates[4]),
            };
            let cache = CacheTokens { read, write, write_1h };
            let bill = p.cost_with_cache(input, cache, output);
            proptest::prop_assert!(bill <= p.worst_case(input, output));
            // And never below all of it at the cheapest prompt rate.
            let cheapest = p
                .input_per_mtok
                .min(p.cache_read_rate())
                .min(p.cache_write_rate())
                .min(p.cache_write_1h_rate());
            let floor = Price { input_per_mtok: cheapest, ..Price::default() };
            proptest::prop_assert!(bill >= floor.worst_case(input, 0));
            // The derived Anthropic rates keep the bound too.
            let a = p.with_anthropic_cache_writes();
            proptest::prop_assert!(
                a.cost_with_cache(input, cache, output) <= a.worst_case(input, output)
            );
        }
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

/// The id of one request, put in its extensions by the router's request-id
/// layer and echoed as `x-request-id`. Lives here, not in `app`, so that
/// `proxy` does not import the module that imports it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);
