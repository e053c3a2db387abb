//! Folding a contact's pending operations into the net change that reaches the same end with the fewest calls.
//!
//! Per user the last operation wins. A `remove_all` that may touch any follower clears everything before it;
//! one limited to the followers followd added (`managed`) clears the adds and managed removals before it but
//! keeps the removals that may touch anyone, since it would not remove those users itself. The result makes at
//! most one DELETE and one POST, whatever the number of operations (plus one search when it must learn who
//! follows). Pure: no I/O, no clock, so it is property-tested against applying the operations one by one,
//! ownership included: the followers always match; ownership may err towards "a person's", never the other way.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::followers::Ownership;
use crate::event::UserId;
use crate::queue::FollowerOp;

/// What to change on one contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetChange {
    /// Remove every current follower first (`Any`), or every follower followd added (`Managed`).
    pub remove_all: Option<Ownership>,
    /// Users to remove, each with whose followers it may touch (disjoint from `add`).
    pub remove: BTreeMap<UserId, Ownership>,
    /// Users to add.
    pub add: BTreeSet<UserId>,
}

/// A contact's followers and, among them, the ones followd added: what [`NetChange::apply`] works on in tests
/// and models.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Followers {
    pub all: BTreeSet<UserId>,
    /// A subset of `all`.
    pub owned: BTreeSet<UserId>,
}

impl NetChange {
    pub fn is_empty(&self) -> bool {
        self.remove_all.is_none() && self.remove.is_empty() && self.add.is_empty()
    }

    /// The followers this change leads to, as the CRM and followd's memory would apply it: an add makes a
    /// user followd's only when it did not follow already; a managed removal touches only followd's.
    pub fn apply(&self, start: &Followers) -> Followers {
        let mut end = start.clone();
        match self.remove_all {
            Some(Ownership::Any) => end = Followers::default(),
            Some(Ownership::Managed) => {
                end.all.retain(|u| !start.owned.contains(u));
                end.owned.clear();
            }
            None => {}
        }
        for (user, ownership) in &self.remove {
            if *ownership == Ownership::Any || end.owned.contains(user) {
                end.all.remove(user);
                end.owned.remove(user);
            }
        }
        for user in &self.add {
            if end.all.insert(user.clone()) {
                end.owned.insert(user.clone());
            }
        }
        end
    }
}

