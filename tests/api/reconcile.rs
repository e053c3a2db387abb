//! `followd reconcile`, the real binary against the fake CRM: a plan lists exactly the changes a location
//! needs (also for a rule edit not live yet), an apply converges the CRM to it and changes nothing else, and a
//! run stopped with SIGKILL resumes and ends in the same state, with no change made twice.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::app::Store;
use crate::support::eventually;
use crate::support::process::{Followd, write_config};
use crate::support::redis::RedisServer;
use crate::support::upstream::FakeUpstream;

const WAIT: Duration = Duration::from_secs(60);
const CONTACTS: usize = 300;

const RULES: &str = r#"
[users]
alice = "usr_alice"
bob = "usr_bob"
carol = "usr_carol"
sdr_team = ["usr_s1", "usr_s2"]

[[rule]]
name = "vip-gets-account-team"
when = { event = "tag_added", tag = "vip" }
then = { add = ["alice", "bob"] }

[[rule]]
name = "vip-removed-drops-account-team"
when = { event = "tag_removed", tag = "vip" }
then = { remove = ["alice", "bob"] }

[[rule]]
name = "facebook-leads-round-robin"
when = { event = "contact_created", source = "Facebook Ads" }
then = { round_robin = "sdr_team" }
"#;

/// A location of [`CONTACTS`] contacts in five kinds, by `i % 5`:
/// 0: vip, nobody follows (needs alice and bob); 1: vip, alice and bob follow (right);
/// 2: no vip, bob follows by a person's hand (right under managed); 3: a Facebook lead an SDR follows (right);
/// 4: a Facebook lead nobody follows (needs one SDR).
fn seed(upstream: &FakeUpstream) {
    for i in 0..CONTACTS {
        let id = format!("c-{i:03}");
        match i % 5 {
            0 => upstream.set_contact(&id, "loc-1", &["vip"], None),
            1 => {
                upstream.set_contact(&id, "loc-1", &["vip", "other"], None);
                upstream.set_followers(&id, &["usr_alice", "usr_bob"]);
            }
            2 => {
                upstream.set_contact(&id, "loc-1", &["other"], None);
                upstream.set_followers(&id, &["usr_bob"]);
            }
            3 => {
                upstream.set_contact(&id, "loc-1", &[], Some("Facebook Ads"));
                upstream.set_followers(&id, &["usr_s2"]);
            }
            _ => upstream.set_contact(&id, "loc-1", &[], Some("Facebook Ads")),
        }
    }
}

/// A configuration for the binary: the rules above, pages of 100, and the given extra TOML.
fn config(dir: &Path, upstream: &FakeUpstream, redis: Option<&str>, extra: &str) -> PathBuf {
    let path = write_config(dir, &upstream.url, redis);
    std::fs::write(dir.join("rules/rules.toml"), RULES).unwrap();
    let text = std::fs::read_to_string(&path).unwrap().replace("[upstream]", &format!("{extra}\n[upstream]"));
    std::fs::write(&path, format!("{text}\n[reconcile]\npage_size = 100\n")).unwrap();
    path
}

/// Runs the binary to its end. Async: the fake CRM serves on this test's runtime, which must not block.
async fn followd(config: &Path, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_followd"));
    command.args(args).arg("--config").arg(config).output().await.unwrap()
}

