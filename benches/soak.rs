//! Soak: the Redis topology under steady mixed traffic and regular trouble, for a set time.
//!
//! `FOLLOWD_SOAK_MINUTES=60 cargo bench --bench soak` (default 5 minutes) runs the release `followd serve` as two
//! receivers and two workers on a private `redis-server` with AOF, against the fake CRM, and:
//! - sends signed generic `tag_added` / `tag_removed` webhooks for 2,000 contacts in 20 locations at about
//!   `FOLLOWD_SOAK_RATE` per second (default 40) from 8 senders; a contact always goes to the same receiver and
//!   its next webhook leaves only once the previous one was answered 2xx (a refused one is sent again, as a
//!   sender retries), so the last acknowledged webhook of each contact says where it must end up;
//! - has the CRM answer 429 (with `Retry-After: 2`) and 503 to a few calls every 20 s;
//! - every `FOLLOWD_SOAK_PERIOD_SECS` (default 180): SIGKILLs the second worker and starts it again, and half a
//!   period later stops Redis for 15 s (the receivers spool meanwhile) and starts it again;
//! - at the end stops the traffic, waits up to 3 minutes for the queue to drain, and prints the RSS of each
//!   process after a warm-up (a sixth of the run, 1 to 10 minutes), at the end and every 5 minutes; webhooks
//!   acknowledged and refused; contacts whose followers at the CRM differ from their last acknowledged webhook
//!   (lost: must be 0); and dead letters.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::app::{SECRET, SIGNATURE_HEADER, sign};
use support::process::Followd;
use support::redis::RedisServer;
use support::upstream::{FakeUpstream, TOKEN};

const CONTACTS: usize = 2000;
const LOCATIONS: usize = 20;
const SENDERS: usize = 8;
/// RSS is sampled this often, and compared between the end of the warm-up (a sixth of the run, 1 to 10 min)
/// and the end.
const SAMPLE_EVERY: Duration = Duration::from_secs(300);
const REDIS_DOWN: Duration = Duration::from_secs(15);
const DRAIN: Duration = Duration::from_secs(180);
const RULES: &str = r#"
[users]
alice = "usr_alice"
bob = "usr_bob"

[[rule]]
name = "vip-follow"
when = { event = "tag_added", tag = "vip" }
then = { add = ["alice", "bob"] }

[[rule]]
name = "vip-unfollow"
when = { event = "tag_removed", tag = "vip" }
then = { remove = ["alice", "bob"] }
"#;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(run());
}

fn write_config(dir: &Path, upstream: &str, redis_url: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("rules")).expect("rules dir");
    std::fs::write(dir.join("rules/rules.toml"), RULES).expect("rules");
    let config = format!(
        r#"
redis_url = "{redis_url}"
data_dir = "{data}"
rules_dir = "{rules}"
shutdown_grace = "3s"
[upstream]
base_url = "{upstream}"
token = "{TOKEN}"
timeout = "2s"
[delivery]
retry_base = "1s"
retry_max_delay = "10s"
throttle_pause = "2s"
[queue]
lease = "10s"
prefix = "soak"
[[source]]
name = "test"
format = "generic"
verify = {{ scheme = "hmac-sha256", header = "{SIGNATURE_HEADER}", secrets = ["{SECRET}"] }}
"#,
        data = dir.join("data").display(),
        rules = dir.join("rules").display(),
    );
    let path = dir.join("followd.toml");
    std::fs::write(&path, config).expect("config file");
    path
}

/// Starts one process with its own data directory (so each receiver has its own spool).
async fn start(config: &Path, dir: &Path, name: &str, role: &str) -> Followd {
    let data = dir.join(name);
    let data = data.to_str().expect("a UTF-8 path").to_owned();
    let env = [("FOLLOWD_DATA_DIR", data.as_str()), ("RUST_LOG", "warn")];
    let log = dir.join(format!("{name}.log"));
    Followd::start_with(config, support::free_port(), &["--role", role], &env, Some(&log)).await
}

