//! The CRM's users: `followd users` lists a location's users as `GET /users/` answers (checked against the
//! CRM's own `users.json`).

use std::time::Duration;

use serde_json::Value;

use crate::support::process::write_config;
use crate::support::upstream::FakeUpstream;

#[tokio::test]
async fn followd_users_lists_a_location_s_users_with_deleted_and_what_they_see() {
    let upstream = FakeUpstream::start().await;
    upstream.set_users(
        "loc-1",
        &[
            ("usr_alice", "Alice Example", "alice@example.com", false, true),
            ("usr_gone", "Gone Example", "gone@example.com", true, true),
            ("usr_admin", "Admin Example", "admin@example.com", false, false),
        ],
    );
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
