//! The CRM's users: `followd users` lists a location's users as `GET /users/` answers (checked against the
//! CRM's own `users.json`).

use std::time::Duration;

use serde_json::Value;

use crate::support::process::write_config;
use crate::support::upstream::FakeUpstream;

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
