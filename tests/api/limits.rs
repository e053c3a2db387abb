//! Delivery under the CRM's limits: the shared rate budget, pauses, and where each upstream answer ends.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::app::{TestApp, tag_event};
use crate::support::eventually;
use crate::support::process::{Followd, post, write_config};
use crate::support::redis::RedisServer;
use crate::support::upstream::FakeUpstream;

const WAIT: Duration = Duration::from_secs(30);

fn at_location(id: &str, location: &str, contact: &str) -> Vec<u8> {
    json!({"id": id, "type": "tag_added", "location_id": location, "contact_id": contact, "tag": "vip"})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn three_hundred_events_under_ten_per_second_never_exceed_the_limit_and_lose_nothing() {
    let app = TestApp::builder().config("[rate_limit]\nper_location = \"10/1s\"").spawn().await;
    app.upstream.set_limit(Some((10, Duration::from_secs(1))));
    let batch: Vec<Value> = (0..300)
        .map(|i| {
            json!({"id": format!("e{i}"), "type": "tag_added", "location_id": "loc-1",
                        "contact_id": format!("c-{i}"), "tag": "vip"})
        })
        .collect();
    assert_eq!(app.post_signed(json!(batch).to_string().as_bytes()).await.status(), 202);
    let delivered = eventually(Duration::from_secs(60), || async {
        app.upstream.calls().iter().filter(|c| c.status == 201).count() >= 300
    })
    .await;
    assert!(delivered, "only {} delivered", app.upstream.calls().len());
    let (busiest, throttled) = app.upstream.busiest_window(Duration::from_secs(1));
    assert!(busiest <= 10, "{busiest} calls in one second");
    assert_eq!(throttled, 0, "the CRM had to answer 429");
    for i in [0, 150, 299] {
        assert_eq!(app.upstream.followers_of(&format!("c-{i}")).len(), 2);
    }
}

#[tokio::test]
async fn two_worker_processes_share_one_rate_budget() {
    let redis = RedisServer::start().await;
    let upstream = FakeUpstream::start().await;
    upstream.set_limit(Some((5, Duration::from_secs(1))));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, Some(&redis.url()));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[upstream]", "[rate_limit]\nper_location = \"5/1s\"\n[upstream]");
    std::fs::write(&config, text).unwrap();
    let receiver = Followd::start(&config, crate::support::free_port(), &["--role", "receiver"]).await;
    let _w1 = Followd::start(&config, crate::support::free_port(), &["--role", "worker"]).await;
    let _w2 = Followd::start(&config, crate::support::free_port(), &["--role", "worker"]).await;
    for i in 0..30 {
        assert_eq!(
            post(&receiver.addr, &tag_event(&format!("e{i}"), "tag_added", &format!("c-{i}"), "vip")).await.status(),
            202
        );
    }
    assert!(eventually(WAIT, || async { upstream.calls().iter().filter(|c| c.status == 201).count() >= 30 }).await);
    let (busiest, throttled) = upstream.busiest_window(Duration::from_secs(1));
    assert!(busiest <= 5, "{busiest} calls in one second across two workers");
    assert_eq!(throttled, 0);
}

#[tokio::test]
async fn a_location_paused_by_429_does_not_delay_another() {
    let app = TestApp::builder().config("[rate_limit]\nper_location = \"20/1s\"").spawn().await;
    app.upstream.set_limit(None);
    app.upstream.set_retry_after(60);
    // Alone: location B's 20 events.
    let started = Instant::now();
    for i in 0..20 {
        assert_eq!(
            app.post_signed(&at_location(&format!("alone-{i}"), "loc-b", &format!("b-{i}"))).await.status(),
            202
        );
    }
    assert!(
        eventually(WAIT, || async { (0..20).all(|i| app.upstream.followers_of(&format!("b-{i}")).len() == 2) }).await
    );
    let alone = started.elapsed();

    // Location A is throttled by the CRM and paused for a minute; B goes on.
    app.upstream.fail_contact("a-0", 429, 1);
    assert_eq!(app.post_signed(&at_location("a0", "loc-a", "a-0")).await.status(), 202);
    assert!(eventually(WAIT, || async { app.upstream.calls_for("a-0").iter().any(|c| c.status == 429) }).await);
    for i in 1..10 {
        assert_eq!(app.post_signed(&at_location(&format!("a{i}"), "loc-a", &format!("a-{i}"))).await.status(), 202);
    }
    let started = Instant::now();
    for i in 0..20 {
        assert_eq!(
            app.post_signed(&at_location(&format!("with-{i}"), "loc-b", &format!("b2-{i}"))).await.status(),
            202
        );
    }
    assert!(
        eventually(WAIT, || async { (0..20).all(|i| app.upstream.followers_of(&format!("b2-{i}")).len() == 2) }).await
    );
    let with_pause = started.elapsed();
    assert!(
        with_pause <= alone.mul_f64(1.2) + Duration::from_millis(500),
        "B took {with_pause:?} beside a paused A, {alone:?} alone"
    );
    // A's events wait for the pause: none of them was called after the 429.
    assert!((1..10).all(|i| app.upstream.calls_for(&format!("a-{i}")).is_empty()));
    assert!(app.queue.stats().await.unwrap().pending >= 10);
}

