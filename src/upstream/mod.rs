//! The CRM's REST API, as followd uses it: add and remove a contact's followers, read contacts (who follows
//! them, their tags and source) through search, and the names of pipelines.
//!
//! [`Upstream`] is either the live client or the dry run that logs and counts each call it would make (no
//! token configured). An enum, not a trait: there are exactly two, and only the live one does I/O.
//! The facts this follows (verbs, statuses, bodies, the `Version` header) are in `shared/ghl/API.md` §1–§4.

mod cached;
mod client;
pub mod directory;
mod dry_run;
mod oauth;
pub mod pipelines;
mod tokens;

use std::time::Duration;

pub use client::{
    ContactPage, CrmContact, CrmUser, FollowersAnswer, LiveClient, MAX_PAGE, Pipeline, Stage, UserPermissions,
};
pub use dry_run::DryRun;
pub use oauth::OAuth;

/// Every CRM answer followd parses, read from `bytes` (for the fuzz targets).
pub(crate) fn read_answers(bytes: &[u8]) {
    client::read_answers(bytes);
    oauth::read_token_answer(bytes);
}
pub use tokens::{OAuthTokens, TokenStore, TokenStoreError};

use crate::config::{ConfigError, UpstreamConfig};
use crate::event::{ContactKey, LocationId, UserId};

/// The API version every call sends (`shared/ghl/API.md` §1: the only value the contacts spec lists).
pub const API_VERSION: &str = "2021-07-28";

/// Where follower calls go.
#[derive(Debug)]
pub enum Upstream {
    Live(Box<LiveClient>),
    DryRun(DryRun),
}

