//! Top-level options, `journal_dir` and `cache:`.

use super::*;

#[test]
fn top_level_options() {
    let text = "counters_unavailable: allow_local
max_body_bytes: 1048576
log_bodies: false
drain_timeout_s: 5
busy_poll_us: 50
";
    let config = load_str(text, "t.yaml", &no_env).unwrap();
    assert_eq!(config.busy_poll, Duration::from_micros(50));
    assert_eq!(config.counters_unavailable, CountersUnavailable::AllowLocal);
    assert_eq!(config.max_body_bytes, 1_048_576);
    assert!(!config.log_bodies);
    // Body logging is not built: asking for it is an error, not a no-op.
    let err = load_str("log_bodies: true\n", "t.yaml", &no_env)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.yaml:1: log_bodies: `true` is not supported yet"),
        "{err}"
    );
    assert_eq!(config.drain_timeout, Duration::from_secs(5));

    let defaults = load_str("", "t.yaml", &no_env).unwrap();
    assert_eq!(defaults.counters_unavailable, CountersUnavailable::Reject);
    assert!(!defaults.log_bodies);
    assert_eq!(defaults.drain_timeout, Duration::from_secs(30));
    assert_eq!(defaults.busy_poll, Duration::from_micros(200));
    assert!(
        defaults.providers.is_empty() && defaults.models.is_empty() && defaults.teams.is_empty()
    );

    assert_eq!(
        problems(
            "counters_unavailable: open\nmax_body_bytes: 1.5\nlog_bodies: maybe\ndrain_timeout_s: -1\nbusy_poll_us: 20000\n"
        ),
        [
            "1: counters_unavailable: `open` is not one of reject, allow_local",
            "2: max_body_bytes: `1.5` is not a whole number",
            "3: log_bodies: `maybe` is not `true` or `false`",
            "4: drain_timeout_s: `-1` is not a number of seconds (0 or more)",
            "5: busy_poll_us: `20000` is above the maximum of 10000 (a longer spin only burns CPU; 0 turns busy-polling off)",
        ]
    );
}

#[test]
fn journal_dir_is_a_path_or_left_out() {
    let config = load_str(
        "journal_dir: /var/lib/tollgate/journal\n",
        "t.yaml",
        &no_env,
    )
    .unwrap();
    assert_eq!(
        config.journal_dir,
        Some(std::path::PathBuf::from("/var/lib/tollgate/journal"))
    );
    assert_eq!(load_str("", "t.yaml", &no_env).unwrap().journal_dir, None);
    assert_eq!(
        problems("journal_dir: ''\n"),
        [
            "1: journal_dir: an empty path names no directory; leave the key out to keep the spend journal next to the store"
        ]
    );
}

#[test]
fn the_response_cache_is_off_unless_enabled_and_defaults_to_300_s_and_64_mib() {
    let load = |text: &str| load_str(text, "t.yaml", &no_env).unwrap();
    assert_eq!(load("listen: 127.0.0.1:4000\n").cache, None);
    assert_eq!(load("cache: { enabled: false, ttl_s: 10 }\n").cache, None);
    assert_eq!(load("cache: {}\n").cache, None);
    assert_eq!(
        load("cache: { enabled: true }\n").cache,
        Some(CacheConfig {
            ttl: Duration::from_secs(300),
            max_bytes: 64 * 1024 * 1024,
        })
    );
    assert_eq!(
        load("cache:\n  enabled: \"true\"\n  ttl_s: 5\n  max_mib: 2\n").cache,
        Some(CacheConfig {
            ttl: Duration::from_secs(5),
            max_bytes: 2 * 1024 * 1024,
        })
    );
    let teams = load("teams:\n  - id: a\n    cache: false\n  - id: b\n").teams;
    assert_eq!((teams[0].cache, teams[1].cache), (false, true));
}

#[test]
fn cache_settings_are_checked_with_their_lines() {
    assert_problem(
        "cache:\n  enabled: yes please\n",
        "2: cache.enabled: `yes please` is not `true` or `false`",
    );
    assert_problem(
        "cache:\n  enabled: true\n  ttl_s: 0\n",
        "3: cache.ttl_s: `0` is below the minimum of 1",
    );
    assert_problem(
        "cache:\n  enabled: true\n  ttl_s: 99999999\n",
        "3: cache.ttl_s: `99999999` is above the maximum of 2592000 (30 days)",
    );
    assert_problem(
        "cache:\n  enabled: true\n  max_mib: 1.5\n",
        "3: cache.max_mib: `1.5` is not a whole number",
    );
    assert_problem(
        "cache:\n  enabled: true\n  max_mib: -1\n",
        "3: cache.max_mib: `-1` is below the minimum of 1",
    );
    assert_problem(
        "teams:\n  - id: a\n    cache: sometimes\n",
        "3: teams[0].cache: `sometimes` is not `true` or `false`",
    );
    // A typo must not silently leave the cache off (or on).
    let found = problems("cache:\n  enabled: true\n  ttl: 5\n");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("3: ") && p.contains("`ttl`")),
        "{found:?}"
    );
    let found = problems("teams:\n  - id: a\n    caching: false\n");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("3: ") && p.contains("`caching`")),
        "{found:?}"
    );
}
