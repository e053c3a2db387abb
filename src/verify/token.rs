//! `token`: a static shared token in a header, for senders that cannot sign (GoHighLevel's workflow
//! Webhook action lets a user add headers but signs nothing, `shared/ghl/API.md` §9).
//!
//! With the header `authorization` the RFC 6750 form `Bearer <token>` is accepted (the scheme name in
//! any case), which is what API.md §9 suggests configuring in the workflow action. Both sides are hashed
//! with SHA-256 before the constant-time comparison, so neither a token's content nor its length leaks
//! through timing, and every configured token is tried (rotation) without short-circuiting.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::{KeyError, Request, VerifyError};

/// The scheme's configuration name.
pub(super) const SCHEME: &str = "token";

/// A configured `token` verifier.
pub struct Token {
    /// Lower-cased header name.
    header: String,
    /// True when the header is `authorization`, where a `Bearer ` scheme prefix is stripped.
    bearer: bool,
    /// Accepted tokens; more than one during rotation.
    tokens: Vec<SecretString>,
}

impl Token {
    pub(super) fn new(header: &str, tokens: Vec<SecretString>) -> Result<Self, KeyError> {
        let header = super::header_name(SCHEME, header)?;
        super::check_secrets(SCHEME, &tokens)?;
        Ok(Self { bearer: header == "authorization", header, tokens })
    }

    pub(super) fn verify(&self, req: &Request<'_>) -> Result<(), VerifyError> {
        let value =
            super::present(req.headers, &self.header).ok_or_else(|| VerifyError::MissingHeader(self.header.clone()))?;
        let presented = if self.bearer { strip_bearer(value) } else { value };
        let presented = Sha256::digest(presented);
        let mut matched = Choice::from(0);
        for token in &self.tokens {
            matched |= Sha256::digest(token.expose_secret().as_bytes()).ct_eq(&presented);
        }
        if bool::from(matched) { Ok(()) } else { Err(VerifyError::TokenMismatch) }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("header", &self.header)
            .field("tokens", &format_args!("[{} redacted]", self.tokens.len()))
            .finish()
    }
}

/// `Bearer <token>` → `<token>`; any other value is returned whole (a bare token is accepted too).
fn strip_bearer(value: &[u8]) -> &[u8] {
    match value.split_at_checked(6) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case(b"bearer") && rest.first() == Some(&b' ') => {
            rest.trim_ascii_start()
        }
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: &str, sent: &str) -> Result<(), VerifyError> {
        let verifier = Token::new(header, vec!["old-token".into(), "new-token".into()]).unwrap();
        let headers = [(header, sent)];
        verifier.verify(&Request { headers: &headers, body: b"{}", peer: None, now_unix: 0 })
    }

    #[test]
    fn either_rotated_token_is_accepted() {
        assert_eq!(check("x-followd-token", "old-token"), Ok(()));
        assert_eq!(check("X-Followd-Token", "new-token"), Ok(()));
        assert_eq!(check("x-followd-token", "other-token"), Err(VerifyError::TokenMismatch));
        assert_eq!(check("x-followd-token", "Bearer new-token"), Err(VerifyError::TokenMismatch));
    }

    #[test]
    fn authorization_accepts_the_bearer_form_in_any_case() {
        assert_eq!(check("authorization", "Bearer new-token"), Ok(()));
        assert_eq!(check("Authorization", "bEaReR  old-token"), Ok(()));
        assert_eq!(check("authorization", "new-token"), Ok(()));
        assert_eq!(check("authorization", "Basic new-token"), Err(VerifyError::TokenMismatch));
        assert_eq!(check("authorization", "Bearer"), Err(VerifyError::TokenMismatch));
    }

    #[test]
    fn an_empty_header_counts_as_missing() {
        assert_eq!(check("x-followd-token", ""), Err(VerifyError::MissingHeader("x-followd-token".into())));
    }

    #[test]
    fn an_empty_token_is_a_configuration_error_naming_its_position() {
        let error = Token::new("x-t", vec!["fine".into(), "".into()]).unwrap_err();
        assert_eq!(error.to_string(), "token: secret #2 is unusable: it is empty");
    }
}
