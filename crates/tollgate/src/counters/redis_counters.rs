//! Counters in Redis, shared by every gateway pointed at the same server.
//! Each operation is one Lua script (`lua/*.lua`, sent by `EVALSHA` and
//! loaded on `NOSCRIPT`), so it is atomic with no read-then-write across
//! round trips; `admit` is the single round trip on the request path. The
//! scripts read the clock from Redis `TIME`, so gateways with skewed clocks
//! still agree on rate limits, loop windows and slot expiry.
//!
//! Keys are `tg:v2:[namespace:]{b,r,p,l,s}:<check key>`: the `v2` changes
//! with any incompatible change to the scripts' data layout, so a rolling
//! upgrade never reads the other version's hashes. Nothing leaks: budget
//! counters expire at their `expires_at_ms`, rate buckets once refilled, loop
//! windows and streaks when their window passes, and parallel slots are a
//! sorted set of request ids scored by an expiry ([`DEFAULT_SLOT_TTL_MS`]),
//! pruned on each admit, so a crashed gateway's slots age out.
//!
//! A budget counter Redis lost is rebuilt by `seed.lua` from a ledger
//! snapshot, as a new epoch that admits nothing until every live gateway
//! (writers the ledger heard from within [`LIVE_WRITER_MS`]) has added what
//! it holds on the counter (`contribute.lua`, from [`Outstanding`]), or
//! [`DEFAULT_REBUILD_WAIT_MS`] has passed. Gateways find the counters
//! waiting for them in `tg:v2:[namespace:]rebuilding`, which
//! [`Counters::maintain`] polls. `admit` and `settle` stay one round trip
//! each; the rest happens only around a loss.
//!
//! Amounts travel as decimal strings and are added with `HINCRBY` (exact
//! 64-bit); comparisons inside Lua use doubles, exact up to 2^53 nano-USD
//! (about $9 million per counter).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation};

use super::outstanding::{ANY_EPOCH, Outstanding};
use super::{
    Actual, Admission, AdmitRequest, BudgetRebuild, BudgetState, Counters, CountersError, Grant,
    RateState, RejectReason, Rejection, StreakCheck, TOKENS_RATE_SUFFIX,
};
use crate::server::shard::PerShard;
use crate::store::LedgerHandle;
use crate::types::{Clock, NanoUsd};

/// Bumped with any incompatible change to the scripts' data layout (v2:
/// loop keys became sliding logs).
pub const SCRIPT_VERSION: &str = "v2";

/// How long a parallel slot outlives its admit if it is never settled (a
/// crashed gateway). A request running longer loses its slot early, which
/// only ever loosens the limit.
pub const DEFAULT_SLOT_TTL_MS: u64 = 15 * 60 * 1000;

/// Longest a rebuilt budget counter waits for live gateways to add what
/// they hold before it admits anyway (a gateway that died since it last
/// wrote to the ledger never will).
pub const DEFAULT_REBUILD_WAIT_MS: u64 = 2_000;

/// A ledger writer heard from within this long is a live gateway that a
/// rebuilt counter waits for. Writers heartbeat every second
/// (`LedgerOptions::writer_heartbeat`).
pub const LIVE_WRITER_MS: u64 = 5_000;

/// A ledger snapshot older than this is not seeded from: a gateway forgets
/// a settled amount `FORGET_DURABLE_AFTER_MS` after its row is durable.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(3);

pub struct RedisCounters {
    /// Made at connect; serves any thread that has no connection of its own.
    conn: ConnectionManager,
    /// One connection per shard ([`crate::server::shard`]), made on first use
    /// there, so that the reply is read by the thread that waits for it
    /// instead of by another runtime's thread.
    local: PerShard<LocalConn>,
    client: redis::Client,
    config: ConnectionManagerConfig,
    prefix: String,
    slot_ttl_ms: u64,
    /// The URL's password, scrubbed from every error message.
    password: Option<String>,
    scripts: Arc<Scripts>,
    /// What this gateway holds on budget counters, for their rebuilds.
    outstanding: Outstanding,
    /// Settlements read it, hand-overs to a rebuilt counter write it: an
    /// amount is never both settled and handed over by one gateway at once.
    handover: tokio::sync::RwLock<()>,
    /// This gateway's ledger: its writer id names it in counters, its
    /// progress says which settled amounts every snapshot holds.
    ledger: Option<LedgerHandle>,
    /// The writer id when there is no ledger (tests).
    writer: String,
    rebuild_wait_ms: u64,
    /// Rebuilds (counter key, open time) this gateway has answered.
    answered: parking_lot::Mutex<HashMap<String, String>>,
    /// Replaces Redis `TIME` in `admit`, so tests can move time.
    #[cfg(test)]
    script_clock: Option<Arc<dyn Clock>>,
}

#[derive(Default)]
struct LocalConn {
    conn: OnceLock<ConnectionManager>,
    /// While Redis is down, a shard tries to open its own connection at
    /// most once per [`LOCAL_RETRY`] (`Instant` of the last try).
    tried: parking_lot::Mutex<Option<Instant>>,
}

const LOCAL_RETRY: Duration = Duration::from_secs(1);

struct Scripts {
    admit: Script,
    settle: Script,
    outcome: Script,
    seed: Script,
    contribute: Script,
    rebuilds: Script,
}

impl RedisCounters {
    /// One `settle.lua` call; `streaks` are the error streaks a success
    /// ends. `budgets_only` for a grant taken on local counters
    /// (`allow_local`): its rates and slots were never taken here.
    async fn settle_ending_streaks(
        &self,
        req: &AdmitRequest,
        grant: &Grant,
        actual: Actual,
        streaks: &[StreakCheck],
        budgets_only: bool,
    ) -> Result<(), CountersError> {
        let tokens: Vec<_> = req
            .rates
            .iter()
            .filter(|r| !budgets_only && r.key.ends_with(TOKENS_RATE_SUFFIX))
            .collect();
        let parallel = if budgets_only { &[][..] } else { &req.parallel };
        let mut call = self.scripts.settle.prepare_invoke();
        call.arg(grant.reserved.0)
            .arg(actual.cost.0)
            .arg(actual.tokens)
            .arg(&req.request_id)
            .arg(req.budgets.len())
            .arg(tokens.len())
            .arg(parallel.len())
            .arg(streaks.len())
            .arg(self.writer_id())
            .arg(actual.ledger_seq);
        // Held for the call: no hand-over runs between reading which epoch
        // holds the reservation and the settlement landing.
        let _settling = self.handover.read().await;
        for (i, b) in req.budgets.iter().enumerate() {
            call.key(self.key("b", &b.key));
            let held = self
                .outstanding
                .applied(&b.key, &req.request_id)
                .or_else(|| grant.epochs.get(i).copied());
            match held {
                Some(epoch) => call.arg(epoch),
                None => call.arg(""),
            };
        }
        for r in tokens {
            call.key(self.key("r", &r.key))
                .arg(r.limit_per_minute)
                .arg(r.amount);
        }
        for p in parallel {
            call.key(self.key("p", &p.key));
        }
        for s in streaks {
            call.key(self.key("s", &s.key));
        }
        let settled: Result<Vec<u64>, _> = self.run(&call).await;
        for (i, b) in req.budgets.iter().enumerate() {
            let reply = settled
                .as_ref()
                .ok()
                .map(|e| e.get(i).copied().unwrap_or(0));
            self.outstanding.settled(
                &b.key,
                &req.request_id,
                actual.ledger_seq,
                actual.cost.0,
                reply,
            );
        }
        settled.map(|_| ())
    }

