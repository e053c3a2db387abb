//! What a wrong rule set reports: every problem, each at `file:line:column`, each saying how to fix it.

use super::{USERS, errors, valid};

/// A valid rule around `when` and `then`, so one test changes one thing.
fn rule(name: &str, when: &str, then: &str) -> String {
    format!("[[rule]]\nname = \"{name}\"\nwhen = {when}\nthen = {then}\n")
}

const TAG_VIP: &str = r#"{ event = "tag_added", tag = "vip" }"#;

#[test]
fn an_unknown_alias_is_reported_with_file_line_and_column() {
    let rules = rule("vip", TAG_VIP, r#"{ add = ["alice", "alce"] }"#);
    assert_eq!(
        errors(&[("rules/users.toml", USERS), ("rules/vip.toml", &rules)]),
        ["rules/vip.toml:4:26: unknown alias `alce` in `add`; did you mean `alice`? names in add, remove and \
          round_robin must be aliases defined under [users] (known: alice, bob, carol, everyone, nobody, sales)"]
    );
}

#[test]
fn an_unknown_key_names_the_nearest_valid_key() {
    let rules = rule("vip", r#"{ event = "tag_added", tga = "vip" }"#, r#"{ add = ["alice"] }"#);
    assert_eq!(
        errors(&[("a.toml", USERS), ("b.toml", &rules)]),
        ["b.toml:3:31: unknown key `tga` in `when`; did you mean `tag`? valid keys: event, tag, source, pipeline, \
          stage, from_stage, record"]
    );
    let rules = "[[rule]]\nnme = \"x\"\nwhen = { event = \"tag_added\", tag = \"x\" }\nthen = { remove_all = true }\n";
    let found = errors(&[("a.toml", rules)]);
    assert_eq!(
        found,
        ["a.toml:2:1: unknown key `nme` in `rule`; did you mean `name`? valid keys: name, enabled, locations, \
             ownership, skip_if_following, target, when, then"]
    );
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let users = "[users]\nalice = \"usr_alice\"\nteam = [\"alice\", \"\"]\n";
    let broken = "[[rule]]\nname = \"broken\"\nwhen = { event = \"tag_added\" tag = \"x\" }\n";
    let rules = [
        rule("first", TAG_VIP, r#"{ add = ["alise"] }"#),
        rule("first", r#"{ event = "tag_added" }"#, "{ }"),
        rule("third", r#"{ event = "contact_created", tag = "x" }"#, r#"{ round_robin = "bob" }"#),
        "[[rule]]\nname = \"fourth\"\nwhen = { evnt = \"tag_added\" }\nthen = { ad = [\"alice\"] }\n".to_owned(),
    ]
    .concat();
    let found = errors(&[("rules/users.toml", users), ("rules/broken.toml", broken), ("rules/main.toml", &rules)]);
    let expected = [
        "rules/broken.toml:3:30: invalid TOML: missing comma between key-value pairs",
        "rules/main.toml:4:17: unknown alias `alise` in `add`; did you mean `alice`?",
        "rules/main.toml:6:8: rule name `first` is already used at rules/main.toml:2:8;",
        "rules/main.toml:7:8: tag_added needs a `tag`",
        "rules/main.toml:8:8: `then` does nothing;",
        "rules/main.toml:11:43: `tag` is not a condition of contact_created events; contact_created takes: source",
        "rules/main.toml:12:24: unknown alias `bob` in `round_robin`",
        "rules/main.toml:15:10: unknown key `evnt` in `when`; did you mean `event`?",
        "rules/main.toml:16:10: unknown key `ad` in `then`; did you mean `add`?",
        "rules/users.toml:3:18: a member of team `team` is empty; write an alias or a user id",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (found, expected) in found.iter().zip(expected) {
        assert!(found.starts_with(expected), "expected `{expected}...`, found `{found}`");
    }
    assert!(found[6].ends_with("rules/broken.toml could not be read or parsed, so aliases defined there are missing)"));
}

#[test]
fn a_syntax_error_points_at_its_place() {
    let found = errors(&[("a.toml", "[users]\nalice = \"usr_1\"\nalice = \"usr_2\"\n")]);
    assert_eq!(found, ["a.toml:3:1: duplicate key `alice`; a key (and so an alias) may appear only once in a table"]);
    let found = errors(&[("a.toml", "[[rule]\nname = \"x\"\n")]);
    assert_eq!(found, ["a.toml:1:8: invalid TOML: unclosed array table, expected `]`"]);
}

#[test]
fn the_same_alias_in_two_files_is_reported_at_the_second() {
    let found = errors(&[
        ("b.toml", "[users]\nalice = \"usr_2\"\n"),
        ("a.toml", "[users]\nbob = \"usr_3\"\nalice = \"usr_1\"\n"),
    ]);
    assert_eq!(
        found,
        ["b.toml:2:1: alias `alice` is already defined at a.toml:3:1; aliases are global across files, so rename or \
          remove one"]
    );
}

#[test]
fn an_alias_cycle_is_reported_once_at_the_member_that_closes_it() {
    let users = "[users]\na = [\"b\", \"usr_1\"]\nb = [\"c\"]\nc = [\"a\"]\nme = [\"me\"]\nouter = [\"a\"]\n";
    assert_eq!(
        errors(&[("u.toml", users)]),
        [
            "u.toml:4:6: alias cycle `a` -> `b` -> `c` -> `a`: a team cannot contain itself; remove `a` from `c`",
            "u.toml:5:7: alias cycle `me` -> `me`: a team cannot contain itself; remove `me` from `me`",
        ]
    );
}

#[test]
fn a_single_alias_that_names_another_alias_is_rejected() {
    let found = errors(&[("u.toml", "[users]\nalice = \"usr_1\"\nlead = \"alice\"\n")]);
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("u.toml:3:8: alias `lead` = \"alice\" names another alias"), "{found:?}");
    assert!(found[0].contains(r#"write lead = ["alice"] for a team of one"#), "{found:?}");
}

#[test]
fn an_empty_team_cannot_be_used_for_round_robin() {
    let rules = rule("rr", TAG_VIP, r#"{ round_robin = "nobody" }"#);
    assert_eq!(
        errors(&[("a.toml", USERS), ("b.toml", &rules)]),
        ["b.toml:4:24: team `nobody` is empty, so round_robin has no one to pick; add users to it"]
    );
}

#[test]
fn a_condition_the_event_kind_cannot_have_is_rejected() {
    let when = r#"{ event = "stage_changed", stage = "Won", tag = "vip", source = "ads" }"#;
    let found = errors(&[("a.toml", USERS), ("b.toml", &rule("r", when, r#"{ add = ["alice"] }"#))]);
    assert_eq!(
        found,
        [
            "b.toml:3:56: `tag` is not a condition of stage_changed events; stage_changed takes: pipeline, stage, \
             from_stage",
            "b.toml:3:72: `source` is not a condition of stage_changed events; stage_changed takes: pipeline, stage, \
             from_stage",
        ]
    );
}

#[test]
fn an_unknown_event_kind_suggests_the_nearest() {
    let found = errors(&[("a.toml", &rule("r", r#"{ event = "tag_add", tag = "x" }"#, "{ remove_all = true }"))]);
    assert_eq!(
        found,
        ["a.toml:3:18: unknown event `tag_add`; did you mean `tag_added`? `event` is one of: tag_added, tag_removed, \
          contact_created, stage_changed, assigned_changed"]
    );
}

#[test]
fn a_rule_without_when_or_then_is_reported_at_its_header() {
    let found = errors(&[("a.toml", "[[rule]]\nname = \"r\"\n")]);
    assert_eq!(
        found,
        [
            r#"a.toml:1:1: this rule has no `when`; add e.g. when = { event = "tag_added", tag = "vip" }"#,
            r#"a.toml:1:1: this rule has no `then`; add e.g. then = { add = ["alice"] }"#,
        ]
    );
}

#[test]
fn a_rule_may_not_add_more_than_ten_followers() {
    let users = r#"[users]
ten = ["u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9", "u10"]
rr = ["u11"]
"#;
    valid(&[("a.toml", users), ("b.toml", &rule("ten", TAG_VIP, r#"{ add = ["ten", "ten"] }"#))]);
    let found =
        errors(&[("a.toml", users), ("b.toml", &rule("eleven", TAG_VIP, r#"{ add = ["ten"], round_robin = "rr" }"#))]);
    assert_eq!(
        found,
        ["b.toml:4:16: this rule adds 11 followers (one of them from round_robin); the CRM allows at most 10 per \
          contact, so split the rule or use round_robin"]
    );
}

#[test]
fn an_empty_rule_name_and_empty_values_are_rejected() {
    let found = errors(&[("a.toml", &rule(" ", r#"{ event = "tag_added", tag = " " }"#, "{ remove_all = true }"))]);
    assert_eq!(
        found,
        [
            "a.toml:2:8: rule name is empty; give every rule a unique name",
            "a.toml:3:37: `tag` is empty; write the value to match, or remove `tag` to match any",
        ]
    );
    let scoped = "[[rule]]\nname = \"r\"\nlocations = []\n\
                  when = { event = \"contact_created\" }\nthen = { remove_all = true }\n";
    let found = errors(&[("a.toml", scoped)]);
    assert_eq!(found.len(), 1);
    assert!(found[0].starts_with("a.toml:3:13: `locations` is empty, so this rule could never fire"), "{found:?}");
}

#[test]
fn misplaced_tables_and_wrong_types_say_what_to_write() {
    let found = errors(&[("a.toml", "[rules]\nx = 1\n[users]\nalice = 3\n")]);
    assert_eq!(
        found,
        [
            "a.toml:1:2: unknown key `rules`; did you mean `rule`? a rule file holds a [users] table, [[rule]] \
             tables, an [availability] table and [[cover]] tables",
            r#"a.toml:4:9: alias `alice` is a integer; write a user id ("usr_...") or a list of aliases and user ids"#,
        ]
    );
    let found = errors(&[(
        "a.toml",
        "[[rule]]\nname = \"r\"\nenabled = \"no\"\nwhen = \"tag_added\"\nthen = { add = \"alice\" }\n",
    )]);
    assert_eq!(
        found,
        [
            r#"a.toml:3:11: invalid type: string "no", expected a boolean"#,
            r#"a.toml:4:8: `when` must be a table, e.g. when = { event = "tag_added", tag = "vip" }"#,
            r#"a.toml:5:16: invalid type: string "alice", expected a list"#,
        ]
    );
}

#[test]
fn unknown_aliases_are_reported_even_with_no_users_table() {
    let found = errors(&[("a.toml", &rule("r", TAG_VIP, r#"{ remove = ["sdr_team"] }"#))]);
    assert_eq!(
        found,
        ["a.toml:4:20: unknown alias `sdr_team` in `remove`; no aliases are defined: add one under [users], \
             e.g. sdr_team = \"usr_...\""]
    );
}

#[test]
fn a_rule_name_used_in_two_files_is_reported_at_the_second() {
    let first = rule("vip", TAG_VIP, "{ remove_all = true }");
    let second = format!(
        "{}{}",
        rule("other", TAG_VIP, "{ remove_all = true }"),
        rule(" vip ", TAG_VIP, "{ remove_all = true }")
    );
    assert_eq!(
        errors(&[("rules/b.toml", &second), ("rules/a.toml", &first)]),
        ["rules/b.toml:6:8: rule name `vip` is already used at rules/a.toml:2:8; rule names must be unique across \
          all files"]
    );
}

#[test]
fn a_then_that_does_nothing_is_rejected_however_it_is_written() {
    for then in ["{ }", "{ add = [] }", "{ remove_all = false }", "{ remove = [], add = [], remove_all = false }"] {
        let found = errors(&[("a.toml", USERS), ("b.toml", &rule("r", TAG_VIP, then))]);
        assert_eq!(
            found,
            [
                "b.toml:4:8: `then` does nothing; give it at least one of remove_all = true, remove = [...], add = [...], \
              round_robin = \"team\""
            ],
            "then = {then}"
        );
    }
}

#[test]
fn a_user_named_by_email_must_be_written_as_an_address() {
    let text = "[users]\nann = \"email:Ann@Example.com\"\nbad = \"email:not-an-address\"\n";
    let found = errors(&[("a.toml", text)]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("a.toml:3:7: alias `bad` = \"email:not-an-address\" is not an email address"),
        "{found:?}"
    );
    let rules = "[users]\nann = \"email:Ann@Example.com\"\n[[rule]]\nname = \"r\"\n\
                 when = { event = \"tag_added\", tag = \"t\" }\nthen = { add = [\"ann\"] }\n";
    let set = super::valid(&[("a.toml", rules)]);
    assert_eq!(set.users_by_email(), [super::user("email:ann@example.com")], "kept in lower case");
    let cover =
        "[users]\nann = \"email:ann@example.com\"\nbob = \"usr_bob\"\n[[cover]]\nuser = \"ann\"\nby = \"bob\"\n";
    let found = errors(&[("a.toml", cover)]);
    assert!(found[0].starts_with("a.toml:5:8: `ann` is named by email; the `user` of a [[cover]]"), "{found:?}");
    let by_email =
        "[users]\nann = \"email:ann@example.com\"\nbob = \"usr_bob\"\n[[cover]]\nuser = \"bob\"\nby = \"ann\"\n";
    super::valid(&[("a.toml", by_email)]);
}
