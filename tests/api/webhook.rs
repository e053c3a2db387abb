//! The webhook route's contract: status codes, error bodies, signatures, de-duplication.

use serde_json::Value;

use crate::support::app::{SECRET, SIGNATURE_HEADER, TestApp, sign, tag_event};

async fn error_code(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error body");
    let code = body["error"].as_str().expect("error is a string").to_owned();
    let message = body["message"].as_str().expect("message is a string").to_owned();
    (status, code, message)
}

#[tokio::test]
async fn a_signed_event_is_accepted_with_its_id_and_operation_count() {
    let app = TestApp::spawn().await;
    let response = app.post_signed(&tag_event("evt-1", "tag_added", "c-1", "vip")).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"event_ids": ["evt-1"], "operations": 2}));
}

#[tokio::test]
async fn an_event_no_rule_matches_is_accepted_with_zero_operations() {
    let app = TestApp::spawn().await;
    let response = app.post_signed(&tag_event("evt-1", "tag_added", "c-1", "nobody-cares")).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["operations"], 0);
    // Remembered for de-duplication all the same.
    assert_eq!(app.post_signed(&tag_event("evt-1", "tag_added", "c-1", "nobody-cares")).await.status(), 200);
}

#[tokio::test]
async fn a_bad_signature_is_rejected_with_401_and_enqueues_nothing() {
    let app = TestApp::spawn().await;
    let body = tag_event("evt-1", "tag_added", "c-1", "vip");
    let forged = sign("not-the-secret", &body);
    let (status, code, message) = error_code(app.post("test", &body, &[(SIGNATURE_HEADER, &forged)]).await).await;
    assert_eq!((status, code.as_str()), (401, "bad_signature"));
    assert!(!message.contains(SECRET));
    let stats = app.queue.stats().await.unwrap();
    assert_eq!(stats.pending, 0);
    assert!(app.upstream.calls().is_empty());
}

#[tokio::test]
async fn a_missing_signature_is_rejected_with_401() {
    let app = TestApp::spawn().await;
    let (status, code, _) = error_code(app.post("test", &tag_event("e", "tag_added", "c-1", "vip"), &[]).await).await;
    assert_eq!((status, code.as_str()), (401, "bad_signature"));
    assert_eq!(app.queue.stats().await.unwrap().pending, 0);
}

#[tokio::test]
async fn a_signature_over_other_bytes_is_rejected_even_when_the_json_is_equal() {
    let app = TestApp::spawn().await;
    let body = tag_event("evt-1", "tag_added", "c-1", "vip");
    let reserialized: Value = serde_json::from_slice(&body).unwrap();
    let pretty = serde_json::to_vec_pretty(&reserialized).unwrap();
    let response = app.post("test", &pretty, &[(SIGNATURE_HEADER, &sign(SECRET, &body))]).await;
    assert_eq!(response.status(), 401);
    app.assert_nothing_queued().await;
    assert!(app.upstream.calls().is_empty());
}

#[tokio::test]
async fn an_old_secret_still_verifies_during_rotation() {
    let app = TestApp::spawn().await;
    let body = tag_event("evt-1", "tag_added", "c-1", "vip");
    let response = app.post("test", &body, &[(SIGNATURE_HEADER, &sign("old-secret", &body))]).await;
    assert_eq!(response.status(), 202);
}

#[tokio::test]
async fn the_token_scheme_accepts_the_configured_bearer_token_only() {
    let app = TestApp::spawn().await;
    let body = tag_event("evt-1", "tag_added", "c-1", "vip");
    assert_eq!(app.post("tokened", &body, &[("authorization", "Bearer sesame")]).await.status(), 202);
    assert_eq!(app.post("tokened", &body, &[("authorization", "Bearer open")]).await.status(), 401);
    assert_eq!(app.post("tokened", &body, &[]).await.status(), 401);
    // Only the first, with the right token, was queued and delivered.
    app.wait_until_idle().await;
    assert_eq!(app.upstream.calls().len(), 1);
}

#[tokio::test]
async fn malformed_json_is_rejected_with_400_saying_what_is_wrong() {
    let app = TestApp::spawn().await;
    let body = br#"{"id": "evt-1", "type": "tag_added""#;
    let (status, code, message) = error_code(app.post_signed(body).await).await;
    assert_eq!((status, code.as_str()), (400, "payload_invalid"));
    assert!(message.contains("JSON"), "{message}");
    app.assert_nothing_queued().await;
}

