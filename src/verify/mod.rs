//! Webhook signature verification: is this request really from the sender its source trusts?
//!
//! A [`Verifier`] is built once per configured source and checks a [`Request`]: header bytes, the raw
//! body, the peer address and a clock value passed in. One file per scheme (`hmac.rs`, `token.rs`,
//! `standard_webhooks.rs`, `ghl.rs`); loopback-only is small enough to live here.
//!
//! Not here: HTTP (status codes live in `http/error.rs`), payload parsing and event-id de-duplication.
//!
//! Invariants: every check runs over the raw body bytes, never a re-serialisation
//! (`shared/ghl/API.md` §8); secrets are compared in constant time and only through `expose_secret()`
//! at the point of use; no error message or `Debug` output holds a secret or a received signature;
//! no header value, however long or non-UTF-8, makes verification panic.

mod ghl;
mod hmac;
mod standard_webhooks;
mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use ::hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Read access to a request's headers; names are matched case-insensitively.
pub trait Headers {
    /// The first value of header `name`, as raw bytes, or `None` when the header is absent.
    fn get(&self, name: &str) -> Option<&[u8]>;
}

impl<const N: usize> Headers for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_bytes())
    }
}

impl Headers for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_bytes())
    }
}

impl Headers for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_bytes())
    }
}

/// What a verifier looks at.
pub struct Request<'a> {
    /// The request's headers.
    pub headers: &'a dyn Headers,
    /// The body exactly as received: signatures cover these bytes.
    pub body: &'a [u8],
    /// The connecting peer, when known; only [`Verifier::loopback_only`] reads it.
    pub peer: Option<IpAddr>,
    /// The receiver's clock in Unix seconds, passed in so tests can pin it.
    pub now_unix: i64,
}

/// Why a request was not accepted. Messages name headers, never their values or any secret.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum VerifyError {
    #[error("header `{0}` is missing or empty")]
    MissingHeader(String),
    #[error("header `{header}` is malformed: expected {expected}")]
    MalformedHeader { header: String, expected: &'static str },
    #[error("header `{0}` is not standard padded base64 of a signature of the key's length")]
    MalformedSignature(&'static str),
    #[error("the signature does not match the body under any configured secret or key")]
    Mismatch,
    #[error("the token does not match any configured token")]
    TokenMismatch,
    #[error("the webhook timestamp is not a whole number of Unix seconds")]
    InvalidTimestamp,
    #[error("the webhook timestamp is older than the replay tolerance allows")]
    TimestampTooOld,
    #[error("the webhook timestamp is further in the future than the replay tolerance allows")]
    TimestampTooNew,
    #[error("header `{0}` is present but no key of its kind is configured")]
    NoKeyForHeader(&'static str),
    #[error("this source accepts only requests from loopback; configure a secret to accept others")]
    NotLoopback,
}

impl VerifyError {
    /// A stable name for the failure; where the vector files name a class, this is that name.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingHeader(_) => "missing_header",
            Self::MalformedHeader { .. } => "malformed_header",
            Self::MalformedSignature(_) => "malformed_signature",
            Self::Mismatch => "signature_mismatch",
            Self::TokenMismatch => "token_mismatch",
            Self::InvalidTimestamp => "invalid_timestamp",
            Self::TimestampTooOld => "timestamp_too_old",
            Self::TimestampTooNew => "timestamp_too_new",
            Self::NoKeyForHeader(_) => "no_key_for_header",
            Self::NotLoopback => "not_loopback",
        }
    }
}

