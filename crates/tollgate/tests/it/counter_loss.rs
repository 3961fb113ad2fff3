//! Issue 10, hole 6: shared budget counters that Redis loses (a restart
//! without persistence) or that miss spend taken on local counters
//! (`counters_unavailable: allow_local`) are rebuilt from the ledger plus
//! every gateway's in-flight reservations and unwritten rows. Two gateways
//! on one PostgreSQL schema and one Redis server of the test's own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use mock_provider::{MockConfig, MockProvider};
use serde_json::{Value, json};
use tollgate::server::Gateway;
use tollgate::types::SystemClock;

use crate::common::*;
use crate::infra::{CutProxy, PgSchema, PrivateRedis};

/// $0.02 a day for team `t1`: 99 requests of $0.000201 (100 output tokens
/// at $2/M plus one input token at $1/M) fit, the 100th does not.
const CAP: u64 = 20_000_000;
const CAP_TAIL: &str = "policies:\n  - name: cap\n    type: cost-limit\n    config: { limit_usd: 0.02, period: daily }\nteams:\n  - id: t1\n    policies: [cap]\n";

async fn gateway(mock_base: &str, store: &str, counters: &str, tail: &str) -> (Gateway, String) {
    let yaml = config_yaml(mock_base, store, tail)
        .replace("counters: memory", &format!("counters: {counters}"));
    let gw = start_gateway(&yaml, Arc::new(SystemClock)).await;
    let url = format!("http://{}", gw.addr);
    (gw, url)
}

async fn team_key(http: &reqwest::Client, url: &str) -> String {
    let resp = http
        .post(format!("{url}/admin/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"team": "t1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    v["key"].as_str().unwrap().to_owned()
}

fn body(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 100, "stream": stream,
           "messages": [{"role": "user", "content": "Count"}]})
}

async fn send(http: &reqwest::Client, url: &str, key: &str, stream: bool) -> u16 {
    let Ok(resp) = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body(stream))
        .send()
        .await
    else {
        return 0;
    };
    let status = resp.status().as_u16();
    let mut s = resp.bytes_stream();
    while s.next().await.is_some() {}
    status
}

/// Waits until both gateways have run every settlement and written every
/// ledger row; answers the team's ledger spend.
async fn quiet(gws: &[&Gateway]) -> u64 {
    for gw in gws {
        for _ in 0..500 {
            if gw.state.tasks.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gw.state.tasks.is_empty(), "settlements still running");
        gw.state.ledger.flush().await;
    }
    let query = tollgate::store::SpendQuery {
        team: Some("t1".into()),
        ..Default::default()
    };
    gws[0].state.store.spend(&query).await.unwrap()[0].cost.0
}

/// `(spent, reserved)` of the one budget counter in this Redis.
async fn counter(redis_url: &str) -> (u64, u64) {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tg:v2:b:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let (spent, reserved): (u64, u64) = redis::cmd("HMGET")
        .arg(&keys[0])
        .arg("spent")
        .arg("reserved")
        .query_async(&mut conn)
        .await
        .unwrap();
    (spent, reserved)
}

