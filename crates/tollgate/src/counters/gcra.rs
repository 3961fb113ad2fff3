//! The rate-limit arithmetic (GCRA with a burst of one whole minute), kept
//! exact in integers. Shared by the memory counters; `lua/admit.lua` and
//! `lua/settle.lua` mirror it line for line, so change them together.
//!
//! Instead of a theoretical arrival time we keep the bucket's *level*: how far
//! the arrival time runs ahead of now (`tat - now`). It is measured in units
//! where one millisecond of refill is `limit` units and one taken unit (a
//! request or a token) is `60_000` units, so the emission interval
//! `T = 60_000 ms / limit` is exact for every limit and the numbers stay small
//! enough for Lua's doubles (below `2 * 60_000 * limit`). A level counts
//! the units taken and not yet refilled whatever the limit, so a config
//! reload that changes the limit keeps what was used and only changes the
//! capacity and the refill speed.

use super::RateState;

/// Milliseconds in the window; also the level units one taken unit costs.
pub(crate) const WINDOW_MS: u128 = 60_000;

/// The level left after `elapsed_ms` of refill.
pub(crate) fn decay(level: u128, elapsed_ms: i64, limit: u64) -> u128 {
    let elapsed = u128::try_from(elapsed_ms.max(0)).unwrap_or(0);
    level.saturating_sub(elapsed.saturating_mul(u128::from(limit)))
}

/// Takes `amount` from a bucket at `level`: the new level, or the exact wait
/// in milliseconds until it would fit. An amount larger than the limit never
/// fits; it gets a full window.
pub(crate) fn take(level: u128, limit: u64, amount: u64) -> Result<u128, u64> {
    if amount == 0 {
        return Ok(level);
    }
    if limit == 0 || amount > limit {
        return Err(WINDOW_MS as u64);
    }
    let capacity = WINDOW_MS * u128::from(limit);
    let after = level.saturating_add(u128::from(amount) * WINDOW_MS);
    if after <= capacity {
        return Ok(after);
    }
    let wait = (after - capacity).div_ceil(u128::from(limit));
    Err(u64::try_from(wait).unwrap_or(u64::MAX))
}

/// Moves a tokens bucket from the reserved to the actual amount. The level
/// never drops below zero: a refund cannot create credit beyond capacity.
pub(crate) fn correct(level: u128, reserved: u64, actual: u64) -> u128 {
    if actual >= reserved {
        level.saturating_add(u128::from(actual - reserved) * WINDOW_MS)
    } else {
        level.saturating_sub(u128::from(reserved - actual) * WINDOW_MS)
    }
}

/// What the headers report for a bucket at `level`.
pub(crate) fn state(level: u128, limit: u64) -> RateState {
    if limit == 0 {
        return RateState {
            limit,
            remaining: 0,
            reset_ms: 0,
        };
    }
    let capacity = WINDOW_MS * u128::from(limit);
    RateState {
        limit,
        remaining: u64::try_from(capacity.saturating_sub(level) / WINDOW_MS).unwrap_or(u64::MAX),
        reset_ms: u64::try_from(level.div_ceil(u128::from(limit))).unwrap_or(u64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_exactly_the_limit_then_waits_one_interval() {
        // 600/min: one request every 100 ms, burst of 600.
        let mut level = 0;
        for _ in 0..600 {
            level = take(level, 600, 1).unwrap();
        }
        assert_eq!(take(level, 600, 1), Err(100));
        assert_eq!(
            state(level, 600),
            RateState {
                limit: 600,
                remaining: 0,
                reset_ms: 60_000
            }
        );
        // After 99 ms still not; after 100 ms exactly one.
        assert_eq!(take(decay(level, 99, 600), 600, 1), Err(1));
        let level = take(decay(level, 100, 600), 600, 1).unwrap();
        assert_eq!(take(level, 600, 1), Err(100));
    }

    #[test]
    fn limits_that_do_not_divide_a_minute_stay_exact() {
        // 7/min: T = 8571.43 ms. After 7 requests, the 8th waits ceil(60000/7).
        let mut level = 0;
        for _ in 0..7 {
            level = take(level, 7, 1).unwrap();
        }
        assert_eq!(take(level, 7, 1), Err(8572));
        assert!(take(decay(level, 8571, 7), 7, 1).is_err());
        assert!(take(decay(level, 8572, 7), 7, 1).is_ok());
    }

    #[test]
    fn amounts_over_the_limit_never_pass() {
        assert_eq!(take(0, 100, 101), Err(60_000));
        assert_eq!(take(0, 0, 1), Err(60_000));
        assert_eq!(take(0, 100, 100), Ok(6_000_000));
    }

    #[test]
    fn corrections_refund_and_charge_without_going_negative() {
        let level = take(0, 1000, 500).unwrap();
        assert_eq!(state(correct(level, 500, 100), 1000).remaining, 900);
        assert_eq!(state(correct(level, 500, 700), 1000).remaining, 300);
        assert_eq!(correct(level, 500_000, 0), 0);
    }
}
