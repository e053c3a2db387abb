//! A reconcile's cost: `followd reconcile --plan` (the real binary) against a fast fake CRM with limits off.
//!
//! `cargo bench --bench reconcile` prints, for 10,000 and 100,000 contacts (10% of them needing a follower):
//! contacts read per second, the process's peak memory (VmHWM) and its ratio between the two sizes (target:
//! flat), and the upstream calls per 1,000 contacts (target: pages + changed contacts, nothing more); then, at
//! the default budget (100 calls per 10 s, half of it for a reconcile), the time the plan says an apply of the
//! 10,000 takes; then the delivery delay of live webhooks (post to the CRM's answer; one every 500 ms) on
//! `followd serve` with Redis, with no reconcile running and during an apply of those 10,000, and its ratio
//! (target: at most 1.5x).

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
    live_during_an_apply().await;
}

/// The delay of `count` live webhooks, one every 500 ms, each from its post until the CRM answered its call.
async fn live_delays(upstream: &FakeUpstream, addr: &str, tag: &str, count: usize) -> Vec<Duration> {
    let mut delays = Vec::new();
    for i in 0..count {
        let contact = format!("live-{tag}-{i}");
        let body = support::app::tag_event(&format!("{contact}-e"), "tag_added", &contact, "vip");
        let started = Instant::now();
        let status = support::process::post(addr, &body).await.status();
        assert_eq!(status, 202, "a live webhook was refused");
        let delivered = support::eventually(Duration::from_secs(60), || async {
            upstream.calls_for(&contact).iter().any(|c| c.method == "POST" && c.status == 201)
        })
        .await;
        assert!(delivered, "{contact} was not delivered");
        delays.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(500).saturating_sub(started.elapsed())).await;
    }
    delays.sort_unstable();
    delays
}

async fn live_during_an_apply() {
    let redis = support::redis::RedisServer::start().await;
    let upstream = FakeUpstream::start().await;
    for i in 0..10_000usize {
        upstream.set_contact(&format!("c-{i:06}"), "loc-1", if i % 10 == 0 { &["vip"] } else { &["other"] }, None);
    }
    let dir = tempfile::tempdir().expect("a directory");
    let config = support::process::write_config(dir.path(), &upstream.url, Some(&redis.url()));
    let service = support::process::Followd::start(&config, support::free_port(), &[]).await;
    let alone = live_delays(&upstream, &service.addr, "alone", 20).await;
    let mut apply = tokio::process::Command::new(env!("CARGO_BIN_EXE_followd"))
        .args(["reconcile", "--location", "loc-1", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("followd reconcile runs");
    let busy = support::eventually(Duration::from_secs(120), || async {
        upstream.calls().iter().filter(|c| c.method == "POST" && c.contact_id.starts_with("c-")).count() >= 20
    })
    .await;
    assert!(busy, "the apply did not start delivering");
    let during = live_delays(&upstream, &service.addr, "during", 20).await;
    assert!(apply.try_wait().ok().flatten().is_none(), "the apply ended before the live webhooks were measured");
    let _ = apply.kill().await;
    let at = |d: &[Duration], q: f64| d[((d.len() as f64 * q) as usize).min(d.len() - 1)].as_secs_f64() * 1e3;
    println!("live webhooks on `serve` (Redis, default budget), 20 each, one every 500 ms, post to the CRM's answer:");
    println!("  no reconcile running:        median {:.1} ms   p90 {:.1} ms", at(&alone, 0.5), at(&alone, 0.9));
    println!("  during an apply of 10,000:   median {:.1} ms   p90 {:.1} ms", at(&during, 0.5), at(&during, 0.9));
    println!(
        "  ratio during / none: median {:.2}x, p90 {:.2}x (target <= 1.5x)",
        at(&during, 0.5) / at(&alone, 0.5),
        at(&during, 0.9) / at(&alone, 0.9)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(run());
}
