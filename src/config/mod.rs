//! Layered configuration: embedded defaults, then the TOML file, then `FOLLOWD_*` environment variables.
//!
//! The keys, environment names and defaults are the public contract in `DESIGN.md` ("Configuration"). The
//! defaults live in one commented file, `default.toml`, embedded in the binary. Loading resolves every secret
//! reference and checks the whole configuration, reporting every problem at once; nothing here ever prints a
//! secret (`Debug` on the resolved types redacts them).

mod redis_url;
mod secret;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format as _, Toml};
use serde::Deserialize;

pub use crate::domain::rate::Rate;
use crate::event::Format;
pub use redis_url::RedisUrl;
pub use secret::{SecretError, SecretRef};

const DEFAULTS: &str = include_str!("default.toml");
/// Read when `--config` is not given and the file exists in the working directory.
pub const DEFAULT_FILE: &str = "followd.toml";

/// The whole configuration, as deserialized. Secrets are still references here; see [`SecretRef::resolve`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    #[serde(default)]
    pub redis_url: Option<RedisUrl>,
    pub data_dir: PathBuf,
    pub rules_dir: PathBuf,
    pub max_body_bytes: NonZeroUsize,
    pub workers: NonZeroUsize,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// 0: one per core.
    pub http_workers: usize,
    pub upstream: UpstreamConfig,
    pub rate_limit: RateLimitConfig,
    pub queue: QueueConfig,
    pub delivery: DeliveryConfig,
    pub followers: FollowersConfig,
    pub reconcile: ReconcileConfig,
    pub spool: SpoolConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub source: Vec<SourceConfig>,
    /// Folder of the configuration file, against which `file:` references resolve. Not a key.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where this configuration came from, so a SIGHUP can read the same layers again. Not a key.
    #[serde(skip)]
    pub origin: Origin,
}

/// Where a [`Config`] came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origin {
    /// TOML text given by a test or a tool: there is nothing to read again.
    #[default]
    Text,
    /// [`Config::load`]: the defaults, this file (if any), the environment.
    Layers { file: Option<PathBuf> },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub base_url: url::Url,
    #[serde(default)]
    pub token: Option<SecretRef>,
    #[serde(default)]
    pub tokens: BTreeMap<String, SecretRef>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Marketplace-app OAuth: locations whose access tokens are refreshed through the CRM's token endpoint.
    #[serde(default)]
    pub oauth: Option<OAuthConfig>,
}

impl UpstreamConfig {
    /// Every location followd can call for: those with a token (`tokens`) or an OAuth install
    /// (`oauth.refresh_tokens`), sorted, once each; a key that is not a location id is left out.
    pub fn locations(&self) -> Vec<crate::event::LocationId> {
        let oauth = self.oauth.iter().flat_map(|o| o.refresh_tokens.keys());
        let mut all: Vec<_> =
            self.tokens.keys().chain(oauth).filter_map(|l| crate::event::LocationId::parse(l).ok()).collect();
        all.sort();
        all.dedup();
        all
    }
}

/// `[upstream.oauth]`: the app's client credentials and, per location, the refresh token of its install.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    pub client_id: String,
    pub client_secret: SecretRef,
    /// Default: `<upstream.base_url>/oauth/token`.
    #[serde(default)]
    pub token_url: Option<url::Url>,
    /// Seeds only: followd keeps each rotated refresh token in its store and uses that from then on.
    #[serde(default)]
    pub refresh_tokens: BTreeMap<String, SecretRef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub per_location: Rate,
    pub daily_per_location: u64,
}

