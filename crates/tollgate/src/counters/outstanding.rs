//! What this gateway holds on each shared budget counter that a counter
//! rebuilt from the ledger would not know (see the module docs of
//! `counters`): the reservations of its requests in flight, and the cost of
//! its settled requests whose ledger rows may not be in every ledger
//! snapshot yet. Each amount remembers the counter epoch it was last
//! applied to, so a new epoch gets it exactly once
//! ([`Outstanding::contribution`]). A settlement whose outcome in Redis is
//! unknown (the call failed), or spend taken on local counters
//! (`allow_local`), makes the counter *suspect*: it is deleted and rebuilt
//! from the ledger rather than trusted.
//!
//! Pure bookkeeping under one mutex; `redis_counters.rs` does the I/O.

use std::collections::HashMap;

use parking_lot::Mutex;

/// A settled amount is forgotten this long after its row is durable: by
/// then every snapshot that missed the row has been used or refused (see
/// `BudgetRebuild::read_at`), and every later one holds it.
pub(crate) const FORGET_DURABLE_AFTER_MS: i64 = 10_000;

/// `suspect` naming no epoch in particular: whatever counter exists.
pub(crate) const ANY_EPOCH: u64 = u64::MAX;

#[derive(Default)]
pub(crate) struct Outstanding {
    budgets: Mutex<HashMap<String, Budget>>,
}

#[derive(Default)]
struct Budget {
    /// The newest epoch seen for the counter; 0 when it is missing.
    epoch: u64,
    /// Some amount is not applied to `epoch`: hand it over.
    push: bool,
    /// An epoch (or [`ANY_EPOCH`]) that may have missed or half-taken an
    /// amount: delete that counter so it is rebuilt; 0 for none.
    suspect: u64,
    expires_at_ms: Option<i64>,
    /// Reservations of requests in flight, by request id.
    in_flight: HashMap<String, Held>,
    settled: Vec<Spent>,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    reserved: u64,
    /// The epoch holding the reservation; 0 for none.
    applied: u64,
}

#[derive(Debug, Clone, Copy)]
struct Spent {
    /// The row's number in this gateway's ledger writer; 0 for none.
    seq: u64,
    cost: u64,
    applied: u64,
    /// When the row was first seen durable.
    durable_at_ms: Option<i64>,
}

/// What a counter epoch lacks of this gateway's amounts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Contribution {
    pub reserved: u64,
    pub spent: u64,
    /// The requests in flight whose reservations are in `reserved`.
    pub(crate) ids: Vec<String>,
}

impl Budget {
    fn recompute_push(&mut self) {
        let epoch = self.epoch;
        self.push = epoch != 0
            && (self.in_flight.values().any(|h| h.applied != epoch)
                || self.settled.iter().any(|s| s.applied != epoch));
    }

    /// A counter reply named `epoch` (0: the counter is missing).
    fn saw(&mut self, epoch: u64) {
        if epoch != 0 && epoch != self.epoch {
            self.epoch = epoch;
            self.recompute_push();
        }
    }

    fn is_empty(&self) -> bool {
        self.in_flight.is_empty() && self.settled.is_empty() && self.suspect == 0 && !self.push
    }
}

impl Outstanding {
    /// A request admitted with `reserved` on each of `keys`, taken in the
    /// epochs `epochs`; `local` when taken on local counters instead
    /// (`allow_local`), which the shared counter then misses.
    pub(crate) fn admitted<'a>(
        &self,
        request_id: &str,
        keys: impl Iterator<Item = (&'a str, Option<i64>)>,
        epochs: &[u64],
        reserved: u64,
        local: bool,
    ) {
        let mut budgets = self.budgets.lock();
        for (i, (key, expires_at_ms)) in keys.enumerate() {
            let b = budgets.entry(key.to_owned()).or_default();
            b.expires_at_ms = expires_at_ms;
            let applied = if local {
                0
            } else {
                epochs.get(i).copied().unwrap_or(0)
            };
            b.in_flight
                .insert(request_id.to_owned(), Held { reserved, applied });
            if local {
                if b.suspect == 0 {
                    b.suspect = if b.epoch == 0 { ANY_EPOCH } else { b.epoch };
                }
                b.push = true;
            } else {
                b.saw(applied);
                if applied != b.epoch {
                    b.push = true;
                }
            }
        }
    }

