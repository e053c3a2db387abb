//! Where OAuth tokens are kept: a two-method trait the store implements, so the client needs nothing else of
//! it. The refresh token rotates on every refresh, so the newest pair must live where every process finds it.
//!
//! A store that fails is a store failure ([`TokenStoreError`]), never a refused token: the delivery is retried
//! like after any store blip, and the location is not paused.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::clock::Millis;
use crate::event::LocationId;

/// A location's OAuth tokens (GoHighLevel marketplace apps).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthTokens {
    pub access_token: String,
    pub refresh_token: String,
    /// When the access token stops working (ms).
    pub expires_at: Millis,
}

impl std::fmt::Debug for OAuthTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthTokens").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// The token store failed; the cause is kept (its message never holds a token).
#[derive(Debug, thiserror::Error)]
#[error("the token store failed: {0}")]
pub struct TokenStoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// Keeps each location's OAuth tokens.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// The location's stored tokens, if any.
    async fn load_tokens(&self, location: &LocationId) -> Result<Option<OAuthTokens>, TokenStoreError>;

    /// Stores a location's tokens after a refresh (the old refresh token is spent).
    async fn save_tokens(&self, location: &LocationId, tokens: &OAuthTokens) -> Result<(), TokenStoreError>;
}
