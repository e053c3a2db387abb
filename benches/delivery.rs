//! Delivery throughput and the rate limiter's cost, against baselines measured in the same run.
//!
//! `cargo bench --bench delivery` prints:
//! - one process (the real `Application`, Redis queue, 4 workers) delivering to a fast fake CRM with limits off:
//!   upstream calls per second on this machine;
//! - the limiter's cost per call (`Queue::throttle`, one Lua script on Redis) as a ratio to a raw `EVALSHA`
//!   round trip of a trivial script, both sequential on one connection.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use followd::config::RedisUrl;
use followd::domain::clock::now_ms;
use followd::domain::rate::Limits;
use followd::event::LocationId;
use followd::queue::{LocationState, RedisOptions, RedisQueue};
use serde_json::json;
use support::app::TestApp;
use support::redis::RedisServer;
use support::upstream::FakeUpstream;

const EVENTS: usize = 4000;
const ROUND_TRIPS: usize = 20_000;

/// Seconds per sequential EVALSHA of a trivial script.
async fn raw_round_trip(script: &redis::Script, conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let started = Instant::now();
    for _ in 0..ROUND_TRIPS {
        let _: i64 = script.invoke_async(conn).await.expect("evalsha");
    }
    started.elapsed().as_secs_f64() / ROUND_TRIPS as f64
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(run());
}

async fn run() {
    let redis = RedisServer::start().await;

    // Delivery throughput: enqueue EVENTS contacts, then time until the fake CRM has every call.
    let upstream = Arc::new(FakeUpstream::start().await);
    upstream.set_limit(None);
    let config = format!(
        "redis_url = \"{}\"\n[rate_limit]\nper_location = \"1000000/1s\"\ndaily_per_location = 1000000000",
        redis.url()
    );
    let app = TestApp::builder().config(&config).spawn_with(Arc::clone(&upstream)).await;
    let batch: Vec<_> = (0..EVENTS)
        .map(|i| {
            json!({"id": format!("b{i}"), "type": "tag_added", "location_id": format!("loc-{}", i % 50),
                        "contact_id": format!("c-{i}"), "tag": "vip"})
        })
        .collect();
    let started = Instant::now();
    for chunk in batch.chunks(500) {
        let response = app.post_signed(json!(chunk).to_string().as_bytes()).await;
        assert_eq!(response.status(), 202);
    }
    assert!(upstream.wait_for_calls(EVENTS, Duration::from_secs(300)).await, "not every call arrived");
    let delivery = EVENTS as f64 / started.elapsed().as_secs_f64();

    // The limiter versus a raw round trip, sequential.
    let url = RedisUrl::new(redis.url());
    let options = RedisOptions {
        prefix: "bench".into(),
        partitions: 8,
        lease_for: Duration::from_secs(60),
        dedup_ttl: Duration::from_secs(60),
    };
    let queue = RedisQueue::connect(&url, options).await.expect("connect");
    let client = redis::Client::open(redis.url()).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("connection");
    let trivial = redis::Script::new("return 1");
    // Let the application's last acknowledgements finish, so they do not land in either measurement.
    app.wait_until_idle().await;
    let raw_before = raw_round_trip(&trivial, &mut conn).await;
    let limits = Limits::strict(0, u64::MAX / 2);
    let location = LocationId::parse("loc-bench").expect("an id");
    let started = Instant::now();
    for _ in 0..ROUND_TRIPS {
        queue.throttle(&location, limits, 1, now_ms()).await.expect("throttle");
    }
    let throttle = started.elapsed().as_secs_f64() / ROUND_TRIPS as f64;
    // The baseline is measured before and after, and averaged: the machine is shared and drifts.
    let raw = (raw_before + raw_round_trip(&trivial, &mut conn).await) / 2.0;

    println!("delivery: one process, Redis queue, 4 workers, fast fake CRM, limits off");
    println!("  {EVENTS} contacts delivered at {delivery:.0} upstream calls/s");
    println!("rate limiter, {ROUND_TRIPS} sequential calls on one connection");
    println!("  raw EVALSHA round trip   {:>8.1} us", raw * 1e6);
    println!("  throttle (limiter)       {:>8.1} us   {:.2}x a raw round trip", throttle * 1e6, throttle / raw);
    app.stop().await;
}
