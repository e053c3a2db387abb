//! `followd::verify` against the shared signature vectors, and against bodies freshly signed with the
//! test-only private keys.
//!
//! The vector files and keys are read in place from `../shared/vectors` (next to the repository), never
//! copied into it; `shared/vectors/README.md` describes their schema. Every case is checked and all
//! disagreements are reported together, so one run shows the whole picture.

use std::collections::HashMap;
use std::time::Duration;

use followd::verify::{Headers, Request, Verifier, VerifyError};
use hmac::{Hmac, Mac};
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors");
const NOW: i64 = 1_767_225_600;

fn read(relative: &str) -> String {
    let path = format!("{VECTORS}/{relative}");
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

fn load<T: DeserializeOwned>(file: &str) -> T {
    serde_json::from_str(&read(file)).unwrap_or_else(|error| panic!("{file}: {error}"))
}

/// One case's outcome compared with the file's `expect` and `error`; `None` when they agree.
fn disagreement(id: &str, got: Result<(), VerifyError>, expect: &str, error: Option<&str>) -> Option<String> {
    // Standard Webhooks calls a mismatch `no_matching_signature` (malformed entries are skipped, so they
    // end there too); followd has one class for "well-formed but does not verify".
    let want = error.map(|class| if class == "no_matching_signature" { "signature_mismatch" } else { class });
    match (&got, expect) {
        (Ok(()), "valid") => None,
        (Err(e), "invalid") if want.is_none_or(|class| class == e.code()) => None,
        _ => Some(format!("{id}: expected {expect}/{want:?}, got {got:?}")),
    }
}

fn assert_all_agree(file: &str, checked: usize, failures: Vec<String>) {
    assert!(checked > 0, "{file}: no case was checked");
    assert!(failures.is_empty(), "{file}: {} of {checked} cases disagree:\n{}", failures.len(), failures.join("\n"));
}

fn request<'a>(headers: &'a dyn Headers, body: &'a [u8], now_unix: i64) -> Request<'a> {
    Request { headers, body, peer: None, now_unix }
}

fn secrets(values: &[&str]) -> Vec<SecretString> {
    values.iter().map(|value| SecretString::from(*value)).collect()
}

#[derive(Deserialize)]
struct HmacFile {
    rfc4231_cases: Vec<RfcCase>,
    header_cases: Vec<HmacCase>,
}

#[derive(Deserialize)]
struct RfcCase {
    id: String,
    key_hex: String,
    data_hex: String,
    mac_hex: String,
    truncated_to_bits: Option<usize>,
}

#[derive(Deserialize)]
struct HmacCase {
    id: String,
    secret: String,
    body: String,
    header: Option<String>,
    expect: String,
    error: Option<String>,
}

#[derive(Deserialize)]
struct StandardWebhooksFile {
    tolerance_seconds: u64,
    cases: Vec<StandardWebhooksCase>,
}

#[derive(Deserialize)]
struct StandardWebhooksCase {
    id: String,
    secret: String,
    headers: HashMap<String, String>,
    body: String,
    now: i64,
    expect: String,
    error: Option<String>,
    old_secret: Option<String>,
}

#[derive(Deserialize)]
struct GhlFile {
    cases: Vec<GhlCase>,
}

#[derive(Deserialize)]
struct GhlCase {
    id: String,
    body: String,
    headers: HashMap<String, String>,
    public_key_file: String,
    expect: String,
    error: Option<String>,
}

#[test]
fn every_rfc_4231_row_matches_the_published_hmac_sha256() {
    let file: HmacFile = load("hmac_sha256.json");
    for case in &file.rfc4231_cases {
        let mut mac = Hmac::<Sha256>::new_from_slice(&hex::decode(&case.key_hex).unwrap()).unwrap();
        mac.update(&hex::decode(&case.data_hex).unwrap());
        let full = hex::encode(mac.finalize().into_bytes());
        // Case 5 is published truncated to 128 bits: compare that prefix only.
        let published_len = case.truncated_to_bits.map_or(full.len(), |bits| bits / 4);
        assert_eq!(case.mac_hex.len(), published_len, "{}", case.id);
        assert_eq!(&full[..published_len], case.mac_hex, "{}", case.id);
    }
    assert_eq!(file.rfc4231_cases.len(), 7);
}

#[test]
fn every_hmac_sha256_header_case_gets_its_expected_outcome() {
    let file: HmacFile = load("hmac_sha256.json");
    let failures = file.header_cases.iter().filter_map(|case| {
        // The file's header is GitHub's `X-Hub-Signature-256`; followd's header name is configurable.
        let verifier = Verifier::hmac_sha256("X-Hub-Signature-256", secrets(&[&case.secret])).unwrap();
        let headers: Vec<(String, String)> =
            case.header.iter().map(|value| ("x-hub-signature-256".to_owned(), value.clone())).collect();
        let got = verifier.verify(&request(&headers, case.body.as_bytes(), NOW));
        disagreement(&case.id, got, &case.expect, case.error.as_deref())
    });
    assert_all_agree("hmac_sha256.json", file.header_cases.len(), failures.collect());
}

#[test]
fn every_standard_webhooks_case_gets_its_expected_outcome() {
    let file: StandardWebhooksFile = load("standard_webhooks.json");
    let tolerance = Duration::from_secs(file.tolerance_seconds);
    // `old_secret` only says who signed a decoy entry: the receiver holds `secret` alone.
    let failures = file.cases.iter().filter_map(|case| {
        let verifier = Verifier::standard_webhooks(secrets(&[&case.secret]), tolerance).unwrap();
        let got = verifier.verify(&request(&case.headers, case.body.as_bytes(), case.now));
        disagreement(&case.id, got, &case.expect, case.error.as_deref())
    });
    assert_all_agree("standard_webhooks.json", file.cases.len(), failures.collect());
}

fn check_ghl_file(name: &str) {
    let file: GhlFile = load(name);
    let failures = file.cases.iter().filter_map(|case| {
        let verifier = Verifier::ghl(vec![read(&case.public_key_file)], Duration::from_secs(300)).unwrap();
        let got = verifier.verify(&request(&case.headers, case.body.as_bytes(), NOW));
        disagreement(&case.id, got, &case.expect, case.error.as_deref())
    });
    assert_all_agree(name, file.cases.len(), failures.collect());
}

#[test]
fn every_ghl_rsa_case_gets_its_expected_outcome() {
    check_ghl_file("ghl_rsa.json");
}

#[test]
fn every_ghl_ed25519_case_gets_its_expected_outcome() {
    check_ghl_file("ghl_ed25519.json");
}

const BODY: &[u8] = "{\"type\":\"ContactTagUpdate\",\"tags\":[\"vip\",\"Zoë\"],\"webhookId\":\"fresh-1\"}".as_bytes();

fn rsa_signature(body: &[u8]) -> String {
    use rsa::pkcs8::DecodePrivateKey;
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(&read("keys/test_rsa_private.pem")).unwrap();
    let signature = key.sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(body)).unwrap();
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, signature)
}

