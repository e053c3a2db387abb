//! Nothing acknowledged is lost: across a restart, a SIGKILL, and a second process on the same data_dir.

use std::sync::Arc;
use std::time::Duration;

use followd::Role;

use crate::support::app::{TestApp, tag_event};
use crate::support::free_port;
use crate::support::process::{Followd, post, write_config};
use crate::support::upstream::FakeUpstream;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_webhook_acknowledged_before_a_restart_is_delivered_after_it() {
    let upstream = Arc::new(FakeUpstream::start().await);
    let data = tempfile::tempdir().unwrap();
    // A receiver only: it acknowledges and queues, and delivers nothing.
    let receiver =
        TestApp::builder().role(Role::Receiver).data_dir(data.path()).spawn_with(Arc::clone(&upstream)).await;
    assert_eq!(receiver.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    receiver.stop().await;
    assert!(upstream.calls().is_empty());

    let app = TestApp::builder().data_dir(data.path()).spawn_with(Arc::clone(&upstream)).await;
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    app.wait_until_idle().await;
}

#[tokio::test]
async fn the_round_robin_position_survives_a_restart() {
    let upstream = Arc::new(FakeUpstream::start().await);
    let data = tempfile::tempdir().unwrap();
    let lead = |id: &str, contact: &str| {
        serde_json::json!({"id": id, "type": "contact_created", "location_id": "loc-1", "contact_id": contact,
                           "source": "facebook ads"})
        .to_string()
        .into_bytes()
    };
    let first = TestApp::builder().data_dir(data.path()).spawn_with(Arc::clone(&upstream)).await;
    assert_eq!(first.post_signed(&lead("l1", "c-1")).await.status(), 202);
    first.wait_until_idle().await;
    first.stop().await;
    let second = TestApp::builder().data_dir(data.path()).spawn_with(Arc::clone(&upstream)).await;
    assert_eq!(second.post_signed(&lead("l2", "c-2")).await.status(), 202);
    assert!(upstream.wait_for_followers("c-2", &["usr_s2"], WAIT).await, "{:?}", upstream.followers_of("c-2"));
}

#[tokio::test]
async fn a_webhook_acknowledged_before_a_sigkill_is_delivered_after_the_restart() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, None);
    let receiver = Followd::start(&config, free_port(), &["--role", "receiver"]).await;
    assert_eq!(post(&receiver.addr, &tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    receiver.kill().await;

    let _worker = Followd::start(&config, free_port(), &[]).await;
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
}

/// Concurrent webhooks on the embedded store meet in batches that the journal makes durable (see
/// `queue/embedded/journal.rs`); a SIGKILL right after the last 202 leaves them in the journal only, and the
/// restarted process applies them again: every one is delivered, none twice.
#[tokio::test]
async fn webhooks_acknowledged_together_just_before_a_sigkill_are_all_delivered_after_the_restart() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, None);
    let receiver = Followd::start(&config, free_port(), &["--role", "receiver"]).await;
    let contacts: Vec<String> = (0..30).map(|i| format!("c-{i}")).collect();
    let posts = contacts.iter().map(|c| {
        let body = tag_event(&format!("e-{c}"), "tag_added", c, "vip");
        let addr = receiver.addr.clone();
        async move { post(&addr, &body).await.status() }
    });
    let statuses = futures_util::future::join_all(posts).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    receiver.kill().await;

    let _worker = Followd::start(&config, free_port(), &[]).await;
    for contact in &contacts {
        assert!(upstream.wait_for_followers(contact, &["usr_alice", "usr_bob"], WAIT).await, "{contact}");
    }
    let adds = upstream.calls().iter().filter(|call| call.method == "POST").count();
    assert_eq!(adds, contacts.len(), "one add call per contact: {:?}", upstream.calls());
}