impl From<&RateLimitConfig> for crate::domain::rate::Limits {
    fn from(config: &RateLimitConfig) -> Self {
        Self::new(config.per_location, config.daily_per_location)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    #[serde(with = "humantime_serde")]
    pub dedup_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// Redis only: the prefix of every key.
    pub prefix: String,
    /// Redis only: how many partitions (hash tags) the queue is split into; spreads it over a Cluster.
    pub partitions: std::num::NonZeroU16,
}

/// Whose followers removals may touch, and what to do at the CRM's cap of 10 followers per contact.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowersConfig {
    /// `"any"` (default) or `"managed"`; a rule's own `ownership` wins.
    #[serde(default)]
    pub ownership: crate::domain::followers::Ownership,
    /// `"dead_letter"` (default) or `"evict_managed"`.
    #[serde(default)]
    pub at_cap: crate::domain::followers::AtCap,
}

/// How reconcile runs use the CRM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// The part of a location's rate budget a run may use (0 < share <= 1).
    pub max_share: f64,
    /// `serve` reconciles each location this often; unset: never on its own.
    #[serde(default, with = "humantime_serde")]
    pub every: Option<Duration>,
    /// Contacts per search page (at most 500).
    pub page_size: u32,
}

/// The receiver's local spool, used only with `redis_url` (see `DESIGN.md`, "The spool").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Unset: `<data_dir>/spool`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Bytes the spool may hold; 0: no spool (an unreachable Redis answers 429/503 at once).
    pub max_bytes: u64,
}

impl Config {
    /// The spool's folder: `spool.dir`, else `<data_dir>/spool`.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool.dir.clone().unwrap_or_else(|| self.data_dir.join("spool"))
    }
}

/// The status page's protection.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Unset: the status page is served to loopback only.
    #[serde(default)]
    pub token: Option<SecretRef>,
}

/// How failed deliveries are retried and how long locations pause.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(with = "humantime_serde")]
    pub retry_base: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub give_up_after: Duration,
    #[serde(with = "humantime_serde")]
    pub auth_pause: Duration,
    #[serde(with = "humantime_serde")]
    pub throttle_pause: Duration,
    #[serde(with = "humantime_serde")]
    pub pause_recheck: Duration,
}

/// One webhook source: `POST /webhooks/{name}`, its payload format and how its requests are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    pub format: Format,
    pub verify: VerifyConfig,
}

/// A source's verification scheme, as written in `verify = { scheme = "...", ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case", deny_unknown_fields)]
pub enum VerifyConfig {
    HmacSha256 {
        #[serde(default = "default_hmac_header")]
        header: String,
        secrets: Vec<SecretRef>,
    },
    Token {
        #[serde(default = "default_token_header")]
        header: String,
        tokens: Vec<SecretRef>,
    },
    StandardWebhooks {
        secrets: Vec<SecretRef>,
        #[serde(default = "default_tolerance", with = "humantime_serde")]
        tolerance: Duration,
    },
    /// GoHighLevel's signatures; `public_keys` (PEM, usually `file:`) replaces the published keys.
    Ghl {
        #[serde(default)]
        public_keys: Option<Vec<SecretRef>>,
        #[serde(default = "default_tolerance", with = "humantime_serde")]
        tolerance: Duration,
    },
}

/// Replay window for schemes whose requests carry a time (`shared/ghl/API.md` §8: about 5 minutes).
fn default_tolerance() -> Duration {
    Duration::from_secs(300)
}

fn default_hmac_header() -> String {
    "x-signature".to_owned()
}

fn default_token_header() -> String {
    "x-followd-token".to_owned()
}

/// Why the configuration cannot be used: every problem found, one per line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid configuration:\n{}", .0.join("\n"))]
    Problems(Vec<String>),
}

