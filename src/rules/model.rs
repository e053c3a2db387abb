//! The rule file as written: serde types that keep the source span of everything a later check may point at,
//! and [`parse_file`], which turns one file's text into them while reporting every structural problem.
//!
//! This is not where meaning is checked (aliases, duplicate names, conditions per event kind): `compile` does
//! that. The document is first parsed into toml's spanned tree, then `[users]` is read entry by entry and each
//! `[[rule]]`'s `when`, `then` and the rest are deserialized separately, so one typo does not hide the next one.
//! serde's own messages (`unknown field`, `missing field`) are rewritten to name the valid keys and the nearest.

use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::diagnostic::{Diagnostic, Source, did_you_mean};
use crate::event::EventKind;

/// The event a rule listens to (`when.event`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Kind {
    TagAdded,
    TagRemoved,
    ContactCreated,
    StageChanged,
    AssignedChanged,
}

impl Kind {
    pub const COUNT: usize = 5;

    pub fn of(event: &EventKind) -> Self {
        match event {
            EventKind::TagAdded { .. } => Self::TagAdded,
            EventKind::TagRemoved { .. } => Self::TagRemoved,
            EventKind::ContactCreated { .. } => Self::ContactCreated,
            EventKind::StageChanged { .. } => Self::StageChanged,
            EventKind::AssignedChanged { .. } => Self::AssignedChanged,
        }
    }

    /// Position in per-kind tables.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::TagAdded => "tag_added",
            Self::TagRemoved => "tag_removed",
            Self::ContactCreated => "contact_created",
            Self::StageChanged => "stage_changed",
            Self::AssignedChanged => "assigned_changed",
        }
    }

    /// The condition that keys the index for this kind: what the event is mostly about.
    pub fn key_condition(self) -> &'static str {
        match self {
            Self::TagAdded | Self::TagRemoved => "tag",
            Self::ContactCreated => "source",
            Self::StageChanged => "stage",
            Self::AssignedChanged => "record",
        }
    }

    /// The `when` conditions this kind of event can be tested on.
    pub fn conditions(self) -> &'static [&'static str] {
        match self {
            Self::TagAdded | Self::TagRemoved => &["tag"],
            Self::ContactCreated => &["source"],
            Self::StageChanged => &["pipeline", "stage", "from_stage"],
            Self::AssignedChanged => &["record"],
        }
    }
}

/// Everything one file defines, in file order.
#[derive(Default)]
pub(super) struct RawFile {
    pub aliases: Vec<RawAlias>,
    pub rules: Vec<RawRule>,
    pub availability: Vec<RawAbsences>,
    pub covers: Vec<Spanned<RawCover>>,
}

/// One `[[cover]]`: while `user` is away, `by` follows the contacts followd made `user` follow.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCover {
    pub user: Spanned<String>,
    pub by: Spanned<String>,
}

/// One `[availability]` entry: `alice = { away = ["2026-12-20/2026-12-31"], hours = "09:00-17:00",
/// days = "mon-fri", time_zone = "Europe/Berlin" }`, every key optional.
pub(super) struct RawAbsences {
    pub name: Spanned<String>,
    pub away: Vec<Spanned<String>>,
    pub hours: Option<Spanned<String>>,
    pub days: Option<Spanned<String>>,
    pub time_zone: Option<Spanned<String>>,
}

/// One `[users]` entry.
pub(super) struct RawAlias {
    pub name: Spanned<String>,
    pub value: AliasValue,
}

pub(super) enum AliasValue {
    /// `alice = "usr_1"`: always a user id.
    User(Spanned<String>),
    /// `team = ["alice", "usr_2"]`: aliases or literal user ids.
    Team(Vec<Spanned<String>>),
}

/// One `[[rule]]`. A part is `None` when it was missing or malformed; that was reported already.
pub(super) struct RawRule {
    pub head: Option<RuleHead>,
    pub when: Option<Spanned<When>>,
    pub then: Option<Spanned<Then>>,
}

