//! Behaviour tests for the rules module as its users see it: files in, diagnostics or matches out.
//! `validation` covers what is reported for wrong rule sets, `matching` what a valid set fires, `explain` why,
//! `live` reloading the set in service, `cases` the rule test cases; this file holds the shared helpers and
//! the tests of loading a directory.

mod assignments;
mod cases;
mod explain;
mod live;
mod matching;
mod validation;

use std::path::{Path, PathBuf};

use super::{Action, RuleSet, RulesError, Summary};
use crate::event::{ContactId, Event, EventId, EventKind, LocationId, UserId};

/// Compiles in-memory files given as (path, text).
fn compile(files: &[(&str, &str)]) -> Result<RuleSet, RulesError> {
    let files: Vec<(PathBuf, String)> =
        files.iter().map(|(path, text)| (PathBuf::from(path), (*text).to_owned())).collect();
    RuleSet::compile(&files)
}

/// Compiles what must be valid.
fn valid(files: &[(&str, &str)]) -> RuleSet {
    compile(files).unwrap_or_else(|error| panic!("expected a valid rule set, got:\n{error}"))
}

/// The diagnostics of what must be invalid, as `file:line:column: message` lines.
fn errors(files: &[(&str, &str)]) -> Vec<String> {
    match compile(files) {
        Ok(set) => panic!("expected errors, got a valid set: {}", set.summary()),
        Err(error) => error.diagnostics.iter().map(ToString::to_string).collect(),
    }
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

fn event_at(location: &str, kind: EventKind) -> Event {
    Event {
        id: EventId::parse("evt-1").unwrap(),
        location_id: LocationId::parse(location).unwrap(),
        contact_id: ContactId::parse("c-1").unwrap(),
        occurred_at: None,
        kind,
    }
}

fn event(kind: EventKind) -> Event {
    event_at("loc_1", kind)
}

fn tag_added(tag: &str) -> Event {
    event(EventKind::TagAdded { tag: tag.to_owned() })
}

/// Names of the rules `event` fires, in order.
fn fired(set: &RuleSet, event: &Event) -> Vec<String> {
    set.evaluate(event).iter().map(|found| found.rule.to_string()).collect()
}

const USERS: &str = r#"[users]
alice = "usr_alice"
bob = "usr_bob"
carol = "usr_carol"
sales = ["alice", "bob"]
everyone = ["sales", "carol", "alice"]
nobody = []
"#;

#[test]
fn the_shipped_example_rules_compile_and_show_every_feature() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let set = RuleSet::load_dir(&dir).unwrap_or_else(|error| panic!("shipped rules are invalid:\n{error}"));
    let summary = set.summary();
    assert!(summary.files >= 3 && summary.users >= 2 && summary.teams >= 1, "{summary}");
    assert!(summary.enabled < summary.rules, "one shipped rule shows `enabled = false`: {summary}");

    let events = [
        EventKind::TagAdded { tag: "VIP".into() },
        EventKind::TagRemoved { tag: "vip".into() },
        EventKind::TagAdded { tag: "do-not-contact".into() },
        EventKind::ContactCreated { source: Some("Facebook Ads".into()) },
        EventKind::StageChanged {
            pipeline: "Sales".into(),
            stage: "Closed Won".into(),
            from_stage: None,
            names: None,
            opportunity_id: None,
            assigned_to: None,
        },
    ];
    let actions: Vec<Action> =
        events.into_iter().flat_map(|kind| set.evaluate(&event(kind))).flat_map(|m| m.actions).collect();
    assert!(actions.contains(&Action::RemoveAll), "{actions:?}");
    assert!(actions.iter().any(|action| matches!(action, Action::Add(_))), "{actions:?}");
    assert!(actions.iter().any(|action| matches!(action, Action::Remove(_))), "{actions:?}");
    assert!(actions.iter().any(|action| matches!(action, Action::RoundRobin { .. })), "{actions:?}");
}

#[test]
fn a_directory_is_loaded_by_file_name_taking_only_its_toml_files() {
    let dir = tempfile::tempdir().unwrap();
    let rule = |name: &str| {
        format!(
            "[[rule]]\nname = \"{name}\"\n\
             when = {{ event = \"tag_added\", tag = \"x\" }}\nthen = {{ remove_all = true }}\n"
        )
    };
    std::fs::write(dir.path().join("b.toml"), rule("from-b")).unwrap();
    std::fs::write(dir.path().join("a.toml"), rule("from-a")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not rules").unwrap();
    std::fs::write(dir.path().join(".#a.toml"), "editor lock file = [").unwrap();
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    std::fs::write(dir.path().join("nested").join("c.toml"), rule("from-nested")).unwrap();

    let set = RuleSet::load_dir(dir.path()).unwrap();
    assert_eq!(fired(&set, &tag_added("x")), ["from-a", "from-b"]);
    assert_eq!(set.summary().files, 2);
}

#[test]
fn an_empty_directory_is_a_valid_empty_set() {
    let dir = tempfile::tempdir().unwrap();
    let set = RuleSet::load_dir(dir.path()).unwrap();
    assert_eq!(set.summary().to_string(), "0 rules (0 enabled) in 0 files, 0 users, 0 teams");
    assert!(set.evaluate(&tag_added("vip")).is_empty());
}

#[test]
fn the_summary_says_one_of_each_in_the_singular() {
    let one = Summary { rules: 1, enabled: 1, files: 1, users: 1, teams: 1 };
    assert_eq!(one.to_string(), "1 rule (1 enabled) in 1 file, 1 user, 1 team");
}

#[test]
fn a_missing_directory_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let error = RuleSet::load_dir(&missing).unwrap_err();
    assert_eq!(error.diagnostics.len(), 1);
    let shown = error.to_string();
    assert!(shown.starts_with(&format!("{}: cannot read the rules directory:", missing.display())), "{shown}");
}

#[test]
fn an_unreadable_file_is_reported_and_the_others_are_still_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.toml"), [0xff, 0xfe, b'x']).unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "[[rule]]\nname = \"\"\nwhen = { event = \"tag_added\", tag = \"x\" }\nthen = { add = [\"alice\"] }\n",
    )
    .unwrap();
    let error = RuleSet::load_dir(dir.path()).unwrap_err();
    let lines: Vec<String> = error.diagnostics.iter().map(ToString::to_string).collect();
    let a = dir.path().join("a.toml").display().to_string();
    let b = dir.path().join("b.toml").display().to_string();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].starts_with(&format!("{a}: cannot read this rule file:")), "{}", lines[0]);
    assert!(lines[1].starts_with(&format!("{b}:2:8: rule name is empty")), "{}", lines[1]);
    assert!(lines[2].starts_with(&format!("{b}:4:17: unknown alias `alice` in `add`")), "{}", lines[2]);
    assert!(
        lines[2].ends_with("a.toml could not be read or parsed, so aliases defined there are missing)"),
        "{}",
        lines[2]
    );
}

#[test]
fn a_rule_set_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<RuleSet>();
    let set = std::sync::Arc::new(valid(&[("a.toml", USERS)]));
    let clone = std::sync::Arc::clone(&set);
    std::thread::spawn(move || clone.evaluate(&tag_added("x"))).join().unwrap();
}
