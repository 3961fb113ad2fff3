//! The spend journal: what a crash must not make the gateway forget (SPEC
//! §2 "Crashes and outages never reset a budget").
//!
//! The ledger writer holds rows in memory for up to its flush interval, a
//! request still at the provider has no row yet, and in-process counters die
//! with the process. So every request that reserved budget appends two
//! records to a file, on the request path:
//! - `admitted`, before it is forwarded: request id, admission time, key,
//!   team, model and the reservation;
//! - `settled`, once its ledger row is recorded: the row itself.
//!
//! At start, before serving, [`Journal::open`] replays the journals of
//! gateways that are gone: every request gets the ledger row it would have
//! had — its `settled` row, or, admitted and never settled, a row billed at
//! its reservation with status 500 and error code [`CRASHED`] (the provider
//! may have generated the whole worst case before the crash). The ledger
//! stays the one truth budgets are restored from: rows it already holds are
//! left as they are, since its `request_id` is unique and inserting one again
//! is a no-op.
//!
//! **Durability.** A record is one `write(2)` on a file opened with
//! `O_APPEND`. Once the call returns, the bytes are in the kernel's page
//! cache, which a process crash (SIGKILL, the OOM killer, an abort) does not
//! touch, so no `fsync` is needed for that and none is made: one per request
//! would cost milliseconds. A crash of the machine itself can lose the tail,
//! as it can the store's own unsynced pages (SQLite runs `synchronous=NORMAL`).
//!
//! **Format.** Text, one JSON object per record, each record *starting* with
//! a newline: `\n{"admitted":{…}}`. A write cut short by the kill leaves a
//! prefix of its record, which never parses as a whole object (the closing
//! brace is missing), and the next record's leading newline keeps the
//! fragment from swallowing that record; replay skips fragments with a
//! warning and never fails on them.
//!
//! **Bounded.** Records go into segments. About once a second a segment
//! that got records is sealed and a new one started, into which the
//! admissions still open are copied. A sealed segment is deleted once every
//! ledger row recorded before the seal is durable: by then each of its
//! requests is in the store or carried forward. Disk use is a second or two
//! of records plus the requests in flight. A clean shutdown deletes them all.
//!
//! **Several gateways.** Processes sharing a directory (several on one
//! host, on one PostgreSQL store) each write their own files, named by an
//! instance id, and hold an advisory lock (`flock`) on `<instance>.lock`
//! while they live. A journal whose lock can be taken belongs to a gateway
//! that is gone; the next one to start replays it.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::ledger::LedgerHandle;
use super::{KeyRecord, LedgerRow, Store};
use crate::types::{KeyId, NanoUsd, TeamId};

/// The ledger row's error code for a request the gateway admitted and then
/// crashed before settling; it is billed at its reservation.
pub const CRASHED: &str = "gateway_crashed";
/// How often a segment that got records is sealed and a new one started.
const ROTATE_EVERY: Duration = Duration::from_secs(1);
/// Locks over the open admissions; more than the cores, so that requests
/// rarely meet on one.
const SHARDS: usize = 64;
/// Replayed rows per store statement.
const REPLAY_BATCH: usize = 500;

/// The directory a store's journal lives in when the config names none:
/// next to a SQLite file (`tollgate.db` → `tollgate.db.spend-journal/`);
/// none for an in-memory SQLite store (nothing survives to replay into);
/// for PostgreSQL, a directory in the system's temporary directory named
/// after the store, which survives a process crash but maybe not a reboot or
/// a container replaced: set `journal_dir` where that matters.
pub fn default_dir(store_url: &str) -> Option<PathBuf> {
    if store_url.starts_with("sqlite:") {
        if store_url.contains(":memory:") || store_url.contains("mode=memory") {
            return None;
        }
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(store_url).ok()?;
        let mut dir = options.get_filename().as_os_str().to_owned();
        dir.push(".spend-journal");
        return Some(PathBuf::from(dir));
    }
    let digest = <sha2::Sha256 as sha2::Digest>::digest(store_url.as_bytes());
    Some(std::env::temp_dir().join(format!(
        "tollgate-spend-journal-{}",
        hex::encode(&digest[..8])
    )))
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "cannot use `{}` as the spend journal directory: {source}; make it writable or set `journal_dir` to a directory that is",
        path.display()
    )]
    Dir { path: PathBuf, source: io::Error },
    #[error(
        "cannot replay the spend journal `{}` into the store: {message}; the gateway does not start without it, or budgets would forget the spend it holds",
        path.display()
    )]
    Replay { path: PathBuf, message: String },
}

