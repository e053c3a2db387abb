//! Load over HTTP: the embedded default against the Redis path, in one run, as a ratio.
//!
//! `cargo bench --bench load` starts the release `followd serve` binary twice, each as a user runs it: once on
//! the embedded store (no `redis_url`) and once on a private `redis-server`, both in dry run (no token: the
//! workers deliver every change and the dry run logs it at debug). It sends signed generic `tag_added`
//! webhooks with unique ids that the rules match, from 64 connections, for `FOLLOWD_LOAD_SECS` seconds
//! (default 10) after a 2 s warm-up, and prints per store: webhooks per second, p50 / p99 latency, failed
//! answers, and the ratio embedded / Redis.
//!
//! The load comes from `wrk` when it is installed (`apt-get install wrk`: a second process in C, light on the
//! shared cores; each of its two threads sends its own pre-signed bodies, every id unique), else from a
//! reqwest generator in this process (heavier: it takes a good part of the cores from the service). The
//! service and the generator share the machine's cores either way; the ratio is what compares across
//! machines.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::app::{SECRET, SIGNATURE_HEADER, sign};
use support::process::Followd;
use support::redis::RedisServer;

const CONNECTIONS: usize = 64;
const WARM_UP: Duration = Duration::from_secs(2);
const RULES: &str = r#"
[users]
alice = "usr_alice"
bob = "usr_bob"

[[rule]]
name = "vip"
when = { event = "tag_added", tag = "vip" }
then = { add = ["alice", "bob"] }
"#;

struct Figures {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    refused: usize,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(run());
}

async fn run() {
    let secs = std::env::var("FOLLOWD_LOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let duration = Duration::from_secs(secs);
    let wrk = std::process::Command::new("wrk").arg("--version").output().is_ok();
    let redis = RedisServer::start().await;
    let embedded = measure(None, duration, "e", wrk).await;
    let on_redis = measure(Some(&redis.url()), duration, "r", wrk).await;
    let driver = if wrk { "wrk, 2 threads" } else { "an in-process reqwest generator (install wrk for a lighter one)" };
    println!("load over HTTP: {CONNECTIONS} connections, {secs} s each, signed generic webhooks, dry-run delivery");
    println!("load from {driver}");
    println!("| store | webhooks/s | p50 ms | p99 ms | not 202 |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, f) in [("embedded (default)", &embedded), ("Redis", &on_redis)] {
        println!("| {name} | {:.0} | {:.1} | {:.1} | {} |", f.per_second, f.p50_ms, f.p99_ms, f.refused);
    }
    println!("embedded / Redis throughput: {:.2}x", embedded.per_second / on_redis.per_second);
}

fn write_config(dir: &Path, redis_url: Option<&str>) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("rules")).expect("rules dir");
    std::fs::write(dir.join("rules/rules.toml"), RULES).expect("rules");
    let redis = redis_url.map(|url| format!("redis_url = \"{url}\"")).unwrap_or_default();
    let config = format!(
        r#"
{redis}
data_dir = "{data}"
rules_dir = "{rules}"
[queue]
prefix = "load"
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

async fn measure(redis_url: Option<&str>, duration: Duration, tag: &str, wrk: bool) -> Figures {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), redis_url);
    let env = [("RUST_LOG", "warn")];
    let followd = Followd::start_with(&config, support::free_port(), &[], &env, None).await;
    let url = format!("{}/webhooks/test", followd.addr);
    let counter = Arc::new(AtomicUsize::new(0));
    drive(&url, WARM_UP, &format!("{tag}w"), &counter).await;
    if wrk {
        return with_wrk(&url, duration, tag, dir.path()).await;
    }
    let started = Instant::now();
    let (mut latencies, refused) = drive(&url, duration, tag, &counter).await;
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3;
    Figures { per_second: latencies.len() as f64 / elapsed, p50_ms: at(0.50), p99_ms: at(0.99), refused }
}

