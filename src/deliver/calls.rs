//! Which upstream calls reach a net change, given what is known of the contact: whom to DELETE, whom to POST,
//! or why it cannot be done (the CRM's cap of [`MAX_FOLLOWERS`]).
//!
//! Pure, like `fold.rs`: the worker reads the contact (a search) and followd's memory only when this module
//! says they are needed, then hands them in. Ownership (`README.md`, "Who owns a follower"): a removal that
//! may touch only followd's followers removes a user only where followd added it; `remove_all` under
//! `managed` removes exactly followd's. At the cap, `evict_managed` makes room with the oldest of followd's
//! followers, never a person's.

use std::collections::BTreeSet;

use super::fold::NetChange;
use crate::domain::followers::{AtCap, MAX_FOLLOWERS, Ownership};
use crate::event::UserId;

/// What is known of the contact when the calls are planned.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<'a> {
    /// Who follows now, when the contact was read.
    pub current: Option<&'a [UserId]>,
    /// The followers followd added, oldest first (from its memory).
    pub owned: &'a [UserId],
}

/// The calls to make.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calls {
    /// One DELETE with these users (evicted ones included), when not empty.
    pub remove: Vec<UserId>,
    /// One POST with these users, when not empty.
    pub add: Vec<UserId>,
    /// Which of `remove` make room under the cap (followd's own, oldest first).
    pub evicted: Vec<UserId>,
}

/// Whether the contact must be read first: to learn who follows for a `remove_all` that may touch anyone, and
/// to count followers before adding when `evict_managed` may have to make room.
pub fn needs_read(change: &NetChange, at_cap: AtCap) -> bool {
    change.remove_all == Some(Ownership::Any) || (!change.add.is_empty() && at_cap == AtCap::EvictManaged)
}

/// Whether followd's memory of the followers it added is needed.
pub fn needs_owned(change: &NetChange, at_cap: AtCap) -> bool {
    change.remove_all.is_some()
        || change.remove.values().any(|o| *o == Ownership::Managed)
        || (!change.add.is_empty() && at_cap == AtCap::EvictManaged)
}

/// Upstream calls a change makes at most: a search, a DELETE, a POST. Taken from the rate budget up front.
pub fn max_calls(change: &NetChange, at_cap: AtCap) -> u64 {
    u64::from(needs_read(change, at_cap))
        + u64::from(change.remove_all.is_some() || !change.remove.is_empty() || needs_read(change, at_cap))
        + u64::from(!change.add.is_empty())
}

/// The calls that reach `change`, or why it cannot be done (the dead letter's reason).
pub fn plan(change: &NetChange, known: Known<'_>, at_cap: AtCap) -> Result<Calls, String> {
    if change.add.len() > MAX_FOLLOWERS {
        return Err(format!("adds {} followers; the CRM allows at most {MAX_FOLLOWERS} per contact", change.add.len()));
    }
    let owned: BTreeSet<&UserId> = known.owned.iter().collect();
    let mut remove: Vec<UserId> = Vec::new();
    let push = |user: &UserId, remove: &mut Vec<UserId>| {
        if !change.add.contains(user) && !remove.contains(user) {
            remove.push(user.clone());
        }
    };
    match change.remove_all {
        Some(Ownership::Any) => {
            // Who follows now; without an answer, at least the ones followd added.
            for user in known.current.unwrap_or(known.owned) {
                push(user, &mut remove);
            }
        }
        Some(Ownership::Managed) => {
            let following = |u: &UserId| known.current.is_none_or(|current| current.contains(u));
            for user in known.owned.iter().filter(|u| following(u)) {
                push(user, &mut remove);
            }
        }
        None => {}
    }
    for (user, ownership) in &change.remove {
        if *ownership == Ownership::Any || owned.contains(user) {
            push(user, &mut remove);
        }
    }
    let add: Vec<UserId> = change.add.iter().cloned().collect();
    let mut evicted = Vec::new();
    if let Some(current) = known.current {
        let mut after: BTreeSet<&UserId> = current.iter().filter(|u| !remove.contains(u)).collect();
        after.extend(&add);
        let over = after.len().saturating_sub(MAX_FOLLOWERS);
        if over > 0 {
            let would = format!(
                "adding {} would take the contact to {} followers; the CRM allows at most {MAX_FOLLOWERS}",
                names(&add),
                after.len()
            );
            match at_cap {
                AtCap::DeadLetter => return Err(format!("{would} (followers.at_cap = \"dead_letter\")")),
                AtCap::EvictManaged => {
                    let room: Vec<&UserId> =
                        known.owned.iter().filter(|u| after.contains(u) && !change.add.contains(*u)).collect();
                    if room.len() < over {
                        return Err(format!(
                            "{would}; only {} of them followd added, and a person's followers are never removed \
                             to make room (followers.at_cap = \"evict_managed\")",
                            room.len()
                        ));
                    }
                    evicted = room.into_iter().take(over).cloned().collect();
                    remove.extend(evicted.iter().cloned());
                }
            }
        }
    }
    Ok(Calls { remove, add, evicted })
}