/// What [`Journal::open`] found of gateways that are gone.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Journals (one per gone gateway) replayed and deleted.
    pub journals: usize,
    /// Requests in them; those the ledger already had are unchanged.
    pub requests: usize,
    /// Of those, admitted and never settled: billed at their reservation.
    pub unsettled: usize,
    /// Records cut short by the crash, skipped.
    pub torn: usize,
}

/// Cheap to clone; every clone appends to the same files. The default is
/// a journal that records nothing (an in-memory store, unit tests).
#[derive(Clone, Default)]
pub struct Journal {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    dir: PathBuf,
    instance: String,
    /// Held (locked) while this process lives: see the module docs.
    _lock: File,
    current: RwLock<Segment>,
    /// The `admitted` record of every request not settled yet, by entry id:
    /// what a new segment starts with.
    open: Vec<Mutex<HashMap<u64, Vec<u8>>>>,
    next_entry: AtomicU64,
    /// Sealed segments, with the ledger's record count at the seal.
    sealed: Mutex<Vec<(PathBuf, u64)>>,
    /// Records appended since the start (not counting copies into a new
    /// segment); for the upkeep and tests.
    appended: AtomicU64,
    failures: AtomicU64,
    stop: CancellationToken,
}

struct Segment {
    file: File,
    path: PathBuf,
    seq: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Record<'a> {
    Admitted(Admission<'a>),
    Settled(Cow<'a, LedgerRow>),
}

#[derive(Clone, Serialize, Deserialize)]
struct Admission<'a> {
    request_id: Cow<'a, str>,
    /// The admission time: the period the reservation was taken in.
    ts: DateTime<Utc>,
    key_id: Cow<'a, str>,
    team: Cow<'a, str>,
    model: Cow<'a, str>,
    reserved: NanoUsd,
}

impl Admission<'_> {
    /// The ledger row of a request that never settled.
    fn crashed_row(self) -> LedgerRow {
        LedgerRow {
            ts: self.ts,
            request_id: self.request_id.into_owned(),
            key_id: KeyId(self.key_id.into_owned()),
            team: TeamId(self.team.into_owned()),
            model: self.model.into_owned(),
            provider: String::new(),
            status: 500,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost: self.reserved,
            latency_ms: 0,
            error_code: Some(CRASHED.to_owned()),
            would_reject: Vec::new(),
            attempts: 0,
            cache: None,
            cache_saved: Default::default(),
            policy: None,
        }
    }
}

/// One admitted request's place in the journal, until it is settled
/// through [`JournalEntry::settle`] (or dropped: then a crash before its
/// ledger row is durable bills it at its reservation).
pub struct JournalEntry {
    inner: Arc<Inner>,
    id: u64,
}

impl Journal {
    /// A journal that records nothing.
    pub fn disabled() -> Journal {
        Journal::default()
    }

