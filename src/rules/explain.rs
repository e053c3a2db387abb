//! Why each rule did or did not fire for one event: the answer to "why did (or didn't) alice get added?".
//!
//! Unlike `evaluate`, which looks only at the indexed candidates, [`explain`] walks every rule of the event's
//! kind, enabled or not, so the answer covers the near misses too. It costs a scan of the rule set, which is
//! fine for a command run by a person and is why the request path never calls it. Whether a rule fires is
//! decided by the same [`CompiledRule::unmet`](super::matching::CompiledRule::unmet) that `evaluate` uses, so
//! the rules explain shows as fired are exactly the matches `evaluate` returns, in the same order.
//!
//! Values in messages are the rule's as compared (trimmed, lower case) and the event's as sent.

use std::fmt;
use std::sync::Arc;

use super::Action;
use super::matching::{CompiledRule, Condition, Facts, Index};
use crate::event::{Event, EventKind};

/// How many of a rule's locations a "not in locations" message lists before it says "and N more".
const LISTED_LOCATIONS: usize = 5;

/// One rule looked at for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consideration {
    pub rule: Arc<str>,
    pub outcome: Outcome,
    /// The rule's `for` (ms): the followers it adds stay that long.
    pub lasts: Option<u64>,
    /// The rule's `skip_if_following` team.
    pub skip_if_following: Option<Arc<[crate::event::UserId]>>,
}

/// What a rule did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The rule fires with these actions (as `evaluate` returns them).
    Fired(Vec<Action>),
    /// The rule does not fire; the reason names every condition the event failed, or says "disabled".
    Skipped(String),
}

impl fmt::Display for Consideration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Fired(actions) => {
                write!(f, "rule `{}` fires: ", self.rule)?;
                for (i, action) in actions.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{action}")?;
                }
                if let Some(team) = &self.skip_if_following {
                    let names: Vec<&str> = team.iter().map(|u| u.as_str()).collect();
                    write!(f, " unless one of {} already follows when delivered", names.join(", "))?;
                }
                match self.lasts {
                    Some(ms) => write!(
                        f,
                        " (followers it adds stay {}, then followd removes them)",
                        humantime::format_duration(std::time::Duration::from_millis(ms))
                    ),
                    None => Ok(()),
                }
            }
            Outcome::Skipped(reason) => write!(f, "rule `{}` skipped: {reason}", self.rule),
        }
    }
}

/// How an action reads in `explain` output: `remove_all`, `remove usr_x`, `add usr_x`, or `round_robin [usr_a x2,
/// usr_b]` (the pick depends on the standings in the queue's store, so the whole team is shown, with each
/// weight above 1, then `catch_up`, the caps and the overflow when set).
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RemoveAll => f.write_str("remove_all"),
            Self::Remove(user) => write!(f, "remove {user}"),
            Self::Add(user) => write!(f, "add {user}"),
            Self::RoundRobin(rotation) => {
                f.write_str("round_robin [")?;
                for (i, member) in rotation.members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", member.user)?;
                    if member.weight > 1 {
                        write!(f, " x{}", member.weight)?;
                    }
                }
                f.write_str("]")?;
                if rotation.catch_up {
                    f.write_str(" catch_up")?;
                }
                if let Some(n) = rotation.caps.per_day {
                    write!(f, " max_per_day {n}")?;
                }
                if let Some(n) = rotation.caps.per_week {
                    write!(f, " max_per_week {n}")?;
                }
                match &rotation.overflow {
                    Some(user) => write!(f, " overflow {user}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Every rule of the event's kind, in rule order, with what it did.
pub(super) fn explain(index: &Index, event: &Event) -> Vec<Consideration> {
    let facts = Facts::of(event);
    index
        .all()
        .iter()
        .filter(|rule| rule.kind == facts.kind)
        .map(|rule| {
            let outcome = if !rule.enabled {
                Outcome::Skipped("disabled".to_owned())
            } else {
                let reasons: Vec<String> =
                    rule.unmet(&facts).map(|condition| describe(rule, condition, event)).collect();
                if reasons.is_empty() {
                    Outcome::Fired(rule.actions_for(&event.kind))
                } else {
                    Outcome::Skipped(reasons.join("; "))
                }
            };
            Consideration {
                rule: rule.name.clone(),
                outcome,
                lasts: rule.lasts,
                skip_if_following: rule.skip_if_following.clone(),
            }
        })
        .collect()
}

/// Says how `event` fails one of `rule`'s conditions.
fn describe(rule: &CompiledRule, condition: Condition, event: &Event) -> String {
    let (name, wanted, actual) = match condition {
        Condition::Location => {
            let scope = rule.locations.as_deref().unwrap_or_default();
            let mut listed: Vec<String> = scope.iter().take(LISTED_LOCATIONS).map(ToString::to_string).collect();
            if scope.len() > LISTED_LOCATIONS {
                listed.push(format!("and {} more", scope.len() - LISTED_LOCATIONS));
            }
            return format!("location {} is not in locations ({})", event.location_id, listed.join(", "));
        }
        Condition::Key => {
            let actual = match &event.kind {
                EventKind::TagAdded { tag } | EventKind::TagRemoved { tag } => Some(tag.as_str()),
                EventKind::ContactCreated { source } => source.as_deref(),
                EventKind::StageChanged { stage, .. } => Some(stage.as_str()),
                EventKind::AssignedChanged { record, .. } => Some(record.name()),
            };
            (rule.kind.key_condition(), &rule.key, actual)
        }
        Condition::Pipeline => match &event.kind {
            EventKind::StageChanged { pipeline, .. } => ("pipeline", &rule.pipeline, Some(pipeline.as_str())),
            _ => ("pipeline", &rule.pipeline, None),
        },
        Condition::FromStage => match &event.kind {
            EventKind::StageChanged { from_stage, .. } => ("from_stage", &rule.from_stage, from_stage.as_deref()),
            _ => ("from_stage", &rule.from_stage, None),
        },
    };
    let wanted = wanted.as_deref().unwrap_or_default();
    match (condition, actual) {
        (_, Some(actual)) => format!("{name} is `{wanted}`, the event's {name} is `{actual}`"),
        (Condition::FromStage, None) => format!("{name} is `{wanted}`, the event does not say which stage it left"),
        (_, None) => format!("{name} is `{wanted}`, the event has no {name}"),
    }
}