impl Config {
    /// Loads the layers: defaults, then `file` (or `followd.toml` when present), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let file = match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.to_owned())),
            Some(path) => Some(path.to_owned()),
            None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.exists()),
        };
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = &file {
            figment = figment.merge(Toml::file_exact(path));
        }
        let config = Self::from_figment(figment.merge(env_provider()))?;
        let base_dir = file.as_deref().and_then(Path::parent).map(Path::to_owned).unwrap_or_default();
        let config = Self { base_dir, origin: Origin::Layers { file }, ..config };
        config.validate()?;
        Ok(config)
    }

    /// Builds a configuration from defaults plus TOML text, without the environment: for tests and tools.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let config = Self::from_figment(Figment::from(Toml::string(DEFAULTS)).merge(Toml::string(text)))?;
        let config = Self { base_dir: base_dir.to_owned(), ..config };
        config.validate()?;
        Ok(config)
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        figment
            .extract::<Self>()
            .map_err(|e| ConfigError::Problems(e.into_iter().map(|e| e.to_string()).collect::<Vec<_>>()))
    }

    /// Checks what deserialization cannot: every problem is collected, not just the first.
    fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if !(self.reconcile.max_share > 0.0 && self.reconcile.max_share <= 1.0) {
            problems.push(format!(
                "reconcile.max_share is {}; give a share of the budget above 0 and at most 1, e.g. 0.5",
                self.reconcile.max_share
            ));
        }
        if !(1..=500).contains(&self.reconcile.page_size) {
            problems
                .push(format!("reconcile.page_size is {}; the CRM pages 1 to 500 contacts", self.reconcile.page_size));
        }
        let mut names = std::collections::HashSet::new();
        for (i, source) in self.source.iter().enumerate() {
            let valid_name = !source.name.is_empty()
                && source.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid_name {
                problems.push(format!(
                    "source[{i}].name `{}`: use letters, digits, `-` and `_` only (it is part of the URL)",
                    source.name
                ));
            }
            if !names.insert(source.name.as_str()) {
                problems.push(format!("source[{i}].name `{}` is used by two sources", source.name));
            }
            let secrets: &[SecretRef] = match &source.verify {
                VerifyConfig::HmacSha256 { secrets, .. } | VerifyConfig::StandardWebhooks { secrets, .. } => secrets,
                VerifyConfig::Token { tokens, .. } => tokens,
                VerifyConfig::Ghl { public_keys, .. } => public_keys.as_deref().unwrap_or(&[]),
            };
            let builtin_keys = matches!(source.verify, VerifyConfig::Ghl { public_keys: None, .. });
            if secrets.is_empty() && !builtin_keys {
                problems.push(format!("source `{}`: verify needs at least one secret", source.name));
            }
            for (j, secret) in secrets.iter().enumerate() {
                if let Err(e) = secret.resolve(&self.base_dir) {
                    problems.push(format!("source `{}`: secret [{j}] ({secret:?}): {e}", source.name));
                }
            }
        }
        if let Some(token) = &self.upstream.token
            && let Err(e) = token.resolve(&self.base_dir)
        {
            problems.push(format!("upstream.token ({token:?}): {e}"));
        }
        for (location, token) in &self.upstream.tokens {
            if let Err(e) = token.resolve(&self.base_dir) {
                problems.push(format!("upstream.tokens.{location} ({token:?}): {e}"));
            }
        }
        if self.queue.lease < Duration::from_secs(2) {
            problems.push("queue.lease must be at least 2s: a delivery has to fit in it".to_owned());
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Problems(problems)) }
    }

    /// True when no upstream token is configured at all: calls are logged and counted, never sent.
    pub fn dry_run(&self) -> bool {
        self.upstream.token.is_none() && self.upstream.tokens.is_empty() && self.upstream.oauth.is_none()
    }
}

/// `FOLLOWD_*` variables: `__` nests (`FOLLOWD_UPSTREAM__BASE_URL`), plus the contract's short forms.
/// Top-level keys the environment may set. Other `FOLLOWD_*` variables are not configuration: Kubernetes, for
/// one, injects `FOLLOWD_SERVICE_HOST` and friends into every pod when a Service is named `followd`, and they
/// must not stop the service. Below a known key, an unknown name is still an error (a typo fails loudly).
const ENV_KEYS: &[&str] = &[
    "listen",
    "redis_url",
    "data_dir",
    "rules_dir",
    "max_body_bytes",
    "workers",
    "shutdown_grace",
    "http_workers",
    "upstream",
    "rate_limit",
    "queue",
    "delivery",
    "followers",
    "reconcile",
    "spool",
    "admin",
    "upstream_url",
    "upstream_token",
];

