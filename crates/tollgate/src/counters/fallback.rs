//! `counters_unavailable: allow_local`: while the shared counters are
//! unreachable, admit against this process's own in-memory counters instead
//! of failing closed. Each grant is settled where it was taken, and a
//! local grant on the shared budget counters too: they never saw its spend.
//! Until they can take it, the shared counter is *suspect* and, once Redis
//! answers again, deleted and rebuilt from the ledger plus every gateway's
//! outstanding amounts (see `outstanding.rs`), within one
//! [`super::MAINTAIN_EVERY`] of Redis answering this gateway.
//!
//! What this guarantees for a budget: while Redis is unreachable each
//! gateway admits on its own counter, seeded from the ledger as it stood
//! (every gateway's written rows); so over an outage the ledger can pass
//! `limit_usd` by what the *other* gateways spent locally meanwhile (at
//! most `limit_usd` each). Once Redis is back and the counter rebuilt,
//! nothing more is admitted until the ledger plus reservations in flight
//! fit under the limit again, and the counter equals the ledger once quiet.

use std::sync::Arc;

use async_trait::async_trait;

use std::sync::atomic::{AtomicBool, Ordering};

use super::{
    Actual, Admission, AdmitRequest, BudgetRebuild, BudgetState, Counters, CountersError, Grant,
    MemoryCounters, RedisCounters,
};
use crate::config::CountersUnavailable;
use crate::types::{Clock, NanoUsd};

/// Wraps shared counters according to the configured failure mode.
pub fn with_fail_mode(
    primary: Arc<RedisCounters>,
    mode: CountersUnavailable,
    clock: Arc<dyn Clock>,
) -> Arc<dyn Counters> {
    match mode {
        CountersUnavailable::Reject => primary,
        CountersUnavailable::AllowLocal => Arc::new(LocalFallback {
            primary,
            local: MemoryCounters::new(clock),
            local_grants: moka::sync::Cache::new(1_000_000),
            degraded: AtomicBool::new(false),
        }),
    }
}

struct LocalFallback {
    primary: Arc<RedisCounters>,
    local: MemoryCounters,
    /// Request ids admitted by `local`, so their settlement goes there too.
    local_grants: moka::sync::Cache<String, ()>,
    /// Admitting on `local` since the last admit the shared counters answered.
    degraded: AtomicBool,
}

impl LocalFallback {
    /// A local grant's cost on the shared budget counters; a failure is
    /// remembered there and mended once they answer.
    async fn settle_shared(&self, req: &AdmitRequest, grant: &Grant, actual: Actual) {
        if let Err(e) = self.primary.settle_local(req, grant, actual).await {
            tracing::debug!(error = %e, request_id = %req.request_id,
                "shared counters still unreachable; the budget is rebuilt once they answer");
        }
    }
}

#[async_trait]
impl Counters for LocalFallback {
    async fn admit(&self, req: &AdmitRequest) -> Result<Admission, CountersError> {
        match self.primary.admit(req).await {
            Err(e) => {
                tracing::warn!(error = %e, "shared counters unreachable; admitting on local counters (allow_local)");
                self.degraded.store(true, Ordering::Relaxed);
                let admission = self.local.admit(req).await?;
                if let Admission::Admitted(grant) = &admission {
                    self.local_grants.insert(req.request_id.clone(), ());
                    self.primary.track_local(req, grant);
                }
                Ok(admission)
            }
            ok => {
                if self.degraded.swap(false, Ordering::Relaxed) {
                    // The local counters missed everything spent on the
                    // shared ones: the next outage restores them afresh.
                    self.local.forget_budgets();
                }
                ok
            }
        }
    }

    async fn settle(
        &self,
        req: &AdmitRequest,
        grant: &Grant,
        actual: Actual,
    ) -> Result<(), CountersError> {
        if self.local_grants.remove(&req.request_id).is_some() {
            self.settle_shared(req, grant, actual).await;
            return self.local.settle(req, grant, actual).await;
        }
        self.primary.settle(req, grant, actual).await
    }

    async fn settle_success(
        &self,
        req: &AdmitRequest,
        grant: &Grant,
        actual: Actual,
    ) -> Result<(), CountersError> {
        if self.local_grants.remove(&req.request_id).is_some() {
            self.settle_shared(req, grant, actual).await;
            let settled = self.local.settle(req, grant, actual).await;
            // Streaks go wherever `record_outcome` finds them.
            super::end_streaks(self, req).await;
            return settled;
        }
        match self.primary.settle_success(req, grant, actual).await {
            Err(e) => {
                super::end_streaks(&self.local, req).await;
                Err(e)
            }
            ok => ok,
        }
    }

    async fn seed_budget(
        &self,
        key: &str,
        spent: NanoUsd,
        expires_at_ms: Option<i64>,
    ) -> Result<(), CountersError> {
        let local = self.local.seed_budget(key, spent, expires_at_ms).await;
        self.primary
            .seed_budget(key, spent, expires_at_ms)
            .await
            .or(local)
    }

    async fn rebuild_budget(
        &self,
        key: &str,
        rebuild: &BudgetRebuild,
        expires_at_ms: Option<i64>,
    ) -> Result<(), CountersError> {
        match self
            .primary
            .rebuild_budget(key, rebuild, expires_at_ms)
            .await
        {
            Err(_) => {
                self.local
                    .seed_budget(key, rebuild.ledger.spent, expires_at_ms)
                    .await
            }
            ok => ok,
        }
    }

    async fn maintain(&self) {
        self.primary.maintain().await;
    }

    async fn budget(&self, key: &str) -> Result<Option<BudgetState>, CountersError> {
        match self.primary.budget(key).await {
            Err(_) => self.local.budget(key).await,
            ok => ok,
        }
    }

    async fn record_outcome(
        &self,
        streak_key: &str,
        error_code: Option<&str>,
        max: u32,
        window_ms: u64,
    ) -> Result<bool, CountersError> {
        match self
            .primary
            .record_outcome(streak_key, error_code, max, window_ms)
            .await
        {
            Err(_) => {
                self.local
                    .record_outcome(streak_key, error_code, max, window_ms)
                    .await
            }
            ok => ok,
        }
    }

    async fn ping(&self) -> Result<(), CountersError> {
        self.primary.ping().await
    }
}
