//! Rule test cases ("rules as code"): TOML files kept beside the rules, by default in `rules/tests/`, each
//! saying "this payload, through these rules, queues these follower operations". `followd rules test` runs
//! them; this file only reads them ([`load_cases`]), reporting every problem at `file:line:column` like the
//! rules themselves. Comparing an outcome is `case_diff.rs`.
//!
//! ```toml
//! [[case]]
//! name = "vip tag adds the account team"          # unique across the case files
//! source_format = "generic"                        # generic (default) | ghl | ghl-workflow
//! payload = '''{"id":"e1","type":"tag_added","location_id":"loc-1","contact_id":"c-1","tag":"vip"}'''
//! # or: payload_file = "payloads/x.json"           # relative to this file
//! known_tags = ["new lead"]                        # optional: the contact's stored tags before the payload,
//!                                                  # for payloads that carry the whole tag list (ghl)
//! expect = ["add usr_alice", "add usr_bob"]        # in order: "add <user id>", "remove <user id>", "remove_all",
//!                                                  # "dead_letter" (a round robin's turn refused at the caps)
//! at = "2026-12-24T10:00:00Z"                      # optional: when it happens (who is away), default now
//! picked_today = { usr_alice = 5 }                 # optional: picks already made today / this week, toward
//! picked_this_week = { usr_alice = 12 }            # max_per_day / max_per_week
//! ```
//!
//! Expected operations are written with user ids, not aliases: a case states what reaches the CRM, and an
//! alias renamed by mistake should make it fail. A round robin shows as the user a fresh store picks (see
//! [`OpLines`](super::OpLines)).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostic::{Diagnostic, RulesError, Source, did_you_mean};
use super::model::deserialize;
use crate::event::{Format, UserId};

/// One rule test case, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    pub name: String,
    /// The case file, and the 1-based line of the case's `name`, for messages.
    pub file: PathBuf,
    pub line: usize,
    pub format: Format,
    /// The payload bytes, as a source would receive them.
    pub payload: Vec<u8>,
    /// The contact's stored tags before the payload arrives; `None` is a contact never seen.
    pub known_tags: Option<Vec<String>>,
    /// The follower operations expected, in order, normalized: `add <user>`, `remove <user>`, `remove_all`.
    pub expect: Vec<String>,
    /// When the case happens (ms since the epoch), from `at`: who is away is decided at this time. `None`: now.
    pub at: Option<crate::domain::clock::Millis>,
    /// Picks each user already had today and this week, in any round robin (`picked_today`,
    /// `picked_this_week`): what a store would count toward `max_per_day` / `max_per_week`.
    pub picked_today: BTreeMap<UserId, u32>,
    pub picked_this_week: BTreeMap<UserId, u32>,
    /// Who a person made follow each contact (by contact id) before the case: followd did not add them.
    pub following: BTreeMap<String, Vec<UserId>>,
    /// Later steps, in time order (`[[case.then]]`); their expected lines follow `at <time>` lines in `expect`.
    pub steps: Vec<Step>,
}

/// A case as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: Spanned<String>,
    #[serde(default)]
    source_format: Option<Format>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_file: Option<Spanned<String>>,
    #[serde(default)]
    known_tags: Option<Vec<String>>,
    expect: Vec<Spanned<String>>,
    #[serde(default)]
    at: Option<Spanned<String>>,
    #[serde(default)]
    picked_today: BTreeMap<Spanned<String>, u32>,
    #[serde(default)]
    picked_this_week: BTreeMap<Spanned<String>, u32>,
    #[serde(default)]
    following: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    then: Vec<RawStep>,
}

/// A later step of a case, `[[case.then]]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at: Spanned<String>,
    #[serde(default)]
    payload: Option<String>,
    expect: Vec<Spanned<String>>,
}

/// A later step of a case: at `at`, the cover for absences runs, then `payload` (if any) through the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub at: crate::domain::clock::Millis,
    /// `at` as written: the `at ...` line that heads the step's expected lines.
    pub label: String,
    pub payload: Option<Vec<u8>>,
}

const FILE_KEYS: &[&str] = &["case"];
const CASE_KEYS: &[&str] = &[
    "name",
    "source_format",
    "payload",
    "payload_file",
    "known_tags",
    "expect",
    "at",
    "picked_today",
    "picked_this_week",
    "following",
    "then",
];