    /// The epoch holding the request's reservation on `key`, if tracked.
    pub(crate) fn applied(&self, key: &str, request_id: &str) -> Option<u64> {
        let budgets = self.budgets.lock();
        budgets
            .get(key)?
            .in_flight
            .get(request_id)
            .map(|h| h.applied)
    }

    /// The request settled at `cost` (ledger row `seq`) on `key`. `reply`
    /// is the epoch the settlement found (0: no counter), or `None` when
    /// the call failed and nobody knows what it did.
    pub(crate) fn settled(
        &self,
        key: &str,
        request_id: &str,
        seq: u64,
        cost: u64,
        reply: Option<u64>,
    ) {
        let mut budgets = self.budgets.lock();
        let Some(b) = budgets.get_mut(key) else {
            return;
        };
        let held = b.in_flight.remove(request_id);
        let applied = match reply {
            Some(epoch) => {
                b.saw(epoch);
                epoch
            }
            None => {
                let before = held.map_or(0, |h| h.applied);
                if b.suspect == 0 {
                    b.suspect = if before == 0 { ANY_EPOCH } else { before };
                }
                b.push = true;
                0
            }
        };
        b.settled.push(Spent {
            seq,
            cost,
            applied,
            durable_at_ms: None,
        });
        if applied != b.epoch && b.epoch != 0 {
            b.push = true;
        }
    }

    /// Counters to hand amounts to (or delete) now.
    pub(crate) fn to_push(&self) -> Vec<String> {
        let budgets = self.budgets.lock();
        budgets
            .iter()
            .filter(|(_, b)| b.push || b.suspect != 0)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The suspect epoch of `key` (0: none).
    pub(crate) fn suspect(&self, key: &str) -> u64 {
        self.budgets.lock().get(key).map_or(0, |b| b.suspect)
    }

    /// What epoch `epoch` of `key` lacks, given `mark`: the number of this
    /// gateway's last row in the ledger snapshot the epoch was seeded from.
    pub(crate) fn contribution(&self, key: &str, epoch: u64, mark: u64) -> Contribution {
        let budgets = self.budgets.lock();
        let mut c = Contribution::default();
        let Some(b) = budgets.get(key) else {
            return c;
        };
        for (id, h) in &b.in_flight {
            if h.applied != epoch {
                c.reserved = c.reserved.saturating_add(h.reserved);
                c.ids.push(id.clone());
            }
        }
        for s in &b.settled {
            if s.applied != epoch && (s.seq == 0 || s.seq > mark) {
                c.spent = c.spent.saturating_add(s.cost);
            }
        }
        c
    }

    /// `c` was added to epoch `epoch` of `key`; every settled amount is
    /// now in it (added, or in its ledger snapshot).
    pub(crate) fn contributed(&self, key: &str, epoch: u64, c: &Contribution) {
        let mut budgets = self.budgets.lock();
        let Some(b) = budgets.get_mut(key) else {
            return;
        };
        for id in &c.ids {
            if let Some(h) = b.in_flight.get_mut(id) {
                h.applied = epoch;
            }
        }
        for s in &mut b.settled {
            s.applied = epoch;
        }
        b.epoch = epoch;
        b.suspect = 0;
        b.recompute_push();
    }

    /// The counter of `key` is gone (missing, or deleted as suspect):
    /// nothing is applied anywhere until a new epoch is seeded.
    pub(crate) fn gone(&self, key: &str) {
        let mut budgets = self.budgets.lock();
        let Some(b) = budgets.get_mut(key) else {
            return;
        };
        b.in_flight.values_mut().for_each(|h| h.applied = 0);
        b.settled.iter_mut().for_each(|s| s.applied = 0);
        b.epoch = 0;
        b.suspect = 0;
        b.push = false;
    }

    /// Forgets settled amounts durable for [`FORGET_DURABLE_AFTER_MS`]
    /// (rows up to `durable` are; rows without a number are at once) and
    /// budgets past their expiry.
    pub(crate) fn prune(&self, durable: u64, now_ms: i64) {
        let mut budgets = self.budgets.lock();
        budgets.retain(|_, b| {
            if b.expires_at_ms.is_some_and(|at| at <= now_ms) {
                return false;
            }
            let (epoch, keep_unapplied) = (b.epoch, b.push && b.suspect == 0);
            b.settled.retain_mut(|s| {
                if s.seq > durable {
                    return true;
                }
                let since = *s.durable_at_ms.get_or_insert(now_ms);
                let old = s.seq == 0 || now_ms.saturating_sub(since) >= FORGET_DURABLE_AFTER_MS;
                // An amount still to hand over stays, unless the counter
                // will be rebuilt from the ledger anyway (suspect).
                !old || (keep_unapplied && s.applied != epoch)
            });
            !b.is_empty()
        });
    }

    /// Budgets tracked, for tests.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.budgets.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(o: &Outstanding, id: &str, epoch: u64, reserved: u64) {
        o.admitted(id, [("b", None)].into_iter(), &[epoch], reserved, false);
    }

