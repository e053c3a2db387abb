//! The pipeline end to end: what reaches the fake CRM after a webhook. Every scenario runs twice, on the
//! embedded store and on a private Redis (`on_both_stores!`), since users run either.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::support::app::{Store, TestApp, tag_event};
use crate::support::upstream::TOKEN;

const WAIT: Duration = Duration::from_secs(15);

fn set(users: &[&str]) -> BTreeSet<String> {
    users.iter().map(|u| (*u).to_owned()).collect()
}

fn stage_event(id: &str, contact: &str, stage: &str) -> Vec<u8> {
    json!({"id": id, "type": "stage_changed", "location_id": "loc-1", "contact_id": contact,
           "pipeline": "Sales", "stage": stage})
    .to_string()
    .into_bytes()
}

fn lead_event(id: &str, contact: &str) -> Vec<u8> {
    json!({"id": id, "type": "contact_created", "location_id": "loc-1", "contact_id": contact,
           "source": "Facebook Ads"})
    .to_string()
    .into_bytes()
}

async fn a_signed_tag_added_reaches_the_upstream_as_a_post_with_alias_resolved_user_ids(store: Store) {
    let app = TestApp::builder().store(store).spawn().await;
    assert_eq!(app.post_signed(&tag_event("evt-1", "tag_added", "c-1", "VIP ")).await.status(), 202);
    assert!(app.upstream.wait_for_calls(1, WAIT).await, "no upstream call");
    let call = &app.upstream.calls()[0];
    assert_eq!((call.method.as_str(), call.contact_id.as_str(), call.status), ("POST", "c-1", 201));
    assert_eq!(call.followers, ["usr_alice", "usr_bob"]);
    assert_eq!(call.authorization.as_deref(), Some(format!("Bearer {TOKEN}").as_str()));
    assert_eq!(call.version.as_deref(), Some("2021-07-28"));
    assert_eq!(app.upstream.followers_of("c-1"), set(&["usr_alice", "usr_bob"]));
}

async fn a_tag_added_then_removed_ends_with_the_users_not_following(store: Store) {
    let app = TestApp::builder().store(store).spawn().await;
    app.upstream.set_followers("c-1", &["usr_other"]);
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert_eq!(app.post_signed(&tag_event("e2", "tag_removed", "c-1", "vip")).await.status(), 202);
    app.wait_until_idle().await;
    assert_eq!(app.upstream.followers_of("c-1"), set(&["usr_other"]));
    // Whether the two were folded into one DELETE or delivered one after the other, the last call removes.
    let calls = app.upstream.calls_for("c-1");
    assert_eq!(calls.last().map(|c| c.method.as_str()), Some("DELETE"));
}

