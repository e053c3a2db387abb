//! Rule test cases: how case files are read and judged, and the shipped cases run through the server's own
//! intake path, as `followd rules test` runs them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::valid;
use crate::domain::clock::now_ms;
use crate::event::{EventId, LocationId, Observation};
use crate::intake::{Names, occurrences, plan};
use crate::queue::{ContactKey, ContactMemory, EmbeddedQueue};
use crate::rules::{Action, Case, CaseOutcome, OpLines, RuleSet, compare, load_cases};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

/// Runs one case the way the `rules test` command does: the payload through its format, resolved against a
/// fresh throwaway store (seeded with `known_tags`), planned with the rules, written as operation lines.
/// Also returns the names of the rules that fired.
async fn run(case: &Case, rules: &RuleSet) -> (CaseOutcome, Vec<String>) {
    let parsed = match case.format.parse(&case.payload) {
        Ok(parsed) => parsed,
        Err(error) => return (CaseOutcome::failed(case, &format!("the payload does not parse: {error}")), vec![]),
    };
    let scratch = tempfile::tempdir().unwrap();
    let store = EmbeddedQueue::open(scratch.path(), Duration::from_secs(60), Duration::from_secs(60)).unwrap();
    let now = now_ms();
    if let Some(known) = &case.known_tags {
        let seed = EventId::parse("rules-test-known-tags").unwrap();
        for observation in &parsed.observations {
            if let Observation::Tags { location_id, contact_id, .. } = observation {
                let contact = ContactKey { location_id: location_id.clone(), contact_id: contact_id.clone() };
                store.diff_tags(&contact, &seed, Some(known), None, now).await.unwrap();
            }
        }
    }
    let occurrences = match occurrences(&store, parsed, now, &Names::new()).await {
        Ok(occurrences) => occurrences,
        Err(error) => return (CaseOutcome::failed(case, &error), vec![]),
    };
    let mut lines = OpLines::default();
    let mut fired = Vec::new();
    for event in plan(&occurrences, rules, Default::default()) {
        for planned in &event.ops {
            lines.push_for(&event.contact, &planned.action);
            fired.push(planned.rule.to_string());
        }
    }
    (compare(case, &lines.into_lines()), fired)
}

#[tokio::test]
async fn the_shipped_rule_cases_pass_and_cover_every_enabled_rule() {
    let rules = RuleSet::load_dir(&shipped()).unwrap();
    let cases = load_cases(&[shipped().join("tests")]).unwrap_or_else(|error| panic!("{error}"));
    let mut failed = Vec::new();
    let mut fired = std::collections::BTreeSet::new();
    for case in &cases {
        let (outcome, rules_fired) = run(case, &rules).await;
        if !outcome.passed {
            failed.push(outcome.to_string());
        }
        fired.extend(rules_fired);
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    let enabled: std::collections::BTreeSet<String> = enabled_rules(&rules).into_iter().collect();
    assert_eq!(fired, enabled, "every enabled shipped rule fires in some case");
}

/// The names of the enabled rules of a set, read through `explain` (it lists every rule of a kind).
fn enabled_rules(rules: &RuleSet) -> Vec<String> {
    use crate::event::EventKind;
    let kinds = [
        EventKind::TagAdded { tag: String::new() },
        EventKind::TagRemoved { tag: String::new() },
        EventKind::ContactCreated { source: None },
        EventKind::StageChanged {
            pipeline: String::new(),
            stage: String::new(),
            from_stage: None,
            names: None,
            opportunity_id: None,
            assigned_to: None,
        },
        EventKind::AssignedChanged {
            record: crate::event::Record::Contact,
            assigned_to: None,
            from: None,
            opportunity_id: None,
        },
    ];
    kinds
        .into_iter()
        .flat_map(|kind| rules.explain(&super::event(kind)))
        .filter(|c| c.outcome != crate::rules::Outcome::Skipped("disabled".into()))
        .map(|c| c.rule.to_string())
        .collect()
}

/// Writes case files into a fresh directory.
fn case_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn load_errors(dir: &Path) -> Vec<String> {
    match load_cases(&[dir.to_path_buf()]) {
        Ok(cases) => panic!("expected errors, got {} cases", cases.len()),
        Err(error) => {
            let prefix = format!("{}/", dir.display());
            error.diagnostics.iter().map(|d| d.to_string().replace(&prefix, "")).collect()
        }
    }
}

#[test]
fn every_problem_in_case_files_is_reported_at_its_place() {
    let a = r#"[[case]]
name = "one"
source_formt = "ghl"
payload = "{}"
expect = []

[[case]]
name = "two"
source_format = "ghl-workflw"
expect = ["add", "follow usr_1", "remove_all"]
"#;
    let b = "[[case]]\nname = \"one\"\npayload = \"{}\"\npayload_file = \"x.json\"\nexpect = []\n\n[[cases]]\n";
    let dir = case_dir(&[("a.toml", a), ("b.toml", b)]);
    assert_eq!(
        load_errors(dir.path()),
        [
            "a.toml:3:1: unknown key `source_formt` in `case`; did you mean `source_format`? valid keys: name, \
             source_format, payload, payload_file, known_tags, expect, at, picked_today, picked_this_week, following, then",
            "a.toml:9:17: unknown value `ghl-workflw` in `case`; did you mean `ghl-workflow`? expected one of: \
             generic, ghl, ghl-workflow",
            "b.toml:4:16: a case has either `payload` or `payload_file`, not both",
            "b.toml:7:3: unknown key `cases`; did you mean `case`? a case file holds [[case]] tables",
        ]
    );
}

#[test]
fn a_case_needs_one_readable_payload_and_operations_followd_can_queue() {
    let a = "[[case]]\nname = \"one\"\nexpect = [\"add\", \"follow usr_1\", \"remove  usr_2\"]\n\n\
             [[case]]\nname = \"two\"\npayload_file = \"missing.json\"\nexpect = []\n";
    let dir = case_dir(&[("a.toml", a)]);
    let found = load_errors(dir.path());
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].starts_with("a.toml:1:1: this case has no payload;"), "{}", found[0]);
    assert_eq!(
        found[1],
        "a.toml:3:11: `add` is not an operation; write \"add <user id>\", \"remove <user id>\", \"remove_all\" or \"dead_letter\" (a round robin's turn set aside: every member at their cap)"
    );
    assert!(found[2].starts_with("a.toml:3:18: `follow usr_1` is not an operation"), "{}", found[2]);
    assert!(found[3].starts_with("a.toml:7:16: cannot read payload_file "), "{}", found[3]);
}