/// Reads the cases in `paths`: each is a case file or a directory whose `*.toml` files (not recursive, by
/// name; dot files skipped) are case files. Cases come in path order, then file order. Every problem in every
/// file is reported, as for rules; case names must be unique across all of them.
pub fn load_cases(paths: &[PathBuf]) -> Result<Vec<Case>, RulesError> {
    let mut diagnostics = Vec::new();
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(Result::ok)
                        .map(|entry| entry.path())
                        .filter(|path| super::is_rule_file(path))
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(error) => diagnostics
                    .push(Diagnostic::whole_file(path, format!("cannot read the test case directory: {error}"))),
            }
        } else {
            files.push(path.clone());
        }
    }
    let mut texts = Vec::with_capacity(files.len());
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => texts.push((file, text)),
            Err(error) => {
                diagnostics.push(Diagnostic::whole_file(&file, format!("cannot read this case file: {error}")))
            }
        }
    }
    let mut names: HashMap<String, String> = HashMap::new();
    let mut cases = Vec::new();
    for (path, text) in &texts {
        let source = Source { path, text };
        for (case, span) in parse_file(source, &mut diagnostics) {
            match names.get(&case.name) {
                Some(first) => diagnostics.push(source.at(
                    span,
                    format!("case name `{}` is already used at {first}; case names must be unique", case.name),
                )),
                None => {
                    names.insert(case.name.clone(), source.locate(span));
                    cases.push(case);
                }
            }
        }
    }
    if diagnostics.is_empty() { Ok(cases) } else { Err(RulesError { diagnostics }) }
}

/// The valid cases of one file, each with the span of its name.
fn parse_file(source: Source<'_>, diagnostics: &mut Vec<Diagnostic>) -> Vec<(Case, Range<usize>)> {
    let (document, errors) = DeTable::parse_recoverable(source.text);
    if !errors.is_empty() {
        for error in errors {
            let message = format!("invalid TOML: {}", error.message());
            diagnostics.push(source.at(error.span().unwrap_or(0..0), message));
        }
        return Vec::new();
    }
    let mut cases = Vec::new();
    for (key, value) in document.into_inner() {
        if key.get_ref() != "case" {
            let other = key.get_ref();
            let hint = did_you_mean(other, FILE_KEYS.iter().copied());
            let message = format!("unknown key `{other}`{hint}a case file holds [[case]] tables");
            diagnostics.push(source.at(key.span(), message));
            continue;
        }
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            diagnostics.push(source.at(span, "write each case as a [[case]] table (two brackets)".to_owned()));
            continue;
        };
        for item in items {
            let Some(raw) = deserialize::<RawCase>(source, item, "case", CASE_KEYS, diagnostics) else { continue };
            let at = raw.span();
            if let Some(case) = check(source, raw.into_inner(), at, diagnostics) {
                cases.push(case);
            }
        }
    }
    cases
}

