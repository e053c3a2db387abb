//! OAuth for GoHighLevel marketplace apps: location access tokens that expire (~1 day) and are refreshed
//! through the CRM's token endpoint (`shared/ghl/API.md` §5).
//!
//! Each refresh returns a new refresh token and spends the old one, so the newest pair is kept in the
//! [`TokenStore`] (the queue's store), where every process finds it; `upstream.oauth.refresh_tokens` only seeds a location the first time.
//! Refreshes of one location are serialised within a process; across processes, a refresh that fails re-reads
//! the store, because the usual reason is that another process refreshed first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::UpstreamError;
use super::tokens::{OAuthTokens, TokenStore};
use crate::domain::clock::{millis, now_ms};
use crate::event::LocationId;

/// An access token this close to expiry is refreshed before use.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// The token endpoint's answer (fields followd uses).
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    refresh_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Reads `bytes` as the token endpoint's answer, for the fuzz targets.
pub(crate) fn read_token_answer(bytes: &[u8]) {
    let _ = serde_json::from_slice::<TokenAnswer>(bytes);
}

/// Refreshes and hands out location access tokens.
pub struct OAuth {
    pub(super) http: reqwest::Client,
    pub(super) token_url: url::Url,
    pub(super) client_id: String,
    pub(super) client_secret: SecretString,
    /// Refresh tokens from the configuration: used only while the store holds none for the location.
    pub(super) seeds: HashMap<LocationId, SecretString>,
    pub(super) store: Arc<dyn TokenStore>,
    /// One refresh at a time per location in this process.
    pub(super) locks: std::sync::Mutex<HashMap<LocationId, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth").field("token_url", &self.token_url.as_str()).finish_non_exhaustive()
    }
}

impl OAuth {
    /// Whether this location authenticates through OAuth.
    pub fn covers(&self, location: &LocationId) -> bool {
        self.seeds.contains_key(location)
    }

    fn lock(&self, location: &LocationId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        Arc::clone(locks.entry(location.clone()).or_default())
    }

    /// A usable access token. `rejected`: a token the CRM just refused (401), which must not be handed out
    /// again; a fresh one is fetched unless another process already replaced it. A store failure stays one
    /// ([`UpstreamError::TokenStore`]): it is retried, not read as a refused token.
    pub async fn access_token(
        &self,
        location: &LocationId,
        rejected: Option<&str>,
    ) -> Result<SecretString, UpstreamError> {
        let lock = self.lock(location);
        let _guard = lock.lock().await;
        let stored = self.store.load_tokens(location).await?;
        if let Some(tokens) = &stored {
            let fresh = tokens.expires_at > now_ms() + millis(REFRESH_MARGIN);
            if fresh && rejected != Some(tokens.access_token.as_str()) {
                return Ok(SecretString::from(tokens.access_token.clone()));
            }
        }
        let refresh_token = match (&stored, self.seeds.get(location)) {
            (Some(tokens), _) => tokens.refresh_token.clone(),
            (None, Some(seed)) => seed.expose_secret().to_owned(),
            (None, None) => return Err(UpstreamError::NoToken(location.to_string())),
        };
        match self.refresh(&refresh_token).await {
            Ok(tokens) => {
                self.store.save_tokens(location, &tokens).await?;
                metrics::counter!("followd_oauth_refreshes_total", "result" => "ok").increment(1);
                tracing::info!(%location, "OAuth access token refreshed");
                Ok(SecretString::from(tokens.access_token))
            }
            Err(e) => {
                metrics::counter!("followd_oauth_refreshes_total", "result" => "error").increment(1);
                // Another process may have refreshed (and spent our refresh token) first: take its tokens.
                let now_stored = self.store.load_tokens(location).await.ok().flatten();
                match now_stored {
                    Some(tokens) if Some(&tokens) != stored.as_ref() && tokens.expires_at > now_ms() => {
                        Ok(SecretString::from(tokens.access_token))
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// `POST /oauth/token` with `grant_type=refresh_token`, form-encoded as the CRM expects.
    async fn refresh(&self, refresh_token: &str) -> Result<OAuthTokens, UpstreamError> {
        let form = [
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.expose_secret()),
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("user_type", "Location"),
        ];
        let response =
            self.http.post(self.token_url.clone()).form(&form).send().await.map_err(UpstreamError::Transport)?;
        let status = response.status();
        if !status.is_success() {
            return Err(UpstreamError::OAuthRefused { status: status.as_u16() });
        }
        let answer: TokenAnswer = response.json().await.map_err(UpstreamError::Decode)?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(86_399));
        Ok(OAuthTokens {
            access_token: answer.access_token,
            refresh_token: answer.refresh_token,
            expires_at: now_ms() + millis(lifetime),
        })
    }
}
