//! The receive path's cost, as ratios to baselines measured in the same run.
//!
//! `cargo bench --bench receive` prints:
//! - signature verification per scheme for a 1 KiB body, against HMAC-SHA256 (the cheapest real scheme);
//! - webhooks per second through the whole receive path of the real application (HTTP, verify, parse, tag-set
//!   diff, match, enqueue on a local Redis; receiver role, 32 concurrent senders): a signed GoHighLevel
//!   `ContactTagUpdate` against the generic HMAC path;
//! - the stale check: signed `ContactTagUpdate`s with a `timestamp` (compared with and stored as the contact's
//!   last whole-state time, in the diff's own script) against the same payloads without one (no time to
//!   compare: the path before the check existed), in alternating rounds.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use followd::Role;
use followd::verify::{Request, Verifier};
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use sha2::Sha256;
use support::app::{SECRET, SIGNATURE_HEADER, TestApp, sign};
use support::ghl::{ed25519_signature, fresh, rsa_signature, vectors_path};
use support::redis::RedisServer;

const VERIFICATIONS: usize = 2000;
const WEBHOOKS: usize = 4000;
const SENDERS: usize = 32;
/// Alternating rounds of the stale-check comparison.
const ROUNDS: usize = 5;

fn per_call(verifier: &Verifier, headers: &[(&str, &str); 3], body: &[u8]) -> Duration {
    let request = Request { headers, body, peer: None, now_unix: chrono::Utc::now().timestamp() };
    verifier.verify(&request).expect("the benchmark's signature verifies");
    let started = Instant::now();
    for _ in 0..VERIFICATIONS {
        verifier.verify(&request).expect("verifies");
    }
    started.elapsed() / VERIFICATIONS as u32
}

fn verification() {
    let body = vec![b'x'; 1024];
    let secret = || vec![SecretString::from("a-webhook-secret")];
    let hmac = Verifier::hmac_sha256("x-signature", secret()).expect("hmac");
    let hmac_header = {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"a-webhook-secret").expect("key");
        mac.update(&body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let token = Verifier::token("x-followd-token", secret()).expect("token");
    let whsec = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(b"a-standard-webhooks-key"));
    let standard = Verifier::standard_webhooks(vec![SecretString::from(whsec)], Duration::from_secs(300)).expect("sw");
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let signed = {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"a-standard-webhooks-key").expect("key");
        mac.update(format!("msg_1.{timestamp}.").as_bytes());
        mac.update(&body);
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
    };
    let keys = vec![
        std::fs::read_to_string(vectors_path("keys/test_ed25519_public.pem")).expect("key"),
        std::fs::read_to_string(vectors_path("keys/test_rsa_public.pem")).expect("key"),
    ];
    let ghl = Verifier::ghl(keys, Duration::from_secs(300)).expect("ghl");
    let none = ("x-none", "");
    let rows = [
        ("hmac-sha256", per_call(&hmac, &[("x-signature", &hmac_header), none, none], &body)),
        ("token", per_call(&token, &[("x-followd-token", "a-webhook-secret"), none, none], &body)),
        (
            "standard-webhooks (v1)",
            per_call(
                &standard,
                &[("webhook-id", "msg_1"), ("webhook-timestamp", &timestamp), ("webhook-signature", &signed)],
                &body,
            ),
        ),
        (
            "ghl X-GHL-Signature (Ed25519)",
            per_call(&ghl, &[("x-ghl-signature", &ed25519_signature(&body)), none, none], &body),
        ),
        (
            "ghl x-wh-signature (RSA-4096)",
            per_call(&ghl, &[("x-wh-signature", &rsa_signature(&body)), none, none], &body),
        ),
    ];
    let baseline = rows[0].1.as_secs_f64();
    println!("signature verification, 1 KiB body, {VERIFICATIONS} calls each");
    for (scheme, time) in rows {
        println!(
            "  {scheme:<32} {:>9.2} us   {:>7.2}x hmac-sha256",
            time.as_secs_f64() * 1e6,
            time.as_secs_f64() / baseline
        );
    }
}

