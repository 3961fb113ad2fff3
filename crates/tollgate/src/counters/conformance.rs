//! The behaviour every [`Counters`] implementation must share, as async test
//! bodies over `Arc<dyn Counters>`. [`conformance_tests!`] stamps them out as
//! `#[tokio::test]`s for one backend (memory and Redis each invoke it). Most
//! bodies never move time, so they hold on Redis's real clock too; the timed
//! ones get a [`ManualClock`] that the backend reads instead (Redis: passed
//! to the script in place of `TIME`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::types::ManualClock;

pub(super) fn budget(key: &str, limit: u64, min: u64) -> BudgetCheck {
    BudgetCheck {
        key: key.to_owned(),
        limit: NanoUsd(limit),
        min: NanoUsd(min),
        enforce: true,
        expires_at_ms: None,
    }
}

pub(super) fn rate(key: &str, limit: u64, amount: u64) -> RateCheck {
    RateCheck {
        key: key.to_owned(),
        limit_per_minute: limit,
        amount,
        enforce: true,
    }
}

pub(super) fn parallel(key: &str, max: u64) -> ParallelCheck {
    ParallelCheck {
        key: key.to_owned(),
        max,
        enforce: true,
    }
}

pub(super) fn looped(key: &str, max: u32, window_ms: u64) -> LoopCheck {
    LoopCheck {
        key: key.to_owned(),
        max_identical: max,
        window_ms,
        enforce: true,
    }
}

pub(super) fn streak(key: &str) -> StreakCheck {
    StreakCheck {
        key: key.to_owned(),
        enforce: true,
    }
}

pub(super) fn request(id: &str, cost: u64) -> AdmitRequest {
    AdmitRequest {
        request_id: id.to_owned(),
        cost: NanoUsd(cost),
        ..AdmitRequest::default()
    }
}

pub(super) async fn admit(c: &dyn Counters, req: &AdmitRequest) -> Admission {
    c.admit(req).await.unwrap()
}

/// Creates every budget counter of `req` that does not exist yet, with
/// nothing spent: what the policy layer does from an empty ledger.
pub(super) async fn seed(c: &dyn Counters, req: &AdmitRequest) {
    for b in &req.budgets {
        c.seed_budget(&b.key, NanoUsd(0), b.expires_at_ms)
            .await
            .unwrap();
    }
}

/// A budget counter's state; panics if it does not exist.
pub(super) async fn read(c: &dyn Counters, key: &str) -> BudgetState {
    c.budget(key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("budget counter `{key}` does not exist"))
}

pub(super) fn granted(a: Admission) -> Grant {
    match a {
        Admission::Admitted(g) => g,
        other => panic!("expected admission, got {other:?}"),
    }
}

pub(super) fn rejected(a: Admission) -> Rejection {
    match a {
        Admission::Rejected(r) => r,
        other => panic!("expected rejection, got {other:?}"),
    }
}

fn state(limit: u64, spent: u64, reserved: u64) -> BudgetState {
    BudgetState {
        limit: NanoUsd(limit),
        spent: NanoUsd(spent),
        reserved: NanoUsd(reserved),
    }
}

