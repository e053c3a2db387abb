//! Signing GoHighLevel-style webhooks in tests, with the test-only keys in `../shared/vectors/keys` (read
//! from there at run time; never copied into the repository).

use base64::Engine;
use sha2::{Digest, Sha256};

/// A file under `../shared/vectors/`.
pub fn vectors_path(relative: &str) -> String {
    format!("{}/../shared/vectors/{relative}", env!("CARGO_MANIFEST_DIR"))
}

/// A file under `../shared/ghl/payloads/`.
pub fn payload(name: &str) -> Vec<u8> {
    let path = format!("{}/../shared/ghl/payloads/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn read(relative: &str) -> String {
    let path = vectors_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `X-GHL-Signature`: base64 Ed25519 over the raw body.
pub fn ed25519_signature(body: &[u8]) -> String {
    use ed25519_dalek::Signer;
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&read("keys/test_ed25519_private.pem")).expect("test key");
    base64::engine::general_purpose::STANDARD.encode(key.sign(body).to_bytes())
}

/// `x-wh-signature`: base64 RSA PKCS#1 v1.5 SHA-256 over the raw body.
pub fn rsa_signature(body: &[u8]) -> String {
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&read("keys/test_rsa_private.pem")).expect("test key");
    let signature = key.sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(body)).expect("sign");
    base64::engine::general_purpose::STANDARD.encode(signature)
}

/// A GoHighLevel payload from `shared/ghl/payloads`, with `timestamp` set to now (the examples are from 2026-03,
/// outside the replay window), a fresh `webhookId`, the contact and tags replaced where given.
pub fn fresh(name: &str, webhook_id: &str, contact: Option<&str>, tags: Option<&[&str]>) -> Vec<u8> {
    let mut value: serde_json::Value = serde_json::from_slice(&payload(name)).expect("JSON example");
    value["timestamp"] = serde_json::json!(chrono::Utc::now().to_rfc3339());
    value["webhookId"] = serde_json::json!(webhook_id);
    if let Some(contact) = contact {
        let field = if name.starts_with("Opportunity") { "contactId" } else { "id" };
        value[field] = serde_json::json!(contact);
    }
    if let Some(tags) = tags {
        value["tags"] = serde_json::json!(tags);
    }
    serde_json::to_vec(&value).expect("serialize")
}
