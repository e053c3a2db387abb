//! The cover task: applies the rule files' `[[cover]]` entries as time passes.
//!
//! At each tick (every `queue.lease / 4`, in every process that delivers) it compares, for each cover, whether
//! its user is away now (`[availability]`, their time zone and hours included) with whether a cover is stored
//! as running, and takes the step `domain::cover::step` says: to start, it queues "add `by`" for every contact
//! where followd added the user and stores those contacts; to end (the user is back, or the `[[cover]]` was
//! removed), it queues "remove `by`" for exactly those contacts, removing only a follower followd added (a
//! person's stays). Both go through the queue like any webhook's changes: ordered per contact, under the
//! limits, audited under the rule name `cover <user> by <by>`. Two processes may tick at once on Redis: both
//! may queue a start (a second add of a follower changes nothing at the CRM); an end's event ids are made from
//! the stored cover and its start, so the queue's de-duplication makes it one.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::clock::{Millis, now_ms};
use crate::domain::cover::{Cover, Covering, Step, step};
use crate::domain::followers::{Action, Ownership};
use crate::event::{ContactKey, EventId};
use crate::queue::{EventOps, PlannedOp, QueueError, Stores};
use crate::rules::{LiveRules, RuleSet};

/// Most contacts queued in one enqueue call.
const CHUNK: usize = 100;

/// Ticks until `stop`.
pub async fn run(rules: Arc<LiveRules>, stores: Stores, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(error) = tick(&rules.current(), &stores, now_ms()).await {
            tracing::warn!(%error, "cannot apply the covers for absences; trying again at the next tick");
        }
    }
}

/// One tick at `now`.
pub async fn tick(rules: &RuleSet, stores: &Stores, now: Millis) -> Result<(), QueueError> {
    let running = stores.covers.coverings().await?;
    for cover in rules.covers() {
        let away = rules.availability().is_away(&cover.user, now);
        let current = running.iter().find(|stored| stored.cover() == *cover);
        match (step(true, away, current.is_some()), current) {
            (Step::Start, _) => start(cover, None, stores, now).await?,
            (Step::End, Some(current)) => end(cover, &current.covering, stores, now).await?,
            // Still away: contacts the user gained since (a rule that adds them by name) are covered too.
            (Step::Nothing, Some(current)) if away => start(cover, Some(&current.covering), stores, now).await?,
            _ => {}
        }
    }
    for gone in running.iter().filter(|stored| !rules.covers().contains(&stored.cover())) {
        end(&gone.cover(), &gone.covering, stores, now).await?;
    }
    Ok(())
}

/// Covers every contact where followd added the user and the running cover (`None`: a new one) does not hold
/// yet; stores the union.
async fn start(cover: &Cover, running: Option<&Covering>, stores: &Stores, now: Millis) -> Result<(), QueueError> {
    let mut contacts = stores.covers.followed_by(&cover.user).await?;
    let covering = match running {
        Some(covering) => {
            contacts.retain(|contact| !covering.contacts.contains(contact));
            if contacts.is_empty() {
                return Ok(());
            }
            covering.clone()
        }
        None => {
            tracing::info!(user = %cover.user, by = %cover.by, contacts = contacts.len(), "cover starts");
            Covering { since: now, contacts: Vec::new() }
        }
    };
    let first = covering.contacts.len();
    let new = Covering { since: covering.since, contacts };
    queue(cover, &new, first, "start", Action::Add(cover.by.clone()), Ownership::Any, stores, now).await?;
    let mut all = covering;
    all.contacts.extend(new.contacts);
    stores.covers.set_covering(cover, Some(all)).await
}

async fn end(cover: &Cover, covering: &Covering, stores: &Stores, now: Millis) -> Result<(), QueueError> {
    tracing::info!(user = %cover.user, by = %cover.by, contacts = covering.contacts.len(), "cover ends");
    // Only where followd added them: a person's follower stays.
    queue(cover, covering, 0, "end", Action::Remove(cover.by.clone()), Ownership::Managed, stores, now).await?;
    stores.covers.set_covering(cover, None).await
}

