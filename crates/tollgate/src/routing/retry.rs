//! What one failed attempt means for the next (SPEC §8): retry the same
//! target after a backoff, move on to the next target, or stop. Also the
//! backoff itself (exponential with full jitter, AWS's "Exponential
//! Backoff And Jitter") and the per-attempt outcome metric.

use std::time::Duration;

use rand::Rng;

use crate::config::RoutingConfig;
use crate::providers::ProviderError;

/// Statuses worth the same request again (SPEC §8). 502 and 504 are
/// [`ProviderError::Lost`], handled with the billing rule below.
pub const RETRYABLE_STATUSES: [u16; 5] = [408, 429, 500, 503, 529];

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Worth another try on the same target, after at least `retry_after`
    /// if the provider asked for a wait.
    Retry { retry_after: Option<Duration> },
    /// Not worth repeating here, but another target may answer.
    Failover,
    /// The provider's own verdict on the request (a 4xx): final.
    Final,
    /// The provider may have generated, and billed, an answer that was
    /// lost: the attempt is billed at its reservation, and another attempt
    /// (on the same target while retries are left, else the next) goes out
    /// only with a reservation of its own (`proxy::failover::Reserve`).
    Billed,
}

/// How the attempt loop treats `e`.
pub fn next(e: &ProviderError) -> Next {
    match e {
        ProviderError::Rejected { .. } => Next::Final,
        _ if e.may_have_billed() => Next::Billed,
        ProviderError::Refused {
            status,
            retry_after,
            ..
        } if RETRYABLE_STATUSES.contains(&status.as_u16()) => Next::Retry {
            retry_after: *retry_after,
        },
        // Nothing reached the provider (connection refused, DNS, TLS).
        ProviderError::Failed { .. } => Next::Retry { retry_after: None },
        // Other 5xx (501, 505, …) and the provider refusing the gateway's
        // own key: the same request fails the same way here.
        _ => Next::Failover,
    }
}

/// Whether `e` counts towards opening the provider's circuit.
pub fn trips(e: &ProviderError) -> bool {
    matches!(next(e), Next::Retry { .. } | Next::Billed)
}

/// How long to wait before retry number `retry` (0 for the first), or
/// `None` when the provider asked for longer than `max_backoff_ms`: then
/// the next target is tried at once instead of holding the client.
pub fn wait(retry: u32, retry_after: Option<Duration>, config: &RoutingConfig) -> Option<Duration> {
    if let Some(asked) = retry_after {
        return (asked <= config.max_backoff).then_some(asked);
    }
    let ceiling = config
        .backoff
        .saturating_mul(1u32.checked_shl(retry).unwrap_or(u32::MAX))
        .min(config.max_backoff);
    let ceiling_us = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    Some(Duration::from_micros(
        rand::rng().random_range(0..=ceiling_us),
    ))
}

/// `tollgate_upstream_attempts_total{outcome}` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The provider's own 4xx, passed through.
    Rejected,
    /// Refused (429, 5xx, …) or unreachable.
    Failed,
    Timeout,
    /// Lost after it was sent (may have been billed).
    Lost,
    /// The provider refused the gateway's credentials.
    Credentials,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Success,
        Outcome::Rejected,
        Outcome::Failed,
        Outcome::Timeout,
        Outcome::Lost,
        Outcome::Credentials,
    ];

    pub fn of(e: &ProviderError) -> Outcome {
        match e {
            ProviderError::Rejected { .. } => Outcome::Rejected,
            ProviderError::Timeout { .. } => Outcome::Timeout,
            ProviderError::Lost { .. } => Outcome::Lost,
            ProviderError::Credentials { .. } => Outcome::Credentials,
            _ => Outcome::Failed,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::Timeout => "timeout",
            Outcome::Lost => "lost",
            Outcome::Credentials => "credentials",
        }
    }
}

/// The attempt counters of one provider, registered once so that counting
/// an attempt allocates nothing.
pub(super) struct OutcomeCounters([metrics::Counter; 6]);

impl OutcomeCounters {
    pub fn new(provider: &str) -> OutcomeCounters {
        OutcomeCounters(Outcome::ALL.map(|o| {
            metrics::counter!("tollgate_upstream_attempts_total",
                "provider" => provider.to_owned(), "outcome" => o.label())
        }))
    }

    pub fn increment(&self, outcome: Outcome) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.0[i].increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn refused(status: u16, retry_after: Option<Duration>) -> ProviderError {
        ProviderError::Refused {
            provider: "p".into(),
            status: StatusCode::from_u16(status).unwrap(),
            retry_after,
            message: String::new(),
        }
    }

    #[test]
    fn the_spec_list_is_retried_and_the_rest_is_not() {
        for s in RETRYABLE_STATUSES {
            assert_eq!(next(&refused(s, None)), Next::Retry { retry_after: None });
        }
        assert_eq!(next(&refused(501, None)), Next::Failover);
        let wait = Some(Duration::from_secs(3));
        assert_eq!(next(&refused(429, wait)), Next::Retry { retry_after: wait });
        let failed = ProviderError::Failed {
            provider: "p".into(),
            message: "connection refused".into(),
        };
        assert_eq!(next(&failed), Next::Retry { retry_after: None });
        let lost = ProviderError::Lost {
            provider: "p".into(),
            message: "answered 502".into(),
        };
        assert_eq!(next(&lost), Next::Billed);
        let timeout = ProviderError::Timeout {
            provider: "p".into(),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(next(&timeout), Next::Billed);
        assert!(trips(&timeout) && trips(&failed) && !trips(&refused(501, None)));
        let rejected = ProviderError::Rejected {
            provider: "p".into(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: bytes::Bytes::new(),
            content_type: None,
        };
        assert_eq!(next(&rejected), Next::Final);
        let creds = ProviderError::Credentials {
            provider: "p".into(),
            status: StatusCode::UNAUTHORIZED,
            code: None,
        };
        assert_eq!(next(&creds), Next::Failover);
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_cap() {
        let c = RoutingConfig {
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..RoutingConfig::default()
        };
        for retry in 0..40 {
            let ceiling = Duration::from_millis((100u64 << retry.min(20)).min(1000));
            for _ in 0..50 {
                let w = wait(retry, None, &c).unwrap();
                assert!(w <= ceiling, "{retry}: {w:?}");
            }
        }
        // Jitter: not always the ceiling.
        let waits: std::collections::HashSet<_> =
            (0..50).map(|_| wait(0, None, &c).unwrap()).collect();
        assert!(waits.len() > 10);
    }

    #[test]
    fn a_retry_after_within_the_cap_is_waited_and_a_longer_one_moves_on() {
        let c = RoutingConfig {
            max_backoff: Duration::from_millis(5000),
            ..RoutingConfig::default()
        };
        let two = Duration::from_secs(2);
        assert_eq!(wait(0, Some(two), &c), Some(two));
        assert_eq!(wait(5, Some(Duration::from_secs(6)), &c), None);
        assert_eq!(wait(0, Some(Duration::MAX), &c), None);
    }
}
