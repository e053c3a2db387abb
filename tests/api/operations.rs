//! Running it for real: secrets never leak, logs are structured.

use std::time::Duration;

use serde_json::Value;

use crate::support::app::{SIGNATURE_HEADER, sign, tag_event};
use crate::support::eventually;
use crate::support::process::{Followd, write_config};
use crate::support::upstream::FakeUpstream;

const WAIT: Duration = Duration::from_secs(20);

/// Secrets that must never appear in a log line, an error body or a metric.
const CANARIES: [&str; 4] = [
    "CANARY-webhook-secret-7f3a",
    "CANARY-token-scheme-91bc",
    "CANARY-location-token-55de",
    "CANARY-oauth-client-secret-0c1d",
];

#[tokio::test]
async fn canary_secrets_appear_in_no_log_line_error_body_or_metric() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, None);
    let [hmac_secret, token_secret, location_token, client_secret] = CANARIES;
    let extra = format!(
        r#"
[upstream.tokens]
loc-canary = "env:CANARY_LOCATION_TOKEN"
[upstream.oauth]
client_id = "test-client"
client_secret = "{client_secret}"
[upstream.oauth.refresh_tokens]
loc-oauth = "CANARY-refresh-never-valid"
[[source]]
name = "canary"
format = "generic"
verify = {{ scheme = "hmac-sha256", secrets = ["{hmac_secret}"] }}
[[source]]
name = "canary-token"
format = "generic"
verify = {{ scheme = "token", tokens = ["env:CANARY_TOKEN_SCHEME"] }}
"#
    );
    let text = std::fs::read_to_string(&config).unwrap() + &extra;
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("followd.log");
    let env = [("CANARY_LOCATION_TOKEN", location_token), ("CANARY_TOKEN_SCHEME", token_secret), ("RUST_LOG", "debug")];
    let process = Followd::start_with(&config, crate::support::free_port(), &[], &env, Some(&log)).await;

    let client = reqwest::Client::new();
    let mut bodies = Vec::new();
    let mut send = async |source: &str, body: &[u8], headers: &[(&str, &str)]| {
        let mut request = client
            .post(format!("{}/webhooks/{source}", process.addr))
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        bodies.push(response.text().await.unwrap());
    };
    let event = |id: &str, location: &str| {
        serde_json::json!({"id": id, "type": "tag_added", "location_id": location, "contact_id": "c-1", "tag": "vip"})
            .to_string()
            .into_bytes()
    };
    // Accepted, refused by the CRM (the canary token is not the fake's), OAuth refresh refused, bad signatures,
    // a wrong token carrying a canary-like value, malformed JSON.
    let good = event("e1", "loc-canary");
    send("canary", &good, &[(SIGNATURE_HEADER, &sign(hmac_secret, &good))]).await;
    let oauth = event("e2", "loc-oauth");
    send("canary", &oauth, &[(SIGNATURE_HEADER, &sign(hmac_secret, &oauth))]).await;
    send("canary", &good, &[(SIGNATURE_HEADER, "sha256=00")]).await;
    send("canary-token", &good, &[("x-followd-token", token_secret)]).await;
    send("canary-token", &event("e3", "loc-1"), &[("x-followd-token", "wrong")]).await;
    send("canary", b"{not json", &[(SIGNATURE_HEADER, &sign(hmac_secret, b"{not json"))]).await;
    assert!(eventually(WAIT, || async { upstream.calls_for("c-1").iter().any(|c| c.status == 401) }).await);
    assert!(eventually(WAIT, || async { upstream.calls_for("oauth").iter().any(|c| c.status == 401) }).await);
    bodies.push(reqwest::get(format!("{}/metrics", process.addr)).await.unwrap().text().await.unwrap());
    bodies.push(reqwest::get(format!("{}/readyz", process.addr)).await.unwrap().text().await.unwrap());
    assert!(process.terminate().await.success());

    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("sub-account paused"), "the refused token should be logged: {logged}");
    for canary in CANARIES {
        assert!(!logged.contains(canary), "{canary} is in the log");
        for body in &bodies {
            assert!(!body.contains(canary), "{canary} is in a response: {body}");
        }
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_webhook_span_fields() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, None);
    let log = dir.path().join("followd.log");
    let env = [("FOLLOWD_LOG_FORMAT", "json")];
    let process = Followd::start_with(&config, crate::support::free_port(), &[], &env, Some(&log)).await;
    let body = tag_event("evt-json", "tag_added", "c-1", "vip");
    assert_eq!(crate::support::process::post(&process.addr, &body).await.status(), 202);
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    assert!(process.terminate().await.success());
    let logged = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = logged
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let accepted = lines.iter().find(|l| l["message"] == "accepted").expect("an `accepted` line");
    let span = &accepted["span"];
    assert_eq!(span["source"], "test", "{accepted}");
    assert!(span["event_ids"].as_str().is_some_and(|ids| ids.contains("evt-json")), "{accepted}");
    let delivered = lines.iter().find(|l| l["message"] == "delivered").expect("a `delivered` line");
    assert_eq!(delivered["span"]["contact_id"], "c-1", "{delivered}");
    assert_eq!(delivered["span"]["location_id"], "loc-1", "{delivered}");
}

#[tokio::test]
async fn the_audit_command_shows_each_change_with_its_rule_and_event() {
    let upstream = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &upstream.url, None);
    let process = Followd::start(&config, crate::support::free_port(), &[]).await;
    let post = crate::support::process::post;
    assert_eq!(post(&process.addr, &tag_event("evt-a", "tag_added", "c-1", "vip")).await.status(), 202);
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    assert_eq!(post(&process.addr, &tag_event("evt-b", "tag_removed", "c-1", "vip")).await.status(), 202);
    assert!(upstream.wait_for_followers("c-1", &[], WAIT).await);
    assert!(process.terminate().await.success());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_followd"))
        .args(["audit", "c-1", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    // Both were removed again: none of the contact's followers is followd's.
    assert_eq!(lines[4], "followd's followers of c-1 in location loc-1 (oldest first): none; any other is a person's");
    let lines = &lines[..4];
    assert!(
        lines[0].contains("remove usr_")
            && lines[0].contains("vip-removed-drops-account-team")
            && lines[0].contains("evt-b"),
        "{text}"
    );
    assert!(
        lines[3].contains("add usr_") && lines[3].contains("vip-gets-account-team") && lines[3].contains("evt-a"),
        "{text}"
    );
    assert!(lines.iter().all(|l| l.contains("delivered") && l.contains("location loc-1")), "{text}");
}
