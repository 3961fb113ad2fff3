//! The journal's format, replay and upkeep on a real SQLite file, with a
//! crash simulated by dropping a journal without [`Journal::retire`] (its
//! files stay, its lock goes, as when the kernel reaps a killed process).

use std::io::Write as _;
use std::time::Instant;

use chrono::{TimeZone, Utc};

use super::*;
use crate::store::{LedgerOptions, LedgerWriter, SpendScope, connect};
use crate::types::{KeyId, TeamId};

fn key(id: &str) -> KeyRecord {
    KeyRecord {
        id: KeyId::from(id),
        team: TeamId::from("t1"),
        name: None,
        secret_hash: String::new(),
        prefix: String::new(),
        previous_secret_hash: None,
        previous_expires_at: None,
        models: None,
        policies: vec![],
        budget: None,
        period: None,
        requests_per_minute: None,
        tokens_per_minute: None,
        expires_at: None,
        revoked_at: None,
        suspended_at: None,
        metadata: serde_json::Value::Null,
        created_at: Utc::now(),
    }
}

fn row(request_id: &str, cost: u64) -> LedgerRow {
    LedgerRow {
        ts: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
        request_id: request_id.to_owned(),
        key_id: KeyId::from("k1"),
        team: TeamId::from("t1"),
        model: "gpt-4o-mini".into(),
        provider: "upstream".into(),
        status: 200,
        prompt_tokens: 10,
        completion_tokens: 100,
        cost: NanoUsd(cost),
        latency_ms: 12,
        error_code: None,
        would_reject: vec![],
        attempts: 0,
        cache: None,
        cache_saved: Default::default(),
        policy: None,
    }
}

fn admitted(request_id: &str, reserved: u64) -> Vec<u8> {
    encode(&Record::Admitted(Admission {
        request_id: request_id.into(),
        ts: Utc.with_ymd_and_hms(2026, 3, 1, 11, 59, 59).unwrap(),
        key_id: "k1".into(),
        team: "t1".into(),
        model: "gpt-4o-mini".into(),
        reserved: NanoUsd(reserved),
    }))
    .unwrap()
}

fn settled(row: &LedgerRow) -> Vec<u8> {
    encode(&Record::Settled(Cow::Borrowed(row))).unwrap()
}

struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        Dir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn journal(&self) -> PathBuf {
        self.tmp.path().join("tollgate.db.spend-journal")
    }

    async fn store(&self) -> Arc<dyn Store> {
        connect(&format!(
            "sqlite://{}",
            self.tmp.path().join("tollgate.db").display()
        ))
        .await
        .unwrap()
    }

    /// Writes a gone gateway's segment by hand.
    fn segment(&self, instance: &str, seq: u64, bytes: &[u8]) {
        std::fs::create_dir_all(self.journal()).unwrap();
        let path = self.journal().join(format!("{instance}.{seq:010}.journal"));
        std::fs::write(path, bytes).unwrap();
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.journal())
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

async fn ledger(store: &dyn Store) -> Vec<LedgerRow> {
    store
        .requests(&crate::store::RequestsQuery {
            team: None,
            key: None,
            limit: 1000,
        })
        .await
        .unwrap()
}

fn find<'a>(rows: &'a [LedgerRow], id: &str) -> &'a LedgerRow {
    rows.iter()
        .find(|r| r.request_id == id)
        .unwrap_or_else(|| panic!("{id} not in {rows:?}"))
}

