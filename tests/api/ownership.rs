//! What the CRM holds, through HTTP and on both stores: `remove_all` reads the contact through search, followd
//! owns only the followers it added (`managed` never touches a person's), the follower cap evicts followd's
//! oldest or dead-letters, and a stale whole-state payload changes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::support::app::{Store, TestApp, tag_event};
use crate::support::eventually;
use crate::support::ghl::{ed25519_signature, fresh, vectors_path};

const WAIT: Duration = Duration::from_secs(15);

/// `vip` brings alice and bob, losing it drops them, `churned` clears everyone, `closed` clears followd's own
/// (the configuration's ownership), `big` brings a team of 3.
const RULES: &str = r#"
[users]
alice = "usr_alice"
bob = "usr_bob"
big_team = ["usr_t1", "usr_t2", "usr_t3"]

[[rule]]
name = "vip-gets-account-team"
when = { event = "tag_added", tag = "vip" }
then = { add = ["alice", "bob"] }

[[rule]]
name = "vip-removed-drops-account-team"
when = { event = "tag_removed", tag = "vip" }
then = { remove = ["alice", "bob"] }

[[rule]]
name = "churned-clears-everyone"
ownership = "any"
when = { event = "tag_added", tag = "churned" }
then = { remove_all = true }

[[rule]]
name = "closed-clears-followd-s-own"
when = { event = "tag_added", tag = "closed" }
then = { remove_all = true }

[[rule]]
name = "big-deal"
when = { event = "tag_added", tag = "big" }
then = { add = ["big_team"] }
"#;

fn set(users: &[&str]) -> BTreeSet<String> {
    users.iter().map(|u| (*u).to_owned()).collect()
}

async fn app(store: Store, followers: &str) -> TestApp {
    TestApp::builder().store(store).rules(RULES).config(&format!("[followers]\n{followers}")).spawn().await
}

async fn post(app: &TestApp, id: &str, kind: &str, contact: &str, tag: &str) {
    assert_eq!(app.post_signed(&tag_event(id, kind, contact, tag)).await.status(), 202, "{id}");
    app.wait_until_idle().await;
}

async fn remove_all_reads_the_contact_through_search_and_ends_with_no_followers(store: Store) {
    let app = app(store, "").await;
    app.upstream.set_followers("c-1", &["usr_x", "usr_y", "usr_alice"]);
    post(&app, "e1", "tag_added", "c-1", "churned").await;
    assert!(app.upstream.followers_of("c-1").is_empty());
    let methods: Vec<String> = app.upstream.calls().iter().map(|c| c.method.clone()).collect();
    assert_eq!(methods, ["SEARCH", "DELETE"], "one search, then at most one DELETE and one POST");
}

async fn managed_ownership_keeps_a_person_s_follower_through_remove_and_remove_all(store: Store) {
    let app = app(store, "ownership = \"managed\"").await;
    // Bob follows by hand before followd adds the account team: he is a person's.
    app.upstream.set_followers("c-1", &["usr_bob"]);
    post(&app, "e1", "tag_added", "c-1", "vip").await;
    assert_eq!(app.upstream.followers_of("c-1"), set(&["usr_alice", "usr_bob"]));
    post(&app, "e2", "tag_removed", "c-1", "vip").await;
    assert_eq!(app.upstream.followers_of("c-1"), set(&["usr_bob"]), "alice was followd's; bob stays");
    // remove_all under managed removes only what followd added.
    app.upstream.set_followers("c-2", &["usr_person"]);
    post(&app, "e3", "tag_added", "c-2", "vip").await;
    post(&app, "e4", "tag_added", "c-2", "closed").await;
    assert_eq!(app.upstream.followers_of("c-2"), set(&["usr_person"]));
}

async fn a_rule_s_own_ownership_any_overrides_the_configuration(store: Store) {
    let app = app(store, "ownership = \"managed\"").await;
    app.upstream.set_followers("c-1", &["usr_person", "usr_other"]);
    post(&app, "e1", "tag_added", "c-1", "churned").await;
    assert!(app.upstream.followers_of("c-1").is_empty(), "churned-clears-everyone says ownership = \"any\"");
}

