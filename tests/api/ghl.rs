//! GoHighLevel as a source, through HTTP: its payloads, its signatures, replay protection.

use std::time::Duration;

use serde_json::Value;

use crate::support::app::TestApp;
use crate::support::ghl::{ed25519_signature, fresh, rsa_signature, vectors_path};

const WAIT: Duration = Duration::from_secs(15);
const LOCATION: &str = "loc7QpX2mVb9RkTn4WsA";

/// Rules on the example payloads' tags and ids.
const GHL_RULES: &str = r#"
[users]
closer = "usr_closer"
hot_team = ["usr_h1", "usr_h2"]

[[rule]]
name = "hot-leads"
when = { event = "tag_added", tag = "hot-lead" }
then = { add = ["hot_team"] }

[[rule]]
name = "cooled-down"
when = { event = "tag_removed", tag = "hot-lead" }
then = { remove = ["hot_team"] }

[[rule]]
name = "facebook-leads"
when = { event = "contact_created", source = "facebook lead form" }
then = { add = ["closer"] }

[[rule]]
name = "won"
when = { event = "stage_changed", pipeline = "pip2Wx3Yz4Ab5Cd6Ef7G", stage = "8a6e4c2b-1d3f-4a5b-9c7e-0f2d4b6a8c91" }
then = { remove_all = true }
"#;

fn test_keys() -> Vec<String> {
    vec![vectors_path("keys/test_rsa_public.pem"), vectors_path("keys/test_ed25519_public.pem")]
}

async fn ghl_app() -> TestApp {
    TestApp::builder().rules(GHL_RULES).ghl_keys(&test_keys()).spawn().await
}

async fn post_ghl(app: &TestApp, body: &[u8]) -> reqwest::Response {
    app.post("ghl", body, &[("x-ghl-signature", &ed25519_signature(body))]).await
}