async fn plan(config: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["reconcile", "--location", "loc-1", "--plan", "--json"];
    args.extend(extra);
    let output = followd(config, &args).await;
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

/// Starts an apply of `loc-1` in the background, to be killed or waited on.
fn spawn_apply(config: &Path) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_followd"))
        .args(["reconcile", "--location", "loc-1", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn rule<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["rules"].as_array().unwrap().iter().find(|r| r["rule"] == name).unwrap_or_else(|| panic!("{name}: {plan}"))
}

#[tokio::test]
async fn a_plan_lists_exactly_the_changes_the_location_needs_and_changes_nothing() {
    let upstream = FakeUpstream::start().await;
    seed(&upstream);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &upstream, None, "");
    let plan = plan(&config, &[]).await;
    let fifth = (CONTACTS / 5) as u64;
    assert_eq!(plan["location"], "loc-1");
    assert_eq!(plan["contacts_read"], CONTACTS as u64);
    assert_eq!(plan["contacts_changed"], 2 * fifth);
    assert_eq!((plan["add"].as_u64(), plan["remove"].as_u64()), (Some(3 * fifth), Some(0)));
    // Pages of 100: three full ones and the empty fourth that says the third was the last; one POST per change.
    assert_eq!(plan["calls"], 4 + 2 * fifth, "{plan}");
    assert!(plan["eta_seconds"].as_u64().unwrap() > 0);
    let vip = rule(&plan, "vip-gets-account-team");
    assert_eq!(
        (vip["contacts"].as_u64(), vip["add"].as_u64(), vip["remove"].as_u64()),
        (Some(fifth), Some(2 * fifth), Some(0))
    );
    assert_eq!(rule(&plan, "facebook-leads-round-robin")["add"], fifth);
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len() as u64, 2 * fifth);
    let first = changes.iter().find(|c| c["contact_id"] == "c-000").unwrap();
    assert_eq!(first["add"], serde_json::json!(["usr_alice", "usr_bob"]));
    assert!(changes.iter().all(|c| {
        let i: usize = c["contact_id"].as_str().unwrap()[2..].parse().unwrap();
        matches!(i % 5, 0 | 4)
    }));
    // Only reads were made.
    assert!(upstream.calls().iter().all(|c| c.method == "SEARCH"), "a plan must not write");
    assert_eq!(upstream.searches().len(), 4);

    // --ownership any lets the absent vip's rule remove bob where a person added him.
    let any = self::plan(&config, &["--ownership", "any"]).await;
    assert_eq!(any["remove"], fifth);
    // A rule edit under review: carol joins the account team, for every vip contact.
    let edited = dir.path().join("edited");
    std::fs::create_dir_all(&edited).unwrap();
    std::fs::write(
        edited.join("rules.toml"),
        RULES.replace(r#"add = ["alice", "bob"]"#, r#"add = ["alice", "bob", "carol"]"#),
    )
    .unwrap();
    let edit = self::plan(&config, &["--rules", edited.to_str().unwrap()]).await;
    let vip = rule(&edit, "vip-gets-account-team");
    assert_eq!((vip["contacts"].as_u64(), vip["add"].as_u64()), (Some(2 * fifth), Some(3 * fifth + fifth)));
}

/// A user named by email who already follows is no change; where they do not, the plan adds them by that
/// name (delivery looks the address up).
#[tokio::test]
async fn a_plan_knows_that_a_user_named_by_email_already_follows() {
    let upstream = FakeUpstream::start().await;
    upstream.set_users("loc-1", &[("usr_alice", "Alice Example", "alice@example.com", false, true)]);
    upstream.set_contact("c-a", "loc-1", &["vip"], None);
    upstream.set_followers("c-a", &["usr_alice"]);
    upstream.set_contact("c-b", "loc-1", &["vip"], None);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &upstream, None, "");
    let rules = "[users]\nalice = \"email:alice@example.com\"\n[[rule]]\nname = \"vip\"\n\
                 when = { event = \"tag_added\", tag = \"vip\" }\nthen = { add = [\"alice\"] }\n";
    std::fs::write(dir.path().join("rules/rules.toml"), rules).unwrap();
    let plan = plan(&config, &[]).await;
    let changes = plan["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{plan}");
    assert_eq!(
        (changes[0]["contact_id"].as_str(), &changes[0]["add"]),
        (Some("c-b"), &serde_json::json!(["email:alice@example.com"]))
    );
    assert!(upstream.take_violations().is_empty());
}

/// Who follows each contact now, at the fake.
fn state(upstream: &FakeUpstream) -> Vec<BTreeSet<String>> {
    (0..CONTACTS).map(|i| upstream.followers_of(&format!("c-{i:03}"))).collect()
}

fn converged(upstream: &FakeUpstream) -> bool {
    state(upstream).iter().enumerate().all(|(i, followers)| {
        let names: Vec<&str> = followers.iter().map(String::as_str).collect();
        match i % 5 {
            0 | 1 => names == ["usr_alice", "usr_bob"],
            2 => names == ["usr_bob"],
            3 => names == ["usr_s2"],
            _ => names == ["usr_s1"] || names == ["usr_s2"],
        }
    })
}

