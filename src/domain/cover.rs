//! Cover for absences: while a user is away (by the `[availability]` table), another follows the contacts
//! followd made the first follow, and stops when they are back.
//!
//! [`Cover`] is one `[[cover]]` of the rule files; [`step`] is the pure decision the cover task takes at each
//! tick: start a cover that is not running when its user is away, end one that is running when they are back
//! (or its `[[cover]]` was removed). The contacts a running cover added its `by` to are kept in the store, so
//! the end removes them from exactly those, across restarts.

use serde::{Deserialize, Serialize};

use super::clock::Millis;
use crate::event::{ContactKey, UserId};

/// `[[cover]] user = "alice", by = "bob"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cover {
    pub user: UserId,
    pub by: UserId,
}

impl Cover {
    /// The name its operations carry as their rule, in the audit trail.
    pub fn rule(&self) -> String {
        format!("cover {} by {}", self.user, self.by)
    }
}

/// A cover that is running: since when, and the contacts it asked `by` to follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Covering {
    pub since: Millis,
    pub contacts: Vec<ContactKey>,
}

/// What the cover task does for one cover at one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The user is away and no cover runs: add `by` to the user's contacts.
    Start,
    /// The user is back (or the `[[cover]]` is gone) and a cover runs: remove `by` where it added them.
    End,
    Nothing,
}

/// The decision: `configured` whether the `[[cover]]` is in the rules, `away` whether its user is away now,
/// `running` whether a cover is stored as running.
pub fn step(configured: bool, away: bool, running: bool) -> Step {
    match (configured && away, running) {
        (true, false) => Step::Start,
        (false, true) => Step::End,
        _ => Step::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cover_starts_when_its_user_goes_away_and_ends_when_they_return_or_it_is_removed() {
        assert_eq!(step(true, true, false), Step::Start);
        assert_eq!(step(true, true, true), Step::Nothing, "already running");
        assert_eq!(step(true, false, true), Step::End, "back");
        assert_eq!(step(false, true, true), Step::End, "the [[cover]] was removed");
        assert_eq!(step(false, false, false), Step::Nothing);
        assert_eq!(step(true, false, false), Step::Nothing);
    }
}
