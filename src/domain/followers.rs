//! What can be asked of a contact's followers: by a rule ([`Action`]) and, once round robin has picked a user,
//! by a stored operation ([`FollowerOp`]).
//!
//! Rules produce actions and the queue stores operations; both speak this vocabulary, so neither imports the
//! other. The round-robin pick lives here once: the embedded store calls [`Action::resolve`] inside its
//! transaction, and `enqueue.lua` does the same modulo inside its script (a Redis cursor must advance in the
//! same atomic step as the store).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::event::{LocationId, UserId};

/// The CRM allows at most this many followers on one contact (`shared/ghl/API.md` §2).
pub const MAX_FOLLOWERS: usize = 10;

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
    /// location) and picks with [`super::pick`].
    RoundRobin {
        rule: Arc<str>,
        pool: Arc<[UserId]>,
        /// Each member's weight, in `pool`'s order.
        weights: Arc<[u32]>,
        /// Who is away when: an away member is skipped (unless everyone is).
        availability: Arc<super::availability::Availability>,
        /// An away member keeps gaining standing, and gets the picks they missed once back.
        catch_up: bool,
    },
}

impl Action {
    /// The stored operation this action becomes; `cursor` is the round-robin position for its rule and
    /// location (advanced by the caller only when the pick is stored). `None` only for an empty pool, which
    /// the rules already reject.
    pub fn resolve(&self, cursor: u64) -> Option<FollowerOp> {
        Some(match self {
            Self::RemoveAll => FollowerOp::RemoveAll,
            Self::Remove(user) => FollowerOp::Remove(user.clone()),
            Self::Add(user) => FollowerOp::Add(user.clone()),
            Self::RoundRobin { pool, .. } => {
                let size = u64::try_from(pool.len()).ok().filter(|&n| n > 0)?;
                FollowerOp::Add(pool.get(usize::try_from(cursor % size).ok()?)?.clone())
            }
        })
    }

    /// Whether a round robin's member is away at `now` (always false for other actions).
    pub fn is_away(&self, user: &UserId, now: crate::domain::clock::Millis) -> bool {
        matches!(self, Self::RoundRobin { availability, .. } if availability.is_away(user, now))
    }

    /// A round robin's members with their weights, in the team's order; `None` for other actions.
    pub fn members(&self) -> Option<Vec<super::pick::Member>> {
        match self {
            Self::RoundRobin { pool, weights, .. } => Some(
                pool.iter()
                    .enumerate()
                    .map(|(i, user)| super::pick::Member {
                        user: user.clone(),
                        weight: weights.get(i).copied().unwrap_or(1),
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Picks the user a round robin adds now from its `standings` (updated), as the stores do inside their
    /// transaction; `None` for other actions or when nobody can be picked.
    pub fn pick(&self, standings: &mut super::pick::Standings, now: crate::domain::clock::Millis) -> Option<UserId> {
        let members = self.members()?;
        let when = super::pick::When::at(now);
        let away = |user: &UserId| self.is_away(user, now);
        let catch_up = matches!(self, Self::RoundRobin { catch_up: true, .. });
        match super::pick::pick(&members, standings, away, super::pick::Caps::default(), catch_up, when) {
            super::pick::Pick::Picked { user, .. } => Some(user),
            super::pick::Pick::AllAtCap => None,
        }
    }

    /// The key of this action's round-robin cursor in `location`, for a round robin only: one cursor per rule
    /// and location, so each sub-account rotates on its own.
    pub fn cursor_key(&self, location: &LocationId) -> Option<String> {
        match self {
            Self::RoundRobin { rule, .. } => Some(format!("{rule}\u{1f}{location}")),
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

    fn users(ids: &[&str]) -> Arc<[UserId]> {
        ids.iter().map(|id| UserId::parse(id).unwrap()).collect()
    }

    #[test]
    fn a_round_robin_picks_by_cursor_modulo_the_team_and_an_empty_team_picks_nobody() {
        let action = Action::RoundRobin {
            rule: Arc::from("r"),
            pool: users(&["a", "b", "c"]),
            weights: vec![1; 3].into(),
            availability: Arc::default(),
            catch_up: false,
        };
        let picks: Vec<_> = (0..4).map(|cursor| action.resolve(cursor)).collect();
        let add = |id: &str| Some(FollowerOp::Add(UserId::parse(id).unwrap()));
        assert_eq!(picks, vec![add("a"), add("b"), add("c"), add("a")]);
        let empty = Action::RoundRobin {
            rule: Arc::from("r"),
            pool: users(&[]),
            weights: vec![].into(),
            availability: Arc::default(),
            catch_up: false,
        };
        assert_eq!(empty.resolve(0), None);
        let location = LocationId::parse("loc").unwrap();
        assert_eq!(action.cursor_key(&location).as_deref(), Some("r\u{1f}loc"));
        assert_eq!(Action::RemoveAll.cursor_key(&location), None);
    }
}
