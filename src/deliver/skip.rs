//! `skip_if_following`: which of a lease's operations their rule gives up because someone of its team already
//! follows the contact.
//!
//! Decided at delivery, against the followers the CRM lists then (followers a person adds are seen only by
//! reading, `shared/ghl/API.md` §13), once per rule and event: the rule does all it asks or nothing, so its own
//! adds never make it skip the rest of itself. The operations before it in the lease count, as they will have
//! happened by then. Pure: the worker reads the contact and followd's memory, and hands them in.

use std::collections::{BTreeSet, HashMap};

use crate::domain::followers::{FollowerOp, Ownership};
use crate::event::UserId;
use crate::queue::QueuedOp;

/// The operations to deliver, and the ones skipped with why (by their `seq`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Skips {
    pub kept: Vec<QueuedOp>,
    pub skipped: Vec<(u64, String)>,
}

/// Splits `ops` given who follows now (`current`) and which of them followd added (`owned`).
pub fn skip(ops: &[QueuedOp], current: &[UserId], owned: &[UserId]) -> Skips {
    let mut following: BTreeSet<&UserId> = current.iter().collect();
    let mut decided: HashMap<(&str, &str), Option<String>> = HashMap::new();
    let mut skips = Skips::default();
    for op in ops {
        let reason = if op.unless.is_empty() {
            None
        } else {
            decided
                .entry((op.event_id.as_str(), op.rule.as_str()))
                .or_insert_with(|| {
                    op.unless
                        .iter()
                        .find(|u| following.contains(u))
                        .map(|u| format!("{u} already follows (rule `{}`, skip_if_following)", op.rule))
                })
                .clone()
        };
        if let Some(reason) = reason {
            skips.skipped.push((op.seq, reason));
            continue;
        }
        let touches = |u: &UserId| op.ownership == Ownership::Any || owned.contains(u);
        match &op.op {
            FollowerOp::Add(user) => {
                following.insert(user);
            }
            FollowerOp::Remove(user) if touches(user) => {
                following.remove(user);
            }
            FollowerOp::Remove(_) => {}
            FollowerOp::RemoveAll => following.retain(|u| !touches(u)),
        }
        skips.kept.push(op.clone());
    }
    skips
}

/// Splits `ops` into those to deliver and the adds of users the CRM deleted (see `crate::roster`), which are
/// skipped whatever queued them.
pub fn skip_deleted(ops: &[QueuedOp], is_deleted: impl Fn(&UserId) -> bool) -> Skips {
    let mut skips = Skips::default();
    for op in ops {
        match &op.op {
            FollowerOp::Add(user) if is_deleted(user) => {
                skips.skipped.push((op.seq, format!("{user} was deleted in the CRM (rule `{}`)", op.rule)));
            }
            _ => skips.kept.push(op.clone()),
        }
    }
    skips
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::event::EventId;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    /// A queued operation of `rule` for `event`, with its `skip_if_following` team.
    pub(in crate::deliver) fn op(seq: u64, event: &str, rule: &str, op: FollowerOp, unless: &[&str]) -> QueuedOp {
        QueuedOp {
            seq,
            op,
            rule: rule.into(),
            event_id: EventId::parse(event).unwrap(),
            enqueued_at: 0,
            ownership: Ownership::Any,
            note: None,
            unless: unless.iter().map(|u| user(u)).collect(),
            turn: false,
        }
    }

    #[test]
    fn a_rule_skips_whole_where_its_team_follows_and_its_own_adds_never_count_against_it() {
        let team = ["sdr_1", "sdr_2"];
        let ops = [
            op(1, "e1", "assign", FollowerOp::Add(user("sdr_1")), &team),
            op(2, "e1", "assign", FollowerOp::Add(user("manager")), &team),
            op(3, "e1", "other", FollowerOp::Add(user("ops")), &[]),
            // A later event of the same rule: sdr_1 follows by now (op 1), so it skips.
            op(4, "e2", "assign", FollowerOp::Add(user("sdr_2")), &team),
        ];
        let fresh = skip(&ops, &[], &[]);
        assert_eq!(fresh.kept.iter().map(|o| o.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(fresh.skipped.len(), 1);
        assert_eq!(fresh.skipped[0].0, 4);
        assert!(fresh.skipped[0].1.starts_with("sdr_1 already follows"), "{}", fresh.skipped[0].1);
        // sdr_2 already follows: the whole rule is skipped, for both events; the other rule is not.
        let covered = skip(&ops, &[user("sdr_2")], &[]);
        assert_eq!(covered.kept.iter().map(|o| o.seq).collect::<Vec<_>>(), [3]);
        // Removed earlier in the lease: by then nobody of the team follows.
        let mut removed_first = vec![op(0, "e0", "drop", FollowerOp::Remove(user("sdr_2")), &[])];
        removed_first.extend(ops.iter().cloned());
        let kept = skip(&removed_first, &[user("sdr_2")], &[]).kept;
        assert_eq!(kept.iter().map(|o| o.seq).collect::<Vec<_>>(), [0, 1, 2, 3]);
        // A managed removal leaves a person's follower, who still counts.
        removed_first[0].ownership = Ownership::Managed;
        assert_eq!(skip(&removed_first, &[user("sdr_2")], &[]).kept.len(), 2);
    }
}
