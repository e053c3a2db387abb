//! The store contract: one behavioural suite, run against every backend (embedded, single Redis, a real
//! Redis Cluster), with cases for each of the store's traits: the queue, the contact memory, the location
//! state, the audit log, the token store and the shared outcomes.
//!
//! Time is passed into the store, so lease expiry and de-duplication windows are tested by choosing `now`,
//! without waiting. Each case takes the backend's [`Stores`] and uses the trait it is about; `contract!`
//! instantiates every case per backend.

mod support;

use std::sync::Arc;
use std::time::Duration;

use followd::config::RedisUrl;
use followd::domain::outcome::Outcome;
use followd::domain::pick::{Caps, Member};
use followd::domain::rate::Limits;
use followd::domain::rotation::Rotation;
use followd::event::{ContactId, EventId, LocationId, UserId};
use followd::queue::{
    Applied, ContactKey, EmbeddedQueue, EventOps, Failure, FollowerOp, Lease, LeaseOutcome, Pause, PlannedOp, Queue,
    QueueError, RedisOptions, RedisQueue, RunRecord, RunState, Selection, Stores,
};
use followd::rules::Action;
use followd::upstream::OAuthTokens;
use support::redis::{RedisCluster, RedisServer};

const LEASE: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(3600);
const T0: u64 = 1_800_000_000_000;

/// A store under test and whatever must live as long as it (a temporary directory, a Redis server).
pub struct Backend {
    pub stores: Stores,
    _guard: Box<dyn std::any::Any + Send>,
}

async fn embedded() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let queue = EmbeddedQueue::open(dir.path(), LEASE, TTL).unwrap();
    Backend { stores: Stores::of(queue), _guard: Box::new(dir) }
}

fn redis_options() -> RedisOptions {
    RedisOptions { prefix: "test".into(), partitions: 4, lease_for: LEASE, dedup_ttl: TTL }
}

async fn redis() -> Backend {
    let server = RedisServer::start().await;
    let queue = RedisQueue::connect(&RedisUrl::new(server.url()), redis_options()).await.unwrap();
    Backend { stores: Stores::of(queue), _guard: Box::new(server) }
}

async fn redis_cluster() -> Backend {
    let cluster = RedisCluster::start().await;
    let queue = RedisQueue::connect(&RedisUrl::new(cluster.url()), redis_options()).await.unwrap();
    Backend { stores: Stores::of(queue), _guard: Box::new(cluster) }
}

fn key(location: &str, contact: &str) -> ContactKey {
    ContactKey { location_id: LocationId::parse(location).unwrap(), contact_id: ContactId::parse(contact).unwrap() }
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

/// A round robin over `team` (user, weight), nobody away, no caps: change what a case needs with `..`.
fn rotation(rule: &str, team: &[(&str, u32)]) -> Rotation {
    Rotation {
        rule: Arc::from(rule),
        members: team.iter().map(|&(u, weight)| Member { user: user(u), weight }).collect(),
        availability: Arc::default(),
        catch_up: false,
        caps: Caps::default(),
        overflow: None,
    }
}

fn round_robin(rotation: Rotation) -> Action {
    Action::RoundRobin(Arc::new(rotation))
}

fn event(id: &str, contact: &ContactKey, actions: Vec<Action>) -> EventOps {
    EventOps {
        event_id: EventId::parse(id).unwrap(),
        contact: contact.clone(),
        ops: actions
            .into_iter()
            .map(|action| PlannedOp {
                rule: Arc::from("rule"),
                action,
                ownership: Default::default(),
                lasts: None,
                unless: None,
            })
            .collect(),
        background: false,
    }
}

/// The same, as background work (a reconcile's).
fn background(id: &str, contact: &ContactKey, actions: Vec<Action>) -> EventOps {
    EventOps { background: true, ..event(id, contact, actions) }
}

fn add(u: &str) -> Action {
    Action::Add(user(u))
}

fn remove(u: &str) -> Action {
    Action::Remove(user(u))
}

async fn lease(queue: &dyn Queue, now: u64) -> Lease {
    match queue.lease(now).await.unwrap() {
        LeaseOutcome::Leased(lease) => lease,
        other => panic!("expected a lease at {now}, got {other:?}"),
    }
}

async fn nothing_ready(queue: &dyn Queue, now: u64) -> Option<u64> {
    match queue.lease(now).await.unwrap() {
        LeaseOutcome::Empty { next_at } => next_at,
        LeaseOutcome::Leased(lease) => panic!("expected nothing ready at {now}, leased {lease:?}"),
    }
}

fn ops(lease: &Lease) -> Vec<FollowerOp> {
    lease.ops.iter().map(|q| q.op.clone()).collect()
}

async fn a_lease_holds_every_pending_operation_of_the_contact_in_order(stores: &Stores) {
    let queue = &*stores.queue;
    let c = key("loc", "c1");
    let outcome = queue.enqueue(vec![event("e1", &c, vec![add("a"), add("b")])], T0).await.unwrap();
    assert_eq!(outcome.operations, 2);
    queue.enqueue(vec![event("e2", &c, vec![remove("a")])], T0 + 1).await.unwrap();
    let lease = lease(queue, T0 + 2).await;
    assert_eq!(lease.contact, c);
    assert_eq!(ops(&lease), [FollowerOp::Add(user("a")), FollowerOp::Add(user("b")), FollowerOp::Remove(user("a"))]);
    assert_eq!(lease.attempts, 0);
    assert_eq!(lease.deadline, T0 + 2 + LEASE.as_millis() as u64);
}

async fn a_leased_contact_is_not_leased_again_until_acknowledged(stores: &Stores) {
    let queue = &*stores.queue;
    let c = key("loc", "c1");
    queue.enqueue(vec![event("e1", &c, vec![add("a")])], T0).await.unwrap();
    let first = lease(queue, T0).await;
    // More work for the same contact arrives while it is held: it must wait for the ack.
    queue.enqueue(vec![event("e2", &c, vec![remove("a")])], T0 + 1).await.unwrap();
    nothing_ready(queue, T0 + 2).await;
    queue.ack(&first, &Applied::default(), T0 + 3).await.unwrap();
    let second = lease(queue, T0 + 4).await;
    assert_eq!(ops(&second), [FollowerOp::Remove(user("a"))]);
    queue.ack(&second, &Applied::default(), T0 + 5).await.unwrap();
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.pending, stats.leased, stats.ready), (0, 0, 0));
}