async fn at_the_cap_followd_s_oldest_followers_make_room_and_a_person_s_never_do(store: Store) {
    let app = app(store, "at_cap = \"evict_managed\"").await;
    let persons = ["usr_p1", "usr_p2", "usr_p3", "usr_p4", "usr_p5", "usr_p6"];
    app.upstream.set_followers("c-1", &persons);
    post(&app, "e1", "tag_added", "c-1", "vip").await; // alice and bob: 8 followers, followd's oldest
    post(&app, "e2", "tag_added", "c-1", "big").await; // 3 more would make 11: alice (oldest of followd's) goes
    let mut expected: Vec<&str> = persons.to_vec();
    expected.extend(["usr_bob", "usr_t1", "usr_t2", "usr_t3"]);
    assert_eq!(app.upstream.followers_of("c-1"), set(&expected));
    assert_eq!(app.queue.stats().await.unwrap().dead, 0);

    // Only a person's followers: nothing of followd's can make room, so the add is set aside, saying why.
    let ten: Vec<String> = (0..10).map(|i| format!("usr_q{i}")).collect();
    app.upstream.set_followers("c-2", &ten.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(app.post_signed(&tag_event("e3", "tag_added", "c-2", "vip")).await.status(), 202);
    assert!(eventually(WAIT, || async { app.queue.stats().await.is_ok_and(|s| s.dead == 1) }).await);
    let letters = app.queue.dead_letters().await.unwrap();
    assert!(letters[0].reason.contains("a person's followers are never removed"), "{}", letters[0].reason);
    assert_eq!(app.upstream.followers_of("c-2").len(), 10);
}

async fn at_the_cap_the_default_dead_letters_with_the_reason(store: Store) {
    let app = app(store, "").await;
    let nine: Vec<String> = (0..9).map(|i| format!("usr_q{i}")).collect();
    app.upstream.set_followers("c-1", &nine.iter().map(String::as_str).collect::<Vec<_>>());
    // No read before a plain add: the POST's answer counts 12, so followd takes its 3 back and dead-letters.
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "big")).await.status(), 202);
    assert!(eventually(WAIT, || async { app.queue.stats().await.is_ok_and(|s| s.dead == 1) }).await);
    let letters = app.queue.dead_letters().await.unwrap();
    assert!(letters[0].reason.contains("12 followers") && letters[0].reason.contains("dead_letter"), "{letters:?}");
    assert_eq!(app.upstream.followers_of("c-1").len(), 9);
}

async fn ghl_app(store: Store) -> TestApp {
    let keys = vec![vectors_path("keys/test_ed25519_public.pem")];
    TestApp::builder().store(store).rules(RULES).ghl_keys(&keys).spawn().await
}

fn tag_update(webhook_id: &str, at: &str, tags: &[&str]) -> Vec<u8> {
    let mut value: serde_json::Value =
        serde_json::from_slice(&fresh("ContactTagUpdate", webhook_id, Some("c-1"), Some(tags))).unwrap();
    value["timestamp"] = json!(at);
    value["locationId"] = json!("loc-1");
    serde_json::to_vec(&value).unwrap()
}

async fn a_stale_contact_tag_update_changes_nothing(store: Store) {
    let app = ghl_app(store).await;
    let now = chrono::Utc::now();
    let (older, newer) = ((now - chrono::Duration::seconds(60)).to_rfc3339(), now.to_rfc3339());
    // The newer list (vip) arrives first; the older one (no tags) is a retry that arrives after it.
    let first = tag_update("wh-new", &newer, &["vip"]);
    assert_eq!(app.post("ghl", &first, &[("x-ghl-signature", &ed25519_signature(&first))]).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    let stale = tag_update("wh-old", &older, &[]);
    let response = app.post("ghl", &stale, &[("x-ghl-signature", &ed25519_signature(&stale))]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap(), json!({"stale": true}));
    app.wait_until_idle().await;
    assert_eq!(app.upstream.followers_of("c-1"), set(&["usr_alice", "usr_bob"]), "vip's followers stay");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("followd_events_stale_total{source=\"ghl\"}")), "{metrics}");
}

