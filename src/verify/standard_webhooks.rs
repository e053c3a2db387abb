//! `standard-webhooks`: the Standard Webhooks 1.0 scheme (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature`; signed content `{id}.{timestamp}.{body}`), as `shared/vectors/README.md` and
//! `standard_webhooks.json` pin it down.
//!
//! - `v1,<base64>` entries are HMAC-SHA256 keyed with the base64-decoded `whsec_` secret (a bare base64
//!   secret is accepted too, like the reference libraries); `v1a,<base64>` entries are Ed25519 checked
//!   with a `whpk_` key (base64 of the raw 32 bytes). A key reads only entries of its own version.
//! - The header is a space-separated list; any valid entry suffices; unknown versions and malformed
//!   entries are skipped. Version labels are compared exactly (`V1` is not `v1`).
//! - Strict choices from the README: the v1 MAC is compared as padded base64 text (unpadded fails), and
//!   the timestamp must be base-10 digits only (`1767225600.0` is invalid).
//! - The timestamp must be within the tolerance either way, bounds included (300 s in the references).

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, VerifyingKey};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use subtle::{Choice, ConstantTimeEq};

use super::{KeyError, Request, VerifyError};

/// The scheme's configuration name.
pub(super) const SCHEME: &str = "standard-webhooks";

/// At most this many entries are read from `webhook-signature`: each `v1a` entry costs an Ed25519
/// verification per key, so an unbounded list would let one request burn CPU. Senders use one or two.
const MAX_ENTRIES: usize = 32;

/// One configured secret, by the version of entries it reads.
enum Key {
    /// `v1`: the decoded HMAC key.
    Hmac(SecretSlice<u8>),
    /// `v1a`: the sender's Ed25519 public key.
    Ed25519(VerifyingKey),
}

/// A configured `standard-webhooks` verifier.
pub struct StandardWebhooks {
    /// Secrets and public keys; more than one during rotation.
    keys: Vec<Key>,
    /// Accepted clock difference either way between the sender's timestamp and ours.
    tolerance: Duration,
}

impl StandardWebhooks {
    pub(super) fn new(secrets: Vec<SecretString>, tolerance: Duration) -> Result<Self, KeyError> {
        super::check_secrets(SCHEME, &secrets)?;
        let keys = secrets.iter().enumerate().map(|(index, secret)| parse_key(index + 1, secret));
        Ok(Self { keys: keys.collect::<Result<_, _>>()?, tolerance })
    }

    pub(super) fn tolerance(&self) -> Duration {
        self.tolerance
    }

    pub(super) fn verify(&self, req: &Request<'_>) -> Result<(), VerifyError> {
        let required =
            |name: &str| super::present(req.headers, name).ok_or_else(|| VerifyError::MissingHeader(name.to_owned()));
        let (id, timestamp, signature) =
            (required("webhook-id")?, required("webhook-timestamp")?, required("webhook-signature")?);
        super::check_timestamp(parse_timestamp(timestamp)?, req.now_unix, self.tolerance)?;
        if signature.split(|b| *b == b' ').nth(MAX_ENTRIES).is_some() {
            return Err(VerifyError::MalformedHeader {
                header: "webhook-signature".to_owned(),
                expected: "at most 32 space-separated `<version>,<base64>` entries",
            });
        }
        let entries: Vec<(&[u8], &[u8])> = signature
            .split(|b| *b == b' ')
            .filter_map(|entry| {
                let comma = entry.iter().position(|b| *b == b',')?;
                Some((entry.get(..comma)?, entry.get(comma + 1..)?))
            })
            .collect();
        let parts: [&[u8]; 5] = [id, b".", timestamp, b".", req.body];
        let mut matched = Choice::from(0);
        for key in &self.keys {
            matched |= match key {
                Key::Hmac(secret) => matches_v1(secret.expose_secret(), &parts, &entries),
                Key::Ed25519(public) => matches_v1a(public, &parts, &entries),
            };
        }
        if bool::from(matched) { Ok(()) } else { Err(VerifyError::Mismatch) }
    }
}

