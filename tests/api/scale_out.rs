//! Many processes on one Redis: receivers and workers apart, crashes, a Redis restart and an outage.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::app::{TestApp, tag_event};
use crate::support::process::{Followd, post, write_config};
use crate::support::redis::RedisServer;
use crate::support::upstream::FakeUpstream;
use crate::support::{eventually, free_port};

const WAIT: Duration = Duration::from_secs(30);

/// A small deterministic generator, so a failing sequence can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

#[tokio::test]
async fn one_receiver_and_two_workers_deliver_every_contact_in_order_without_overlap() {
    let redis = RedisServer::start().await;
    let upstream = FakeUpstream::start().await;
    upstream.set_limit(None);
    upstream.set_latency(Duration::from_millis(5));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, Some(&redis.url()));
    let receiver = Followd::start(&config, free_port(), &["--role", "receiver"]).await;
    let _w1 = Followd::start(&config, free_port(), &["--role", "worker"]).await;
    let _w2 = Followd::start(&config, free_port(), &["--role", "worker"]).await;

    let mut rng = Lcg(7);
    let mut last: BTreeMap<String, bool> = BTreeMap::new();
    for i in 0..200 {
        let contact = format!("c-{}", rng.next() % 20);
        let added = rng.next().is_multiple_of(2);
        let kind = if added { "tag_added" } else { "tag_removed" };
        assert_eq!(post(&receiver.addr, &tag_event(&format!("e{i}"), kind, &contact, "vip")).await.status(), 202);
        last.insert(contact, added);
    }
    for (contact, added) in &last {
        let want: &[&str] = if *added { &["usr_alice", "usr_bob"] } else { &[] };
        assert!(
            upstream.wait_for_followers(contact, want, WAIT).await,
            "{contact}: want {want:?}, have {:?}",
            upstream.followers_of(contact)
        );
    }
    assert_eq!(upstream.overlaps(), 0, "two calls for one contact were in flight at once");
}

#[tokio::test]
async fn a_receiver_s_status_page_shows_what_a_separate_worker_delivered() {
    let redis = RedisServer::start().await;
    let upstream = FakeUpstream::start().await;
    upstream.fail_contact("c-refused", 422, 1);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, Some(&redis.url()));
    let receiver = Followd::start(&config, free_port(), &["--role", "receiver"]).await;
    let _worker = Followd::start(&config, free_port(), &["--role", "worker"]).await;

    assert_eq!(post(&receiver.addr, &tag_event("e-ok", "tag_added", "c-ok", "vip")).await.status(), 202);
    assert_eq!(post(&receiver.addr, &tag_event("e-refused", "tag_added", "c-refused", "vip")).await.status(), 202);
    assert!(upstream.wait_for_followers("c-ok", &["usr_alice", "usr_bob"], WAIT).await);
    // The receiver recorded the decisions; only the worker knows what became of them.
    let page = format!("{}/", receiver.addr);
    let shows_both = eventually(WAIT, || async {
        let html = reqwest::get(&page).await.unwrap().text().await.unwrap();
        let row = |event: &str| html.split("<tr>").find(|row| row.contains(event)).unwrap_or_default().to_owned();
        row("e-ok").contains("delivered") && row("e-refused").contains("dead-lettered")
    })
    .await;
    assert!(shows_both, "{}", reqwest::get(&page).await.unwrap().text().await.unwrap());
}

#[tokio::test]
async fn a_worker_killed_while_holding_leases_is_replaced_and_the_operations_arrive_in_order() {
    let redis = RedisServer::start().await;
    let upstream = FakeUpstream::start().await;
    upstream.set_latency(Duration::from_secs(60));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, Some(&redis.url()));
    let receiver = Followd::start(&config, free_port(), &["--role", "receiver"]).await;
    let doomed = Followd::start(&config, free_port(), &["--role", "worker"]).await;
    assert_eq!(post(&receiver.addr, &tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(eventually(WAIT, || async { upstream.in_flight() > 0 }).await, "the worker never called");
    // While the lease is held, more events arrive for the contact: removed, then added again.
    assert_eq!(post(&receiver.addr, &tag_event("e2", "tag_removed", "c-1", "vip")).await.status(), 202);
    assert_eq!(post(&receiver.addr, &tag_event("e3", "tag_added", "c-1", "vip")).await.status(), 202);
    assert_eq!(post(&receiver.addr, &tag_event("e4", "tag_added", "c-2", "vip")).await.status(), 202);
    assert_eq!(post(&receiver.addr, &tag_event("e5", "tag_removed", "c-2", "vip")).await.status(), 202);
    doomed.kill().await;
    upstream.set_latency(Duration::ZERO);

    let _heir = Followd::start(&config, free_port(), &["--role", "worker"]).await;
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    assert!(upstream.wait_for_followers("c-2", &[], WAIT).await);
    // c-2's last word was a removal: its final call must be the DELETE.
    assert!(
        eventually(WAIT, || async {
            upstream.calls_for("c-2").last().is_some_and(|c| c.method == "DELETE" && c.status == 200)
        })
        .await
    );
}

#[tokio::test]
async fn every_acknowledged_webhook_survives_a_redis_restart_with_aof() {
    let mut redis = RedisServer::start_persistent().await;
    let upstream = FakeUpstream::start().await;
    upstream.set_limit(None);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, Some(&redis.url()));
    let receiver = Followd::start(&config, free_port(), &["--role", "receiver"]).await;
    for i in 0..50 {
        let contact = format!("c-{i}");
        assert_eq!(
            post(&receiver.addr, &tag_event(&format!("e{i}"), "tag_added", &contact, "vip")).await.status(),
            202
        );
    }
    redis.stop();
    redis.restart().await;
    // The receiver reconnects by itself.
    let accepted = eventually(WAIT, || async {
        post(&receiver.addr, &tag_event("after", "tag_added", "c-after", "vip")).await.status() == 202
    })
    .await;
    assert!(accepted, "the receiver did not recover after Redis came back");
    let _worker = Followd::start(&config, free_port(), &["--role", "worker"]).await;
    for i in 0..50 {
        assert!(upstream.wait_for_followers(&format!("c-{i}"), &["usr_alice", "usr_bob"], WAIT).await, "c-{i} lost");
    }
    assert!(upstream.wait_for_followers("c-after", &["usr_alice", "usr_bob"], WAIT).await);
}