async fn contacts_are_leased_oldest_first_and_independently(stores: &Stores) {
    let queue = &*stores.queue;
    let (a, b) = (key("loc", "a"), key("loc", "b"));
    queue.enqueue(vec![event("e1", &a, vec![add("u")])], T0).await.unwrap();
    queue.enqueue(vec![event("e2", &b, vec![add("u")])], T0 + 1).await.unwrap();
    let first = lease(queue, T0 + 2).await;
    let second = lease(queue, T0 + 2).await;
    assert_eq!((first.contact, second.contact), (a, b));
}

async fn an_expired_lease_is_reaped_and_its_operations_come_back_in_order(stores: &Stores) {
    let queue = &*stores.queue;
    let c = key("loc", "c1");
    queue.enqueue(vec![event("e1", &c, vec![add("a"), remove("b")])], T0).await.unwrap();
    let dead = lease(queue, T0).await;
    queue.enqueue(vec![event("e2", &c, vec![add("c")])], T0 + 1).await.unwrap();
    assert_eq!(queue.reap(T0 + 10).await.unwrap(), 0, "not expired yet");
    assert_eq!(queue.reap(dead.deadline + 1).await.unwrap(), 1);
    let again = lease(queue, dead.deadline + 2).await;
    assert_eq!(ops(&again), [FollowerOp::Add(user("a")), FollowerOp::Remove(user("b")), FollowerOp::Add(user("c"))]);
    // The dead worker's lease no longer counts.
    assert!(matches!(queue.ack(&dead, &Applied::default(), dead.deadline + 3).await, Err(QueueError::LeaseLost)));
    queue.ack(&again, &Applied::default(), dead.deadline + 4).await.unwrap();
    assert_eq!(queue.stats().await.unwrap().pending, 0);
}

async fn a_retry_keeps_the_operations_and_schedules_the_contact_later(stores: &Stores) {
    let queue = &*stores.queue;
    let c = key("loc", "c1");
    queue.enqueue(vec![event("e1", &c, vec![add("a")])], T0).await.unwrap();
    let first = lease(queue, T0).await;
    queue.retry(&first, T0 + 5_000).await.unwrap();
    assert_eq!(nothing_ready(queue, T0 + 1).await, Some(T0 + 5_000));
    let second = lease(queue, T0 + 5_000).await;
    assert_eq!(ops(&second), [FollowerOp::Add(user("a"))]);
    assert_eq!(second.attempts, 1);
}

async fn a_duplicate_event_id_stores_nothing_until_the_window_passes(stores: &Stores) {
    let queue = &*stores.queue;
    let c = key("loc", "c1");
    let first = queue.enqueue(vec![event("e1", &c, vec![add("a")])], T0).await.unwrap();
    assert_eq!(first.accepted.len(), 1);
    let again = queue.enqueue(vec![event("e1", &c, vec![add("a")])], T0 + 1).await.unwrap();
    assert_eq!((again.accepted.len(), again.duplicates.len(), again.operations), (0, 1, 0));
    assert_eq!(queue.stats().await.unwrap().pending, 1);
    let later = T0 + TTL.as_millis() as u64 + 1;
    queue.reap(later).await.unwrap();
    let after = queue.enqueue(vec![event("e1", &c, vec![add("a")])], later).await.unwrap();
    assert_eq!(after.accepted.len(), 1);
}

async fn an_event_that_matched_nothing_is_remembered_but_queues_nothing(stores: &Stores) {
    let queue = &*stores.queue;
    let c = key("loc", "c1");
    let outcome = queue.enqueue(vec![event("e1", &c, vec![])], T0).await.unwrap();
    assert_eq!((outcome.accepted.len(), outcome.operations), (1, 0));
    assert_eq!(nothing_ready(queue, T0).await, None);
    let again = queue.enqueue(vec![event("e1", &c, vec![])], T0).await.unwrap();
    assert_eq!(again.duplicates.len(), 1);
}

