//! The order in which one request tries a model's targets: by the model's
//! strategy (listed order, a weighted shuffle, or least latency first),
//! then every target whose circuit is open moved behind the others, so it
//! is skipped while another is available and still tried, last, when none
//! is (trying beats failing without trying).

use rand::Rng;

use super::Routes;
use crate::config::{ModelConfig, RoutingConfig, Strategy, Target};

/// `model`'s targets in the order this request tries them.
pub fn order<'m>(
    model: &'m ModelConfig,
    routes: &Routes,
    config: &RoutingConfig,
    now_ms: i64,
) -> Vec<&'m Target> {
    let mut out: Vec<&Target> = match model.strategy {
        Strategy::Ordered => model.targets.iter().collect(),
        Strategy::Weighted => weighted(&model.targets),
        Strategy::LeastLatency => least_latency(&model.targets, routes, config, now_ms),
    };
    let open = |t: &&Target| {
        routes
            .health(&t.provider)
            .is_some_and(|h| h.breaker.is_open(now_ms, config))
    };
    // Stable: the strategy's order is kept within each group. Nothing to
    // move (the usual case) costs one atomic load per target.
    if out.iter().any(open) {
        out.sort_by_key(|t| open(t));
    }
    out
}

/// A weighted shuffle: repeatedly pick one of the remaining by weight (a
/// target without a weight under `strategy: weighted` weighs 1).
fn weighted(targets: &[Target]) -> Vec<&Target> {
    let mut left: Vec<&Target> = targets.iter().collect();
    let mut out = Vec::with_capacity(left.len());
    let mut rng = rand::rng();
    while !left.is_empty() {
        let total: u64 = left.iter().map(|t| u64::from(t.weight.unwrap_or(1))).sum();
        let mut pick = rng.random_range(0..total.max(1));
        let mut idx = 0;
        for (i, t) in left.iter().enumerate() {
            let w = u64::from(t.weight.unwrap_or(1));
            if pick < w {
                idx = i;
                break;
            }
            pick -= w;
        }
        out.push(left.remove(idx));
    }
    out
}

/// Power of two choices over the targets whose circuit is not open: two
/// picked at random, the cheaper (peak-EWMA cost, see `latency`) goes
/// first; the rest follow in listed order as fallbacks.
fn least_latency<'m>(
    targets: &'m [Target],
    routes: &Routes,
    config: &RoutingConfig,
    now_ms: i64,
) -> Vec<&'m Target> {
    let mut out: Vec<&Target> = targets.iter().collect();
    let available: Vec<usize> = (0..targets.len())
        .filter(|&i| {
            routes
                .health(&targets[i].provider)
                .is_some_and(|h| !h.breaker.is_open(now_ms, config))
        })
        .collect();
    if available.len() < 2 {
        return out;
    }
    let mut rng = rand::rng();
    let ia = rng.random_range(0..available.len());
    let mut ib = rng.random_range(0..available.len() - 1);
    if ib >= ia {
        // Skip `a` so the two choices differ.
        ib += 1;
    }
    let (a, b) = (available[ia], available[ib]);
    let cost = |i: usize| {
        routes
            .health(&targets[i].provider)
            .map_or(f64::INFINITY, |h| h.latency.cost())
    };
    let best = if cost(b) < cost(a) { b } else { a };
    let first = out.remove(best);
    out.insert(0, first);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;
    use std::sync::Arc;
    use std::time::Duration;

    fn model(strategy: &str, targets: &[&str]) -> (crate::config::Config, Routes) {
        let providers: String = targets
            .iter()
            .map(|p| format!("  - {{ name: {p}, kind: mock }}\n"))
            .collect();
        let list: String = targets
            .iter()
            .map(|p| format!("      - {{ provider: {p}, model: m }}\n"))
            .collect();
        let yaml = format!(
            "providers:\n{providers}models:\n  - name: m\n    strategy: {strategy}\n    price: {{ input_per_mtok: 0, output_per_mtok: 0 }}\n    targets:\n{list}"
        );
        let config = load_str(&yaml, "t.yaml", &|_| None).unwrap();
        let routes = Routes::new(&config, Arc::default());
        (config, routes)
    }

    fn names(order: &[&Target]) -> Vec<String> {
        order.iter().map(|t| t.provider.clone()).collect()
    }

    #[test]
    fn open_circuits_go_last_and_are_still_tried_when_all_are_open() {
        let (config, routes) = model("ordered", &["a", "b", "c"]);
        let (m, r) = (&config.models[0], &config.routing);
        assert_eq!(names(&order(m, &routes, r, 0)), ["a", "b", "c"]);
        routes.health("a").unwrap().breaker.open(1000);
        assert_eq!(names(&order(m, &routes, r, 0)), ["b", "c", "a"]);
        routes.health("c").unwrap().breaker.open(1000);
        assert_eq!(names(&order(m, &routes, r, 0)), ["b", "a", "c"]);
        routes.health("b").unwrap().breaker.open(1000);
        assert_eq!(names(&order(m, &routes, r, 0)), ["a", "b", "c"]);
        // The cooldown is over: half-open targets are available again.
        assert_eq!(names(&order(m, &routes, r, 1000)), ["a", "b", "c"]);
    }

    #[test]
    fn least_latency_prefers_the_fast_and_idle_target() {
        let (config, routes) = model("least_latency", &["slow", "fast"]);
        let (m, r) = (&config.models[0], &config.routing);
        routes
            .health("slow")
            .unwrap()
            .latency
            .observe(Duration::from_millis(400));
        routes
            .health("fast")
            .unwrap()
            .latency
            .observe(Duration::from_millis(20));
        for _ in 0..20 {
            assert_eq!(names(&order(m, &routes, r, 0))[0], "fast");
        }
        // Busy enough, the fast one costs more than the idle slow one.
        let fast = &routes.health("fast").unwrap().latency;
        let busy: Vec<_> = (0..30).map(|_| fast.start()).collect();
        assert_eq!(names(&order(m, &routes, r, 0))[0], "slow");
        drop(busy);
        // An open circuit is never picked while another is available.
        routes.health("fast").unwrap().breaker.open(1000);
        assert_eq!(names(&order(m, &routes, r, 0)), ["slow", "fast"]);
    }

    #[test]
    fn two_choices_cover_every_available_target() {
        let (config, routes) = model("least_latency", &["a", "b", "c", "d"]);
        let (m, r) = (&config.models[0], &config.routing);
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..400 {
            let o = order(m, &routes, r, 0);
            assert_eq!(o.len(), 4);
            firsts.insert(o[0].provider.clone());
        }
        assert_eq!(firsts.len(), 4, "{firsts:?}");
    }

    #[test]
    fn weighted_puts_the_heavy_target_first_most_of_the_time() {
        let yaml = "providers:\n  - { name: a, kind: mock }\n  - { name: b, kind: mock }\nmodels:\n  - name: m\n    price: { input_per_mtok: 0, output_per_mtok: 0 }\n    targets:\n      - { provider: a, model: m, weight: 9 }\n      - { provider: b, model: m, weight: 1 }\n";
        let config = load_str(yaml, "t.yaml", &|_| None).unwrap();
        assert_eq!(config.models[0].strategy, Strategy::Weighted);
        let routes = Routes::new(&config, Arc::default());
        let a_first = (0..1000)
            .filter(|_| order(&config.models[0], &routes, &config.routing, 0)[0].provider == "a")
            .count();
        assert!((800..980).contains(&a_first), "{a_first}");
    }
}
