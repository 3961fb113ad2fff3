//! Routing and resilience (SPEC §8): which target of a model is tried
//! first ([`strategy`]), whether a failure is worth another try and how
//! long to wait before it ([`retry`]), and each provider's health: its
//! circuit breaker ([`breaker`]) and latency estimate ([`latency`]). The
//! attempt loop that uses them is `crate::proxy::failover`; this module
//! never sees HTTP bodies.
//!
//! Health is kept per provider, not per (provider, model): what trips a
//! circuit in practice (an outage, an overloaded account, a network
//! problem, an expired key) is the provider's, and `tollgate_circuit_state`
//! is labelled by provider, so one state per provider is what an operator
//! reads. It is one state per gateway process, shared by every shard's
//! runtime (atomics, no locks on the happy path), and it survives config
//! reloads: the [`Registry`] hands the same [`Health`] to every runtime
//! built for a provider of the same name.

pub mod breaker;
pub mod latency;
pub mod retry;
pub mod shared;
pub mod strategy;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::Config;

/// Every provider's health, for as long as the gateway runs.
#[derive(Default)]
pub struct Registry {
    by_provider: Mutex<HashMap<String, Arc<Health>>>,
    /// Where circuit changes go to be shared with replicas (`shared`);
    /// unset without Redis counters.
    changes: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<shared::Change>>,
}

impl Registry {
    /// The health of `provider`, created closed on first use.
    fn health(&self, provider: &str) -> Arc<Health> {
        self.by_provider
            .lock()
            .entry(provider.to_owned())
            .or_insert_with(|| Arc::new(Health::new(provider)))
            .clone()
    }

    /// A snapshot of every provider's health (for the Redis sync task).
    pub(crate) fn all(&self) -> Vec<Arc<Health>> {
        self.by_provider.lock().values().cloned().collect()
    }

    /// `provider`'s circuit opened here for `cooldown`: tell the replicas.
    pub fn opened(&self, provider: &str, cooldown: std::time::Duration) {
        if let Some(tx) = self.changes.get() {
            let _ = tx.send(shared::Change::Opened(provider.to_owned(), cooldown));
        }
    }

    /// `provider`'s circuit closed here (its probe answered).
    pub fn closed(&self, provider: &str) {
        if let Some(tx) = self.changes.get() {
            let _ = tx.send(shared::Change::Closed(provider.to_owned()));
        }
    }
}

/// One provider's circuit and latency estimate.
pub struct Health {
    pub provider: String,
    pub breaker: breaker::Breaker,
    pub latency: latency::PeakEwma,
    /// `x-tollgate-provider` for its answers, made once.
    pub header: Option<http::HeaderValue>,
    outcomes: retry::OutcomeCounters,
}

impl Health {
    fn new(provider: &str) -> Health {
        Health {
            provider: provider.to_owned(),
            breaker: breaker::Breaker::new(provider),
            latency: latency::PeakEwma::default(),
            header: http::HeaderValue::from_str(provider).ok(),
            outcomes: retry::OutcomeCounters::new(provider),
        }
    }

    /// Counts one attempt in `tollgate_upstream_attempts_total`.
    pub fn count(&self, outcome: retry::Outcome) {
        self.outcomes.increment(outcome);
    }
}

/// The health of every provider of one config version: built with the
/// runtime, read without locks by every request.
pub struct Routes {
    registry: Arc<Registry>,
    by_provider: HashMap<String, Arc<Health>>,
}

impl Routes {
    /// The routes of `config`, keeping the health of providers `registry`
    /// already knows.
    pub fn new(config: &Config, registry: Arc<Registry>) -> Routes {
        let by_provider = config
            .providers
            .iter()
            .map(|p| (p.name.clone(), registry.health(&p.name)))
            .collect();
        Routes {
            registry,
            by_provider,
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn health(&self, provider: &str) -> Option<&Arc<Health>> {
        self.by_provider.get(provider)
    }
}