async fn round_robin_rotates_per_rule_and_location(stores: &Stores) {
    let queue = &*stores.queue;
    let rr = || round_robin(rotation("rr", &[("s1", 1), ("s2", 1)]));
    let picks = |lease: &Lease| ops(lease);
    for (i, (location, contact)) in [("l1", "a"), ("l1", "b"), ("l2", "c"), ("l1", "d")].iter().enumerate() {
        queue.enqueue(vec![event(&format!("e{i}"), &key(location, contact), vec![rr()])], T0 + i as u64).await.unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..4 {
        let lease = lease(queue, T0 + 10).await;
        got.push((lease.contact.contact_id.to_string(), picks(&lease)));
    }
    got.sort_by(|x, y| x.0.cmp(&y.0));
    let add = |u: &str| vec![FollowerOp::Add(user(u))];
    assert_eq!(
        got,
        [("a".into(), add("s1")), ("b".into(), add("s2")), ("c".into(), add("s1")), ("d".into(), add("s1"))]
    );
}

async fn a_weighted_round_robin_gives_each_member_their_share_interleaved_and_a_newcomer_no_flood(stores: &Stores) {
    let queue = &*stores.queue;
    let rr = |team: &[&str], weights: &[u32]| {
        let team: Vec<(&str, u32)> = team.iter().copied().zip(weights.iter().copied()).collect();
        round_robin(rotation("weighted", &team))
    };
    let mut picked = Vec::new();
    for i in 0..9u64 {
        // Three turns of alice 2 : bob 1, then carol joins with weight 1.
        let action = if i < 6 { rr(&["alice", "bob"], &[2, 1]) } else { rr(&["alice", "bob", "carol"], &[2, 1, 1]) };
        let contact = key("l1", &format!("c{i}"));
        queue.enqueue(vec![event(&format!("w{i}"), &contact, vec![action])], T0 + i).await.unwrap();
        let lease = lease(queue, T0 + 100 + i).await;
        let [FollowerOp::Add(user)] = &ops(&lease)[..] else { panic!("{:?}", lease.ops) };
        picked.push(user.to_string());
        queue.ack(&lease, &Applied::default(), T0 + 100 + i).await.unwrap();
    }
    assert_eq!(picked[..6], ["alice", "bob", "alice", "alice", "bob", "alice"], "{picked:?}");
    // The newcomer gets one turn in the next three, not all of them.
    assert_eq!(picked[6..].iter().filter(|u| *u == "carol").count(), 1, "{picked:?}");
}

async fn a_round_robin_skips_who_is_away_and_picks_anyway_when_everyone_is(stores: &Stores) {
    let queue = &*stores.queue;
    let day = T0 / 86_400_000;
    let mut availability = followd::domain::availability::Availability::default();
    // alice is away today; bob from tomorrow.
    availability.add(user("alice"), (day, day));
    availability.add(user("bob"), (day + 1, day + 1));
    let rr = round_robin(Rotation {
        availability: Arc::new(availability.clone()),
        ..rotation("cover", &[("alice", 1), ("bob", 1)])
    });
    let mut picked = Vec::new();
    for (i, at) in [T0, T0 + 1, T0 + 2].into_iter().chain([T0 + 86_400_000]).enumerate() {
        let contact = key("l1", &format!("a{i}"));
        queue.enqueue(vec![event(&format!("a{i}"), &contact, vec![rr.clone()])], at).await.unwrap();
        let lease = lease(queue, at + 10).await;
        let [FollowerOp::Add(user)] = &ops(&lease)[..] else { panic!("{:?}", lease.ops) };
        picked.push(user.to_string());
        queue.ack(&lease, &Applied::default(), at + 10).await.unwrap();
    }
    assert_eq!(picked, ["bob", "bob", "bob", "alice"], "today alice is away, tomorrow bob");
    // Everyone away: the pick goes ahead.
    let mut everyone = availability;
    everyone.add(user("bob"), (day, day));
    let rr =
        round_robin(Rotation { availability: Arc::new(everyone), ..rotation("all-away", &[("alice", 1), ("bob", 1)]) });
    queue.enqueue(vec![event("z", &key("l1", "z"), vec![rr])], T0 + 5).await.unwrap();
    let lease = lease(queue, T0 + 20).await;
    assert!(matches!(&ops(&lease)[..], [FollowerOp::Add(_)]), "{:?}", lease.ops);
    let note = lease.ops[0].note.as_deref().unwrap_or_default();
    assert!(note.contains("every member was away"), "the audit will say so: {:?}", lease.ops[0]);
}

async fn a_capped_round_robin_skips_who_is_at_the_cap_then_overflows_or_sets_the_turn_aside(stores: &Stores) {
    let queue = &*stores.queue;
    let caps = Caps { per_day: Some(1), per_week: None };
    let team = [("alice", 1), ("bob", 1)];
    let with_overflow = round_robin(Rotation { caps, overflow: Some(user("boss")), ..rotation("overflowing", &team) });
    let strict = round_robin(Rotation { caps, ..rotation("strict", &team) });
    let tomorrow = T0 + 86_400_000;
    let mut picked = Vec::new();
    for (i, at) in [T0, T0 + 1, T0 + 2, tomorrow].into_iter().enumerate() {
        for (name, action) in [("o", &with_overflow), ("s", &strict)] {
            let contact = key("l1", &format!("{name}{i}"));
            queue.enqueue(vec![event(&format!("{name}{i}"), &contact, vec![action.clone()])], at).await.unwrap();
        }
    }
    while let LeaseOutcome::Leased(lease) = queue.lease(tomorrow + 10).await.unwrap() {
        let [FollowerOp::Add(user)] = &ops(&lease)[..] else { panic!("{:?}", lease.ops) };
        picked.push((lease.contact.contact_id.to_string(), user.to_string(), lease.ops[0].note.clone()));
        queue.ack(&lease, &Applied::default(), tomorrow + 10).await.unwrap();
    }
    picked.sort();
    let who: Vec<(&str, &str)> = picked.iter().map(|(c, u, _)| (c.as_str(), u.as_str())).collect();
    assert_eq!(
        who,
        [("o0", "alice"), ("o1", "bob"), ("o2", "boss"), ("o3", "bob"), ("s0", "alice"), ("s1", "bob"), ("s3", "bob")],
        "one pick each per day; the third turn of the day overflows, or is set aside; alice, capped for bob's \
         turn, took no part in it (as when away), so bob leads the next day"
    );
    assert!(picked[2].2.as_deref().is_some_and(|n| n.contains("overflow")), "{:?}", picked[2]);
    assert!(picked[0].2.is_none(), "an ordinary pick carries no note: {:?}", picked[0]);
    let letters = queue.dead_letters().await.unwrap();
    let [letter] = &letters[..] else { panic!("one turn set aside: {letters:?}") };
    assert_eq!(letter.contact_id.to_string(), "s2");
    assert!(letter.reason.contains("every member is at their cap (max_per_day = 1)"), "{}", letter.reason);
    assert_eq!(letter.operations.iter().map(|o| o.op.clone()).collect::<Vec<_>>(), [FollowerOp::Add(user("bob"))]);
    // Replayed by an operator: the pick the caps refused is made.
    assert_eq!(queue.replay(&Selection::All, tomorrow + 20).await.unwrap(), 1);
    let lease = lease(queue, tomorrow + 30).await;
    assert_eq!(ops(&lease), [FollowerOp::Add(user("bob"))]);
}

async fn a_timed_follower_s_removal_comes_due_and_a_later_add_or_removal_cancels_or_moves_it(stores: &Stores) {
    let queue = &*stores.queue;
    const DAY: u64 = 86_400_000;
    let timed = |id: &str, contact: &str, who: &str, at: u64| {
        let mut event = event(id, &key("l1", contact), vec![Action::Add(user(who))]);
        event.ops[0].lasts = Some(DAY);
        (event, at)
    };
    let plain = |id: &str, contact: &str, action: Action, at: u64| (event(id, &key("l1", contact), vec![action]), at);
    let steps = [
        timed("t1", "c1", "alice", T0),
        timed("t2", "c2", "bob", T0),
        plain("t3", "c2", Action::Remove(user("bob")), T0 + 1),
        timed("t4", "c3", "carol", T0),
        plain("t5", "c3", Action::Add(user("carol")), T0 + 1),
        timed("t6", "c4", "dave", T0),
        timed("t7", "c4", "dave", T0 + 10 * 3_600_000),
        timed("t8", "c5", "erin", T0),
        plain("t9", "c5", Action::RemoveAll, T0 + 1),
    ];
    for (event, at) in steps {
        queue.enqueue(vec![event], at).await.unwrap();
    }
    while let LeaseOutcome::Leased(lease) = queue.lease(T0 + 11 * 3_600_000).await.unwrap() {
        queue.ack(&lease, &Applied::default(), T0 + 11 * 3_600_000).await.unwrap();
    }
    assert_eq!(queue.fire_timers(T0 + DAY - 1).await.unwrap(), 0, "nothing is due before its time");
    assert_eq!(queue.fire_timers(T0 + DAY).await.unwrap(), 1, "alice's day is up; dave's was moved");
    let removal = lease(queue, T0 + DAY + 1).await;
    assert_eq!(removal.contact.contact_id.to_string(), "c1");
    assert_eq!(ops(&removal), [FollowerOp::Remove(user("alice"))]);
    assert_eq!(removal.ops[0].ownership, followd::domain::followers::Ownership::Managed, "a person's follower stays");
    assert!(removal.ops[0].note.as_deref().is_some_and(|n| n.contains("added for 1d")), "{:?}", removal.ops[0]);
    queue.ack(&removal, &Applied::default(), T0 + DAY + 1).await.unwrap();
    assert_eq!(queue.fire_timers(T0 + 10 * 3_600_000 + DAY).await.unwrap(), 1, "dave's, a day after his second add");
    let lease = lease(queue, T0 + 10 * 3_600_000 + DAY + 1).await;
    assert_eq!(
        (lease.contact.contact_id.to_string(), ops(&lease)),
        ("c4".to_owned(), vec![FollowerOp::Remove(user("dave"))])
    );
    queue.ack(&lease, &Applied::default(), T0 + 10 * 3_600_000 + DAY + 1).await.unwrap();
    assert_eq!(
        queue.fire_timers(T0 + 100 * DAY).await.unwrap(),
        0,
        "a removal, a plain add and remove_all cancelled the rest"
    );
    assert_eq!(nothing_ready(queue, T0 + 100 * DAY).await, None);
}

async fn a_turn_given_back_goes_to_the_same_member_again_and_counts_once(stores: &Stores) {
    let queue = &*stores.queue;
    let caps = Caps { per_day: Some(2), per_week: None };
    let rr = round_robin(Rotation { caps, ..rotation("refunds", &[("alice", 2), ("bob", 1)]) });
    let mut picked = Vec::new();
    for i in 0..4u64 {
        queue
            .enqueue(vec![event(&format!("g{i}"), &key("l1", &format!("g{i}")), vec![rr.clone()])], T0 + i)
            .await
            .unwrap();
        let lease = lease(queue, T0 + 10 + i).await;
        assert!(lease.ops[0].turn, "a pick is marked as a turn: {:?}", lease.ops[0]);
        let [FollowerOp::Add(user)] = &ops(&lease)[..] else { panic!("{:?}", lease.ops) };
        picked.push(user.to_string());
        if i == 2 {
            // This contact's rule was skipped at delivery: the turn goes back.
            let location = LocationId::parse("l1").unwrap();
            queue.refund_turn(&location, "refunds", user, lease.ops[0].enqueued_at).await.unwrap();
        }
        queue.ack(&lease, &Applied::default(), T0 + 10 + i).await.unwrap();
    }
    // alice, bob, alice (given back), alice again: under her cap of 2 a day, since the given-back one is not
    // counted.
    assert_eq!(picked, ["alice", "bob", "alice", "alice"]);
}

async fn with_catch_up_a_member_back_from_an_absence_gets_the_picks_they_missed(stores: &Stores) {
    use followd::domain::pick::{Pick, Standings, When, pick};
    let queue = &*stores.queue;
    let day = T0 / 86_400_000;
    let mut availability = followd::domain::availability::Availability::default();
    availability.add(user("alice"), (day, day));
    let team = [user("alice"), user("bob"), user("carol")];
    let rr = round_robin(Rotation {
        availability: Arc::new(availability.clone()),
        catch_up: true,
        ..rotation("catch-up", &[("alice", 1), ("bob", 1), ("carol", 1)])
    });
    // What the pure pick says, step by step: both stores must pick exactly this.
    let members: Vec<Member> = team.iter().map(|u| Member { user: u.clone(), weight: 1 }).collect();
    let mut standings = Standings::default();
    let times: Vec<u64> = (0..4).map(|i| T0 + i).chain((0..6).map(|i| T0 + 86_400_000 + i)).collect();
    let mut expected = Vec::new();
    let mut picked = Vec::new();
    for (i, &at) in times.iter().enumerate() {
        let away = |u: &UserId| availability.is_away(u, at);
        let Pick::Picked { user, .. } = pick(&members, &mut standings, away, Caps::default(), true, When::at(at))
        else {
            panic!("nobody picked")
        };
        expected.push(user.to_string());
        let contact = key("l1", &format!("k{i}"));
        queue.enqueue(vec![event(&format!("k{i}"), &contact, vec![rr.clone()])], at).await.unwrap();
        let lease = lease(queue, at + 10).await;
        let [FollowerOp::Add(user)] = &ops(&lease)[..] else { panic!("{:?}", lease.ops) };
        picked.push(user.to_string());
        queue.ack(&lease, &Applied::default(), at + 10).await.unwrap();
    }
    assert_eq!(picked, expected);
    assert!(!picked[..4].contains(&"alice".to_owned()), "alice is away on the first day: {picked:?}");
    let alice_back = picked[4..].iter().filter(|u| *u == "alice").count();
    assert!(alice_back >= 3, "alice catches up on the second day: {picked:?}");
}

async fn stats_count_ready_leased_and_pending(stores: &Stores) {
    let queue = &*stores.queue;
    queue.enqueue(vec![event("e1", &key("l", "a"), vec![add("u"), add("v")])], T0).await.unwrap();
    queue.enqueue(vec![event("e2", &key("l", "b"), vec![add("u")])], T0).await.unwrap();
    let _held = lease(queue, T0).await;
    let stats = queue.stats().await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.pending), (1, 1, 3));
    queue.ping().await.unwrap();
}

