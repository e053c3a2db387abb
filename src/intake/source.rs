//! A webhook source: a URL (`POST /webhooks/{name}`), a payload format and a verification scheme, built from
//! its `[[source]]` table with its secrets resolved once.

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::{ConfigError, SourceConfig, VerifyConfig};
use crate::event::Format;
use crate::verify::Verifier;

/// A webhook source: `POST /webhooks/{name}`, its payload format and how its requests are verified.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub format: Format,
    pub verifier: Verifier,
}

impl Source {
    /// Builds a source from its configuration, resolving its secrets.
    pub fn from_config(config: &SourceConfig, base_dir: &std::path::Path) -> Result<Self, ConfigError> {
        let invalid = |e: &dyn std::fmt::Display| ConfigError::Invalid(format!("source `{}`: {e}", config.name));
        let key = format!("source `{}`", config.name);
        let resolve = |secrets: &[crate::config::SecretRef]| {
            secrets.iter().map(|s| s.resolve_named(&key, base_dir)).collect::<Result<Vec<_>, _>>()
        };
        let verifier = match &config.verify {
            VerifyConfig::HmacSha256 { header, secrets } => Verifier::hmac_sha256(header, resolve(secrets)?),
            VerifyConfig::Token { header, tokens } => Verifier::token(header, resolve(tokens)?),
            VerifyConfig::StandardWebhooks { secrets, tolerance } => {
                Verifier::standard_webhooks(resolve(secrets)?, *tolerance)
            }
            VerifyConfig::Ghl { public_keys: None, tolerance } => Ok(Verifier::ghl_builtin(*tolerance)),
            VerifyConfig::Ghl { public_keys: Some(keys), tolerance } => {
                let pems = resolve(keys)?.iter().map(|k| k.expose_secret().to_owned()).collect();
                Verifier::ghl(pems, *tolerance)
            }
        }
        .map_err(|e| invalid(&e))?;
        Ok(Self { name: config.name.clone(), format: config.format, verifier })
    }

    /// The sources offered when none is configured: `ghl`, verified with GoHighLevel's published keys, and
    /// `generic`, which with no secret accepts only requests from loopback (so a fresh install is not an open
    /// relay).
    pub fn defaults() -> Vec<Self> {
        vec![
            Self {
                name: "ghl".to_owned(),
                format: Format::Ghl,
                verifier: Verifier::ghl_builtin(Duration::from_secs(300)),
            },
            Self { name: "generic".to_owned(), format: Format::Generic, verifier: Verifier::loopback_only() },
        ]
    }
}
