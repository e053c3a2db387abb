//! `[users]` aliases, resolved across every file of a rule set into user ids.
//!
//! Aliases are global: a rule in one file may name a team defined in another, so the same alias in two files
//! is an error rather than a silent override. A single alias is always a user id (`alice = "usr_1"`); a team
//! lists aliases or literal ids (`sales = ["alice", "usr_2"]`) and is expanded recursively, duplicates dropped,
//! first appearance kept. A cycle (a team containing itself, directly or through others) is reported once,
//! at the member that closes it.
//!
//! A single alias whose value is another alias's name (`lead = "alice"`) is rejected: it would silently become
//! the user id "alice". `lead = ["alice"]` says what was meant.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_spanned::Spanned;

use super::diagnostic::{Diagnostic, Source};
use super::model::{AliasValue, RawAlias};
use crate::event::UserId;

/// Teams may nest, but not without bound: recursion depth stays small whatever the input.
const MAX_NESTING: usize = 32;

/// What an alias stands for once resolved.
pub(super) enum Resolved {
    User(UserId),
    /// Expanded, without duplicates, in order of first appearance.
    Team(Arc<[UserId]>),
    /// Invalid; the reason was reported where it was defined, so references to it stay quiet.
    Broken,
}

/// Every alias of a rule set.
pub(super) struct Aliases {
    resolved: HashMap<String, Resolved>,
    /// Sorted, for "known aliases: ..." and "did you mean".
    names: Vec<String>,
    pub users: usize,
    pub teams: usize,
}

impl Aliases {
    pub fn get(&self, name: &str) -> Option<&Resolved> {
        self.resolved.get(name)
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }
}

/// One alias definition and the file it is in.
#[derive(Clone, Copy)]
struct Definition<'a> {
    source: Source<'a>,
    alias: &'a RawAlias,
}

/// Collects the aliases of every file (in rule order) and resolves them, reporting each problem.
pub(super) fn resolve<'a>(
    files: impl IntoIterator<Item = (Source<'a>, &'a [RawAlias])>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Aliases {
    let mut definitions: HashMap<&'a str, Definition<'a>> = HashMap::new();
    let mut order = Vec::new();
    let (mut users, mut teams) = (0, 0);
    for (source, aliases) in files {
        for alias in aliases {
            let name = alias.name.get_ref().as_str();
            if let Some(first) = definitions.get(name) {
                let at = first.source.locate(first.alias.name.span());
                let message = format!(
                    "alias `{name}` is already defined at {at}; aliases are global across files, so rename or \
                     remove one"
                );
                diagnostics.push(source.at(alias.name.span(), message));
                continue;
            }
            match alias.value {
                AliasValue::User(_) => users += 1,
                AliasValue::Team(_) => teams += 1,
            }
            definitions.insert(name, Definition { source, alias });
            order.push(name);
        }
    }
    let mut resolver = Resolver { definitions, done: HashMap::new(), stack: Vec::new(), diagnostics };
    for name in &order {
        resolver.visit(name);
    }
    let resolved: HashMap<String, Resolved> =
        resolver.done.into_iter().map(|(name, resolved)| (name.to_owned(), resolved)).collect();
    let mut names: Vec<String> = order.into_iter().map(str::to_owned).collect();
    names.sort();
    Aliases { resolved, names, users, teams }
}

/// Depth-first resolution; `stack` holds the teams being expanded, which is how a cycle is seen.
struct Resolver<'a, 'd> {
    definitions: HashMap<&'a str, Definition<'a>>,
    done: HashMap<&'a str, Resolved>,
    stack: Vec<&'a str>,
    diagnostics: &'d mut Vec<Diagnostic>,
}

impl<'a> Resolver<'a, '_> {
    /// Resolves `name` (once); false when it is broken.
    fn visit(&mut self, name: &'a str) -> bool {
        if let Some(resolved) = self.done.get(name) {
            return !matches!(resolved, Resolved::Broken);
        }
        let Some(definition) = self.definitions.get(name).copied() else {
            return false;
        };
        let resolved = match &definition.alias.value {
            AliasValue::User(id) => self.user(definition, id),
            AliasValue::Team(members) => self.team(name, definition, members),
        };
        let ok = !matches!(resolved, Resolved::Broken);
        self.done.insert(name, resolved);
        ok
    }

    fn user(&mut self, definition: Definition<'a>, id: &Spanned<String>) -> Resolved {
        let name = definition.alias.name.get_ref();
        let text = id.get_ref().trim();
        let problem = if self.definitions.contains_key(text) {
            format!(
                "alias `{name}` = \"{text}\" names another alias, but a string here is a user id; \
                 write {name} = [\"{text}\"] for a team of one, or give the CRM user id"
            )
        } else if let Some(email) = text.strip_prefix(crate::event::EMAIL_PREFIX) {
            // A user named by email: looked up in each location's users at delivery (`deliver/emails.rs`).
            let email = email.trim().to_lowercase();
            let valid = email.split_once('@').is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
            match UserId::parse(&format!("{}{email}", crate::event::EMAIL_PREFIX)) {
                Ok(id) if valid && !email.contains(char::is_whitespace) => return Resolved::User(id),
                _ => format!(
                    "alias `{name}` = \"{text}\" is not an email address; write \"email:alice@example.com\" or a \
                     CRM user id"
                ),
            }
        } else {
            match UserId::parse(text) {
                Ok(id) => return Resolved::User(id),
                Err(error) => format!("the user id of alias `{name}` {error}; write the CRM user id, e.g. \"usr_...\""),
            }
        };
        self.diagnostics.push(definition.source.at(id.span(), problem));
        Resolved::Broken
    }

    fn team(&mut self, name: &'a str, definition: Definition<'a>, members: &[Spanned<String>]) -> Resolved {
        if self.stack.len() >= MAX_NESTING {
            let message = format!("team `{name}` nests teams more than {MAX_NESTING} deep; list its users directly");
            self.diagnostics.push(definition.source.at(definition.alias.name.span(), message));
            return Resolved::Broken;
        }
        self.stack.push(name);
        let mut users = Vec::new();
        let mut ok = true;
        for member in members {
            let text = member.get_ref().trim();
            if let Some((&alias, _)) = self.definitions.get_key_value(text) {
                if let Some(start) = self.stack.iter().position(|&open| open == alias) {
                    let path: Vec<String> =
                        self.stack[start..].iter().chain([&alias]).map(|step| format!("`{step}`")).collect();
                    let message = format!(
                        "alias cycle {}: a team cannot contain itself; remove `{alias}` from `{name}`",
                        path.join(" -> ")
                    );
                    self.diagnostics.push(definition.source.at(member.span(), message));
                    ok = false;
                } else if self.visit(alias) {
                    match self.done.get(alias) {
                        Some(Resolved::User(id)) => users.push(id.clone()),
                        Some(Resolved::Team(ids)) => users.extend(ids.iter().cloned()),
                        Some(Resolved::Broken) | None => ok = false,
                    }
                } else {
                    ok = false;
                }
            } else {
                match UserId::parse(text) {
                    Ok(id) => users.push(id),
                    Err(error) => {
                        let message = format!("a member of team `{name}` {error}; write an alias or a user id");
                        self.diagnostics.push(definition.source.at(member.span(), message));
                        ok = false;
                    }
                }
            }
        }
        self.stack.pop();
        if !ok {
            return Resolved::Broken;
        }
        let mut seen = HashSet::new();
        users.retain(|user| seen.insert(user.clone()));
        Resolved::Team(users.into())
    }
}
