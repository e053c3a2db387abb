//! The receiver's spool: with Redis stopped for real, webhooks are still answered 202, kept on disk, and
//! reach the queue in order once Redis is back; across a SIGKILL too; a full spool answers 429/503.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::support::app::{TestApp, tag_event};
use crate::support::process::{Followd, post, write_config};
use crate::support::redis::RedisServer;
use crate::support::upstream::FakeUpstream;
use crate::support::{eventually, free_port};

const WAIT: Duration = Duration::from_secs(30);

async fn readyz(app: &TestApp) -> (u16, Value) {
    let response = app.get("/readyz").await;
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn while_redis_is_down_webhooks_are_spooled_and_delivered_in_order_per_contact_once_it_is_back() {
    let mut redis = RedisServer::start().await;
    let app = TestApp::builder().config(&format!("redis_url = \"{}\"", redis.url())).spawn().await;
    assert_eq!(app.post_signed(&tag_event("before", "tag_added", "c-0", "vip")).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-0", &["usr_alice", "usr_bob"], WAIT).await);
    assert_eq!(readyz(&app).await.1["queue"], "ok");

    redis.stop();
    // Each contact gets a run of adds and removes; its last one decides where it must end up.
    let mut last: BTreeMap<String, bool> = BTreeMap::new();
    for i in 0..60u32 {
        let contact = format!("c-{}", i % 6);
        let added = (i / 6 + i % 6) % 3 != 1;
        let kind = if added { "tag_added" } else { "tag_removed" };
        let response = app.post_signed(&tag_event(&format!("e{i}"), kind, &contact, "vip")).await;
        assert_eq!(response.status(), 202, "webhook {i} during the outage");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["spooled"], true);
        assert_eq!(body["event_ids"], serde_json::json!([format!("e{i}")]));
        last.insert(contact, added);
    }
    let (status, ready) = readyz(&app).await;
    assert_eq!((status, ready["queue"].as_str()), (200, Some("spooling")), "the receiver stays in the balancer");

    redis.restart().await;
    for (contact, added) in &last {
        let expected: &[&str] = if *added { &["usr_alice", "usr_bob"] } else { &[] };
        assert!(
            app.upstream.wait_for_followers(contact, expected, WAIT).await,
            "{contact}: {:?}",
            app.upstream.followers_of(contact)
        );
        let calls = app.upstream.calls_for(contact);
        let method = if *added { "POST" } else { "DELETE" };
        assert!(calls.last().is_none_or(|c| c.method == method), "{contact} ended on {:?}", calls.last());
    }
    assert!(eventually(WAIT, || async { readyz(&app).await.1["queue"] == "ok" }).await, "the spool drained");
}

#[tokio::test]
async fn an_event_spooled_twice_or_already_in_redis_is_one_event() {
    // With AOF, as the README says to run Redis: what it knew before the outage is still known after it.
    let mut redis = RedisServer::start_persistent().await;
    let app = TestApp::builder().config(&format!("redis_url = \"{}\"", redis.url())).spawn().await;
    let first = tag_event("e1", "tag_added", "c-1", "vip");
    assert_eq!(app.post_signed(&first).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);

    redis.stop();
    // A sender's retry of an event Redis already has, and a new event delivered twice during the outage.
    assert_eq!(app.post_signed(&first).await.status(), 202);
    let second = tag_event("e2", "tag_added", "c-2", "vip");
    assert_eq!(app.post_signed(&second).await.status(), 202);
    assert_eq!(app.post_signed(&second).await.status(), 202);
    redis.restart().await;

    assert!(app.upstream.wait_for_followers("c-2", &["usr_alice", "usr_bob"], WAIT).await);
    assert!(eventually(WAIT, || async { readyz(&app).await.1["queue"] == "ok" }).await);
    app.wait_until_idle().await;
    assert_eq!(app.upstream.calls_for("c-1").len(), 1, "e1 again is a duplicate: {:?}", app.upstream.calls_for("c-1"));
    assert_eq!(app.upstream.calls_for("c-2").len(), 1, "e2 twice is one event: {:?}", app.upstream.calls_for("c-2"));
}

#[tokio::test]
async fn a_receiver_killed_with_a_non_empty_spool_forwards_it_after_its_restart() {
    let mut redis = RedisServer::start().await;
    let upstream = FakeUpstream::start().await;
    upstream.set_limit(None);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, Some(&redis.url()));
    let receiver = Followd::start(&config, free_port(), &["--role", "receiver"]).await;
    let _worker = Followd::start(&config, free_port(), &["--role", "worker"]).await;
    redis.stop();
    for i in 0..20 {
        let body = tag_event(&format!("e{i}"), "tag_added", &format!("c-{i}"), "vip");
        assert_eq!(post(&receiver.addr, &body).await.status(), 202, "webhook {i}");
    }
    let metrics =
        |addr: String| async move { reqwest::get(format!("{addr}/metrics")).await.unwrap().text().await.unwrap() };
    assert!(metrics(receiver.addr.clone()).await.contains("followd_spool_events 20"));
    receiver.kill().await;
    redis.restart().await;
    assert!(upstream.calls().is_empty(), "nothing reached the CRM before the restart");

    let receiver = Followd::start(&config, free_port(), &["--role", "receiver"]).await;
    for i in 0..20 {
        let contact = format!("c-{i}");
        assert!(upstream.wait_for_followers(&contact, &["usr_alice", "usr_bob"], WAIT).await, "{contact} lost");
    }
    let text = metrics(receiver.addr.clone()).await;
    assert!(text.contains("followd_spool_forwarded_total 20") && text.contains("followd_spool_events 0"), "{text}");
}

#[tokio::test]
async fn a_full_spool_tells_the_sender_to_retry_and_keeps_what_it_took() {
    let mut redis = RedisServer::start().await;
    // Room for two of these webhooks, not three.
    let config = format!("redis_url = \"{}\"\n[spool]\nmax_bytes = 400", redis.url());
    let app = TestApp::builder().config(&config).spawn().await;
    redis.stop();
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert_eq!(app.post_signed(&tag_event("e2", "tag_added", "c-2", "vip")).await.status(), 202);
    let refused = app.post_signed(&tag_event("e3", "tag_added", "c-3", "vip")).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("30"));

    redis.restart().await;
    assert!(app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    assert!(app.upstream.wait_for_followers("c-2", &["usr_alice", "usr_bob"], WAIT).await);
    // The sender's retry of the refused one goes through once Redis is back.
    let retried = eventually(WAIT, || async {
        app.post_signed(&tag_event("e3", "tag_added", "c-3", "vip")).await.status() == 202
    })
    .await;
    assert!(retried);
    assert!(app.upstream.wait_for_followers("c-3", &["usr_alice", "usr_bob"], WAIT).await);
}

#[tokio::test]
async fn a_receiver_started_while_redis_is_down_spools_from_its_first_webhook_and_forwards_once_redis_answers() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    redis.stop();
    let app = TestApp::builder().config(&format!("redis_url = \"{url}\"")).spawn().await;
    let (status, ready) = readyz(&app).await;
    assert_eq!((status, ready["queue"].as_str()), (200, Some("spooling")), "up and in the balancer");
    let response = app.post_signed(&tag_event("early", "tag_added", "c-1", "vip")).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap()["spooled"], true);
    redis.restart().await;
    assert!(
        app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await,
        "{:?}",
        app.upstream.followers_of("c-1")
    );
    assert!(eventually(WAIT, || async { readyz(&app).await.1["queue"] == "ok" }).await, "connected and drained");
}