async fn a_dead_letter_keeps_its_operations_until_replayed_in_order_or_purged(stores: &Stores) {
    let queue = &*stores.queue;
    let c = key("loc", "c1");
    queue.enqueue(vec![event("e1", &c, vec![add("a"), remove("b")])], T0).await.unwrap();
    let doomed = lease(queue, T0).await;
    // Arrives during the failing delivery: it must go on without the dead ones.
    queue.enqueue(vec![event("e2", &c, vec![add("c")])], T0 + 1).await.unwrap();
    let failure = Failure { status: Some(422), reason: "unprocessable".into() };
    queue.dead_letter(&doomed, &failure, T0 + 2).await.unwrap();
    let next = lease(queue, T0 + 3).await;
    assert_eq!(ops(&next), [FollowerOp::Add(user("c"))]);
    queue.ack(&next, &Applied::default(), T0 + 4).await.unwrap();

    let letters = queue.dead_letters().await.unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!((letter.status, letter.reason.as_str(), letter.failed_at), (Some(422), "unprocessable", T0 + 2));
    assert_eq!((&letter.location_id, &letter.contact_id), (&c.location_id, &c.contact_id));
    let letter_ops: Vec<FollowerOp> = letter.operations.iter().map(|q| q.op.clone()).collect();
    assert_eq!(letter_ops, [FollowerOp::Add(user("a")), FollowerOp::Remove(user("b"))]);
    assert_eq!(queue.stats().await.unwrap().dead, 1);

    assert_eq!(queue.replay(&Selection::One(letter.id.clone()), T0 + 5).await.unwrap(), 1);
    assert!(queue.dead_letters().await.unwrap().is_empty());
    let replayed = lease(queue, T0 + 6).await;
    assert_eq!(ops(&replayed), [FollowerOp::Add(user("a")), FollowerOp::Remove(user("b"))]);
    queue.dead_letter(&replayed, &failure, T0 + 7).await.unwrap();
    assert_eq!(queue.replay(&Selection::One("0-nope".into()), T0).await.unwrap(), 0);
    assert_eq!(queue.purge(&Selection::All).await.unwrap(), 1);
    assert!(queue.dead_letters().await.unwrap().is_empty());
    assert_eq!(queue.stats().await.unwrap().pending, 0);
}

