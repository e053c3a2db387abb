//! Follower rules: TOML files that say, for each kind of CRM event, which users to add to or remove from the
//! contact's followers. This module turns a directory of them into an immutable, indexed [`RuleSet`] and turns
//! an [`Event`] into the [`Match`]es it fires. It knows nothing of queues or the CRM API.
//!
//! Exports, by file: `RuleSet` here (load, compile, [`RuleSet::evaluate`], [`RuleSet::explain`]);
//! [`LiveRules`] in `live.rs` (the set in service, swapped whole on reload, with its reload status) and its
//! file watcher and SIGHUP handler in `watch.rs`; rule test cases ([`load_cases`], [`compare`], [`OpLines`]) in
//! `cases.rs`. Compiling is `model.rs` (the file as written, with spans), `aliases.rs` and `compile.rs`
//! (checks); `matching.rs` is the index; `diagnostic.rs` the `file:line:column` errors.
//!
//! The format (`DESIGN.md`, "Rule files"): an optional `[users]` table of aliases (`alice = "usr_1"`, or a team
//! `sales = ["alice", "usr_2"]` whose members are aliases, expanded recursively, or literal user ids) and
//! `[[rule]]` tables with `name`, `enabled`, `locations`, `when` and `then`. The whole set is checked at once and
//! every problem is reported at `file:line:column` ([`RulesError`]); a set with any problem is not built.
//!
//! Matching:
//! - tags, sources, pipelines and stages compare with surrounding white space trimmed and case ignored, as the
//!   CRM treats tags; a pipeline or stage may be written by id or by name, and matches events that carry that
//!   same id or name (followd does not map one to the other);
//! - a rule with `locations` fires only for events of those locations (ids compare exactly);
//! - `from_stage` matches only events that know their previous stage;
//! - disabled rules are validated and counted but never fire;
//! - matches come in rule order (files by path, then position in the file) and each match's actions in the
//!   order remove_all, remove, add, round_robin, whatever order they were written in;
//! - `round_robin` may name a single user (a pool of one) or a non-empty team.
//!
//! Loading: `*.toml` files directly in the directory, by name; names starting with `.` (editor lock and swap
//! files) are skipped. An empty directory is a valid, empty set.

mod aliases;
mod case_diff;
mod cases;
mod compile;
mod diagnostic;
mod explain;
mod live;
mod matching;
mod model;
pub mod report;
#[cfg(test)]
mod tests;
mod watch;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use case_diff::{CaseOutcome, OpLines, compare};
pub use cases::{Case, load_cases};
pub use compile::MAX_FOLLOWERS;
pub use diagnostic::{Diagnostic, RulesError};
pub use explain::{Consideration, Outcome};
pub use live::{LiveRules, ReloadStatus};
pub use watch::{DEBOUNCE, WatchError};

pub use self::model::Target;
pub use crate::domain::followers::Action;
use crate::domain::followers::is_stand_in;
use crate::event::Event;

/// A compiled, validated rule set. Immutable and `Send + Sync`: share it in an `Arc` and swap it whole.
pub struct RuleSet {
    index: matching::Index,
    summary: Summary,
    /// `[[cover]]`, and who is away when (`[availability]`), which the cover task reads.
    covers: Vec<crate::domain::cover::Cover>,
    availability: Arc<crate::domain::availability::Availability>,
}

/// The users one rule can make followers, and where (see [`RuleSet::addable_users`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addable {
    pub rule: Arc<str>,
    /// `None`: every location.
    pub locations: Option<Vec<crate::event::LocationId>>,
    pub users: Vec<crate::event::UserId>,
}