fn env_provider() -> Env {
    // figment hands these closures the key as written (`UPSTREAM_URL`): compare in lower case.
    Env::prefixed("FOLLOWD_")
        .filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            ENV_KEYS.contains(&key.split("__").next().unwrap_or_default())
        })
        .map(|key| match key.as_str().to_ascii_lowercase().as_str() {
            "upstream_url" => "upstream.base_url".into(),
            "upstream_token" => "upstream.token".into(),
            other => other.replace("__", ".").into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_defaults_are_the_contract_defaults() {
        let config = Config::from_toml("", Path::new(".")).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
        assert!(config.redis_url.is_none());
        assert_eq!(config.data_dir, PathBuf::from("data"));
        assert_eq!(config.rules_dir, PathBuf::from("rules"));
        assert_eq!(config.max_body_bytes.get(), 1_048_576);
        assert_eq!(config.upstream.base_url.as_str(), "https://services.leadconnectorhq.com/");
        assert_eq!(config.rate_limit.per_location, "100/10s".parse().unwrap());
        assert_eq!(config.rate_limit.daily_per_location, 200_000);
        assert_eq!(config.workers.get(), 8);
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        assert!(config.dry_run());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [[source]]
            name = "bad name"
            format = "generic"
            verify = { scheme = "hmac-sha256", secrets = ["env:FOLLOWD_TEST_UNSET_A"] }
            [[source]]
            name = "bad name"
            format = "generic"
            verify = { scheme = "token", tokens = [] }
        "#;
        let err = Config::from_toml(text, Path::new(".")).unwrap_err().to_string();
        for needle in ["letters, digits", "used by two sources", "FOLLOWD_TEST_UNSET_A", "at least one secret"] {
            assert!(err.contains(needle), "missing `{needle}` in:\n{err}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("listn = \"127.0.0.1:1\"", Path::new(".")).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
    }

    #[test]
    fn rates_parse_and_bad_ones_say_how_to_write_them() {
        let rate: Rate = "10/1s".parse().unwrap();
        assert_eq!((rate.calls.get(), rate.per), (10, Duration::from_secs(1)));
        assert!("ten per second".parse::<Rate>().unwrap_err().contains("100/10s"));
        assert!("5/0s".parse::<Rate>().is_err());
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure returns figment's own (large) error type
    fn environment_variables_override_the_file_in_long_and_short_forms() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("followd.toml", "workers = 3\n[upstream]\nbase_url = \"http://file.invalid\"")?;
            jail.set_env("FOLLOWD_WORKERS", "5");
            jail.set_env("FOLLOWD_UPSTREAM_URL", "http://short.invalid");
            jail.set_env("FOLLOWD_UPSTREAM_TOKEN", "pit-123");
            jail.set_env("FOLLOWD_QUEUE__PARTITIONS", "4");
            jail.set_env("FOLLOWD_LOG_FORMAT", "json");
            // Injected by Kubernetes for a Service named `followd`: not configuration, ignored.
            jail.set_env("FOLLOWD_SERVICE_HOST", "10.0.0.1");
            jail.set_env("FOLLOWD_PORT_8080_TCP", "tcp://10.0.0.1:8080");
            let config = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(config.workers.get(), 5);
            assert_eq!(config.upstream.base_url.as_str(), "http://short.invalid/");
            assert!(config.upstream.token.is_some() && !config.dry_run());
            assert_eq!(config.queue.partitions.get(), 4);
            // A typo below a known key still fails.
            jail.set_env("FOLLOWD_UPSTREAM__TOKNE", "x");
            assert!(Config::load(None).is_err_and(|e| e.to_string().contains("tokne")));
            Ok(())
        });
    }
}