    /// Replays into `store` the journals in `dir` of gateways that are gone
    /// (see the module docs), then starts this process's own. Call it before
    /// serving, and [`Journal::start_upkeep`] once the ledger writer runs.
    pub async fn open(dir: &Path, store: &dyn Store) -> Result<(Journal, Replayed), JournalError> {
        let dir_err = |source| JournalError::Dir {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_err)?;
        let replayed = replay_gone(dir, store).await?;
        let instance = uuid::Uuid::now_v7().simple().to_string();
        // Locked under another name and then renamed (the lock stays with
        // the file): a gateway starting at the same moment must never find
        // this lock file unlocked and take it for a gone gateway's.
        let unlocked = dir.join(format!("{instance}.new"));
        let lock = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&unlocked)
            .map_err(dir_err)?;
        lock.try_lock().map_err(|e| {
            dir_err(match e {
                TryLockError::Error(e) => e,
                TryLockError::WouldBlock => io::Error::other("a fresh lock file is locked"),
            })
        })?;
        std::fs::rename(&unlocked, dir.join(format!("{instance}.lock"))).map_err(dir_err)?;
        let segment = Segment::create(dir, &instance, 0).map_err(dir_err)?;
        let inner = Inner {
            dir: dir.to_owned(),
            instance,
            _lock: lock,
            current: RwLock::new(segment),
            open: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_entry: AtomicU64::new(0),
            sealed: Mutex::new(Vec::new()),
            appended: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            stop: CancellationToken::new(),
        };
        Ok((
            Journal {
                inner: Some(Arc::new(inner)),
            },
            replayed,
        ))
    }

    /// Seals a segment about once a second and deletes sealed ones whose
    /// rows `ledger` has made durable. Runs until [`Journal::retire`] or
    /// until the journal is dropped.
    pub fn start_upkeep(&self, ledger: LedgerHandle) {
        if let Some(inner) = &self.inner {
            tokio::spawn(upkeep(Arc::downgrade(inner), ledger, inner.stop.clone()));
        }
    }

    /// Journals a request admitted with `reserved` on its budgets, before it
    /// is forwarded. `None` (and no write) when it reserved nothing: a key
    /// without a budget costs nothing here. `at` is the admission time: a
    /// replayed row is charged to that period.
    pub fn admitted(
        &self,
        request_id: &str,
        at: DateTime<Utc>,
        key: &KeyRecord,
        model: &str,
        reserved: NanoUsd,
    ) -> Option<JournalEntry> {
        let inner = self.inner.as_ref()?;
        if reserved == NanoUsd::ZERO {
            return None;
        }
        let record = encode(&Record::Admitted(Admission {
            request_id: request_id.into(),
            ts: at,
            key_id: key.id.as_str().into(),
            team: key.team.as_str().into(),
            model: model.into(),
            reserved,
        }))?;
        let id = inner.next_entry.fetch_add(1, Ordering::Relaxed);
        // Written while the entry's shard is locked: a segment change either
        // happens before the write (the record goes to the new segment) or
        // copies the open admissions after it, this one included.
        let mut open = inner.open[shard(id)].lock();
        inner.append(&record);
        open.insert(id, record);
        drop(open);
        Some(JournalEntry {
            inner: Arc::clone(inner),
            id,
        })
    }

    /// Ends this process's journal on a clean shutdown, once the ledger is
    /// flushed. With `complete` (every request drained and settled) and no
    /// admission open, its files are deleted: the ledger holds it all.
    /// Otherwise they stay for the next start to replay.
    pub fn retire(&self, complete: bool) {
        let Some(inner) = &self.inner else {
            return;
        };
        inner.stop.cancel();
        let open: usize = inner.open.iter().map(|s| s.lock().len()).sum();
        if !complete || open > 0 {
            tracing::warn!(open, dir = %inner.dir.display(),
                "shutdown did not settle every request: the spend journal is kept for the next start to replay");
            return;
        }
        let current = inner.current.read().path.clone();
        let sealed: Vec<PathBuf> = inner.sealed.lock().drain(..).map(|(p, _)| p).collect();
        for path in sealed.iter().chain([&current]) {
            remove(path);
        }
        remove(&inner.dir.join(format!("{}.lock", inner.instance)));
        // Left alone when other gateways' files are in it.
        let _ = std::fs::remove_dir(&inner.dir);
    }

    /// Records appended since the start.
    pub fn appended(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.appended.load(Ordering::Relaxed))
    }

    /// Records that could not be written (logged at error level).
    pub fn failures(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |i| i.failures.load(Ordering::Relaxed))
    }
}

impl JournalEntry {
    /// Records the request's ledger row in `ledger` and journals it as
    /// settled, in the order a segment change needs: the row is recorded
    /// first, the `settled` record appended next (to the segment current
    /// by then), and the admission leaves the open set last. So at every
    /// instant the request is either among the admissions a new segment
    /// starts with, or its row was recorded before the old segment was
    /// sealed and that segment is kept until the row is durable.
    /// Returns the row's sequence number in this process's ledger writer.
    pub fn settle(self, ledger: &LedgerHandle, row: LedgerRow) -> u64 {
        let record = encode(&Record::Settled(Cow::Borrowed(&row)));
        let seq = ledger.record(row);
        if let Some(record) = record {
            self.inner.append(&record);
        }
        seq
    }
}

impl Drop for JournalEntry {
    fn drop(&mut self) {
        self.inner.open[shard(self.id)].lock().remove(&self.id);
    }
}