/// A rule's own keys, other than `when` and `then` (deserialized on their own).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleHead {
    pub name: Spanned<String>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    #[serde(default)]
    pub locations: Option<Spanned<Vec<Spanned<String>>>>,
    /// Whose followers this rule's removals may touch; unset: `followers.ownership` from the configuration.
    #[serde(default)]
    pub ownership: Option<crate::domain::followers::Ownership>,
    /// A team (or user): the rule does nothing for a contact one of them already follows when it is delivered.
    #[serde(default)]
    pub skip_if_following: Option<Spanned<String>>,
    /// Whose followers the rule changes: the contact's (default) or the event's opportunity's.
    #[serde(default)]
    pub target: Option<Spanned<Target>>,
}

/// Whose followers a rule changes (`target`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The contact's (the default).
    #[default]
    Contact,
    /// The event's opportunity's (`POST`/`DELETE /opportunities/{id}/followers`).
    Opportunity,
}

fn enabled_by_default() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct When {
    pub event: Spanned<Kind>,
    #[serde(default)]
    pub tag: Option<Spanned<String>>,
    #[serde(default)]
    pub source: Option<Spanned<String>>,
    #[serde(default)]
    pub pipeline: Option<Spanned<String>>,
    #[serde(default)]
    pub stage: Option<Spanned<String>>,
    #[serde(default)]
    pub from_stage: Option<Spanned<String>>,
    /// `assigned_changed`: `"contact"` or `"opportunity"`, what was assigned.
    #[serde(default)]
    pub record: Option<Spanned<String>>,
}