#[test]
fn case_names_are_unique_across_files() {
    let case = |name: &str| format!("[[case]]\nname = \"{name}\"\npayload = \"{{}}\"\nexpect = []\n");
    let dir = case_dir(&[("a.toml", &case("same")), ("b.toml", &format!("{}\n{}", case("other"), case("same")))]);
    let found = load_errors(dir.path());
    assert_eq!(found, ["b.toml:7:8: case name `same` is already used at a.toml:2:8; case names must be unique"]);
}

#[test]
fn cases_load_in_file_order_with_payload_files_read_beside_them() {
    let dir = case_dir(&[
        ("b.toml", "[[case]]\nname = \"from b\"\npayload = \"{}\"\nexpect = []\n"),
        (
            "a.toml",
            "# a comment\n[[case]]\nname = \"from a\"\nsource_format = \"ghl\"\npayload_file = \"p.json\"\n\
             known_tags = [\"new lead\"]\nexpect = [\" add   usr_1 \", \"remove_all\"]\n",
        ),
        ("p.json", "{\"type\":\"x\"}"),
        (".#a.toml", "editor lock"),
    ]);
    let cases = load_cases(&[dir.path().to_path_buf()]).unwrap();
    assert_eq!(cases.len(), 2);
    let first = &cases[0];
    assert_eq!((first.name.as_str(), first.line), ("from a", 3));
    assert_eq!(first.format, crate::event::Format::Ghl);
    assert_eq!(first.payload, b"{\"type\":\"x\"}");
    assert_eq!(first.known_tags.as_deref(), Some(&["new lead".to_owned()][..]));
    assert_eq!(first.expect, ["add usr_1", "remove_all"], "lines are normalized");
    assert_eq!(cases[1].format, crate::event::Format::Generic, "generic is the default format");
    let only_b = load_cases(&[dir.path().join("b.toml")]).unwrap();
    assert_eq!(only_b.len(), 1, "a case file can be named directly");
}

fn case(expect: &[&str]) -> Case {
    Case {
        name: "c".into(),
        file: "rules/tests/c.toml".into(),
        line: 2,
        format: crate::event::Format::Generic,
        payload: Vec::new(),
        known_tags: None,
        expect: expect.iter().map(|line| (*line).to_owned()).collect(),
        at: None,
        picked_today: Default::default(),
        picked_this_week: Default::default(),
        following: Default::default(),
        steps: Vec::new(),
    }
}

#[test]
fn a_failing_case_shows_expected_and_actual_lines_with_markers() {
    let expected = case(&["remove_all", "add usr_a", "add usr_b"]);
    let actual = ["remove_all".to_owned(), "add usr_c".to_owned(), "add  usr_b".to_owned()];
    let outcome = compare(&expected, &actual);
    assert!(!outcome.passed);
    assert_eq!(
        outcome.to_string(),
        "FAIL  c (rules/tests/c.toml:2)\n      expected (-) and actual (+) operations:\n        remove_all\n      \
         - add usr_a\n      + add usr_c\n        add usr_b"
    );
    let passing = compare(&expected, &["remove_all".into(), "add usr_a".into(), "add usr_b".into()]);
    assert!(passing.passed && passing.diff.is_empty());
    assert_eq!(passing.to_string(), "ok    c");
    assert!(!compare(&case(&[]), &["add usr_a".into()]).passed, "an unexpected operation fails the case");
}

