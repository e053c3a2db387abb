//! Rules as users run them: the commands on the shipped examples, and a broken edit on a live service.

use std::time::Duration;

use serde_json::Value;

use crate::support::app::{TestApp, tag_event};
use crate::support::eventually;

fn followd(args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_followd"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run followd");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
}

#[test]
fn every_shipped_rule_file_passes_rules_check_and_its_test_cases() {
    let (ok, out) = followd(&["rules", "check", "--rules", "rules"]);
    assert!(ok, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
    let (ok, out) = followd(&["rules", "test", "--rules", "rules"]);
    assert!(ok, "{out}");
    assert!(out.lines().last().is_some_and(|l| l.ends_with(" passed, 0 failed")), "{out}");
}

#[test]
fn rules_check_exits_1_with_file_line_and_column_for_each_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[users]\nalice = \"usr_a\"\n\n[[rule]]\nname = \"r\"\nwhen = { event = \"tag_added\", tga = \"vip\" }\nthen = { add = [\"alce\"] }\n",
    )
    .unwrap();
    let (ok, out) = followd(&["rules", "check", "--rules", dir.path().to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("bad.toml:6:"), "{out}");
    assert!(out.contains("bad.toml:7:"), "{out}");
    assert!(out.contains("alice"), "the unknown alias suggests the known one: {out}");
}

#[tokio::test]
async fn a_broken_edit_keeps_the_old_rules_live_and_shows_on_readyz_until_fixed() {
    let app = TestApp::spawn().await;
    let file = app.dir.path().join("rules/rules.toml");
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, good.replace("then = { add = [\"alice\", \"bob\"] }", "then = { add = [\"alcie\"] }"))
        .unwrap();
    let reported = eventually(Duration::from_secs(15), || async {
        let body: Value = app.get("/readyz").await.json().await.unwrap_or_default();
        body["rules_reload"]["last_error"].as_str().is_some_and(|e| e.contains("rules.toml:") && e.contains("alcie"))
    })
    .await;
    assert!(reported, "{:?}", app.get("/readyz").await.text().await);
    assert_eq!(app.get("/readyz").await.status(), 200, "the previous rules still serve");
    // The old rules still fire.
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], Duration::from_secs(15)).await);
    // The fix takes effect: now vip adds only bob.
    std::fs::write(&file, good.replace("then = { add = [\"alice\", \"bob\"] }", "then = { add = [\"bob\"] }")).unwrap();
    let fixed = eventually(Duration::from_secs(15), || async {
        let body: Value = app.get("/readyz").await.json().await.unwrap_or_default();
        body["rules_reload"]["last_error"].is_null()
    })
    .await;
    assert!(fixed);
    assert_eq!(app.post_signed(&tag_event("e2", "tag_added", "c-2", "vip")).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-2", &["usr_bob"], Duration::from_secs(15)).await);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    // Counted, not only present: the counter is exposed at 0 from the start.
    assert!(
        metrics.lines().any(|l| l.starts_with("followd_rules_reload_failures_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}
