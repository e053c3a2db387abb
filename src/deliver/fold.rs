//! Folding a contact's pending operations into the net change that reaches the same end with the fewest calls.
//!
//! Per user the last operation wins; `remove_all` clears everything before it. The result makes at most one
//! DELETE and one POST, whatever the number of operations (plus one GET when it must learn who follows).
//! Pure: no I/O, no clock, so it is property-tested against applying the operations one by one.

use std::collections::{BTreeMap, BTreeSet};

use crate::event::UserId;
use crate::queue::FollowerOp;

/// What to change on one contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetChange {
    /// Remove every current follower first.
    pub remove_all: bool,
    /// Users to remove (disjoint from `add`).
    pub remove: BTreeSet<UserId>,
    /// Users to add.
    pub add: BTreeSet<UserId>,
}

impl NetChange {
    pub fn is_empty(&self) -> bool {
        !self.remove_all && self.remove.is_empty() && self.add.is_empty()
    }

    /// The follower set this change leads to from `followers`.
    pub fn apply(&self, followers: &BTreeSet<UserId>) -> BTreeSet<UserId> {
        let mut result = if self.remove_all { BTreeSet::new() } else { followers.clone() };
        result.retain(|u| !self.remove.contains(u));
        result.extend(self.add.iter().cloned());
        result
    }
}

/// Folds operations, in the order they were enqueued, into their net change.
///
/// ```
/// use followd::deliver::fold::fold;
/// use followd::event::UserId;
/// use followd::queue::FollowerOp;
///
/// let alice = UserId::parse("usr_alice").unwrap();
/// // Tag added, then removed: alice ends up not following, in one call.
/// let change = fold(&[FollowerOp::Add(alice.clone()), FollowerOp::Remove(alice.clone())]);
/// assert!(change.add.is_empty());
/// assert!(change.remove.contains(&alice));
/// ```
pub fn fold<'a>(ops: impl IntoIterator<Item = &'a FollowerOp>) -> NetChange {
    let mut remove_all = false;
    // true: add, false: remove. The last operation per user wins.
    let mut last: BTreeMap<&UserId, bool> = BTreeMap::new();
    for op in ops {
        match op {
            FollowerOp::RemoveAll => {
                remove_all = true;
                last.clear();
            }
            FollowerOp::Add(user) => {
                last.insert(user, true);
            }
            FollowerOp::Remove(user) => {
                last.insert(user, false);
            }
        }
    }
    let mut change = NetChange { remove_all, ..NetChange::default() };
    for (user, add) in last {
        if add {
            change.add.insert(user.clone());
        } else {
            change.remove.insert(user.clone());
        }
    }
    change
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn user(n: u8) -> UserId {
        UserId::parse(&format!("u{n}")).unwrap()
    }

    fn follower_op() -> impl Strategy<Value = FollowerOp> {
        prop_oneof![
            1 => Just(FollowerOp::RemoveAll),
            4 => (0u8..6).prop_map(|n| FollowerOp::Add(user(n))),
            4 => (0u8..6).prop_map(|n| FollowerOp::Remove(user(n))),
        ]
    }

    fn apply_one(mut set: BTreeSet<UserId>, op: &FollowerOp) -> BTreeSet<UserId> {
        match op {
            FollowerOp::RemoveAll => set.clear(),
            FollowerOp::Add(u) => {
                set.insert(u.clone());
            }
            FollowerOp::Remove(u) => {
                set.remove(u);
            }
        }
        set
    }

    proptest! {
        /// Folding a batch must end where applying its operations one by one ends.
        #[test]
        fn folding_matches_applying_in_order(
            start in proptest::collection::btree_set((0u8..6).prop_map(user), 0..6),
            ops in proptest::collection::vec(follower_op(), 0..40),
        ) {
            let stepwise = ops.iter().fold(start.clone(), apply_one);
            let change = fold(&ops);
            prop_assert_eq!(change.apply(&start), stepwise);
            // Never more users touched than the sequence names, and add/remove never overlap.
            let distinct: BTreeSet<_> = ops.iter().filter_map(|op| match op {
                FollowerOp::Add(u) | FollowerOp::Remove(u) => Some(u.clone()),
                FollowerOp::RemoveAll => None,
            }).collect();
            prop_assert!(change.add.len() + change.remove.len() <= distinct.len());
            prop_assert!(change.add.is_disjoint(&change.remove));
        }
    }

    #[test]
    fn added_then_removed_ends_removed() {
        let change = fold(&[FollowerOp::Add(user(1)), FollowerOp::Remove(user(1))]);
        assert_eq!(change.remove, BTreeSet::from([user(1)]));
        assert!(change.add.is_empty());
    }

    #[test]
    fn remove_all_clears_what_came_before_it() {
        let change = fold(&[FollowerOp::Add(user(1)), FollowerOp::RemoveAll, FollowerOp::Add(user(2))]);
        assert!(change.remove_all);
        assert_eq!(change.add, BTreeSet::from([user(2)]));
    }
}