fn ed25519_signature(body: &[u8]) -> String {
    use ed25519_dalek::Signer;
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&read("keys/test_ed25519_private.pem")).unwrap();
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key.sign(body).to_bytes())
}

fn ghl(keys: &[&str]) -> Verifier {
    Verifier::ghl(keys.iter().map(|file| read(file)).collect(), Duration::from_secs(300)).unwrap()
}

fn ghl_verify(verifier: &Verifier, headers: &[(&str, &str)], body: &[u8]) -> Result<(), VerifyError> {
    let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    verifier.verify(&request(&headers, body, NOW))
}

#[test]
fn fresh_bodies_signed_with_either_test_key_verify_under_a_mixed_key_list() {
    let (rsa, ed25519) = (rsa_signature(BODY), ed25519_signature(BODY));
    let mixed = ghl(&["keys/test_rsa_other_public.pem", "keys/test_rsa_public.pem", "keys/test_ed25519_public.pem"]);
    assert_eq!(ghl_verify(&mixed, &[("X-WH-Signature", &rsa)], BODY), Ok(()));
    assert_eq!(ghl_verify(&mixed, &[("X-GHL-Signature", &ed25519)], BODY), Ok(()));
    assert_eq!(ghl_verify(&mixed, &[("x-ghl-signature", &ed25519)], b"{}"), Err(VerifyError::Mismatch));
    // Each header is read with keys of its own kind only: a signature in the other header is malformed.
    let swapped = ghl_verify(&mixed, &[("x-ghl-signature", &rsa)], BODY);
    assert_eq!(swapped, Err(VerifyError::MalformedSignature("x-ghl-signature")));
}

#[test]
fn x_ghl_signature_is_preferred_when_both_headers_are_present() {
    let (rsa, ed25519) = (rsa_signature(BODY), ed25519_signature(BODY));
    let other_ed25519 = ed25519_signature(b"another body");
    let both = ghl(&["keys/test_rsa_public.pem", "keys/test_ed25519_public.pem"]);
    assert_eq!(ghl_verify(&both, &[("x-wh-signature", "N/A"), ("x-ghl-signature", &ed25519)], BODY), Ok(()));
    // A bad Ed25519 signature is not rescued by a good RSA one.
    let result = ghl_verify(&both, &[("x-wh-signature", &rsa), ("x-ghl-signature", &other_ed25519)], BODY);
    assert_eq!(result, Err(VerifyError::Mismatch));
    // `N/A` counts as absent, so the RSA signature is the one checked.
    assert_eq!(ghl_verify(&both, &[("x-wh-signature", &rsa), ("x-ghl-signature", "N/A")], BODY), Ok(()));
}