#[tokio::test]
async fn a_torn_last_record_is_skipped_and_the_rest_replayed() {
    let dir = Dir::new();
    let mut bytes = admitted("r1", 5_000);
    bytes.extend(admitted("r2", 7_000));
    bytes.extend(settled(&row("r2", 3_000)));
    // The kill cut the last write short: a prefix of an admission.
    let torn = admitted("r3", 9_000);
    bytes.extend(&torn[..torn.len() / 2]);
    dir.segment("gone", 0, &bytes);
    let store = dir.store().await;

    let (journal, replayed) = Journal::open(&dir.journal(), store.as_ref()).await.unwrap();
    assert_eq!(
        replayed,
        Replayed {
            journals: 1,
            requests: 2,
            unsettled: 1,
            torn: 1
        }
    );
    let rows = ledger(store.as_ref()).await;
    assert_eq!(rows.len(), 2);
    let r1 = find(&rows, "r1");
    assert_eq!(
        (r1.status, r1.cost, r1.error_code.as_deref()),
        (500, NanoUsd(5_000), Some(CRASHED))
    );
    assert_eq!(
        r1.ts,
        Utc.with_ymd_and_hms(2026, 3, 1, 11, 59, 59).unwrap(),
        "charged to the admission's period"
    );
    assert_eq!(
        find(&rows, "r2"),
        &row("r2", 3_000),
        "settled: the row itself"
    );
    // The gone gateway's files are deleted; this one's are there.
    assert!(dir.files().iter().all(|f| !f.starts_with("gone")));
    journal.retire(true);
}

#[tokio::test]
async fn a_torn_record_never_swallows_the_one_after_it_and_garbage_is_skipped() {
    let dir = Dir::new();
    let mut bytes = admitted("r1", 5_000);
    let torn = settled(&row("r1", 1_000));
    bytes.extend(&torn[..torn.len() - 1]);
    bytes.extend(admitted("r2", 7_000));
    bytes.extend(b"\n\0\0\0\0\0\0");
    bytes.extend(b"\n{\"settled\":");
    bytes.extend(b"\n{\"something_else\":{}}");
    bytes.extend(admitted("r3", 1));
    dir.segment("gone", 0, &bytes);
    let store = dir.store().await;
    let (_journal, replayed) = Journal::open(&dir.journal(), store.as_ref()).await.unwrap();
    assert_eq!((replayed.requests, replayed.torn), (3, 4));
    let rows = ledger(store.as_ref()).await;
    assert_eq!(
        find(&rows, "r1").cost,
        NanoUsd(5_000),
        "its settlement was torn"
    );
    assert_eq!(find(&rows, "r2").cost, NanoUsd(7_000));
    assert_eq!(find(&rows, "r3").cost, NanoUsd(1));
}

#[tokio::test]
async fn replay_keeps_rows_the_ledger_has_and_reads_segments_in_order() {
    let dir = Dir::new();
    let store = dir.store().await;
    // Durable before the crash, with its real cost.
    store.insert_ledger(&[row("r1", 2_000)]).await.unwrap();
    dir.segment("gone", 0, &admitted("r1", 5_000));
    // A later segment: r1 carried forward, r2 admitted and settled.
    let mut later = admitted("r1", 5_000);
    later.extend(admitted("r2", 7_000));
    later.extend(settled(&row("r2", 6_000)));
    dir.segment("gone", 1, &later);
    let (_journal, replayed) = Journal::open(&dir.journal(), store.as_ref()).await.unwrap();
    assert_eq!((replayed.requests, replayed.unsettled), (2, 1));
    let rows = ledger(store.as_ref()).await;
    assert_eq!(rows.len(), 2);
    assert_eq!(
        find(&rows, "r1").cost,
        NanoUsd(2_000),
        "the ledger's row stays"
    );
    assert_eq!(find(&rows, "r2").cost, NanoUsd(6_000));
}