#[test]
fn round_robin_reads_as_the_picks_of_a_fresh_store() {
    let users = "[users]\nteam = [\"usr_1\", \"usr_2\"]\nsolo = \"usr_9\"\n";
    let rules = "[[rule]]\nname = \"rr\"\nwhen = { event = \"contact_created\" }\n\
                 then = { remove_all = true, remove = [\"solo\"], round_robin = \"team\" }\n";
    let set = valid(&[("u.toml", users), ("r.toml", rules)]);
    let event = super::event(crate::event::EventKind::ContactCreated { source: None });
    let actions: Vec<Action> = set.evaluate(&event).remove(0).actions;
    let (here, there) = (LocationId::parse("loc_1").unwrap(), LocationId::parse("loc_2").unwrap());
    let mut lines = OpLines::default();
    for location in [&here, &here, &there, &here] {
        for action in &actions {
            lines.push(location, action);
        }
    }
    let picks: Vec<String> = lines.into_lines().into_iter().filter(|l| l.starts_with("add")).collect();
    assert_eq!(picks, ["add usr_1", "add usr_2", "add usr_1", "add usr_1"], "each location rotates on its own");
}

#[test]
fn a_case_s_time_decides_who_is_away_and_a_bad_time_is_reported_at_its_place() {
    // usr_1 (alias `one`) is away on Christmas Eve.
    let text = "[users]\none = \"usr_1\"\ntwo = \"usr_2\"\nteam = [\"one\", \"two\"]\n\
                [availability]\none = { away = [\"2026-12-24\"] }\n\
                [[rule]]\nname = \"rr\"\nwhen = { event = \"contact_created\" }\nthen = { round_robin = \"team\" }\n";
    let set = valid(&[("r.toml", text)]);
    let actions =
        set.evaluate(&super::event(crate::event::EventKind::ContactCreated { source: None })).remove(0).actions;
    let location = LocationId::parse("loc_1").unwrap();
    let first_pick = |at| {
        let mut lines = OpLines::at(at);
        lines.push(&location, &actions[0]);
        lines.into_lines()
    };
    assert_eq!(first_pick(1_798_070_400_000), ["add usr_2"], "on 2026-12-24 usr_1 is away");
    assert_eq!(first_pick(1_798_156_800_000), ["add usr_1"], "on 2026-12-25 usr_1 is back");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.toml");
    std::fs::write(&file, "[[case]]\nname = \"x\"\npayload = '{}'\nexpect = []\nat = \"Christmas\"\n").unwrap();
    let error = load_cases(&[file]).unwrap_err().to_string();
    assert!(error.contains("cases.toml:5:6: `Christmas` is not a time; write RFC 3339"), "{error}");
    let file = dir.path().join("good.toml");
    std::fs::write(&file, "[[case]]\nname = \"y\"\npayload = '{}'\nexpect = []\nat = \"2026-12-24T10:00:00Z\"\n")
        .unwrap();
    assert_eq!(load_cases(&[file]).unwrap()[0].at, Some(1_798_106_400_000));
}

#[test]
fn a_case_s_picks_already_made_count_toward_the_caps() {
    let text = "[users]\none = \"usr_1\"\ntwo = \"usr_2\"\nteam = [\"one\", \"two\"]\n\
                [[rule]]\nname = \"rr\"\nwhen = { event = \"contact_created\" }\n\
                then = { round_robin = \"team\", max_per_day = 3, max_per_week = 10 }\n";
    let set = valid(&[("r.toml", text)]);
    let actions =
        set.evaluate(&super::event(crate::event::EventKind::ContactCreated { source: None })).remove(0).actions;
    let location = LocationId::parse("loc_1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.toml");
    let cases = "[[case]]\nname = \"one capped\"\npayload = '{}'\nexpect = [\"add usr_2\"]\n\
                 picked_today = { usr_1 = 3 }\n\
                 [[case]]\nname = \"both capped\"\npayload = '{}'\nexpect = [\"dead_letter\"]\n\
                 picked_today = { usr_1 = 3 }\npicked_this_week = { usr_2 = 10 }\n\
                 [[case]]\nname = \"bad\"\npayload = '{}'\nexpect = []\npicked_today = { \"\" = 3 }\n";
    std::fs::write(&file, cases).unwrap();
    let error = load_cases(std::slice::from_ref(&file)).unwrap_err().to_string();
    assert!(error.contains("cases.toml:16:18: the user id `` is empty"), "{error}");
    std::fs::write(&file, cases.split("[[case]]\nname = \"bad\"").next().unwrap()).unwrap();
    for case in load_cases(&[file]).unwrap() {
        let mut lines = OpLines::for_case(&case, 1_798_070_400_000);
        lines.push(&location, &actions[0]);
        assert_eq!(lines.into_lines(), case.expect, "{}", case.name);
    }
}