/// Sends from [`CONNECTIONS`] connections until `duration` has passed; every latency, and the non-202 count.
async fn drive(url: &str, duration: Duration, tag: &str, counter: &Arc<AtomicUsize>) -> (Vec<Duration>, usize) {
    let client = reqwest::Client::builder().pool_max_idle_per_host(CONNECTIONS).build().expect("client");
    let deadline = Instant::now() + duration;
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        let (client, url, tag, counter) = (client.clone(), url.to_owned(), tag.to_owned(), Arc::clone(counter));
        senders.push(tokio::spawn(async move {
            let (mut latencies, mut refused) = (Vec::new(), 0);
            while Instant::now() < deadline {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let body = serde_json::json!({
                    "id": format!("{tag}-{i}"), "type": "tag_added", "location_id": "loc-1",
                    "contact_id": format!("c-{i}"), "tag": "vip"
                })
                .to_string();
                let signature = sign(SECRET, body.as_bytes());
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header(SIGNATURE_HEADER, signature)
                    .body(body)
                    .send()
                    .await;
                latencies.push(sent.elapsed());
                if !response.is_ok_and(|r| r.status() == 202) {
                    refused += 1;
                }
            }
            (latencies, refused)
        }));
    }
    let (mut all, mut refused) = (Vec::new(), 0);
    for sender in senders {
        let (latencies, r) = sender.await.expect("a sender");
        all.extend(latencies);
        refused += r;
    }
    (all, refused)
}

/// Bodies each wrk thread may send: more than a thread sends in the run at 20,000 webhooks/s, so no id repeats.
const BODIES_PER_SECOND_PER_THREAD: u64 = 12_000;

/// The wrk script: each thread reads its own file of pre-signed bodies (`body\tsignature` per line) and sends
/// them in order; `done` prints one line this bench reads.
const WRK_SCRIPT: &str = r#"
local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end
function init(args)
  bodies, signatures, n = {}, {}, 0
  for line in io.lines(args[1] .. "/bodies-" .. id) do
    local tab = line:find("\t", 1, true)
    n = n + 1
    bodies[n] = line:sub(1, tab - 1)
    signatures[n] = line:sub(tab + 1)
  end
  i = 0
end
function request()
  i = i % n + 1
  return wrk.format("POST", nil, { ["content-type"] = "application/json", ["x-signature"] = signatures[i] }, bodies[i])
end
function done(summary, latency, requests)
  local failed = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("FOLLOWD %d %d %d %d %d\n", summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), failed))
end
"#;

/// Runs wrk against `url` for `duration` with pre-signed, unique bodies.
async fn with_wrk(url: &str, duration: Duration, tag: &str, dir: &Path) -> Figures {
    let per_thread = BODIES_PER_SECOND_PER_THREAD * duration.as_secs().max(1);
    for thread in 0..2 {
        let mut text = String::new();
        for i in 0..per_thread {
            let body = serde_json::json!({
                "id": format!("{tag}-wrk{thread}-{i}"), "type": "tag_added", "location_id": "loc-1",
                "contact_id": format!("c-{thread}-{i}"), "tag": "vip"
            })
            .to_string();
            text.push_str(&format!("{body}\t{}\n", sign(SECRET, body.as_bytes())));
        }
        std::fs::write(dir.join(format!("bodies-{thread}")), text).expect("bodies");
    }
    std::fs::write(dir.join("load.lua"), WRK_SCRIPT).expect("script");
    let output = tokio::process::Command::new("wrk")
        .args(["-t2", &format!("-c{CONNECTIONS}"), &format!("-d{}s", duration.as_secs()), "--timeout", "10s"])
        .arg("-s")
        .arg(dir.join("load.lua"))
        .arg(url)
        .arg("--")
        .arg(dir)
        .output()
        .await
        .expect("wrk runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("FOLLOWD ")).unwrap_or_else(|| panic!("wrk said: {stdout}"));
    let numbers: Vec<f64> = line.split_whitespace().filter_map(|n| n.parse().ok()).collect();
    let [requests, micros, p50, p99, failed] = numbers[..] else { panic!("wrk said: {line}") };
    assert!(
        requests < (2 * per_thread) as f64,
        "wrk sent every body: ids repeated; raise BODIES_PER_SECOND_PER_THREAD"
    );
    Figures { per_second: requests / (micros / 1e6), p50_ms: p50 / 1e3, p99_ms: p99 / 1e3, refused: failed as usize }
}
