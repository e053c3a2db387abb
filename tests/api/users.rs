//! The CRM's users: `followd users` lists a location's users as `GET /users/` answers (checked against the
//! CRM's own `users.json`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::app::{Store, TestApp, tag_event};
use crate::support::ghl::{ed25519_signature, vectors_path};
use crate::support::process::write_config;
use crate::support::upstream::{FakeUpstream, TOKEN};

/// A fake CRM whose loc-1 has alice (sees what she follows), gone (deleted) and admin (sees everything).
async fn fake_crm() -> FakeUpstream {
    let upstream = FakeUpstream::start().await;
    upstream.set_users(
        "loc-1",
        &[
            ("usr_alice", "Alice Example", "alice@example.com", false, true),
            ("usr_gone", "Gone Example", "gone@example.com", true, true),
            ("usr_admin", "Admin Example", "admin@example.com", false, false),
        ],
    );
    upstream
}

#[tokio::test]
async fn followd_users_lists_a_location_s_users_with_deleted_and_what_they_see() {
    let upstream = fake_crm().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, None);
    let run = |json: bool| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_followd"));
        command.args(["users", "--location", "loc-1", "--config"]).arg(&config);
        if json {
            command.arg("--json");
        }
        async move { tokio::time::timeout(Duration::from_secs(30), command.output()).await.unwrap().unwrap() }
    };
    let output = run(true).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let users: Value = serde_json::from_slice(&output.stdout).unwrap();
    let summary: Vec<(String, bool, bool)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            let id = u["id"].as_str().unwrap().to_owned();
            (id, u["deleted"].as_bool().unwrap(), u["permissions"]["assignedDataOnly"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(
        summary,
        [("usr_alice".into(), false, true), ("usr_gone".into(), true, true), ("usr_admin".into(), false, false)]
    );
    let text = String::from_utf8(run(false).await.stdout).unwrap();
    let line = |id: &str| text.lines().find(|l| l.starts_with(id)).unwrap_or_default().to_owned();
    assert!(line("usr_gone").contains("yes"), "{text}");
    assert!(line("usr_admin").contains("every contact"), "{text}");
    assert!(line("usr_alice").contains("only what they own or follow"), "{text}");
    assert!(upstream.take_violations().is_empty(), "the request follows the CRM's users.json");
    let calls = upstream.calls_for("users");
    assert_eq!(calls.len(), 2, "{calls:?}");
    // Without --location: every location the configuration has a token for, by location.
    let text = std::fs::read_to_string(&config).unwrap();
    let tokens = format!("\n[upstream.tokens]\n\"loc-1\" = \"{TOKEN}\"\n\"loc-2\" = \"{TOKEN}\"\n");
    std::fs::write(&config, text + &tokens).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_followd"));
    command.args(["users", "--json", "--config"]).arg(&config);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output()).await.unwrap().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let by_location: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(by_location["loc-1"].as_array().map(Vec::len), Some(3), "{by_location}");
    assert_eq!(by_location["loc-2"].as_array().map(Vec::len), Some(0), "{by_location}");
}

#[tokio::test]
async fn rules_check_online_refuses_unknown_and_deleted_users_and_warns_about_those_who_see_everything() {
    let upstream = fake_crm().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, None);
    let rules = "[users]\nalice = \"usr_alice\"\ngone = \"usr_gone\"\nadmin = \"usr_admin\"\nghost = \"usr_ghost\"\n\
                 [[rule]]\nname = \"scoped\"\nlocations = [\"loc-1\"]\nwhen = { event = \"tag_added\", tag = \"a\" }\n\
                 then = { add = [\"alice\", \"gone\"] }\n\
                 [[rule]]\nname = \"everywhere\"\nwhen = { event = \"tag_added\", tag = \"b\" }\n\
                 then = { add = [\"admin\", \"ghost\"] }\n";
    std::fs::write(dir.path().join("rules/rules.toml"), rules).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_followd"));
    command.args(["rules", "check", "--online", "--location", "loc-1", "--config"]).arg(&config);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output()).await.unwrap().unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert_eq!(output.status.code(), Some(1), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    let expected = [
        "rules.toml:3:8: error: usr_gone was deleted in location loc-1 (rule `scoped`)",
        "rules.toml:4:9: warning: usr_admin sees every contact of location loc-1 anyway",
        "rules.toml:5:9: error: usr_ghost is not a user of location loc-1 (rule `everywhere`)",
        "2 error(s), 1 warning(s) online in 1 location(s)",
    ];
    for line in expected {
        assert!(text.lines().any(|l| l.ends_with(line) || l.contains(line)), "expected `{line}` in:\n{text}");
    }
    assert!(!text.contains("usr_alice"), "alice is fine: {text}");
    assert!(upstream.take_violations().is_empty());
}

/// Users named by email: offline `rules check` says they are looked up at delivery; `--online` finds the
/// address in the location (without case) and refuses one nobody has, at `file:line:column`.
#[tokio::test]
async fn email_aliases_are_a_warning_offline_and_checked_online() {
    let upstream = fake_crm().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, None);
    let rules = "[users]\nann = \"email:Alice@Example.com\"\nnobody = \"email:nobody@example.com\"\n\
                 [[rule]]\nname = \"by-email\"\nwhen = { event = \"tag_added\", tag = \"a\" }\n\
                 then = { add = [\"ann\", \"nobody\"] }\n";
    std::fs::write(dir.path().join("rules/rules.toml"), rules).unwrap();
    let run = |online: bool| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_followd"));
        command.args(["rules", "check"]);
        if online {
            command.args(["--online", "--location", "loc-1"]);
        }
        command.arg("--config").arg(&config);
        async move { tokio::time::timeout(Duration::from_secs(30), command.output()).await.unwrap().unwrap() }
    };
    let offline = run(false).await;
    let text = String::from_utf8(offline.stdout).unwrap();
    assert!(offline.status.success(), "{text}");
    assert!(text.contains("rules.toml:2:7: warning: alice@example.com is looked up by email"), "{text}");
    assert!(text.contains(", 2 warning(s)"), "{text}");
    let online = run(true).await;
    let text = String::from_utf8(online.stdout).unwrap();
    assert_eq!(online.status.code(), Some(1), "{text}");
    assert!(
        text.contains("rules.toml:3:10: error: no user of location loc-1 has the email nobody@example.com"),
        "{text}"
    );
    assert!(text.contains("1 error(s), 0 warning(s)"), "alice's address is found: {text}");
}