impl Inner {
    /// One record, one `write(2)`. A failure is logged and counted, never
    /// returned: the request it belongs to is admitted already, and without
    /// the record it is only as exposed to a crash as the ledger's own
    /// flush interval makes it.
    fn append(&self, record: &[u8]) {
        let result = write_record(&self.current.read().file, record);
        match result {
            Ok(()) => {
                self.appended.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                metrics::counter!("tollgate_journal_write_errors_total").increment(1);
                // A full disk fails every request: log the 1st, 2nd, 4th…
                if failures.is_power_of_two() {
                    tracing::error!(failures, dir = %self.dir.display(),
                        "cannot write the spend journal ({e}); a crash now would forget spend \
                         the ledger has not written yet: free space or fix the directory");
                }
            }
        }
    }

    /// Starts a new segment with the open admissions in it and seals the
    /// old one for deletion once the ledger rows recorded so far are durable.
    fn rotate(&self, ledger: &LedgerHandle) -> io::Result<()> {
        let seq = self.current.read().seq + 1;
        let next = Segment::create(&self.dir, &self.instance, seq)?;
        let old = std::mem::replace(&mut *self.current.write(), next);
        // After the switch: an admission written to the old segment is in
        // the open set by now (see `Journal::admitted`).
        let mut carried = Vec::new();
        let mut ends = Vec::new();
        for shard in &self.open {
            for record in shard.lock().values() {
                carried.extend_from_slice(record);
                ends.push(carried.len());
            }
        }
        // After the copy: an admission that left the open set before it had
        // its row recorded before this count (see `JournalEntry::settle`).
        let recorded = ledger.recorded();
        let written = write_records(&self.current.read().file, &carried, &ends);
        match written {
            Ok(()) => self.sealed.lock().push((old.path, recorded)),
            // The old segment is then kept (never sealed for deletion):
            // it still holds the admissions the new one lacks.
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Deletes the sealed segments whose rows are all in the store.
    fn delete_durable(&self, durable: u64) {
        let done: Vec<PathBuf> = {
            let mut sealed = self.sealed.lock();
            let (done, kept): (Vec<_>, Vec<_>) =
                sealed.drain(..).partition(|(_, at)| *at <= durable);
            *sealed = kept;
            done.into_iter().map(|(p, _)| p).collect()
        };
        for path in done {
            remove(&path);
        }
    }
}

impl Segment {
    fn create(dir: &Path, instance: &str, seq: u64) -> io::Result<Segment> {
        let path = dir.join(format!("{instance}.{seq:010}.journal"));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)?;
        Ok(Segment { file, path, seq })
    }
}

async fn upkeep(inner: Weak<Inner>, ledger: LedgerHandle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(ROTATE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let appended = inner.appended.load(Ordering::Relaxed);
        if appended != seen {
            seen = appended;
            if let Err(e) = inner.rotate(&ledger) {
                tracing::error!(dir = %inner.dir.display(),
                    "cannot start a new spend journal segment ({e}); the current one keeps growing");
            }
        }
        inner.delete_durable(ledger.durable());
    }
}

fn shard(id: u64) -> usize {
    (id % SHARDS as u64) as usize
}

fn encode(record: &Record<'_>) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(384);
    buf.push(b'\n');
    match serde_json::to_writer(&mut buf, record) {
        Ok(()) => Some(buf),
        Err(e) => {
            tracing::error!("cannot encode a spend journal record: {e}");
            None
        }
    }
}

/// One `write(2)`. A short write (a full disk, a signal) is tried once
/// more whole: the piece already written is a torn record replay skips.
fn write_record(mut file: &File, record: &[u8]) -> io::Result<()> {
    let mut last = io::Error::other("no attempt");
    for _ in 0..2 {
        match file.write(record) {
            Ok(n) if n == record.len() => return Ok(()),
            Ok(n) => {
                last = io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("wrote {n} of {} bytes", record.len()),
                );
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Records back to back (`ends[i]` is where record `i` ends) in one
/// `write(2)`; after a short one, the record it cut and those after it
/// are written again one by one.
fn write_records(mut file: &File, records: &[u8], ends: &[usize]) -> io::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let written = file.write(records).unwrap_or(0);
    if written == records.len() {
        return Ok(());
    }
    let mut start = 0;
    for &end in ends {
        if end > written {
            write_record(file, &records[start..end])?;
        }
        start = end;
    }
    Ok(())
}

fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), "cannot delete a spend journal file: {e}");
    }
}