impl fmt::Debug for StandardWebhooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hmac = self.keys.iter().filter(|key| matches!(key, Key::Hmac(_))).count();
        f.debug_struct("StandardWebhooks")
            .field("hmac_secrets", &format_args!("[{hmac} redacted]"))
            .field("ed25519_keys", &(self.keys.len() - hmac))
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// Reads one configured secret; its prefix says which kind it is.
fn parse_key(position: usize, secret: &SecretString) -> Result<Key, KeyError> {
    let invalid = |reason| KeyError::InvalidSecret { scheme: SCHEME, position, reason };
    let text = secret.expose_secret();
    if let Some(encoded) = text.strip_prefix("whpk_") {
        let raw = STANDARD.decode(encoded).map_err(|_| invalid("the whpk_ key is not standard padded base64"))?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| invalid("the whpk_ key does not decode to 32 bytes"))?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| invalid("the whpk_ key is not an Ed25519 point"))?;
        return Ok(Key::Ed25519(key));
    }
    if text.starts_with("whsk_") {
        return Err(invalid("it is a whsk_ signing key; configure the sender's whpk_ public key instead"));
    }
    // The reference libraries strip an optional `whsec_` prefix (vector `lib-secret-without-prefix`).
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let raw = STANDARD.decode(encoded).map_err(|_| invalid("the whsec_ secret is not standard padded base64"))?;
    if raw.is_empty() {
        return Err(invalid("the whsec_ secret decodes to no bytes"));
    }
    Ok(Key::Hmac(SecretSlice::from(raw)))
}

/// Base-10 digits only, as the Rust reference library parses it. An all-digit value too large for
/// `i64` is a timestamp far in the future, which is what the tolerance check would say of it.
fn parse_timestamp(value: &[u8]) -> Result<i64, VerifyError> {
    if !value.iter().all(u8::is_ascii_digit) {
        return Err(VerifyError::InvalidTimestamp);
    }
    let digits = std::str::from_utf8(value).map_err(|_| VerifyError::InvalidTimestamp)?;
    digits.parse().map_err(|_| VerifyError::TimestampTooNew)
}

/// Whether any `v1` entry equals the padded base64 HMAC of the signed content, compared as text.
fn matches_v1(key: &[u8], parts: &[&[u8]], entries: &[(&[u8], &[u8])]) -> Choice {
    let Some(mac) = super::hmac_sha256(key, parts) else { return Choice::from(0) };
    let expected = STANDARD.encode(mac);
    let mut matched = Choice::from(0);
    for (_, value) in entries.iter().filter(|(version, _)| *version == b"v1") {
        matched |= value.ct_eq(expected.as_bytes());
    }
    matched
}

/// Whether any `v1a` entry is a valid Ed25519 signature of the signed content under `key`.
fn matches_v1a(key: &VerifyingKey, parts: &[&[u8]], entries: &[(&[u8], &[u8])]) -> Choice {
    let content = parts.concat();
    let valid = entries.iter().filter(|(version, _)| *version == b"v1a").any(|(_, value)| {
        let Ok(raw) = STANDARD.decode(value) else { return false };
        let Ok(raw) = <[u8; 64]>::try_from(raw) else { return false };
        key.verify_strict(&content, &Signature::from_bytes(&raw)).is_ok()
    });
    Choice::from(u8::from(valid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_must_be_plain_digits() {
        assert_eq!(parse_timestamp(b"1767225600"), Ok(1_767_225_600));
        assert_eq!(parse_timestamp(b"0001"), Ok(1));
        for bad in [&b"1767225600.0"[..], b"-5", b"+5", b" 5", b"\xff", b"1e9"] {
            assert_eq!(parse_timestamp(bad), Err(VerifyError::InvalidTimestamp));
        }
        assert_eq!(parse_timestamp(b"99999999999999999999999"), Err(VerifyError::TimestampTooNew));
    }

    #[test]
    fn unusable_secrets_are_reported_by_position_without_their_value() {
        let cases = [
            ("whsec_!!!", "the whsec_ secret is not standard padded base64"),
            ("whpk_AAAA", "the whpk_ key does not decode to 32 bytes"),
            ("whsk_iSJn251EtGWaD+7B4E6NjgwYCw16KqrqGtnCmhvB0zE=", "it is a whsk_ signing key"),
        ];
        for (secret, reason) in cases {
            let error = StandardWebhooks::new(vec!["whsec_AAAA".into(), secret.into()], Duration::ZERO).unwrap_err();
            let message = error.to_string();
            assert!(message.starts_with("standard-webhooks: secret #2 is unusable: "), "{message}");
            assert!(message.contains(reason) && !message.contains(secret), "{message}");
        }
    }

    #[test]
    fn more_than_32_signature_entries_are_refused() {
        let verifier = StandardWebhooks::new(vec!["whsec_AAAA".into()], Duration::from_secs(300)).unwrap();
        let signature = vec!["v1a,AAAA"; 33].join(" ");
        let headers = [("webhook-id", "m"), ("webhook-timestamp", "10"), ("webhook-signature", signature.as_str())];
        let result = verifier.verify(&Request { headers: &headers, body: b"", peer: None, now_unix: 10 });
        assert_eq!(result.map_err(|error| error.code()), Err("malformed_header"));
    }
}
