//! Health, readiness and metrics routes.

use serde_json::Value;

use crate::support::app::{TestApp, tag_event};

#[tokio::test]
async fn healthz_and_readyz_answer_200_when_the_queue_and_rules_are_up() {
    let app = TestApp::spawn().await;
    assert_eq!(app.get("/healthz").await.status(), 200);
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert!(body["rules"].as_str().unwrap().contains("4 rules"), "{body}");
}

#[tokio::test]
async fn metrics_count_webhooks_by_source_and_result() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post_signed(&tag_event("e1", "tag_added", "c-1", "vip")).await.status(), 202);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.lines().any(|l| l.starts_with("followd_webhooks_received_total")
            && l.contains("source=\"test\"")
            && l.contains("result=\"202\"")),
        "{metrics}"
    );
}