pub(super) async fn budget_reserves_then_settles(c: Arc<dyn Counters>) {
    let mut req = request("r", 30);
    req.budgets = vec![budget("b", 100, 30)];
    seed(&*c, &req).await;
    let mut grants = Vec::new();
    for n in 1..=3 {
        let g = granted(admit(&*c, &req).await);
        assert_eq!(g.reserved, NanoUsd(30));
        assert_eq!(g.budgets, vec![state(100, 0, 30 * n)]);
        grants.push(g);
    }
    let r = rejected(admit(&*c, &req).await);
    assert_eq!(r.reason, RejectReason::Budget(state(100, 0, 90)));
    assert_eq!(r.index, 0);
    assert_eq!(read(&*c, "b").await, state(100, 0, 90));

    c.settle(
        &req,
        &grants[0],
        Actual {
            cost: NanoUsd(10),
            tokens: 5,
            ledger_seq: 0,
        },
    )
    .await
    .unwrap();
    assert_eq!(read(&*c, "b").await, state(100, 10, 60));
    let g = granted(admit(&*c, &req).await);
    assert_eq!(g.budgets, vec![state(100, 10, 90)]);
    // A provider that over-delivers is billed in full: spend may pass the limit.
    c.settle(
        &req,
        &grants[1],
        Actual {
            cost: NanoUsd(45),
            tokens: 5,
            ledger_seq: 0,
        },
    )
    .await
    .unwrap();
    c.settle(
        &req,
        &grants[2],
        Actual {
            cost: NanoUsd(30),
            tokens: 5,
            ledger_seq: 0,
        },
    )
    .await
    .unwrap();
    c.settle(
        &req,
        &g,
        Actual {
            cost: NanoUsd(30),
            tokens: 5,
            ledger_seq: 0,
        },
    )
    .await
    .unwrap();
    assert_eq!(read(&*c, "b").await, state(100, 115, 0));
    assert_eq!(
        rejected(admit(&*c, &req).await).reason,
        RejectReason::Budget(state(100, 115, 0))
    );
    assert_eq!(c.budget("missing").await.unwrap(), None);

    // A free request reserves nothing and still settles.
    let mut free = request("free", 0);
    free.budgets = vec![budget("b", 100, 0)];
    let g = granted(admit(&*c, &free).await);
    assert_eq!(g.reserved, NanoUsd(0));
    c.settle(&free, &g, Actual::default()).await.unwrap();
    assert_eq!(read(&*c, "b").await, state(100, 115, 0));
}

pub(super) async fn budget_clamps_to_the_tightest_enforcing_budget(c: Arc<dyn Counters>) {
    c.seed_budget("team", NanoUsd(80), None).await.unwrap();
    let mut req = request("r", 50);
    let mut shadow = budget("shadow", 10, 50);
    shadow.enforce = false;
    req.budgets = vec![budget("key", 1_000, 10), budget("team", 100, 10), shadow];
    seed(&*c, &req).await;
    let g = granted(admit(&*c, &req).await);
    assert_eq!(g.reserved, NanoUsd(20));
    assert_eq!(
        g.budgets,
        vec![state(1_000, 0, 20), state(100, 80, 20), state(10, 0, 20)]
    );
    // The shadow budget could not fit 20: reported, not enforced, still counted.
    assert_eq!(g.would_reject.len(), 1);
    assert_eq!(g.would_reject[0].index, 2);
    assert_eq!(
        g.would_reject[0].reason,
        RejectReason::Budget(state(10, 0, 0))
    );

    // Nothing left on `team`: rejected, naming it, though `key` has room.
    let r = rejected(admit(&*c, &req).await);
    assert_eq!(r.index, 1);
    assert_eq!(r.reason, RejectReason::Budget(state(100, 80, 20)));

    // A clamp by `team` below `key`'s own minimum names `team` too.
    c.settle(
        &req,
        &g,
        Actual {
            cost: NanoUsd(0),
            tokens: 0,
            ledger_seq: 0,
        },
    )
    .await
    .unwrap();
    req.budgets = vec![budget("key", 1_000, 25), budget("team", 100, 10)];
    let r = rejected(admit(&*c, &req).await);
    assert_eq!(r.index, 1);
    assert_eq!(read(&*c, "key").await, state(1_000, 0, 0));
}

pub(super) async fn seed_only_sets_a_missing_counter(c: Arc<dyn Counters>) {
    c.seed_budget("s", NanoUsd(50), None).await.unwrap();
    c.seed_budget("s", NanoUsd(70), None).await.unwrap();
    assert_eq!(read(&*c, "s").await, state(0, 50, 0));
    let mut req = request("r", 10);
    req.budgets = vec![budget("s", 55, 10)];
    assert!(matches!(admit(&*c, &req).await, Admission::Rejected(_)));
    req.budgets = vec![budget("s", 60, 10)];
    assert_eq!(
        granted(admit(&*c, &req).await).budgets,
        vec![state(60, 50, 10)]
    );
}

