//! Marketplace-app OAuth: location access tokens refreshed through the CRM's token endpoint.

use std::time::Duration;

use crate::support::app::{TestApp, tag_event};
use crate::support::upstream::{CLIENT_ID, CLIENT_SECRET, FakeUpstream};

const WAIT: Duration = Duration::from_secs(15);

fn at_oauth_location(id: &str, contact: &str) -> Vec<u8> {
    serde_json::json!({"id": id, "type": "tag_added", "location_id": "loc-oauth", "contact_id": contact, "tag": "vip"})
        .to_string()
        .into_bytes()
}

async fn oauth_app(upstream: std::sync::Arc<FakeUpstream>) -> TestApp {
    let seed = upstream.oauth_seed();
    let config = format!(
        "[upstream.oauth]\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
         [upstream.oauth.refresh_tokens]\nloc-oauth = \"{seed}\""
    );
    TestApp::builder().config(&config).spawn_with(upstream).await
}

#[tokio::test]
async fn an_oauth_location_refreshes_its_token_and_keeps_the_rotated_refresh_token() {
    let upstream = std::sync::Arc::new(FakeUpstream::start().await);
    // Every token is already within the refresh margin: each delivery refreshes, with the newest refresh token.
    upstream.set_oauth_expires_in(300);
    let app = oauth_app(std::sync::Arc::clone(&upstream)).await;
    assert_eq!(app.post_signed(&at_oauth_location("e1", "c-1")).await.status(), 202);
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    assert_eq!(app.post_signed(&at_oauth_location("e2", "c-2")).await.status(), 202);
    assert!(upstream.wait_for_followers("c-2", &["usr_alice", "usr_bob"], WAIT).await);

    let refreshes: Vec<u16> = upstream.calls_for("oauth").iter().map(|c| c.status).collect();
    assert_eq!(refreshes, [200, 200], "the seed was spent by the first refresh; the second used the rotated token");
    let posts = upstream.calls_for("c-2");
    assert!(posts[0].authorization.as_deref().is_some_and(|a| a.starts_with("Bearer at-")), "{posts:?}");
    // Another location still uses the default token.
    assert_eq!(app.post_signed(&tag_event("e3", "tag_added", "c-3", "vip")).await.status(), 202);
    assert!(upstream.wait_for_followers("c-3", &["usr_alice", "usr_bob"], WAIT).await);
    assert_eq!(upstream.calls_for("oauth").len(), 2);
}

#[tokio::test]
async fn a_refused_oauth_token_is_refreshed_once_and_the_call_sent_again() {
    let upstream = std::sync::Arc::new(FakeUpstream::start().await);
    let app = oauth_app(std::sync::Arc::clone(&upstream)).await;
    assert_eq!(app.post_signed(&at_oauth_location("e1", "c-1")).await.status(), 202);
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    upstream.revoke_access_tokens();
    assert_eq!(app.post_signed(&at_oauth_location("e2", "c-2")).await.status(), 202);
    assert!(upstream.wait_for_followers("c-2", &["usr_alice", "usr_bob"], WAIT).await);
    let statuses: Vec<u16> = upstream.calls_for("c-2").iter().map(|c| c.status).collect();
    assert_eq!(statuses, [401, 201]);
    assert_eq!(upstream.calls_for("oauth").len(), 2);
    assert_eq!(app.queue.stats().await.unwrap().dead, 0);
}

/// A store failure while the OAuth token is read is a store failure, not a refused token: the delivery is
/// retried and the location is not paused. The failure is real: the Redis user followd connects as may not
/// touch the OAuth keys (an ACL), until the test grants it.
#[tokio::test]
async fn a_redis_failure_during_an_oauth_refresh_is_retried_and_pauses_nothing() {
    use followd::event::{ContactId, ContactKey, LocationId};
    use followd::queue::keys::{Keys, contact_member};

    let redis = crate::support::redis::RedisServer::start().await;
    let admin = redis::Client::open(redis.url()).unwrap();
    let mut admin = admin.get_multiplexed_async_connection().await.unwrap();
    // Every key of partition n is `{followd:n}:<name>`; OAuth's is `{followd:n}:oauth:<location>`. The only
    // other names starting with "o" are `outcome:` ones.
    let acl = |keys: &[&str]| {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER").arg("followd").arg("reset").arg("on").arg(">pw").arg("+@all");
        for pattern in keys {
            cmd.arg(format!("~{pattern}"));
        }
        cmd
    };
    let _: () = acl(&["{followd:?}:[^o]*", "{followd:?}:ou*"]).query_async(&mut admin).await.unwrap();
    let url = redis.url().replacen("redis://", "redis://followd:pw@", 1);

    let upstream = std::sync::Arc::new(FakeUpstream::start().await);
    let seed = upstream.oauth_seed();
    let config = format!(
        "redis_url = \"{url}\"\n[delivery]\nretry_base = \"100ms\"\nretry_max_delay = \"200ms\"\n\
         [upstream.oauth]\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
         [upstream.oauth.refresh_tokens]\nloc-oauth = \"{seed}\""
    );
    let app = TestApp::builder().config(&config).spawn_with(std::sync::Arc::clone(&upstream)).await;
    assert_eq!(app.post_signed(&at_oauth_location("e1", "c-1")).await.status(), 202);

    let location = LocationId::parse("loc-oauth").unwrap();
    let contact = ContactKey { location_id: location.clone(), contact_id: ContactId::parse("c-1").unwrap() };
    let state = Keys::new("followd", 8).for_location(&location).state(&contact_member(&contact));
    let retried = crate::support::eventually(WAIT, || {
        let (mut admin, state) = (admin.clone(), state.clone());
        async move {
            let attempts: Option<u32> =
                redis::cmd("HGET").arg(&state).arg("attempts").query_async(&mut admin).await.unwrap();
            attempts.is_some_and(|n| n >= 2)
        }
    })
    .await;
    if !retried {
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut admin).await.unwrap();
        let log: redis::Value = redis::cmd("ACL").arg("LOG").query_async(&mut admin).await.unwrap();
        panic!("the delivery was not retried; keys {keys:?} {:?} acl log {log:?}", app.queue.stats().await);
    }
    assert_eq!(app.stores.locations.paused(&location, followd::domain::clock::now_ms()).await.unwrap(), None);
    assert!(upstream.calls_for("oauth").is_empty(), "no token was refreshed: the store could not be read");
    assert_eq!(app.queue.stats().await.unwrap().dead, 0);

    let _: () = acl(&["*"]).query_async(&mut admin).await.unwrap();
    assert!(upstream.wait_for_followers("c-1", &["usr_alice", "usr_bob"], WAIT).await);
    assert_eq!(upstream.calls_for("oauth").len(), 1);
}