fn names(users: &[UserId]) -> String {
    users.iter().map(UserId::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::deliver::fold::fold;
    use crate::domain::followers::FollowerOp;

    fn user(n: u8) -> UserId {
        UserId::parse(&format!("u{n}")).unwrap()
    }

    /// What happens to one contact: a delivery (its operations under `managed`, with or without a read of the
    /// contact first), or a person adding or removing a follower in the CRM.
    #[derive(Debug, Clone)]
    enum Step {
        Deliver { ops: Vec<FollowerOp>, read: bool },
        PersonAdds(UserId),
        PersonRemoves(UserId),
    }

    fn step() -> impl Strategy<Value = Step> {
        let op = prop_oneof![
            1 => Just(FollowerOp::RemoveAll),
            4 => (0u8..14).prop_map(|n| FollowerOp::Add(user(n))),
            4 => (0u8..14).prop_map(|n| FollowerOp::Remove(user(n))),
        ];
        prop_oneof![
            3 => (proptest::collection::vec(op, 0..8), any::<bool>()).prop_map(|(ops, read)| Step::Deliver { ops, read }),
            1 => (0u8..14).prop_map(|n| Step::PersonAdds(user(n))),
            1 => (0u8..14).prop_map(|n| Step::PersonRemoves(user(n))),
        ]
    }

    proptest! {
        /// The planning the worker really runs, against a model of the CRM: under `managed`, whatever the rules
        /// ask, whatever people do in between, with or without reads, and at the cap in either mode, a follower
        /// a person added is never removed. (A person who re-adds a user followd still remembers adding is
        /// ambiguous until the next read, so the model's people add only users followd does not remember.)
        #[test]
        fn under_managed_a_person_s_followers_survive_every_delivery(
            start in proptest::collection::btree_set((0u8..14).prop_map(user), 0..8),
            steps in proptest::collection::vec(step(), 0..40),
            evict in any::<bool>(),
        ) {
            let at_cap = if evict { AtCap::EvictManaged } else { AtCap::DeadLetter };
            let mut crm: BTreeSet<UserId> = start.clone();
            let mut owned: Vec<UserId> = Vec::new();
            let mut persons: BTreeSet<UserId> = start;
            for step in steps {
                match step {
                    Step::Deliver { ops, read } => {
                        let change = fold(ops.iter().map(|op| (op, Ownership::Managed)));
                        let current: Vec<UserId> = crm.iter().cloned().collect();
                        let known = Known { current: read.then_some(current.as_slice()), owned: &owned };
                        let Ok(calls) = plan(&change, known, at_cap) else { continue };
                        for user in &calls.remove {
                            crm.remove(user);
                        }
                        owned.retain(|u| !calls.remove.contains(u) && (!read || current.contains(u)));
                        for user in calls.add {
                            if crm.insert(user.clone()) {
                                owned.push(user);
                            }
                        }
                    }
                    Step::PersonAdds(u) => {
                        if !owned.contains(&u) && crm.insert(u.clone()) {
                            persons.insert(u);
                        }
                    }
                    Step::PersonRemoves(u) => {
                        crm.remove(&u);
                        persons.remove(&u);
                    }
                }
                prop_assert!(persons.is_subset(&crm), "a person's follower was removed: {crm:?} {persons:?}");
            }
        }
    }

    fn users(ids: &[&str]) -> Vec<UserId> {
        ids.iter().map(|id| UserId::parse(id).unwrap()).collect()
    }

    fn change(remove_all: Option<Ownership>, remove: &[(&str, Ownership)], add: &[&str]) -> NetChange {
        NetChange {
            remove_all,
            remove: remove.iter().map(|(u, o)| (UserId::parse(u).unwrap(), *o)).collect::<BTreeMap<_, _>>(),
            add: users(add).into_iter().collect(),
        }
    }

    #[test]
    fn managed_removals_leave_a_person_s_followers_and_any_removes_them() {
        let owned = users(&["bot"]);
        let known = Known { current: None, owned: &owned };
        let managed = change(None, &[("person", Ownership::Managed), ("bot", Ownership::Managed)], &[]);
        assert_eq!(plan(&managed, known, AtCap::DeadLetter).unwrap().remove, users(&["bot"]));
        let any = change(None, &[("person", Ownership::Any)], &[]);
        assert_eq!(plan(&any, known, AtCap::DeadLetter).unwrap().remove, users(&["person"]));
    }

    #[test]
    fn remove_all_removes_who_follows_now_or_only_followd_s_under_managed() {
        let (current, owned) = (users(&["bot", "person", "kept"]), users(&["bot", "gone"]));
        let known = Known { current: Some(&current), owned: &owned };
        let any = change(Some(Ownership::Any), &[], &["kept"]);
        assert_eq!(
            plan(&any, known, AtCap::DeadLetter).unwrap(),
            Calls { remove: users(&["bot", "person"]), add: users(&["kept"]), evicted: vec![] }
        );
        // "gone" was removed by a person: not called for again.
        let managed = change(Some(Ownership::Managed), &[], &[]);
        assert_eq!(plan(&managed, known, AtCap::DeadLetter).unwrap().remove, users(&["bot"]));
        assert!(needs_read(&any, AtCap::DeadLetter) && !needs_read(&managed, AtCap::DeadLetter));
        assert_eq!(max_calls(&any, AtCap::DeadLetter), 3);
    }

    #[test]
    fn at_the_cap_the_oldest_of_followd_s_followers_make_room_and_a_person_s_never_do() {
        let current = users(&["p1", "p2", "p3", "p4", "p5", "p6", "p7", "b1", "b2", "b3"]);
        let owned = users(&["b2", "b1", "b3"]);
        let known = Known { current: Some(&current), owned: &owned };
        let two = change(None, &[], &["n1", "n2"]);
        let calls = plan(&two, known, AtCap::EvictManaged).unwrap();
        assert_eq!(calls.evicted, users(&["b2", "b1"]), "oldest first");
        assert_eq!(calls.remove, users(&["b2", "b1"]));
        let reason = plan(&two, known, AtCap::DeadLetter).unwrap_err();
        assert!(reason.contains("12 followers") && reason.contains("dead_letter"), "{reason}");
        let persons_only = users(&["p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10"]);
        let known = Known { current: Some(&persons_only), owned: &[] };
        let reason = plan(&change(None, &[], &["n1"]), known, AtCap::EvictManaged).unwrap_err();
        assert!(reason.contains("a person's followers are never removed"), "{reason}");
    }
}
