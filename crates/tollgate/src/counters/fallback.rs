//! `counters_unavailable: allow_local`: while the shared counters are
//! unreachable, admit against this process's own in-memory counters instead
//! of failing closed. Each grant is settled where it was taken.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    Actual, Admission, AdmitRequest, BudgetState, Counters, CountersError, Grant, MemoryCounters,
};
use crate::config::CountersUnavailable;
use crate::types::{Clock, NanoUsd};

/// Wraps shared counters according to the configured failure mode.
pub fn with_fail_mode(
    primary: Arc<dyn Counters>,
    mode: CountersUnavailable,
    clock: Arc<dyn Clock>,
) -> Arc<dyn Counters> {
    match mode {
        CountersUnavailable::Reject => primary,
        CountersUnavailable::AllowLocal => Arc::new(LocalFallback {
            primary,
            local: MemoryCounters::new(clock),
            local_grants: moka::sync::Cache::new(1_000_000),
        }),
    }
}

struct LocalFallback {
    primary: Arc<dyn Counters>,
    local: MemoryCounters,
    /// Request ids admitted by `local`, so their settlement goes there too.
    local_grants: moka::sync::Cache<String, ()>,
}

#[async_trait]
impl Counters for LocalFallback {
    async fn admit(&self, req: &AdmitRequest) -> Result<Admission, CountersError> {
        match self.primary.admit(req).await {
            Err(e) => {
                tracing::warn!(error = %e, "shared counters unreachable; admitting on local counters (allow_local)");
                let admission = self.local.admit(req).await?;
                if matches!(admission, Admission::Admitted(_)) {
                    self.local_grants.insert(req.request_id.clone(), ());
                }
                Ok(admission)
            }
            ok => ok,
        }
    }

    async fn settle(
        &self,
        req: &AdmitRequest,
        grant: &Grant,
        actual: Actual,
    ) -> Result<(), CountersError> {
        if self.local_grants.remove(&req.request_id).is_some() {
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