/// Checks what serde cannot: one payload, readable; expected lines that say something followd can do.
fn check(
    source: Source<'_>,
    raw: RawCase,
    at: Range<usize>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<(Case, Range<usize>)> {
    let before = diagnostics.len();
    let name = raw.name.get_ref().trim().to_owned();
    if name.is_empty() {
        diagnostics.push(source.at(raw.name.span(), "case name is empty; give every case a unique name".to_owned()));
    }
    let payload = match (raw.payload, &raw.payload_file) {
        (Some(text), None) => Some(text.into_bytes()),
        (None, Some(file)) => {
            let path = source.path.parent().unwrap_or(Path::new("")).join(file.get_ref().trim());
            match std::fs::read(&path) {
                Ok(bytes) => Some(bytes),
                Err(error) => {
                    let message = format!("cannot read payload_file {}: {error}", path.display());
                    diagnostics.push(source.at(file.span(), message));
                    None
                }
            }
        }
        (Some(_), Some(file)) => {
            let message = "a case has either `payload` or `payload_file`, not both".to_owned();
            diagnostics.push(source.at(file.span(), message));
            None
        }
        (None, None) => {
            let message = "this case has no payload; add payload = '''{...}''' or payload_file = \"...\"".to_owned();
            diagnostics.push(source.at(at, message));
            None
        }
    };
    let mut expect = Vec::with_capacity(raw.expect.len());
    for line in &raw.expect {
        match normalize_op(line.get_ref()) {
            Ok(op) => expect.push(op),
            Err(message) => diagnostics.push(source.at(line.span(), message)),
        }
    }
    let time = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(text.trim()).ok().and_then(|t| u64::try_from(t.timestamp_millis()).ok())
    };
    let at = raw.at.as_ref().and_then(|at| match time(at.get_ref()) {
        Some(time) => Some(time),
        None => {
            let message = format!("`{}` is not a time; write RFC 3339, e.g. \"2026-12-24T10:00:00Z\"", at.get_ref());
            diagnostics.push(source.at(at.span(), message));
            None
        }
    });
    let mut counts = |written: &BTreeMap<Spanned<String>, u32>| {
        let mut counts = BTreeMap::new();
        for (user, &n) in written {
            match UserId::parse(user.get_ref().trim()) {
                Ok(id) => {
                    counts.insert(id, n);
                }
                Err(error) => {
                    diagnostics.push(source.at(user.span(), format!("the user id `{}` {error}", user.get_ref())))
                }
            }
        }
        counts
    };
    let picked_today = counts(&raw.picked_today);
    let picked_this_week = counts(&raw.picked_this_week);
    let mut following = BTreeMap::new();
    for (contact, users) in &raw.following {
        let mut ids = Vec::new();
        for user in users {
            match UserId::parse(user.get_ref().trim()) {
                Ok(id) => ids.push(id),
                Err(error) => {
                    diagnostics.push(source.at(user.span(), format!("the user id `{}` {error}", user.get_ref())))
                }
            }
        }
        following.insert(contact.trim().to_owned(), ids);
    }
    let mut steps = Vec::new();
    let mut last = at;
    for step in &raw.then {
        let Some(when) = time(step.at.get_ref()) else {
            let message =
                format!("`{}` is not a time; write RFC 3339, e.g. \"2026-12-24T10:00:00Z\"", step.at.get_ref());
            diagnostics.push(source.at(step.at.span(), message));
            continue;
        };
        if last.is_some_and(|last| when < last) {
            diagnostics
                .push(source.at(step.at.span(), "steps go forward in time: this one is before the one above".into()));
        }
        last = Some(when);
        expect.push(format!("at {}", step.at.get_ref().trim()));
        for line in &step.expect {
            match normalize_op(line.get_ref()) {
                Ok(op) => expect.push(op),
                Err(message) => diagnostics.push(source.at(line.span(), message)),
            }
        }
        let label = step.at.get_ref().trim().to_owned();
        steps.push(Step { at: when, label, payload: step.payload.clone().map(String::into_bytes) });
    }
    if !steps.is_empty() && at.is_none() {
        let message = "a case with [[case.then]] steps needs its own `at` (when the first step happens)";
        diagnostics.push(source.at(raw.name.span(), message.to_owned()));
    }
    if diagnostics.len() > before {
        return None;
    }
    let (line, _) = super::diagnostic::position(source.text, raw.name.span().start);
    let case = Case {
        name,
        file: source.path.to_path_buf(),
        line,
        format: raw.source_format.unwrap_or(Format::Generic),
        payload: payload?,
        known_tags: raw.known_tags,
        expect,
        at,
        picked_today,
        picked_this_week,
        following,
        steps,
    };
    Some((case, raw.name.span()))
}

/// An operation line in its one spelling (`add usr_1`, `remove usr_1`, `remove_all`), or why it is not one.
pub(super) fn normalize_op(line: &str) -> Result<String, String> {
    // A step's cover changes name their contact (`c-1: add usr_bob`), an opportunity's its opportunity
    // (`opportunity opp-1: add usr_bob`).
    let subject = |s: &str| {
        let words: Vec<&str> = s.split_whitespace().collect();
        matches!(words.as_slice(), [_] | ["opportunity", _]).then(|| words.join(" "))
    };
    if let Some((subject, op)) = line.split_once(": ").and_then(|(s, op)| Some((subject(s)?, op))) {
        return normalize_op(op).map(|op| format!("{subject}: {op}"));
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let bad = || {
        format!(
            "`{}` is not an operation; write \"add <user id>\", \"remove <user id>\", \"remove_all\" or \
             \"dead_letter\" (a round robin's turn set aside: every member at their cap)",
            line.trim()
        )
    };
    match words.as_slice() {
        ["remove_all"] => Ok("remove_all".to_owned()),
        ["dead_letter"] => Ok("dead_letter".to_owned()),
        [verb @ ("add" | "remove"), user] => match UserId::parse(user) {
            Ok(user) => Ok(format!("{verb} {user}")),
            Err(error) => Err(format!("the user id in `{}` {error}", line.trim())),
        },
        _ => Err(bad()),
    }
}
