//! What `explain` says about each rule of an event's kind, and that it never disagrees with `evaluate`.

use proptest::prelude::*;

use super::{USERS, event, event_at, tag_added, user, valid};
use crate::event::EventKind;
use crate::rules::{Action, Consideration, Outcome, RuleSet};

fn lines(set: &RuleSet, event: &crate::event::Event) -> Vec<String> {
    set.explain(event).iter().map(ToString::to_string).collect()
}

#[test]
fn explain_lists_every_rule_of_the_event_kind_with_why_it_did_not_fire() {
    let rules = r#"
[[rule]]
name = "vip"
when = { event = "tag_added", tag = "vip" }
then = { add = ["sales"] }

[[rule]]
name = "gold"
when = { event = "tag_added", tag = "Gold" }
then = { add = ["bob"] }

[[rule]]
name = "vip-elsewhere"
locations = ["loc_2"]
when = { event = "tag_added", tag = "vip" }
then = { add = ["carol"] }

[[rule]]
name = "off"
enabled = false
when = { event = "tag_added", tag = "vip" }
then = { remove_all = true }

[[rule]]
name = "vip-removed"
when = { event = "tag_removed", tag = "vip" }
then = { remove = ["alice"] }
"#;
    let set = valid(&[("users.toml", USERS), ("rules.toml", rules)]);
    let considered = set.explain(&event_at("loc_1", EventKind::TagAdded { tag: "VIP".into() }));
    assert_eq!(
        considered[0],
        Consideration {
            rule: "vip".into(),
            outcome: Outcome::Fired(vec![Action::Add(user("usr_alice")), Action::Add(user("usr_bob"))]),
            lasts: None,
            skip_if_following: None,
        }
    );
    assert_eq!(
        lines(&set, &tag_added("VIP")),
        [
            "rule `vip` fires: add usr_alice, add usr_bob",
            "rule `gold` skipped: tag is `gold`, the event's tag is `VIP`",
            "rule `vip-elsewhere` skipped: location loc_1 is not in locations (loc_2)",
            "rule `off` skipped: disabled",
        ],
        "rules of other event kinds are left out"
    );
}

#[test]
fn explain_names_every_condition_a_stage_change_fails() {
    let rules = r#"
[[rule]]
name = "reopened"
when = { event = "stage_changed", pipeline = "Sales", from_stage = "Negotiation", stage = "Qualified" }
then = { round_robin = "sales" }
"#;
    let set = valid(&[("users.toml", USERS), ("rules.toml", rules)]);
    let stage = |pipeline: &str, stage: &str, from: Option<&str>| {
        event(EventKind::StageChanged {
            pipeline: pipeline.into(),
            stage: stage.into(),
            from_stage: from.map(Into::into),
            names: None,
            opportunity_id: None,
            assigned_to: None,
        })
    };
    assert_eq!(
        lines(&set, &stage("Renewals", "Won", None)),
        [
            "rule `reopened` skipped: pipeline is `sales`, the event's pipeline is `Renewals`; stage is `qualified`, the \
          event's stage is `Won`; from_stage is `negotiation`, the event does not say which stage it left"
        ]
    );
    assert_eq!(
        lines(&set, &stage("sales", "Qualified", Some("Demo"))),
        ["rule `reopened` skipped: from_stage is `negotiation`, the event's from_stage is `Demo`"]
    );
    assert_eq!(
        lines(&set, &stage("sales", "qualified", Some("negotiation"))),
        ["rule `reopened` fires: round_robin [usr_alice, usr_bob]"]
    );
}

#[test]
fn explain_says_when_the_event_lacks_the_value_a_rule_needs() {
    let rules = r#"
[[rule]]
name = "referrals"
when = { event = "contact_created", source = "Referral" }
then = { add = ["alice"] }
"#;
    let set = valid(&[("users.toml", USERS), ("rules.toml", rules)]);
    assert_eq!(
        lines(&set, &event(EventKind::ContactCreated { source: None })),
        ["rule `referrals` skipped: source is `referral`, the event has no source"]
    );
}

/// One generated rule: its `when` fields (indices into small alphabets, so events often match) and state.
#[derive(Debug, Clone)]
struct RuleSpec {
    kind: usize,
    key: Option<usize>,
    pipeline: Option<usize>,
    from_stage: Option<usize>,
    locations: Option<Vec<usize>>,
    enabled: bool,
}