/// Replays and deletes the journals of every gateway in `dir` whose lock
/// can be taken (it is gone).
async fn replay_gone(dir: &Path, store: &dyn Store) -> Result<Replayed, JournalError> {
    let dir_err = |source| JournalError::Dir {
        path: dir.to_owned(),
        source,
    };
    // Instance → its segments by number.
    let mut instances: BTreeMap<String, BTreeMap<u64, PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(dir_err)? {
        let path = entry.map_err(dir_err)?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(instance) = name.strip_suffix(".lock") {
            instances.entry(instance.to_owned()).or_default();
        } else if name.ends_with(".new") {
            // A gateway that died between creating its lock and naming it.
            if let Ok(file) = File::open(&path)
                && file.try_lock().is_ok()
            {
                remove(&path);
            }
        } else if let Some((instance, seq)) = name
            .strip_suffix(".journal")
            .and_then(|rest| rest.rsplit_once('.'))
            && let Ok(seq) = seq.parse::<u64>()
        {
            instances
                .entry(instance.to_owned())
                .or_default()
                .insert(seq, path.clone());
        }
    }
    let mut total = Replayed::default();
    for (instance, segments) in instances {
        let lock_path = dir.join(format!("{instance}.lock"));
        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(dir_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            // A gateway that is still running.
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => return Err(dir_err(e)),
        }
        let paths: Vec<PathBuf> = segments.into_values().collect();
        let (rows, mut replayed) = read_segments(&paths);
        for batch in rows.chunks(REPLAY_BATCH) {
            store
                .insert_ledger(batch)
                .await
                .map_err(|e| JournalError::Replay {
                    path: dir.to_owned(),
                    message: e.to_string(),
                })?;
        }
        for path in &paths {
            remove(path);
        }
        remove(&lock_path);
        replayed.journals = 1;
        tracing::info!(instance = %instance, requests = replayed.requests, unsettled = replayed.unsettled,
            torn = replayed.torn, "replayed the spend journal of a gateway that did not shut down cleanly");
        total.journals += replayed.journals;
        total.requests += replayed.requests;
        total.unsettled += replayed.unsettled;
        total.torn += replayed.torn;
    }
    Ok(total)
}

/// The ledger row of every request in one gateway's segments, in the order
/// first seen: its `settled` row, else its admission at its reservation.
fn read_segments(paths: &[PathBuf]) -> (Vec<LedgerRow>, Replayed) {
    let mut rows: Vec<(LedgerRow, bool)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut torn = 0;
    for path in paths {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            // Replayed by another gateway starting at the same time.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::error!(path = %path.display(), "cannot read a spend journal segment: {e}");
                continue;
            }
        };
        for (line_no, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let (row, settled) = match serde_json::from_slice::<Record<'_>>(line) {
                Ok(Record::Admitted(a)) => (a.crashed_row(), false),
                Ok(Record::Settled(row)) => (row.into_owned(), true),
                Err(e) => {
                    torn += 1;
                    tracing::warn!(path = %path.display(), line = line_no + 1,
                        "skipped a spend journal record cut short by the crash ({e})");
                    continue;
                }
            };
            match index.get(&row.request_id) {
                Some(&i) => {
                    // A settled row wins over the admission; a copy of an
                    // admission (carried to a later segment) changes nothing,
                    // and a retry's admission, covering the lost attempt's
                    // reservation and its own, replaces the smaller one.
                    let (held, held_settled) = &rows[i];
                    if settled || (!held_settled && row.cost > held.cost) {
                        rows[i] = (row, settled);
                    }
                }
                None => {
                    index.insert(row.request_id.clone(), rows.len());
                    rows.push((row, settled));
                }
            }
        }
    }
    let unsettled = rows.iter().filter(|(_, settled)| !settled).count();
    let replayed = Replayed {
        journals: 0,
        requests: rows.len(),
        unsettled,
        torn,
    };
    (rows.into_iter().map(|(row, _)| row).collect(), replayed)
}

#[cfg(test)]
mod tests;
