//! `ghl`: GoHighLevel's own webhook signatures (`shared/ghl/API.md` §8, `shared/vectors/README.md`).
//!
//! - `X-GHL-Signature`: standard base64 of an Ed25519 signature over the raw body (the current scheme).
//! - `x-wh-signature`: standard base64 of an RSA PKCS#1 v1.5 SHA-256 signature over the raw body (legacy,
//!   to be retired by GoHighLevel; both are supported until then).
//!
//! Keys are SPKI PEM; a list may mix both kinds, detected per key from its algorithm OID. Each header is
//! checked only with keys of its kind. `X-GHL-Signature` wins when both headers are present, as in
//! GoHighLevel's SDKs, unless no Ed25519 key is configured. An empty value or the literal `N/A` (sent by
//! some senders, per community code) counts as absent; a request with neither header is rejected.
//! Replay protection uses the payload's `timestamp`, so it lives with the payload code; `tolerance` is
//! kept here for it. Not here: the event id (`webhookId` or the body's SHA-256), which is payload work.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, VerifyingKey};
use rsa::RsaPublicKey;
use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::pkcs8::Document;
use rsa::pkcs8::der::pem;
use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

use super::{Headers, KeyError, Request, VerifyError};

/// The scheme's configuration name.
pub(super) const SCHEME: &str = "ghl";

const ED25519_HEADER: &str = "x-ghl-signature";
const RSA_HEADER: &str = "x-wh-signature";

/// GoHighLevel's published public keys (API.md §8, with their SPKI SHA-256 fingerprints).
const BUILTIN_KEYS: [&str; 2] = [
    include_str!("ghl_keys/ghl-webhook-ed25519-x-ghl-signature.pem"),
    include_str!("ghl_keys/ghl-webhook-rsa-x-wh-signature.pem"),
];

/// Longer header values cannot be a signature: 684 characters encode the 512 bytes of an RSA-4096
/// signature, the largest key `rsa` accepts. Checked before decoding so a huge value costs nothing.
const MAX_SIGNATURE_BASE64: usize = 684;

/// RSA keys shorter than this are refused: GoHighLevel's is 4096 bits, and shorter ones are weak.
const MIN_RSA_BYTES: usize = 256;

/// A configured `ghl` verifier.
pub struct Ghl {
    /// Keys for `X-GHL-Signature`.
    ed25519: Vec<VerifyingKey>,
    /// Keys for `x-wh-signature`.
    rsa: Vec<RsaPublicKey>,
    /// Replay window for the payload's `timestamp`, applied by payload code.
    tolerance: Duration,
}

impl Ghl {
    pub(super) fn new(public_keys_pem: &[String], tolerance: Duration) -> Result<Self, KeyError> {
        if public_keys_pem.is_empty() {
            return Err(KeyError::NoKeys { scheme: SCHEME });
        }
        let mut verifier = Self { ed25519: Vec::new(), rsa: Vec::new(), tolerance };
        for (index, pem) in public_keys_pem.iter().enumerate() {
            verifier.add_key(index + 1, pem)?;
        }
        Ok(verifier)
    }

    /// The embedded published keys. A unit test proves they parse; were they ever not to, the verifier
    /// would hold no key and reject every request (`NoKeyForHeader`): failing closed, never open.
    pub(super) fn builtin(tolerance: Duration) -> Self {
        let pems = BUILTIN_KEYS.map(str::to_owned);
        Self::new(&pems, tolerance).unwrap_or(Self { ed25519: Vec::new(), rsa: Vec::new(), tolerance })
    }

    pub(super) fn tolerance(&self) -> Duration {
        self.tolerance
    }

    pub(super) fn verify(&self, req: &Request<'_>) -> Result<(), VerifyError> {
        let ed25519 = signature_header(req.headers, ED25519_HEADER);
        let rsa = signature_header(req.headers, RSA_HEADER);
        match (ed25519, rsa) {
            (None, None) => Err(VerifyError::MissingHeader(format!("{ED25519_HEADER} or {RSA_HEADER}"))),
            (Some(value), _) if !self.ed25519.is_empty() => self.verify_ed25519(value, req.body),
            (_, Some(value)) if !self.rsa.is_empty() => self.verify_rsa(value, req.body),
            (Some(_), _) => Err(VerifyError::NoKeyForHeader(ED25519_HEADER)),
            (None, Some(_)) => Err(VerifyError::NoKeyForHeader(RSA_HEADER)),
        }
    }

    fn verify_ed25519(&self, value: &[u8], body: &[u8]) -> Result<(), VerifyError> {
        let raw = decode(value, ED25519_HEADER)?;
        let raw = <[u8; 64]>::try_from(raw).map_err(|_| VerifyError::MalformedSignature(ED25519_HEADER))?;
        let signature = Signature::from_bytes(&raw);
        // `verify_strict` also refuses weak keys and non-canonical signatures, which no honest signer makes.
        if self.ed25519.iter().any(|key| key.verify_strict(body, &signature).is_ok()) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    fn verify_rsa(&self, value: &[u8], body: &[u8]) -> Result<(), VerifyError> {
        let raw = decode(value, RSA_HEADER)?;
        // A PKCS#1 v1.5 signature is exactly as long as the key's modulus (512 bytes for GoHighLevel's).
        let mut keys = self.rsa.iter().filter(|key| key.size() == raw.len()).peekable();
        if keys.peek().is_none() {
            return Err(VerifyError::MalformedSignature(RSA_HEADER));
        }
        let digest = Sha256::digest(body);
        if keys.any(|key| key.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &raw).is_ok()) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }

    /// Parses one SPKI PEM key and files it under its kind.
    fn add_key(&mut self, position: usize, pem: &str) -> Result<(), KeyError> {
        let invalid = |reason: String| KeyError::InvalidPublicKey { position, reason };
        let pem = pem.trim();
        // The label first, so a private key is named as such before its DER body is looked at.
        let label = pem::decode_label(pem.as_bytes()).map_err(|error| invalid(format!("not PEM ({error})")))?;
        if label != "PUBLIC KEY" {
            return Err(invalid(format!("its PEM label is `{label}`; give the `PUBLIC KEY` (SPKI) of the sender")));
        }
        let (_, document) = Document::from_pem(pem).map_err(|error| invalid(format!("bad PEM or DER ({error})")))?;
        let spki = SubjectPublicKeyInfoRef::try_from(document.as_bytes())
            .map_err(|error| invalid(format!("not a SubjectPublicKeyInfo ({error})")))?;
        let oid = spki.algorithm.oid;
        if oid == ed25519_dalek::pkcs8::ALGORITHM_OID {
            let key = VerifyingKey::try_from(spki).map_err(|error| invalid(format!("bad Ed25519 key ({error})")))?;
            self.ed25519.push(key);
        } else if oid == rsa::pkcs1::ALGORITHM_OID {
            let key = RsaPublicKey::try_from(spki)
                .map_err(|error| invalid(format!("bad RSA key, or larger than 4096 bits ({error})")))?;
            if key.size() < MIN_RSA_BYTES {
                return Err(invalid(format!("its RSA modulus is {} bits; at least 2048 are needed", key.size() * 8)));
            }
            self.rsa.push(key);
        } else {
            return Err(invalid(format!("its algorithm {oid} is neither RSA nor Ed25519")));
        }
        Ok(())
    }
}

impl fmt::Debug for Ghl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ghl")
            .field("ed25519_keys", &self.ed25519.len())
            .field("rsa_keys", &self.rsa.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// The header's value, or `None` when absent, empty or the literal `N/A`.
fn signature_header<'a>(headers: &'a dyn Headers, name: &str) -> Option<&'a [u8]> {
    super::present(headers, name).filter(|value| *value != b"N/A")
}

/// Strict standard base64 (padding required, canonical), as GoHighLevel's SDKs and the vectors expect.
fn decode(value: &[u8], header: &'static str) -> Result<Vec<u8>, VerifyError> {
    if value.len() > MAX_SIGNATURE_BASE64 {
        return Err(VerifyError::MalformedSignature(header));
    }
    STANDARD.decode(value).map_err(|_| VerifyError::MalformedSignature(header))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 of each embedded key's DER SPKI, as recorded in API.md §8.
    #[test]
    fn the_builtin_keys_are_gohighlevels_published_ones() {
        let fingerprints: Vec<String> = BUILTIN_KEYS
            .iter()
            .map(|pem| hex::encode(Sha256::digest(Document::from_pem(pem.trim()).unwrap().1.as_bytes())))
            .collect();
        assert_eq!(
            fingerprints,
            [
                "5a2c1b2749d3efcc233fb27d4ab43d56b8d20818c42cd226f6c9a3ff20d3097c",
                "2f62045d413b1b7747e26770ce7f57840cbf86288cd20ceb90d299a62501fd25",
            ]
        );
        let builtin = Ghl::builtin(Duration::from_secs(300));
        assert_eq!((builtin.ed25519.len(), builtin.rsa.len()), (1, 1));
        assert_eq!(builtin.rsa[0].size(), 512);
    }

    #[test]
    fn a_key_that_is_not_a_public_key_is_reported_by_position() {
        let pems = [
            BUILTIN_KEYS[0].to_owned(),
            format!("-----BEGIN {label}-----\nAAAA\n-----END {label}-----\n", label = "PRIVATE KEY"),
        ];
        let message = Ghl::new(&pems, Duration::ZERO).unwrap_err().to_string();
        assert!(message.starts_with("ghl: public key #2 is unusable: its PEM label is `PRIVATE KEY`"), "{message}");
        let message = Ghl::new(&["not pem".to_owned()], Duration::ZERO).unwrap_err().to_string();
        assert!(message.starts_with("ghl: public key #1 is unusable: not PEM"), "{message}");
        assert!(matches!(Ghl::new(&[], Duration::ZERO), Err(KeyError::NoKeys { scheme: "ghl" })));
    }

    #[test]
    fn a_header_with_no_key_of_its_kind_is_named() {
        let ed25519_only = Ghl::new(&[BUILTIN_KEYS[0].to_owned()], Duration::ZERO).unwrap();
        let headers = [("x-wh-signature", "AAAA")];
        let result = ed25519_only.verify(&Request { headers: &headers, body: b"{}", peer: None, now_unix: 0 });
        assert_eq!(result, Err(VerifyError::NoKeyForHeader(RSA_HEADER)));
    }

    #[test]
    fn huge_or_non_utf8_signature_values_are_malformed_not_a_panic() {
        let builtin = Ghl::builtin(Duration::ZERO);
        let huge = "A".repeat(1 << 20);
        for value in [huge.as_str(), "\u{fffd}\u{0}", "===="] {
            for header in [ED25519_HEADER, RSA_HEADER] {
                let headers = [(header, value)];
                let result = builtin.verify(&Request { headers: &headers, body: b"", peer: None, now_unix: 0 });
                assert_eq!(result.map_err(|error| error.code()), Err("malformed_signature"));
            }
        }
        assert!(signature_header(&[(RSA_HEADER, "N/A")], RSA_HEADER).is_none());
    }
}
