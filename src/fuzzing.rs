//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer) and for the test that replays their
//! corpus (`tests/fuzz_corpus.rs`), one per parser of outside input: webhook payloads in each format,
//! signature headers, rule files, the configuration, and the CRM's answers. Each takes arbitrary bytes and
//! must return without panicking; what it returns is not looked at.

use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use crate::event::Format;
use crate::verify::{Headers, Request, Verifier};

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every fuzz target, by name: the folders under `fuzz/corpus/`.
pub const TARGETS: &[(&str, Target)] = &[
    ("payload_generic", payload_generic),
    ("payload_ghl", payload_ghl),
    ("payload_ghl_workflow", payload_ghl_workflow),
    ("signatures", signatures),
    ("rules", rules),
    ("config", config),
    ("crm_answers", crm_answers),
];

pub fn payload_generic(bytes: &[u8]) {
    let _ = Format::Generic.parse(bytes);
}

pub fn payload_ghl(bytes: &[u8]) {
    let _ = Format::Ghl.parse(bytes);
}

pub fn payload_ghl_workflow(bytes: &[u8]) {
    let _ = Format::GhlWorkflow.parse(bytes);
}

/// Headers read from the input's first lines (`name: value`); the rest is the body.
struct Lines<'a>(Vec<(&'a str, &'a [u8])>);

impl Headers for Lines<'_> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }
}

/// Every signature scheme, over headers and a body cut from the input.
pub fn signatures(bytes: &[u8]) {
    let mut headers = Vec::new();
    let mut rest = bytes;
    while let Some(end) = rest.iter().position(|b| *b == b'\n') {
        let line = &rest[..end];
        let Some(colon) = line.iter().position(|b| *b == b':') else { break };
        let Ok(name) = std::str::from_utf8(&line[..colon]) else { break };
        headers.push((name, line[colon + 1..].trim_ascii()));
        rest = &rest[end + 1..];
    }
    let headers = Lines(headers);
    let request = Request { headers: &headers, body: rest, peer: None, now_unix: 1_800_000_000 };
    let secret = || vec![SecretString::from("fuzz-secret")];
    let whsec = "whsec_ZnV6ei1zZWNyZXQtZnV6ei1zZWNyZXQ=";
    let verifiers = [
        Verifier::hmac_sha256("x-signature", secret()).ok(),
        Verifier::token("authorization", secret()).ok(),
        Verifier::standard_webhooks(vec![SecretString::from(whsec)], Duration::from_secs(300)).ok(),
        Some(Verifier::ghl_builtin(Duration::from_secs(300))),
    ];
    for verifier in verifiers.iter().flatten() {
        let _ = verifier.verify(&request);
    }
}

pub fn rules(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let _ = crate::rules::RuleSet::compile(&[(PathBuf::from("fuzz.toml"), text)]);
}

pub fn config(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let _ = crate::config::Config::from_toml(&text, Path::new("."));
}

pub fn crm_answers(bytes: &[u8]) {
    crate::upstream::read_answers(bytes);
}
