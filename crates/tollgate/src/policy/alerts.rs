//! Alert webhooks: budget thresholds, the first block of a period, loop-guard
//! trips. Requests only enqueue a job on a bounded channel (dropped with a
//! warning when full); one background task reads the budget counter, decides
//! which thresholds were crossed (each once per counter and period), and
//! delivers with retries on tasks of their own, so a slow webhook never
//! holds up a request. The body is the JSON event, or with `alerts.format:
//! slack` a Slack/Teams `{"text": ...}` message (`alerts/slack.rs`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::AlertFormat;
use crate::counters::Counters;
use crate::types::{NanoUsd, Period};

const QUEUE: usize = 1024;
/// Remembered (counter, threshold) pairs; counter keys carry their period,
/// so a new period fires again.
const FIRED_CAPACITY: u64 = 100_000;
const TRIES: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_secs(5);

mod slack;

/// Where and when to alert, from the config in force for the request.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub webhook_url: String,
    pub thresholds: Vec<f64>,
    pub format: AlertFormat,
}

/// One budget counter and what an alert about it says.
#[derive(Debug, Clone)]
pub(crate) struct BudgetSubject {
    pub counter_key: String,
    pub team: String,
    pub key: Option<String>,
    pub policy: String,
    pub limit: NanoUsd,
    pub period: Period,
    pub resets_at: Option<DateTime<Utc>>,
    /// `action: alert` budgets alert on reservations too: nothing stops the
    /// spend, so the warning should come as early as possible.
    pub count_reserved: bool,
}

#[derive(Debug)]
pub(crate) enum Job {
    /// Spend may have crossed a threshold: read the counter and see.
    Check {
        target: Target,
        budget: BudgetSubject,
    },
    /// A request was refused by this budget.
    Blocked {
        target: Target,
        budget: BudgetSubject,
        spent: NanoUsd,
        ts: DateTime<Utc>,
    },
    /// A loop guard tripped (identical bodies or an error streak).
    Loop {
        url: String,
        format: AlertFormat,
        team: String,
        key: String,
        policy: String,
        until: DateTime<Utc>,
        ts: DateTime<Utc>,
    },
}

/// The webhook body.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AlertEvent {
    pub event: &'static str,
    pub team: String,
    pub key: Option<String>,
    pub policy: String,
    pub threshold: Option<f64>,
    pub spent_usd: Option<f64>,
    pub limit_usd: Option<f64>,
    pub period: Option<&'static str>,
    pub resets_at: Option<String>,
    pub ts: String,
}

pub(crate) struct Alerter {
    tx: mpsc::Sender<Job>,
    /// Taken by the first `send`, which starts the worker: the engine may be
    /// built outside a Tokio runtime.
    rx: parking_lot::Mutex<Option<mpsc::Receiver<Job>>>,
    /// The runtime the engine was built on (the main one): the worker runs
    /// there, not on the shard whose request happened to trip the first
    /// alert, so it lives as long as the gateway.
    home: Option<tokio::runtime::Handle>,
    worker: Arc<Worker>,
}

struct Worker {
    counters: Arc<dyn Counters>,
    http: reqwest::Client,
    fired: moka::sync::Cache<String, ()>,
    clock: Arc<dyn crate::types::Clock>,
}

impl Alerter {
    pub(crate) fn new(
        counters: Arc<dyn Counters>,
        http: reqwest::Client,
        clock: Arc<dyn crate::types::Clock>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let fired = moka::sync::Cache::builder()
            .max_capacity(FIRED_CAPACITY)
            .build();
        Alerter {
            tx,
            rx: parking_lot::Mutex::new(Some(rx)),
            home: tokio::runtime::Handle::try_current().ok(),
            worker: Arc::new(Worker {
                counters,
                http,
                fired,
                clock,
            }),
        }
    }

    /// Whether every threshold up to `spent` has already fired for this
    /// counter: the request path skips the channel in the common case.
    pub(crate) fn all_fired(
        &self,
        target: &Target,
        budget: &BudgetSubject,
        spent: NanoUsd,
    ) -> bool {
        target
            .thresholds
            .iter()
            .filter(|t| spent >= threshold_amount(budget.limit, **t))
            .all(|t| {
                self.worker
                    .fired
                    .contains_key(&fired_key(&budget.counter_key, *t))
            })
    }

    pub(crate) fn fired_contains(&self, key: &str) -> bool {
        self.worker.fired.contains_key(key)
    }