/// A counter rebuilt from a ledger snapshot (no other gateway alive) holds
/// the ledger's spend, admits at once, and is set only if missing.
pub(super) async fn a_budget_is_rebuilt_from_a_ledger_snapshot(c: Arc<dyn Counters>) {
    let rebuild = |spent| BudgetRebuild {
        ledger: crate::store::LedgerSnapshot {
            spent: NanoUsd(spent),
            writers: Vec::new(),
        },
        read_at: std::time::Instant::now(),
    };
    c.rebuild_budget("rb", &rebuild(50), None).await.unwrap();
    c.rebuild_budget("rb", &rebuild(70), None).await.unwrap();
    assert_eq!(read(&*c, "rb").await, state(0, 50, 0));
    let mut req = request("r", 10);
    req.budgets = vec![budget("rb", 60, 10)];
    let g = granted(admit(&*c, &req).await);
    assert_eq!(g.budgets, vec![state(60, 50, 10)]);
    assert_eq!(g.epochs.len(), 1);
}

/// A grant taken in an epoch the counter no longer has (it was lost and
/// re-seeded since) never held a reservation there: its settlement adds
/// the cost and leaves the reservations of the new epoch alone.
pub(super) async fn a_settlement_from_another_epoch_leaves_reservations_alone(
    c: Arc<dyn Counters>,
) {
    let mut req = request("now", 30);
    req.budgets = vec![budget("ep", 100, 30)];
    seed(&*c, &req).await;
    let held = granted(admit(&*c, &req).await);
    let mut old_req = req.clone();
    old_req.request_id = "before-the-loss".to_owned();
    let old = Grant {
        epochs: vec![held.epochs[0].wrapping_add(1)],
        ..held.clone()
    };
    let actual = |cost| Actual {
        cost: NanoUsd(cost),
        tokens: 0,
        ledger_seq: 0,
    };
    c.settle(&old_req, &old, actual(20)).await.unwrap();
    assert_eq!(read(&*c, "ep").await, state(100, 20, 30));
    c.settle(&req, &held, actual(25)).await.unwrap();
    assert_eq!(read(&*c, "ep").await, state(100, 45, 0));
}

/// A missing budget counter is reported before any other check, and the
/// admit takes nothing and creates nothing; once seeded (the ledger's spend),
/// the same request is decided on that spend.
pub(super) async fn a_missing_budget_counter_is_reported_and_nothing_is_taken(
    c: Arc<dyn Counters>,
) {
    assert!(c.record_outcome("st", Some("e"), 0, 60_000).await.unwrap());
    c.seed_budget("live", NanoUsd(0), None).await.unwrap();
    let mut req = request("r", 10);
    req.budgets = vec![
        budget("gone-a", 100, 10),
        budget("live", 100, 10),
        budget("gone-b", 100, 10),
    ];
    req.rates = vec![rate("rpm", 1, 1)];
    req.parallel = vec![parallel("p", 1)];
    req.loops = vec![looped("l", 1, 60_000)];
    // Even a tripped streak comes second: nothing is decided yet.
    req.streaks = vec![streak("st")];
    assert_eq!(admit(&*c, &req).await, Admission::Unseeded(vec![0, 2]));
    assert_eq!(c.budget("gone-a").await.unwrap(), None);
    assert_eq!(c.budget("gone-b").await.unwrap(), None);
    assert_eq!(read(&*c, "live").await, state(0, 0, 0));
    // No rate, slot or loop window was taken.
    let mut probe = request("probe", 0);
    probe.rates = req.rates.clone();
    probe.parallel = req.parallel.clone();
    probe.loops = req.loops.clone();
    let g = granted(admit(&*c, &probe).await);
    assert_eq!(g.rates[0].remaining, 0);
    c.settle(&probe, &g, Actual::default()).await.unwrap();

    // Restored with what the ledger says was spent: 95 of 100 leaves no room.
    c.seed_budget("gone-a", NanoUsd(95), None).await.unwrap();
    assert_eq!(admit(&*c, &req).await, Admission::Unseeded(vec![2]));
    c.seed_budget("gone-b", NanoUsd(0), None).await.unwrap();
    req.streaks.clear();
    req.rates.clear();
    req.loops.clear();
    let r = rejected(admit(&*c, &req).await);
    assert_eq!(r.reason, RejectReason::Budget(state(100, 95, 0)));
    assert_eq!(r.index, 0);
    req.cost = NanoUsd(5);
    for b in &mut req.budgets {
        b.min = NanoUsd(5);
    }
    let g = granted(admit(&*c, &req).await);
    assert_eq!(
        g.budgets,
        vec![state(100, 95, 5), state(100, 0, 5), state(100, 0, 5)]
    );
}