#[tokio::test]
async fn a_worker_killed_mid_delivery_leaves_a_lease_that_expires_and_is_delivered_again() {
    let upstream = FakeUpstream::start().await;
    upstream.set_latency(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, None);
    let first = Followd::start(&config, free_port(), &[]).await;
    assert_eq!(post(&first.addr, &tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    // The call is in flight at the fake (which answers slowly): kill the worker holding the lease.
    assert!(crate::support::eventually(WAIT, || async { upstream.in_flight() > 0 }).await);
    first.kill().await;
    upstream.set_latency(Duration::ZERO);

    let _second = Followd::start(&config, free_port(), &[]).await;
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
}

#[tokio::test]
async fn on_the_embedded_store_a_restarted_process_delivers_its_predecessor_s_leases_at_once() {
    let upstream = FakeUpstream::start().await;
    upstream.set_latency(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, None);
    // A lease far longer than this test waits: only releasing it at start can deliver in time.
    let text = std::fs::read_to_string(&config).unwrap().replace("lease = \"3s\"", "lease = \"10m\"");
    std::fs::write(&config, text).unwrap();
    let first = Followd::start(&config, free_port(), &[]).await;
    assert_eq!(post(&first.addr, &tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(crate::support::eventually(WAIT, || async { upstream.in_flight() > 0 }).await);
    first.kill().await;
    upstream.set_latency(Duration::ZERO);

    let restarted = std::time::Instant::now();
    let _second = Followd::start(&config, free_port(), &[]).await;
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], Duration::from_secs(10)).await);
    assert!(restarted.elapsed() < Duration::from_secs(10), "delivered {:?} after the restart", restarted.elapsed());
}

#[tokio::test]
async fn a_second_process_on_the_same_data_dir_exits_at_once_naming_the_folder() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, None);
    let _first = Followd::start(&config, free_port(), &[]).await;
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_followd"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("FOLLOWD_LISTEN", format!("127.0.0.1:{}", free_port()))
        .output();
    let output = tokio::time::timeout(WAIT, second).await.expect("exits at once").unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&dir.path().join("data").display().to_string()), "{stderr}");
    assert!(stderr.contains("in use by another followd process"), "{stderr}");
}

#[tokio::test]
async fn sigterm_stops_the_process_cleanly_within_the_grace_period() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, None);
    let process = Followd::start(&config, free_port(), &[]).await;
    assert_eq!(post(&process.addr, &tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(upstream.wait_for_calls(1, WAIT).await);
    let started = std::time::Instant::now();
    let status = process.terminate().await;
    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
}

/// A rule with `for`: alice follows for 4 s after the tag, then followd removes her, across a restart; bob, a
/// person's follower the rule also names, stays.
async fn a_timed_follower_is_removed_after_its_time_across_a_restart(redis_url: Option<&str>) {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, redis_url);
    let rules = "[users]\nalice = \"usr_alice\"\nbob = \"usr_bob\"\n\
                 [[rule]]\nname = \"for-a-while\"\nwhen = { event = \"tag_added\", tag = \"hot\" }\n\
                 then = { add = [\"alice\", \"bob\"], for = \"4s\" }\n";
    std::fs::write(dir.path().join("rules/rules.toml"), rules).unwrap();
    upstream.set_followers("c-1", &["usr_bob"]);
    let first = Followd::start(&config, free_port(), &[]).await;
    let sent = std::time::Instant::now();
    assert_eq!(post(&first.addr, &tag_event("e1", "tag_added", "c-1", "hot")).await.status(), 202);
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    // A restart (SIGTERM: the delivery is acknowledged first, so followd knows it added alice).
    assert!(first.terminate().await.success());
    let _second = Followd::start(&config, free_port(), &[]).await;
    assert!(
        upstream.wait_for_followers("c-1", &["usr_bob"], WAIT).await,
        "alice is removed after 4 s; bob, whom a person added, stays: {:?}",
        upstream.followers_of("c-1")
    );
    assert!(sent.elapsed() >= Duration::from_secs(4), "removed before its time: {:?}", sent.elapsed());
}

#[tokio::test]
async fn a_timed_follower_is_removed_after_its_time_across_a_restart_on_the_embedded_store() {
    a_timed_follower_is_removed_after_its_time_across_a_restart(None).await;
}

#[tokio::test]
async fn a_timed_follower_is_removed_after_its_time_across_a_restart_on_redis() {
    let redis = crate::support::redis::RedisServer::start().await;
    a_timed_follower_is_removed_after_its_time_across_a_restart(Some(&redis.url())).await;
}
