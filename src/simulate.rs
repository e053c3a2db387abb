//! Runs a rule test case (`followd rules test`) on a throwaway embedded store, as the service would: each
//! payload through the server's own intake (`occurrences`, `plan`), and, at each later step's time
//! (`[[case.then]]`), the cover task (`crate::covering`) before that step's payload.
//!
//! The operations a payload queues are the lines [`OpLines`] writes (a round robin as a fresh store picks).
//! They are also delivered to a simulated CRM, so that followd's memory of the followers it added is what the
//! service's would be: the cover task reads it to know whose contacts to cover. The cover's lines are the
//! changes it makes, each with its contact (`c-1: add usr_bob`); where it would remove a follower a person
//! added (the case's `following`), nothing happens and no line is written.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Context;

use crate::domain::clock::{Millis, now_ms};
use crate::domain::followers::{Action, FollowerOp, Ownership};
use crate::event::{ContactKey, EventId, Observation, UserId};
use crate::intake::{Names, occurrences, plan};
use crate::queue::{Applied, EmbeddedQueue, EventOps, LeaseOutcome, PlannedOp, Stores};
use crate::rules::{Case, OpLines, RuleSet};

/// One contact at the simulated CRM: who follows, and which of them followd added.
#[derive(Default)]
struct Followers {
    all: BTreeSet<UserId>,
    owned: BTreeSet<UserId>,
}

/// What a case's payloads and steps lead to, as lines (see the module doc).
pub async fn run_case(case: &Case, rules: &RuleSet) -> anyhow::Result<Vec<String>> {
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let store = EmbeddedQueue::open(scratch.path(), Duration::from_secs(60), Duration::from_secs(60))?;
    let stores = Stores::of(store);
    let mut crm: BTreeMap<String, Followers> = BTreeMap::new();
    for (contact, users) in &case.following {
        crm.entry(contact.clone()).or_default().all.extend(users.iter().cloned());
    }
    let now = case.at.unwrap_or_else(now_ms);
    let mut lines = OpLines::for_case(case, now);
    run_payload(case, &case.payload, true, rules, &stores, now, &mut lines, &mut crm).await?;
    for step in &case.steps {
        lines.note(format!("at {}", step.label));
        lines.set_now(step.at);
        crate::covering::tick(rules, &stores, step.at).await?;
        for line in deliver(&stores, step.at, &mut crm).await? {
            lines.note(line);
        }
        if let Some(payload) = &step.payload {
            run_payload(case, payload, false, rules, &stores, step.at, &mut lines, &mut crm).await?;
        }
    }
    Ok(lines.into_lines())
}

/// One payload through the intake at `at`: its operations become lines, and are delivered to the simulated CRM.
#[allow(clippy::too_many_arguments)]
async fn run_payload(
    case: &Case,
    payload: &[u8],
    first: bool,
    rules: &RuleSet,
    stores: &Stores,
    at: Millis,
    lines: &mut OpLines,
    crm: &mut BTreeMap<String, Followers>,
) -> anyhow::Result<()> {
    let parsed = case.format.parse(payload).context("the payload does not parse")?;
    if let (true, Some(known)) = (first, &case.known_tags) {
        // The contact's stored tags before the payload, under an id of their own so the payload's is fresh.
        let seed = EventId::parse("rules-test-known-tags")?;
        for observation in &parsed.observations {
            if let Observation::Tags { location_id, contact_id, .. } = observation {
                let contact = ContactKey { location_id: location_id.clone(), contact_id: contact_id.clone() };
                stores.memory.diff_tags(&contact, &seed, Some(known), None, at).await?;
            }
        }
    }
    let occurrences = occurrences(&*stores.memory, parsed, at, &Names::new()).await?;
    for (i, event) in plan(&occurrences, rules, Default::default()).into_iter().enumerate() {
        let mut ops = Vec::new();
        for planned in &event.ops {
            let before = lines.lines().len();
            lines.push_for(&event.contact, &planned.action);
            // What the lines say was queued, round robins resolved, is what the simulated CRM receives.
            for line in &lines.lines()[before..] {
                let action = match line.split_once(' ') {
                    Some(("add", user)) => Action::Add(UserId::parse(user)?),
                    Some(("remove", user)) => Action::Remove(UserId::parse(user)?),
                    _ if line == "remove_all" => Action::RemoveAll,
                    _ => continue,
                };
                ops.push(PlannedOp { action, lasts: None, unless: None, ..planned.clone() });
            }
        }
        let event_id = EventId::parse(&format!("{}-{at}-{i}", event.event_id))?;
        stores.queue.enqueue(vec![EventOps { event_id, ops, ..event }], at).await?;
    }
    deliver(stores, at, crm).await?;
    Ok(())
}