pub(super) async fn a_rejected_admit_changes_nothing(c: Arc<dyn Counters>) {
    let mut first = request("first", 10);
    first.rates = vec![rate("rpm", 1, 1)];
    granted(admit(&*c, &first).await);

    let mut req = request("second", 10);
    req.budgets = vec![budget("b", 100, 10)];
    req.parallel = vec![parallel("p", 5)];
    req.loops = vec![looped("l", 1, 60_000)];
    req.rates = vec![rate("tpm", 1_000, 10), rate("rpm", 1, 1)];
    seed(&*c, &req).await;
    let r = rejected(admit(&*c, &req).await);
    assert_eq!((r.reason, r.index), (RejectReason::Rate, 1));
    assert_eq!(read(&*c, "b").await, state(0, 0, 0));

    // The loop window was not opened, the slot and the tokens not taken.
    let mut probe = request("probe", 0);
    probe.loops = vec![looped("l", 1, 60_000)];
    probe.parallel = vec![parallel("p", 1)];
    probe.rates = vec![rate("tpm", 1_000, 1_000)];
    let g = granted(admit(&*c, &probe).await);
    assert_eq!(g.rates[0].remaining, 0);
}

pub(super) async fn rejections_follow_the_documented_order(c: Arc<dyn Counters>) {
    // Exhaust one of each, then ask for all at once and peel them off.
    let mut setup = request("setup", 10);
    setup.budgets = vec![budget("b", 10, 10)];
    setup.rates = vec![rate("rate", 1, 1)];
    setup.parallel = vec![parallel("par", 1)];
    setup.loops = vec![looped("loop", 1, 60_000)];
    seed(&*c, &setup).await;
    granted(admit(&*c, &setup).await);
    assert!(
        c.record_outcome("streak", Some("bad_request"), 0, 60_000)
            .await
            .unwrap()
    );

    let mut req = request("all", 10);
    req.streaks = vec![streak("ok"), streak("streak")];
    req.loops = setup.loops.clone();
    req.budgets = setup.budgets.clone();
    req.rates = setup.rates.clone();
    req.parallel = setup.parallel.clone();
    let expect = [RejectReason::Streak, RejectReason::Loop];
    for reason in expect {
        let r = rejected(admit(&*c, &req).await);
        assert_eq!(r.reason, reason);
        assert!(r.retry_after_ms > 0 && r.retry_after_ms <= 60_000, "{r:?}");
        match reason {
            RejectReason::Streak => {
                assert_eq!(r.index, 1);
                req.streaks.clear();
            }
            _ => req.loops.clear(),
        }
    }
    assert!(matches!(
        rejected(admit(&*c, &req).await).reason,
        RejectReason::Budget(_)
    ));
    req.budgets.clear();
    let r = rejected(admit(&*c, &req).await);
    assert_eq!(r.reason, RejectReason::Rate);
    assert!(r.retry_after_ms > 0 && r.retry_after_ms <= 60_000, "{r:?}");
    req.rates.clear();
    assert_eq!(
        rejected(admit(&*c, &req).await).reason,
        RejectReason::Parallel
    );
    req.parallel.clear();
    granted(admit(&*c, &req).await);
}