#[test]
fn without_ed25519_keys_the_rsa_header_is_checked_even_when_both_are_present() {
    let (rsa, ed25519) = (rsa_signature(BODY), ed25519_signature(BODY));
    let rsa_only = ghl(&["keys/test_rsa_public.pem"]);
    assert_eq!(ghl_verify(&rsa_only, &[("x-wh-signature", &rsa), ("x-ghl-signature", &ed25519)], BODY), Ok(()));
    let result = ghl_verify(&rsa_only, &[("x-ghl-signature", &ed25519)], BODY);
    assert_eq!(result, Err(VerifyError::NoKeyForHeader("x-ghl-signature")));
}

#[test]
fn the_builtin_ghl_keys_reject_bodies_signed_with_the_test_keys() {
    let builtin = Verifier::ghl_builtin(Duration::from_secs(300));
    assert_eq!(builtin.scheme(), "ghl");
    assert_eq!(
        ghl_verify(&builtin, &[("x-ghl-signature", &ed25519_signature(BODY))], BODY),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(ghl_verify(&builtin, &[("x-wh-signature", &rsa_signature(BODY))], BODY), Err(VerifyError::Mismatch));
    let missing = ghl_verify(&builtin, &[], BODY).map_err(|error| error.code());
    assert_eq!(missing, Err("missing_header"));
}

#[test]
fn either_of_two_rotated_hmac_secrets_verifies_a_body() {
    let verifier = Verifier::hmac_sha256("x-signature", secrets(&["old-secret", "new-secret"])).unwrap();
    for (secret, expected) in
        [("old-secret", Ok(())), ("new-secret", Ok(())), ("third-secret", Err(VerifyError::Mismatch))]
    {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(BODY);
        let header = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(verifier.verify(&request(&[("X-Signature", header.as_str())], BODY, NOW)), expected, "{secret}");
    }
}

#[test]
fn a_standard_webhooks_receiver_holding_both_rotated_secrets_accepts_the_old_one() {
    let file: StandardWebhooksFile = load("standard_webhooks.json");
    let case = file.cases.iter().find(|case| case.id == "own-rotation-only-old").unwrap();
    let both = secrets(&[&case.secret, case.old_secret.as_deref().unwrap()]);
    let verifier = Verifier::standard_webhooks(both, Duration::from_secs(300)).unwrap();
    assert_eq!(verifier.verify(&request(&case.headers, case.body.as_bytes(), case.now)), Ok(()));
}

/// Header values as arbitrary bytes, which the `&str`-based impls cannot express.
struct RawHeaders(Vec<(&'static str, Vec<u8>)>);

impl Headers for RawHeaders {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_slice())
    }
}

#[test]
fn arbitrary_header_bytes_are_rejected_without_panicking() {
    let verifiers = [
        Verifier::hmac_sha256("x-signature", secrets(&["s"])).unwrap(),
        Verifier::token("authorization", secrets(&["t"])).unwrap(),
        Verifier::standard_webhooks(secrets(&["whsec_AAAA"]), Duration::from_secs(300)).unwrap(),
        Verifier::ghl_builtin(Duration::from_secs(300)),
    ];
    // A valid timestamp, so Standard Webhooks gets as far as parsing the signature entries.
    let names = ["x-signature", "authorization", "webhook-id", "webhook-signature"];
    let values: [Vec<u8>; 5] = [
        vec![0xff, 0xfe, b',', 0x80],
        vec![b' '; 1 << 20],
        b"v1a,\xff\xff".to_vec(),
        b"Bearer \xc3".to_vec(),
        vec![b'A'; 1 << 16],
    ];
    for value in &values {
        let mut headers: Vec<_> = names.iter().map(|name| (*name, value.clone())).collect();
        headers.extend([("x-ghl-signature", value.clone()), ("x-wh-signature", value.clone())]);
        headers.push(("webhook-timestamp", NOW.to_string().into_bytes()));
        let headers = RawHeaders(headers);
        for verifier in &verifiers {
            assert!(verifier.verify(&request(&headers, value, NOW)).is_err(), "{}", verifier.scheme());
        }
    }
}

#[test]
fn debug_output_and_errors_never_show_a_secret() {
    let secret = "whsec_c2VjcmV0LXRoYXQtbXVzdC1ub3QtbGVhaw==";
    let verifiers = [
        Verifier::hmac_sha256("x-signature", secrets(&[secret])).unwrap(),
        Verifier::token("x-token", secrets(&[secret])).unwrap(),
        Verifier::standard_webhooks(secrets(&[secret]), Duration::from_secs(300)).unwrap(),
    ];
    for verifier in &verifiers {
        let shown = format!("{verifier:?}");
        assert!(!shown.contains("c2VjcmV0") && shown.contains("redacted"), "{shown}");
        let sent = [("x-signature", secret), ("x-token", "nope"), ("webhook-signature", secret)];
        if let Err(error) = verifier.verify(&request(&sent, b"{}", NOW)) {
            assert!(!error.to_string().contains("c2VjcmV0"), "{error}");
        }
    }
    let error = Verifier::standard_webhooks(secrets(&["whsec_AAAA", "whsec_not*base64"]), Duration::ZERO).unwrap_err();
    assert!(!error.to_string().contains("not*base64"), "{error}");
}