async fn remove_all_learns_the_current_followers_from_the_crm(store: Store) {
    let app = TestApp::builder().store(store).spawn().await;
    app.upstream.set_followers("c-1", &["usr_x", "usr_y", "usr_alice"]);
    assert_eq!(app.post_signed(&stage_event("e1", "c-1", "closed won")).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-1", &["usr_alice"], WAIT).await);
    app.wait_until_idle().await;
    let calls: Vec<(String, Vec<String>)> = app.upstream.calls().into_iter().map(|c| (c.method, c.followers)).collect();
    // One search (the GET has no followers in the CRM's schema), one DELETE, one POST.
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert_eq!(calls[0].0, "SEARCH");
    assert_eq!(calls[1], ("DELETE".to_owned(), vec!["usr_x".to_owned(), "usr_y".to_owned()]));
    assert_eq!(calls[2], ("POST".to_owned(), vec!["usr_alice".to_owned()]));
    let search = &app.upstream.searches()[0];
    assert_eq!(search["filters"][0], json!({"field": "id", "operator": "eq", "value": "c-1"}));
    assert_eq!((search["locationId"].as_str(), search["pageLimit"].as_u64()), (Some("loc-1"), Some(1)));
}

async fn remove_all_falls_back_to_the_followers_followd_added_when_the_search_does_not_list_the_contact(store: Store) {
    let app = TestApp::builder().store(store).spawn().await;
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    app.wait_until_idle().await;
    // Someone adds a follower by hand, and the search does not list the contact yet (results lag writes):
    // followd removes what it knows it added.
    app.upstream.set_followers("c-1", &["usr_alice", "usr_bob", "usr_by_hand"]);
    app.upstream.set_contact("c-1", "loc-not-indexed-yet", &[], None);
    assert_eq!(app.post_signed(&stage_event("e2", "c-1", "Closed Won")).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_by_hand"], WAIT).await);
}

async fn round_robin_rotates_through_the_team(store: Store) {
    let app = TestApp::builder().store(store).spawn().await;
    for (i, contact) in ["c-1", "c-2", "c-3", "c-4"].iter().enumerate() {
        assert_eq!(app.post_signed(&lead_event(&format!("lead-{i}"), contact)).await.status(), 202);
    }
    app.wait_until_idle().await;
    let picks: Vec<BTreeSet<String>> =
        ["c-1", "c-2", "c-3", "c-4"].iter().map(|c| app.upstream.followers_of(c)).collect();
    assert_eq!(picks, [set(&["usr_s1"]), set(&["usr_s2"]), set(&["usr_s3"]), set(&["usr_s1"])]);
}

async fn a_transient_upstream_failure_is_retried_until_delivered(store: Store) {
    let app = TestApp::builder().store(store).spawn().await;
    app.upstream.fail_next(503, 2);
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    let statuses: Vec<u16> = app.upstream.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [503, 503, 201]);
}

async fn a_delivery_that_keeps_failing_is_kept_in_the_queue_and_delivered_later(store: Store) {
    let app = TestApp::builder().store(store).spawn().await;
    // More failures than one lease retries in place: the contact goes back to the queue, not away.
    app.upstream.fail_next(500, 3);
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(app.upstream.wait_for_calls(3, WAIT).await);
    let stats = app.queue.stats().await.unwrap();
    assert_eq!(stats.pending, 2, "the operations are still queued after the failures");
    assert!(app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
}

async fn the_dry_run_calls_nothing_and_drains_the_queue(store: Store) {
    let app = TestApp::builder().store(store).dry_run().spawn().await;
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    app.wait_until_idle().await;
    assert!(app.upstream.calls().is_empty());
    let metrics = app.get("/metrics").await.text().await.unwrap();
    // Counted, not only present: the counter is exposed at 0 from the start.
    assert!(
        metrics.lines().any(|l| l.starts_with("followd_upstream_dry_run_calls_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // Recorded as what it was: not a delivery, and nobody became followd's follower.
    let contact = followd::event::ContactId::parse("c-1").unwrap();
    let trail = app.stores.audit.audit(None, &contact).await.unwrap();
    assert_eq!(trail.len(), 2);
    assert!(trail.iter().all(|e| e.result == followd::domain::outcome::Outcome::DryRun), "{trail:?}");
    let key = followd::event::ContactKey { location_id: trail[0].location_id.clone(), contact_id: contact };
    assert!(app.stores.memory.known_followers(&key).await.unwrap().is_empty());
}

async fn events_for_one_contact_never_overlap_at_the_upstream(store: Store) {
    let app = TestApp::builder().store(store).spawn().await;
    app.upstream.set_latency(Duration::from_millis(50));
    for i in 0..20 {
        let kind = if i % 2 == 0 { "tag_added" } else { "tag_removed" };
        assert_eq!(app.post_signed(&tag_event(&format!("e{i}"), kind, "c-1", "vip")).await.status(), 202);
    }
    app.wait_until_idle().await;
    assert_eq!(app.upstream.overlaps(), 0);
    // The last event removed the tag: nobody follows.
    assert!(app.upstream.followers_of("c-1").is_empty());
}

on_both_stores!(
    a_signed_tag_added_reaches_the_upstream_as_a_post_with_alias_resolved_user_ids,
    a_tag_added_then_removed_ends_with_the_users_not_following,
    remove_all_learns_the_current_followers_from_the_crm,
    remove_all_falls_back_to_the_followers_followd_added_when_the_search_does_not_list_the_contact,
    round_robin_rotates_through_the_team,
    a_transient_upstream_failure_is_retried_until_delivered,
    a_delivery_that_keeps_failing_is_kept_in_the_queue_and_delivered_later,
    the_dry_run_calls_nothing_and_drains_the_queue,
    events_for_one_contact_never_overlap_at_the_upstream,
);
