//! Secret references in configuration: `env:NAME`, `file:PATH` or the value written inline.
//!
//! They resolve once, when the configuration loads, into [`SecretString`]s whose `Debug` prints `[REDACTED]`,
//! so neither a log line nor an error can show one. Errors name the reference (the variable or the file),
//! never the value.

use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

/// A secret as written in the configuration, before it is resolved.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretRef(String);

impl std::fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.split_once(':') {
            Some((kind @ ("env" | "file"), name)) => write!(f, "{kind}:{name}"),
            _ => f.write_str("[REDACTED]"),
        }
    }
}

/// Why a secret reference did not resolve. Names the reference, not the value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable `{0}` is not set")]
    MissingEnv(String),
    #[error("cannot read secret file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("the secret is empty")]
    Empty,
}

impl SecretRef {
    pub fn inline(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Resolves the reference; `file:` paths are relative to `base` (the configuration file's folder).
    pub fn resolve(&self, base: &Path) -> Result<SecretString, SecretError> {
        let value = if let Some(name) = self.0.strip_prefix("env:") {
            std::env::var(name).map_err(|_| SecretError::MissingEnv(name.to_owned()))?
        } else if let Some(path) = self.0.strip_prefix("file:") {
            let path = base.join(path);
            let text = std::fs::read_to_string(&path).map_err(|source| SecretError::File { path, source })?;
            // Files written by editors and `echo` end with a newline that is not part of the secret.
            text.trim_end_matches(['\n', '\r']).to_owned()
        } else {
            self.0.clone()
        };
        if value.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(SecretString::from(value))
    }

    /// Resolves the reference written under configuration `key`: the one way every part resolves its
    /// secrets, so each error names the key and the reference (never the value) alike.
    pub fn resolve_named(&self, key: &str, base: &Path) -> Result<SecretString, super::ConfigError> {
        self.resolve(base).map_err(|e| super::ConfigError::Invalid(format!("{key} ({self:?}): {e}")))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn references_resolve_from_env_file_and_inline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.txt"), "from-file\n").unwrap();
        let file = SecretRef("file:s.txt".into()).resolve(dir.path()).unwrap();
        assert_eq!(file.expose_secret(), "from-file");
        assert_eq!(SecretRef("inline".into()).resolve(dir.path()).unwrap().expose_secret(), "inline");
        let missing = SecretRef("env:FOLLOWD_TEST_SURELY_UNSET".into()).resolve(dir.path()).unwrap_err();
        assert!(missing.to_string().contains("FOLLOWD_TEST_SURELY_UNSET"));
    }

    #[test]
    fn debug_never_shows_an_inline_secret() {
        assert_eq!(format!("{:?}", SecretRef("hunter2".into())), "[REDACTED]");
        assert_eq!(format!("{:?}", SecretRef("env:TOKEN".into())), "env:TOKEN");
    }
}