    #[test]
    fn a_new_epoch_gets_reservations_in_flight_and_rows_it_did_not_see_once() {
        let o = Outstanding::default();
        admit(&o, "r1", 7, 100);
        admit(&o, "r2", 7, 50);
        o.settled("b", "r2", 3, 40, Some(7));
        o.settled("b", "r3-untracked", 4, 0, Some(7));
        assert!(o.to_push().is_empty(), "all in epoch 7");
        // Epoch 9 was seeded from a snapshot holding this writer's rows up to 3.
        let c = o.contribution("b", 9, 3);
        assert_eq!((c.reserved, c.spent), (100, 0));
        let c = o.contribution("b", 9, 2);
        assert_eq!(
            (c.reserved, c.spent),
            (100, 40),
            "row 3 not in the snapshot"
        );
        o.contributed("b", 9, &c);
        assert_eq!(o.contribution("b", 9, 0), Contribution::default());
        assert_eq!(o.applied("b", "r1"), Some(9));
    }

    #[test]
    fn a_reply_from_a_newer_epoch_asks_for_a_push() {
        let o = Outstanding::default();
        admit(&o, "r1", 7, 100);
        admit(&o, "r2", 9, 10);
        assert_eq!(o.to_push(), vec!["b".to_owned()]);
        let c = o.contribution("b", 9, 0);
        assert_eq!(c.reserved, 100);
        o.contributed("b", 9, &c);
        assert!(o.to_push().is_empty());
    }

    #[test]
    fn a_failed_settlement_makes_its_epoch_suspect_and_local_spend_any_epoch() {
        let o = Outstanding::default();
        admit(&o, "r1", 7, 100);
        o.settled("b", "r1", 1, 80, None);
        assert_eq!(o.suspect("b"), 7);
        o.gone("b");
        assert_eq!(o.suspect("b"), 0);
        let local = Outstanding::default();
        local.admitted("r", [("b", None)].into_iter(), &[], 5, true);
        assert_eq!(local.suspect("b"), ANY_EPOCH);
        assert_eq!(local.to_push(), vec!["b".to_owned()]);
    }

    #[test]
    fn settled_amounts_are_forgotten_a_while_after_their_rows_are_durable() {
        let o = Outstanding::default();
        admit(&o, "r1", 7, 100);
        o.settled("b", "r1", 1, 80, Some(7));
        o.prune(0, 1_000);
        assert_eq!(o.len(), 1, "row 1 not durable");
        o.prune(1, 2_000);
        o.prune(1, 2_000 + FORGET_DURABLE_AFTER_MS - 1);
        assert_eq!(o.len(), 1);
        o.prune(1, 2_000 + FORGET_DURABLE_AFTER_MS);
        assert_eq!(o.len(), 0);
    }
}