impl When {
    /// Every condition written, with its key, in a fixed order.
    pub fn conditions(&self) -> impl Iterator<Item = (&'static str, &Spanned<String>)> {
        [
            ("tag", &self.tag),
            ("source", &self.source),
            ("pipeline", &self.pipeline),
            ("stage", &self.stage),
            ("from_stage", &self.from_stage),
            ("record", &self.record),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_ref().map(|value| (key, value)))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Then {
    #[serde(default)]
    pub remove_all: Option<Spanned<bool>>,
    #[serde(default)]
    pub remove: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub add: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub round_robin: Option<Spanned<String>>,
    /// Picks per turn of `round_robin`'s members (alias or user id → weight); members not named count 1.
    #[serde(default)]
    pub weights: Option<Spanned<std::collections::BTreeMap<Spanned<String>, Spanned<i64>>>>,
    /// A member back from an absence gets the picks they missed (`round_robin` only).
    #[serde(default)]
    pub catch_up: Option<Spanned<bool>>,
    /// Most picks per member per day (UTC), and per week (Monday to Sunday, UTC) (`round_robin` only).
    #[serde(default)]
    pub max_per_day: Option<Spanned<i64>>,
    #[serde(default)]
    pub max_per_week: Option<Spanned<i64>>,
    /// Who is added when every member is at their cap (an alias); without it such a turn is dead-lettered.
    #[serde(default)]
    pub overflow: Option<Spanned<String>>,
    /// How long the followers this rule adds stay (`"14d"`, `"8h"`): each is removed after it.
    #[serde(default, rename = "for")]
    pub lasts: Option<Spanned<String>>,
}

const FILE_KEYS: &[&str] = &["users", "rule", "availability", "cover"];
const COVER_KEYS: &[&str] = &["user", "by"];
const RULE_KEYS: &[&str] =
    &["name", "enabled", "locations", "ownership", "skip_if_following", "target", "when", "then"];
const WHEN_KEYS: &[&str] = &["event", "tag", "source", "pipeline", "stage", "from_stage", "record"];
const THEN_KEYS: &[&str] = &[
    "remove_all",
    "remove",
    "add",
    "round_robin",
    "weights",
    "catch_up",
    "max_per_day",
    "max_per_week",
    "overflow",
    "for",
];
const EVENTS: &str = "tag_added, tag_removed, contact_created, stage_changed, assigned_changed";
const WHEN_EXAMPLE: &str = r#"when = { event = "tag_added", tag = "vip" }"#;
const THEN_EXAMPLE: &str = r#"then = { add = ["alice"] }"#;

/// Reads one file. `None` when it is not valid TOML: then nothing in it can be trusted, and the syntax errors
/// are all that is reported for it.
pub(super) fn parse_file(source: Source<'_>, diagnostics: &mut Vec<Diagnostic>) -> Option<RawFile> {
    let (document, errors) = DeTable::parse_recoverable(source.text);
    if !errors.is_empty() {
        for error in errors {
            diagnostics.push(syntax_error(source, &error));
        }
        return None;
    }
    let mut file = RawFile::default();
    for (key, value) in document.into_inner() {
        match key.get_ref().as_ref() {
            "users" => parse_users(source, value, &mut file.aliases, diagnostics),
            "rule" => parse_rules(source, value, &mut file.rules, diagnostics),
            "availability" => parse_availability(source, value, &mut file.availability, diagnostics),
            "cover" => parse_covers(source, value, &mut file.covers, diagnostics),
            other => diagnostics.push(source.at(
                key.span(),
                format!(
                    "unknown key `{other}`{}a rule file holds a [users] table, [[rule]] tables, an \
                     [availability] table and [[cover]] tables",
                    did_you_mean(other, FILE_KEYS.iter().copied())
                ),
            )),
        }
    }
    Some(file)
}

fn syntax_error(source: Source<'_>, error: &toml::de::Error) -> Diagnostic {
    let span = error.span().unwrap_or(0..0);
    let message = if error.message() == "duplicate key" {
        let key = source.text.get(span.clone()).unwrap_or_default();
        format!("duplicate key `{key}`; a key (and so an alias) may appear only once in a table")
    } else {
        format!("invalid TOML: {}", error.message())
    };
    source.at(span, message)
}

fn parse_users(
    source: Source<'_>,
    value: Spanned<DeValue<'_>>,
    aliases: &mut Vec<RawAlias>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        let message = r#"`users` must be a table of aliases: [users] then lines like alice = "usr_...""#;
        diagnostics.push(source.at(span, message.to_owned()));
        return;
    };
    for (name, value) in table {
        let name = Spanned::new(name.span(), name.get_ref().to_string());
        let span = value.span();
        let value = match value.into_inner() {
            DeValue::String(id) => AliasValue::User(Spanned::new(span, id.into_owned())),
            DeValue::Array(members) => {
                let mut team = Vec::with_capacity(members.len());
                for member in members.iter() {
                    match member.get_ref() {
                        DeValue::String(text) => team.push(Spanned::new(member.span(), text.to_string())),
                        other => diagnostics.push(source.at(
                            member.span(),
                            format!(
                                "team `{}` has a {} member; members are strings: aliases or user ids",
                                name.get_ref(),
                                other.type_str()
                            ),
                        )),
                    }
                }
                AliasValue::Team(team)
            }
            other => {
                diagnostics.push(source.at(
                    span,
                    format!(
                        "alias `{}` is a {}; write a user id (\"usr_...\") or a list of aliases and user ids",
                        name.get_ref(),
                        other.type_str()
                    ),
                ));
                continue;
            }
        };
        aliases.push(RawAlias { name, value });
    }
}

fn parse_availability(
    source: Source<'_>,
    value: Spanned<DeValue<'_>>,
    out: &mut Vec<RawAbsences>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let example = r#"alice = { away = ["2026-12-20/2026-12-31"] }"#;
    let span = value.span();
    let DeValue::Table(table) = value.into_inner() else {
        diagnostics.push(source.at(span, format!("`availability` must be a table: [availability] then {example}")));
        return;
    };
    for (name, entry) in table {
        let name = Spanned::new(name.span(), name.get_ref().to_string());
        let span = entry.span();
        let DeValue::Table(entry) = entry.into_inner() else {
            diagnostics.push(source.at(span, format!("write each entry as {example}")));
            continue;
        };
        let mut absences = RawAbsences { name, away: Vec::new(), hours: None, days: None, time_zone: None };
        for (key, value) in entry {
            let slot = match key.get_ref().as_ref() {
                "away" => None,
                "hours" => Some(&mut absences.hours),
                "days" => Some(&mut absences.days),
                "time_zone" => Some(&mut absences.time_zone),
                other => {
                    let message = format!(
                        "unknown key `{other}` in availability{}valid keys: away, hours, days, time_zone",
                        did_you_mean(other, ["away", "hours", "days", "time_zone"].into_iter())
                    );
                    diagnostics.push(source.at(key.span(), message));
                    continue;
                }
            };
            if let Some(slot) = slot {
                match value.get_ref() {
                    DeValue::String(text) => *slot = Some(Spanned::new(value.span(), text.to_string())),
                    _ => {
                        let message = format!(
                            "`{}` is a string, e.g. hours = \"09:00-17:00\", days = \"mon-fri\", \
                                     time_zone = \"Europe/Berlin\"",
                            key.get_ref()
                        );
                        diagnostics.push(source.at(value.span(), message));
                    }
                }
                continue;
            }
            let span = value.span();
            let DeValue::Array(items) = value.into_inner() else {
                diagnostics.push(source.at(span, format!("`away` is a list of day ranges: {example}")));
                continue;
            };
            for item in items.iter() {
                match item.get_ref() {
                    DeValue::String(text) => absences.away.push(Spanned::new(item.span(), text.to_string())),
                    _ => diagnostics
                        .push(source.at(item.span(), "a day range is a string like \"2026-12-20/2026-12-31\"".into())),
                }
            }
        }
        out.push(absences);
    }
}

fn parse_covers(
    source: Source<'_>,
    value: Spanned<DeValue<'_>>,
    covers: &mut Vec<Spanned<RawCover>>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        let message = "write each cover as a [[cover]] table (two brackets): user = \"alice\", by = \"bob\"";
        diagnostics.push(source.at(span, message.to_owned()));
        return;
    };
    for item in items.iter().cloned() {
        if let Some(cover) = deserialize::<RawCover>(source, item, "cover", COVER_KEYS, diagnostics) {
            covers.push(cover);
        }
    }
}