/// A rule naming users by email: delivery adds the location's user with that address, and skips (audited) an
/// address nobody there has.
async fn a_user_named_by_email_is_added_by_their_id(store: Store) {
    let rules = "[users]\nann = \"email:ALICE@example.com\"\nnobody = \"email:nobody@example.com\"\n\
                 [[rule]]\nname = \"by-email\"\nwhen = { event = \"tag_added\", tag = \"vip\" }\n\
                 then = { add = [\"ann\", \"nobody\"] }\n";
    let app = TestApp::builder().store(store).rules(rules).spawn().await;
    app.upstream.set_users("loc-1", &[("usr_alice", "Alice Example", "alice@example.com", false, true)]);
    vip(&app, "e1", "c-1").await;
    assert_eq!(app.upstream.followers_of("c-1"), set(&["usr_alice"]));
    let location = followd::event::LocationId::parse("loc-1").unwrap();
    let contact = followd::event::ContactId::parse("c-1").unwrap();
    let trail = app.stores.audit.audit(Some(&location), &contact).await.unwrap();
    let results: Vec<String> = trail.iter().map(|e| e.result.to_string()).collect();
    assert!(
        results
            .iter()
            .any(|r| r == "skipped: no user of location loc-1 has the email nobody@example.com (rule `by-email`)"),
        "{results:?}"
    );
    assert!(app.upstream.take_violations().is_empty());
}

/// `UserDelete` (format `ghl`, signed): bob leaves the round robin with the next event, carol's adds are
/// skipped at delivery (audited), the status page names the rule that still names them, and a redelivery
/// changes nothing.
async fn a_user_the_crm_deleted_is_skipped_by_round_robins_and_never_added_again(store: Store) {
    let rules = "[users]\nalice = \"usr_alice\"\nbob = \"usr_bob\"\ncarol = \"usr_carol\"\nsales = [\"alice\", \"bob\"]\n\
                 [[rule]]\nname = \"leads\"\nwhen = { event = \"tag_added\", tag = \"vip\" }\n\
                 then = { round_robin = \"sales\", add = [\"carol\"] }\n";
    let keys = vec![vectors_path("keys/test_ed25519_public.pem")];
    let app = TestApp::builder().store(store).rules(rules).ghl_keys(&keys).spawn().await;
    let delete = |user: &str| {
        serde_json::to_vec(&json!({"type": "UserDelete", "locationId": "loc-1", "companyId": "co-1", "id": user,
            "firstName": "Gone", "lastName": "User", "webhookId": format!("wh-{user}")}))
        .unwrap()
    };
    vip(&app, "e1", "c-1").await;
    assert_eq!(app.upstream.followers_of("c-1"), set(&["usr_alice", "usr_carol"]));
    let body = delete("usr_bob");
    let response = app.post("ghl", &body, &[("x-ghl-signature", &ed25519_signature(&body))]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"user": "usr_bob", "deleted": true, "changed": true}));
    vip(&app, "e2", "c-2").await;
    assert_eq!(app.upstream.followers_of("c-2"), set(&["usr_alice", "usr_carol"]), "bob's turn went to alice");
    let body = delete("usr_carol");
    assert_eq!(app.post("ghl", &body, &[("x-ghl-signature", &ed25519_signature(&body))]).await.status(), 200);
    vip(&app, "e3", "c-3").await;
    assert_eq!(app.upstream.followers_of("c-3"), set(&["usr_alice"]), "carol is never added again");
    let location = followd::event::LocationId::parse("loc-1").unwrap();
    let contact = followd::event::ContactId::parse("c-3").unwrap();
    let trail = app.stores.audit.audit(Some(&location), &contact).await.unwrap();
    assert!(
        trail.iter().any(|e| e.result.to_string().starts_with("skipped: usr_carol was deleted in the CRM")),
        "{trail:?}"
    );
    let again = app.post("ghl", &body, &[("x-ghl-signature", &ed25519_signature(&body))]).await;
    assert_eq!(again.json::<Value>().await.unwrap()["changed"], json!(false), "a redelivery changes nothing");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    // Both stores' tests share the process's metrics registry: at least this test's two.
    let counted = metrics.lines().find_map(|l| l.strip_prefix("followd_users_deleted_total ")?.parse::<u64>().ok());
    assert!(counted.is_some_and(|n| n >= 2), "{metrics}");
    let page = app.get("/").await.text().await.unwrap();
    assert!(page.contains("Users the CRM deleted") && page.contains("<td class=\"bad\">leads</td>"), "{page}");
}

async fn vip(app: &TestApp, id: &str, contact: &str) {
    assert_eq!(app.post_signed(&tag_event(id, "tag_added", contact, "vip")).await.status(), 202);
    app.wait_until_idle().await;
}

fn set(users: &[&str]) -> std::collections::BTreeSet<String> {
    users.iter().map(|u| (*u).to_owned()).collect()
}

on_both_stores!(
    a_user_the_crm_deleted_is_skipped_by_round_robins_and_never_added_again,
    a_user_named_by_email_is_added_by_their_id,
);
