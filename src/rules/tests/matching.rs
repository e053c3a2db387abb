//! What a valid rule set fires, in which order, with which actions, and at what cost.

use std::fmt::Write as _;

use super::{USERS, event, event_at, fired, tag_added, user, valid};
use crate::event::EventKind;
use crate::rules::model::Kind;
use crate::rules::{Action, Match};

fn stage(pipeline: &str, stage: &str, from: Option<&str>) -> EventKind {
    EventKind::StageChanged {
        pipeline: pipeline.into(),
        stage: stage.into(),
        from_stage: from.map(Into::into),
        names: None,
        opportunity_id: None,
        assigned_to: None,
    }
}

fn created(source: Option<&str>) -> EventKind {
    EventKind::ContactCreated { source: source.map(Into::into) }
}

/// A file of rules, one per (name, when) with `remove_all`, in order.
fn rules(list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(name, when)| format!("[[rule]]\nname = \"{name}\"\nwhen = {when}\nthen = {{ remove_all = true }}\n"))
        .collect()
}

#[test]
fn tags_match_case_insensitively() {
    let set = valid(&[("a.toml", &rules(&[("vip", r#"{ event = "tag_added", tag = " VIP Client" }"#)]))]);
    assert_eq!(fired(&set, &tag_added("vip client")), ["vip"]);
    assert_eq!(fired(&set, &tag_added("  Vip CLIENT  ")), ["vip"]);
    assert!(fired(&set, &tag_added("vip")).is_empty());
    assert!(fired(&set, &event(EventKind::TagRemoved { tag: "vip client".into() })).is_empty());
}

#[test]
fn sources_pipelines_and_stages_match_case_insensitively() {
    let set = valid(&[(
        "a.toml",
        &rules(&[
            ("ads", r#"{ event = "contact_created", source = "Facebook Ads" }"#),
            ("won", r#"{ event = "stage_changed", pipeline = "Sales", stage = "Closed Won" }"#),
            ("from-demo", r#"{ event = "stage_changed", from_stage = "Demo" }"#),
        ]),
    )]);
    assert_eq!(fired(&set, &event(created(Some(" facebook ADS ")))), ["ads"]);
    assert!(fired(&set, &event(created(Some("Google Ads")))).is_empty());
    assert_eq!(fired(&set, &event(stage("SALES", "closed won", None))), ["won"]);
    assert!(fired(&set, &event(stage("Renewals", "Closed Won", None))).is_empty());
    assert_eq!(fired(&set, &event(stage("Sales", "Closed Won", Some("DEMO")))), ["won", "from-demo"]);
    assert!(fired(&set, &event(stage("Sales", "Lost", None))).is_empty(), "an unknown previous stage is no match");
}

#[test]
fn conditions_left_out_match_any_value() {
    let set = valid(&[(
        "a.toml",
        &rules(&[
            ("any-contact", r#"{ event = "contact_created" }"#),
            ("any-stage", r#"{ event = "stage_changed" }"#),
            ("ads", r#"{ event = "contact_created", source = "ads" }"#),
        ]),
    )]);
    assert_eq!(fired(&set, &event(created(None))), ["any-contact"]);
    assert_eq!(fired(&set, &event(created(Some("Ads")))), ["any-contact", "ads"]);
    assert_eq!(fired(&set, &event(stage("p", "s", None))), ["any-stage"]);
}

#[test]
fn matching_uses_the_index_not_a_scan() {
    let mut text = String::new();
    for n in 0..10_000 {
        let _ = write!(
            text,
            "[[rule]]\nname = \"other-{n}\"\n\
             when = {{ event = \"tag_added\", tag = \"tag-{n}\" }}\nthen = {{ remove_all = true }}\n"
        );
    }
    text.push_str(&rules(&[
        ("vip", r#"{ event = "tag_added", tag = "VIP" }"#),
        ("any-removed", r#"{ event = "tag_removed", tag = "vip" }"#),
        ("any-stage", r#"{ event = "stage_changed" }"#),
    ]));
    let set = valid(&[("a.toml", &text)]);
    assert_eq!(set.summary().rules, 10_003);
    // Only the one rule keyed on this tag is looked at, not the 10,000 others of the same kind.
    let looked_at: Vec<usize> = set.index.candidates(Kind::TagAdded, Some(" vip ")).collect();
    assert_eq!(looked_at.len(), 1, "evaluation looked at {} rules", looked_at.len());
    assert_eq!(looked_at, [10_000]);
    assert_eq!(set.index.candidates(Kind::TagAdded, Some("tag-42")).count(), 1);
    assert_eq!(set.index.candidates(Kind::StageChanged, Some("won")).count(), 1);
    assert_eq!(set.index.candidates(Kind::ContactCreated, None).count(), 0);
    assert_eq!(fired(&set, &tag_added("Vip")), ["vip"]);
    assert_eq!(fired(&set, &tag_added("tag-9999")), ["other-9999"]);
}

#[test]
fn actions_come_in_a_fixed_order_with_teams_expanded_and_duplicates_removed() {
    let then =
        r#"{ round_robin = "sales", add = ["everyone", "bob"], remove = ["carol", "carol"], remove_all = true }"#;
    let text = format!("[[rule]]\nname = \"all\"\nwhen = {{ event = \"tag_added\", tag = \"x\" }}\nthen = {then}\n");
    let set = valid(&[("users.toml", USERS), ("x.toml", &text)]);
    let pool: std::sync::Arc<[_]> = vec![user("usr_alice"), user("usr_bob")].into();
    assert_eq!(
        set.evaluate(&tag_added("x")),
        [Match {
            rule: "all".into(),
            actions: vec![
                Action::RemoveAll,
                Action::Remove(user("usr_carol")),
                Action::Add(user("usr_alice")),
                Action::Add(user("usr_bob")),
                Action::Add(user("usr_carol")),
                Action::RoundRobin(std::sync::Arc::new(rotation("all", &pool))),
            ],
            ownership: None,
            lasts: None,
            skip_if_following: None,
            target: crate::rules::Target::Contact,
        }]
    );
}

#[test]
fn round_robin_on_a_single_user_is_a_pool_of_one() {
    let text =
        "[[rule]]\nname = \"solo\"\nwhen = { event = \"contact_created\" }\nthen = { round_robin = \"alice\" }\n";
    let set = valid(&[("users.toml", USERS), ("x.toml", text)]);
    let actions = set.evaluate(&event(created(None))).remove(0).actions;
    let expected = Action::RoundRobin(std::sync::Arc::new(rotation("solo", &[user("usr_alice")])));
    assert_eq!(actions, [expected]);
}

/// A round robin as written with nothing but its team: every weight 1, nobody away, no caps.
fn rotation(rule: &str, team: &[crate::event::UserId]) -> crate::domain::rotation::Rotation {
    crate::domain::rotation::Rotation {
        rule: rule.into(),
        members: team.iter().map(|user| crate::domain::pick::Member { user: user.clone(), weight: 1 }).collect(),
        availability: Default::default(),
        catch_up: false,
        caps: Default::default(),
        overflow: None,
    }
}

#[test]
fn a_rule_with_locations_fires_only_there() {
    let text = "[[rule]]\nname = \"scoped\"\nlocations = [\"loc_2\", \"loc_1\"]\n\
                when = { event = \"tag_added\", tag = \"x\" }\nthen = { remove_all = true }\n";
    let set = valid(&[("a.toml", text)]);
    assert_eq!(fired(&set, &event_at("loc_1", EventKind::TagAdded { tag: "x".into() })), ["scoped"]);
    assert_eq!(fired(&set, &event_at("loc_2", EventKind::TagAdded { tag: "x".into() })), ["scoped"]);
    assert!(fired(&set, &event_at("LOC_1", EventKind::TagAdded { tag: "x".into() })).is_empty(), "ids are exact");
    assert!(fired(&set, &event_at("loc_3", EventKind::TagAdded { tag: "x".into() })).is_empty());
}

#[test]
fn disabled_rules_never_fire_but_are_counted() {
    let text = "[[rule]]\nname = \"off\"\nenabled = false\n\
                when = { event = \"tag_added\", tag = \"x\" }\nthen = { add = [\"alice\"] }\n";
    let set = valid(&[
        ("users.toml", USERS),
        ("a.toml", text),
        ("b.toml", &rules(&[("on", r#"{ event = "tag_added", tag = "x" }"#)])),
    ]);
    assert_eq!(fired(&set, &tag_added("x")), ["on"]);
    assert_eq!(set.summary().to_string(), "2 rules (1 enabled) in 3 files, 3 users, 3 teams");
}

#[test]
fn rules_fire_in_file_name_then_position_order() {
    let any = r#"{ event = "tag_added", tag = "x" }"#;
    let keyed = r#"{ event = "tag_added", tag = "X" }"#;
    let b = rules(&[("b1", any), ("b2", keyed)]);
    let a = rules(&[("a1", keyed), ("a2", any), ("a3", r#"{ event = "tag_added", tag = "y" }"#)]);
    // Given out of order on purpose: rule order is by path.
    let set = valid(&[("rules/b.toml", &b), ("rules/a.toml", &a)]);
    assert_eq!(fired(&set, &tag_added("x")), ["a1", "a2", "b1", "b2"]);
}

#[test]
fn weights_give_each_member_of_a_round_robin_their_weight_and_the_others_one() {
    let text = "[[rule]]\nname = \"w\"\nwhen = { event = \"contact_created\" }\n\
                then = { round_robin = \"everyone\", weights = { alice = 3, carol = 2 } }\n";
    let users = "[users]\nalice = \"usr_alice\"\nbob = \"usr_bob\"\ncarol = \"usr_carol\"\n\
                 everyone = [\"alice\", \"bob\", \"carol\"]\n";
    let set = valid(&[("users.toml", users), ("x.toml", text)]);
    let actions = set.evaluate(&event(created(None))).remove(0).actions;
    let [Action::RoundRobin(rotation)] = &actions[..] else { panic!("{actions:?}") };
    assert_eq!(rotation.members.iter().map(|m| m.weight).collect::<Vec<_>>(), [3, 1, 2]);
    assert_eq!(
        actions[0].to_string(),
        "round_robin [usr_alice x3, usr_bob, usr_carol x2]",
        "as `rules explain` says it"
    );
}

#[test]
fn weights_that_name_no_member_are_zero_or_stand_alone_are_errors_at_their_place() {
    let text = "[[rule]]\nname = \"w\"\nwhen = { event = \"contact_created\" }\n\
                then = { round_robin = \"sales\", weights = { carol = 2, bob = 0 } }\n\
                [[rule]]\nname = \"alone\"\nwhen = { event = \"contact_created\" }\n\
                then = { add = [\"alice\"], weights = { alice = 2 } }\n";
    let found = super::errors(&[("users.toml", super::USERS), ("x.toml", text)]);
    let expected = [
        "x.toml:4:62: weight 0 for `bob`: a weight is a whole number from 1 to 1000",
        "x.toml:4:45: `carol` is not a member of `sales`, the team this rule picks from",
        "x.toml:8:37: `weights` weigh the members of a round_robin; this rule has none",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for expected in expected {
        assert!(found.iter().any(|f| f.starts_with(expected)), "expected `{expected}...` in {found:#?}");
    }
}

#[test]
fn availability_is_read_per_alias_and_its_mistakes_are_reported_at_their_place() {
    let text = "[availability]\nalice = { away = [\"2026-12-20/2026-12-31\"] }\nsales = { away = [\"2027-01-05\"] }\n\
                [[rule]]\nname = \"rr\"\nwhen = { event = \"contact_created\" }\nthen = { round_robin = \"everyone\" }\n";
    let set = valid(&[("users.toml", super::USERS), ("x.toml", text)]);
    let actions = set.evaluate(&event(created(None))).remove(0).actions;
    let christmas = 1_798_156_800_000; // 2026-12-25T00:00:00Z
    let twelfth = 1_799_107_200_000; // 2027-01-05T00:00:00Z
    let rotation = actions[0].rotation().unwrap();
    assert!(rotation.is_away(&user("usr_alice"), christmas));
    assert!(!rotation.is_away(&user("usr_bob"), christmas));
    assert!(rotation.is_away(&user("usr_bob"), twelfth), "a team's entry applies to each member");
    let broken = "[availability]\nalise = { away = [\"2026-12-20\"] }\nbob = { away = [\"2026-12-31/2026-12-20\"] }\n\
                  carol = { holidays = [] }\n";
    let found = super::errors(&[("users.toml", super::USERS), ("y.toml", broken)]);
    let expected = [
        "y.toml:2:1: unknown alias `alise` in [availability]; did you mean `alice`?",
        "y.toml:3:17: `2026-12-31/2026-12-20` ends before it starts",
        "y.toml:4:11: unknown key `holidays` in availability",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (found, expected) in found.iter().zip(expected) {
        assert!(found.starts_with(expected), "expected `{expected}...`, found `{found}`");
    }
}

#[test]
fn catch_up_is_read_with_a_round_robin_and_refused_without_one() {
    let with = "[[rule]]\nname = \"rr\"\nwhen = { event = \"contact_created\" }\n\
                then = { round_robin = \"sales\", catch_up = true }\n";
    let set = valid(&[("users.toml", super::USERS), ("x.toml", with)]);
    let actions = set.evaluate(&event(created(None))).remove(0).actions;
    assert!(actions[0].rotation().is_some_and(|r| r.catch_up), "{actions:?}");
    let without = "[[rule]]\nname = \"a\"\nwhen = { event = \"contact_created\" }\n\
                   then = { add = [\"alice\"], catch_up = true }\n";
    let found = super::errors(&[("users.toml", super::USERS), ("y.toml", without)]);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].starts_with("y.toml:4:38: `catch_up` is about a round_robin's members"), "{found:#?}");
}

#[test]
fn caps_and_overflow_are_read_with_a_round_robin_and_their_mistakes_reported_at_their_place() {
    let with = "[[rule]]\nname = \"rr\"\nwhen = { event = \"contact_created\" }\n\
                then = { round_robin = \"sales\", max_per_day = 5, max_per_week = 20, overflow = \"carol\" }\n";
    let set = valid(&[("users.toml", super::USERS), ("x.toml", with)]);
    let actions = set.evaluate(&event(created(None))).remove(0).actions;
    let rotation = actions[0].rotation().unwrap();
    assert_eq!((rotation.caps.per_day, rotation.caps.per_week), (Some(5), Some(20)));
    assert_eq!(rotation.overflow, Some(user("usr_carol")));
    assert_eq!(
        actions[0].to_string(),
        "round_robin [usr_alice, usr_bob] max_per_day 5 max_per_week 20 overflow usr_carol",
        "as `rules explain` says it"
    );
    let broken = "[[rule]]\nname = \"a\"\nwhen = { event = \"contact_created\" }\n\
                  then = { round_robin = \"sales\", max_per_day = 0, overflow = \"sales\" }\n\
                  [[rule]]\nname = \"b\"\nwhen = { event = \"contact_created\" }\n\
                  then = { add = [\"alice\"], max_per_week = 3 }\n\
                  [[rule]]\nname = \"c\"\nwhen = { event = \"contact_created\" }\n\
                  then = { round_robin = \"sales\", overflow = \"carol\" }\n";
    let found = super::errors(&[("users.toml", super::USERS), ("y.toml", broken)]);
    let expected = [
        "y.toml:4:47: max_per_day = 0: a cap is a whole number of picks, at least 1",
        "y.toml:4:61: `sales` is a team; overflow names one user",
        "y.toml:8:42: `max_per_week` is about a round_robin's members; this rule has none",
        "y.toml:12:44: `overflow` takes the turns nobody can take at their cap",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for expected in expected {
        assert!(found.iter().any(|f| f.starts_with(expected)), "expected `{expected}...` in {found:#?}");
    }
}

#[test]
fn working_hours_are_read_in_the_user_s_time_zone_and_their_mistakes_reported_at_their_place() {
    let text = "[availability]\nalice = { hours = \"09:00-17:00\", days = \"mon-fri\", time_zone = \"America/New_York\" }\n\
                [[rule]]\nname = \"rr\"\nwhen = { event = \"contact_created\" }\nthen = { round_robin = \"sales\" }\n";
    let set = valid(&[("users.toml", super::USERS), ("x.toml", text)]);
    let actions = set.evaluate(&event(created(None))).remove(0).actions;
    let rotation = actions[0].rotation().unwrap();
    let monday_10_utc = 1_764_583_200_000; // 2025-12-01T10:00:00Z, a Monday: 05:00 in New York
    let monday_15_utc = monday_10_utc + 5 * 3_600_000; // 10:00 in New York
    assert!(rotation.is_away(&user("usr_alice"), monday_10_utc), "before her hours in her zone");
    assert!(!rotation.is_away(&user("usr_alice"), monday_15_utc));
    assert!(!rotation.is_away(&user("usr_bob"), monday_10_utc), "no hours: always at work");
    let broken = "[availability]\nalice = { hours = \"9 to 5\" }\nbob = { days = \"mon\" }\n\
                  carol = { hours = \"09:00-17:00\", days = \"mon-fry\", time_zone = \"Mars/Olympus\" }\n\
                  sales = { hour = \"09:00-17:00\" }\n";
    let found = super::errors(&[("users.toml", super::USERS), ("y.toml", broken)]);
    let expected = [
        "y.toml:2:19: `9 to 5` is not a span of hours",
        "y.toml:3:16: `days` are the days of the working `hours`",
        "y.toml:4:64: `Mars/Olympus` is not a time zone",
        "y.toml:4:41: `fry` is not a day",
        "y.toml:5:11: unknown key `hour` in availability; did you mean `hours`?",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for expected in expected {
        assert!(found.iter().any(|f| f.starts_with(expected)), "expected `{expected}...` in {found:#?}");
    }
}

#[test]
fn for_says_how_long_added_followers_stay_and_its_mistakes_are_reported_at_their_place() {
    let text = "[[rule]]\nname = \"t\"\nwhen = { event = \"tag_added\", tag = \"hot\" }\n\
                then = { add = [\"alice\"], remove = [\"bob\"], for = \"14d\" }\n";
    let set = valid(&[("users.toml", super::USERS), ("x.toml", text)]);
    let matched = set.evaluate(&tag_added("hot")).remove(0);
    assert_eq!(matched.lasts, Some(14 * 86_400_000));
    let explained = set.explain(&tag_added("hot"))[0].to_string();
    assert_eq!(
        explained,
        "rule `t` fires: remove usr_bob, add usr_alice (followers it adds stay 14days, then followd removes them)"
    );
    let broken = "[[rule]]\nname = \"a\"\nwhen = { event = \"tag_added\", tag = \"x\" }\n\
                  then = { remove = [\"alice\"], for = \"1d\" }\n\
                  [[rule]]\nname = \"b\"\nwhen = { event = \"tag_added\", tag = \"x\" }\n\
                  then = { add = [\"alice\"], for = \"a fortnight\" }\n\
                  [[rule]]\nname = \"c\"\nwhen = { event = \"tag_added\", tag = \"x\" }\n\
                  then = { add = [\"alice\"], for = \"500ms\" }\n";
    let found = super::errors(&[("users.toml", super::USERS), ("y.toml", broken)]);
    let expected = [
        "y.toml:4:36: `for` says how long added followers stay; this rule adds none",
        "y.toml:8:33: for = \"a fortnight\" is not a duration",
        "y.toml:12:33: for = \"500ms\": a follower stays at least 1 second and at most 10 years",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for expected in expected {
        assert!(found.iter().any(|f| f.starts_with(expected)), "expected `{expected}...` in {found:#?}");
    }
}

#[test]
fn skip_if_following_names_a_team_or_user_and_explain_says_so() {
    let text = "[[rule]]\nname = \"s\"\nskip_if_following = \"sales\"\n\
                when = { event = \"tag_added\", tag = \"vip\" }\nthen = { round_robin = \"sales\" }\n";
    let set = valid(&[("users.toml", super::USERS), ("x.toml", text)]);
    let matched = set.evaluate(&tag_added("vip")).remove(0);
    assert_eq!(matched.skip_if_following.as_deref(), Some(&[user("usr_alice"), user("usr_bob")][..]));
    let explained = set.explain(&tag_added("vip"))[0].to_string();
    assert!(explained.ends_with("unless one of usr_alice, usr_bob already follows when delivered"), "{explained}");
    let broken = "[[rule]]\nname = \"a\"\nskip_if_following = \"saels\"\n\
                  when = { event = \"tag_added\", tag = \"x\" }\nthen = { add = [\"alice\"] }\n\
                  [[rule]]\nname = \"b\"\nskip_if_following = \"nobody\"\n\
                  when = { event = \"tag_added\", tag = \"x\" }\nthen = { add = [\"alice\"] }\n";
    let found = super::errors(&[("users.toml", super::USERS), ("y.toml", broken)]);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("y.toml:3:21: unknown alias `saels` in `skip_if_following`; did you mean `sales`?"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("y.toml:8:21: team `nobody` is empty, so skip_if_following never skips"),
        "{found:#?}"
    );
}

#[test]
fn covers_name_two_different_users_once_and_their_mistakes_are_reported_at_their_place() {
    let text = "[[cover]]\nuser = \"alice\"\nby = \"bob\"\n";
    let set = valid(&[("users.toml", super::USERS), ("x.toml", text)]);
    let covers = set.covers();
    assert_eq!(covers.len(), 1);
    assert_eq!((covers[0].user.as_str(), covers[0].by.as_str()), ("usr_alice", "usr_bob"));
    let broken = "[[cover]]\nuser = \"alice\"\nby = \"alice\"\n\
                  [[cover]]\nuser = \"sales\"\nby = \"bobb\"\n\
                  [[cover]]\nuser = \"carol\"\nby = \"bob\"\n\
                  [[cover]]\nuser = \"carol\"\nby = \"bob\"\n\
                  [[cover]]\nuser = \"carol\"\nwith = \"bob\"\n";
    let found = super::errors(&[("users.toml", super::USERS), ("y.toml", broken)]);
    let expected = [
        "y.toml:3:6: usr_alice cannot cover for themselves",
        "y.toml:5:8: `sales` is a team; `user` in [[cover]] names one user",
        "y.toml:6:6: unknown alias `bobb` in [[cover]]; did you mean `bob`?",
        "y.toml:10:1: usr_bob already covers for usr_carol",
        "y.toml:15:1: unknown key `with` in `cover`",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for expected in expected {
        assert!(found.iter().any(|f| f.starts_with(expected)), "expected `{expected}...` in {found:#?}");
    }
}
