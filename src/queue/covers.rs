//! Cover for absences, as the store keeps it: which contacts followd made a user follow (to cover them), and
//! the covers running now with the contacts each asked its `by` to follow (to end them there, after a restart
//! too). The decision is `domain::cover`; the task that applies it is `crate::covering`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::QueueError;
use crate::domain::cover::{Cover, Covering};
use crate::event::{ContactKey, UserId};

/// A running cover as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCover {
    pub user: UserId,
    pub by: UserId,
    #[serde(flatten)]
    pub covering: Covering,
}

impl StoredCover {
    pub fn cover(&self) -> Cover {
        Cover { user: self.user.clone(), by: self.by.clone() }
    }

    /// The key it is stored under: `user \x1e by`.
    pub fn key(cover: &Cover) -> String {
        format!("{}\u{1e}{}", cover.user, cover.by)
    }
}

#[async_trait]
pub trait CoverLog: Send + Sync + 'static {
    /// Every contact where followd added `user`, by its memory of the followers it added.
    async fn followed_by(&self, user: &UserId) -> Result<Vec<ContactKey>, QueueError>;
    /// The covers running now.
    async fn coverings(&self) -> Result<Vec<StoredCover>, QueueError>;
    /// Records that `cover` runs (`Some`) or has ended (`None`).
    async fn set_covering(&self, cover: &Cover, covering: Option<Covering>) -> Result<(), QueueError>;
}
