//! The status page at `GET /`, looked at in a real headless Chromium, and its protection.

use std::time::Duration;

use crate::support::app::{TestApp, tag_event};
use crate::support::eventually;

/// Runs Debian's Chromium headless on `url` with the flags this machine needs (no sandbox as root, no
/// background networking on a closed network); `args` adds `--dump-dom` or `--screenshot=...`.
fn chromium(url: &str, args: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().unwrap();
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    std::process::Command::new(&binary)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--window-size=1400,1000")
        .args(args)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {binary} ({e}): apt-get install -y chromium, or set CHROMIUM"))
}

#[tokio::test]
async fn the_status_page_shows_rules_queue_decisions_and_dead_letters_in_a_real_browser() {
    let app = TestApp::spawn().await;
    app.upstream.fail_contact("c-dead", 422, 1);
    assert_eq!(app.post_signed(&tag_event("evt-page-1", "tag_added", "c-1", "vip")).await.status(), 202);
    assert_eq!(app.post_signed(&tag_event("evt-page-2", "tag_added", "c-dead", "vip")).await.status(), 202);
    assert!(app.upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], Duration::from_secs(15)).await);
    assert!(eventually(Duration::from_secs(15), || async { app.queue.stats().await.is_ok_and(|s| s.dead == 1) }).await);

    let url = format!("{}/", app.addr);
    let dom = String::from_utf8_lossy(&chromium(&url, &["--dump-dom"]).stdout).into_owned();
    for expected in [
        "4 rules",
        "Last reload: ok",
        "evt-page-1",
        "evt-page-2",
        "vip-gets-account-team",
        "tag_added vip",
        "delivered",
        "dead-lettered",
        "followers must be an array",
        "loc-1",
        "delivering",
        // Two calls (one delivered, one refused) against 97% of the 200,000 daily budget.
        "2 of 194000",
    ] {
        assert!(dom.contains(expected), "the page lacks `{expected}`:\n{dom}");
    }

    let screenshot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let output = chromium(&url, &[&format!("--screenshot={}", screenshot.display())]);
    let png = std::fs::read(&screenshot)
        .unwrap_or_else(|e| panic!("no screenshot ({e}): {}", String::from_utf8_lossy(&output.stderr)));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real picture, {} bytes", png.len());
}

#[tokio::test]
async fn with_an_admin_token_the_page_needs_it_as_a_bearer_or_a_login_cookie() {
    let app = TestApp::builder().config("[admin]\ntoken = \"adm-secret\"").spawn().await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let page = format!("{}/", app.addr);
    let anonymous = client.get(&page).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.text().await.unwrap().contains("<form method=\"post\" action=\"/login\">"));
    assert_eq!(client.get(&page).bearer_auth("adm-secret").send().await.unwrap().status(), 200);
    assert_eq!(client.get(&page).bearer_auth("nope").send().await.unwrap().status(), 401);

    let wrong = client.post(format!("{}/login", app.addr)).form(&[("token", "nope")]).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let login = client.post(format!("{}/login", app.addr)).form(&[("token", "adm-secret")]).send().await.unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(!cookie.contains("adm-secret") && cookie.contains("HttpOnly"), "{cookie}");
    let pair = cookie.split(';').next().unwrap();
    let signed_in = client.get(&page).header("cookie", pair).send().await.unwrap();
    assert_eq!(signed_in.status(), 200);
    assert!(signed_in.text().await.unwrap().contains("Recent decisions"));
}