#[tokio::test]
async fn a_tag_update_adds_and_removes_followers_from_the_difference_with_the_last_seen_tags() {
    let app = ghl_app().await;
    let first = fresh("ContactTagUpdate", "wh-1", Some("c-1"), Some(&["new lead", "Hot-Lead"]));
    assert_eq!(post_ghl(&app, &first).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-1", &["usr_h1", "usr_h2"], WAIT).await);
    // The next update no longer lists the tag: it was removed.
    let second = fresh("ContactTagUpdate", "wh-2", Some("c-1"), Some(&["new lead"]));
    assert_eq!(post_ghl(&app, &second).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-1", &[], WAIT).await);
}

#[tokio::test]
async fn a_contact_create_fires_contact_created_and_tag_added_for_its_tags() {
    let app = ghl_app().await;
    let body = fresh("ContactCreate", "wh-1", Some("c-1"), Some(&["hot-lead"]));
    let response = post_ghl(&app, &body).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap()["operations"], 3);
    assert!(app.upstream.wait_for_followers("c-1", &["usr_closer", "usr_h1", "usr_h2"], WAIT).await);
}

#[tokio::test]
async fn an_opportunity_moved_to_the_won_stage_fires_stage_changed() {
    let app = ghl_app().await;
    app.upstream.set_followers("ctc-9", &["usr_a", "usr_b"]);
    app.upstream.set_contact("ctc-9", LOCATION, &[], None);
    let body = fresh("OpportunityStageUpdate", "wh-1", Some("ctc-9"), None);
    assert_eq!(post_ghl(&app, &body).await.status(), 202);
    assert!(app.upstream.wait_for_followers("ctc-9", &[], WAIT).await);
}

#[tokio::test]
async fn the_legacy_rsa_signature_is_accepted_too() {
    let app = ghl_app().await;
    let body = fresh("ContactTagUpdate", "wh-1", Some("c-1"), Some(&["hot-lead"]));
    let response = app.post("ghl", &body, &[("x-wh-signature", &rsa_signature(&body))]).await;
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn tampered_bodies_and_wrong_keys_are_401_and_deliver_nothing() {
    let app = ghl_app().await;
    let body = fresh("ContactTagUpdate", "wh-1", Some("c-1"), Some(&["hot-lead"]));
    let signature = ed25519_signature(&body);
    let mut tampered = body.clone();
    let last = tampered.len() - 2;
    tampered[last] = b' ';
    assert_eq!(app.post("ghl", &tampered, &[("x-ghl-signature", &signature)]).await.status(), 401);
    assert_eq!(app.post("ghl", &body, &[]).await.status(), 401);
    assert_eq!(app.post("ghl", &body, &[("x-ghl-signature", "N/A")]).await.status(), 401);
    // The built-in keys are GoHighLevel's own: the test key's signature does not verify under them.
    let builtin = TestApp::builder().rules(GHL_RULES).spawn().await;
    assert_eq!(builtin.post("ghl", &body, &[("x-ghl-signature", &signature)]).await.status(), 401);
    assert_eq!(app.queue.stats().await.unwrap().pending, 0);
    assert!(app.upstream.calls().is_empty());
}

#[tokio::test]
async fn an_expired_timestamp_is_401_and_a_replayed_webhook_id_is_a_duplicate() {
    let app = ghl_app().await;
    let mut old: Value = serde_json::from_slice(&fresh("ContactTagUpdate", "wh-old", Some("c-1"), None)).unwrap();
    old["timestamp"] = serde_json::json!((chrono::Utc::now() - chrono::Duration::minutes(6)).to_rfc3339());
    let old = serde_json::to_vec(&old).unwrap();
    assert_eq!(post_ghl(&app, &old).await.status(), 401);

    let body = fresh("ContactTagUpdate", "wh-1", Some("c-1"), Some(&["hot-lead"]));
    assert_eq!(post_ghl(&app, &body).await.status(), 202);
    let again = post_ghl(&app, &body).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap()["duplicate"], true);
}

#[tokio::test]
async fn event_types_followd_does_not_use_are_acknowledged_and_ignored() {
    let app = ghl_app().await;
    // A ContactUpdate matters only for its `assignedTo`; without one it is ignored too.
    let mut update: Value = serde_json::from_slice(&fresh("ContactUpdate", "wh-3", None, None)).unwrap();
    update.as_object_mut().unwrap().remove("assignedTo");
    let bodies = [
        ("ContactDndUpdate", fresh("ContactDndUpdate", "wh-1", None, None)),
        ("InboundMessage", br#"{"type":"InboundMessage","locationId":"l","webhookId":"wh-2"}"#.to_vec()),
        ("ContactUpdate", serde_json::to_vec(&update).unwrap()),
    ];
    for (name, body) in bodies {
        let response = post_ghl(&app, &body).await;
        assert_eq!(response.status(), 200, "{name}");
        assert_eq!(response.json::<Value>().await.unwrap()["ignored"], true);
    }
    assert_eq!(app.queue.stats().await.unwrap().pending, 0);
}

#[tokio::test]
async fn a_deleted_contact_is_forgotten_so_its_tags_count_as_new_again() {
    let app = ghl_app().await;
    let tagged = fresh("ContactTagUpdate", "wh-1", Some("c-1"), Some(&["hot-lead"]));
    assert_eq!(post_ghl(&app, &tagged).await.status(), 202);
    app.wait_until_idle().await;
    let deleted = fresh("ContactDelete", "wh-2", Some("c-1"), None);
    assert_eq!(post_ghl(&app, &deleted).await.status(), 202);
    let again = fresh("ContactTagUpdate", "wh-3", Some("c-1"), Some(&["hot-lead"]));
    let response = post_ghl(&app, &again).await;
    assert_eq!(response.json::<Value>().await.unwrap()["operations"], 2, "hot-lead is new again");
}

#[tokio::test]
async fn when_the_queue_is_down_without_a_spool_the_ghl_source_answers_429_so_the_crm_retries() {
    let mut redis = crate::support::redis::RedisServer::start().await;
    let redis_url = format!("redis_url = \"{}\"\n[spool]\nmax_bytes = 0", redis.url());
    let app = TestApp::builder().rules(GHL_RULES).ghl_keys(&test_keys()).config(&redis_url).spawn().await;
    redis.stop();
    let body = fresh("ContactTagUpdate", "wh-1", Some("c-1"), Some(&["hot-lead"]));
    let response = post_ghl(&app, &body).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
}

#[tokio::test]
async fn a_workflow_webhook_with_a_bearer_token_and_custom_data_assigns_followers() {
    let app = TestApp::builder().rules(GHL_RULES).spawn().await;
    let body = serde_json::json!({
        "contact_id": "c-7", "location": {"id": LOCATION}, "tags": "hot-lead, new lead",
        "customData": {"event": "tag_added", "tag": "hot-lead"}
    })
    .to_string();
    let response = app.post("workflow", body.as_bytes(), &[("authorization", "Bearer wf-secret")]).await;
    assert_eq!(response.status(), 202);
    assert!(app.upstream.wait_for_followers("c-7", &["usr_h1", "usr_h2"], WAIT).await);
    assert_eq!(app.post("workflow", body.as_bytes(), &[]).await.status(), 401);
}

const NAMED_RULES: &str = r#"
[users]
closer = "usr_closer"

[[rule]]
name = "won-by-name"
when = { event = "stage_changed", pipeline = "Sales", stage = "closed won" }
then = { add = ["closer"] }

[[rule]]
name = "stage-that-does-not-exist"
when = { event = "stage_changed", stage = "Signed In Blood" }
then = { add = ["closer"] }
"#;

#[tokio::test]
async fn rules_written_with_pipeline_and_stage_names_fire_for_app_webhooks_that_carry_ids() {
    let upstream = std::sync::Arc::new(crate::support::upstream::FakeUpstream::start().await);
    upstream.set_pipelines(
        LOCATION,
        &[(
            "pip2Wx3Yz4Ab5Cd6Ef7G",
            "Sales",
            &[
                ("3f1c2b7e-9a4d-4e8b-b6c1-2d5e7f9a0b13", "New Lead"),
                ("8a6e4c2b-1d3f-4a5b-9c7e-0f2d4b6a8c91", "Closed Won"),
            ],
        )],
    );
    let app =
        TestApp::builder().rules(NAMED_RULES).ghl_keys(&test_keys()).spawn_with(std::sync::Arc::clone(&upstream)).await;
    let won = fresh("OpportunityStageUpdate", "wh-1", Some("ctc-1"), None);
    let response = post_ghl(&app, &won).await;
    assert_eq!(response.json::<Value>().await.unwrap()["operations"], 1);
    assert!(upstream.wait_for_followers("ctc-1", &["usr_closer"], WAIT).await);
    // The pipelines are cached: a second event does not fetch them again.
    let again = fresh("OpportunityStageUpdate", "wh-2", Some("ctc-2"), None);
    assert_eq!(post_ghl(&app, &again).await.status(), 202);
    assert!(upstream.wait_for_followers("ctc-2", &["usr_closer"], WAIT).await);
    assert_eq!(upstream.calls_for("pipelines").len(), 1);
    // The rule naming a stage this location does not have is reported, with its name.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("followd_rule_unresolved_names_total") && l.contains("stage-that-does-not-exist")),
        "{metrics}"
    );
    assert!(!metrics.contains("rule_unresolved_names_total{rule=\"won-by-name\"}"), "{metrics}");
}

#[tokio::test]
async fn in_a_dry_run_names_match_only_where_the_payload_carries_them() {
    let app = TestApp::builder().rules(NAMED_RULES).ghl_keys(&test_keys()).dry_run().spawn().await;
    let won = fresh("OpportunityStageUpdate", "wh-1", Some("ctc-1"), None);
    assert_eq!(post_ghl(&app, &won).await.json::<Value>().await.unwrap()["operations"], 0);
    assert!(app.upstream.calls_for("pipelines").is_empty());
    // A workflow sender can put names in its Custom Data: those match.
    let body = serde_json::json!({
        "contact_id": "c-7", "location": {"id": LOCATION},
        "customData": {"event": "stage_changed", "pipeline": "Sales", "stage": "Closed Won"}
    })
    .to_string();
    let response = app.post("workflow", body.as_bytes(), &[("authorization", "Bearer wf-secret")]).await;
    assert_eq!(response.json::<Value>().await.unwrap()["operations"], 1);
}

#[tokio::test]
async fn an_opportunity_created_then_moved_carries_its_previous_stage_and_a_status_update_fires_too() {
    let rules = r#"
[users]
closer = "usr_closer"
setter = "usr_setter"

[[rule]]
name = "moved-on-from-new-lead"
when = { event = "stage_changed", from_stage = "3f1c2b7e-9a4d-4e8b-b6c1-2d5e7f9a0b13", stage = "8a6e4c2b-1d3f-4a5b-9c7e-0f2d4b6a8c91" }
then = { add = ["closer"] }

[[rule]]
name = "any-stage-change"
when = { event = "stage_changed", pipeline = "pip2Wx3Yz4Ab5Cd6Ef7G" }
then = { add = ["setter"] }
"#;
    let app = TestApp::builder().rules(rules).ghl_keys(&test_keys()).spawn().await;
    // Created at "New Lead": no previous stage, so only the pipeline rule fires.
    let created = fresh("OpportunityCreate", "wh-1", Some("ctc-1"), None);
    assert_eq!(post_ghl(&app, &created).await.json::<Value>().await.unwrap()["operations"], 1);
    // Moved to the won stage: the previous stage comes from the store.
    let moved = fresh("OpportunityStageUpdate", "wh-2", Some("ctc-1"), None);
    assert_eq!(post_ghl(&app, &moved).await.json::<Value>().await.unwrap()["operations"], 2);
    // A status update (won) is a stage_changed event as well.
    let status = fresh("OpportunityStatusUpdate", "wh-3", Some("ctc-1"), None);
    assert_eq!(post_ghl(&app, &status).await.json::<Value>().await.unwrap()["operations"], 1);
    assert!(app.upstream.wait_for_followers("ctc-1", &["usr_closer", "usr_setter"], WAIT).await);
}

#[tokio::test]
async fn a_standard_webhooks_source_verifies_through_http_and_refuses_old_timestamps() {
    use base64::Engine;
    use hmac::Mac;
    let key = b"a-standard-webhooks-test-key";
    let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
    let source = format!(
        "[[source]]\nname = \"std\"\nformat = \"generic\"\nverify = {{ scheme = \"standard-webhooks\", secrets = [\"{secret}\"] }}\n"
    );
    // Appended after the builder's own tables: a [[source]] array entry may come last.
    let app = TestApp::builder().rules(GHL_RULES).spawn_with_tail(&source).await;
    let body = crate::support::app::tag_event("std-1", "tag_added", "c-1", "hot-lead");
    let signed = |timestamp: i64| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(format!("msg_1.{timestamp}.").as_bytes());
        mac.update(&body);
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
    };
    let now = chrono::Utc::now().timestamp();
    let send = |ts: i64, sig: String| {
        let (app, body) = (&app, &body);
        async move {
            let ts = ts.to_string();
            let headers = [("webhook-id", "msg_1"), ("webhook-timestamp", ts.as_str()), ("webhook-signature", &sig)];
            app.post("std", body, &headers).await.status()
        }
    };
    assert_eq!(send(now - 400, signed(now - 400)).await, 401, "older than 5 minutes");
    assert_eq!(send(now, signed(now - 1)).await, 401, "signature over another time");
    assert_eq!(send(now, signed(now)).await, 202);
    assert!(app.upstream.wait_for_followers("c-1", &["usr_h1", "usr_h2"], WAIT).await);
}
