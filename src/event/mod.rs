//! The normalized event: what every payload format turns into, and all that the rules ever see.
//!
//! An adapter per format (`generic`, and GoHighLevel's later) turns the raw, already verified body into
//! `Vec<Event>` or a [`PayloadError`] that says what is wrong. `serde_json::Value` never leaves this module.
//! One payload entry may yield several events that share its [`EventId`] (a contact created with tags yields
//! `ContactCreated` and one `TagAdded` per tag): de-duplication is per id, so they are accepted or skipped
//! together.

pub mod generic;
pub mod ghl;
pub mod ghl_workflow;
mod ids;
pub mod normalize;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use ids::{
    ContactId, ContactKey, EMAIL_PREFIX, EventId, IdError, LocationId, OPPORTUNITY_PREFIX, RECONCILE_EVENT_PREFIX,
    UserId,
};
pub use normalize::{NameLookup, Occurrence, Stored, TagDiff};

/// How the CRM compares tags, and how followd compares tags, sources, pipelines and stages everywhere (rules,
/// stored tag sets, pipeline names): surrounding white space ignored, case ignored (Unicode lower case).
pub fn normalize(text: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = text.trim();
    let changes = trimmed.chars().any(|c| {
        let mut lower = c.to_lowercase();
        lower.next() != Some(c) || lower.next().is_some()
    });
    if changes { std::borrow::Cow::Owned(trimmed.to_lowercase()) } else { std::borrow::Cow::Borrowed(trimmed) }
}

/// Payload formats a source can be configured with (`format = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// followd's own JSON, for n8n, Zapier, scripts and tests.
    Generic,
    /// GoHighLevel marketplace-app webhooks.
    Ghl,
    /// GoHighLevel's workflow "Webhook" action.
    GhlWorkflow,
}

impl Format {
    /// True for senders that redeliver a webhook only when answered 429 (GoHighLevel: `shared/ghl/API.md` §8),
    /// so a queue outage must be answered 429 rather than 503 for them.
    pub fn retries_only_on_429(self) -> bool {
        matches!(self, Self::Ghl | Self::GhlWorkflow)
    }

    /// Parses a verified body.
    pub fn parse(self, body: &[u8]) -> Result<Parsed, PayloadError> {
        match self {
            Self::Generic => Ok(Parsed {
                observations: generic::parse(body)?.into_iter().map(Observation::Event).collect(),
                sent_at: None,
                state_at: None,
            }),
            Self::Ghl => ghl::parse(body),
            Self::GhlWorkflow => ghl_workflow::parse(body),
        }
    }
}

/// What a payload says, before stored state turns every part of it into [`Event`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub observations: Vec<Observation>,
    /// When the sender says it sent the payload, for replay protection.
    pub sent_at: Option<DateTime<Utc>>,
    /// For a payload whose events come with the contact's whole tag list (a workflow body with `tags`): the
    /// time of that state. One older than the last whole state applied for the contact changes nothing.
    /// (`Observation::Tags` carries its own time.)
    pub state_at: Option<DateTime<Utc>>,
}

/// One part of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// An event, complete as it is.
    Event(Event),
    /// The contact's whole tag list now; what was added and removed comes from the stored last-seen set.
    /// `created`: the contact is new (an event `contact_created` with `source` comes first).
    Tags {
        id: EventId,
        location_id: LocationId,
        contact_id: ContactId,
        occurred_at: Option<DateTime<Utc>>,
        tags: Vec<String>,
        created: bool,
        source: Option<String>,
    },
    /// An opportunity's pipeline and stage now; the previous stage comes from the stored one.
    Stage {
        id: EventId,
        location_id: LocationId,
        contact_id: ContactId,
        occurred_at: Option<DateTime<Utc>>,
        opportunity_id: String,
        pipeline: String,
        stage: String,
        assigned_to: Option<UserId>,
    },
    /// Whom the contact (or, with `opportunity_id`, an opportunity of it) is assigned to now (`None`: nobody);
    /// the previous assignee comes from the stored one, and an unchanged assignee yields no event.
    Assigned {
        id: EventId,
        location_id: LocationId,
        contact_id: ContactId,
        occurred_at: Option<DateTime<Utc>>,
        opportunity_id: Option<String>,
        assigned_to: Option<UserId>,
        /// The payload is about the assignment or the record's creation: an assignee is news even where none
        /// was stored. Other payloads (a stage or tag update) only say who has it, and count as a change only
        /// against a stored assignee.
        announces: bool,
    },
    /// The contact was deleted: forget what is stored about it.
    ContactDeleted { id: EventId, location_id: LocationId, contact_id: ContactId },
    /// A payload type followd does not use; acknowledged, counted, nothing else.
    Ignored { kind: String },
    /// A change to the CRM's users (`UserDelete`, `UserUpdate`): about no contact, it changes who rules may
    /// make a follower.
    User(UserChange),
}