    /// Settles a grant taken on local counters (`allow_local`) on the
    /// shared budget counters too: its cost was never there. When they are
    /// still unreachable, the counter is rebuilt once they are back.
    pub(crate) async fn settle_local(
        &self,
        req: &AdmitRequest,
        grant: &Grant,
        actual: Actual,
    ) -> Result<(), CountersError> {
        if req.budgets.is_empty() {
            return Ok(());
        }
        self.settle_ending_streaks(req, grant, actual, &[], true)
            .await
    }

    /// Remembers a grant taken on local counters (`allow_local`): the
    /// shared budget counters miss it.
    pub(crate) fn track_local(&self, req: &AdmitRequest, grant: &Grant) {
        if req.budgets.is_empty() {
            return;
        }
        self.outstanding.admitted(
            &req.request_id,
            req.budgets
                .iter()
                .map(|b| (b.key.as_str(), b.expires_at_ms)),
            &[],
            grant.reserved.0,
            true,
        );
    }

    fn writer_id(&self) -> &str {
        self.ledger
            .as_ref()
            .map_or(self.writer.as_str(), LedgerHandle::writer_id)
    }

    /// Hands what this gateway holds on budget counter `key` to its current
    /// epoch (and stops that epoch waiting for it), or deletes the counter
    /// if it is suspect. `Ok(false)` when the epoch changed meanwhile.
    async fn hand_over(&self, key: &str) -> Result<bool, CountersError> {
        let _handing_over = self.handover.write().await;
        let counter = self.key("b", key);
        let mut conn = self.conn().await;
        let (spent, epoch, mark): (Option<String>, Option<String>, Option<u64>) =
            redis::cmd("HMGET")
                .arg(&counter)
                .arg("spent")
                .arg("epoch")
                .arg(format!("m:{}", self.writer_id()))
                .query_async(&mut conn)
                .await
                .map_err(|e| self.error(&e))?;
        if spent.is_none() {
            self.outstanding.gone(key);
            return Ok(true);
        }
        let epoch = epoch.unwrap_or_default();
        let number = epoch.parse::<u64>().unwrap_or(0);
        let c = self
            .outstanding
            .contribution(key, number, mark.unwrap_or(0));
        let suspect = match self.outstanding.suspect(key) {
            0 => "0".to_owned(),
            ANY_EPOCH => "any".to_owned(),
            e => e.to_string(),
        };
        let mut call = self.scripts.contribute.prepare_invoke();
        call.key(&counter)
            .key(self.rebuilding_key())
            .arg(self.writer_id())
            .arg(&epoch)
            .arg(suspect)
            .arg(c.reserved)
            .arg(c.spent);
        let reply: Vec<i64> = self.run(&call).await?;
        match reply.first() {
            Some(0 | 2) => {
                self.outstanding.gone(key);
                Ok(true)
            }
            Some(1) => {
                self.outstanding.contributed(key, number, &c);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn rebuilding_key(&self) -> String {
        format!("{}rebuilding", self.prefix)
    }

    /// Admits, waiting while a budget counter is being rebuilt (after
    /// handing it what this gateway holds).
    async fn admit_waiting(&self, req: &AdmitRequest) -> Result<Vec<i64>, CountersError> {
        let mut call = self.scripts.admit.prepare_invoke();
        call.arg(req.cost.0)
            .arg(req.budgets.len())
            .arg(req.rates.len())
            .arg(req.parallel.len())
            .arg(req.loops.len())
            .arg(req.streaks.len())
            .arg(&req.request_id)
            .arg(self.slot_ttl_ms);
        for b in &req.budgets {
            call.key(self.key("b", &b.key))
                .arg(b.limit.0)
                .arg(b.min.0)
                .arg(flag(b.enforce))
                .arg(b.expires_at_ms.unwrap_or(-1));
        }
        for r in &req.rates {
            call.key(self.key("r", &r.key))
                .arg(r.limit_per_minute)
                .arg(r.amount)
                .arg(flag(r.enforce));
        }
        for p in &req.parallel {
            call.key(self.key("p", &p.key))
                .arg(p.max)
                .arg(flag(p.enforce));
        }
        for l in &req.loops {
            call.key(self.key("l", &l.key))
                .arg(l.max_identical)
                .arg(l.window_ms)
                .arg(flag(l.enforce));
        }
        for s in &req.streaks {
            call.key(self.key("s", &s.key)).arg(flag(s.enforce));
        }
        #[cfg(test)]
        if let Some(clock) = &self.script_clock {
            call.arg(clock.now_ms());
        }
        let started = Instant::now();
        let patience = Duration::from_millis(self.rebuild_wait_ms) + Duration::from_secs(1);
        loop {
            let reply: Vec<i64> = self.run(&call).await?;
            if reply.first() != Some(&3) {
                return Ok(reply);
            }
            if started.elapsed() > patience {
                return Err(CountersError::Unavailable(
                    "redis: a budget counter rebuilt from the ledger is still waiting for gateways to add \
                     their requests in flight"
                        .into(),
                ));
            }
            for b in &req.budgets {
                if let Err(e) = self.hand_over(&b.key).await {
                    tracing::debug!(error = %e, "cannot hand amounts to a rebuilt budget counter yet");
                }
            }
            let wait = reply.get(1).copied().unwrap_or(10).clamp(1, 20);
            tokio::time::sleep(Duration::from_millis(u64::try_from(wait).unwrap_or(10))).await;
        }
    }

    /// Connects to `url` (`redis://[:password@]host:port[/db]`). Fails with
    /// [`CountersError::Unavailable`] if Redis cannot be reached now; once
    /// connected, the connection manager reconnects by itself.
    ///
    /// `clock` is not used for any limit: the scripts take Redis's `TIME`
    /// so that all gateways share one clock. It is accepted so both
    /// implementations are built alike.
    pub async fn connect(url: &str, clock: Arc<dyn Clock>) -> Result<Self, CountersError> {
        let _ = clock;
        let password = url_password(url);
        let scrub = |e: redis::RedisError| unavailable(&e, password.as_deref());
        let client = redis::Client::open(url).map_err(scrub)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_with_config(client.clone(), config.clone())
            .await
            .map_err(scrub)?;
        Ok(RedisCounters {
            conn,
            local: PerShard::new(),
            client,
            // A shard's own connection falls back to the shared one rather
            // than keep a request waiting on retries.
            config: config.set_number_of_retries(0),
            prefix: format!("tg:{SCRIPT_VERSION}:"),
            slot_ttl_ms: DEFAULT_SLOT_TTL_MS,
            password,
            scripts: Arc::new(Scripts {
                admit: Script::new(include_str!("lua/admit.lua")),
                settle: Script::new(include_str!("lua/settle.lua")),
                outcome: Script::new(include_str!("lua/outcome.lua")),
                seed: Script::new(include_str!("lua/seed.lua")),
                contribute: Script::new(include_str!("lua/contribute.lua")),
                rebuilds: Script::new(include_str!("lua/rebuilds.lua")),
            }),
            outstanding: Outstanding::default(),
            handover: tokio::sync::RwLock::new(()),
            ledger: None,
            writer: uuid::Uuid::now_v7().simple().to_string(),
            rebuild_wait_ms: DEFAULT_REBUILD_WAIT_MS,
            answered: parking_lot::Mutex::new(HashMap::new()),
            #[cfg(test)]
            script_clock: None,
        })
    }

    /// Names this gateway by its ledger writer and lets it forget settled
    /// amounts once their rows are durable (see [`Outstanding`]).
    pub fn with_ledger(mut self, ledger: LedgerHandle) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Longest a rebuilt budget counter waits for live gateways
    /// (default [`DEFAULT_REBUILD_WAIT_MS`]).
    pub fn with_rebuild_wait_ms(mut self, wait_ms: u64) -> Self {
        self.rebuild_wait_ms = wait_ms;
        self
    }

    /// `admit` reads `clock` instead of Redis `TIME`.
    #[cfg(test)]
    pub(crate) fn with_script_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.script_clock = Some(clock);
        self
    }

    /// Puts every key under `tg:v2:<namespace>:`, so several deployments (or
    /// tests) can share one Redis without seeing each other's counters.
    pub fn with_namespace(mut self, namespace: &str) -> Self {
        self.prefix = format!("tg:{SCRIPT_VERSION}:{namespace}:");
        self
    }

    /// How long an unsettled parallel slot is held (default [`DEFAULT_SLOT_TTL_MS`]).
    pub fn with_slot_ttl_ms(mut self, ttl_ms: u64) -> Self {
        self.slot_ttl_ms = ttl_ms.max(1);
        self
    }

    /// The prefix of every key this instance writes.
    pub fn key_prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, kind: &str, key: &str) -> String {
        format!("{}{kind}:{key}", self.prefix)
    }

    fn error(&self, e: &redis::RedisError) -> CountersError {
        unavailable(e, self.password.as_deref())
    }

    /// This shard's connection, else the shared one.
    async fn conn(&self) -> ConnectionManager {
        let Some(local) = self.local.get() else {
            return self.conn.clone();
        };
        if let Some(c) = local.conn.get() {
            return c.clone();
        }
        let now = Instant::now();
        {
            let mut tried = local.tried.lock();
            if tried.is_some_and(|at| now.duration_since(at) < LOCAL_RETRY) {
                return self.conn.clone();
            }
            *tried = Some(now);
        }
        match ConnectionManager::new_with_config(self.client.clone(), self.config.clone()).await {
            Ok(c) => local.conn.get_or_init(|| c).clone(),
            Err(e) => {
                tracing::debug!(error = %self.error(&e), "no Redis connection of this shard's own yet; using the shared one");
                self.conn.clone()
            }
        }
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        call: &ScriptInvocation<'_>,
    ) -> Result<T, CountersError> {
        let mut conn = self.conn().await;
        call.invoke_async(&mut conn)
            .await
            .map_err(|e| self.error(&e))
    }
}

impl RedisCounters {
    /// One `seed.lua` call; `true` when it created the counter.
    async fn seed(
        &self,
        key: &str,
        spent: NanoUsd,
        expires_at_ms: Option<i64>,
        marks: &[(&str, u64)],
        waiting: &[&str],
    ) -> Result<bool, CountersError> {
        // Random, and below 2^53 so that Lua numbers carry it exactly.
        let epoch = rand::random_range(1..(1u64 << 53));
        let mut call = self.scripts.seed.prepare_invoke();
        call.key(self.key("b", key))
            .key(self.rebuilding_key())
            .arg(spent.0)
            .arg(expires_at_ms.unwrap_or(-1))
            .arg(epoch)
            .arg(self.rebuild_wait_ms)
            .arg(marks.len());
        for (writer, seq) in marks {
            call.arg(*writer).arg(*seq);
        }
        call.arg(waiting.len());
        for writer in waiting {
            call.arg(*writer);
        }
        let created: i64 = self.run(&call).await?;
        Ok(created == 1)
    }

