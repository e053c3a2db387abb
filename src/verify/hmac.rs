//! `hmac-sha256`: a header (default `x-signature`, chosen by the caller) carries
//! `sha256=<64 lower-case hex digits>` of HMAC-SHA256(secret, raw body), GitHub's `X-Hub-Signature-256` form.
//!
//! Strict on purpose (`shared/vectors/README.md`, "Strict choices"): the whole header string is compared
//! with the expected one, as GitHub's reference check does, so upper-case hex and `SHA256=` are rejected
//! as malformed rather than hex-decoded into a match. Every configured secret is tried (rotation) and the
//! results are combined without short-circuiting, so timing does not tell which secret matched.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use subtle::{Choice, ConstantTimeEq};

use super::{KeyError, Request, VerifyError};

/// The scheme's configuration name.
pub(super) const SCHEME: &str = "hmac-sha256";

const PREFIX: &[u8] = b"sha256=";

/// What a well-formed header looks like, for the error message.
const EXPECTED: &str = "`sha256=` followed by 64 lower-case hex digits";

/// A configured `hmac-sha256` verifier.
pub struct HmacSha256 {
    /// Lower-cased header name.
    header: String,
    /// Shared secrets, each used as the HMAC key through its UTF-8 bytes; more than one during rotation.
    secrets: Vec<SecretString>,
}

impl HmacSha256 {
    pub(super) fn new(header: &str, secrets: Vec<SecretString>) -> Result<Self, KeyError> {
        let header = super::header_name(SCHEME, header)?;
        super::check_secrets(SCHEME, &secrets)?;
        Ok(Self { header, secrets })
    }

    pub(super) fn verify(&self, req: &Request<'_>) -> Result<(), VerifyError> {
        let value =
            super::present(req.headers, &self.header).ok_or_else(|| VerifyError::MissingHeader(self.header.clone()))?;
        if !is_well_formed(value) {
            return Err(VerifyError::MalformedHeader { header: self.header.clone(), expected: EXPECTED });
        }
        let mut matched = Choice::from(0);
        for secret in &self.secrets {
            if let Some(expected) = expected_header(secret.expose_secret().as_bytes(), req.body) {
                matched |= expected.ct_eq(value);
            }
        }
        if bool::from(matched) { Ok(()) } else { Err(VerifyError::Mismatch) }
    }
}

impl fmt::Debug for HmacSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HmacSha256")
            .field("header", &self.header)
            .field("secrets", &format_args!("[{} redacted]", self.secrets.len()))
            .finish()
    }
}

/// `sha256=` and exactly 64 lower-case hex digits, nothing around them.
fn is_well_formed(value: &[u8]) -> bool {
    value
        .strip_prefix(PREFIX)
        .is_some_and(|hex| hex.len() == 64 && hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The full header value a sender holding `key` would send for `body`.
fn expected_header(key: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let mac = super::hmac_sha256(key, &[body])?;
    let mut header = PREFIX.to_vec();
    header.extend_from_slice(hex::encode(mac).as_bytes());
    Some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_lower_case_form_is_well_formed() {
        let digits = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(is_well_formed(format!("sha256={digits}").as_bytes()));
        assert!(!is_well_formed(format!("sha256={}", digits.to_uppercase()).as_bytes()));
        assert!(!is_well_formed(format!("SHA256={digits}").as_bytes()));
        assert!(!is_well_formed(format!("sha256={digits} ").as_bytes()));
        assert!(!is_well_formed(b"sha256="));
        assert!(!is_well_formed(&[0xff; 71]));
    }

    #[test]
    fn the_expected_header_matches_githubs_published_example() {
        let header = expected_header(b"It's a Secret to Everybody", b"Hello, World!").unwrap();
        assert_eq!(header, b"sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
    }

    #[test]
    fn debug_output_redacts_the_secrets() {
        let verifier = HmacSha256::new("X-Signature", vec!["hunter2-secret".into()]).unwrap();
        let shown = format!("{verifier:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("x-signature"), "{shown}");
    }
}
