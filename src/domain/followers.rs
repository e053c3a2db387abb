//! What can be asked of a contact's followers: by a rule ([`Action`]) and, once round robin has picked a user,
//! by a stored operation ([`FollowerOp`]).
//!
//! Rules produce actions and the queue stores operations; both speak this vocabulary, so neither imports the
//! other. A round robin's turn is taken by the store, inside its transaction, from the standings it keeps
//! (see [`super::rotation`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::UserId;

/// The CRM allows at most this many followers on one contact (`shared/ghl/API.md` §2).
pub const MAX_FOLLOWERS: usize = 10;

/// In a rule's `add` or `remove`: the user the event says the contact or opportunity is assigned to now.
/// Stands in the compiled rule until the rules resolve it for one event (never stored, never sent).
pub const ASSIGNED: &str = "@assigned";
/// In a rule's `add` or `remove`: the user it was assigned to before (`assigned_changed` only).
pub const PREVIOUSLY_ASSIGNED: &str = "@previously_assigned";

/// Whether `user` is one of the stand-ins above rather than a user.
pub fn is_stand_in(user: &UserId) -> bool {
    [ASSIGNED, PREVIOUSLY_ASSIGNED].contains(&user.as_str())
}

/// Whose followers a removal may touch (`followers.ownership`, or `ownership` on a rule).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ownership {
    /// Only followers followd itself added; a person's stay.
    Managed,
    /// Any follower, as the CRM's own actions do.
    #[default]
    Any,
}

impl Ownership {
    fn is_any(&self) -> bool {
        *self == Self::Any
    }
}

/// What to do when an add would take a contact past [`MAX_FOLLOWERS`] (`followers.at_cap`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtCap {
    /// Set the operations aside as a dead letter, saying so.
    #[default]
    DeadLetter,
    /// Remove the oldest followers followd added to that contact to make room (never a person's); when that is
    /// not enough, dead-letter.
    EvictManaged,
}

/// One follower change a rule asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Remove every current follower.
    RemoveAll,
    Remove(UserId),
    Add(UserId),
    /// Resolved to one Add at enqueue time by the queue, which keeps each member's standing per (rule,
    /// location) and takes a turn with [`super::rotation::Rotation::turn`].
    RoundRobin(Arc<super::rotation::Rotation>),
}

impl Action {
    /// The stored operation this action becomes; `None` for a round robin, which the queue resolves with its
    /// standings (see [`Action::rotation`]).
    pub fn resolve(&self) -> Option<FollowerOp> {
        match self {
            Self::RemoveAll => Some(FollowerOp::RemoveAll),
            Self::Remove(user) => Some(FollowerOp::Remove(user.clone())),
            Self::Add(user) => Some(FollowerOp::Add(user.clone())),
            Self::RoundRobin(_) => None,
        }
    }

    /// The inverse of [`Action::resolve`]: the action a stored operation came from (a round robin's resolved).
    pub fn from_op(op: FollowerOp) -> Self {
        match op {
            FollowerOp::Add(user) => Self::Add(user),
            FollowerOp::Remove(user) => Self::Remove(user),
            FollowerOp::RemoveAll => Self::RemoveAll,
        }
    }

    /// Every user the action names: its user, or a round robin's members and overflow.
    pub fn users(&self) -> Vec<&UserId> {
        match self {
            Self::RemoveAll => Vec::new(),
            Self::Remove(user) | Self::Add(user) => vec![user],
            Self::RoundRobin(rotation) => {
                rotation.members.iter().map(|m| &m.user).chain(rotation.overflow.as_ref()).collect()
            }
        }
    }

    /// The round robin this action takes a turn of, if it is one.
    pub fn rotation(&self) -> Option<&super::rotation::Rotation> {
        match self {
            Self::RoundRobin(rotation) => Some(rotation),
            _ => None,
        }
    }
}

/// One change to a contact's followers, as stored and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "op", content = "user", rename_all = "snake_case")]
pub enum FollowerOp {
    /// Remove every current follower.
    RemoveAll,
    Remove(UserId),
    Add(UserId),
}

/// Serde's `skip_serializing_if` for an ownership field: `any`, the default, is not written, so stored
/// operations keep the format older versions wrote and read.
pub fn is_any(ownership: &Ownership) -> bool {
    ownership.is_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_round_robin_needs_the_store_to_resolve() {
        let user = UserId::parse("a").unwrap();
        assert_eq!(Action::Add(user.clone()).resolve(), Some(FollowerOp::Add(user.clone())));
        assert_eq!(Action::Remove(user.clone()).resolve(), Some(FollowerOp::Remove(user)));
        assert_eq!(Action::RemoveAll.resolve(), Some(FollowerOp::RemoveAll));
        assert!(Action::RemoveAll.rotation().is_none());
    }
}
