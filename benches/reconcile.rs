//! A reconcile's cost: `followd reconcile --plan` (the real binary) against a fast fake CRM with limits off.
//!
//! `cargo bench --bench reconcile` prints, for 10,000 and 100,000 contacts (10% of them needing a follower):
//! contacts read per second, the process's peak memory (VmHWM) and its ratio between the two sizes (target:
//! flat), and the upstream calls per 1,000 contacts (target: pages + changed contacts, nothing more); then, at
//! the default budget (100 calls per 10 s, half of it for a reconcile), the time the plan says an apply of the
//! 10,000 takes.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::upstream::FakeUpstream;

const RULES: &str = r#"
[users]
alice = "usr_alice"

[[rule]]
name = "vip-gets-alice"
when = { event = "tag_added", tag = "vip" }
then = { add = ["alice"] }
"#;

fn config(dir: &Path, upstream: &FakeUpstream, rate: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("rules")).expect("rules dir");
    std::fs::write(dir.join("rules/rules.toml"), RULES).expect("rules");
    let text = format!(
        "data_dir = \"{}\"\nrules_dir = \"{}\"\n[rate_limit]\nper_location = \"{rate}\"\n\
         [upstream]\nbase_url = \"{}\"\ntoken = \"{}\"\n[reconcile]\npage_size = 500\nmax_share = 1.0\n",
        dir.join("data").display(),
        dir.join("rules").display(),
        upstream.url,
        support::upstream::TOKEN
    );
    let path = dir.join("followd.toml");
    std::fs::write(&path, text).expect("config");
    path
}

/// Runs a plan of `loc-1`; returns the plan, the time it took and the process's peak resident memory (KiB).
async fn plan(config: &Path) -> (serde_json::Value, Duration, u64) {
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_followd"))
        .args(["reconcile", "--location", "loc-1", "--plan", "--json", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("followd runs");
    let pid = child.id().expect("a pid");
    let watcher = tokio::spawn(async move {
        let mut peak = 0;
        while let Ok(status) = tokio::fs::read_to_string(format!("/proc/{pid}/status")).await {
            if let Some(kib) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
                peak = peak.max(kib.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peak
    });
    let output = child.wait_with_output().await.expect("followd ends");
    let elapsed = started.elapsed();
    assert!(output.status.success(), "the plan failed: {}", String::from_utf8_lossy(&output.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    (plan, elapsed, watcher.await.unwrap_or(0))
}

async fn run() {
    let mut rows = Vec::new();
    for contacts in [10_000usize, 100_000] {
        let upstream = FakeUpstream::start().await;
        upstream.set_limit(None);
        for i in 0..contacts {
            upstream.set_contact(&format!("c-{i:06}"), "loc-1", if i % 10 == 0 { &["vip"] } else { &["other"] }, None);
        }
        let dir = tempfile::tempdir().expect("a directory");
        let (plan, elapsed, peak) = plan(&config(dir.path(), &upstream, "100000/1s")).await;
        assert_eq!(plan["contacts_read"], contacts as u64);
        let calls = plan["calls"].as_u64().unwrap_or(0);
        let pages = contacts.div_ceil(500) as u64 + u64::from(contacts % 500 == 0);
        rows.push((
            contacts,
            contacts as f64 / elapsed.as_secs_f64(),
            peak,
            calls,
            pages,
            plan["contacts_changed"].as_u64().unwrap_or(0),
        ));
    }
    println!("reconcile --plan, fast fake CRM, limits off, pages of 500, 10% of contacts need a follower");
    for (contacts, rate, peak, calls, pages, changed) in &rows {
        println!(
            "  {contacts:>7} contacts   {rate:>8.0} contacts/s   peak {:>7.1} MiB   {:.1} calls per 1,000 \
             ({calls} = {pages} pages + {changed} changed contacts: {})",
            *peak as f64 / 1024.0,
            *calls as f64 * 1000.0 / *contacts as f64,
            if *calls == pages + changed { "nothing more" } else { "MORE THAN NEEDED" }
        );
    }
    println!("  peak memory 100,000 / 10,000: {:.2}x", rows[1].2 as f64 / rows[0].2.max(1) as f64);

    let upstream = FakeUpstream::start().await;
    for i in 0..10_000usize {
        upstream.set_contact(&format!("c-{i:06}"), "loc-1", if i % 10 == 0 { &["vip"] } else { &["other"] }, None);
    }
    let dir = tempfile::tempdir().expect("a directory");
    let config = config(dir.path(), &upstream, "100/10s");
    let text = std::fs::read_to_string(&config).expect("config").replace("max_share = 1.0", "max_share = 0.5");
    std::fs::write(&config, text).expect("config");
    let (plan, _, _) = plan(&config).await;
    println!(
        "default budget (100/10s, max_share 0.5): an apply of 10,000 contacts, {} changed, takes about {} s ({} calls)",
        plan["contacts_changed"], plan["eta_seconds"], plan["calls"]
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(run());
}