#[tokio::test]
async fn a_missing_field_is_rejected_with_400_naming_the_field() {
    let app = TestApp::spawn().await;
    let body = br#"{"id": "evt-1", "type": "tag_added", "location_id": "l", "contact_id": "c"}"#;
    let (status, _, message) = error_code(app.post_signed(body).await).await;
    assert_eq!(status, 400);
    assert!(message.contains("`tag`"), "{message}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_rejected_with_413() {
    let app = TestApp::builder().config("max_body_bytes = 1024").spawn().await;
    let body = vec![b' '; 4096];
    let (status, code, _) = error_code(app.post_signed(&body).await).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    app.assert_nothing_queued().await;
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_rejected_with_413_while_reading() {
    let app = TestApp::builder().config("max_body_bytes = 1024").spawn().await;
    // No Content-Length: the limit must be enforced on the stream itself.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..64).map(|_| Ok(vec![b' '; 1024])).collect();
    let response = app
        .client
        .post(format!("{}/webhooks/test", app.addr))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await;
    // The server may close the connection once it has answered; either way nothing was accepted.
    if let Ok(response) = response {
        assert_eq!(response.status(), 413);
    }
    assert_eq!(app.queue.stats().await.unwrap().pending, 0);
}

#[tokio::test]
async fn an_unknown_source_is_404() {
    let app = TestApp::spawn().await;
    let (status, code, message) = error_code(app.post("nope", b"{}", &[]).await).await;
    assert_eq!((status, code.as_str()), (404, "unknown_source"));
    assert!(message.contains("nope"));
    app.assert_nothing_queued().await;
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = TestApp::spawn().await;
    let response = app
        .client
        .post(format!("{}/webhooks/test", app.addr))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(response).await;
    assert_eq!((status, code.as_str()), (415, "unsupported_media_type"));
    app.assert_nothing_queued().await;
}

#[tokio::test]
async fn a_duplicate_event_is_acknowledged_and_ignored() {
    let app = TestApp::spawn().await;
    let body = tag_event("evt-dup", "tag_added", "c-1", "vip");
    assert_eq!(app.post_signed(&body).await.status(), 202);
    let second = app.post_signed(&body).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.json::<Value>().await.unwrap(), serde_json::json!({"duplicate": true}));
    app.wait_until_idle().await;
    assert_eq!(app.upstream.calls_for("c-1").len(), 1, "one POST for both deliveries");
}

#[tokio::test]
async fn a_batch_skips_ids_already_seen_and_accepts_the_rest() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_signed(&tag_event("a", "tag_added", "c-1", "vip")).await.status(), 202);
    let batch = serde_json::json!([
        {"id": "a", "type": "tag_added", "location_id": "loc-1", "contact_id": "c-1", "tag": "vip"},
        {"id": "b", "type": "tag_added", "location_id": "loc-1", "contact_id": "c-2", "tag": "vip"},
    ]);
    let response = app.post_signed(batch.to_string().as_bytes()).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"event_ids": ["b"], "operations": 2}));
}

#[tokio::test]
async fn arbitrary_bytes_never_crash_the_server() {
    let app = TestApp::spawn().await;
    let bodies: Vec<Vec<u8>> = vec![
        vec![0xff, 0xfe, 0x00],
        b"null".to_vec(),
        b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]".to_vec(),
        br#"{"id":"","type":"tag_added","location_id":"l","contact_id":"c","tag":"t"}"#.to_vec(),
        br#"{"id":"x","type":"tag_added","location_id":"l","contact_id":"c\u0000","tag":"t"}"#.to_vec(),
        br#"{"id":1,"type":2}"#.to_vec(),
        "[".repeat(100_000).into_bytes(),
    ];
    for body in bodies {
        let status = app.post_signed(&body).await.status();
        assert_eq!(status, 400, "body {:?}", String::from_utf8_lossy(&body[..body.len().min(40)]));
    }
    assert_eq!(app.get("/healthz").await.status(), 200);
    app.assert_nothing_queued().await;
}

#[tokio::test]
async fn unknown_routes_answer_404_with_the_json_error_body() {
    let app = TestApp::spawn().await;
    let (status, code, _) = error_code(app.get("/nope").await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
}