const KINDS: [&str; 4] = ["tag_added", "tag_removed", "contact_created", "stage_changed"];
/// Values as rules write them; events use other spellings of the same words (see `spelled`).
const WORDS: [&str; 3] = ["vip", "Closed Won", "ads"];

fn spelled(word: usize, variant: usize) -> String {
    let word = WORDS[word % WORDS.len()];
    match variant % 3 {
        0 => word.to_owned(),
        1 => word.to_uppercase(),
        _ => format!("  {word} "),
    }
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    let word = proptest::option::of(0..WORDS.len());
    let locations = proptest::option::of(proptest::collection::vec(1..4usize, 1..3));
    (0..4usize, word.clone(), word.clone(), word, locations, proptest::bool::weighted(0.8)).prop_map(
        |(kind, key, pipeline, from_stage, locations, enabled)| RuleSpec {
            kind,
            // Tag rules need a tag; only stage rules may test pipeline and previous stage.
            key: if kind < 2 { Some(key.unwrap_or(0)) } else { key },
            pipeline: pipeline.filter(|_| kind == 3),
            from_stage: from_stage.filter(|_| kind == 3),
            locations,
            enabled,
        },
    )
}

fn rule_text(n: usize, spec: &RuleSpec) -> String {
    let mut when = format!("event = \"{}\"", KINDS[spec.kind]);
    let key_name = ["tag", "tag", "source", "stage"][spec.kind];
    for (name, value) in [(key_name, spec.key), ("pipeline", spec.pipeline), ("from_stage", spec.from_stage)] {
        if let Some(value) = value {
            when.push_str(&format!(", {name} = \"{}\"", WORDS[value]));
        }
    }
    let locations = spec.locations.as_ref().map_or_else(String::new, |locations| {
        let ids: Vec<String> = locations.iter().map(|l| format!("\"loc_{l}\"")).collect();
        format!("locations = [{}]\n", ids.join(", "))
    });
    format!(
        "[[rule]]\nname = \"r{n}\"\nenabled = {}\n{locations}when = {{ {when} }}\nthen = {{ add = [\"u{n}\"] }}\n",
        spec.enabled
    )
}

fn event_kind() -> impl Strategy<Value = EventKind> {
    let word = (0..WORDS.len(), 0..3usize).prop_map(|(word, variant)| spelled(word, variant));
    prop_oneof![
        word.clone().prop_map(|tag| EventKind::TagAdded { tag }),
        word.clone().prop_map(|tag| EventKind::TagRemoved { tag }),
        proptest::option::of(word.clone()).prop_map(|source| EventKind::ContactCreated { source }),
        (word.clone(), word.clone(), proptest::option::of(word)).prop_map(|(pipeline, stage, from_stage)| {
            EventKind::StageChanged {
                pipeline,
                stage,
                from_stage,
                names: None,
                opportunity_id: None,
                assigned_to: None,
            }
        }),
    ]
}

proptest! {
    /// The rules explain shows as fired are evaluate's matches, same actions, same order; and explain shows
    /// every rule of the event's kind exactly once.
    #[test]
    fn explain_agrees_with_evaluate(
        specs in proptest::collection::vec(rule_spec(), 1..25),
        events in proptest::collection::vec((1..4usize, event_kind()), 1..10),
    ) {
        let text: String = specs.iter().enumerate().map(|(n, spec)| rule_text(n, spec)).collect();
        let users: String = (0..specs.len()).map(|n| format!("u{n} = \"usr_{n}\"\n")).collect();
        let set = valid(&[("users.toml", &format!("[users]\n{users}")), ("rules.toml", &text)]);
        for (location, kind) in events {
            let event = event_at(&format!("loc_{location}"), kind);
            let considered = set.explain(&event);
            let fired: Vec<(String, Vec<Action>)> = considered
                .iter()
                .filter_map(|c| match &c.outcome {
                    Outcome::Fired(actions) => Some((c.rule.to_string(), actions.clone())),
                    Outcome::Skipped(_) => None,
                })
                .collect();
            let matched: Vec<(String, Vec<Action>)> =
                set.evaluate(&event).into_iter().map(|m| (m.rule.to_string(), m.actions)).collect();
            prop_assert_eq!(fired, matched);
            let kind = KINDS.iter().position(|k| *k == event.kind.name()).unwrap_or(usize::MAX);
            prop_assert_eq!(considered.len(), specs.iter().filter(|spec| spec.kind == kind).count());
        }
    }
}