pub(super) async fn shadow_checks_report_but_never_reject(c: Arc<dyn Counters>) {
    assert!(c.record_outcome("st", Some("e"), 0, 60_000).await.unwrap());
    let mut req = request("r", 10);
    req.streaks = vec![StreakCheck {
        enforce: false,
        ..streak("st")
    }];
    req.loops = vec![LoopCheck {
        enforce: false,
        ..looped("l", 0, 60_000)
    }];
    req.rates = vec![RateCheck {
        enforce: false,
        ..rate("rpm", 1, 2)
    }];
    req.parallel = vec![ParallelCheck {
        enforce: false,
        ..parallel("p", 0)
    }];
    let g = granted(admit(&*c, &req).await);
    let reasons: Vec<_> = g.would_reject.iter().map(|r| r.reason).collect();
    assert_eq!(
        reasons,
        vec![
            RejectReason::Streak,
            RejectReason::Loop,
            RejectReason::Rate,
            RejectReason::Parallel
        ]
    );
    c.settle(&req, &g, Actual::default()).await.unwrap();
}

pub(super) async fn rate_limit_holds_and_reports_state(c: Arc<dyn Counters>) {
    let mut req = request("r", 0);
    req.rates = vec![rate("rpm", 3, 1)];
    for remaining in [2, 1, 0] {
        let g = granted(admit(&*c, &req).await);
        assert_eq!(g.rates[0].limit, 3);
        assert_eq!(g.rates[0].remaining, remaining);
        assert!(g.rates[0].reset_ms > 0 && g.rates[0].reset_ms <= 60_000);
    }
    let r = rejected(admit(&*c, &req).await);
    assert_eq!((r.reason, r.index), (RejectReason::Rate, 0));
    // One request per 20 s: the wait is at most that.
    assert!(
        r.retry_after_ms > 19_000 && r.retry_after_ms <= 20_000,
        "{r:?}"
    );
    // More than the whole limit never fits.
    req.rates = vec![rate("big", 3, 4)];
    assert_eq!(rejected(admit(&*c, &req).await).retry_after_ms, 60_000);
}

pub(super) async fn tokens_rate_is_corrected_on_settle(c: Arc<dyn Counters>) {
    let mut req = request("r", 0);
    req.rates = vec![rate("k:tpm", 1_000, 800), rate("k:rpm", 1_000, 1)];
    let g = granted(admit(&*c, &req).await);
    assert_eq!(g.rates[0].remaining, 200);
    assert!(matches!(admit(&*c, &req).await, Admission::Rejected(_)));
    c.settle(
        &req,
        &g,
        Actual {
            cost: NanoUsd(0),
            tokens: 100,
            ledger_seq: 0,
        },
    )
    .await
    .unwrap();
    // 700 refunded: another 800 fits (within the refill of a few ms).
    let g = granted(admit(&*c, &req).await);
    assert!((100..=102).contains(&g.rates[0].remaining), "{:?}", g.rates);
    // Requests are not refunded.
    assert!((997..=998).contains(&g.rates[1].remaining), "{:?}", g.rates);
}

pub(super) async fn parallel_slots_are_held_until_settled(c: Arc<dyn Counters>) {
    let mut grants = Vec::new();
    for id in ["a", "b"] {
        let mut req = request(id, 0);
        req.parallel = vec![parallel("p", 2)];
        grants.push((granted(admit(&*c, &req).await), req));
    }
    let mut req = request("c", 0);
    req.parallel = vec![parallel("p", 2)];
    let r = rejected(admit(&*c, &req).await);
    assert_eq!((r.reason, r.index), (RejectReason::Parallel, 0));
    let (g, held) = &grants[0];
    c.settle(held, g, Actual::default()).await.unwrap();
    // Settling twice must not free a slot someone else holds.
    c.settle(held, g, Actual::default()).await.unwrap();
    granted(admit(&*c, &req).await);
    let mut d = request("d", 0);
    d.parallel = vec![parallel("p", 2)];
    assert!(matches!(admit(&*c, &d).await, Admission::Rejected(_)));
}

