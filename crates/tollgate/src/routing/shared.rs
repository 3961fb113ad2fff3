//! Circuits shared by replicas through Redis (with `counters: redis://…`).
//! A replica that opens a circuit writes `tg:circuit:<provider>` with the
//! cooldown as its TTL; one that closes it (its probe succeeded) deletes
//! it. A background task per gateway reads the TTL of every provider's key
//! once a second in one pipelined round trip and opens the local circuit
//! for what is left of it, so a replica learns of an open circuit within
//! about a second. The request path never waits on Redis for this: opening
//! and closing only queue a message for the task.
//!
//! A replica that learned of an open circuit probes by itself once the
//! cooldown is over (one probe per replica); Redis being unreachable only
//! means circuits are per replica until it is back.

use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::Registry;
use crate::types::Clock;

/// How often the shared circuits are read.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

const PREFIX: &str = "tg:circuit:";

/// What a replica tells the others.
#[derive(Debug)]
pub(crate) enum Change {
    /// The provider's circuit opened for this long.
    Opened(String, Duration),
    /// Its probe succeeded.
    Closed(String),
}

/// Starts sharing `registry`'s circuits through the Redis at `url`. The
/// task ends when the registry is dropped (the gateway is gone). The error
/// names no password.
pub async fn start(
    url: &str,
    registry: &Arc<Registry>,
    clock: Arc<dyn Clock>,
) -> Result<(), String> {
    let scrub = |e: redis::RedisError| {
        let text = e.to_string();
        match url_password(url) {
            Some(p) if !p.is_empty() => text.replace(p, "*****"),
            _ => text,
        }
    };
    let client = redis::Client::open(url).map_err(scrub)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let conn = ConnectionManager::new_with_config(client, config)
        .await
        .map_err(scrub)?;
    let (tx, rx) = mpsc::unbounded_channel();
    if registry.changes.set(tx).is_err() {
        return Ok(());
    }
    tokio::spawn(run(conn, Arc::downgrade(registry), rx, clock));
    Ok(())
}

/// The password of a `redis://user:password@host` URL, if any.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let userinfo = rest.split('/').next()?.rsplit_once('@')?.0;
    Some(userinfo.split_once(':')?.1)
}

async fn run(
    mut conn: ConnectionManager,
    registry: Weak<Registry>,
    mut changes: mpsc::UnboundedReceiver<Change>,
    clock: Arc<dyn Clock>,
) {
    let mut tick = tokio::time::interval(SYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // What this replica did goes out before it reads the others'.
            biased;
            change = changes.recv() => {
                let Some(change) = change else { return };
                if let Err(e) = publish(&mut conn, &change).await {
                    tracing::warn!(?change, error = %e, "cannot share a circuit change through Redis; replicas decide alone until it is back");
                }
            }
            _ = tick.tick() => {
                let Some(registry) = registry.upgrade() else { return };
                if let Err(e) = read(&mut conn, &registry, &*clock).await {
                    tracing::debug!(error = %e, "cannot read the shared circuits from Redis");
                }
            }
        }
    }
}

async fn publish(conn: &mut ConnectionManager, change: &Change) -> redis::RedisResult<()> {
    match change {
        Change::Opened(provider, cooldown) => {
            let ms = u64::try_from(cooldown.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            redis::cmd("SET")
                .arg(format!("{PREFIX}{provider}"))
                .arg(1)
                .arg("PX")
                .arg(ms)
                .query_async::<()>(conn)
                .await
        }
        Change::Closed(provider) => {
            redis::cmd("DEL")
                .arg(format!("{PREFIX}{provider}"))
                .query_async::<()>(conn)
                .await
        }
    }
}

/// Opens every local circuit another replica opened, for what is left of
/// its cooldown.
async fn read(
    conn: &mut ConnectionManager,
    registry: &Registry,
    clock: &dyn Clock,
) -> redis::RedisResult<()> {
    let all = registry.all();
    if all.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for health in &all {
        pipe.cmd("PTTL").arg(format!("{PREFIX}{}", health.provider));
    }
    let ttls: Vec<i64> = pipe.query_async(conn).await?;
    let now = clock.now_ms();
    for (health, ttl) in all.iter().zip(ttls) {
        // -2: no key, -1: a key without expiry (not ours): both ignored.
        if ttl > 0
            && !health
                .breaker
                .is_open_until_at_least(now.saturating_add(ttl))
        {
            health.breaker.open(now.saturating_add(ttl));
            tracing::info!(provider = %health.provider, ttl_ms = ttl, "circuit opened by another replica");
        }
    }
    Ok(())
}