#[tokio::test]
async fn an_apply_converges_the_crm_to_the_plan_and_a_run_killed_midway_resumes_without_repeating_a_change() {
    let redis = RedisServer::start().await;
    let upstream = FakeUpstream::start().await;
    seed(&upstream);
    let dir = tempfile::tempdir().unwrap();
    // A slow budget, so the run is still going when it is killed: 40 calls/s, half of it for the reconcile.
    let config = config(dir.path(), &upstream, Some(&redis.url()), "[rate_limit]\nper_location = \"40/1s\"");
    let worker = Followd::start(&config, crate::support::free_port(), &["--role", "worker"]).await;

    let mut run = spawn_apply(&config);
    // Kill it once some of the changes have gone out, but not all.
    let midway =
        eventually(WAIT, || async { upstream.calls().iter().filter(|c| c.method == "POST").count() >= 10 }).await;
    assert!(midway, "the run made no change");
    run.kill().await.unwrap();
    assert!(!converged(&upstream), "the run finished before it could be interrupted");
    let status = followd(&config, &["reconcile", "status", "--json"]).await;
    let runs: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(runs[0]["state"], "running", "{runs}");

    let resumed = followd(&config, &["reconcile", "--location", "loc-1"]).await;
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert!(eventually(WAIT, || async { converged(&upstream) }).await, "{:?}", state(&upstream));
    let runs: Value =
        serde_json::from_slice(&followd(&config, &["reconcile", "status", "--json"]).await.stdout).unwrap();
    assert_eq!((runs.as_array().unwrap().len(), runs[0]["state"].as_str()), (1, Some("done")), "{runs}");
    // No change was made twice: one accepted POST per contact that needed one, none for the others (a POST the
    // fake refused with 429, past its own 100/10s, changed nothing and was retried).
    for i in 0..CONTACTS {
        let calls = upstream.calls_for(&format!("c-{i:03}"));
        let posts = calls.iter().filter(|c| c.method == "POST" && c.status == 201).count();
        let needed = usize::from(matches!(i % 5, 0 | 4));
        assert_eq!(posts, needed, "contact c-{i:03}: {calls:?}");
    }
    assert!(upstream.calls().iter().all(|c| c.method != "DELETE"), "nothing needed removing");
    // Converged: a new plan finds nothing to do.
    let after = plan(&config, &[]).await;
    assert_eq!(after["contacts_changed"], 0, "{after}");
    worker.kill().await;
}

#[tokio::test]
async fn a_location_larger_than_ten_thousand_contacts_is_read_with_search_after() {
    let upstream = FakeUpstream::start().await;
    let total = 10_001;
    for i in 0..total {
        upstream.set_contact(&format!("big-{i:05}"), "loc-1", if i % 1000 == 0 { &["vip"] } else { &[] }, None);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &upstream, None, "[rate_limit]\nper_location = \"1000/1s\"");
    let text = std::fs::read_to_string(&config).unwrap().replace("page_size = 100", "page_size = 500");
    std::fs::write(&config, text).unwrap();
    let plan = plan(&config, &[]).await;
    assert_eq!(plan["contacts_read"], total as u64);
    assert_eq!(plan["contacts_changed"], 11, "{plan}");
    let searches = upstream.searches();
    assert_eq!(searches.len(), 21, "20 full pages of 500 and the last one");
    // Past the first page, every page is asked for with the cursor, never with `page` (which stops at 10,000).
    assert!(searches[1..].iter().all(|s| s.get("searchAfter").is_some() && s.get("page").is_none()));
}

/// `reconcile.every`: the service repairs drift on its own, on its own store (the embedded one too).
async fn serve_reconciles_the_locations_it_serves_on_a_schedule(store: Store) {
    let app = crate::support::app::TestApp::builder()
        .store(store)
        .config("[reconcile]\nevery = \"1s\"\npage_size = 50")
        .spawn()
        .await;
    // A vip contact nobody follows: its webhook never came.
    app.upstream.set_contact("drifted", "loc-1", &["vip"], None);
    // Any webhook from the location makes it one the service serves.
    let body = crate::support::app::tag_event("e1", "tag_added", "c-1", "vip");
    assert_eq!(app.post_signed(&body).await.status(), 202);
    assert!(app.upstream.wait_for_followers("drifted", &["usr_alice", "usr_bob"], WAIT).await);
    let runs = app.stores.runs.runs().await.unwrap();
    assert!(runs.iter().any(|r| r.location_id.as_str() == "loc-1" && r.contacts_changed >= 1), "{runs:?}");
    let page = app.get("/").await.text().await.unwrap();
    assert!(page.contains("Reconcile") && page.contains(runs[0].id.as_str()), "the status page shows the run");
}

on_both_stores!(serve_reconciles_the_locations_it_serves_on_a_schedule);