/// A configured secret, token or key that cannot be used. Positions count from 1 in the configured
/// list; the value itself is never part of the message.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("{scheme}: no secret or key is configured; give at least one")]
    NoKeys { scheme: &'static str },
    #[error("{scheme}: `{name}` is not a valid HTTP header name")]
    InvalidHeaderName { scheme: &'static str, name: String },
    #[error("{scheme}: secret #{position} is unusable: {reason}")]
    InvalidSecret { scheme: &'static str, position: usize, reason: &'static str },
    #[error("ghl: public key #{position} is unusable: {reason}")]
    InvalidPublicKey { position: usize, reason: String },
}

/// One source's verification scheme with its secrets or keys. `Debug` redacts every secret.
#[derive(Debug)]
pub enum Verifier {
    /// `hmac-sha256`, see `hmac.rs`.
    HmacSha256(hmac::HmacSha256),
    /// `token`, see `token.rs`.
    Token(token::Token),
    /// `standard-webhooks`, see `standard_webhooks.rs`.
    StandardWebhooks(standard_webhooks::StandardWebhooks),
    /// `ghl`, see `ghl.rs`.
    Ghl(ghl::Ghl),
    /// No secret: only loopback peers are accepted.
    LoopbackOnly,
}

impl Verifier {
    /// `sha256=<lower-case hex HMAC-SHA256 of the body>` in `header`; any of `secrets` may match (rotation).
    pub fn hmac_sha256(header: &str, secrets: Vec<SecretString>) -> Result<Self, KeyError> {
        hmac::HmacSha256::new(header, secrets).map(Self::HmacSha256)
    }

    /// `header` equals one of `tokens`; for `authorization`, `Bearer <token>` is accepted too.
    pub fn token(header: &str, tokens: Vec<SecretString>) -> Result<Self, KeyError> {
        token::Token::new(header, tokens).map(Self::Token)
    }

    /// Standard Webhooks with `whsec_` (or bare base64) HMAC secrets and/or `whpk_` Ed25519 public keys.
    pub fn standard_webhooks(secrets: Vec<SecretString>, tolerance: Duration) -> Result<Self, KeyError> {
        standard_webhooks::StandardWebhooks::new(secrets, tolerance).map(Self::StandardWebhooks)
    }

    /// GoHighLevel's signatures checked with these SPKI PEM keys (RSA and Ed25519 may be mixed).
    /// `tolerance` is the replay window that payload code applies to the body's `timestamp`.
    pub fn ghl(public_keys_pem: Vec<String>, tolerance: Duration) -> Result<Self, KeyError> {
        ghl::Ghl::new(&public_keys_pem, tolerance).map(Self::Ghl)
    }

    /// GoHighLevel's signatures checked with its published keys, embedded in the binary.
    pub fn ghl_builtin(tolerance: Duration) -> Self {
        Self::Ghl(ghl::Ghl::builtin(tolerance))
    }

    /// Accepts only requests whose peer is a loopback address: the default for a source with no secret.
    pub fn loopback_only() -> Self {
        Self::LoopbackOnly
    }

    /// `Ok(())` when the request carries a valid signature (or token, or comes from loopback).
    pub fn verify(&self, req: &Request<'_>) -> Result<(), VerifyError> {
        match self {
            Self::HmacSha256(scheme) => scheme.verify(req),
            Self::Token(scheme) => scheme.verify(req),
            Self::StandardWebhooks(scheme) => scheme.verify(req),
            Self::Ghl(scheme) => scheme.verify(req),
            Self::LoopbackOnly => match req.peer {
                Some(peer) if is_loopback(peer) => Ok(()),
                _ => Err(VerifyError::NotLoopback),
            },
        }
    }

    /// The scheme's configuration name.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::HmacSha256(_) => hmac::SCHEME,
            Self::Token(_) => token::SCHEME,
            Self::StandardWebhooks(_) => standard_webhooks::SCHEME,
            Self::Ghl(_) => ghl::SCHEME,
            Self::LoopbackOnly => "loopback",
        }
    }

    /// The replay window of schemes that have one, for payload code that checks a body timestamp.
    pub fn replay_tolerance(&self) -> Option<Duration> {
        match self {
            Self::StandardWebhooks(scheme) => Some(scheme.tolerance()),
            Self::Ghl(scheme) => Some(scheme.tolerance()),
            Self::HmacSha256(_) | Self::Token(_) | Self::LoopbackOnly => None,
        }
    }
}