fn workflow(id: &str, at: &str, kind: &str) -> Vec<u8> {
    json!({"contact_id": "c-9", "location": {"id": "loc-1"}, "tags": "vip, other", "timestamp": at,
           "customData": {"event": kind, "tag": "vip", "event_id": id}})
    .to_string()
    .into_bytes()
}

async fn a_reordered_pair_of_workflow_bodies_with_tags_applies_only_the_newer(store: Store) {
    let app = TestApp::builder().store(store).rules(RULES).spawn().await;
    let now = chrono::Utc::now();
    let (older, newer) = ((now - chrono::Duration::seconds(30)).to_rfc3339(), now.to_rfc3339());
    let auth = [("authorization", "Bearer wf-secret")];
    // The tag was added (older), then removed (newer); they arrive the other way round.
    assert_eq!(app.post("workflow", &workflow("wf-2", &newer, "tag_removed"), &auth).await.status(), 202);
    let response = app.post("workflow", &workflow("wf-1", &older, "tag_added"), &auth).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap(), json!({"stale": true}));
    app.wait_until_idle().await;
    assert!(app.upstream.followers_of("c-9").is_empty(), "the older add must not undo the newer removal");
}

/// A location is read page by page with the search's cursor: every contact once, the total as the CRM says,
/// and each page counted at the CRM like any call.
#[tokio::test]
async fn a_location_is_read_page_by_page_with_the_search_cursor() {
    let upstream = crate::support::upstream::FakeUpstream::start().await;
    let ids: Vec<String> = (0..7).map(|i| format!("c-{i}")).collect();
    for id in &ids {
        upstream.set_contact(id, "loc-pages", &["vip"], Some("Facebook Ads"));
    }
    upstream.set_contact("elsewhere", "loc-other", &[], None);
    let dir = tempfile::tempdir().unwrap();
    let text = format!("[upstream]\nbase_url = \"{}\"\ntoken = \"{}\"", upstream.url, crate::support::upstream::TOKEN);
    let config = followd::config::Config::from_toml(&text, dir.path()).unwrap();
    let stores = followd::queue::Stores::of(
        followd::queue::EmbeddedQueue::open(dir.path(), Duration::from_secs(60), Duration::from_secs(60)).unwrap(),
    );
    let client = followd::upstream::Upstream::from_config(&config.upstream, dir.path(), stores.tokens).unwrap();
    let location = followd::event::LocationId::parse("loc-pages").unwrap();
    let (mut seen, mut pages, mut cursor) = (Vec::new(), Vec::new(), None);
    loop {
        let page = client.contacts_page(&location, 3, cursor.as_ref()).await.unwrap().expect("a live client");
        assert_eq!(page.total, Some(7));
        pages.push(page.contacts.len());
        seen.extend(page.contacts.iter().map(|c| c.id.to_string()));
        assert!(page.contacts.iter().all(|c| c.tags == ["vip"] && c.source.as_deref() == Some("Facebook Ads")));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, [3, 3, 1]);
    seen.sort();
    assert_eq!(seen, ids);
    assert_eq!(upstream.searches().len(), 3);
    assert!(upstream.searches()[1].get("searchAfter").is_some() && upstream.searches()[1].get("page").is_none());
}

/// The account team is added to a vip unless someone of the sales team already follows; the audit says why.
async fn skip_if_following_leaves_a_contact_its_team_already_follows_alone(store: Store) {
    let rules = "[users]\nalice = \"usr_alice\"\nbob = \"usr_bob\"\ncarol = \"usr_carol\"\n\
                 sales = [\"alice\", \"bob\"]\n\
                 [[rule]]\nname = \"unassigned-vips\"\nskip_if_following = \"sales\"\n\
                 when = { event = \"tag_added\", tag = \"vip\" }\nthen = { round_robin = \"sales\", add = [\"carol\"] }\n";
    let app = TestApp::builder().store(store).rules(rules).spawn().await;
    app.upstream.set_followers("c-1", &["usr_bob"]);
    post(&app, "e1", "tag_added", "c-1", "vip").await;
    post(&app, "e2", "tag_added", "c-2", "vip").await;
    assert_eq!(app.upstream.followers_of("c-1"), set(&["usr_bob"]), "bob of sales follows: the rule does nothing");
    // c-1's turn (alice's) was given back when its rule was skipped: c-2 is hers.
    assert_eq!(app.upstream.followers_of("c-2"), set(&["usr_alice", "usr_carol"]), "nobody of sales: it adds");
    let methods: Vec<String> = app.upstream.calls_for("c-1").iter().map(|c| c.method.clone()).collect();
    assert!(!methods.contains(&"POST".to_owned()), "nothing was sent for c-1: {methods:?}");
    let location = followd::event::LocationId::parse("loc-1").unwrap();
    let contact = followd::event::ContactId::parse("c-1").unwrap();
    let trail = app.stores.audit.audit(Some(&location), &contact).await.unwrap();
    assert_eq!(trail.len(), 2, "{trail:?}");
    for entry in &trail {
        assert!(entry.result.to_string().starts_with("skipped: usr_bob already follows"), "{}", entry.result);
    }
}