/// Folds operations, each with its ownership, in the order they were enqueued, into their net change.
///
/// ```
/// use followd::deliver::fold::fold;
/// use followd::domain::followers::Ownership;
/// use followd::event::UserId;
/// use followd::queue::FollowerOp;
///
/// let alice = UserId::parse("usr_alice").unwrap();
/// // Tag added, then removed: alice ends up not following, in one call.
/// let ops = [FollowerOp::Add(alice.clone()), FollowerOp::Remove(alice.clone())];
/// let change = fold(ops.iter().map(|op| (op, Ownership::Any)));
/// assert!(change.add.is_empty());
/// assert!(change.remove.contains_key(&alice));
/// ```
pub fn fold<'a>(ops: impl IntoIterator<Item = (&'a FollowerOp, Ownership)>) -> NetChange {
    let mut remove_all: Option<Ownership> = None;
    // Some(ownership): remove; None: add. The last operation per user wins.
    let mut last: BTreeMap<&UserId, Option<Ownership>> = BTreeMap::new();
    // Users a removal that may touch anyone has taken away: from then on followd knows they do not follow
    // unless it adds them (and then they are its own), so any later removal of them removes them for sure.
    let mut known_gone: BTreeSet<&UserId> = BTreeSet::new();
    for (op, ownership) in ops {
        match op {
            FollowerOp::RemoveAll => {
                // `Any` is the wider of the two: once everything is removed, a managed removal adds nothing.
                remove_all = remove_all.max(Some(ownership));
                match ownership {
                    Ownership::Any => {
                        last.clear();
                        known_gone.clear();
                    }
                    // What this removal would not remove itself must still be removed: removals that may touch
                    // anyone, and users known gone (whom a later add made followd's, so this removes them).
                    Ownership::Managed => {
                        last.retain(|user, removal| *removal == Some(Ownership::Any) || known_gone.contains(user));
                        last.values_mut().for_each(|removal| *removal = Some(Ownership::Any));
                    }
                }
            }
            FollowerOp::Add(user) => {
                last.insert(user, None);
            }
            FollowerOp::Remove(user) => {
                if ownership == Ownership::Any {
                    known_gone.insert(user);
                }
                last.insert(user, Some(ownership));
            }
        }
    }
    let mut change = NetChange { remove_all, ..NetChange::default() };
    for (user, removal) in last {
        match removal {
            None => {
                change.add.insert(user.clone());
            }
            Some(ownership) => {
                let ownership = if known_gone.contains(user) { Ownership::Any } else { ownership };
                change.remove.insert(user.clone(), ownership);
            }
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

    fn ownership() -> impl Strategy<Value = Ownership> {
        prop_oneof![Just(Ownership::Any), Just(Ownership::Managed)]
    }

    fn follower_op() -> impl Strategy<Value = (FollowerOp, Ownership)> {
        let op = prop_oneof![
            1 => Just(FollowerOp::RemoveAll),
            4 => (0u8..6).prop_map(|n| FollowerOp::Add(user(n))),
            4 => (0u8..6).prop_map(|n| FollowerOp::Remove(user(n))),
        ];
        (op, ownership())
    }

    /// One operation applied to the CRM's followers and followd's memory of the ones it added.
    fn apply_one(mut state: Followers, (op, ownership): &(FollowerOp, Ownership)) -> Followers {
        match (op, ownership) {
            (FollowerOp::RemoveAll, Ownership::Any) => state = Followers::default(),
            (FollowerOp::RemoveAll, Ownership::Managed) => {
                let owned = std::mem::take(&mut state.owned);
                state.all.retain(|u| !owned.contains(u));
            }
            (FollowerOp::Add(u), _) => {
                if state.all.insert(u.clone()) {
                    state.owned.insert(u.clone());
                }
            }
            (FollowerOp::Remove(u), ownership) => {
                if *ownership == Ownership::Any || state.owned.contains(u) {
                    state.all.remove(u);
                    state.owned.remove(u);
                }
            }
        }
        state
    }

    fn followers() -> impl Strategy<Value = Followers> {
        (proptest::collection::btree_set((0u8..6).prop_map(user), 0..6), proptest::collection::vec(any::<bool>(), 6))
            .prop_map(|(all, owned)| {
                let owned = all.iter().zip(owned).filter(|(_, o)| *o).map(|(u, _)| u.clone()).collect();
                Followers { all, owned }
            })
    }

    /// What a person does in the CRM between deliveries.
    #[derive(Debug, Clone)]
    enum Step {
        Deliver(Vec<(FollowerOp, Ownership)>),
        PersonAdds(UserId),
        PersonRemoves(UserId),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => proptest::collection::vec(follower_op(), 0..8).prop_map(Step::Deliver),
            1 => (0u8..6).prop_map(|n| Step::PersonAdds(user(n))),
            1 => (0u8..6).prop_map(|n| Step::PersonRemoves(user(n))),
        ]
    }

    proptest! {
        /// Folding a batch must end with the followers that applying its operations one by one ends with, and
        /// never claim more of them as followd's (a user removed and added back within one batch may stay a
        /// person's: one POST of a user who follows adds nothing, and erring that way never costs a person's
        /// follower).
        #[test]
        fn folding_matches_applying_in_order(
            start in followers(),
            ops in proptest::collection::vec(follower_op(), 0..40),
        ) {
            let stepwise = ops.iter().fold(start.clone(), apply_one);
            let change = fold(ops.iter().map(|(op, o)| (op, *o)));
            let folded = change.apply(&start);
            prop_assert_eq!(&folded.all, &stepwise.all);
            prop_assert!(folded.owned.is_subset(&stepwise.owned), "{:?} vs {:?}", folded, stepwise);
            // Never more users touched than the sequence names, and add/remove never overlap.
            let distinct: BTreeSet<_> = ops.iter().filter_map(|(op, _)| match op {
                FollowerOp::Add(u) | FollowerOp::Remove(u) => Some(u.clone()),
                FollowerOp::RemoveAll => None,
            }).collect();
            prop_assert!(change.add.len() + change.remove.len() <= distinct.len());
            prop_assert!(change.remove.keys().all(|u| !change.add.contains(u)));
        }

        /// Under `managed`, whatever the rules ask and whatever people do in between, a follower a person
        /// added stays until a person removes it.
        #[test]
        fn a_person_s_followers_are_never_removed_under_managed(
            start in proptest::collection::btree_set((0u8..6).prop_map(user), 0..4),
            steps in proptest::collection::vec(step(), 0..30),
        ) {
            let mut state = Followers { all: start.clone(), owned: BTreeSet::new() };
            let mut persons: BTreeSet<UserId> = start;
            for step in steps {
                match step {
                    Step::Deliver(ops) => {
                        let change = fold(ops.iter().map(|(op, _)| (op, Ownership::Managed)));
                        state = change.apply(&state);
                    }
                    Step::PersonAdds(u) => {
                        if state.all.insert(u.clone()) {
                            persons.insert(u);
                        }
                    }
                    Step::PersonRemoves(u) => {
                        state.all.remove(&u);
                        state.owned.remove(&u);
                        persons.remove(&u);
                    }
                }
                prop_assert!(persons.is_subset(&state.all), "{:?} lost a person's follower", state);
            }
        }
    }

    fn fold_any(ops: &[FollowerOp]) -> NetChange {
        fold(ops.iter().map(|op| (op, Ownership::Any)))
    }

    #[test]
    fn added_then_removed_ends_removed() {
        let change = fold_any(&[FollowerOp::Add(user(1)), FollowerOp::Remove(user(1))]);
        assert_eq!(change.remove, BTreeMap::from([(user(1), Ownership::Any)]));
        assert!(change.add.is_empty());
    }

    #[test]
    fn remove_all_clears_what_came_before_it() {
        let change = fold_any(&[FollowerOp::Add(user(1)), FollowerOp::RemoveAll, FollowerOp::Add(user(2))]);
        assert_eq!(change.remove_all, Some(Ownership::Any));
        assert_eq!(change.add, BTreeSet::from([user(2)]));
    }

    #[test]
    fn a_managed_remove_all_keeps_an_earlier_removal_that_may_touch_anyone() {
        let ops = [(FollowerOp::Remove(user(1)), Ownership::Any), (FollowerOp::RemoveAll, Ownership::Managed)];
        let change = fold(ops.iter().map(|(op, o)| (op, *o)));
        assert_eq!(change.remove_all, Some(Ownership::Managed));
        assert_eq!(change.remove, BTreeMap::from([(user(1), Ownership::Any)]));
    }
}