fn parse_rules(
    source: Source<'_>,
    value: Spanned<DeValue<'_>>,
    rules: &mut Vec<RawRule>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let span = value.span();
    let DeValue::Array(items) = value.into_inner() else {
        diagnostics.push(source.at(span, "write each rule as a [[rule]] table (two brackets)".to_owned()));
        return;
    };
    for item in items.iter().cloned() {
        let span = item.span();
        let DeValue::Table(mut table) = item.into_inner() else {
            diagnostics.push(source.at(span, "each rule must be a table: write it under [[rule]]".to_owned()));
            continue;
        };
        let mut part = |key: &str, keys: &'static [&'static str], example: &'static str| {
            let value = table.remove(key);
            if value.is_none() {
                diagnostics.push(source.at(span.clone(), format!("this rule has no `{key}`; add e.g. {example}")));
            }
            value.map(|value| (value, keys, example))
        };
        let when = part("when", WHEN_KEYS, WHEN_EXAMPLE);
        let then = part("then", THEN_KEYS, THEN_EXAMPLE);
        let when = when.and_then(|(value, keys, _)| deserialize::<When>(source, value, "when", keys, diagnostics));
        let then = then.and_then(|(value, keys, _)| deserialize::<Then>(source, value, "then", keys, diagnostics));
        let head = Spanned::new(span, DeValue::Table(table));
        let head = deserialize::<RuleHead>(source, head, "rule", RULE_KEYS, diagnostics).map(Spanned::into_inner);
        rules.push(RawRule { head, when, then });
    }
}