    pub(crate) fn send(&self, job: Job) {
        if let Some(rx) = self.rx.lock().take() {
            let home = self
                .home
                .clone()
                .or_else(|| tokio::runtime::Handle::try_current().ok());
            match home {
                Some(rt) => {
                    rt.spawn(self.worker.clone().run(rx));
                }
                None => {
                    tracing::warn!("alert webhooks need a Tokio runtime; alerts are disabled");
                    return;
                }
            }
        }
        if let Err(e) = self.tx.try_send(job) {
            tracing::warn!(error = %e, "alert queue full or closed; dropping an alert");
        }
    }
}

fn threshold_amount(limit: NanoUsd, t: f64) -> NanoUsd {
    // `f64` only to scale by the configured fraction; the comparison is integer.
    NanoUsd((limit.0 as f64 * t).ceil() as u64)
}

fn fired_key(counter_key: &str, t: f64) -> String {
    format!("{counter_key}#{t}")
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Worker {
    async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.recv().await {
            match job {
                Job::Check { target, budget } => self.check(target, budget).await,
                Job::Blocked {
                    target,
                    budget,
                    spent,
                    ts,
                } => {
                    if self.first(format!("{}#blocked", budget.counter_key)) {
                        let event = budget_event("budget_blocked", &budget, None, spent, ts);
                        self.deliver(target.webhook_url, target.format, event);
                    }
                }
                Job::Loop {
                    url,
                    format,
                    team,
                    key,
                    policy,
                    until,
                    ts,
                } => {
                    let event = AlertEvent {
                        event: "loop_detected",
                        team,
                        key: Some(key),
                        policy,
                        threshold: None,
                        spent_usd: None,
                        limit_usd: None,
                        period: None,
                        resets_at: Some(rfc3339(until)),
                        ts: rfc3339(ts),
                    };
                    self.deliver(url, format, event);
                }
            }
        }
    }

    /// `true` the first time `key` is seen.
    fn first(&self, key: String) -> bool {
        self.fired.entry(key).or_insert(()).is_fresh()
    }

    async fn check(&self, target: Target, budget: BudgetSubject) {
        let state = match self.counters.budget(&budget.counter_key).await {
            // A counter that is gone has nothing to alert on until it is
            // restored by the next admission.
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, policy = %budget.policy, "cannot read a budget for its alert thresholds");
                return;
            }
        };
        let spent = if budget.count_reserved {
            state.spent.saturating_add(state.reserved)
        } else {
            state.spent
        };
        let mut thresholds = target.thresholds.clone();
        thresholds.sort_by(f64::total_cmp);
        for t in thresholds {
            if spent >= threshold_amount(budget.limit, t)
                && self.first(fired_key(&budget.counter_key, t))
            {
                let event = budget_event(
                    "budget_threshold",
                    &budget,
                    Some(t),
                    spent,
                    self.clock.now(),
                );
                self.deliver(target.webhook_url.clone(), target.format, event);
            }
        }
    }

    fn deliver(&self, url: String, format: AlertFormat, event: AlertEvent) {
        let http = self.http.clone();
        let body = match format {
            AlertFormat::Json => serde_json::to_value(&event),
            AlertFormat::Slack => Ok(serde_json::json!({ "text": slack::text(&event) })),
        };
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, event = event.event, "alert cannot be encoded; alert lost");
                return;
            }
        };
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1..=TRIES {
                match http.post(&url).timeout(TIMEOUT).json(&body).send().await {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => {
                        tracing::warn!(status = %r.status(), attempt, event = event.event, "alert webhook refused")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, attempt, event = event.event, "alert webhook unreachable")
                    }
                }
                if attempt < TRIES {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            tracing::error!(event = event.event, policy = %event.policy, "alert webhook failed {TRIES} times; alert lost");
        });
    }
}

fn budget_event(
    kind: &'static str,
    b: &BudgetSubject,
    threshold: Option<f64>,
    spent: NanoUsd,
    ts: DateTime<Utc>,
) -> AlertEvent {
    AlertEvent {
        event: kind,
        team: b.team.clone(),
        key: b.key.clone(),
        policy: b.policy.clone(),
        threshold,
        spent_usd: Some(spent.as_usd()),
        limit_usd: Some(b.limit.as_usd()),
        period: Some(b.period.as_str()),
        resets_at: b.resets_at.map(rfc3339),
        ts: rfc3339(ts),
    }
}
