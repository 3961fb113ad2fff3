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
//! Amounts travel as decimal strings and are added with `HINCRBY` (exact
//! 64-bit); comparisons inside Lua use doubles, exact up to 2^53 nano-USD
//! (about $9 million per counter).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, ScriptInvocation};

use super::{
    Actual, Admission, AdmitRequest, BudgetState, Counters, CountersError, Grant, RateState,
    RejectReason, Rejection, StreakCheck, TOKENS_RATE_SUFFIX,
};
use crate::shard::PerShard;
use crate::types::{Clock, NanoUsd};

/// Bumped with any incompatible change to the scripts' data layout (v2:
/// loop keys became sliding logs).
pub const SCRIPT_VERSION: &str = "v2";

/// How long a parallel slot outlives its admit if it is never settled (a
/// crashed gateway). A request running longer loses its slot early, which
/// only ever loosens the limit.
pub const DEFAULT_SLOT_TTL_MS: u64 = 15 * 60 * 1000;

pub struct RedisCounters {
    /// Made at connect; serves any thread that has no connection of its own.
    conn: ConnectionManager,
    /// One connection per shard ([`crate::shard`]), made on first use
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
}

impl RedisCounters {
    /// One `settle.lua` call; `streaks` are the error streaks a success ends.
    async fn settle_ending_streaks(
        &self,
        req: &AdmitRequest,
        grant: &Grant,
        actual: Actual,
        streaks: &[StreakCheck],
    ) -> Result<(), CountersError> {
        let tokens: Vec<_> = req
            .rates
            .iter()
            .filter(|r| r.key.ends_with(TOKENS_RATE_SUFFIX))
            .collect();
        let mut call = self.scripts.settle.prepare_invoke();
        call.arg(grant.reserved.0)
            .arg(actual.cost.0)
            .arg(actual.tokens)
            .arg(&req.request_id)
            .arg(req.budgets.len())
            .arg(tokens.len())
            .arg(req.parallel.len())
            .arg(streaks.len());
        for b in &req.budgets {
            call.key(self.key("b", &b.key));
        }
        for r in tokens {
            call.key(self.key("r", &r.key))
                .arg(r.limit_per_minute)
                .arg(r.amount);
        }
        for p in &req.parallel {
            call.key(self.key("p", &p.key));
        }
        for s in streaks {
            call.key(self.key("s", &s.key));
        }
        let _: i64 = self.run(&call).await?;
        Ok(())
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
            }),
            #[cfg(test)]
            script_clock: None,
        })
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
        let reply: Vec<i64> = self.run(&call).await?;
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
        for b in &req.budgets {
            budgets.push(BudgetState {
                limit: b.limit,
                spent: NanoUsd(reply.u64()?),
                reserved: NanoUsd(reply.u64()?),
            });
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
        Ok(Admission::Admitted(Grant {
            reserved,
            budgets,
            rates,
            would_reject,
        }))
    }

    async fn settle(
        &self,
        req: &AdmitRequest,
        grant: &Grant,
        actual: Actual,
    ) -> Result<(), CountersError> {
        self.settle_ending_streaks(req, grant, actual, &[]).await
    }

    async fn settle_success(
        &self,
        req: &AdmitRequest,
        grant: &Grant,
        actual: Actual,
    ) -> Result<(), CountersError> {
        self.settle_ending_streaks(req, grant, actual, &req.streaks)
            .await
    }

    async fn seed_budget(
        &self,
        key: &str,
        spent: NanoUsd,
        expires_at_ms: Option<i64>,
    ) -> Result<(), CountersError> {
        let mut call = self.scripts.seed.prepare_invoke();
        call.key(self.key("b", key))
            .arg(spent.0)
            .arg(expires_at_ms.unwrap_or(-1));
        let _: i64 = self.run(&call).await?;
        Ok(())
    }

    async fn budget(&self, key: &str) -> Result<Option<BudgetState>, CountersError> {
        let mut conn = self.conn().await;
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
                    crate::shard::enter(i);
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