/// Posts `bodies` with `SENDERS` concurrent senders; returns webhooks per second.
async fn throughput(app: &Arc<TestApp>, source: &'static str, bodies: Vec<(Vec<u8>, String, &'static str)>) -> f64 {
    let bodies = Arc::new(bodies);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..SENDERS {
        let (app, bodies, next) = (Arc::clone(app), Arc::clone(&bodies), Arc::clone(&next));
        senders.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((body, signature, header)) = bodies.get(i) else { break };
                let status = app.post(source, body, &[(header, signature)]).await.status();
                assert_eq!(status, 202, "webhook {i} to {source}");
            }
        });
    }
    while senders.join_next().await.is_some() {}
    bodies.len() as f64 / started.elapsed().as_secs_f64()
}

async fn receive_path() {
    let redis = RedisServer::start().await;
    let keys = [vectors_path("keys/test_ed25519_public.pem")];
    let app = Arc::new(
        TestApp::builder()
            .role(Role::Receiver)
            .ghl_keys(&keys)
            .config(&format!("redis_url = \"{}\"", redis.url()))
            .spawn()
            .await,
    );
    let generic: Vec<_> = (0..WEBHOOKS)
        .map(|i| {
            let body = serde_json::json!({"id": format!("g{i}"), "type": "tag_added", "location_id": "loc-1",
                                          "contact_id": format!("c-{i}"), "tag": "vip"})
            .to_string()
            .into_bytes();
            let signature = sign(SECRET, &body);
            (body, signature, SIGNATURE_HEADER)
        })
        .collect();
    let ghl: Vec<_> = (0..WEBHOOKS)
        .map(|i| {
            let body =
                fresh("ContactTagUpdate", &format!("wh-{i}"), Some(&format!("c-{i}")), Some(&["vip", "new lead"]));
            let signature = ed25519_signature(&body);
            (body, signature, "x-ghl-signature")
        })
        .collect();
    let generic_rate = throughput(&app, "test", generic).await;
    let ghl_rate = throughput(&app, "ghl", ghl).await;
    // The stale check, in alternating rounds so the machine's drift falls on both.
    let tag_update = |round: usize, i: usize, timed: bool| {
        let mut value: serde_json::Value = serde_json::from_slice(&fresh(
            "ContactTagUpdate",
            &format!("st-{round}-{i}-{timed}"),
            Some(&format!("s-{i}")),
            Some(&["vip", if round.is_multiple_of(2) { "a" } else { "b" }]),
        ))
        .expect("JSON");
        if !timed {
            value.as_object_mut().expect("an object").remove("timestamp");
        }
        let body = serde_json::to_vec(&value).expect("JSON");
        let signature = ed25519_signature(&body);
        (body, signature, "x-ghl-signature")
    };
    let (mut timed, mut untimed) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        untimed.push(throughput(&app, "ghl", (0..WEBHOOKS).map(|i| tag_update(round, i, false)).collect()).await);
        timed.push(throughput(&app, "ghl", (0..WEBHOOKS).map(|i| tag_update(round, i, true)).collect()).await);
    }
    let median = |mut rates: Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let (timed, untimed) = (median(timed), median(untimed));
    println!("receive path, receiver role, Redis queue, {SENDERS} concurrent senders, {WEBHOOKS} webhooks each");
    println!("  generic + hmac-sha256 (baseline)          {generic_rate:>8.0} webhooks/s");
    println!(
        "  ghl ContactTagUpdate + Ed25519 + diff     {ghl_rate:>8.0} webhooks/s   {:.2}x the baseline's time",
        generic_rate / ghl_rate
    );
    println!("stale check, ContactTagUpdate + Ed25519, median of {ROUNDS} alternating rounds");
    println!("  without a time (no check, baseline)       {untimed:>8.0} webhooks/s");
    println!(
        "  with a timestamp (stale check)            {timed:>8.0} webhooks/s   {:.2}x the baseline's time",
        untimed / timed
    );
}

fn main() {
    verification();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(receive_path());
}