/// A change to one of the CRM's users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChange {
    pub user_id: UserId,
    pub location_id: Option<LocationId>,
    pub occurred_at: Option<DateTime<Utc>>,
    /// The user's name as the payload gives it (first and last), for the status page.
    pub name: Option<String>,
    /// Their email address (lower case), so rules that name them by email know them too.
    pub email: Option<String>,
    pub status: UserStatus,
}

/// What a user change says of the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    /// Deleted: never picked or added again.
    Deleted,
    /// Explicitly not deleted (a `UserUpdate` with `deleted: false`): a deletion recorded before it is undone.
    Restored,
    /// Updated otherwise: nothing followd keeps changes.
    Updated,
}

/// One thing that happened to one contact, as the rules see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub id: EventId,
    pub location_id: LocationId,
    pub contact_id: ContactId,
    /// When the CRM says it happened, where the payload says.
    pub occurred_at: Option<DateTime<Utc>>,
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    TagAdded {
        tag: String,
    },
    TagRemoved {
        tag: String,
    },
    ContactCreated {
        source: Option<String>,
    },
    /// `pipeline`, `stage` and `from_stage` are as the payload gives them (ids for GoHighLevel app webhooks,
    /// names from workflows); `names` holds the names looked up for ids, when known.
    StageChanged {
        pipeline: String,
        stage: String,
        from_stage: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        names: Option<Box<StageNames>>,
        /// The opportunity, where the payload says (rules with `target = "opportunity"` need it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opportunity_id: Option<String>,
        /// Whom the opportunity is assigned to, where the payload says (`@assigned` in a rule).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        assigned_to: Option<UserId>,
    },
    /// The contact or an opportunity of it was assigned to someone else (or to nobody).
    AssignedChanged {
        record: Record,
        /// `None`: unassigned now.
        assigned_to: Option<UserId>,
        /// Whom it was assigned to before, when known (`None`: nobody, or not known).
        from: Option<UserId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        opportunity_id: Option<String>,
    },
}

/// What was assigned: the contact itself, or one of its opportunities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    Contact,
    Opportunity,
}

impl Record {
    /// An assignment is an opportunity's when it names one, else the contact's.
    pub fn of(opportunity_id: Option<&str>) -> Self {
        if opportunity_id.is_some() { Self::Opportunity } else { Self::Contact }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Contact => "contact",
            Self::Opportunity => "opportunity",
        }
    }
}

/// Names resolved for a stage event's ids (through the CRM's pipelines API), so rules may use either.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StageNames {
    pub pipeline: Option<String>,
    pub stage: Option<String>,
    pub from_stage: Option<String>,
}

impl EventKind {
    /// The name rules use in `when.event`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TagAdded { .. } => "tag_added",
            Self::TagRemoved { .. } => "tag_removed",
            Self::ContactCreated { .. } => "contact_created",
            Self::StageChanged { .. } => "stage_changed",
            Self::AssignedChanged { .. } => "assigned_changed",
        }
    }

    /// Whom the event says the contact or opportunity is assigned to now (`@assigned` in a rule).
    pub fn assignee(&self) -> Option<&UserId> {
        match self {
            Self::StageChanged { assigned_to, .. } | Self::AssignedChanged { assigned_to, .. } => assigned_to.as_ref(),
            _ => None,
        }
    }

    /// Whom it was assigned to before (`@previously_assigned`).
    pub fn previous_assignee(&self) -> Option<&UserId> {
        match self {
            Self::AssignedChanged { from, .. } => from.as_ref(),
            _ => None,
        }
    }

    /// The opportunity the event is about, if any (`target = "opportunity"`).
    pub fn opportunity_id(&self) -> Option<&str> {
        match self {
            Self::StageChanged { opportunity_id, .. } | Self::AssignedChanged { opportunity_id, .. } => {
                opportunity_id.as_deref()
            }
            _ => None,
        }
    }
}

/// Why a body could not be turned into events. The message is safe to return to the sender: it names the
/// field and what was expected, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
    #[error("the batch is empty")]
    EmptyBatch,
    #[error("the batch holds {0} events; at most {max} are accepted in one request", max = generic::MAX_BATCH)]
    BatchTooLarge(usize),
}
