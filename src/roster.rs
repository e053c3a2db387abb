//! The CRM's deleted users, as every part that picks or adds followers sees them.
//!
//! A `UserDelete` webhook (or a `UserUpdate` saying `deleted: true`) is recorded in the store
//! ([`crate::queue::RosterLog`]) and in this process's copy at once, so the next event's round robins skip the
//! user ([`Roster::spare_deleted`], at enqueue, where turns are taken) and no delivery adds them again (the
//! worker skips such adds, audited, whatever queued them: a rule, a cover, a replay). Other processes sharing
//! a Redis store see it at their next refresh ([`Roster::run`], every [`REFRESH`]). The rule files are never
//! edited: the status page and `rules check --online` name the rules that still mention the user.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::domain::clock::{Millis, epoch_ms};
use crate::domain::followers::Action;
use crate::domain::rotation::Rotation;
use crate::event::{UserChange, UserId, UserStatus};
use crate::queue::{DeletedUser, EventOps, QueueError, RosterLog};

/// How often a process reads the deletions other processes recorded.
pub const REFRESH: Duration = Duration::from_secs(5);

/// Deleted users by id, and their email addresses (rules may name users by email: `email:<address>`).
#[derive(Debug, Default)]
pub struct Deleted {
    by_id: HashMap<UserId, DeletedUser>,
    emails: std::collections::HashSet<String>,
}

impl Deleted {
    fn new(users: Vec<DeletedUser>) -> Self {
        let emails = users.iter().filter_map(|user| user.email.clone()).collect();
        Self { by_id: users.into_iter().map(|user| (user.user.clone(), user)).collect(), emails }
    }

    /// Whether `user` (an id, or `email:<address>`) is a deleted user.
    pub fn contains(&self, user: &UserId) -> bool {
        self.by_id.contains_key(user) || user.email().is_some_and(|email| self.emails.contains(email))
    }

    fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// The deleted users: the store's record and this process's copy of it.
pub struct Roster {
    store: Arc<dyn RosterLog>,
    deleted: ArcSwap<Deleted>,
}

impl Roster {
    /// An empty copy over `store`; [`Roster::refresh`] reads what it holds.
    pub fn new(store: Arc<dyn RosterLog>) -> Self {
        Self { store, deleted: ArcSwap::default() }
    }

    /// Reads the store's record into this process's copy.
    pub async fn refresh(&self) -> Result<(), QueueError> {
        self.deleted.store(Arc::new(Deleted::new(self.store.deleted_users().await?)));
        Ok(())
    }

    /// Refreshes every [`REFRESH`] until `stop`; the first time at once.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            if let Err(error) = self.refresh().await {
                tracing::debug!(%error, "cannot read the deleted users; trying again");
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(REFRESH) => {}
            }
        }
    }

    /// Whether `user` (an id, or `email:<address>`) was deleted in the CRM.
    pub fn is_deleted(&self, user: &UserId) -> bool {
        self.deleted.load().contains(user)
    }

    /// Records what a user webhook says (received at `now`); `true` when it changed the record.
    pub async fn apply(&self, change: &UserChange, now: Millis) -> Result<bool, QueueError> {
        let at = change.occurred_at.map_or(now, epoch_ms);
        let changed = match change.status {
            UserStatus::Deleted => {
                let record = DeletedUser {
                    user: change.user_id.clone(),
                    location: change.location_id.clone(),
                    at,
                    name: change.name.clone(),
                    email: change.email.clone(),
                };
                let new = self.store.mark_deleted(&record).await?;
                if new {
                    tracing::warn!(user = %change.user_id, "the CRM deleted a user: round robins skip them, nobody adds them again");
                    metrics::counter!("followd_users_deleted_total").increment(1);
                }
                new
            }
            UserStatus::Restored => self.store.unmark_deleted(&change.user_id, at).await?,
            UserStatus::Updated => false,
        };
        if changed {
            self.refresh().await?;
        }
        Ok(changed)
    }

    /// Takes the deleted users out of the batch's round robins (members and overflow), so a turn never goes to
    /// them. A round robin left without members takes no turn (said in the log).
    pub fn spare_deleted(&self, batch: &mut [EventOps]) {
        let deleted = self.deleted.load();
        if deleted.is_empty() {
            return;
        }
        for planned in batch.iter_mut().flat_map(|event| event.ops.iter_mut()) {
            let Action::RoundRobin(rotation) = &planned.action else { continue };
            if let Some(spared) = without(rotation, &deleted) {
                if spared.members.is_empty() {
                    tracing::warn!(rule = %rotation.rule, "every member of the round robin was deleted in the CRM; no turn");
                }
                planned.action = Action::RoundRobin(Arc::new(spared));
            }
        }
    }
}

/// `rotation` without the deleted users; `None` when none of them is in it.
fn without(rotation: &Rotation, deleted: &Deleted) -> Option<Rotation> {
    let gone = |user: &UserId| deleted.contains(user);
    let touched = rotation.members.iter().any(|m| gone(&m.user)) || rotation.overflow.as_ref().is_some_and(gone);
    touched.then(|| Rotation {
        members: rotation.members.iter().filter(|m| !gone(&m.user)).cloned().collect(),
        overflow: rotation.overflow.clone().filter(|user| !gone(user)),
        ..rotation.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::pick::{Caps, Member};

    fn user(id: &str) -> UserId {
        UserId::parse(id).unwrap()
    }

    fn deleted(ids: &[&str]) -> Deleted {
        let email = |id: &str| Some(format!("{id}@example.com"));
        Deleted::new(
            ids.iter()
                .map(|id| DeletedUser { user: user(id), location: None, at: 0, name: None, email: email(id) })
                .collect(),
        )
    }

    #[test]
    fn a_round_robin_loses_its_deleted_members_and_overflow_and_is_left_alone_otherwise() {
        let rotation = Rotation {
            rule: Arc::from("leads"),
            members: ["a", "b", "c"].iter().map(|u| Member { user: user(u), weight: 1 }).collect(),
            availability: Arc::default(),
            catch_up: false,
            caps: Caps::default(),
            overflow: Some(user("o")),
        };
        assert!(without(&rotation, &deleted(&["x"])).is_none(), "nobody of it deleted: unchanged");
        let spared = without(&rotation, &deleted(&["b", "o"])).unwrap();
        assert_eq!(spared.members.iter().map(|m| m.user.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(spared.overflow, None);
        assert_eq!(spared.rule, rotation.rule, "standings stay the rule's");
        assert!(without(&rotation, &deleted(&["a", "b", "c"])).unwrap().members.is_empty());
        let named = Rotation { members: vec![Member { user: user("email:b@example.com"), weight: 1 }], ..rotation };
        assert!(without(&named, &deleted(&["b"])).unwrap().members.is_empty(), "named by a deleted user's email");
    }
}