/// Delivers everything queued at `at` to the simulated CRM, acknowledging what changed as the workers would;
/// returns the changes as `contact: operation` lines.
async fn deliver(stores: &Stores, at: Millis, crm: &mut BTreeMap<String, Followers>) -> anyhow::Result<Vec<String>> {
    let mut changes = Vec::new();
    while let LeaseOutcome::Leased(lease) = stores.queue.lease(at).await? {
        let contact = lease.contact.contact_id.to_string();
        let followers = crm.entry(contact.clone()).or_default();
        let mut applied = Applied::default();
        for queued in &lease.ops {
            let touches = |u: &UserId, f: &Followers| queued.ownership == Ownership::Any || f.owned.contains(u);
            match &queued.op {
                FollowerOp::Add(user) if !followers.all.contains(user) => {
                    followers.all.insert(user.clone());
                    followers.owned.insert(user.clone());
                    applied.added.push(user.clone());
                    changes.push(format!("{contact}: add {user}"));
                }
                FollowerOp::Remove(user) if followers.all.contains(user) && touches(user, followers) => {
                    followers.all.remove(user);
                    followers.owned.remove(user);
                    applied.removed.push(user.clone());
                    changes.push(format!("{contact}: remove {user}"));
                }
                FollowerOp::RemoveAll => {
                    let gone: Vec<UserId> = followers.all.iter().filter(|u| touches(u, followers)).cloned().collect();
                    for user in gone {
                        followers.all.remove(&user);
                        followers.owned.remove(&user);
                        changes.push(format!("{contact}: remove {user}"));
                        applied.removed.push(user);
                    }
                }
                _ => {}
            }
        }
        stores.queue.ack(&lease, &applied, at).await?;
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{compare, load_cases};

    #[tokio::test]
    async fn a_week_with_an_absence_and_its_cover_runs_through_a_rule_test_case() {
        let dir = tempfile::tempdir().unwrap();
        let rules = "[users]\nalice = \"usr_alice\"\nbob = \"usr_bob\"\n\
                     [availability]\nalice = { away = [\"2026-12-16/2026-12-18\"] }\n\
                     [[cover]]\nuser = \"alice\"\nby = \"bob\"\n\
                     [[rule]]\nname = \"vip\"\nwhen = { event = \"tag_added\", tag = \"vip\" }\nthen = { add = [\"alice\"] }\n";
        std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
        let rules = RuleSet::load_dir(dir.path()).unwrap();
        let vip = |id: &str, contact: &str| {
            format!(r#"{{"id":"{id}","type":"tag_added","location_id":"loc-1","contact_id":"{contact}","tag":"vip"}}"#)
        };
        // Monday alice gets c-1 and c-2 (where a person made bob follow); Wednesday she is away and bob covers
        // c-1; Thursday she gets c-3, which bob covers too; Saturday she is back: bob leaves c-1 and c-3, and
        // stays on c-2, a person's follower.
        let case = format!(
            "[[case]]\nname = \"week\"\nat = \"2026-12-14T09:00:00Z\"\npayload = '{}'\nexpect = [\"add usr_alice\"]\n\
             following = {{ \"c-2\" = [\"usr_bob\"] }}\n\
             [[case.then]]\nat = \"2026-12-14T10:00:00Z\"\npayload = '{}'\nexpect = [\"add usr_alice\"]\n\
             [[case.then]]\nat = \"2026-12-16T09:00:00Z\"\nexpect = [\"c-1: add usr_bob\"]\n\
             [[case.then]]\nat = \"2026-12-17T09:00:00Z\"\npayload = '{}'\nexpect = [\"add usr_alice\"]\n\
             [[case.then]]\nat = \"2026-12-17T09:15:00Z\"\nexpect = [\"c-3: add usr_bob\"]\n\
             [[case.then]]\nat = \"2026-12-19T09:00:00Z\"\nexpect = [\"c-1: remove usr_bob\", \"c-3: remove usr_bob\"]\n",
            vip("e1", "c-1"),
            vip("e2", "c-2"),
            vip("e3", "c-3"),
        );
        let file = dir.path().join("week.toml");
        std::fs::write(&file, case).unwrap();
        let cases = load_cases(&[file]).unwrap();
        let lines = run_case(&cases[0], &rules).await.unwrap();
        let outcome = compare(&cases[0], &lines);
        assert!(outcome.passed, "{outcome}");
        // A wrong expectation fails, with the step in the diff.
        let mut wrong = cases[0].clone();
        let last = wrong.expect.len() - 1;
        wrong.expect[last] = "c-2: remove usr_bob".to_owned();
        let failed = compare(&wrong, &lines);
        assert!(!failed.passed && failed.diff.contains("+ c-3: remove usr_bob"), "{failed}");
    }
}