/// alice goes away: bob follows the contacts followd made alice follow; she comes back: bob goes, only where
/// followd added him (c-2, where a person had added bob, keeps him).
async fn a_cover_follows_for_an_absent_user_and_stops_when_they_return(store: Store) {
    let day = |offset: i64| (chrono::Utc::now() + chrono::Duration::days(offset)).format("%Y-%m-%d").to_string();
    let rules = |away: bool| {
        let availability = if away {
            format!("[availability]\nalice = {{ away = [\"{}/{}\"] }}\n", day(-1), day(1))
        } else {
            String::new()
        };
        format!(
            "[users]\nalice = \"usr_alice\"\nbob = \"usr_bob\"\n{availability}\
             [[rule]]\nname = \"vip\"\nwhen = {{ event = \"tag_added\", tag = \"vip\" }}\nthen = {{ add = [\"alice\"] }}\n\
             [[cover]]\nuser = \"alice\"\nby = \"bob\"\n"
        )
    };
    let app = TestApp::builder().store(store).rules(&rules(false)).spawn().await;
    app.upstream.set_followers("c-2", &["usr_bob"]);
    post(&app, "e1", "tag_added", "c-1", "vip").await;
    post(&app, "e2", "tag_added", "c-2", "vip").await;
    assert_eq!(app.upstream.followers_of("c-1"), set(&["usr_alice"]));
    let rules_file = app.dir.path().join("rules/rules.toml");
    std::fs::write(&rules_file, rules(true)).unwrap();
    assert!(
        app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await,
        "alice is away: bob covers c-1 ({:?})",
        app.upstream.followers_of("c-1")
    );
    std::fs::write(&rules_file, rules(false)).unwrap();
    assert!(
        app.upstream.wait_for_followers("c-1", &["usr_alice"], WAIT).await,
        "alice is back: bob leaves c-1 ({:?})",
        app.upstream.followers_of("c-1")
    );
    app.wait_until_idle().await;
    assert_eq!(app.upstream.followers_of("c-2"), set(&["usr_alice", "usr_bob"]), "a person's bob stays on c-2");
    let location = followd::event::LocationId::parse("loc-1").unwrap();
    let contact = followd::event::ContactId::parse("c-1").unwrap();
    let trail = app.stores.audit.audit(Some(&location), &contact).await.unwrap();
    assert!(trail.iter().any(|e| e.operation.rule == "cover usr_alice by usr_bob"), "{trail:?}");
    assert!(app.stores.covers.coverings().await.unwrap().is_empty(), "the cover ended");
}

on_both_stores!(
    a_cover_follows_for_an_absent_user_and_stops_when_they_return,
    skip_if_following_leaves_a_contact_its_team_already_follows_alone,
    remove_all_reads_the_contact_through_search_and_ends_with_no_followers,
    managed_ownership_keeps_a_person_s_follower_through_remove_and_remove_all,
    a_rule_s_own_ownership_any_overrides_the_configuration,
    at_the_cap_followd_s_oldest_followers_make_room_and_a_person_s_never_do,
    at_the_cap_the_default_dead_letters_with_the_reason,
    a_stale_contact_tag_update_changes_nothing,
    a_reordered_pair_of_workflow_bodies_with_tags_applies_only_the_newer,
);