async fn live_contacts_are_leased_before_background_ones_and_live_work_brings_a_contact_forward(stores: &Stores) {
    let queue = &*stores.queue;
    let (early, late, promoted) = (key("loc", "early-bg"), key("loc", "late-live"), key("loc", "promoted"));
    queue.enqueue(vec![background("b1", &early, vec![add("a")])], T0).await.unwrap();
    queue.enqueue(vec![background("b2", &promoted, vec![add("a")])], T0 + 1).await.unwrap();
    // Nothing live: background work is leased, so an idle budget is used; when is said for background too.
    assert_eq!(nothing_ready(queue, T0 - 1).await, Some(T0));
    queue.enqueue(vec![event("l1", &late, vec![add("b")])], T0 + 5).await.unwrap();
    // Live work arrives for a background contact: it moves to the live lane, keeping its time (T0 + 1).
    queue.enqueue(vec![event("l2", &promoted, vec![add("c")])], T0 + 6).await.unwrap();
    let order: Vec<String> = {
        let mut order = Vec::new();
        for _ in 0..3 {
            let leased = lease(queue, T0 + 10).await;
            order.push(leased.contact.contact_id.to_string());
            queue.ack(&leased, &Applied::default(), T0 + 10).await.unwrap();
        }
        order
    };
    assert_eq!(order, ["promoted", "late-live", "early-bg"], "live first, even when the background one waited longer");
    // A background contact given back waits in its lane, after live work ready later.
    queue.enqueue(vec![background("b3", &early, vec![add("z")])], T0 + 20).await.unwrap();
    let held = lease(queue, T0 + 20).await;
    queue.retry(&held, T0 + 21).await.unwrap();
    queue.enqueue(vec![event("l3", &late, vec![add("y")])], T0 + 30).await.unwrap();
    assert_eq!(lease(queue, T0 + 40).await.contact, late);
    assert_eq!(lease(queue, T0 + 40).await.contact, early);
    assert_eq!(queue.stats().await.unwrap().ready, 0);
}

// --- ContactMemory ---

fn applied(removed_all: bool, removed: &[&str], added: &[&str]) -> Applied {
    Applied {
        removed_all,
        removed: removed.iter().map(|u| user(u)).collect(),
        added: added.iter().map(|u| user(u)).collect(),
        seen: None,
        dry_run: false,
        skipped: Vec::new(),
    }
}

async fn acknowledged_changes_update_the_followers_followd_added(stores: &Stores) {
    let (queue, memory) = (&*stores.queue, &*stores.memory);
    let c = key("loc", "c1");
    queue.enqueue(vec![event("e1", &c, vec![add("a"), add("b")])], T0).await.unwrap();
    let l = lease(queue, T0).await;
    queue.ack(&l, &applied(false, &[], &["a", "b"]), T0).await.unwrap();
    assert_eq!(memory.known_followers(&c).await.unwrap(), [user("a"), user("b")]);
    queue.enqueue(vec![event("e2", &c, vec![remove("a")])], T0).await.unwrap();
    let l = lease(queue, T0).await;
    queue.ack(&l, &applied(false, &["a"], &[]), T0).await.unwrap();
    assert_eq!(memory.known_followers(&c).await.unwrap(), [user("b")]);
    queue.enqueue(vec![event("e3", &c, vec![Action::RemoveAll])], T0).await.unwrap();
    let l = lease(queue, T0).await;
    queue.ack(&l, &applied(true, &[], &[]), T0).await.unwrap();
    assert!(memory.known_followers(&c).await.unwrap().is_empty());
}

async fn a_dry_run_is_audited_as_one_and_changes_no_known_followers(stores: &Stores) {
    let (queue, memory, audit) = (&*stores.queue, &*stores.memory, &*stores.audit);
    let c = key("loc", "c1");
    queue.enqueue(vec![event("e1", &c, vec![add("a")])], T0).await.unwrap();
    let l = lease(queue, T0).await;
    queue.ack(&l, &Applied { dry_run: true, ..applied(false, &[], &["a"]) }, T0 + 1).await.unwrap();
    assert!(memory.known_followers(&c).await.unwrap().is_empty(), "nothing was sent, so nothing is followd's");
    let trail = audit.audit(Some(&c.location_id), &c.contact_id).await.unwrap();
    assert_eq!(trail.iter().map(|e| e.result.clone()).collect::<Vec<_>>(), [Outcome::DryRun]);
}

async fn operations_a_rule_skipped_are_audited_as_skipped_and_the_rest_as_delivered(stores: &Stores) {
    let (queue, audit) = (&*stores.queue, &*stores.audit);
    let c = key("loc", "c1");
    let mut skippable = event("e1", &c, vec![add("a")]);
    skippable.ops[0].unless = Some(vec![user("b")].into());
    queue.enqueue(vec![skippable, event("e2", &c, vec![add("z")])], T0).await.unwrap();
    let l = lease(queue, T0).await;
    assert_eq!(l.ops[0].unless, [user("b")], "the team travels with the stored operation");
    let skipped = vec![(l.ops[0].seq, "b already follows".to_owned())];
    queue.ack(&l, &Applied { skipped, ..applied(false, &[], &["z"]) }, T0 + 1).await.unwrap();
    let mut trail = audit.audit(Some(&c.location_id), &c.contact_id).await.unwrap();
    trail.sort_by_key(|e| e.operation.event_id.to_string());
    let results: Vec<Outcome> = trail.iter().map(|e| e.result.clone()).collect();
    assert_eq!(results, [Outcome::Skipped("b already follows".into()), Outcome::Delivered]);
}

