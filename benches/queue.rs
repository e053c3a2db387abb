//! Queue throughput against a private redis-server, as ratios to raw EVALSHA round trips measured in the same
//! run (machines here are shared and noisy; only ratios compare across runs).
//!
//! `cargo bench --bench queue` prints, at 64 concurrent callers in one process:
//! - raw: EVALSHA of a trivial script (`return 1`) — the baseline round trip, over the same kind of connection
//!   (`ConnectionManager`) the queue uses
//! - enqueue: one event with two operations, for a fresh contact each (the webhook path's write)
//! - lease+ack: lease a contact and acknowledge it (one delivery's queue work, two round trips)
//!
//! and the embedded (redb) queue's enqueue for comparison; then one call at a time, raw and enqueue alternating,
//! as median and p99 latency. Targets (issue 4): one enqueue costs ≤ 1.5 raw round trips of time (the latency
//! comparison), and ≥ 20,000 enqueues/s at 64 concurrent callers. At 64 callers the two are not the same
//! comparison: the raw calls are bound by the client and pipeline, while an enqueue is bound by Redis's own
//! time for its writes (printed as "server us/call", from `INFO commandstats`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use followd::config::RedisUrl;
use followd::domain::clock::now_ms;
use followd::domain::pick::{Caps, Member};
use followd::domain::rotation::Rotation;
use followd::event::{ContactId, EventId, LocationId, UserId};
use followd::queue::{
    Applied, ContactKey, EmbeddedQueue, EventOps, LeaseOutcome, PlannedOp, Queue, RedisOptions, RedisQueue,
};
use followd::rules::Action;
use support::redis::RedisServer;

const CONCURRENCY: usize = 64;
const N: usize = 40_000;
/// Calls of each kind in the one-at-a-time latency comparison.
const LATENCY_SAMPLES: usize = 10_000;

fn event(i: usize) -> EventOps {
    let user = |u: &str| UserId::parse(u).expect("a valid id");
    EventOps {
        event_id: EventId::parse(&format!("bench-{i}")).expect("a valid id"),
        contact: ContactKey {
            location_id: LocationId::parse(&format!("loc-{}", i % 16)).expect("a valid id"),
            contact_id: ContactId::parse(&format!("c-{i}")).expect("a valid id"),
        },
        ops: vec![
            PlannedOp {
                rule: Arc::from("bench"),
                action: Action::Add(user("usr_a")),
                ownership: Default::default(),
                lasts: None,
                unless: None,
            },
            PlannedOp {
                rule: Arc::from("bench"),
                action: Action::Add(user("usr_b")),
                ownership: Default::default(),
                lasts: None,
                unless: None,
            },
        ],
        background: false,
    }
}

/// One event whose only operation is a round robin over five members: `weighted` gives them weights 3, 2, 1,
/// 1, 1 and has one of them away today; otherwise equal weights and nobody away (a plain round robin).
fn round_robin_event(i: usize, weighted: bool) -> EventOps {
    let team: Vec<UserId> = (0..5).map(|m| UserId::parse(&format!("usr_{m}")).expect("a valid id")).collect();
    let mut availability = followd::domain::availability::Availability::default();
    if weighted {
        let today = now_ms() / 86_400_000;
        availability.add(team[4].clone(), (today, today));
    }
    let weights: Vec<u32> = if weighted { vec![3, 2, 1, 1, 1] } else { vec![1; 5] };
    // Caps high enough never to refuse a turn: the bench measures their counting, not a dead letter.
    let caps = if weighted { Caps { per_day: Some(1_000_000), per_week: Some(5_000_000) } } else { Caps::default() };
    let action = Action::RoundRobin(Arc::new(Rotation {
        rule: Arc::from(if weighted { "weighted" } else { "plain" }),
        members: team.into_iter().zip(weights).map(|(user, weight)| Member { user, weight }).collect(),
        availability: Arc::new(availability),
        catch_up: false,
        caps,
        overflow: None,
    }));
    EventOps {
        event_id: EventId::parse(&format!("rr-{weighted}-{i}")).expect("a valid id"),
        contact: ContactKey {
            location_id: LocationId::parse(&format!("loc-{}", i % 16)).expect("a valid id"),
            contact_id: ContactId::parse(&format!("rr-{weighted}-{i}")).expect("a valid id"),
        },
        ops: vec![PlannedOp {
            rule: Arc::from("bench"),
            action,
            ownership: Default::default(),
            lasts: None,
            unless: None,
        }],
        background: false,
    }
}

/// Server-side microseconds per EVALSHA since the last reset, from Redis's own `INFO commandstats`.
async fn server_usec_per_call(conn: &mut redis::aio::ConnectionManager) -> f64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(conn).await.expect("info");
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query_async(conn).await.expect("resetstat");
    info.lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("usec_per_call=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The median and the 99th percentile of `samples`.
fn percentiles(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (at(0.5), at(0.99))
}

/// Runs `n` calls of `f` from `CONCURRENCY` tasks; returns calls per second.
async fn throughput<F, Fut>(n: usize, f: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let f = Arc::new(f);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (f, next) = (Arc::clone(&f), Arc::clone(&next));
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    break;
                }
                f(i).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(run());
}