#[tokio::test]
async fn a_422_dead_letters_the_operations_with_the_crm_s_reason_and_a_replay_delivers_them() {
    let app = TestApp::spawn().await;
    app.upstream.fail_contact("c-1", 422, 1);
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(eventually(WAIT, || async { app.queue.stats().await.is_ok_and(|s| s.dead == 1 && s.pending == 0) }).await);
    let letters = app.queue.dead_letters().await.unwrap();
    assert_eq!(letters[0].status, Some(422));
    assert!(letters[0].reason.contains("followers must be an array"), "{}", letters[0].reason);
    assert_eq!(app.upstream.calls_for("c-1").len(), 1, "a 422 is not retried");
    let replayed = app.queue.replay(&followd::queue::Selection::All, followd::domain::clock::now_ms()).await.unwrap();
    assert_eq!(replayed, 1);
    // The worker is woken by enqueues; a replay from another process is found by its next poll.
    assert!(app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
}

#[tokio::test]
async fn a_404_is_dead_lettered_not_retried() {
    let app = TestApp::spawn().await;
    app.upstream.fail_contact("gone", 404, 1);
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "gone", "vip")).await.status(), 202);
    assert!(eventually(WAIT, || async { app.queue.stats().await.is_ok_and(|s| s.dead == 1) }).await);
    assert_eq!(app.upstream.calls_for("gone").len(), 1);
}

#[tokio::test]
async fn a_refused_token_pauses_the_location_and_keeps_its_jobs() {
    let app = TestApp::spawn().await;
    app.upstream.fail_contact("c-1", 401, 1);
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(eventually(WAIT, || async { !app.upstream.calls_for("c-1").is_empty() }).await);
    let location = followd::event::LocationId::parse("loc-1").unwrap();
    assert!(
        eventually(WAIT, || async {
            app.stores.locations.paused(&location, followd::domain::clock::now_ms()).await.is_ok_and(|p| p.is_some())
        })
        .await
    );
    // Another contact of the same location waits too; nothing is dropped or dead-lettered.
    assert_eq!(app.post_signed(&tag_event("e2", "tag_added", "c-2", "vip")).await.status(), 202);
    assert!(
        eventually(WAIT, || async { app.queue.stats().await.is_ok_and(|s| s.pending == 4 && s.leased == 0) }).await
    );
    assert_eq!(app.queue.stats().await.unwrap().dead, 0);
    assert!(app.upstream.calls_for("c-2").is_empty());
    let metrics = app.get("/metrics").await.text().await.unwrap();
    // Counted, not only present: the counter is exposed at 0 from the start.
    assert!(metrics.lines().any(|l| l.starts_with("followd_location_pauses_total") && !l.ends_with(" 0")), "{metrics}");
}

