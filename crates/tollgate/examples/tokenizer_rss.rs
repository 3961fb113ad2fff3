//! Resident memory and speed of the token counter (issue 16): loads the
//! `cl100k_base` and `o200k_base` counters the estimator uses and prints
//! VmRSS / VmHWM from `/proc/self/status` before and after, then the time
//! to estimate a chat body. Run each variant in its own process:
//!
//! ```text
//! cargo run --release -p tollgate --example tokenizer_rss
//! ```

use std::time::Instant;

use tollgate::config::ModelConfig;

fn status(tag: &str) {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let pick = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_owned()
    };
    println!(
        "{tag}: VmRSS {} kB, VmHWM {} kB",
        pick("VmRSS:"),
        pick("VmHWM:")
    );
}

fn main() -> anyhow::Result<()> {
    status("start");
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(20)
        + "fn main() { println!(\"héllo wörld 日本語 🤖\"); }";
    let models: Vec<ModelConfig> = ["gpt-4", "gpt-4o"]
        .iter()
        .map(|name| ModelConfig {
            name: (*name).into(),
            targets: vec![],
            price: Default::default(),
            max_output_tokens: 4096,
            strategy: Default::default(),
        })
        .collect();
    let mut n = 0;
    for m in &models {
        n += tollgate::policy::estimate::text_tokens(m, &m.name, &text);
    }
    status("cl100k + o200k loaded");
    let runs = 20_000;
    let t = Instant::now();
    for _ in 0..runs {
        n += tollgate::policy::estimate::text_tokens(&models[1], "gpt-4o", &text);
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / f64::from(runs);
    println!(
        "o200k: {per:.1} us per {}-byte text ({n} tokens counted)",
        text.len()
    );
    Ok(())
}
