//! SIGHUP re-reads the configuration's upstream tokens, so a refused token can be fixed without a restart.
//!
//! A 401 or 403 pauses the location and keeps its jobs (see `retry.rs`). The operator fixes the token in the
//! configuration file, the environment of a restart, or the file a `file:` reference names (a Kubernetes
//! Secret updates such a file in place), then sends SIGHUP: the tokens are resolved again, swapped in whole,
//! and the locations this process paused for their token resume. Everything else in the configuration keeps
//! its start-up value until a restart (the listener, the queue and the workers are built once); a file that
//! no longer loads changes nothing and is logged.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Deliverer;
use crate::config::{ConfigError, UpstreamConfig};

/// Reads the configuration again: the `[upstream]` section and the folder `file:` references are relative to.
/// The composition root passes one in, so delivery never loads configuration itself.
pub type LoadUpstream = dyn Fn() -> Result<(UpstreamConfig, PathBuf), ConfigError> + Send + Sync;

/// Reloads the upstream tokens on every SIGHUP until `cancel`.
#[cfg(unix)]
pub async fn reload_on_sighup(deliverer: Arc<Deliverer>, load: Arc<LoadUpstream>, cancel: CancellationToken) {
    crate::signals::on_hangup("upstream tokens", cancel, || reload(&deliverer, &*load)).await;
}

/// One reload: logs what happened, counts it by result. Never returns an error: the tokens in use stay.
pub async fn reload(deliverer: &Deliverer, load: &LoadUpstream) {
    let outcome = match load() {
        Ok((upstream, base_dir)) => deliverer.reload_credentials(&upstream, &base_dir).await,
        Err(error) => Err(error),
    };
    match outcome {
        Ok(resumed) => {
            tracing::info!(resumed_locations = resumed, "upstream tokens reloaded");
            metrics::counter!("followd_upstream_token_reloads_total", "result" => "ok").increment(1);
        }
        Err(error) => {
            // The error names keys and references, never a secret's value (see `SecretRef`'s Debug).
            tracing::error!(%error, "upstream tokens not reloaded; the ones in use stay");
            metrics::counter!("followd_upstream_token_reloads_total", "result" => "error").increment(1);
        }
    }
}