#[tokio::test]
async fn a_fixed_token_and_sighup_resume_a_location_paused_for_its_token() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, None);
    // The token comes from a file, as a mounted Kubernetes Secret would give it; the first one is stale.
    let text = std::fs::read_to_string(&config).unwrap();
    let token_line = format!("token = \"{}\"", crate::support::upstream::TOKEN);
    assert!(text.contains(&token_line));
    let text = text.replace(&token_line, "token = \"file:token.txt\"");
    std::fs::write(&config, format!("{text}\n[delivery]\npause_recheck = \"1s\"\n")).unwrap();
    std::fs::write(dir.path().join("token.txt"), "stale-token\n").unwrap();
    let followd = Followd::start(&config, crate::support::free_port(), &[]).await;

    assert_eq!(post(&followd.addr, &tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(eventually(WAIT, || async { upstream.calls_for("c-1").iter().any(|c| c.status == 401) }).await);
    // Paused for 15 minutes (auth_pause): rechecked every second, still nothing goes out.
    let refused = upstream.calls_for("c-1").len();
    assert!(!eventually(Duration::from_secs(3), || async { upstream.calls_for("c-1").len() > refused }).await);

    std::fs::write(dir.path().join("token.txt"), format!("{}\n", crate::support::upstream::TOKEN)).unwrap();
    let pid = followd.child.id().expect("a running process");
    assert!(std::process::Command::new("kill").arg("-HUP").arg(pid.to_string()).status().unwrap().success());
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
}

#[tokio::test]
async fn a_429_pauses_the_location_until_retry_after_then_delivers() {
    let app = TestApp::spawn().await;
    app.upstream.set_retry_after(1);
    app.upstream.fail_contact("c-1", 429, 1);
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    let calls = app.upstream.calls_for("c-1");
    assert_eq!(calls.iter().map(|c| c.status).collect::<Vec<_>>(), [429, 201]);
    let gap = calls[1].at.duration_since(calls[0].at);
    assert!(gap >= Duration::from_millis(900), "retried after {gap:?}, before Retry-After");
}

#[tokio::test]
async fn adding_more_than_ten_followers_is_dead_lettered_with_the_reason() {
    // One rule may add at most 10 (the rules refuse more), so two rules reach 11 together.
    let rules = format!(
        "[users]\nfirst = [{}]\nsecond = [{}]\n\n[[rule]]\nname = \"a\"\nwhen = {{ event = \"tag_added\", tag = \"vip\" }}\nthen = {{ add = [\"first\"] }}\n\n[[rule]]\nname = \"b\"\nwhen = {{ event = \"tag_added\", tag = \"vip\" }}\nthen = {{ add = [\"second\"] }}\n",
        (0..6).map(|i| format!("\"usr_{i}\"")).collect::<Vec<_>>().join(", "),
        (6..11).map(|i| format!("\"usr_{i}\"")).collect::<Vec<_>>().join(", "),
    );
    let app = TestApp::builder().rules(&rules).spawn().await;
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(eventually(WAIT, || async { app.queue.stats().await.is_ok_and(|s| s.dead == 1) }).await);
    let letters = app.queue.dead_letters().await.unwrap();
    assert!(letters[0].reason.contains("at most 10"), "{}", letters[0].reason);
    assert!(app.upstream.calls().is_empty());
}

#[tokio::test]
async fn the_dlq_commands_list_replay_and_purge_on_both_stores() {
    let redis = RedisServer::start().await;
    for redis_url in [None, Some(redis.url())] {
        let upstream = FakeUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), &upstream.url, redis_url.as_deref());
        let process = Followd::start(&config, crate::support::free_port(), &[]).await;
        upstream.fail_contact("c-1", 422, 1);
        upstream.fail_contact("c-2", 400, 1);
        assert_eq!(post(&process.addr, &tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
        assert_eq!(post(&process.addr, &tag_event("e2", "tag_added", "c-2", "vip")).await.status(), 202);
        assert!(eventually(WAIT, || async { upstream.calls().len() >= 2 }).await);
        // The embedded store belongs to one process: stop it before the commands open it.
        assert!(process.terminate().await.success());
        let dlq = |args: &[&str]| {
            let output = std::process::Command::new(env!("CARGO_BIN_EXE_followd"))
                .arg("dlq")
                .args(args)
                .arg("--config")
                .arg(&config)
                .output()
                .unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            String::from_utf8(output.stdout).unwrap()
        };
        let listed: Vec<Value> = serde_json::from_str(&dlq(&["list", "--json"])).unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        for key in ["id", "location_id", "contact_id", "operations", "status", "reason", "failed_at"] {
            assert!(listed[0].get(key).is_some(), "missing {key}: {}", listed[0]);
        }
        let c1 = listed.iter().find(|l| l["contact_id"] == "c-1").unwrap();
        assert_eq!(c1["status"], 422);
        assert_eq!(c1["operations"].as_array().unwrap().len(), 2);
        assert!(dlq(&["replay", c1["id"].as_str().unwrap()]).contains("replayed 1"));
        assert!(dlq(&["purge", "--all"]).contains("purged 1"));
        assert_eq!(serde_json::from_str::<Vec<Value>>(&dlq(&["list", "--json"])).unwrap().len(), 0);
        // The replayed operations are delivered when the service runs again.
        let _again = Followd::start(&config, crate::support::free_port(), &[]).await;
        assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await, "{redis_url:?}");
        assert!(upstream.calls_for("c-2").len() == 1, "purged operations are gone");
    }
}

#[tokio::test]
async fn an_operator_resumes_a_paused_location_and_its_jobs_go_out() {
    let redis = RedisServer::start().await;
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, Some(&redis.url()));
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[upstream]", "[delivery]\npause_recheck = \"1s\"\n[upstream]");
    std::fs::write(&config, text).unwrap();
    let process = Followd::start(&config, crate::support::free_port(), &[]).await;
    upstream.fail_contact("c-1", 401, 1);
    assert_eq!(post(&process.addr, &tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(eventually(WAIT, || async { upstream.calls_for("c-1").iter().any(|c| c.status == 401) }).await);
    let resume = || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_followd"))
            .args(["queue", "resume", "loc-1", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    // The pause is recorded a moment after the 401: resume once it is there.
    assert!(eventually(WAIT, || async { resume().contains("resumed") }).await);
    // The token is "fixed" (the fake answers normally now): the kept job goes out without waiting 15 minutes.
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
}
