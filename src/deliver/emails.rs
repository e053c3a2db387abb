//! Users named by email in the rules (`[users] alice = "email:alice@example.com"`): their operations carry
//! `email:<address>` through the queue (round robins pick, and availability and caps count, under that name),
//! and delivery turns each into the user id the location's users have for that address
//! (`upstream::directory`). An address no user of the location has is skipped, audited with why; an address
//! that cannot be looked up now (the CRM failed) fails the delivery, which is retried.
//!
//! Pure: the worker looks the addresses up and hands in what it found.

use std::collections::HashMap;

use super::skip::Skips;
use crate::domain::followers::FollowerOp;
use crate::event::{LocationId, UserId};
use crate::queue::QueuedOp;
use crate::upstream::directory::Lookup;

/// The addresses `ops` name (their operations and `skip_if_following` teams), each once.
pub fn addresses(ops: &[QueuedOp]) -> Vec<&str> {
    let mut found: Vec<&str> = Vec::new();
    for op in ops {
        let named = match &op.op {
            FollowerOp::Add(user) | FollowerOp::Remove(user) => Some(user),
            FollowerOp::RemoveAll => None,
        };
        for email in named.into_iter().chain(op.unless.iter()).filter_map(UserId::email) {
            if !found.contains(&email) {
                found.push(email);
            }
        }
    }
    found
}

/// `ops` with each address replaced by its user, and the operations for an address nobody has skipped (by
/// `seq`, with why). `found` holds what each address of [`addresses`] is; one missing reads as unknown.
pub fn resolve(ops: &[QueuedOp], found: &HashMap<&str, Lookup>, location: &LocationId) -> Skips {
    let user = |id: &UserId| match id.email() {
        None => Some(id.clone()),
        Some(email) => match found.get(email) {
            Some(Lookup::Found(user)) => Some(user.clone()),
            _ => None,
        },
    };
    let mut skips = Skips::default();
    for op in ops {
        let resolved = match &op.op {
            FollowerOp::Add(id) => user(id).map(FollowerOp::Add).ok_or(id),
            FollowerOp::Remove(id) => user(id).map(FollowerOp::Remove).ok_or(id),
            FollowerOp::RemoveAll => Ok(FollowerOp::RemoveAll),
        };
        match resolved {
            Ok(resolved) => {
                let unless = op.unless.iter().filter_map(user).collect();
                skips.kept.push(QueuedOp { op: resolved, unless, ..op.clone() });
            }
            Err(id) => skips.skipped.push((
                op.seq,
                format!(
                    "no user of location {location} has the email {} (rule `{}`)",
                    id.email().unwrap_or_default(),
                    op.rule
                ),
            )),
        }
    }
    skips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn op(seq: u64, op: FollowerOp, unless: &[&str]) -> QueuedOp {
        crate::deliver::skip::tests::op(seq, "e", "r", op, unless)
    }

    #[test]
    fn addresses_become_users_and_one_nobody_has_is_skipped_with_why() {
        let ops = [
            op(1, FollowerOp::Add(user("email:ann@example.com")), &["email:ben@example.com", "usr_x"]),
            op(2, FollowerOp::Remove(user("email:nobody@example.com")), &[]),
            op(3, FollowerOp::Add(user("usr_plain")), &[]),
        ];
        assert_eq!(addresses(&ops), ["ann@example.com", "ben@example.com", "nobody@example.com"]);
        let found = HashMap::from([
            ("ann@example.com", Lookup::Found(user("usr_ann"))),
            ("ben@example.com", Lookup::Found(user("usr_ben"))),
            ("nobody@example.com", Lookup::Unknown),
        ]);
        let split = resolve(&ops, &found, &LocationId::parse("loc").unwrap());
        assert_eq!(split.kept.len(), 2);
        assert_eq!(split.kept[0].op, FollowerOp::Add(user("usr_ann")));
        assert_eq!(split.kept[0].unless, [user("usr_ben"), user("usr_x")]);
        assert_eq!(split.kept[1].op, FollowerOp::Add(user("usr_plain")));
        assert_eq!(
            split.skipped,
            [(2, "no user of location loc has the email nobody@example.com (rule `r`)".to_owned())]
        );
    }
}