impl RuleSet {
    /// Loads every `*.toml` file directly in `dir` (not recursive; sorted by file name), compiles the whole set.
    pub fn load_dir(dir: &Path) -> Result<RuleSet, RulesError> {
        let entries = std::fs::read_dir(dir).map_err(|error| RulesError {
            diagnostics: vec![Diagnostic::whole_file(
                dir,
                format!("cannot read the rules directory: {error}; check `rules_dir` (or --rules)"),
            )],
        })?;
        let mut problems = Vec::new();
        let mut paths = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) if is_rule_file(&entry.path()) => paths.push(entry.path()),
                Ok(_) => {}
                Err(error) => {
                    problems.push(Diagnostic::whole_file(dir, format!("cannot list the rules directory: {error}")))
                }
            }
        }
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            match std::fs::read_to_string(&path) {
                Ok(text) => files.push((path, text)),
                Err(error) => problems.push(Diagnostic::whole_file(
                    &path,
                    format!("cannot read this rule file: {error}; fix its permissions or encoding (UTF-8)"),
                )),
            }
        }
        Self::build(&files, problems)
    }

    /// Compiles from in-memory files: (display path, contents). Used by load_dir and tests. Files are taken in
    /// path order, whatever order they are given in, so rule order does not depend on the caller.
    pub fn compile(files: &[(PathBuf, String)]) -> Result<RuleSet, RulesError> {
        Self::build(files, Vec::new())
    }

    fn build(files: &[(PathBuf, String)], problems: Vec<Diagnostic>) -> Result<RuleSet, RulesError> {
        let compiled = compile::compile(files, problems)?;
        Ok(RuleSet {
            index: matching::Index::build(compiled.rules),
            summary: compiled.summary,
            covers: compiled.covers,
            availability: compiled.availability,
        })
    }

    /// Every enabled rule with the locations it is limited to (`None`: every location) and the users it can
    /// make followers (`add`, a round robin's members and overflow), for `rules check --online`; then each
    /// `[[cover]]`'s `by`, under the name `cover <user> by <by>`, for every location.
    pub fn addable_users(&self) -> Vec<Addable> {
        let mut out = Vec::new();
        for rule in self.index.all().iter().filter(|rule| rule.enabled) {
            // Removals add nobody, and `@assigned` is whoever the CRM assigns: nothing to check beforehand.
            let adding = rule.actions.iter().filter(|action| !matches!(action, Action::Remove(_)));
            let mut users: Vec<_> = adding.flat_map(Action::users).filter(|u| !is_stand_in(u)).cloned().collect();
            users.dedup();
            if !users.is_empty() {
                let locations = rule.locations.as_deref().map(<[_]>::to_vec);
                out.push(Addable { rule: Arc::clone(&rule.name), locations, users });
            }
        }
        for cover in &self.covers {
            out.push(Addable { rule: Arc::from(cover.rule()), locations: None, users: vec![cover.by.clone()] });
        }
        out
    }

    /// The enabled rules (and covers) that can make `user` a follower, by name: what still names a user the CRM
    /// deleted.
    pub fn rules_naming(&self, user: &crate::event::UserId) -> Vec<Arc<str>> {
        self.addable_users().into_iter().filter(|a| a.users.contains(user)).map(|a| a.rule).collect()
    }

    /// Every user the enabled rules (and covers) name by email (`email:<address>`), once each: those a
    /// reconcile must look up to compare with what the CRM holds.
    pub fn users_by_email(&self) -> Vec<crate::event::UserId> {
        let actions = self.index.all().iter().filter(|rule| rule.enabled).flat_map(|rule| &rule.actions);
        let covers = self.covers.iter().map(|cover| &cover.by);
        let mut named: Vec<crate::event::UserId> = Vec::new();
        for user in actions.flat_map(Action::users).chain(covers).filter(|user| user.email().is_some()) {
            if !named.contains(user) {
                named.push(user.clone());
            }
        }
        named
    }

    /// The `[[cover]]` entries of the rule files.
    pub fn covers(&self) -> &[crate::domain::cover::Cover] {
        &self.covers
    }

    /// Who is away when (`[availability]`).
    pub fn availability(&self) -> &crate::domain::availability::Availability {
        &self.availability
    }

    /// The rules that fire for this event, in rule order (files by name, then position in file).
    pub fn evaluate(&self, event: &Event) -> Vec<Match> {
        self.index.evaluate(event)
    }

    /// The pipeline and stage values (normalized) that enabled `stage_changed` rules for `location` compare
    /// with, per rule: to warn about a name the location's pipelines do not have, since such a rule can never
    /// fire there.
    pub fn stage_values(&self, location: &crate::event::LocationId) -> Vec<(Arc<str>, String)> {
        let mut values = Vec::new();
        for rule in self.index.stage_rules() {
            if rule.locations.as_ref().is_some_and(|scope| scope.binary_search(location).is_err()) {
                continue;
            }
            for value in [&rule.pipeline, &rule.key, &rule.from_stage].into_iter().flatten() {
                values.push((Arc::clone(&rule.name), value.to_string()));
            }
        }
        values
    }

    /// The tags that enabled `tag_removed` rules in scope for `location` name (normalized, sorted, once each):
    /// a reconcile asks those rules about each tag a contact does not have. Rules without a tag are left out.
    pub fn removal_tags(&self, location: &crate::event::LocationId) -> Vec<String> {
        let mut tags: Vec<String> = self
            .index
            .all()
            .iter()
            .filter(|rule| rule.enabled && rule.kind == model::Kind::TagRemoved)
            .filter(|rule| rule.locations.as_ref().is_none_or(|scope| scope.binary_search(location).is_ok()))
            .filter_map(|rule| rule.key.as_deref().map(str::to_owned))
            .collect();
        tags.sort();
        tags.dedup();
        tags
    }

    /// Every rule of the event's kind, enabled or not, in rule order, with whether it fired (and its actions)
    /// or why not. The fired ones are exactly [`RuleSet::evaluate`]'s matches. Scans the whole set: for people
    /// asking "why", not for the request path.
    pub fn explain(&self, event: &Event) -> Vec<Consideration> {
        explain::explain(&self.index, event)
    }

    /// What the set holds, for logs and `/readyz`.
    pub fn summary(&self) -> Summary {
        self.summary
    }
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet").field("summary", &self.summary).finish_non_exhaustive()
    }
}

