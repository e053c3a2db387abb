//! Validation and resolution of a whole rule set: from file texts to [`CompiledRule`]s, or to every problem
//! found, each at `file:line:column` with a message that says how to fix it.
//!
//! Files are taken in path order, which is rule order. Checks never stop at the first problem: a file that is
//! not valid TOML contributes only its syntax errors, and the other files are still checked. Because aliases are
//! global, a file that could not be read or parsed may hide aliases; "unknown alias" messages then say so.

use std::collections::HashMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use serde_spanned::Spanned;

use super::aliases::{self, Aliases, Resolved};
use super::diagnostic::{Diagnostic, RulesError, Source, did_you_mean};
use super::matching::{CompiledRule, normalize};
use crate::domain::availability::{Availability, parse_hours, parse_range, parse_zone};
use crate::domain::cover::Cover;
use crate::domain::followers::{ASSIGNED, PREVIOUSLY_ASSIGNED, is_stand_in};
use crate::domain::pick::{Caps, Member};
use crate::domain::rotation::Rotation;

/// The largest weight a round-robin member may have.
const MAX_WEIGHT: u32 = 1000;
use super::model::{self, Kind, RawRule, Target, Then, When};
use super::{Action, Summary};
use crate::event::{LocationId, UserId};

pub use crate::domain::followers::MAX_FOLLOWERS;

/// How many alias names an "unknown alias" message lists before it says "and N more".
const LISTED_ALIASES: usize = 20;

/// Compiles `files`; `unreadable` holds problems found before (files or a directory that could not be read),
/// which are reported together with the rest.
pub(super) fn compile(files: &[(PathBuf, String)], unreadable: Vec<Diagnostic>) -> Result<Compiled, RulesError> {
    let mut ordered: Vec<&(PathBuf, String)> = files.iter().collect();
    ordered.sort_by(|a, b| a.0.cmp(&b.0));
    let mut missing: Vec<String> = unreadable.iter().map(|d| d.file.display().to_string()).collect();
    let mut diagnostics = unreadable;
    let mut parsed = Vec::with_capacity(ordered.len());
    for (path, text) in &ordered {
        let source = Source { path, text };
        match model::parse_file(source, &mut diagnostics) {
            Some(file) => parsed.push((source, file)),
            None => missing.push(path.display().to_string()),
        }
    }
    let files_aliases = parsed.iter().map(|(source, file)| (*source, file.aliases.as_slice()));
    let aliases = aliases::resolve(files_aliases, &mut diagnostics);
    let note = if missing.is_empty() {
        String::new()
    } else {
        format!(" (note: {} could not be read or parsed, so aliases defined there are missing)", missing.join(", "))
    };
    let availability = Arc::new(availability(&parsed, &aliases, &mut diagnostics));
    let covers = covers(&parsed, &aliases, &mut diagnostics);
    let mut checker = Checker {
        aliases: &aliases,
        availability: Arc::clone(&availability),
        note,
        names: HashMap::new(),
        diagnostics: &mut diagnostics,
    };
    let mut rules = Vec::new();
    let mut total = 0;
    for (source, file) in &parsed {
        for raw in &file.rules {
            total += 1;
            rules.extend(checker.rule(*source, raw));
        }
    }
    if !diagnostics.is_empty() {
        // Stable: problems at one position keep the order they were found in.
        diagnostics.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        return Err(RulesError { diagnostics });
    }
    let summary = Summary {
        rules: total,
        enabled: rules.iter().filter(|rule| rule.enabled).count(),
        files: files.len(),
        users: aliases.users,
        teams: aliases.teams,
    };
    Ok(Compiled { rules, summary, covers, availability })
}

/// A compiled rule set's parts.
pub(super) struct Compiled {
    pub rules: Vec<CompiledRule>,
    pub summary: Summary,
    pub covers: Vec<Cover>,
    pub availability: Arc<Availability>,
}