    /// Hands this gateway's amounts to every rebuilt counter still waiting,
    /// once per rebuild.
    async fn answer_rebuilds(&self) {
        let mut call = self.scripts.rebuilds.prepare_invoke();
        call.key(self.rebuilding_key());
        let Ok(waiting) = self.run::<Vec<String>>(&call).await else {
            return;
        };
        let prefix = self.key("b", "");
        let open: HashMap<String, String> = waiting
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect();
        self.answered.lock().retain(|k, _| open.contains_key(k));
        for (counter, open_at) in &open {
            if self.answered.lock().get(counter) == Some(open_at) {
                continue;
            }
            let Some(key) = counter.strip_prefix(&prefix) else {
                continue;
            };
            match self.hand_over(key).await {
                Ok(true) => {
                    self.answered
                        .lock()
                        .insert(counter.clone(), open_at.clone());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "cannot answer a budget counter's rebuild yet");
                    return;
                }
            }
        }
    }
}

/// The password in a `redis://user:password@host` URL, if any.
fn url_password(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let (userinfo, _) = authority.rsplit_once('@')?;
    let password = userinfo
        .split_once(':')
        .map_or(userinfo, |(_, password)| password);
    (!password.is_empty()).then(|| password.to_owned())
}

fn unavailable(e: &redis::RedisError, password: Option<&str>) -> CountersError {
    let mut message = format!("redis: {e}");
    if let Some(password) = password {
        message = message.replace(password, "*****");
    }
    CountersError::Unavailable(message)
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// Reads the integer replies of the `admit` script in order.
struct Reply(std::vec::IntoIter<i64>);

impl Reply {
    fn next(&mut self) -> Result<i64, CountersError> {
        self.0.next().ok_or_else(|| {
            CountersError::Unavailable("redis: `admit` script reply is too short".into())
        })
    }

    fn u64(&mut self) -> Result<u64, CountersError> {
        Ok(u64::try_from(self.next()?).unwrap_or(0))
    }

    fn index(&mut self) -> Result<usize, CountersError> {
        Ok(usize::try_from(self.next()?).unwrap_or(0))
    }

    fn rejection(&mut self) -> Result<Rejection, CountersError> {
        let code = self.next()?;
        let index = self.index()?;
        let retry_after_ms = self.u64()?;
        let state = BudgetState {
            limit: NanoUsd(self.u64()?),
            spent: NanoUsd(self.u64()?),
            reserved: NanoUsd(self.u64()?),
        };
        let reason = match code {
            1 => RejectReason::Streak,
            2 => RejectReason::Loop,
            3 => RejectReason::Budget(state),
            4 => RejectReason::Rate,
            5 => RejectReason::Parallel,
            other => {
                return Err(CountersError::Unavailable(format!(
                    "redis: `admit` script returned unknown reason `{other}`"
                )));
            }
        };
        Ok(Rejection {
            reason,
            index,
            retry_after_ms,
        })
    }
}

#[async_trait]
impl Counters for RedisCounters {
    async fn admit(&self, req: &AdmitRequest) -> Result<Admission, CountersError> {
        let reply = self.admit_waiting(req).await?;
        let mut reply = Reply(reply.into_iter());
        match reply.next()? {
            0 => return Ok(Admission::Rejected(reply.rejection()?)),
            1 => {}
            2 => {
                let n = reply.index()?;
                let mut missing = Vec::with_capacity(n);
                for _ in 0..n {
                    missing.push(reply.index()?);
                }
                return Ok(Admission::Unseeded(missing));
            }
            other => {
                return Err(CountersError::Unavailable(format!(
                    "redis: `admit` script returned unknown status `{other}`"
                )));
            }
        }
        let reserved = NanoUsd(reply.u64()?);
        let mut budgets = Vec::with_capacity(req.budgets.len());
        let mut epochs = Vec::with_capacity(req.budgets.len());
        for b in &req.budgets {
            budgets.push(BudgetState {
                limit: b.limit,
                spent: NanoUsd(reply.u64()?),
                reserved: NanoUsd(reply.u64()?),
            });
            epochs.push(reply.u64()?);
        }
        let mut rates = Vec::with_capacity(req.rates.len());
        for r in &req.rates {
            rates.push(RateState {
                limit: r.limit_per_minute,
                remaining: reply.u64()?,
                reset_ms: reply.u64()?,
            });
        }
        let would = reply.index()?;
        let mut would_reject = Vec::with_capacity(would);
        for _ in 0..would {
            would_reject.push(reply.rejection()?);
        }
        if !req.budgets.is_empty() {
            self.outstanding.admitted(
                &req.request_id,
                req.budgets
                    .iter()
                    .map(|b| (b.key.as_str(), b.expires_at_ms)),
                &epochs,
                reserved.0,
                false,
            );
        }
        Ok(Admission::Admitted(Grant {
            reserved,
            budgets,
            rates,
            would_reject,
            epochs,
        }))
    }

    async fn settle(
        &self,
        req: &AdmitRequest,
        grant: &Grant,
        actual: Actual,
    ) -> Result<(), CountersError> {
        self.settle_ending_streaks(req, grant, actual, &[], false)
            .await
    }

    async fn settle_success(
        &self,
        req: &AdmitRequest,
        grant: &Grant,
        actual: Actual,
    ) -> Result<(), CountersError> {
        self.settle_ending_streaks(req, grant, actual, &req.streaks, false)
            .await
    }

    async fn seed_budget(
        &self,
        key: &str,
        spent: NanoUsd,
        expires_at_ms: Option<i64>,
    ) -> Result<(), CountersError> {
        self.seed(key, spent, expires_at_ms, &[], &[]).await?;
        Ok(())
    }

    async fn rebuild_budget(
        &self,
        key: &str,
        rebuild: &BudgetRebuild,
        expires_at_ms: Option<i64>,
    ) -> Result<(), CountersError> {
        if rebuild.read_at.elapsed() > SNAPSHOT_MAX_AGE {
            return Err(CountersError::Unavailable(format!(
                "the ledger snapshot for budget counter `{key}` took over {} s to reach Redis; \
                 not seeding from it",
                SNAPSHOT_MAX_AGE.as_secs()
            )));
        }
        let me = self.writer_id();
        let marks: Vec<(&str, u64)> = rebuild
            .ledger
            .writers
            .iter()
            .map(|w| (w.mark.writer.as_str(), w.mark.seq))
            .collect();
        let mut waiting: Vec<&str> = rebuild
            .ledger
            .writers
            .iter()
            .filter(|w| w.idle_ms <= LIVE_WRITER_MS && w.mark.writer != me)
            .map(|w| w.mark.writer.as_str())
            .collect();
        waiting.push(me);
        let created = self
            .seed(key, rebuild.ledger.spent, expires_at_ms, &marks, &waiting)
            .await?;
        if created {
            // This gateway's own part, at once: alone, the counter opens now.
            self.hand_over(key).await?;
        }
        Ok(())
    }

    async fn maintain(&self) {
        self.answer_rebuilds().await;
        for key in self.outstanding.to_push() {
            if let Err(e) = self.hand_over(&key).await {
                tracing::debug!(error = %e, "cannot hand amounts to a budget counter yet");
                break;
            }
        }
        let durable = self.ledger.as_ref().map_or(u64::MAX, LedgerHandle::durable);
        self.outstanding
            .prune(durable, chrono::Utc::now().timestamp_millis());
    }

    async fn budget(&self, key: &str) -> Result<Option<BudgetState>, CountersError> {
        let mut conn = self.conn().await;
        // (Only the fields every counter has: `open` and the marks are
        // the rebuild's business.)
        let (limit, spent, reserved): (Option<u64>, Option<u64>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.key("b", key))
            .arg("limit")
            .arg("spent")
            .arg("reserved")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(&e))?;
        // HMGET of a missing key answers every field nil; every counter
        // written by seed or admit has all three.
        if limit.is_none() && spent.is_none() && reserved.is_none() {
            return Ok(None);
        }
        let nanos = |v: Option<u64>| NanoUsd(v.unwrap_or(0));
        Ok(Some(BudgetState {
            limit: nanos(limit),
            spent: nanos(spent),
            reserved: nanos(reserved),
        }))
    }

    async fn record_outcome(
        &self,
        streak_key: &str,
        error_code: Option<&str>,
        max: u32,
        window_ms: u64,
    ) -> Result<bool, CountersError> {
        let mut call = self.scripts.outcome.prepare_invoke();
        call.key(self.key("s", streak_key))
            .arg(error_code.unwrap_or(""))
            .arg(max)
            .arg(window_ms);
        let tripped: i64 = self.run(&call).await?;
        Ok(tripped == 1)
    }

    async fn ping(&self) -> Result<(), CountersError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.error(&e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::counters::conformance::{
        self, admit, granted, looped, parallel, rate, read, rejected, request, seed, streak,
    };
    use crate::counters::{BudgetCheck, Counters, LoopCheck, ParallelCheck, StreakCheck};
    use crate::types::SystemClock;

    /// CI runs Redis here; these tests fail (never skip) when it is down.
    fn redis_url() -> String {
        std::env::var("TOLLGATE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
    }

    async fn connect() -> RedisCounters {
        let url = redis_url();
        let c = RedisCounters::connect(&url, Arc::new(SystemClock))
            .await
            .unwrap_or_else(|e| {
                panic!("these tests need Redis at `{url}` (set TOLLGATE_TEST_REDIS_URL): {e}")
            });
        // Budget counters without a period never expire; give those left by
        // earlier test runs a TTL so test keys do not pile up.
        let mut conn = c.conn.clone();
        let mut keys = Vec::new();
        {
            let mut scan: redis::AsyncIter<String> =
                redis::AsyncCommands::scan_match(&mut conn, format!("tg:{SCRIPT_VERSION}:test:*"))
                    .await
                    .unwrap();
            while let Some(key) = scan.next_item().await {
                keys.push(key.unwrap());
            }
        }
        for key in keys {
            let _: i64 = redis::cmd("EXPIRE")
                .arg(&key)
                .arg(600)
                .arg("NX")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        c.with_namespace(&format!("test:{}", uuid::Uuid::now_v7()))
    }

    async fn fresh() -> Arc<dyn Counters> {
        Arc::new(connect().await)
    }

    async fn timed() -> (Arc<dyn Counters>, Arc<crate::types::ManualClock>) {
        let clock = Arc::new(crate::types::ManualClock::new(chrono::Utc::now()));
        let counters = connect().await.with_script_clock(clock.clone());
        (Arc::new(counters), clock)
    }

    conformance::conformance_tests!(fresh(), timed());

    async fn pttl(c: &RedisCounters, kind: &str, key: &str) -> i64 {
        let mut conn = c.conn.clone();
        redis::cmd("PTTL")
            .arg(c.key(kind, key))
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_closed_port_is_unavailable_without_leaking_the_password() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("redis://:hunter2secret@127.0.0.1:{port}/0");
        let started = std::time::Instant::now();
        let err = match RedisCounters::connect(&url, Arc::new(SystemClock)).await {
            Ok(_) => panic!("connected to a closed port"),
            Err(e) => e,
        };
        assert!(started.elapsed() < Duration::from_secs(10));
        let CountersError::Unavailable(message) = &err;
        assert!(!message.contains("hunter2secret"), "{message}");
        assert!(
            err.to_string()
                .starts_with("counters backend unreachable: redis:"),
            "{err}"
        );
    }

    /// A TCP proxy in front of the real Redis that can be cut and restored,
    /// so an outage can be tested without stopping the machine's Redis.
    struct Proxy {
        port: u16,
        tasks: Arc<parking_lot::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    }

    impl Proxy {
        async fn start(port: u16) -> Proxy {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            let port = listener.local_addr().unwrap().port();
            let tasks = Arc::new(parking_lot::Mutex::new(Vec::new()));
            let conns = tasks.clone();
            let accept = tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let conn = tokio::spawn(async move {
                        if let Ok(mut upstream) =
                            tokio::net::TcpStream::connect("127.0.0.1:6379").await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                    });
                    conns.lock().push(conn);
                }
            });
            tasks.lock().push(accept);
            Proxy { port, tasks }
        }

        /// Closes the listener and every connection through it.
        fn cut(&self) {
            for task in self.tasks.lock().drain(..) {
                task.abort();
            }
        }
    }

    #[tokio::test]
    async fn an_outage_is_unavailable_and_the_connection_recovers_by_itself() {
        let proxy = Proxy::start(0).await;
        let url = format!("redis://127.0.0.1:{}", proxy.port);
        let c = RedisCounters::connect(&url, Arc::new(SystemClock))
            .await
            .unwrap()
            .with_namespace("test:outage");
        c.ping().await.unwrap();
        let mut req = request("r", 0);
        req.rates = vec![rate(&format!("rpm-{}", uuid::Uuid::now_v7()), 1_000, 1)];
        granted(admit(&c, &req).await);

        proxy.cut();
        tokio::time::sleep(Duration::from_millis(50)).await;
        match c.admit(&req).await {
            Err(CountersError::Unavailable(message)) => {
                assert!(message.starts_with("redis:"), "{message}")
            }
            Ok(a) => panic!("admitted through a cut connection: {a:?}"),
        }
        assert!(c.ping().await.is_err());

        let restored = Proxy::start(proxy.port).await;
        let mut recovered = false;
        for _ in 0..50 {
            if c.ping().await.is_ok() {
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            recovered,
            "the connection manager did not reconnect within 5 s"
        );
        granted(admit(&c, &req).await);
        restored.cut();
    }

    /// Lua mirrors the Rust by hand: random request sequences must get the
    /// same decisions and budget states from both. Rates are left out (their
    /// refill depends on each backend's clock), and retry times with them.
    #[tokio::test]
    async fn memory_and_redis_agree_on_random_sequences() {
        for seed in 0..4 {
            agree_on_random_sequence(seed).await;
        }
    }

    async fn agree_on_random_sequence(seed: u64) {
        use rand::{Rng, SeedableRng};

        let redis = connect().await;
        let clock = Arc::new(crate::types::ManualClock::new(chrono::Utc::now()));
        let memory = crate::counters::MemoryCounters::new(clock);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut open: Vec<(AdmitRequest, Grant)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let strip = |a: Admission| match a {
            Admission::Admitted(mut g) => {
                g.rates.clear();
                // Each backend numbers its epochs its own way.
                g.epochs.clear();
                g.would_reject.iter_mut().for_each(|r| r.retry_after_ms = 0);
                Admission::Admitted(g)
            }
            Admission::Rejected(r) => Admission::Rejected(Rejection {
                retry_after_ms: 0,
                ..r
            }),
            unseeded @ Admission::Unseeded(_) => unseeded,
        };
        for n in 0..400 {
            if rng.random_bool(0.3) && !open.is_empty() {
                let (req, g) = open.swap_remove(rng.random_range(0..open.len()));
                let actual = Actual {
                    cost: NanoUsd(rng.random_range(0..=g.reserved.0 + 20)),
                    tokens: 0,
                    ledger_seq: 0,
                };
                redis.settle(&req, &g, actual).await.unwrap();
                memory.settle(&req, &g, actual).await.unwrap();
                continue;
            }
            if rng.random_bool(0.05) {
                let key = format!("s{}", rng.random_range(0..2));
                let code = ["e1", "e2", ""][rng.random_range(0..3)];
                let code = (!code.is_empty()).then_some(code);
                let a = redis.record_outcome(&key, code, 2, 600_000).await.unwrap();
                let b = memory.record_outcome(&key, code, 2, 600_000).await.unwrap();
                assert_eq!(a, b, "seed {seed}, record_outcome #{n}");
                continue;
            }
            let mut req = request(&format!("r{n}"), rng.random_range(0..300));
            for i in 0..rng.random_range(0..3) {
                let limit = [500, 1_000, 3_000][i];
                let min = req.cost.0 * rng.random_range(0..=100) / 100;
                req.budgets.push(BudgetCheck {
                    enforce: rng.random_bool(0.7),
                    ..conformance::budget(&format!("b{i}"), limit, min)
                });
            }
            if rng.random_bool(0.5) {
                req.parallel.push(ParallelCheck {
                    enforce: rng.random_bool(0.8),
                    ..parallel("p", 4)
                });
            }
            if rng.random_bool(0.3) {
                let fp = format!("fp{}", rng.random_range(0..5));
                req.loops.push(LoopCheck {
                    enforce: rng.random_bool(0.8),
                    ..looped(&fp, 3, 600_000)
                });
            }
            if rng.random_bool(0.3) {
                req.streaks.push(StreakCheck {
                    enforce: rng.random_bool(0.8),
                    ..streak(&format!("s{}", rng.random_range(0..2)))
                });
            }
            let mut a = strip(redis.admit(&req).await.unwrap());
            let b = strip(memory.admit(&req).await.unwrap());
            assert_eq!(a, b, "seed {seed}, admit #{n}: {req:?}");
            if let Admission::Unseeded(missing) = &a {
                // Both restore the same spend, as from one ledger.
                for &i in missing {
                    let spent = NanoUsd(rng.random_range(0..400));
                    let key = &req.budgets[i].key;
                    redis.seed_budget(key, spent, None).await.unwrap();
                    memory.seed_budget(key, spent, None).await.unwrap();
                }
                a = strip(redis.admit(&req).await.unwrap());
                let b = strip(memory.admit(&req).await.unwrap());
                assert_eq!(a, b, "seed {seed}, admit #{n} once seeded: {req:?}");
            }
            match a {
                Admission::Admitted(g) => {
                    seen.extend(
                        g.would_reject
                            .iter()
                            .map(|r| std::mem::discriminant(&r.reason)),
                    );
                    open.push((req, g));
                }
                Admission::Rejected(r) => {
                    seen.insert(std::mem::discriminant(&r.reason));
                }
                Admission::Unseeded(missing) => {
                    panic!("seed {seed}, admit #{n}: still unseeded {missing:?} after seeding")
                }
            }
        }
        // The sequence must have exercised the guards, not only admitted.
        assert!(
            seen.len() >= 3,
            "seed {seed} hit only {} kinds of rejection",
            seen.len()
        );
        for i in 0..3 {
            let key = format!("b{i}");
            assert_eq!(
                redis.budget(&key).await.unwrap(),
                memory.budget(&key).await.unwrap()
            );
        }
    }

    #[test]
    fn passwords_are_found_in_urls() {
        assert_eq!(
            url_password("redis://:pw@host:6379/0").as_deref(),
            Some("pw")
        );
        assert_eq!(
            url_password("redis://user:p@ss@host").as_deref(),
            Some("p@ss")
        );
        assert_eq!(url_password("rediss://user@host"), Some("user".to_owned()));
        assert_eq!(url_password("redis://127.0.0.1:6379"), None);
    }

    #[tokio::test]
    async fn keys_are_versioned_and_every_one_expires() {
        let c = connect().await;
        assert!(c.key_prefix().starts_with("tg:v2:test:"));
        let now = chrono::Utc::now().timestamp_millis();
        let mut req = request("r", 5);
        req.budgets = vec![BudgetCheck {
            expires_at_ms: Some(now + 60_000),
            ..conformance::budget("day", 10, 5)
        }];
        req.rates = vec![rate("rpm", 60, 1)];
        req.parallel = vec![parallel("par", 2)];
        req.loops = vec![looped("fp", 2, 30_000)];
        seed(&c, &req).await;
        granted(admit(&c, &req).await);
        c.record_outcome("st", Some("e"), 3, 20_000).await.unwrap();
        for (kind, key, most) in [
            ("b", "day", 60_000),
            ("r", "rpm", 2_000),
            ("p", "par", 900_000),
            ("l", "fp", 30_000),
            ("s", "st", 20_000),
        ] {
            let ttl = pttl(&c, kind, key).await;
            assert!(ttl > 0 && ttl <= most, "{kind}:{key} has TTL {ttl}");
        }
    }

    #[tokio::test]
    async fn loop_windows_and_streaks_pass_on_redis_time() {
        let c = connect().await;
        let mut req = request("r", 0);
        req.loops = vec![looped("fp", 2, 800)];
        granted(admit(&c, &req).await);
        granted(admit(&c, &req).await);
        let r = rejected(admit(&c, &req).await);
        assert!(r.retry_after_ms > 0 && r.retry_after_ms <= 800, "{r:?}");
        tokio::time::sleep(Duration::from_millis(r.retry_after_ms + 50)).await;
        granted(admit(&c, &req).await);

        assert!(!c.record_outcome("s", Some("e"), 1, 800).await.unwrap());
        assert!(c.record_outcome("s", Some("e"), 1, 800).await.unwrap());
        let mut req = request("r", 0);
        req.streaks = vec![streak("s")];
        let r = rejected(admit(&c, &req).await);
        tokio::time::sleep(Duration::from_millis(r.retry_after_ms + 50)).await;
        granted(admit(&c, &req).await);
    }

    #[tokio::test]
    async fn slots_of_a_crashed_gateway_age_out() {
        let c = connect().await.with_slot_ttl_ms(300);
        let mut req = request("crashed", 0);
        req.parallel = vec![parallel("par", 1)];
        granted(admit(&c, &req).await);
        let mut other = request("other", 0);
        other.parallel = vec![parallel("par", 1)];
        rejected(admit(&c, &other).await);
        // Never settled: the slot frees itself after its TTL.
        tokio::time::sleep(Duration::from_millis(400)).await;
        granted(admit(&c, &other).await);
    }

    #[tokio::test]
    async fn budgets_expire_with_their_period_and_seed_is_set_if_absent() {
        let c = connect().await;
        let now = chrono::Utc::now().timestamp_millis();
        c.seed_budget("day", NanoUsd(7), Some(now + 400))
            .await
            .unwrap();
        c.seed_budget("day", NanoUsd(9), Some(now + 400))
            .await
            .unwrap();
        assert_eq!(read(&c, "day").await.spent, NanoUsd(7));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(c.budget("day").await.unwrap(), None);
        c.ping().await.unwrap();
    }

    /// Admit writes a budget's expiry only when it changes, so an admit
    /// with another expiry than the stored one (seeded without one, a
    /// period turned `total`) still sets it, and one with the same leaves
    /// it.
    #[tokio::test]
    async fn admit_sets_a_budget_expiry_only_when_it_changes() {
        let c = connect().await;
        let later = chrono::Utc::now().timestamp_millis() + 600_000;
        c.seed_budget("exp", NanoUsd(0), None).await.unwrap();
        assert_eq!(pttl(&c, "b", "exp").await, -1);
        let mut req = request("r", 10);
        let mut check = conformance::budget("exp", 100, 10);
        check.expires_at_ms = Some(later);
        req.budgets = vec![check.clone()];
        granted(admit(&c, &req).await);
        let ttl = pttl(&c, "b", "exp").await;
        assert!((590_000..=600_000).contains(&ttl), "ttl {ttl}");
        // The same expiry again: nothing to write, the TTL still runs.
        granted(admit(&c, &req).await);
        assert!(pttl(&c, "b", "exp").await <= ttl);
        // Turned into a budget without a period: the counter persists.
        check.expires_at_ms = None;
        req.budgets = vec![check.clone()];
        granted(admit(&c, &req).await);
        assert_eq!(pttl(&c, "b", "exp").await, -1);
        // And back.
        check.expires_at_ms = Some(later);
        req.budgets = vec![check];
        granted(admit(&c, &req).await);
        assert!(pttl(&c, "b", "exp").await > 0);
        assert_eq!(read(&c, "exp").await.reserved, NanoUsd(40));
    }

    /// A budget key that Redis lost (evicted, `DEL`, a restart without
    /// persistence) is reported on the next admit, never decided as zero.
    #[tokio::test]
    async fn a_budget_key_lost_behind_our_back_is_reported_unseeded() {
        let c = connect().await;
        let mut req = request("r", 40);
        req.budgets = vec![conformance::budget("cap", 100, 40)];
        c.seed_budget("cap", NanoUsd(50), None).await.unwrap();
        let g = granted(admit(&c, &req).await);
        c.settle(
            &req,
            &g,
            Actual {
                cost: NanoUsd(40),
                tokens: 0,
                ledger_seq: 0,
            },
        )
        .await
        .unwrap();
        let mut conn = c.conn.clone();
        let deleted: i64 = redis::cmd("DEL")
            .arg(c.key("b", "cap"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(deleted, 1);
        assert_eq!(admit(&c, &req).await, Admission::Unseeded(vec![0]));
        assert_eq!(
            c.budget("cap").await.unwrap(),
            None,
            "admit created nothing"
        );
        c.seed_budget("cap", NanoUsd(90), None).await.unwrap();
        let r = rejected(admit(&c, &req).await);
        assert_eq!(
            r.reason,
            RejectReason::Budget(BudgetState {
                limit: NanoUsd(100),
                spent: NanoUsd(90),
                reserved: NanoUsd(0),
            })
        );
    }

    /// Two gateways on one namespace, the first rebuilding counters with
    /// `wait_ms` of patience.
    async fn two_gateways(wait_ms: u64) -> (RedisCounters, RedisCounters) {
        let a = connect().await.with_rebuild_wait_ms(wait_ms);
        let namespace = a
            .key_prefix()
            .trim_start_matches("tg:v2:")
            .trim_end_matches(':')
            .to_owned();
        let b = RedisCounters::connect(&redis_url(), Arc::new(SystemClock))
            .await
            .unwrap()
            .with_namespace(&namespace);
        (a, b)
    }

    fn snapshot(spent: u64, marks: &[(&RedisCounters, u64)]) -> BudgetRebuild {
        BudgetRebuild {
            ledger: crate::store::LedgerSnapshot {
                spent: NanoUsd(spent),
                writers: marks
                    .iter()
                    .map(|(c, seq)| crate::store::WriterState {
                        mark: crate::store::WriterMark {
                            writer: c.writer_id().to_owned(),
                            seq: *seq,
                        },
                        idle_ms: 0,
                    })
                    .collect(),
            },
            read_at: Instant::now(),
        }
    }

    async fn lose(c: &RedisCounters, key: &str) {
        let mut conn = c.conn.clone();
        let deleted: i64 = redis::cmd("DEL")
            .arg(c.key("b", key))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(deleted, 1);
    }

    fn spent(cost: u64, ledger_seq: u64) -> Actual {
        Actual {
            cost: NanoUsd(cost),
            tokens: 0,
            ledger_seq,
        }
    }

    /// Gateway B holds a request in flight and a settled row its ledger has
    /// not written when the counter is lost. A rebuilds it from a snapshot
    /// without that row: the counter admits nothing until B has added both,
    /// and then nothing is counted twice or dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rebuilt_counter_waits_for_what_live_gateways_hold() {
        let (a, b) = two_gateways(10_000).await;
        c_seed(&a, "cap").await;
        let mut flying = request("b-flying", 30);
        flying.budgets = vec![conformance::budget("cap", 100, 0)];
        let mut done = request("b-done", 20);
        done.budgets = flying.budgets.clone();
        let g_flying = granted(admit(&b, &flying).await);
        let g_done = granted(admit(&b, &done).await);
        b.settle(&done, &g_done, spent(15, 7)).await.unwrap();
        lose(&a, "cap").await;

        // The snapshot holds B's rows up to 6 and $0.000000005 of spend.
        a.rebuild_budget("cap", &snapshot(5, &[(&b, 6)]), None)
            .await
            .unwrap();
        let a = Arc::new(a);
        let mut next = request("a-next", 40);
        next.budgets = flying.budgets.clone();
        let waiting = {
            let (a, next) = (a.clone(), next.clone());
            tokio::spawn(async move { a.admit(&next).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "admitted before B added its part");
        b.maintain().await;
        let g_next = granted(waiting.await.unwrap().unwrap());
        // 5 from the ledger + B's unwritten 15; B's 30 in flight + A's 40.
        assert_eq!(g_next.budgets[0].spent, NanoUsd(20));
        assert_eq!(g_next.budgets[0].reserved, NanoUsd(70));
        // Row 8 is past the snapshot: counted; the reservation is released
        // from the new epoch, which took it over.
        b.settle(&flying, &g_flying, spent(25, 8)).await.unwrap();
        a.settle(&next, &g_next, spent(40, 0)).await.unwrap();
        assert_eq!(
            read(&*a, "cap").await,
            BudgetState {
                limit: NanoUsd(100),
                spent: NanoUsd(85),
                reserved: NanoUsd(0)
            }
        );
    }

    /// A settlement that lands after the rebuild but whose row the
    /// snapshot already held releases its reservation and adds nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_row_the_snapshot_held_is_not_counted_again() {
        let (a, b) = two_gateways(10_000).await;
        c_seed(&a, "cap").await;
        let mut flying = request("b-flying", 30);
        flying.budgets = vec![conformance::budget("cap", 100, 0)];
        let g = granted(admit(&b, &flying).await);
        lose(&a, "cap").await;
        a.rebuild_budget("cap", &snapshot(12, &[(&b, 9)]), None)
            .await
            .unwrap();
        b.maintain().await;
        assert_eq!(read(&a, "cap").await.reserved, NanoUsd(30));
        b.settle(&flying, &g, spent(12, 9)).await.unwrap();
        assert_eq!(
            read(&a, "cap").await,
            BudgetState {
                limit: NanoUsd(0),
                spent: NanoUsd(12),
                reserved: NanoUsd(0)
            }
        );
    }

    /// Nobody else alive: the gateway that rebuilds adds its own part and
    /// the counter admits at once; a counter that lost a settlement's
    /// outcome (the call failed) is deleted to be rebuilt.
    #[tokio::test]
    async fn alone_a_rebuild_admits_at_once_and_a_suspect_counter_is_rebuilt() {
        let (a, _b) = two_gateways(10_000).await;
        c_seed(&a, "cap").await;
        let mut flying = request("a-flying", 30);
        flying.budgets = vec![conformance::budget("cap", 100, 0)];
        granted(admit(&a, &flying).await);
        lose(&a, "cap").await;
        a.rebuild_budget("cap", &snapshot(5, &[]), None)
            .await
            .unwrap();
        let started = Instant::now();
        let mut next = request("a-next", 10);
        next.budgets = flying.budgets.clone();
        let g = granted(admit(&a, &next).await);
        assert!(started.elapsed() < Duration::from_millis(500));
        assert_eq!(
            g.budgets[0].reserved,
            NanoUsd(40),
            "the flight was taken over"
        );

        // A settlement whose call fails: nobody knows what it did.
        a.outstanding.settled("cap", "a-next", 0, 10, None);
        a.maintain().await;
        assert_eq!(a.budget("cap").await.unwrap(), None, "deleted as suspect");
        assert_eq!(admit(&a, &next).await, Admission::Unseeded(vec![0]));
    }

    async fn c_seed(c: &RedisCounters, key: &str) {
        c.seed_budget(key, NanoUsd(0), None).await.unwrap();
    }

    /// The Redis connection id a command from this thread travels on.
    async fn client_id(c: &RedisCounters) -> i64 {
        let mut conn = c.conn().await;
        redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut conn)
            .await
            .unwrap()
    }

    #[test]
    fn each_shard_talks_to_redis_on_its_own_connection() {
        // Two connection ids, each taken twice on a thread with its own runtime.
        let on_own_runtime = |c: Arc<RedisCounters>, shard: Option<usize>| {
            std::thread::spawn(move || {
                if let Some(i) = shard {
                    crate::server::shard::enter(i);
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async { (client_id(&c).await, client_id(&c).await) })
            })
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let c = Arc::new(rt.block_on(connect()));
        let shared = rt.block_on(client_id(&c));
        let (a1, a2) = on_own_runtime(c.clone(), Some(0)).join().unwrap();
        // Its thread and runtime are gone; shard 1 must not inherit them.
        let (b1, b2) = on_own_runtime(c.clone(), Some(1)).join().unwrap();
        assert_eq!(a1, a2, "a shard keeps its connection");
        assert_eq!(b1, b2);
        assert_ne!(a1, b1, "another shard gets its own");
        assert!(
            shared != a1 && shared != b1,
            "a shard never uses the shared one"
        );
        // Off a shard: the shared connection (driven by `rt`, still running).
        let (s1, s2) = on_own_runtime(c.clone(), None).join().unwrap();
        assert_eq!((s1, s2), (shared, shared));
    }
}