/// Deserializes one part of a rule (or of a case file), turning serde's error into a diagnostic at the place
/// it names.
pub(super) fn deserialize<'de, T: Deserialize<'de>>(
    source: Source<'_>,
    value: Spanned<DeValue<'de>>,
    what: &str,
    keys: &[&str],
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Spanned<T>> {
    let span = value.span();
    match T::deserialize(ValueDeserializer::from(value)) {
        Ok(parsed) => Some(Spanned::new(span, parsed)),
        Err(error) => {
            let at = error.span().unwrap_or(span);
            diagnostics.push(source.at(at, explain(error.message(), what, keys)));
            None
        }
    }
}

/// Rewrites serde's message so it says what to do. The names serde quotes are taken from between backticks;
/// the list of valid keys comes from `keys`, because a part may have been deserialized without its siblings.
fn explain(message: &str, what: &str, keys: &[&str]) -> String {
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let first = quoted.first().copied().unwrap_or_default();
    if message.starts_with("unknown field") {
        let hint = did_you_mean(first, keys.iter().copied());
        format!("unknown key `{first}` in `{what}`{hint}valid keys: {}", keys.join(", "))
    } else if message.starts_with("unknown variant") && what == "when" {
        let hint = did_you_mean(first, quoted.iter().skip(1).copied());
        format!("unknown event `{first}`{hint}`event` is one of: {EVENTS}")
    } else if message.starts_with("unknown variant") {
        let hint = did_you_mean(first, quoted.iter().skip(1).copied());
        format!(
            "unknown value `{first}` in `{what}`{hint}expected one of: {}",
            quoted.get(1..).unwrap_or_default().join(", ")
        )
    } else if message.starts_with("missing field") {
        let hint = match first {
            "name" => r#"; give every rule a unique name = "...""#.to_owned(),
            "event" => format!("; add event = one of {EVENTS}"),
            _ => String::new(),
        };
        format!("`{what}` is missing `{first}`{hint}")
    } else if message.contains("expected struct") {
        let example = if what == "then" { THEN_EXAMPLE } else { WHEN_EXAMPLE };
        format!("`{what}` must be a table, e.g. {example}")
    } else {
        // serde's remaining messages are about types ("invalid type: string \"yes\", expected a boolean"),
        // already clear once "sequence" reads as TOML does.
        message.replace("a sequence", "a list")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys serde accepts for `T`, read from its "unknown field" message.
    fn serde_keys<T: for<'de> Deserialize<'de>>() -> Vec<String> {
        let error = T::deserialize(ValueDeserializer::parse("{ not_a_key = 1 }").unwrap()).err().unwrap();
        error.message().split('`').skip(1).step_by(2).skip(1).map(str::to_owned).collect()
    }

    #[test]
    fn the_keys_named_in_messages_are_the_keys_serde_accepts() {
        assert_eq!(serde_keys::<When>(), WHEN_KEYS);
        assert_eq!(serde_keys::<Then>(), THEN_KEYS);
        assert_eq!(serde_keys::<RuleHead>(), RULE_KEYS[..6]);
        assert_eq!(RULE_KEYS[6..], ["when", "then"]);
    }

    #[test]
    fn serde_messages_are_rewritten_to_say_what_to_do() {
        assert_eq!(
            explain("unknown field `tga`, expected one of `event`, `tag`", "when", WHEN_KEYS),
            "unknown key `tga` in `when`; did you mean `tag`? valid keys: event, tag, source, pipeline, stage, \
             from_stage, record"
        );
        assert_eq!(
            explain("unknown variant `tag_add`, expected one of `tag_added`, `tag_removed`", "when", WHEN_KEYS),
            "unknown event `tag_add`; did you mean `tag_added`? `event` is one of: tag_added, tag_removed, \
             contact_created, stage_changed, assigned_changed"
        );
        assert_eq!(explain("invalid type: string \"x\", expected a sequence", "then", THEN_KEYS), {
            "invalid type: string \"x\", expected a list"
        });
    }
}