pub(super) async fn loops_reject_after_max_identical(c: Arc<dyn Counters>) {
    let mut req = request("r", 0);
    req.loops = vec![looped("fp", 3, 60_000)];
    for _ in 0..3 {
        granted(admit(&*c, &req).await);
    }
    for _ in 0..3 {
        let r = rejected(admit(&*c, &req).await);
        assert_eq!(r.reason, RejectReason::Loop);
        assert!(
            r.retry_after_ms > 59_000 && r.retry_after_ms <= 60_000,
            "{r:?}"
        );
    }
    req.loops = vec![looped("other", 3, 60_000)];
    granted(admit(&*c, &req).await);
}

pub(super) async fn streaks_trip_on_repeated_errors(c: Arc<dyn Counters>) {
    // A success or another code breaks the streak.
    assert!(
        !c.record_outcome("s", Some("e400"), 2, 60_000)
            .await
            .unwrap()
    );
    assert!(
        !c.record_outcome("s", Some("e400"), 2, 60_000)
            .await
            .unwrap()
    );
    assert!(!c.record_outcome("s", None, 2, 60_000).await.unwrap());
    assert!(
        !c.record_outcome("s", Some("e400"), 2, 60_000)
            .await
            .unwrap()
    );
    assert!(
        !c.record_outcome("s", Some("e500"), 2, 60_000)
            .await
            .unwrap()
    );
    assert!(
        !c.record_outcome("s", Some("e400"), 2, 60_000)
            .await
            .unwrap()
    );
    assert!(
        !c.record_outcome("s", Some("e400"), 2, 60_000)
            .await
            .unwrap()
    );
    let mut req = request("r", 0);
    req.streaks = vec![streak("s")];
    granted(admit(&*c, &req).await);
    // The third identical error in a row exceeds max = 2.
    assert!(
        c.record_outcome("s", Some("e400"), 2, 60_000)
            .await
            .unwrap()
    );
    assert!(
        !c.record_outcome("s", Some("e400"), 2, 60_000)
            .await
            .unwrap()
    );
    let r = rejected(admit(&*c, &req).await);
    assert_eq!((r.reason, r.index), (RejectReason::Streak, 0));
    assert!(
        r.retry_after_ms > 59_000 && r.retry_after_ms <= 60_000,
        "{r:?}"
    );
    req.streaks = vec![streak("other")];
    granted(admit(&*c, &req).await);
}

/// A success settles and ends the key's error streaks in one call.
pub(super) async fn a_successful_settlement_ends_the_streaks(c: Arc<dyn Counters>) {
    for _ in 0..2 {
        assert!(
            !c.record_outcome("s", Some("e400"), 2, 60_000)
                .await
                .unwrap()
        );
    }
    let mut req = request("ok", 30);
    req.budgets = vec![budget("b", 100, 30)];
    req.streaks = vec![streak("s")];
    seed(&*c, &req).await;
    let g = granted(admit(&*c, &req).await);
    let actual = Actual {
        cost: NanoUsd(10),
        tokens: 5,
        ledger_seq: 0,
    };
    c.settle_success(&req, &g, actual).await.unwrap();
    // Settled like any settlement...
    assert_eq!(read(&*c, "b").await, state(100, 10, 0));
    // ...and the streak starts over: the third error in a row trips max = 2,
    // counting from the success.
    for _ in 0..2 {
        assert!(
            !c.record_outcome("s", Some("e400"), 2, 60_000)
                .await
                .unwrap()
        );
    }
    assert!(
        c.record_outcome("s", Some("e400"), 2, 60_000)
            .await
            .unwrap()
    );
}