/// Accepts `ts_unix` when it is within `tolerance` of `now_unix` either way, bounds included
/// (the Standard Webhooks reference libraries' rule, `shared/vectors/README.md`).
pub fn check_timestamp(ts_unix: i64, now_unix: i64, tolerance: Duration) -> Result<(), VerifyError> {
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now_unix.saturating_sub(ts_unix) > tolerance {
        Err(VerifyError::TimestampTooOld)
    } else if ts_unix.saturating_sub(now_unix) > tolerance {
        Err(VerifyError::TimestampTooNew)
    } else {
        Ok(())
    }
}

/// v4 127/8 and v6 `::1`, including v4-mapped v6 (`::ffff:127.0.0.1`) as dual-stack sockets report it.
fn is_loopback(peer: IpAddr) -> bool {
    match peer {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    }
}

/// A header's value, with an empty value counted as absent (every vector file does so).
fn present<'a>(headers: &'a dyn Headers, name: &str) -> Option<&'a [u8]> {
    headers.get(name).filter(|value| !value.is_empty())
}

/// A configured header name, checked against RFC 9110's token grammar and lower-cased.
fn header_name(scheme: &'static str, name: &str) -> Result<String, KeyError> {
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(KeyError::InvalidHeaderName { scheme, name: name.to_owned() });
    }
    Ok(name.to_ascii_lowercase())
}

/// Rejects an empty list and empty entries: either would be a configuration mistake, not a policy.
fn check_secrets(scheme: &'static str, secrets: &[SecretString]) -> Result<(), KeyError> {
    if secrets.is_empty() {
        return Err(KeyError::NoKeys { scheme });
    }
    match secrets.iter().position(|secret| secret.expose_secret().is_empty()) {
        Some(index) => Err(KeyError::InvalidSecret { scheme, position: index + 1, reason: "it is empty" }),
        None => Ok(()),
    }
}

/// HMAC-SHA256 over the concatenation of `parts`. `None` cannot happen (HMAC takes keys of any
/// length); callers treat it as "no match", so even that impossible branch fails closed.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Option<[u8; 32]> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    for part in parts {
        mac.update(part);
    }
    Some(mac.finalize().into_bytes().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_peers_are_recognised_in_every_form() {
        for peer in ["127.0.0.1", "127.9.8.7", "::1", "::ffff:127.0.0.1"] {
            assert!(is_loopback(peer.parse().unwrap()), "{peer}");
        }
        for peer in ["10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", "0.0.0.0", "::"] {
            assert!(!is_loopback(peer.parse().unwrap()), "{peer}");
        }
    }

    #[test]
    fn loopback_only_rejects_an_unknown_peer() {
        let request = Request { headers: &[], body: b"", peer: None, now_unix: 0 };
        assert_eq!(Verifier::loopback_only().verify(&request), Err(VerifyError::NotLoopback));
    }

    #[test]
    fn timestamps_at_the_tolerance_bounds_are_accepted_and_one_past_rejected() {
        let five_minutes = Duration::from_secs(300);
        assert_eq!(check_timestamp(1000, 1300, five_minutes), Ok(()));
        assert_eq!(check_timestamp(1300, 1000, five_minutes), Ok(()));
        assert_eq!(check_timestamp(1000, 1301, five_minutes), Err(VerifyError::TimestampTooOld));
        assert_eq!(check_timestamp(1301, 1000, five_minutes), Err(VerifyError::TimestampTooNew));
        assert_eq!(check_timestamp(i64::MIN, i64::MAX, five_minutes), Err(VerifyError::TimestampTooOld));
    }

    #[test]
    fn header_names_are_validated_and_lower_cased() {
        assert_eq!(header_name("token", "X-Followd-Token"), Ok("x-followd-token".to_owned()));
        assert!(header_name("token", "").is_err());
        assert!(header_name("token", "x signature").is_err());
        assert!(header_name("token", "x-sig:").is_err());
    }
}