#[tokio::test]
async fn without_a_spool_while_redis_is_down_senders_are_told_to_retry_and_everything_recovers_when_it_returns() {
    let mut redis = RedisServer::start().await;
    let config = format!("redis_url = \"{}\"\n[spool]\nmax_bytes = 0", redis.url());
    let app = TestApp::builder().config(&config).spawn().await;
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);

    redis.stop();
    let started = std::time::Instant::now();
    let response = app.post_signed(&tag_event("e2", "tag_removed", "c-1", "vip")).await;
    assert_eq!(response.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(6), "answered after {:?}", started.elapsed());
    assert_eq!(response.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("30"));
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 503);
    assert!(ready.text().await.unwrap().contains("queue"));

    redis.restart().await;
    assert!(eventually(WAIT, || async { app.get("/readyz").await.status() == 200 }).await);
    let accepted = eventually(WAIT, || async {
        app.post_signed(&tag_event("e3", "tag_removed", "c-1", "vip")).await.status() == 202
    })
    .await;
    assert!(accepted);
    assert!(app.upstream.wait_for_followers("c-1", &[], WAIT).await);
}

#[tokio::test]
async fn a_worker_keeps_its_lease_through_a_redis_restart_and_the_contact_goes_on_at_once() {
    let mut redis = RedisServer::start_persistent().await;
    let upstream = FakeUpstream::start().await;
    upstream.set_latency(Duration::from_secs(2));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, Some(&redis.url()));
    // A lease far longer than this test waits: a worker that gave its lease up would stall the contact.
    let text = std::fs::read_to_string(&config).unwrap().replace("lease = \"3s\"", "lease = \"10m\"");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("followd.log");
    let followd = Followd::start_with(&config, free_port(), &[], &[], Some(&log)).await;
    assert_eq!(post(&followd.addr, &tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(eventually(WAIT, || async { upstream.in_flight() > 0 }).await);
    // Redis goes away while the call is at the CRM, and is back only once the worker's acknowledgement has met
    // a store that does not answer.
    redis.stop();
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    upstream.set_latency(Duration::ZERO);
    let failed_ack =
        || async { std::fs::read_to_string(&log).is_ok_and(|l| l.contains("trying again while the lease lasts")) };
    assert!(eventually(WAIT, failed_ack).await, "the worker did not keep trying its acknowledgement");
    redis.restart().await;
    // The next change of the contact goes out within seconds: the first was acknowledged once Redis answered.
    let restarted = std::time::Instant::now();
    assert_eq!(post(&followd.addr, &tag_event("e2", "tag_removed", "c-1", "vip")).await.status(), 202);
    assert!(upstream.wait_for_followers("c-1", &[], Duration::from_secs(10)).await, "the contact stalled");
    assert!(restarted.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn two_receivers_picking_concurrently_keep_a_weighted_round_robin_s_shares() {
    let redis = RedisServer::start().await;
    let upstream = FakeUpstream::start().await;
    upstream.set_limit(None);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, Some(&redis.url()));
    let rules = "[users]\nalice = \"usr_alice\"\nbob = \"usr_bob\"\nteam = [\"alice\", \"bob\"]\n\
                 [[rule]]\nname = \"shared\"\nwhen = { event = \"tag_added\", tag = \"lead\" }\n\
                 then = { round_robin = \"team\", weights = { alice = 2 }, max_per_day = 1000 }\n";
    std::fs::write(dir.path().join("rules/rules.toml"), rules).unwrap();
    // Each receiver keeps its own spool, so each has its own data directory.
    let receiver = |name: &str| {
        let data = dir.path().join(name).to_str().unwrap().to_owned();
        let config = config.clone();
        async move {
            let env = [("FOLLOWD_DATA_DIR", data.as_str())];
            Followd::start_with(&config, free_port(), &["--role", "receiver"], &env, None).await
        }
    };
    let receivers = [receiver("r1").await, receiver("r2").await];
    let _worker = Followd::start(&config, free_port(), &["--role", "worker"]).await;

    use futures_util::StreamExt;
    // 90 contacts, 45 through each receiver, 16 requests in flight at a time: the picks race in Redis.
    let sends = (0..90).map(|i| {
        let addr = receivers[i % 2].addr.clone();
        async move { post(&addr, &tag_event(&format!("e{i}"), "tag_added", &format!("c-{i}"), "lead")).await.status() }
    });
    let statuses: Vec<_> = futures_util::stream::iter(sends).buffer_unordered(16).collect().await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    let mut picked: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..90 {
        let contact = format!("c-{i}");
        let one = eventually(WAIT, || {
            let upstream = &upstream;
            let contact = contact.clone();
            async move { upstream.followers_of(&contact).len() == 1 }
        })
        .await;
        assert!(one, "{contact}: {:?}", upstream.followers_of(&contact));
        *picked.entry(upstream.followers_of(&contact).into_iter().next().unwrap()).or_default() += 1;
    }
    // 90 picks at 2:1 are exactly 60 and 30: a pick counted twice, or lost, would show.
    assert_eq!(picked, BTreeMap::from([("usr_alice".to_owned(), 60), ("usr_bob".to_owned(), 30)]));
}