/// The limit an admit sees is the one the counter reports, also after it
/// changes (a config reload) and changes back: Redis writes it only when it
/// differs from the stored one.
pub(super) async fn a_changed_limit_is_recorded_by_the_next_admit(c: Arc<dyn Counters>) {
    let mut req = request("r", 30);
    req.budgets = vec![budget("b", 100, 30)];
    seed(&*c, &req).await;
    let g1 = granted(admit(&*c, &req).await);
    assert_eq!(read(&*c, "b").await, state(100, 0, 30));
    req.budgets = vec![budget("b", 60, 30)];
    let g2 = granted(admit(&*c, &req).await);
    assert_eq!(g2.budgets, vec![state(60, 0, 60)]);
    assert_eq!(read(&*c, "b").await, state(60, 0, 60));
    // The lowered limit is enforced: 60 reserved, 30 more does not fit.
    assert_eq!(
        rejected(admit(&*c, &req).await).reason,
        RejectReason::Budget(state(60, 0, 60))
    );
    req.budgets = vec![budget("b", 100, 30)];
    let g3 = granted(admit(&*c, &req).await);
    assert_eq!(read(&*c, "b").await, state(100, 0, 90));
    for g in [g1, g2, g3] {
        c.settle(&req, &g, Actual::default()).await.unwrap();
    }
    assert_eq!(read(&*c, "b").await, state(100, 0, 0));
}

/// Successes in a row after a streak was ended leave it ended (Redis skips
/// the write when there is nothing to end), and the next errors count from
/// zero.
pub(super) async fn successes_in_a_row_keep_the_streak_ended(c: Arc<dyn Counters>) {
    let mut req = request("ok", 30);
    req.budgets = vec![budget("b", 1_000, 30)];
    req.streaks = vec![streak("s")];
    seed(&*c, &req).await;
    let actual = Actual {
        cost: NanoUsd(10),
        tokens: 5,
        ledger_seq: 0,
    };
    for round in 0..3 {
        assert!(
            !c.record_outcome("s", Some("e400"), 2, 60_000)
                .await
                .unwrap()
        );
        for _ in 0..2 {
            let g = granted(admit(&*c, &req).await);
            c.settle_success(&req, &g, actual).await.unwrap();
            // A success reported on its own (no admission) ends it too.
            assert!(!c.record_outcome("s", None, 2, 60_000).await.unwrap());
        }
        assert_eq!(read(&*c, "b").await, state(1_000, 20 * (round + 1), 0));
    }
    for _ in 0..2 {
        assert!(
            !c.record_outcome("s", Some("e400"), 2, 60_000)
                .await
                .unwrap()
        );
    }
    assert!(
        c.record_outcome("s", Some("e400"), 2, 60_000)
            .await
            .unwrap()
    );
    // Tripped: the admit is refused by the streak.
    assert_eq!(
        rejected(admit(&*c, &req).await).reason,
        RejectReason::Streak
    );
}

/// 1,000 concurrent admits against a budget that fits exactly 50.
pub(super) async fn concurrent_admits_never_overshoot(c: Arc<dyn Counters>) {
    c.seed_budget("cap", NanoUsd(0), None).await.unwrap();
    let tasks: Vec<_> = (0..1_000)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut req = request(&format!("r{i}"), 7);
                req.budgets = vec![budget("cap", 350, 7)];
                c.admit(&req).await.unwrap()
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        if let Admission::Admitted(_) = t.await.unwrap() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 50);
    assert_eq!(read(&*c, "cap").await, state(350, 0, 350));
}