/// Why an upstream call failed. Never holds a token; a response body is kept short.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream token is configured for location {0}: set upstream.tokens.{0} or upstream.token")]
    NoToken(String),
    #[error("the CRM answered {status}: {message}")]
    Status { status: u16, message: String, retry_after: Option<Duration> },
    #[error("cannot reach the CRM: {0}")]
    Transport(#[source] reqwest::Error),
    #[error("the CRM's answer cannot be read: {0}")]
    Decode(#[source] reqwest::Error),
    #[error("the OAuth token endpoint answered {status}; the location's refresh token may be spent or revoked")]
    OAuthRefused { status: u16 },
    /// The store that keeps OAuth tokens failed: retried like any store failure, never read as a refused token.
    #[error(transparent)]
    TokenStore(#[from] TokenStoreError),
}

impl UpstreamError {
    /// The CRM refused the credentials, or there are none: only a new token (or an operator) fixes it.
    pub fn is_auth(&self) -> bool {
        match self {
            Self::Status { status, .. } => matches!(status, 401 | 403),
            // OAuth refuses a spent or revoked refresh token with 400 (`invalid_grant`); 429 and 5xx pass.
            Self::OAuthRefused { status } => *status < 500 && *status != 429,
            Self::NoToken(_) => true,
            Self::Transport(_) | Self::Decode(_) | Self::TokenStore(_) => false,
        }
    }

    /// True when the same call may succeed later on its own: throttling, server errors, network failures.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::OAuthRefused { status } => *status == 429 || *status >= 500,
            Self::Transport(_) | Self::Decode(_) | Self::TokenStore(_) => true,
            Self::NoToken(_) => false,
        }
    }

    /// How long the CRM asked to wait (`Retry-After`, or its rate-limit window), when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, when the CRM answered one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl Upstream {
    /// The live client when any token (or OAuth) is configured, otherwise the dry run. `store` keeps OAuth
    /// tokens.
    pub fn from_config(
        config: &UpstreamConfig,
        base_dir: &std::path::Path,
        store: std::sync::Arc<dyn TokenStore>,
    ) -> Result<Self, ConfigError> {
        if config.token.is_none() && config.tokens.is_empty() && config.oauth.is_none() {
            return Ok(Self::DryRun(DryRun::default()));
        }
        LiveClient::new(config, base_dir, store).map(|client| Self::Live(Box::new(client)))
    }

    /// Takes the static tokens from a reloaded configuration; returns whether any changed. A dry run stays one
    /// (leaving it changes what the service does: that takes a restart, and is logged).
    pub fn reload_credentials(&self, config: &UpstreamConfig, base_dir: &std::path::Path) -> Result<bool, ConfigError> {
        match self {
            Self::Live(client) => client.reload_credentials(config, base_dir),
            Self::DryRun(_) => {
                if config.token.is_some() || !config.tokens.is_empty() || config.oauth.is_some() {
                    tracing::warn!("the configuration now has upstream tokens; restart followd to leave the dry run");
                }
                Ok(false)
            }
        }
    }

    pub fn is_dry_run(&self) -> bool {
        matches!(self, Self::DryRun(_))
    }

    /// Whether the CRM's last answer for `location` said its rate budget is spent, and for how long.
    pub fn take_exhausted(&self, location: &LocationId) -> Option<Duration> {
        match self {
            Self::Live(client) => client.take_exhausted(location),
            Self::DryRun(_) => None,
        }
    }

    /// The location's pipelines; `None` in a dry run (names then match only where payloads carry them).
    /// The location's users; `None` in a dry run (nothing is read without a token).
    pub async fn users(&self, location: &LocationId) -> Result<Option<Vec<CrmUser>>, UpstreamError> {
        match self {
            Self::Live(client) => client.users(location).await.map(Some),
            Self::DryRun(_) => Ok(None),
        }
    }

    pub async fn pipelines(&self, location: &LocationId) -> Result<Option<Vec<Pipeline>>, UpstreamError> {
        match self {
            Self::Live(client) => client.pipelines(location).await.map(Some),
            Self::DryRun(_) => Ok(None),
        }
    }

    /// `POST /contacts/{id}/followers`: what the CRM answered (`followersAdded`: the users this call made
    /// followers; one who already followed is not among them). A dry run answers nothing.
    pub async fn add_followers(
        &self,
        contact: &ContactKey,
        users: &[UserId],
    ) -> Result<FollowersAnswer, UpstreamError> {
        match self {
            Self::Live(client) => client.change_followers(reqwest::Method::POST, contact, users).await,
            Self::DryRun(dry) => {
                dry.record("POST", contact, users);
                Ok(FollowersAnswer::default())
            }
        }
    }

    /// `DELETE /contacts/{id}/followers`, with the users in the JSON body.
    pub async fn remove_followers(
        &self,
        contact: &ContactKey,
        users: &[UserId],
    ) -> Result<FollowersAnswer, UpstreamError> {
        match self {
            Self::Live(client) => client.change_followers(reqwest::Method::DELETE, contact, users).await,
            Self::DryRun(dry) => {
                dry.record("DELETE", contact, users);
                Ok(FollowersAnswer::default())
            }
        }
    }

    /// `DELETE /opportunities/{id}/followers?isRemoveAllFollowers=true` for an opportunity's key.
    pub async fn remove_all_followers(&self, opportunity: &ContactKey) -> Result<FollowersAnswer, UpstreamError> {
        match self {
            Self::Live(client) => client.remove_all_followers(opportunity).await,
            Self::DryRun(dry) => {
                dry.record("DELETE", opportunity, &[]);
                Ok(FollowersAnswer::default())
            }
        }
    }

    /// The contact as `POST /contacts/search` lists it (followers, tags, source); `None` when the CRM does not
    /// know it, or in a dry run (which records the call it would make). An opportunity's key is never read:
    /// the search lists contacts only.
    pub async fn contact(&self, contact: &ContactKey) -> Result<Option<CrmContact>, UpstreamError> {
        if contact.contact_id.as_opportunity().is_some() {
            return Ok(None);
        }
        match self {
            Self::Live(client) => client.contact(contact).await,
            Self::DryRun(dry) => {
                dry.record("SEARCH", contact, &[]);
                Ok(None)
            }
        }
    }

    /// A page of a location's contacts (see [`LiveClient::contacts_page`]); `None` in a dry run.
    pub async fn contacts_page(
        &self,
        location: &LocationId,
        page_limit: u32,
        cursor: Option<&serde_json::Value>,
    ) -> Result<Option<ContactPage>, UpstreamError> {
        match self {
            Self::Live(client) => client.contacts_page(location, page_limit, cursor).await.map(Some),
            Self::DryRun(_) => Ok(None),
        }
    }
}
