//! What became of an event's follower operations: one type read by the decisions ring, the audit trail, the
//! metrics and the status page, so none of them parses another's strings.
//!
//! It is stored as its display text (`"delivered"`, `"retrying: the CRM answered 503"`), which is what the
//! audit trail and the shared outcome store held before this type existed: entries written by an older
//! version read back unchanged.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The state of an event's operations, from queued to their end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Outcome {
    /// Waiting in the queue; no worker has reported yet.
    Queued,
    /// The event matched no rule: nothing was queued.
    NothingToDo,
    /// The CRM took the change.
    Delivered,
    /// Dry run (no upstream token): the calls were logged and counted, none was sent.
    DryRun,
    /// Failed for now; kept in the queue for a later attempt. The text says why.
    Retrying(String),
    /// The location is paused (a 429, a refused token); kept in the queue. The text says why.
    Paused(String),
    /// Given up on: set aside as a dead letter. The text says why.
    DeadLettered(String),
    /// Not sent, by the rule's own choice (`skip_if_following`): the text says who already follows.
    Skipped(String),
}

/// Every value of [`Outcome::label`]: the metrics start each delivery counter at 0 (`telemetry`).
pub const LABELS: &[&str] =
    &["queued", "nothing_to_do", "delivered", "dry_run", "retrying", "paused", "dead_lettered", "skipped"];

impl Outcome {
    /// The value of the `result` label on delivery metrics (no free text: labels must stay few).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::NothingToDo => "nothing_to_do",
            Self::Delivered => "delivered",
            Self::DryRun => "dry_run",
            Self::Retrying(_) => "retrying",
            Self::Paused(_) => "paused",
            Self::DeadLettered(_) => "dead_lettered",
            Self::Skipped(_) => "skipped",
        }
    }

    /// True once the operations have left the queue for good (delivered, dry run, dead-lettered).
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Delivered | Self::DryRun | Self::DeadLettered(_) | Self::Skipped(_))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_reason = |f: &mut fmt::Formatter<'_>, what: &str, reason: &str| {
            if reason.is_empty() { f.write_str(what) } else { write!(f, "{what}: {reason}") }
        };
        match self {
            Self::Queued => f.write_str("queued"),
            Self::NothingToDo => f.write_str("nothing to do"),
            Self::Delivered => f.write_str("delivered"),
            Self::DryRun => f.write_str("dry run: not sent"),
            Self::Retrying(reason) => with_reason(f, "retrying", reason),
            Self::Paused(reason) => with_reason(f, "paused", reason),
            Self::DeadLettered(reason) => with_reason(f, "dead-lettered", reason),
            Self::Skipped(reason) => with_reason(f, "skipped", reason),
        }
    }
}

impl From<Outcome> for String {
    fn from(outcome: Outcome) -> Self {
        outcome.to_string()
    }
}

impl From<String> for Outcome {
    /// Reads the display text back. Text no version wrote (a hand-edited store) reads as a retry with that
    /// text, the one state that promises nothing.
    fn from(text: String) -> Self {
        let (what, reason) = match text.split_once(": ") {
            Some((what, reason)) => (what, reason.to_owned()),
            None => (text.as_str(), String::new()),
        };
        match what {
            "queued" => Self::Queued,
            "nothing to do" => Self::NothingToDo,
            "delivered" => Self::Delivered,
            "dry run" => Self::DryRun,
            "retrying" => Self::Retrying(reason),
            "paused" => Self::Paused(reason),
            "dead-lettered" => Self::DeadLettered(reason),
            "skipped" => Self::Skipped(reason),
            _ => Self::Retrying(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_reads_back_from_its_text() {
        let all = [
            Outcome::Queued,
            Outcome::NothingToDo,
            Outcome::Delivered,
            Outcome::DryRun,
            Outcome::Retrying("the CRM answered 503: busy".into()),
            Outcome::Paused("a 429".into()),
            Outcome::DeadLettered("the CRM answered 422: followers must be an array".into()),
            Outcome::DeadLettered(String::new()),
            Outcome::Skipped("usr_a already follows (skip_if_following)".into()),
        ];
        for outcome in all {
            assert!(LABELS.contains(&outcome.label()), "{outcome}");
            assert_eq!(Outcome::from(outcome.to_string()), outcome, "{outcome}");
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(serde_json::from_str::<Outcome>(&json).unwrap(), outcome);
        }
    }

    #[test]
    fn texts_written_before_this_type_read_as_what_they_meant() {
        assert_eq!(Outcome::from("delivered".to_owned()), Outcome::Delivered);
        assert_eq!(Outcome::from("dead-lettered".to_owned()), Outcome::DeadLettered(String::new()));
        assert!(!Outcome::from("retrying: x".to_owned()).is_final());
    }
}