/// 200 concurrent holders never exceed the parallel limit, and every slot
/// comes back.
pub(super) async fn concurrent_holders_never_exceed_max_parallel(c: Arc<dyn Counters>) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let admitted = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (c, in_flight, peak, admitted) =
                (c.clone(), in_flight.clone(), peak.clone(), admitted.clone());
            tokio::spawn(async move {
                let mut req = request(&format!("h{i}"), 0);
                req.parallel = vec![parallel("par", 8)];
                for _ in 0..20 {
                    if let Admission::Admitted(g) = c.admit(&req).await.unwrap() {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        admitted.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        c.settle(&req, &g, Actual::default()).await.unwrap();
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 8, "{peak} in flight with max_parallel 8");
    assert!(peak >= 2, "the test never ran requests in parallel");
    assert!(admitted.load(Ordering::SeqCst) >= 8);
    // All slots were released: 8 fit again.
    for i in 0..8 {
        let mut req = request(&format!("after{i}"), 0);
        req.parallel = vec![parallel("par", 8)];
        granted(admit(&*c, &req).await);
    }
}

/// 2,000 identical requests in a tight loop, one every 50 ms: 100 s of
/// hammering across window edges reaches the provider `max_identical` times
/// in all, not that many per window, and the body passes again only after a
/// whole window of quiet. The window slides: no double burst at its edge.
pub(super) async fn a_sustained_loop_stays_stopped(c: Arc<dyn Counters>, clock: Arc<ManualClock>) {
    let step = chrono::Duration::milliseconds(50);
    let mut req = request("r", 0);
    req.loops = vec![looped("fp", 5, 60_000)];
    let (mut passed, mut waits) = (0, std::collections::BTreeSet::new());
    for _ in 0..2_000 {
        clock.advance(step);
        match admit(&*c, &req).await {
            Admission::Admitted(_) => passed += 1,
            Admission::Rejected(r) if r.reason == RejectReason::Loop => {
                waits.insert(r.retry_after_ms);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        passed, 5,
        "a loop of 2,000 over 100 s passed {passed} times"
    );
    // Every refusal asks for a whole window of quiet.
    assert_eq!(waits.into_iter().collect::<Vec<_>>(), [60_000]);
    // One millisecond short of a quiet window: refused, and the wait restarts.
    clock.advance(chrono::Duration::milliseconds(59_999));
    rejected(admit(&*c, &req).await);
    clock.advance(chrono::Duration::milliseconds(59_999));
    rejected(admit(&*c, &req).await);
    clock.advance(chrono::Duration::seconds(60));
    granted(admit(&*c, &req).await);

    // Five spread over 40 s, then 21 s later: one passes (the oldest has
    // left the window), the next does not, where a fixed window that began
    // with the first would have opened afresh for five.
    req.loops = vec![looped("spread", 5, 60_000)];
    for _ in 0..5 {
        granted(admit(&*c, &req).await);
        clock.advance(chrono::Duration::seconds(10));
    }
    clock.advance(chrono::Duration::seconds(11));
    granted(admit(&*c, &req).await);
    clock.advance(chrono::Duration::seconds(1));
    rejected(admit(&*c, &req).await);
}

/// Stamps out the conformance suite as `#[tokio::test]`s; `$make` is an
/// async expression giving a fresh, isolated `Arc<dyn Counters>`, `$timed`
/// one giving such counters and the [`ManualClock`] they read.
macro_rules! conformance_tests {
    ($make:expr, $timed:expr) => {
        crate::counters::conformance::conformance_tests!(@timed $timed;
            a_sustained_loop_stays_stopped
        );
        crate::counters::conformance::conformance_tests!(@each $make;
            budget_reserves_then_settles,
            budget_clamps_to_the_tightest_enforcing_budget,
            seed_only_sets_a_missing_counter,
            a_budget_is_rebuilt_from_a_ledger_snapshot,
            a_settlement_from_another_epoch_leaves_reservations_alone,
            a_missing_budget_counter_is_reported_and_nothing_is_taken,
            a_rejected_admit_changes_nothing,
            rejections_follow_the_documented_order,
            shadow_checks_report_but_never_reject,
            rate_limit_holds_and_reports_state,
            tokens_rate_is_corrected_on_settle,
            parallel_slots_are_held_until_settled,
            loops_reject_after_max_identical,
            streaks_trip_on_repeated_errors,
            a_successful_settlement_ends_the_streaks,
            a_changed_limit_is_recorded_by_the_next_admit,
            successes_in_a_row_keep_the_streak_ended,
            concurrent_admits_never_overshoot,
            concurrent_holders_never_exceed_max_parallel
        );
    };
    (@timed $timed:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (counters, clock) = $timed.await;
                crate::counters::conformance::$name(counters, clock).await;
            }
        )*
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let counters = $make.await;
                crate::counters::conformance::$name(counters).await;
            }
        )*
    };
}
pub(super) use conformance_tests;