async fn covers_find_the_contacts_followd_made_a_user_follow_and_remember_what_they_cover(stores: &Stores) {
    use followd::domain::cover::{Cover, Covering};
    let (queue, covers) = (&*stores.queue, &*stores.covers);
    for (i, (location, contact, who)) in
        [("l1", "c1", "alice"), ("l2", "c2", "alice"), ("l1", "c3", "bob")].iter().enumerate()
    {
        let c = key(location, contact);
        queue.enqueue(vec![event(&format!("cv{i}"), &c, vec![add(who)])], T0).await.unwrap();
        let l = lease(queue, T0).await;
        queue.ack(&l, &applied(false, &[], &[who]), T0).await.unwrap();
    }
    let mut found = covers.followed_by(&user("alice")).await.unwrap();
    found.sort();
    assert_eq!(found, [key("l1", "c1"), key("l2", "c2")]);
    assert!(covers.followed_by(&user("carol")).await.unwrap().is_empty());
    let cover = Cover { user: user("alice"), by: user("bob") };
    let covering = Covering { since: T0, contacts: found.clone() };
    covers.set_covering(&cover, Some(covering.clone())).await.unwrap();
    let running = covers.coverings().await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!((running[0].cover(), &running[0].covering), (cover.clone(), &covering));
    covers.set_covering(&cover, None).await.unwrap();
    assert!(covers.coverings().await.unwrap().is_empty());
}

async fn deleted_users_are_recorded_once_and_only_a_later_restore_forgets_them(stores: &Stores) {
    use followd::queue::DeletedUser;
    let roster = &*stores.roster;
    assert!(roster.deleted_users().await.unwrap().is_empty());
    let gone = DeletedUser {
        user: user("usr_gone"),
        location: Some(key("l1", "c").location_id),
        at: T0,
        name: Some("Ann".into()),
        email: Some("ann@example.com".into()),
    };
    assert!(roster.mark_deleted(&gone).await.unwrap());
    assert!(!roster.mark_deleted(&DeletedUser { at: T0 + 5, ..gone.clone() }).await.unwrap(), "the first record stays");
    assert_eq!(roster.deleted_users().await.unwrap(), [gone]);
    assert!(!roster.unmark_deleted(&user("usr_gone"), T0).await.unwrap(), "a restore no newer than the deletion");
    assert!(!roster.unmark_deleted(&user("usr_other"), T0 + 9).await.unwrap());
    assert!(roster.unmark_deleted(&user("usr_gone"), T0 + 1).await.unwrap());
    assert!(roster.deleted_users().await.unwrap().is_empty());
}

fn tags(list: &[&str]) -> Vec<String> {
    list.iter().map(|t| (*t).to_owned()).collect()
}

async fn the_tag_set_diff_reports_added_and_removed_tags_against_the_last_seen_set(stores: &Stores) {
    let memory = &*stores.memory;
    let c = key("loc", "c1");
    let id = |s: &str| EventId::parse(s).unwrap();
    // First sight: everything is added; tags compare trimmed and case-insensitively.
    let first = memory.diff_tags(&c, &id("e1"), Some(&tags(&["VIP", " new lead "])), None, T0).await.unwrap();
    assert_eq!((first.added, first.removed, first.stale), (tags(&["new lead", "vip"]), tags(&[]), false));
    let second = memory.diff_tags(&c, &id("e2"), Some(&tags(&["vip", "hot"])), None, T0 + 1).await.unwrap();
    assert_eq!((second.added.clone(), second.removed.clone()), (tags(&["hot"]), tags(&["new lead"])));
    // The same event again (a retry) gets the same answer, not an empty diff.
    assert_eq!(memory.diff_tags(&c, &id("e2"), Some(&tags(&["vip", "hot"])), None, T0 + 2).await.unwrap(), second);
    let all_gone = memory.diff_tags(&c, &id("e3"), Some(&[]), None, T0 + 3).await.unwrap();
    assert_eq!((all_gone.added, all_gone.removed), (tags(&[]), tags(&["hot", "vip"])));
    // Forgetting a deleted contact makes its next tags new again.
    memory.diff_tags(&c, &id("e4"), Some(&tags(&["a"])), None, T0 + 4).await.unwrap();
    memory.forget_contact(&c).await.unwrap();
    let reborn = memory.diff_tags(&c, &id("e5"), Some(&tags(&["a"])), None, T0 + 5).await.unwrap();
    assert_eq!(reborn.added, tags(&["a"]));
}

async fn a_whole_state_older_than_the_one_applied_is_stale_and_changes_nothing(stores: &Stores) {
    let memory = &*stores.memory;
    let c = key("loc", "c1");
    let id = |s: &str| EventId::parse(s).unwrap();
    let newer = memory.diff_tags(&c, &id("new"), Some(&tags(&["vip", "hot"])), Some(2_000), T0).await.unwrap();
    assert_eq!((newer.added, newer.stale), (tags(&["hot", "vip"]), false));
    // The older one arrives later (a sender's retry): refused, and the tags stay as the newer one left them.
    let older = memory.diff_tags(&c, &id("old"), Some(&tags(&["vip"])), Some(1_000), T0 + 1).await.unwrap();
    assert!(older.stale && older.added.is_empty() && older.removed.is_empty(), "{older:?}");
    // Its retry gets the same answer; a payload without a time is applied; an equal time is not older.
    let again = memory.diff_tags(&c, &id("old"), Some(&tags(&["vip"])), Some(1_000), T0 + 2).await.unwrap();
    assert!(again.stale);
    let untimed = memory.diff_tags(&c, &id("untimed"), Some(&tags(&["vip"])), None, T0 + 3).await.unwrap();
    assert_eq!((untimed.removed, untimed.stale), (tags(&["hot"]), false));
    let same = memory.diff_tags(&c, &id("same"), Some(&tags(&["vip", "x"])), Some(2_000), T0 + 4).await.unwrap();
    assert_eq!((same.added, same.stale), (tags(&["x"]), false));
    // A time alone (a workflow body) is checked and remembered the same way.
    assert!(memory.diff_tags(&c, &id("wf-old"), None, Some(1_999), T0 + 5).await.unwrap().stale);
    assert!(!memory.diff_tags(&c, &id("wf-new"), None, Some(3_000), T0 + 6).await.unwrap().stale);
    assert!(memory.diff_tags(&c, &id("late"), Some(&tags(&[])), Some(2_500), T0 + 7).await.unwrap().stale);
    // Another contact has its own time.
    let other = memory.diff_tags(&key("loc", "c2"), &id("o"), Some(&tags(&["a"])), Some(1), T0).await.unwrap();
    assert!(!other.stale);
}

