//! Validation of `routing:` and of `models[].strategy` (SPEC §8), kept
//! apart from the rest of the validator: the bounds below are what makes a
//! retry loop safe to run on every request.

use std::time::Duration;

use serde_saphyr::Spanned;

use super::super::{RoutingConfig, Strategy};
use super::{Validator, line_of, present};
use crate::config::Target;
use crate::config::raw::{RawRouting, Text};

/// More retries than this only multiply the load on a provider that is
/// already failing; failover to the next target is the better remedy.
const MAX_RETRIES: u64 = 10;
/// A backoff past a minute holds a client's connection open for nothing.
const MAX_BACKOFF_MS: u64 = 60_000;

impl Validator<'_> {
    pub(super) fn routing(&mut self, item: &Spanned<RawRouting>) -> Option<RoutingConfig> {
        let raw = &item.value;
        let defaults = RoutingConfig::default();
        let retries = raw.retries.as_ref().map(|v| {
            let n = self.whole(v, "routing.retries", 0)?;
            if n > MAX_RETRIES {
                self.error(
                    line_of(v),
                    format!("routing.retries: `{n}` is above the maximum of {MAX_RETRIES} (more retries only add load to a failing provider; add a fallback target instead)"),
                );
                return None;
            }
            u32::try_from(n).ok()
        });
        let millis = |this: &mut Self, v: &crate::config::raw::Value, path: &str| {
            let n = this.whole(v, path, 0)?;
            if n > MAX_BACKOFF_MS {
                this.error(
                    line_of(v),
                    format!("{path}: `{n}` is above the maximum of {MAX_BACKOFF_MS} ms"),
                );
                return None;
            }
            Some(Duration::from_millis(n))
        };
        let backoff = raw
            .backoff_ms
            .as_ref()
            .map(|v| millis(self, v, "routing.backoff_ms"));
        let max_backoff = raw
            .max_backoff_ms
            .as_ref()
            .map(|v| millis(self, v, "routing.max_backoff_ms"));
        let failures_to_trip = raw
            .failures_to_trip
            .as_ref()
            .map(|v| self.whole_u32(v, "routing.failures_to_trip", 1));
        let cooldown = raw
            .cooldown_s
            .as_ref()
            .map(|v| self.seconds(v, "routing.cooldown_s", false));
        let config = RoutingConfig {
            retries: present(retries)?.unwrap_or(defaults.retries),
            backoff: present(backoff)?.unwrap_or(defaults.backoff),
            max_backoff: present(max_backoff)?.unwrap_or(defaults.max_backoff),
            failures_to_trip: present(failures_to_trip)?.unwrap_or(defaults.failures_to_trip),
            cooldown: present(cooldown)?.unwrap_or(defaults.cooldown),
        };
        if config.max_backoff < config.backoff {
            self.error(
                line_of(item),
                format!(
                    "routing: `max_backoff_ms` ({} ms) is below `backoff_ms` ({} ms); the cap must be at least the first backoff",
                    config.max_backoff.as_millis(),
                    config.backoff.as_millis()
                ),
            );
            return None;
        }
        Some(config)
    }

    /// A model's strategy. Without one, a model whose targets all carry a
    /// weight is `weighted` (what such configs meant before `strategy`
    /// existed) and any other `ordered`. A weight under a strategy that
    /// ignores weights is an error rather than a setting that does nothing.
    pub(super) fn strategy(
        &mut self,
        raw: Option<&Text>,
        path: &str,
        targets: &[Target],
    ) -> Option<Strategy> {
        let weighted = !targets.is_empty() && targets.iter().all(|t| t.weight.is_some());
        let Some(text) = raw else {
            return Some(if weighted {
                Strategy::Weighted
            } else {
                Strategy::Ordered
            });
        };
        let strategy = self.one_of(
            text,
            &format!("{path}.strategy"),
            &[
                ("ordered", Strategy::Ordered),
                ("weighted", Strategy::Weighted),
                ("least_latency", Strategy::LeastLatency),
            ],
        )?;
        if strategy != Strategy::Weighted && targets.iter().any(|t| t.weight.is_some()) {
            self.error(
                line_of(text),
                format!(
                    "{path}.strategy: `{}` does not use `targets[].weight`; remove the weights or set `strategy: weighted`",
                    strategy.name()
                ),
            );
            return None;
        }
        Some(strategy)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{RoutingConfig, Strategy, load_str};

    const HEAD: &str = "providers:\n  - { name: a, kind: mock }\n  - { name: b, kind: mock }\n";
    const MODEL: &str =
        "models:\n  - name: m\n    price: { input_per_mtok: 0, output_per_mtok: 0 }\n";

    fn problems(text: &str) -> Vec<String> {
        let errors = load_str(text, "t.yaml", &|_| None).expect_err("invalid");
        errors
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.line.unwrap_or(0), p.message))
            .collect()
    }

    fn targets(weights: bool) -> &'static str {
        if weights {
            "    targets:\n      - { provider: a, model: m, weight: 3 }\n      - { provider: b, model: m, weight: 1 }\n"
        } else {
            "    targets:\n      - { provider: a, model: m }\n      - { provider: b, model: m }\n"
        }
    }

    #[test]
    fn the_spec_block_loads_and_defaults_apply_without_one() {
        let spec = format!(
            "routing:\n  retries: 2\n  backoff_ms: 100\n  max_backoff_ms: 5000\n  failures_to_trip: 5\n  cooldown_s: 30\n{HEAD}{MODEL}    strategy: ordered\n{}",
            targets(false)
        );
        let config = load_str(&spec, "t.yaml", &|_| None).unwrap();
        assert_eq!(config.routing, RoutingConfig::default());
        assert_eq!(config.models[0].strategy, Strategy::Ordered);
        let custom = format!(
            "routing: {{ retries: 0, backoff_ms: 5, max_backoff_ms: 50, failures_to_trip: 1, cooldown_s: 0.5 }}\n{HEAD}{MODEL}    strategy: least_latency\n{}",
            targets(false)
        );
        let config = load_str(&custom, "t.yaml", &|_| None).unwrap();
        assert_eq!(
            config.routing,
            RoutingConfig {
                retries: 0,
                backoff: Duration::from_millis(5),
                max_backoff: Duration::from_millis(50),
                failures_to_trip: 1,
                cooldown: Duration::from_millis(500),
            }
        );
        assert_eq!(config.models[0].strategy, Strategy::LeastLatency);
    }

    #[test]
    fn weights_without_a_strategy_still_mean_weighted() {
        let text = format!("{HEAD}{MODEL}{}", targets(true));
        let config = load_str(&text, "t.yaml", &|_| None).unwrap();
        assert_eq!(config.models[0].strategy, Strategy::Weighted);
        let plain = format!("{HEAD}{MODEL}{}", targets(false));
        let config = load_str(&plain, "t.yaml", &|_| None).unwrap();
        assert_eq!(config.models[0].strategy, Strategy::Ordered);
        let explicit = format!("{HEAD}{MODEL}    strategy: weighted\n{}", targets(false));
        let config = load_str(&explicit, "t.yaml", &|_| None).unwrap();
        assert_eq!(config.models[0].strategy, Strategy::Weighted);
    }

    #[test]
    fn bad_values_name_the_key_and_the_line() {
        let text = format!(
            "routing:\n  retries: 11\n  backoff_ms: -1\n  max_backoff_ms: 70000\n  failures_to_trip: 0\n  cooldown_s: 0\n{HEAD}"
        );
        assert_eq!(
            problems(&text),
            [
                "2: routing.retries: `11` is above the maximum of 10 (more retries only add load to a failing provider; add a fallback target instead)",
                "3: routing.backoff_ms: `-1` is below the minimum of 0",
                "4: routing.max_backoff_ms: `70000` is above the maximum of 60000 ms",
                "5: routing.failures_to_trip: `0` is below the minimum of 1",
                "6: routing.cooldown_s: `0` is not a number of seconds (more than 0)",
            ]
        );
        let inverted = format!("routing:\n  backoff_ms: 500\n  max_backoff_ms: 100\n{HEAD}");
        assert_eq!(
            problems(&inverted),
            [
                "2: routing: `max_backoff_ms` (100 ms) is below `backoff_ms` (500 ms); the cap must be at least the first backoff"
            ]
        );
        let wrong_type = format!("routing:\n  retries: many\n{HEAD}");
        assert_eq!(
            problems(&wrong_type),
            ["2: routing.retries: `many` is not a whole number"]
        );
    }

    #[test]
    fn unknown_keys_and_strategies_are_errors() {
        let typo = format!("routing:\n  retry: 3\n{HEAD}");
        assert_eq!(
            problems(&typo),
            [
                "2: routing: unknown key `retry`; expected one of retries, backoff_ms, max_backoff_ms, failures_to_trip, cooldown_s"
            ]
        );
        let strategy = format!("{HEAD}{MODEL}    strategy: fastest\n{}", targets(false));
        assert_eq!(
            problems(&strategy),
            ["7: models[0].strategy: `fastest` is not one of ordered, weighted, least_latency"]
        );
        let ignored = format!("{HEAD}{MODEL}    strategy: ordered\n{}", targets(true));
        assert_eq!(
            problems(&ignored),
            [
                "7: models[0].strategy: `ordered` does not use `targets[].weight`; remove the weights or set `strategy: weighted`"
            ]
        );
        let not_a_map = format!("routing: 3\n{HEAD}");
        assert!(
            problems(&not_a_map)[0].contains("routing"),
            "{:?}",
            problems(&not_a_map)
        );
    }
}
