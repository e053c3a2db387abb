//! Followers of opportunities and of the assigned user, through HTTP with GoHighLevel's signed app webhooks,
//! on both stores: a `target = "opportunity"` rule changes the opportunity's followers (never the contact's),
//! `remove_all` there is the CRM's own `isRemoveAllFollowers`; an assignee change adds the new assignee and
//! removes the previous one, in order, when two changes arrive back to back.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::support::app::{Store, TestApp};
use crate::support::ghl::{ed25519_signature, vectors_path};

const RULES: &str = r#"
[users]
manager = "usr_manager"
closer = "usr_closer"

[[rule]]
name = "a deal in negotiation: the closer follows the deal"
target = "opportunity"
when = { event = "stage_changed", stage = "st-negotiation" }
then = { add = ["closer", "@assigned"] }

[[rule]]
name = "a lost deal: nobody follows it any more"
target = "opportunity"
when = { event = "stage_changed", stage = "st-lost" }
then = { remove_all = true }

[[rule]]
name = "the contact's assignee follows it, the previous one stops"
when = { event = "assigned_changed", record = "contact" }
then = { add = ["@assigned"], remove = ["@previously_assigned"] }

[[rule]]
name = "a deal is assigned: the manager follows its contact"
when = { event = "assigned_changed", record = "opportunity" }
then = { add = ["manager"] }
"#;

async fn app(store: Store) -> TestApp {
    let keys = vec![vectors_path("keys/test_ed25519_public.pem")];
    TestApp::builder().store(store).rules(RULES).ghl_keys(&keys).spawn().await
}

async fn send(app: &TestApp, body: Value) {
    let body = serde_json::to_vec(&body).unwrap();
    let response = app.post("ghl", &body, &[("x-ghl-signature", &ed25519_signature(&body))]).await;
    assert!(response.status().is_success(), "{}: {}", response.status(), response.text().await.unwrap());
}

fn opportunity(webhook: &str, kind: &str, stage: &str, assigned: Option<&str>) -> Value {
    json!({"type": kind, "locationId": "loc-1", "id": "opp-1", "contactId": "c-1", "pipelineId": "pip-1",
           "pipelineStageId": stage, "assignedTo": assigned, "status": "open", "webhookId": webhook,
           "timestamp": chrono::Utc::now().to_rfc3339()})
}

fn set(users: &[&str]) -> BTreeSet<String> {
    users.iter().map(|u| (*u).to_owned()).collect()
}

async fn an_opportunity_rule_changes_the_opportunity_s_followers_and_never_the_contact_s(store: Store) {
    let app = app(store).await;
    send(&app, opportunity("wh-1", "OpportunityStageUpdate", "st-negotiation", Some("usr_rep"))).await;
    app.wait_until_idle().await;
    assert_eq!(app.upstream.followers_of("opportunity:opp-1"), set(&["usr_closer", "usr_rep"]));
    let page = app.get("/").await.text().await.unwrap();
    assert!(page.contains("a deal in negotiation: the closer follows the deal"), "the decision names the rule: {page}");
    send(&app, opportunity("wh-2", "OpportunityStageUpdate", "st-lost", Some("usr_rep"))).await;
    app.wait_until_idle().await;
    assert!(app.upstream.followers_of("opportunity:opp-1").is_empty());
    let calls = app.upstream.calls_for("opportunity:opp-1");
    let last = calls.last().unwrap();
    assert_eq!((last.method.as_str(), last.body.clone()), ("DELETE", Some(json!({"followers": []}))));
    assert!(app.upstream.calls_for("c-1").is_empty(), "the contact's followers were never called");
    assert!(app.upstream.take_violations().is_empty(), "every request as the CRM's opportunities.json says");
    let location = followd::event::LocationId::parse("loc-1").unwrap();
    let key = followd::event::ContactId::opportunity("opp-1").unwrap();
    let trail = app.stores.audit.audit(Some(&location), &key).await.unwrap();
    assert!(trail.iter().any(|e| e.operation.rule.starts_with("a lost deal")), "{trail:?}");
}

fn contact_update(webhook: &str, assigned: Option<&str>) -> Value {
    json!({"type": "ContactUpdate", "locationId": "loc-1", "id": "c-2", "assignedTo": assigned,
           "tags": [], "webhookId": webhook, "timestamp": chrono::Utc::now().to_rfc3339()})
}

async fn an_assignee_change_adds_the_new_and_removes_the_previous_assignee_in_order(store: Store) {
    let app = app(store).await;
    app.upstream.set_followers("c-2", &["usr_person"]);
    // Back to back: the second arrives before the first is delivered.
    send(&app, contact_update("wh-a", Some("usr_ann"))).await;
    send(&app, contact_update("wh-b", Some("usr_ben"))).await;
    app.wait_until_idle().await;
    assert_eq!(app.upstream.followers_of("c-2"), set(&["usr_ben", "usr_person"]));
    let location = followd::event::LocationId::parse("loc-1").unwrap();
    let contact = followd::event::ContactId::parse("c-2").unwrap();
    let mut trail = app.stores.audit.audit(Some(&location), &contact).await.unwrap();
    trail.reverse();
    let ops: Vec<String> = trail.iter().map(|e| format!("{:?}", e.operation.op)).collect();
    assert_eq!(ops, [r#"Add(UserId("usr_ann"))"#, r#"Remove(UserId("usr_ann"))"#, r#"Add(UserId("usr_ben"))"#]);
    // A late, older update (ann again) does not turn the assignment back.
    let mut late = contact_update("wh-late", Some("usr_ann"));
    late["timestamp"] = json!((chrono::Utc::now() - chrono::Duration::seconds(60)).to_rfc3339());
    let body = serde_json::to_vec(&late).unwrap();
    let response = app.post("ghl", &body, &[("x-ghl-signature", &ed25519_signature(&body))]).await;
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"stale": true}));
    app.wait_until_idle().await;
    assert_eq!(app.upstream.followers_of("c-2"), set(&["usr_ben", "usr_person"]));
    // The same assignee again is no change; unassigned removes the last one.
    send(&app, contact_update("wh-c", Some("usr_ben"))).await;
    send(&app, contact_update("wh-d", None)).await;
    app.wait_until_idle().await;
    assert_eq!(app.upstream.followers_of("c-2"), set(&["usr_person"]));
    // A deal of the contact is assigned: its manager follows the contact.
    send(
        &app,
        json!({"type": "OpportunityAssignedToUpdate", "locationId": "loc-1", "id": "opp-9",
                      "contactId": "c-2", "assignedTo": "usr_ann", "webhookId": "wh-e"}),
    )
    .await;
    app.wait_until_idle().await;
    assert_eq!(app.upstream.followers_of("c-2"), set(&["usr_manager", "usr_person"]));
    assert!(app.upstream.take_violations().is_empty());
}

on_both_stores!(
    an_opportunity_rule_changes_the_opportunity_s_followers_and_never_the_contact_s,
    an_assignee_change_adds_the_new_and_removes_the_previous_assignee_in_order,
);