/// Sends on `url` until the budget refuses twice in a row, riding out the
/// `503` of a gateway reconnecting to Redis.
async fn worker(http: reqwest::Client, url: String, key: String, ok: Arc<AtomicUsize>, n: usize) {
    let mut refused = 0;
    for i in 0..80 {
        match send(&http, &url, &key, (i + n).is_multiple_of(4)).await {
            200 => {
                ok.fetch_add(1, Ordering::SeqCst);
                refused = 0;
            }
            402 => {
                refused += 1;
                if refused == 2 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            503 | 0 => tokio::time::sleep(Duration::from_millis(30)).await,
            other => panic!("unexpected status {other}"),
        }
    }
}

/// Requests are in flight on both gateways, and both hold ledger rows not
/// yet written, when Redis restarts empty. The rebuilt counter must count
/// them all: the day's ledger never passes the cap, and once everything
/// has settled the counter equals the ledger exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_mid_run_neither_overshoots_nor_forgets_across_two_gateways() {
    let pg = PgSchema::new().await;
    let mut redis = PrivateRedis::start();
    let mock = MockProvider::start(MockConfig {
        completion_tokens: 1000,
        latency: Duration::from_millis(300),
        chunk_delay: Duration::from_millis(1),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let store = pg.url_via(None);
    let (a, url_a) = gateway(&mock.base_url(), &store, &redis.url(), CAP_TAIL).await;
    let (b, url_b) = gateway(&mock.base_url(), &store, &redis.url(), CAP_TAIL).await;
    let http = reqwest::Client::new();
    let key = team_key(&http, &url_a).await;
    assert_eq!(send(&http, &url_b, &key, false).await, 200);

    let ok = Arc::new(AtomicUsize::new(1));
    let mut workers = Vec::new();
    for n in 0..20 {
        let url = if n % 2 == 0 { &url_a } else { &url_b };
        workers.push(tokio::spawn(worker(
            http.clone(),
            url.clone(),
            key.clone(),
            ok.clone(),
            n,
        )));
    }
    // With 20 in flight, 60 answered leaves the cap nearly spent or reserved.
    let started = Instant::now();
    while ok.load(Ordering::SeqCst) < 60 {
        assert!(started.elapsed() < Duration::from_secs(30), "load stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    for w in workers {
        w.await.unwrap();
    }

    let spent = quiet(&[&a, &b]).await;
    assert!(
        spent <= CAP,
        "the ledger passed the cap after Redis restarted: ${} of ${}",
        spent as f64 / 1e9,
        CAP as f64 / 1e9
    );
    assert!(
        spent + 2 * 201_000 > CAP,
        "the cap was not used up: {spent}"
    );
    assert_eq!(
        counter(&redis.url()).await,
        (spent, 0),
        "once quiet, the rebuilt counter equals the ledger"
    );
    a.shutdown().await;
    b.shutdown().await;
    pg.drop_now().await;
}

/// `allow_local`: while Redis is cut off, both gateways admit on their own
/// counters; when it is reachable again (with its data intact) the spend
/// taken locally, settled and still in flight, is folded back into the
/// shared counter, so the day's cap holds from then on and the counter
/// equals the ledger once quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn allow_local_spend_is_folded_back_into_the_shared_counter() {
    let pg = PgSchema::new().await;
    let redis = PrivateRedis::start();
    let proxy = CutProxy::start(format!("127.0.0.1:{}", redis.port).parse().unwrap()).await;
    let mock = MockProvider::start(MockConfig {
        completion_tokens: 1000,
        latency: Duration::from_millis(300),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let store = pg.url_via(None);
    let via = format!("redis://{}", proxy.addr);
    let tail = format!("counters_unavailable: allow_local\n{CAP_TAIL}");
    let (a, url_a) = gateway(&mock.base_url(), &store, &via, &tail).await;
    let (b, url_b) = gateway(&mock.base_url(), &store, &via, &tail).await;
    let http = reqwest::Client::new();
    let key = team_key(&http, &url_a).await;
    for i in 0..10 {
        let url = if i % 2 == 0 { &url_a } else { &url_b };
        assert_eq!(send(&http, url, &key, i % 3 == 0).await, 200);
    }
    quiet(&[&a, &b]).await;

    proxy.cut();
    // 30 admitted on local counters, the last ones still in flight when
    // Redis is reachable again.
    let mut outage = Vec::new();
    for i in 0..30 {
        let url = if i % 2 == 0 {
            url_a.clone()
        } else {
            url_b.clone()
        };
        let (http, key) = (http.clone(), key.clone());
        outage.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(40 * i)).await;
            send(&http, &url, &key, i % 3 == 0).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    proxy.restore();
    for t in outage {
        assert_eq!(
            t.await.unwrap(),
            200,
            "allow_local admits during the outage"
        );
    }

    // Back on the shared counter: the rest of the cap, and not a cent more.
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for n in 0..10 {
        let url = if n % 2 == 0 { &url_a } else { &url_b };
        workers.push(tokio::spawn(worker(
            http.clone(),
            url.clone(),
            key.clone(),
            ok.clone(),
            n,
        )));
    }
    for w in workers {
        w.await.unwrap();
    }
    let spent = quiet(&[&a, &b]).await;
    assert!(
        spent <= CAP,
        "the shared counter forgot the spend taken on local counters: ${} of ${}",
        spent as f64 / 1e9,
        CAP as f64 / 1e9
    );
    assert_eq!(
        counter(&redis.url()).await,
        (spent, 0),
        "once quiet, the shared counter equals the ledger"
    );
    a.shutdown().await;
    b.shutdown().await;
    drop(proxy);
    pg.drop_now().await;
}