/// Queues `action` for every contact of `covering`, each as its own event (numbered from `first`).
#[allow(clippy::too_many_arguments)]
async fn queue(
    cover: &Cover,
    covering: &Covering,
    first: usize,
    what: &str,
    action: Action,
    ownership: Ownership,
    stores: &Stores,
    now: Millis,
) -> Result<(), QueueError> {
    let rule: Arc<str> = Arc::from(cover.rule());
    // Ids short whatever the user ids' length: the cover as a hash (deterministic across processes).
    let tag = {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        cover.hash(&mut hasher);
        hasher.finish()
    };
    let event = |i: usize, contact: &ContactKey| -> Result<EventOps, QueueError> {
        let id = format!("cover-{tag:016x}-{}-{what}-{}", covering.since, first + i);
        let event_id = EventId::parse(&id).map_err(|e| QueueError::Corrupt(serde::de::Error::custom(e)))?;
        let op = PlannedOp { rule: Arc::clone(&rule), action: action.clone(), ownership, lasts: None, unless: None };
        Ok(EventOps { event_id, contact: contact.clone(), ops: vec![op], background: false })
    };
    let events = covering.contacts.iter().enumerate().map(|(i, c)| event(i, c)).collect::<Result<Vec<_>, _>>()?;
    for chunk in events.chunks(CHUNK) {
        stores.queue.enqueue(chunk.to_vec(), now).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::followers::FollowerOp;
    use crate::event::{ContactId, LocationId, UserId};
    use crate::queue::{Applied, EmbeddedQueue, LeaseOutcome};

    const DAY: Millis = 86_400_000;
    /// 2026-12-14T00:00:00Z, a Monday.
    const MONDAY: Millis = 1_797_206_400_000;

    fn contact(id: &str) -> ContactKey {
        ContactKey { location_id: LocationId::parse("loc").unwrap(), contact_id: ContactId::parse(id).unwrap() }
    }

    /// Everything queued at `now`, delivered at once: (contact, operation, ownership).
    async fn drain(stores: &Stores, now: Millis) -> Vec<(String, FollowerOp, Ownership)> {
        let mut done = Vec::new();
        while let LeaseOutcome::Leased(lease) = stores.queue.lease(now).await.unwrap() {
            for op in &lease.ops {
                done.push((lease.contact.contact_id.to_string(), op.op.clone(), op.ownership));
            }
            let added =
                lease.ops.iter().filter_map(|o| if let FollowerOp::Add(u) = &o.op { Some(u.clone()) } else { None });
            let applied = Applied { added: added.collect(), ..Applied::default() };
            stores.queue.ack(&lease, &applied, now).await.unwrap();
        }
        done
    }

    #[tokio::test]
    async fn a_week_with_an_absence_covers_once_at_its_start_and_uncovers_once_at_its_end() {
        let text = "[users]\nalice = \"usr_alice\"\nbob = \"usr_bob\"\n\
                    [availability]\nalice = { away = [\"2026-12-16/2026-12-18\"] }\n\
                    [[cover]]\nuser = \"alice\"\nby = \"bob\"\n";
        let rules = RuleSet::compile(&[("r.toml".into(), text.to_owned())]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let stores =
            Stores::of(EmbeddedQueue::open(dir.path(), Duration::from_secs(60), Duration::from_secs(60)).unwrap());
        // Monday: followd makes alice follow c-1.
        let alice = UserId::parse("usr_alice").unwrap();
        let ops = vec![PlannedOp {
            rule: Arc::from("r"),
            action: Action::Add(alice),
            ownership: Ownership::Any,
            lasts: None,
            unless: None,
        }];
        let event =
            EventOps { event_id: EventId::parse("e1").unwrap(), contact: contact("c-1"), ops, background: false };
        stores.queue.enqueue(vec![event], MONDAY).await.unwrap();
        drain(&stores, MONDAY).await;
        // A week of hourly ticks.
        let bob = UserId::parse("usr_bob").unwrap();
        let mut seen = Vec::new();
        for hour in 0..7 * 24 {
            let now = MONDAY + hour * 3_600_000;
            tick(&rules, &stores, now).await.unwrap();
            for (c, op, ownership) in drain(&stores, now).await {
                seen.push((now / DAY - MONDAY / DAY, c, op, ownership));
            }
        }
        assert_eq!(
            seen,
            [
                (2, "c-1".to_owned(), FollowerOp::Add(bob.clone()), Ownership::Any),
                (5, "c-1".to_owned(), FollowerOp::Remove(bob), Ownership::Managed),
            ],
            "added on Wednesday when the absence starts, removed on Saturday when it is over, once each"
        );
        assert!(stores.covers.coverings().await.unwrap().is_empty());
    }
}
