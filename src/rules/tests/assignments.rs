//! `assigned_changed`, `@assigned` / `@previously_assigned` and `target = "opportunity"`: what compiles, what is
//! refused where, and what an assignment event fires.

use super::{USERS, errors, event, fired, user, valid};
use crate::event::{EventKind, Record};
use crate::rules::{Action, Target};

fn assigned(record: Record, to: Option<&str>, from: Option<&str>) -> crate::event::Event {
    let opportunity_id = (record == Record::Opportunity).then(|| "opp-1".to_owned());
    event(EventKind::AssignedChanged { record, assigned_to: to.map(user), from: from.map(user), opportunity_id })
}

const HANDOVER: &str = r#"
[[rule]]
name = "the assignee follows, the previous one stops"
when = { event = "assigned_changed", record = "contact" }
then = { add = ["@assigned"], remove = ["@previously_assigned"] }

[[rule]]
name = "a deal's manager follows it"
target = "opportunity"
when = { event = "assigned_changed", record = "opportunity" }
then = { add = ["carol", "@assigned"] }
"#;

#[test]
fn an_assignment_resolves_the_assignee_and_the_previous_one_for_that_event() {
    let set = valid(&[("a.toml", USERS), ("b.toml", HANDOVER)]);
    let matches = set.evaluate(&assigned(Record::Contact, Some("usr_bob"), Some("usr_alice")));
    assert_eq!(matches.len(), 1);
    assert_eq!(matches[0].actions, [Action::Remove(user("usr_alice")), Action::Add(user("usr_bob"))]);
    assert_eq!(matches[0].target, Target::Contact);
    let unassigned = set.evaluate(&assigned(Record::Contact, None, Some("usr_bob")));
    assert_eq!(unassigned[0].actions, [Action::Remove(user("usr_bob"))], "nobody to add");
    let deal = set.evaluate(&assigned(Record::Opportunity, Some("usr_carol"), None));
    assert_eq!(fired(&set, &assigned(Record::Opportunity, Some("usr_carol"), None)), ["a deal's manager follows it"]);
    assert_eq!(deal[0].actions, [Action::Add(user("usr_carol"))], "carol named twice is added once");
    assert_eq!(deal[0].target, Target::Opportunity);
    assert!(set.addable_users().iter().all(|a| a.users.iter().all(|u| !u.as_str().starts_with('@'))));
}

#[test]
fn stand_ins_targets_and_records_are_refused_where_they_mean_nothing() {
    let rule = |head: &str, when: &str, then: &str| {
        format!("[[rule]]\nname = \"r\"\n{head}when = {{ {when} }}\nthen = {{ {then} }}\n")
    };
    let cases = [
        (rule("", r#"event = "tag_added", tag = "vip""#, r#"add = ["@assigned"]"#), "`@assigned` needs an event"),
        (
            rule("", r#"event = "stage_changed", stage = "won""#, r#"remove = ["@previously_assigned"]"#),
            "`@previously_assigned` is known only on assigned_changed",
        ),
        (rule("", r#"event = "assigned_changed""#, r#"add = ["@asigned"]"#), "did you mean `@assigned`"),
        (rule("", r#"event = "assigned_changed", record = "deal""#, r#"add = ["alice"]"#), "record = \"deal\""),
        (
            rule("target = \"opportunity\"\n", r#"event = "tag_added", tag = "vip""#, r#"add = ["alice"]"#),
            "target = \"opportunity\" changes the followers of the event's opportunity",
        ),
        (
            rule("target = \"opportunity\"\n", r#"event = "assigned_changed""#, r#"add = ["alice"]"#),
            "with record = \"opportunity\"",
        ),
        (
            rule(
                "target = \"opportunity\"\nskip_if_following = \"sales\"\n",
                r#"event = "stage_changed", stage = "won""#,
                r#"add = ["alice"]"#,
            ),
            "skip_if_following reads a contact's followers",
        ),
        (rule("", r#"event = "assigned_changed""#, r#"round_robin = "@assigned""#), "unknown alias `@assigned`"),
    ];
    for (text, wanted) in cases {
        let found = errors(&[("a.toml", USERS), ("b.toml", &text)]);
        assert!(found.iter().any(|e| e.contains(wanted) && e.starts_with("b.toml:")), "{wanted}: {found:?}\n{text}");
    }
    let stage = rule("target = \"opportunity\"\n", r#"event = "stage_changed", stage = "won""#, r#"remove_all = true"#);
    valid(&[("a.toml", USERS), ("b.toml", &stage)]);
}