#[tokio::test]
async fn live_webhooks_during_an_apply_are_delivered_within_the_usual_time() {
    let redis = RedisServer::start().await;
    let upstream = FakeUpstream::start().await;
    seed(&upstream);
    let dir = tempfile::tempdir().unwrap();
    // The default budget (100 calls per 10 s, as the fake allows), half of it for the reconcile.
    let config = config(dir.path(), &upstream, Some(&redis.url()), "");
    let service = Followd::start(&config, crate::support::free_port(), &[]).await;
    let post = crate::support::process::post;
    let body =
        |i: usize| crate::support::app::tag_event(&format!("live-{i}"), "tag_added", &format!("live-{i}"), "vip");
    // How long a webhook takes to reach the CRM with nothing else running.
    let delivered = |i: usize| {
        let contact = format!("live-{i}");
        let upstream = &upstream;
        async move { upstream.calls_for(&contact).iter().any(|c| c.method == "POST" && c.status == 201) }
    };
    let started = std::time::Instant::now();
    assert_eq!(post(&service.addr, &body(0)).await.status(), 202);
    assert!(eventually(WAIT, || delivered(0)).await);
    let alone = started.elapsed();

    let mut run = spawn_apply(&config);
    assert!(eventually(WAIT, || async { upstream.calls().iter().filter(|c| c.method == "POST").count() >= 20 }).await);
    let mut during = Vec::new();
    for i in 1..=5 {
        let started = std::time::Instant::now();
        assert_eq!(post(&service.addr, &body(i)).await.status(), 202);
        assert!(eventually(WAIT, || delivered(i)).await, "webhook {i} was not delivered");
        during.push(started.elapsed());
    }
    assert!(run.try_wait().unwrap().is_none(), "the reconcile ended before the webhooks were measured");
    let worst = during.iter().max().copied().unwrap_or_default();
    println!("delivery of a live webhook: alone {alone:?}, during a reconcile {during:?}");
    // A webhook waits at most for a slot the reconcile holds, never for the reconcile's backlog.
    assert!(worst < alone + Duration::from_secs(2), "alone {alone:?}, during a reconcile {during:?}");
    run.kill().await.unwrap();
    service.kill().await;
}

#[tokio::test]
async fn on_the_embedded_store_the_command_has_the_running_service_apply_and_report_its_runs() {
    let upstream = FakeUpstream::start().await;
    seed(&upstream);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &upstream, None, "");
    let port = crate::support::free_port();
    let _service = Followd::start(&config, port, &[]).await;
    // The command finds the service where the configuration says it listens.
    let listen = format!("127.0.0.1:{port}");
    let command = |args: &[&str]| {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_followd"));
        command.args(args).arg("--config").arg(&config).env("FOLLOWD_LISTEN", &listen).output()
    };
    let output = command(&["reconcile", "--location", "loc-1"]).await.unwrap();
    let said = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{said}{}", String::from_utf8_lossy(&output.stderr));
    assert!(said.contains("runs this reconcile of loc-1 itself"), "{said}");
    // The service's own workers deliver what its run queued.
    assert!(upstream.wait_for_followers("c-000", &["usr_alice", "usr_bob"], WAIT).await);
    let done = eventually(WAIT, || async {
        let output = command(&["reconcile", "status", "--json"]).await.unwrap();
        let runs: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        runs.as_array()
            .is_some_and(|runs| runs.len() == 1 && runs[0]["state"] == "done" && runs[0]["location_id"] == "loc-1")
    })
    .await;
    assert!(done, "the run was not reported done through the service");
    // Once it has finished, the next one starts.
    let again = command(&["reconcile", "--location", "loc-1"]).await.unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
}

#[tokio::test]
async fn the_reconcile_routes_need_the_admin_token_and_refuse_a_second_run_of_a_location() {
    let app = crate::support::app::TestApp::builder().config("[admin]\ntoken = \"adm-secret\"").spawn().await;
    app.upstream.set_latency(Duration::from_millis(300));
    for i in 0..5 {
        app.upstream.set_contact(&format!("c-{i}"), "loc-1", &["vip"], None);
    }
    let start = |token: Option<&str>| {
        let request = app.client.post(format!("{}/reconcile/loc-1", app.addr));
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        request.send()
    };
    assert_eq!(start(None).await.unwrap().status(), 401);
    assert_eq!(start(Some("wrong")).await.unwrap().status(), 401);
    assert_eq!(app.client.get(format!("{}/reconcile", app.addr)).send().await.unwrap().status(), 401);
    assert_eq!(start(Some("adm-secret")).await.unwrap().status(), 202);
    // The first run is still reading (the CRM answers slowly): a second one of the same location is refused.
    assert_eq!(start(Some("adm-secret")).await.unwrap().status(), 409);
    let runs = app.client.get(format!("{}/reconcile", app.addr)).bearer_auth("adm-secret").send().await.unwrap();
    assert_eq!(runs.status(), 200);
    assert!(app.upstream.wait_for_followers("c-0", &["usr_alice", "usr_bob"], WAIT).await);
}
