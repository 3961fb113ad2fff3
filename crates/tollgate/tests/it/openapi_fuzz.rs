//! The admin API against its own OpenAPI document, as an outside client
//! generator sees it: schemathesis (installed by `.ci/run`) with every
//! check, including "a request the schema calls valid is accepted", "one it
//! calls invalid is refused" and "every status is documented". It finds
//! nothing, and this test keeps it so.
//!
//! `TOLLGATE_SCHEMATHESIS` names the command (default `schemathesis`);
//! `TOLLGATE_FUZZ_EXAMPLES` and `TOLLGATE_FUZZ_SEED` widen or vary a run by
//! hand (CI uses a fixed seed so that a failure reproduces).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const TAIL: &str = r#"policies:
  - name: cap
    type: cost-limit
    config: { limit_usd: 5, period: daily, action: reject }
  - name: slow
    type: rate-limit
    config: { requests_per_minute: 600 }
teams:
  - id: t1
    policies: [cap]
"#;

/// A fuzz run is bounded by its example count; this bounds it in time too.
const DEADLINE: Duration = Duration::from_secs(420);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_nothing_against_the_admin_api() {
    let cmd = std::env::var("TOLLGATE_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    if Command::new(&cmd).arg("--version").output().is_err() {
        let msg = format!("`{cmd}` is not installed (`pip install schemathesis`)");
        assert!(
            std::env::var_os("CI").is_none(),
            "{msg}: CI must run this test"
        );
        eprintln!("SKIPPED schemathesis_finds_nothing_against_the_admin_api: {msg}");
        return;
    }
    let h = Harness::start(TAIL).await;
    let examples = std::env::var("TOLLGATE_FUZZ_EXAMPLES").unwrap_or_else(|_| "20".into());
    let seed = std::env::var("TOLLGATE_FUZZ_SEED").unwrap_or_else(|_| "20261206".into());
    let schema = format!("{}/admin/openapi.json", h.url);
    // schemathesis keeps a cache of crashes in its working directory: run it in a
    // scratch one so a test run never dirties the checkout.
    let scratch = tempfile::tempdir().expect("scratch dir");
    let cwd = scratch.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(&cmd)
            .current_dir(&cwd)
            .args([
                "run",
                &schema,
                "--checks",
                "all",
                "--max-examples",
                &examples,
            ])
            .args(["--seed", &seed, "--no-color"])
            .args(["-H", &format!("Authorization: Bearer {ADMIN_KEY}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("schemathesis starts");
        let started = Instant::now();
        loop {
            if child.try_wait().expect("schemathesis runs").is_some() {
                break;
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        child.wait_with_output().expect("schemathesis output")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems (or ran out of time):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A run that tested nothing would pass too: every operation of the
    // document must have been exercised.
    let count = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .map(|rest| rest.trim().rsplit('/').next().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    let (selected, tested) = (count("Selected:"), count("Tested:"));
    assert!(
        !tested.is_empty() && tested != "0" && tested == selected,
        "selected {selected:?}, tested {tested:?}:\n{stdout}"
    );
}