async fn run() {
    let server = RedisServer::start().await;
    let url = RedisUrl::new(server.url());
    let options = RedisOptions {
        prefix: "bench".into(),
        partitions: 8,
        lease_for: Duration::from_secs(60),
        dedup_ttl: Duration::from_secs(3600),
    };
    let queue: Arc<dyn Queue> = Arc::new(RedisQueue::connect(&url, options).await.expect("connect"));

    let client = redis::Client::open(server.url()).expect("client");
    // The connection kind the queue itself uses for a single Redis, so the baseline shares its client path.
    let mut conn = redis::aio::ConnectionManager::new(client).await.expect("connection");
    server_usec_per_call(&mut conn).await;
    let trivial = Arc::new(redis::Script::new("return 1"));
    let raw = {
        let (conn, trivial) = (conn.clone(), Arc::clone(&trivial));
        throughput(N, move |_| {
            let (mut conn, trivial) = (conn.clone(), Arc::clone(&trivial));
            async move {
                let _: i64 = trivial.invoke_async(&mut conn).await.expect("evalsha");
            }
        })
        .await
    };
    let raw_server = server_usec_per_call(&mut conn).await;

    let enqueue = {
        let queue = Arc::clone(&queue);
        throughput(N, move |i| {
            let queue = Arc::clone(&queue);
            async move {
                queue.enqueue(vec![event(i)], now_ms()).await.expect("enqueue");
            }
        })
        .await
    };
    let enqueue_server = server_usec_per_call(&mut conn).await;

    let lease_ack = {
        let queue = Arc::clone(&queue);
        throughput(N, move |_| {
            let queue = Arc::clone(&queue);
            async move {
                if let LeaseOutcome::Leased(lease) = queue.lease(now_ms()).await.expect("lease") {
                    queue.ack(&lease, &Applied::default(), now_ms()).await.expect("ack");
                }
            }
        })
        .await
    };

    // The round-robin pick inside the enqueue script: plain (equal weights, nobody away) and weighted with one
    // member away, in alternating rounds so the machine's noise falls on both alike.
    let (mut plain_rr, mut weighted_rr) = (0.0, 0.0);
    for round in 0..3 {
        for weighted in [false, true] {
            let queue = Arc::clone(&queue);
            let rate = throughput(N / 4, move |i| {
                let queue = Arc::clone(&queue);
                async move {
                    queue.enqueue(vec![round_robin_event(round * N + i, weighted)], now_ms()).await.expect("enqueue");
                }
            })
            .await;
            if weighted { weighted_rr += rate / 3.0 } else { plain_rr += rate / 3.0 }
        }
    }

    // What one enqueue costs in round trips: one caller, raw and enqueue calls alternating so that the
    // machine's noise falls on both alike, compared by median latency.
    let mut raw_us = Vec::with_capacity(LATENCY_SAMPLES);
    let mut enqueue_us = Vec::with_capacity(LATENCY_SAMPLES);
    {
        let mut conn = conn.clone();
        for i in 0..LATENCY_SAMPLES {
            let started = Instant::now();
            let _: i64 = trivial.invoke_async(&mut conn).await.expect("evalsha");
            raw_us.push(started.elapsed().as_secs_f64() * 1e6);
            let started = Instant::now();
            queue.enqueue(vec![event(N + i)], now_ms()).await.expect("enqueue");
            enqueue_us.push(started.elapsed().as_secs_f64() * 1e6);
        }
    }
    let (raw_p50, raw_p99) = percentiles(&mut raw_us);
    let (enqueue_p50, enqueue_p99) = percentiles(&mut enqueue_us);

    let dir = tempfile::tempdir().expect("a temporary directory");
    let embedded: Arc<dyn Queue> =
        Arc::new(EmbeddedQueue::open(dir.path(), Duration::from_secs(60), Duration::from_secs(3600)).expect("open"));
    let embedded_enqueue = {
        let queue = Arc::clone(&embedded);
        throughput(N / 10, move |i| {
            let queue = Arc::clone(&queue);
            async move {
                queue.enqueue(vec![event(i)], now_ms()).await.expect("enqueue");
            }
        })
        .await
    };

    println!("queue throughput, {N} calls at {CONCURRENCY} concurrent callers, one process, local redis-server");
    println!("  raw EVALSHA (baseline)   {raw:>10.0} /s   server {raw_server:.1} us/call");
    println!(
        "  redis enqueue            {enqueue:>10.0} /s   cost {:.2}x a raw round trip, server {enqueue_server:.1} us/call",
        raw / enqueue
    );
    println!("  redis lease+ack          {lease_ack:>10.0} /s   cost {:.2}x a raw round trip", raw / lease_ack);
    println!("  redis enqueue, plain round robin of 5            {plain_rr:>10.0} /s");
    println!(
        "  redis enqueue, weighted round robin, one away    {weighted_rr:>10.0} /s   cost {:.2}x the plain one",
        plain_rr / weighted_rr
    );
    println!(
        "  embedded enqueue (fsync) {embedded_enqueue:>10.0} /s   cost {:.2}x a raw redis round trip",
        raw / embedded_enqueue
    );
    println!("one call at a time, {LATENCY_SAMPLES} of each, alternating (median / p99 latency)");
    println!("  raw EVALSHA round trip   {raw_p50:>8.1} us / {raw_p99:>8.1} us");
    println!(
        "  redis enqueue            {enqueue_p50:>8.1} us / {enqueue_p99:>8.1} us   {:.2}x a raw round trip (median)",
        enqueue_p50 / raw_p50
    );
}