#[tokio::test]
async fn a_crash_replays_settled_rows_exactly_and_open_admissions_at_their_reservation() {
    let dir = Dir::new();
    let store = dir.store().await;
    let k = key("k1");
    let at = Utc.with_ymd_and_hms(2026, 3, 1, 11, 0, 0).unwrap();
    let since = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    {
        let (journal, _) = Journal::open(&dir.journal(), store.as_ref()).await.unwrap();
        // A writer whose rows never reach this store: as if killed before
        // its write. (It writes a first row at once, so pointed at `store`
        // it would race the assertion below.)
        let lost = Dir::new();
        let ledger = LedgerWriter::spawn(
            lost.store().await,
            LedgerOptions {
                flush_interval: Duration::from_secs(3600),
                ..LedgerOptions::default()
            },
        );
        let done = journal
            .admitted("r1", at, &k, "gpt-4o-mini", NanoUsd(5_000))
            .unwrap();
        let _open = journal
            .admitted("r2", at, &k, "gpt-4o-mini", NanoUsd(7_000))
            .unwrap();
        done.settle(&ledger, row("r1", 3_000));
        assert!(
            journal
                .admitted("r3", at, &k, "gpt-4o-mini", NanoUsd::ZERO)
                .is_none(),
            "nothing reserved, nothing written"
        );
        assert_eq!(journal.appended(), 3);
        // The "crash": no retire, no flush.
        std::mem::forget(ledger);
    }
    assert_eq!(
        store
            .spend_since(&SpendScope::Key(KeyId::from("k1")), since)
            .await
            .unwrap(),
        NanoUsd::ZERO,
        "the ledger itself lost both"
    );
    let (journal, replayed) = Journal::open(&dir.journal(), store.as_ref()).await.unwrap();
    assert_eq!((replayed.requests, replayed.unsettled), (2, 1));
    assert_eq!(
        store
            .spend_since(&SpendScope::Key(KeyId::from("k1")), since)
            .await
            .unwrap(),
        NanoUsd(3_000 + 7_000),
        "settled at its cost, the open one at its reservation"
    );
    journal.retire(true);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[tokio::test]
async fn a_running_gateways_journal_is_not_replayed_by_another() {
    let dir = Dir::new();
    let store = dir.store().await;
    let (live, _) = Journal::open(&dir.journal(), store.as_ref()).await.unwrap();
    let _entry = live
        .admitted("r1", Utc::now(), &key("k1"), "m", NanoUsd(5))
        .unwrap();
    let (other, replayed) = Journal::open(&dir.journal(), store.as_ref()).await.unwrap();
    assert_eq!(replayed, Replayed::default());
    assert!(ledger(store.as_ref()).await.is_empty());
    // Its clean shutdown leaves the live one's files alone.
    other.retire(true);
    assert_eq!(dir.files().len(), 2, "{:?}", dir.files());
}

#[tokio::test]
async fn a_new_segment_carries_open_admissions_and_old_ones_go_once_durable() {
    let dir = Dir::new();
    let store = dir.store().await;
    let (journal, _) = Journal::open(&dir.journal(), store.as_ref()).await.unwrap();
    let ledger = LedgerWriter::spawn(store.clone(), LedgerOptions::default());
    let inner = journal.inner.clone().unwrap();
    let k = key("k1");
    let open = journal
        .admitted("open", Utc::now(), &k, "m", NanoUsd(5))
        .unwrap();
    for i in 0..10 {
        let entry = journal
            .admitted(&format!("r{i}"), Utc::now(), &k, "m", NanoUsd(5))
            .unwrap();
        entry.settle(&ledger, row(&format!("r{i}"), 1));
    }
    inner.rotate(&ledger).unwrap();
    let segments = |files: Vec<String>| files.iter().filter(|f| f.ends_with(".journal")).count();
    assert_eq!(segments(dir.files()), 2);
    // Not durable yet: the sealed segment stays.
    inner.delete_durable(ledger.durable().min(ledger.recorded().saturating_sub(1)));
    assert_eq!(segments(dir.files()), 2);
    ledger.flush().await;
    inner.delete_durable(ledger.durable());
    assert_eq!(segments(dir.files()), 1);
    let current = std::fs::read(&inner.current.read().path).unwrap();
    let (rows, _) = read_segments(&[inner.current.read().path.clone()]);
    assert_eq!(rows.len(), 1, "{}", String::from_utf8_lossy(&current));
    assert_eq!(rows[0].request_id, "open");
    drop(open);
    ledger.shutdown().await;
    journal.retire(true);
    assert!(dir.files().is_empty());
}

#[test]
fn default_dir_sits_next_to_a_sqlite_file_and_is_none_in_memory() {
    assert_eq!(
        default_dir("sqlite://data/tollgate.db"),
        Some(PathBuf::from("data/tollgate.db.spend-journal"))
    );
    assert_eq!(default_dir("sqlite::memory:"), None);
    let pg = default_dir("postgres://u@db/x").unwrap();
    assert!(pg.starts_with(std::env::temp_dir()));
    assert_ne!(Some(pg), default_dir("postgres://u@db/y"));
}

/// What the request path pays: one `admitted` and one `settled` record
/// per request that reserved budget. Run with `--nocapture` for the figure.
#[tokio::test]
async fn append_cost_per_record() {
    let dir = Dir::new();
    let store = dir.store().await;
    let (journal, _) = Journal::open(&dir.journal(), store.as_ref()).await.unwrap();
    let ledger = LedgerWriter::spawn(store.clone(), LedgerOptions::default());
    let k = key("k1");
    let n = 5_000;
    let rows: Vec<LedgerRow> = (0..n).map(|i| row(&format!("req-{i:032}"), 1)).collect();
    let started = Instant::now();
    for r in rows {
        let entry = journal
            .admitted(&r.request_id, r.ts, &k, "gpt-4o-mini", NanoUsd(5))
            .unwrap();
        entry.settle(&ledger, r);
    }
    let per_request = started.elapsed() / n;
    let bytes = std::fs::metadata(&journal.inner.as_ref().unwrap().current.read().path)
        .unwrap()
        .len();
    println!(
        "journal: {:.2} µs per request (admitted + settled, ledger record included), {} bytes per request",
        per_request.as_secs_f64() * 1e6,
        bytes / u64::from(n)
    );
    assert_eq!(journal.appended(), 2 * u64::from(n));
    assert_eq!(journal.failures(), 0);
    // The part an optimised build does not shrink: one append of an
    // encoded record, its `write(2)` and the segment's lock.
    let record = settled(&row(&format!("req-{:032}", 0), 1));
    let inner = journal.inner.clone().unwrap();
    let started = Instant::now();
    for _ in 0..n {
        inner.append(&record);
    }
    println!(
        "journal: {:.2} µs per append of an encoded {}-byte record",
        (started.elapsed() / n).as_secs_f64() * 1e6,
        record.len()
    );
    ledger.shutdown().await;
    journal.retire(true);
}

#[test]
fn a_short_write_is_retried_whole_so_the_next_record_stays_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("seg.journal");
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .unwrap();
    // As after a short write: a fragment, then the records written next.
    let r1 = admitted("r1", 1);
    file.write_all(&r1[..10]).unwrap();
    write_record(&file, &r1).unwrap();
    let mut batch = admitted("r2", 2);
    let first = batch.len();
    batch.extend(admitted("r3", 3));
    write_records(&file, &batch, &[first, batch.len()]).unwrap();
    let (rows, replayed) = read_segments(&[path]);
    let ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["r1", "r2", "r3"]);
    assert_eq!(replayed.torn, 1);
}

/// A retry after a lost attempt journals the request again with both
/// reservations (`proxy::pipeline::Rereserve`): a crash before the old
/// admission's record is gone bills the larger, in either order.
#[tokio::test]
async fn a_retrys_admission_with_both_reservations_wins_over_the_first() {
    let dir = Dir::new();
    let store = dir.store().await;
    let mut records = admitted("r1", 5_000);
    records.extend(admitted("r1", 10_000));
    records.extend(admitted("r2", 10_000));
    records.extend(admitted("r2", 5_000));
    records.extend(admitted("r3", 10_000));
    records.extend(settled(&row("r3", 6_000)));
    dir.segment("gone", 0, &records);
    let (_journal, replayed) = Journal::open(&dir.journal(), store.as_ref()).await.unwrap();
    assert_eq!((replayed.requests, replayed.unsettled), (3, 2));
    let rows = ledger(store.as_ref()).await;
    assert_eq!(find(&rows, "r1").cost, NanoUsd(10_000));
    assert_eq!(find(&rows, "r2").cost, NanoUsd(10_000));
    assert_eq!(find(&rows, "r3").cost, NanoUsd(6_000), "settled wins");
}