async fn followd_s_followers_are_kept_oldest_first_and_forgotten_when_a_read_misses_them(stores: &Stores) {
    let (queue, memory) = (&*stores.queue, &*stores.memory);
    let c = key("loc", "c1");
    for (i, added) in [["b"], ["a"], ["c"]].iter().enumerate() {
        queue.enqueue(vec![event(&format!("e{i}"), &c, vec![add(added[0])])], T0 + i as u64).await.unwrap();
        let l = lease(queue, T0 + i as u64).await;
        queue.ack(&l, &applied(false, &[], added), T0 + i as u64).await.unwrap();
    }
    assert_eq!(memory.known_followers(&c).await.unwrap(), [user("b"), user("a"), user("c")], "oldest first");
    // A read that no longer lists "a": a person removed it, so it is not followd's any more.
    queue.enqueue(vec![event("e9", &c, vec![add("d")])], T0 + 9).await.unwrap();
    let l = lease(queue, T0 + 9).await;
    let seen = Some(vec![user("b"), user("c"), user("someone")]);
    queue.ack(&l, &Applied { seen, ..applied(false, &[], &["d"]) }, T0 + 9).await.unwrap();
    assert_eq!(memory.known_followers(&c).await.unwrap(), [user("b"), user("c"), user("d")]);
}

async fn the_previous_stage_of_an_opportunity_is_remembered(stores: &Stores) {
    let memory = &*stores.memory;
    let location = LocationId::parse("loc").unwrap();
    let id = |s: &str| EventId::parse(s).unwrap();
    assert_eq!(memory.swap_stage(&location, "opp-1", &id("e1"), "new", T0).await.unwrap(), None);
    assert_eq!(memory.swap_stage(&location, "opp-1", &id("e2"), "won", T0).await.unwrap().as_deref(), Some("new"));
    // A retry of e2 still sees "new" as the previous stage.
    assert_eq!(memory.swap_stage(&location, "opp-1", &id("e2"), "won", T0).await.unwrap().as_deref(), Some("new"));
    assert_eq!(memory.swap_stage(&location, "opp-2", &id("e3"), "new", T0).await.unwrap(), None);
}

// --- LocationState ---

async fn the_rate_budget_spaces_calls_per_location(stores: &Stores) {
    let locations = &*stores.locations;
    let limits = Limits::strict(100, 5);
    let (l1, l2) = (LocationId::parse("l1").unwrap(), LocationId::parse("l2").unwrap());
    assert_eq!(locations.limiter_state(&l1).await.unwrap(), None);
    assert_eq!(locations.throttle(&l1, limits, 2, T0).await.unwrap(), None);
    let state = locations.limiter_state(&l1).await.unwrap().unwrap();
    assert_eq!((state.tat, state.count), (T0 + 200, 2));
    assert_eq!(locations.throttle(&l1, limits, 1, T0 + 50).await.unwrap(), Some(T0 + 200));
    // A live delivery may go up to its tolerance ahead of the schedule, and reserves the slot after.
    let live = Limits { live_tolerance_ms: 150, ..limits }.for_live();
    assert_eq!(locations.throttle(&l1, live, 1, T0 + 40).await.unwrap(), Some(T0 + 50));
    assert_eq!(locations.throttle(&l1, live, 1, T0 + 50).await.unwrap(), None);
    assert_eq!(locations.limiter_state(&l1).await.unwrap().unwrap().tat, T0 + 300);
    // Another location has its own budget.
    assert_eq!(locations.throttle(&l2, limits, 1, T0 + 50).await.unwrap(), None);
    assert_eq!(locations.throttle(&l1, limits, 2, T0 + 300).await.unwrap(), None);
    // Five calls today: the next waits for tomorrow (UTC).
    let wait = locations.throttle(&l1, limits, 1, T0 + 10_000).await.unwrap().unwrap();
    assert_eq!(wait % 86_400_000, 0);
}

async fn a_pause_holds_one_location_until_it_ends_or_is_lifted(stores: &Stores) {
    let locations = &*stores.locations;
    let (l1, l2) = (LocationId::parse("l1").unwrap(), LocationId::parse("l2").unwrap());
    // Redis expires the key by its own clock, so the times here are near the real now.
    let now = followd::domain::clock::now_ms();
    let until = now + 60_000;
    assert_eq!(locations.paused(&l1, now).await.unwrap(), None);
    locations.pause(&l1, until, "429", now).await.unwrap();
    assert_eq!(locations.paused(&l1, until - 1).await.unwrap(), Some(Pause { until, reason: "429".to_owned() }));
    assert_eq!(locations.paused(&l2, until - 1).await.unwrap(), None);
    assert_eq!(locations.paused(&l1, until).await.unwrap(), None);
    // A pause ending now lifts it (an operator's resume, a reloaded token).
    locations.pause(&l1, now, "resumed", now).await.unwrap();
    assert_eq!(locations.paused(&l1, now).await.unwrap(), None);
}

// --- AuditLog ---

async fn the_audit_trail_records_delivered_and_dead_lettered_operations_newest_first(stores: &Stores) {
    let (queue, audit) = (&*stores.queue, &*stores.audit);
    let c = key("loc", "c1");
    queue.enqueue(vec![event("e1", &c, vec![add("a"), add("b")])], T0).await.unwrap();
    let first = lease(queue, T0).await;
    queue.ack(&first, &Applied::default(), T0 + 1).await.unwrap();
    queue.enqueue(vec![event("e2", &c, vec![remove("a")])], T0 + 2).await.unwrap();
    let second = lease(queue, T0 + 2).await;
    queue.dead_letter(&second, &Failure { status: Some(404), reason: "gone".into() }, T0 + 3).await.unwrap();
    for location in [Some(&c.location_id), None] {
        let trail = audit.audit(location, &c.contact_id).await.unwrap();
        let lines: Vec<(u64, Outcome, FollowerOp, &str)> = trail
            .iter()
            .map(|e| (e.at, e.result.clone(), e.operation.op.clone(), e.operation.event_id.as_str()))
            .collect();
        assert_eq!(
            lines,
            [
                (T0 + 3, Outcome::DeadLettered("gone".into()), FollowerOp::Remove(user("a")), "e2"),
                (T0 + 1, Outcome::Delivered, FollowerOp::Add(user("b")), "e1"),
                (T0 + 1, Outcome::Delivered, FollowerOp::Add(user("a")), "e1"),
            ]
        );
        assert_eq!(trail[0].operation.rule, "rule");
    }
    // Bounded: only the newest entries are kept.
    for i in 0..(followd::queue::AUDIT_PER_CONTACT + 5) {
        queue.enqueue(vec![event(&format!("x{i}"), &c, vec![add("z")])], T0 + 10).await.unwrap();
        let held = lease(queue, T0 + 10).await;
        queue.ack(&held, &Applied::default(), T0 + 10).await.unwrap();
    }
    assert_eq!(
        audit.audit(Some(&c.location_id), &c.contact_id).await.unwrap().len(),
        followd::queue::AUDIT_PER_CONTACT
    );
    assert!(audit.audit(None, &ContactId::parse("nobody").unwrap()).await.unwrap().is_empty());
}

// --- TokenStore ---