/// The `[[cover]]` entries of every file: each names two users by alias, not the same, once.
fn covers(parsed: &[(Source<'_>, model::RawFile)], aliases: &Aliases, diagnostics: &mut Vec<Diagnostic>) -> Vec<Cover> {
    let mut covers: Vec<Cover> = Vec::new();
    for (source, file) in parsed {
        for raw in &file.covers {
            let mut user = |name: &Spanned<String>, key: &str| {
                let text = name.get_ref().trim();
                let message = match aliases.get(text) {
                    // The contacts to cover are found by the id in followd's memory of the followers it added.
                    Some(Resolved::User(id)) if key == "user" && id.email().is_some() => format!(
                        "`{text}` is named by email; the `user` of a [[cover]] must be a user id (followd finds \
                         their contacts by id; `by` may be an email)"
                    ),
                    Some(Resolved::User(id)) => return Some(id.clone()),
                    Some(Resolved::Team(_)) => format!("`{text}` is a team; `{key}` in [[cover]] names one user"),
                    Some(Resolved::Broken) => return None,
                    None => format!(
                        "unknown alias `{text}` in [[cover]]{}names there must be aliases defined under [users]",
                        did_you_mean(text, aliases.names().iter().map(String::as_str))
                    ),
                };
                diagnostics.push(source.at(name.span(), message));
                None
            };
            let (who, by) = (user(&raw.get_ref().user, "user"), user(&raw.get_ref().by, "by"));
            let (Some(who), Some(by)) = (who, by) else { continue };
            let cover = Cover { user: who, by };
            if cover.user == cover.by {
                let message = format!("{} cannot cover for themselves; `by` names someone else", cover.user);
                diagnostics.push(source.at(raw.get_ref().by.span(), message));
            } else if covers.contains(&cover) {
                let message = format!("{} already covers for {}: each [[cover]] once", cover.by, cover.user);
                diagnostics.push(source.at(raw.span(), message));
            } else {
                covers.push(cover);
            }
        }
    }
    covers
}

/// The rule checks, with what they share across files.
/// The `[availability]` entries of every file, names resolved through the aliases (a team: each member).
fn availability(
    parsed: &[(Source<'_>, model::RawFile)],
    aliases: &Aliases,
    diagnostics: &mut Vec<Diagnostic>,
) -> Availability {
    let mut availability = Availability::default();
    for (source, file) in parsed {
        for entry in &file.availability {
            let name = entry.name.get_ref().trim();
            let users: Vec<UserId> = match aliases.get(name) {
                Some(Resolved::User(id)) => vec![id.clone()],
                Some(Resolved::Team(ids)) => ids.to_vec(),
                Some(Resolved::Broken) => continue,
                None => {
                    let message = format!(
                        "unknown alias `{name}` in [availability]{}names there must be aliases defined under [users]",
                        did_you_mean(name, aliases.names().iter().map(String::as_str))
                    );
                    diagnostics.push(source.at(entry.name.span(), message));
                    continue;
                }
            };
            for range in &entry.away {
                match parse_range(range.get_ref()) {
                    Ok(days) => users.iter().for_each(|user| availability.add(user.clone(), days)),
                    Err(message) => diagnostics.push(source.at(range.span(), message)),
                }
            }
            if let Some(zone) = &entry.time_zone {
                match parse_zone(zone.get_ref()) {
                    Ok(zone) => users.iter().for_each(|user| availability.set_zone(user.clone(), zone)),
                    Err(message) => diagnostics.push(source.at(zone.span(), message)),
                }
            }
            match (&entry.hours, &entry.days) {
                (Some(hours), days) => {
                    match parse_hours(hours.get_ref(), days.as_ref().map(|d| d.get_ref().as_str())) {
                        Ok(hours) => users.iter().for_each(|user| availability.set_hours(user.clone(), hours)),
                        // The span of the part that is wrong: a day name is in `days`.
                        Err(message) => {
                            let at = match days {
                                Some(days) if message.contains("is not a day") => days.span(),
                                _ => hours.span(),
                            };
                            diagnostics.push(source.at(at, message));
                        }
                    }
                }
                (None, Some(days)) => {
                    let message = "`days` are the days of the working `hours`; give hours = \"09:00-17:00\" too";
                    diagnostics.push(source.at(days.span(), message.to_owned()));
                }
                (None, None) => {}
            }
        }
    }
    availability
}

struct Checker<'a> {
    aliases: &'a Aliases,
    /// Who is away when (`[availability]`, all files): every round robin skips them then.
    availability: Arc<Availability>,
    /// Appended to "unknown alias" messages when some file's aliases could not be read.
    note: String,
    /// Rule name → where it was first defined, for the duplicate check across files. Positions are turned
    /// into `line:column` only for a duplicate: doing it for every rule would make compiling quadratic.
    names: HashMap<&'a str, (Source<'a>, Range<usize>)>,
    diagnostics: &'a mut Vec<Diagnostic>,
}

/// A rule's `when`, normalized for the index.
struct Conditions {
    kind: Kind,
    key: Option<Box<str>>,
    pipeline: Option<Box<str>>,
    from_stage: Option<Box<str>>,
}

/// Bounds on `for`.
const MIN_LASTS: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_LASTS: std::time::Duration = std::time::Duration::from_secs(10 * 366 * 86_400);

impl<'a> Checker<'a> {
    /// Checks one rule; returns it compiled when nothing about it is wrong.
    fn rule(&mut self, source: Source<'a>, raw: &'a RawRule) -> Option<CompiledRule> {
        let before = self.diagnostics.len();
        let name: Arc<str> = raw.head.as_ref().map_or("", |head| head.name.get_ref().trim()).into();
        let locations = raw.head.as_ref().map(|head| {
            self.check_name(source, &head.name);
            head.locations.as_ref().map(|locations| self.locations(source, locations))
        });
        let conditions = raw.when.as_ref().map(|when| self.when(source, when));
        let actions = raw.then.as_ref().map(|then| self.then(source, then, &name));
        let lasts = raw.then.as_ref().and_then(|then| self.lasts(source, then.get_ref()));
        let skip_if_following = raw.head.as_ref().and_then(|head| head.skip_if_following.as_ref()).and_then(|team| {
            match self.lookup(source, team, "skip_if_following")? {
                Resolved::User(id) => Some(Arc::from([id.clone()])),
                Resolved::Team(ids) if ids.is_empty() => {
                    let message =
                        format!("team `{}` is empty, so skip_if_following never skips", team.get_ref().trim());
                    self.report(source, team.span(), message);
                    None
                }
                Resolved::Team(ids) => Some(ids.clone()),
                Resolved::Broken => None,
            }
        });
        let (Some(head), Some(locations), Some(conditions), Some(actions)) =
            (&raw.head, locations, conditions, actions)
        else {
            return None;
        };
        let target = self.target(source, raw, head, &conditions, &actions);
        if self.diagnostics.len() > before {
            return None;
        }
        Some(CompiledRule {
            name,
            enabled: head.enabled,
            kind: conditions.kind,
            key: conditions.key,
            pipeline: conditions.pipeline,
            from_stage: conditions.from_stage,
            locations,
            actions,
            ownership: head.ownership,
            lasts,
            skip_if_following,
            target,
        })
    }

    /// `target`, and where `@assigned` and `@previously_assigned` may be used: an opportunity's followers change
    /// only on events about an opportunity, and an event says an assignee only where it is about one.
    fn target(
        &mut self,
        source: Source<'_>,
        raw: &RawRule,
        head: &model::RuleHead,
        conditions: &Conditions,
        actions: &[Action],
    ) -> Target {
        let then_span = raw.then.as_ref().map_or(0..0, Spanned::span);
        let names = |wanted: &str| {
            actions.iter().any(|a| matches!(a, Action::Add(u) | Action::Remove(u) if u.as_str() == wanted))
        };
        let kind = conditions.kind;
        if names(ASSIGNED) && !matches!(kind, Kind::AssignedChanged | Kind::StageChanged) {
            let message = format!(
                "`@assigned` needs an event that says an assignee (assigned_changed, stage_changed); {} events do not",
                kind.name()
            );
            self.report(source, then_span.clone(), message);
        }
        if names(PREVIOUSLY_ASSIGNED) && kind != Kind::AssignedChanged {
            let message =
                format!("`@previously_assigned` is known only on assigned_changed events, not {}", kind.name());
            self.report(source, then_span, message);
        }
        let Some(target) = &head.target else { return Target::Contact };
        if *target.get_ref() == Target::Opportunity {
            let about_opportunity = match kind {
                Kind::StageChanged => true,
                Kind::AssignedChanged => conditions.key.as_deref() == Some("opportunity"),
                _ => false,
            };
            if !about_opportunity {
                let message = "target = \"opportunity\" changes the followers of the event's opportunity: use it on \
                               stage_changed, or on assigned_changed with record = \"opportunity\"";
                self.report(source, target.span(), message.to_owned());
            }
            if let Some(team) = &head.skip_if_following {
                let message = "skip_if_following reads a contact's followers; it cannot be used with \
                               target = \"opportunity\"";
                self.report(source, team.span(), message.to_owned());
            }
        }
        *target.get_ref()
    }

    /// `for`: how long the followers the rule adds stay, in ms: from a second (the removal is queued within
    /// `queue.lease / 4` of its time) to ten years. A rule with `for` must add someone.
    fn lasts(&mut self, source: Source<'_>, spec: &Then) -> Option<u64> {
        let written = spec.lasts.as_ref()?;
        let text = written.get_ref().trim();
        let adds = spec.add.as_ref().is_some_and(|a| !a.get_ref().is_empty()) || spec.round_robin.is_some();
        if !adds {
            let message = "`for` says how long added followers stay; this rule adds none (give add or round_robin)";
            self.report(source, written.span(), message.to_owned());
            return None;
        }
        match humantime::parse_duration(text) {
            Ok(d) if d >= MIN_LASTS && d <= MAX_LASTS => u64::try_from(d.as_millis()).ok(),
            Ok(_) => {
                let message = format!("for = \"{text}\": a follower stays at least 1 second and at most 10 years");
                self.report(source, written.span(), message);
                None
            }
            Err(error) => {
                let message =
                    format!("for = \"{text}\" is not a duration ({error}); write e.g. \"14d\", \"8h\", \"90m\"");
                self.report(source, written.span(), message);
                None
            }
        }
    }

    fn report(&mut self, source: Source<'_>, span: Range<usize>, message: String) {
        self.diagnostics.push(source.at(span, message));
    }

    fn check_name(&mut self, source: Source<'a>, name: &'a Spanned<String>) {
        let text = name.get_ref().trim();
        if text.is_empty() {
            let message = "rule name is empty; give every rule a unique name".to_owned();
            self.report(source, name.span(), message);
        } else if let Some((first_source, first_span)) = self.names.get(text) {
            let first = first_source.locate(first_span.clone());
            let message =
                format!("rule name `{text}` is already used at {first}; rule names must be unique across all files");
            self.report(source, name.span(), message);
        } else {
            self.names.insert(text, (source, name.span()));
        }
    }

    fn locations(&mut self, source: Source<'_>, locations: &Spanned<Vec<Spanned<String>>>) -> Box<[LocationId]> {
        if locations.get_ref().is_empty() {
            let message = "`locations` is empty, so this rule could never fire; list location ids, or remove \
                           `locations` to apply the rule to every location";
            self.report(source, locations.span(), message.to_owned());
        }
        let mut ids = Vec::with_capacity(locations.get_ref().len());
        for location in locations.get_ref() {
            match LocationId::parse(location.get_ref()) {
                Ok(id) => ids.push(id),
                Err(error) => self.report(source, location.span(), format!("location id {error}")),
            }
        }
        ids.sort();
        ids.dedup();
        ids.into()
    }

    fn when(&mut self, source: Source<'_>, when: &Spanned<When>) -> Conditions {
        let conditions = when.get_ref();
        let kind = *conditions.event.get_ref();
        let event = kind.name();
        let allowed = kind.conditions();
        for (key, value) in conditions.conditions() {
            if !allowed.contains(&key) {
                let message = format!(
                    "`{key}` is not a condition of {event} events{}{event} takes: {}",
                    did_you_mean(key, allowed.iter().copied()),
                    allowed.join(", ")
                );
                self.report(source, value.span(), message);
            } else if value.get_ref().trim().is_empty() {
                let message = format!("`{key}` is empty; write the value to match, or remove `{key}` to match any");
                self.report(source, value.span(), message);
            }
        }
        if matches!(kind, Kind::TagAdded | Kind::TagRemoved) && conditions.tag.is_none() {
            let message = format!("{event} needs a `tag`, e.g. when = {{ event = \"{event}\", tag = \"vip\" }}");
            self.report(source, when.span(), message);
        }
        let normalized = |value: &Option<Spanned<String>>| value.as_ref().map(|v| normalize(v.get_ref()).into());
        let key = match kind {
            Kind::TagAdded | Kind::TagRemoved => &conditions.tag,
            Kind::ContactCreated => &conditions.source,
            Kind::StageChanged => &conditions.stage,
            Kind::AssignedChanged => &conditions.record,
        };
        if let Some(record) = &conditions.record
            && !matches!(normalize(record.get_ref()).as_ref(), "contact" | "opportunity" | "")
        {
            let message = format!("record = \"{}\": write \"contact\" or \"opportunity\"", record.get_ref().trim());
            self.report(source, record.span(), message);
        }
        Conditions {
            kind,
            key: normalized(key),
            pipeline: normalized(&conditions.pipeline),
            from_stage: normalized(&conditions.from_stage),
        }
    }

    fn then(&mut self, source: Source<'_>, then: &Spanned<Then>, rule: &Arc<str>) -> Vec<Action> {
        let spec = then.get_ref();
        let remove_all = spec.remove_all.as_ref().is_some_and(|flag| *flag.get_ref());
        let remove = spec.remove.as_ref().map_or_else(Vec::new, |list| self.expand(source, list, "remove"));
        let add = spec.add.as_ref().map_or_else(Vec::new, |list| self.expand(source, list, "add"));
        let pool = spec.round_robin.as_ref().and_then(|team| self.pool(source, team));
        let weights = pool.as_ref().map(|pool| self.weights(source, spec, pool));
        if let (Some(written), None) = (&spec.weights, &spec.round_robin) {
            self.report(
                source,
                written.span(),
                "`weights` weigh the members of a round_robin; this rule has none".into(),
            );
        }
        if spec.round_robin.is_none() {
            let only_rr = [
                spec.catch_up.as_ref().map(|w| ("catch_up", w.span())),
                spec.max_per_day.as_ref().map(|w| ("max_per_day", w.span())),
                spec.max_per_week.as_ref().map(|w| ("max_per_week", w.span())),
                spec.overflow.as_ref().map(|w| ("overflow", w.span())),
            ];
            for (key, span) in only_rr.into_iter().flatten() {
                self.report(source, span, format!("`{key}` is about a round_robin's members; this rule has none"));
            }
        }
        let catch_up = spec.catch_up.as_ref().is_some_and(|flag| *flag.get_ref());
        let caps = Caps {
            per_day: spec.max_per_day.as_ref().and_then(|n| self.cap(source, n, "max_per_day")),
            per_week: spec.max_per_week.as_ref().and_then(|n| self.cap(source, n, "max_per_week")),
        };
        let overflow = spec.overflow.as_ref().and_then(|name| match self.lookup(source, name, "overflow")? {
            Resolved::User(id) => Some(id.clone()),
            Resolved::Team(_) => {
                let message = format!("`{}` is a team; overflow names one user", name.get_ref().trim());
                self.report(source, name.span(), message);
                None
            }
            Resolved::Broken => None,
        });
        if let (Some(name), None, None) = (&spec.overflow, &spec.max_per_day, &spec.max_per_week) {
            let message = "`overflow` takes the turns nobody can take at their cap; this rule sets no \
                           max_per_day or max_per_week";
            self.report(source, name.span(), message.into());
        }
        let written =
            |list: &Option<Spanned<Vec<Spanned<String>>>>| list.as_ref().is_some_and(|l| !l.get_ref().is_empty());
        if !remove_all && !written(&spec.remove) && !written(&spec.add) && spec.round_robin.is_none() {
            let message = "`then` does nothing; give it at least one of remove_all = true, remove = [...], \
                           add = [...], round_robin = \"team\"";
            self.report(source, then.span(), message.to_owned());
        }
        let added = add.len() + usize::from(spec.round_robin.is_some());
        if added > MAX_FOLLOWERS {
            let from_pool = if spec.round_robin.is_some() { " (one of them from round_robin)" } else { "" };
            let message = format!(
                "this rule adds {added} followers{from_pool}; the CRM allows at most {MAX_FOLLOWERS} per contact, \
                 so split the rule or use round_robin"
            );
            let at = spec.add.as_ref().map_or_else(|| then.span(), Spanned::span);
            self.report(source, at, message);
        }
        let mut actions = Vec::with_capacity(1 + remove.len() + add.len() + 1);
        if remove_all {
            actions.push(Action::RemoveAll);
        }
        actions.extend(remove.into_iter().map(Action::Remove));
        actions.extend(add.into_iter().map(Action::Add));
        if let (Some(pool), Some(weights)) = (pool, weights) {
            let members = pool.iter().zip(weights.iter()).map(|(user, &weight)| Member { user: user.clone(), weight });
            actions.push(Action::RoundRobin(Arc::new(Rotation {
                rule: rule.clone(),
                members: members.collect(),
                availability: Arc::clone(&self.availability),
                catch_up,
                caps,
                overflow,
            })));
        }
        actions
    }

    /// The users `list` names, teams expanded, duplicates dropped, in listed order.
    fn expand(&mut self, source: Source<'_>, list: &Spanned<Vec<Spanned<String>>>, field: &str) -> Vec<UserId> {
        let mut users: Vec<UserId> = Vec::new();
        for reference in list.get_ref() {
            if let Some(stand_in) = self.stand_in(source, reference) {
                users.extend(stand_in);
                continue;
            }
            match self.lookup(source, reference, field) {
                Some(Resolved::User(id)) => users.push(id.clone()),
                Some(Resolved::Team(ids)) => users.extend(ids.iter().cloned()),
                Some(Resolved::Broken) | None => {}
            }
        }
        let mut seen = std::collections::HashSet::new();
        users.retain(|user| seen.insert(user.clone()));
        users
    }

    /// `@assigned` or `@previously_assigned` written in `add` or `remove`: its stand-in user id (resolved per
    /// event by the rules), `Some(None)` after reporting another `@` name, `None` for an ordinary name.
    fn stand_in(&mut self, source: Source<'_>, reference: &Spanned<String>) -> Option<Option<UserId>> {
        let name = reference.get_ref().trim();
        if !name.starts_with('@') {
            return None;
        }
        if let Ok(id) = UserId::parse(name)
            && is_stand_in(&id)
        {
            return Some(Some(id));
        }
        let message = format!(
            "`{name}` is not a name followd knows{}`@assigned` is the event's assignee, `@previously_assigned` the \
             one before",
            did_you_mean(name, [ASSIGNED, PREVIOUSLY_ASSIGNED])
        );
        self.report(source, reference.span(), message);
        Some(None)
    }

    /// The pool `round_robin` draws from. A single user is accepted as a pool of one: it is what was written,
    /// and it keeps a rule valid while a team is being staffed.
    fn pool(&mut self, source: Source<'_>, team: &Spanned<String>) -> Option<Arc<[UserId]>> {
        match self.lookup(source, team, "round_robin")? {
            Resolved::User(id) => Some(Arc::from([id.clone()])),
            Resolved::Team(ids) if ids.is_empty() => {
                let message = format!(
                    "team `{}` is empty, so round_robin has no one to pick; add users to it",
                    team.get_ref().trim()
                );
                self.report(source, team.span(), message);
                None
            }
            Resolved::Team(ids) => Some(ids.clone()),
            Resolved::Broken => None,
        }
    }

    /// Each member's weight, in `pool`'s order: what `weights` says for them, else 1. A name in `weights` must be
    /// a member of the team, and a weight a whole number from 1 to [`MAX_WEIGHT`].
    fn weights(&mut self, source: Source<'_>, spec: &Then, pool: &[UserId]) -> Arc<[u32]> {
        let mut weights = vec![1u32; pool.len()];
        let Some(written) = &spec.weights else { return weights.into() };
        for (name, weight) in written.get_ref() {
            let at = match self.lookup(source, name, "weights") {
                Some(Resolved::User(id)) => pool.iter().position(|member| member == id),
                Some(Resolved::Team(_)) => {
                    let message = format!("`{}` is a team; weights name one member each", name.get_ref().trim());
                    self.report(source, name.span(), message);
                    continue;
                }
                Some(Resolved::Broken) | None => continue,
            };
            let Some(at) = at else {
                let team = spec.round_robin.as_ref().map_or("", |t| t.get_ref().trim());
                let message =
                    format!("`{}` is not a member of `{team}`, the team this rule picks from", name.get_ref().trim());
                self.report(source, name.span(), message);
                continue;
            };
            match u32::try_from(*weight.get_ref()) {
                Ok(w) if (1..=MAX_WEIGHT).contains(&w) => weights[at] = w,
                _ => {
                    let message = format!(
                        "weight {} for `{}`: a weight is a whole number from 1 to {MAX_WEIGHT} (picks per turn)",
                        weight.get_ref(),
                        name.get_ref().trim()
                    );
                    self.report(source, weight.span(), message);
                }
            }
        }
        weights.into()
    }

    /// A cap on picks: a whole number of at least 1.
    fn cap(&mut self, source: Source<'_>, written: &Spanned<i64>, key: &str) -> Option<u32> {
        match u32::try_from(*written.get_ref()) {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                let message = format!("{key} = {}: a cap is a whole number of picks, at least 1", written.get_ref());
                self.report(source, written.span(), message);
                None
            }
        }
    }

    /// Resolves a name written in `then`. It must be an alias: a typo must not become a user id.
    fn lookup(&mut self, source: Source<'_>, reference: &Spanned<String>, field: &str) -> Option<&'a Resolved> {
        let aliases = self.aliases;
        let name = reference.get_ref().trim();
        if let Some(resolved) = aliases.get(name) {
            return Some(resolved);
        }
        let names = aliases.names();
        let message = if names.is_empty() {
            format!(
                "unknown alias `{name}` in `{field}`; no aliases are defined: add one under [users], \
                 e.g. {name} = \"usr_...\"{}",
                self.note
            )
        } else {
            let mut known = names.iter().take(LISTED_ALIASES).map(String::as_str).collect::<Vec<_>>().join(", ");
            if names.len() > LISTED_ALIASES {
                known.push_str(&format!(" and {} more", names.len() - LISTED_ALIASES));
            }
            format!(
                "unknown alias `{name}` in `{field}`{}names in add, remove and round_robin must be aliases \
                 defined under [users] (known: {known}){}",
                did_you_mean(name, names.iter().map(String::as_str)),
                self.note
            )
        };
        self.report(source, reference.span(), message);
        None
    }
}