/// Resident set size of a process, in KiB.
fn rss_kib(process: &Followd) -> u64 {
    let Some(pid) = process.child.id() else { return 0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn contact(k: usize) -> (String, String) {
    (format!("loc-{}", k % LOCATIONS), format!("c-{k}"))
}

struct Sent {
    acknowledged: AtomicUsize,
    refused: AtomicUsize,
}

async fn run() {
    let minutes = env_number("FOLLOWD_SOAK_MINUTES", 5);
    let rate = env_number("FOLLOWD_SOAK_RATE", 40);
    let period = Duration::from_secs(env_number("FOLLOWD_SOAK_PERIOD_SECS", 180));
    let duration = Duration::from_secs(minutes * 60);
    // Kept after the run: the processes' logs are there.
    let dir = tempfile::Builder::new().prefix("followd-soak-").tempdir().expect("temp dir").keep();
    let mut redis = RedisServer::start_persistent().await;
    let upstream = FakeUpstream::start().await;
    upstream.set_limit(None);
    upstream.set_latency(Duration::from_millis(20));
    upstream.set_retry_after(2);
    let config = write_config(dir.as_path(), &upstream.url, &redis.url());
    let receivers = [
        start(&config, dir.as_path(), "receiver-1", "receiver").await,
        start(&config, dir.as_path(), "receiver-2", "receiver").await,
    ];
    let steady_worker = start(&config, dir.as_path(), "worker-1", "worker").await;
    let mut killed_worker = start(&config, dir.as_path(), "worker-2", "worker").await;
    let addrs: Vec<String> = receivers.iter().map(|r| r.addr.clone()).collect();
    eprintln!(
        "soak: {minutes} min at ~{rate} webhooks/s; trouble every {period:?}; logs in {}",
        dir.as_path().display()
    );

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(Sent { acknowledged: AtomicUsize::new(0), refused: AtomicUsize::new(0) });
    let mut senders = Vec::new();
    for s in 0..SENDERS {
        let (addrs, stop, sent) = (addrs.clone(), Arc::clone(&stop), Arc::clone(&sent));
        let every = Duration::from_secs_f64(SENDERS as f64 / rate as f64);
        senders.push(tokio::spawn(send(s, addrs, every, stop, sent)));
    }

    let started = Instant::now();
    let warm_up = (duration / 6).clamp(Duration::from_secs(60), Duration::from_secs(600));
    let mut warm = None;
    let mut samples: Vec<(u64, [u64; 4])> = Vec::new();
    let mut next_sample = started + SAMPLE_EVERY;
    let mut next_kill = started + period;
    let mut next_outage = started + period / 2;
    let mut next_failures = started + Duration::from_secs(20);
    let (mut kills, mut outages) = (0, 0);
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        if warm.is_none() && started.elapsed() >= warm_up {
            warm = Some([&receivers[0], &receivers[1], &steady_worker, &killed_worker].map(rss_kib));
        }
        if now >= next_sample {
            let rss = [&receivers[0], &receivers[1], &steady_worker, &killed_worker].map(rss_kib);
            samples.push((started.elapsed().as_secs() / 60, rss));
            next_sample = now + SAMPLE_EVERY;
        }
        if now >= next_failures {
            upstream.fail_next(429, 3);
            upstream.fail_next(503, 5);
            next_failures = now + Duration::from_secs(20);
        }
        if now >= next_kill {
            killed_worker.kill().await;
            killed_worker = start(&config, dir.as_path(), "worker-2", "worker").await;
            kills += 1;
            next_kill = now + period;
        }
        if now >= next_outage {
            redis.stop();
            tokio::time::sleep(REDIS_DOWN).await;
            redis.restart().await;
            outages += 1;
            next_outage = now + period;
        }
    }
    let end_rss = [&receivers[0], &receivers[1], &steady_worker, &killed_worker].map(rss_kib);
    stop.store(true, Ordering::Release);
    let mut expected: BTreeMap<String, bool> = BTreeMap::new();
    for sender in senders {
        expected.extend(sender.await.expect("a sender"));
    }

    let want = |added: bool| if added { 2 } else { 0 };
    let drained = support::eventually(DRAIN, || async {
        expected.iter().all(|(c, added)| upstream.followers_of(c).len() == want(*added))
    })
    .await;
    let lost: Vec<&String> =
        expected.iter().filter(|(c, added)| upstream.followers_of(c).len() != want(**added)).map(|(c, _)| c).collect();
    let dead = dead_letters(&config);
    let calls = upstream.calls();
    let statuses = |s: u16| calls.iter().filter(|c| c.status == s).count();

    println!("soak: {minutes} min, {kills} worker kills, {outages} Redis outages of {REDIS_DOWN:?}");
    println!("| process | RSS after {warm_up:?} (warm-up) | RSS at end | growth |");
    println!("| --- | --- | --- | --- |");
    let names = ["receiver-1", "receiver-2", "worker-1 (steady)", "worker-2 (killed and restarted)"];
    for (i, name) in names.iter().enumerate() {
        let (start, end) = (warm.map_or(0, |w| w[i]), end_rss[i]);
        let growth = if start > 0 { (end as f64 / start as f64 - 1.0) * 100.0 } else { f64::NAN };
        println!("| {name} | {} KiB | {end} KiB | {growth:+.1}% |", start);
    }
    println!("RSS (KiB) every {} min: minute, receiver-1, receiver-2, worker-1, worker-2", SAMPLE_EVERY.as_secs() / 60);
    for (minute, rss) in &samples {
        println!("  {minute:>3}  {}  {}  {}  {}", rss[0], rss[1], rss[2], rss[3]);
    }
    println!(
        "webhooks acknowledged: {}; refused and sent again: {}; contacts: {}; drained: {drained}",
        sent.acknowledged.load(Ordering::Acquire),
        sent.refused.load(Ordering::Acquire),
        expected.len()
    );
    println!("CRM calls: {} ({} answered 429, {} answered 503)", calls.len(), statuses(429), statuses(503));
    println!("contacts not matching their last acknowledged webhook (lost): {}", lost.len());
    if !lost.is_empty() {
        println!("  first: {:?}", &lost[..lost.len().min(10)]);
    }
    println!("dead letters: {dead}");
}

/// One sender: its own contacts (k ≡ s mod SENDERS), each always to the same receiver, one at a time.
async fn send(
    s: usize,
    addrs: Vec<String>,
    every: Duration,
    stop: Arc<AtomicBool>,
    sent: Arc<Sent>,
) -> BTreeMap<String, bool> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let mut last = BTreeMap::new();
    let mut ticker = tokio::time::interval(every);
    let mut state = s as u64 * 7919 + 1;
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        ticker.tick().await;
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let k = ((state >> 33) as usize % (CONTACTS / SENDERS)) * SENDERS + s;
        let added = !(state >> 20).is_multiple_of(3);
        let (location, contact) = contact(k);
        n += 1;
        let body = serde_json::json!({
            "id": format!("s{s}-{n}"), "type": if added { "tag_added" } else { "tag_removed" },
            "location_id": location, "contact_id": contact, "tag": "vip"
        })
        .to_string();
        let url = format!("{}/webhooks/test", addrs[k % addrs.len()]);
        loop {
            let response = client
                .post(&url)
                .header("content-type", "application/json")
                .header(SIGNATURE_HEADER, sign(SECRET, body.as_bytes()))
                .body(body.clone())
                .send()
                .await;
            if response.is_ok_and(|r| r.status().is_success()) {
                sent.acknowledged.fetch_add(1, Ordering::AcqRel);
                last.insert(contact.clone(), added);
                break;
            }
            sent.refused.fetch_add(1, Ordering::AcqRel);
            if stop.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    last
}

/// How many dead letters the queue holds, through `followd dlq list --json`.
fn dead_letters(config: &Path) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_followd"))
        .args(["dlq", "list", "--json", "--config"])
        .arg(config)
        .output();
    match output {
        Ok(out) if out.status.success() => serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout)
            .map_or_else(|e| format!("unreadable ({e})"), |letters| letters.len().to_string()),
        Ok(out) => format!("`followd dlq list` failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => format!("`followd dlq list` did not run: {e}"),
    }
}