/// A `*.toml` file (or a link to one); dot files are left alone, since editors write their lock and swap files
/// next to the file being edited. Anything that is not a directory is taken, so a dangling link is reported
/// rather than silently skipped.
fn is_rule_file(path: &Path) -> bool {
    let visible = path.file_name().and_then(|name| name.to_str()).is_some_and(|name| !name.starts_with('.'));
    visible && path.extension().is_some_and(|extension| extension == "toml") && !path.is_dir()
}

/// Counts of what a rule set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Every rule, enabled or not.
    pub rules: usize,
    pub enabled: usize,
    pub files: usize,
    /// Aliases that are a single user.
    pub users: usize,
    /// Aliases that are a list (a team).
    pub teams: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Singular for one, as people read it ("1 file", not "1 files"); the status page and `rules check` show it.
        fn count(n: usize, noun: &str) -> String {
            if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
        }
        let Self { rules, enabled, files, users, teams } = *self;
        write!(
            f,
            "{} ({enabled} enabled) in {}, {}, {}",
            count(rules, "rule"),
            count(files, "file"),
            count(users, "user"),
            count(teams, "team")
        )
    }
}

/// One rule that fired, and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub rule: Arc<str>,
    /// In application order: remove_all, remove, add, round_robin.
    pub actions: Vec<Action>,
    /// The rule's own `ownership`; `None`: the configuration's `followers.ownership` applies.
    pub ownership: Option<crate::domain::followers::Ownership>,
    /// `for`: how long (ms) the followers the rule adds stay; `None`: until something removes them.
    pub lasts: Option<u64>,
    /// `skip_if_following`: the rule does nothing for a contact one of these users already follows (decided
    /// when the operations are delivered, against the followers the CRM lists then).
    pub skip_if_following: Option<Arc<[crate::event::UserId]>>,
    /// Whose followers the actions change: the contact's, or the event's opportunity's.
    pub target: Target,
}