async fn oauth_tokens_are_kept_per_location_and_the_newest_pair_wins(stores: &Stores) {
    let tokens = &*stores.tokens;
    let (l1, l2) = (LocationId::parse("l1").unwrap(), LocationId::parse("l2").unwrap());
    let pair =
        |n: u64| OAuthTokens { access_token: format!("a{n}"), refresh_token: format!("r{n}"), expires_at: T0 + n };
    assert_eq!(tokens.load_tokens(&l1).await.unwrap(), None);
    tokens.save_tokens(&l1, &pair(1)).await.unwrap();
    tokens.save_tokens(&l1, &pair(2)).await.unwrap();
    assert_eq!(tokens.load_tokens(&l1).await.unwrap(), Some(pair(2)));
    assert_eq!(tokens.load_tokens(&l2).await.unwrap(), None);
}

// --- RunLog ---

async fn a_reconcile_run_is_saved_whole_and_listed_oldest_first(stores: &Stores) {
    let runs = &*stores.runs;
    let run = |id: &str, location: &str, started_at: u64| RunRecord {
        id: id.to_owned(),
        location_id: LocationId::parse(location).unwrap(),
        started_at,
        updated_at: started_at,
        cursor: None,
        contacts_read: 0,
        contacts_changed: 0,
        adds: 0,
        removes: 0,
        state: RunState::Running,
        ownership: None,
    };
    assert!(runs.runs().await.unwrap().is_empty());
    let mut first = run("r1", "loc-a", T0);
    runs.save_run(&first).await.unwrap();
    runs.save_run(&run("r2", "loc-b", T0 + 5)).await.unwrap();
    // A page later: the cursor and counts replace the record whole.
    first.cursor = Some(serde_json::json!([1_700_000_000_000u64, "c-99"]));
    first.contacts_read = 100;
    first.state = RunState::Failed("the CRM answered 503".into());
    runs.save_run(&first).await.unwrap();
    let listed = runs.runs().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], first);
    assert_eq!((listed[1].id.as_str(), &listed[1].state), ("r2", &RunState::Running));
}

// --- Outcomes ---

/// A shared store (Redis) reads back outcomes noted for events of several locations, hence several
/// partitions (several Cluster slots), each with its own event's result; the embedded store serves one
/// process, whose status page already knows, and finds nothing.
async fn delivery_outcomes_are_read_back_per_event_where_the_store_is_shared(stores: &Stores) {
    let outcomes = &*stores.outcomes;
    let id = |s: &str| EventId::parse(s).unwrap();
    let result = |i: usize| Outcome::Retrying(format!("attempt {i}"));
    let locations: Vec<LocationId> = (0..6).map(|i| LocationId::parse(&format!("loc-{i}")).unwrap()).collect();
    for (i, location) in locations.iter().enumerate() {
        outcomes.note_outcome(location, &[id(&format!("e{i}a")), id(&format!("e{i}b"))], &result(i)).await.unwrap();
    }
    let mut asked: Vec<(LocationId, EventId)> = Vec::new();
    for (i, location) in locations.iter().enumerate().rev() {
        asked.push((location.clone(), id(&format!("e{i}b"))));
        asked.push((location.clone(), id(&format!("e{i}a"))));
    }
    asked.push((locations[0].clone(), id("never-noted")));
    let found = outcomes.outcomes(&asked).await.unwrap();
    let expected: Vec<Option<Outcome>> = if outcomes.is_shared() {
        (0..locations.len()).rev().flat_map(|i| [Some(result(i)), Some(result(i))]).chain([None]).collect()
    } else {
        vec![None; asked.len()]
    };
    assert_eq!(found, expected);
}

/// Instantiates every contract case for one backend.
macro_rules! contract {
    ($backend:ident, $make:path) => {
        mod $backend {
            contract!(@cases $make;
                // Queue
                a_lease_holds_every_pending_operation_of_the_contact_in_order,
                a_leased_contact_is_not_leased_again_until_acknowledged,
                contacts_are_leased_oldest_first_and_independently,
                an_expired_lease_is_reaped_and_its_operations_come_back_in_order,
                a_retry_keeps_the_operations_and_schedules_the_contact_later,
                a_duplicate_event_id_stores_nothing_until_the_window_passes,
                an_event_that_matched_nothing_is_remembered_but_queues_nothing,
                round_robin_rotates_per_rule_and_location,
                a_capped_round_robin_skips_who_is_at_the_cap_then_overflows_or_sets_the_turn_aside,
                a_timed_follower_s_removal_comes_due_and_a_later_add_or_removal_cancels_or_moves_it,
                operations_a_rule_skipped_are_audited_as_skipped_and_the_rest_as_delivered,
                a_turn_given_back_goes_to_the_same_member_again_and_counts_once,
                covers_find_the_contacts_followd_made_a_user_follow_and_remember_what_they_cover,
                deleted_users_are_recorded_once_and_only_a_later_restore_forgets_them,
    a_weighted_round_robin_gives_each_member_their_share_interleaved_and_a_newcomer_no_flood,
    a_round_robin_skips_who_is_away_and_picks_anyway_when_everyone_is,
    with_catch_up_a_member_back_from_an_absence_gets_the_picks_they_missed,
                stats_count_ready_leased_and_pending,
                live_contacts_are_leased_before_background_ones_and_live_work_brings_a_contact_forward,
                a_dead_letter_keeps_its_operations_until_replayed_in_order_or_purged,
                // ContactMemory
                acknowledged_changes_update_the_followers_followd_added,
                a_dry_run_is_audited_as_one_and_changes_no_known_followers,
                the_tag_set_diff_reports_added_and_removed_tags_against_the_last_seen_set,
                a_whole_state_older_than_the_one_applied_is_stale_and_changes_nothing,
                followd_s_followers_are_kept_oldest_first_and_forgotten_when_a_read_misses_them,
                the_previous_stage_of_an_opportunity_is_remembered,
                // LocationState
                the_rate_budget_spaces_calls_per_location,
                a_pause_holds_one_location_until_it_ends_or_is_lifted,
                // AuditLog
                the_audit_trail_records_delivered_and_dead_lettered_operations_newest_first,
                // TokenStore
                oauth_tokens_are_kept_per_location_and_the_newest_pair_wins,
                // Outcomes
                delivery_outcomes_are_read_back_per_event_where_the_store_is_shared,
                // RunLog
                a_reconcile_run_is_saved_whole_and_listed_oldest_first,
            );
        }
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                let backend = $make().await;
                super::$case(&backend.stores).await;
            }
        )*
    };
}

contract!(embedded_queue, super::embedded);
contract!(redis_queue, super::redis);
contract!(redis_cluster_queue, super::redis_cluster);
