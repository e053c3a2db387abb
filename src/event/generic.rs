//! followd's generic payload format: one event object, or an array of them (see `DESIGN.md`).
//!
//! ```json
//! {"id": "evt-1", "type": "tag_added", "location_id": "loc-1", "contact_id": "c-1", "tag": "vip",
//!  "occurred_at": "2026-11-23T10:00:00Z"}
//! ```
//! Unknown fields are rejected, so a misspelt `from_stage` is a 400 rather than a silently ignored condition.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{ContactId, Event, EventId, EventKind, LocationId, PayloadError, Record, UserId};

/// Most events accepted in one request: a batch is committed in one transaction, so it has a bound.
pub const MAX_BATCH: usize = 1000;

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<serde_json::Value>),
    One(serde_json::Value),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    id: EventId,
    #[serde(rename = "type")]
    kind: RawKind,
    location_id: LocationId,
    contact_id: ContactId,
    #[serde(default)]
    occurred_at: Option<DateTime<Utc>>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    pipeline: Option<String>,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    from_stage: Option<String>,
    /// `stage_changed`, `assigned_changed`: the opportunity (`target = "opportunity"` rules need it).
    #[serde(default)]
    opportunity_id: Option<String>,
    /// `stage_changed`, `assigned_changed`: whom it is assigned to now (absent: nobody).
    #[serde(default)]
    assigned_to: Option<UserId>,
    /// `assigned_changed`: whom it was assigned to before.
    #[serde(default)]
    from_assigned_to: Option<UserId>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawKind {
    TagAdded,
    TagRemoved,
    ContactCreated,
    StageChanged,
    AssignedChanged,
}

/// Parses a generic body into events, in the order the sender listed them.
pub fn parse(body: &[u8]) -> Result<Vec<Event>, PayloadError> {
    // One event, the common case, is read straight into its struct: going through `OneOrMany` buffers the
    // body, fails the array variant and builds a `Value` first (a third of the webhook path's parsing time).
    if body.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|b| *b == b'{') {
        let raw: RawEvent = serde_json::from_slice(body).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => PayloadError::Invalid { at: "event".into(), message: e.to_string() },
            _ => PayloadError::Json(e.to_string()),
        })?;
        let mut events = Vec::with_capacity(1);
        raw.into_events("event", &mut events)?;
        return Ok(events);
    }
    let parsed: OneOrMany = serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
    let (values, batched) = match parsed {
        OneOrMany::Many(values) => (values, true),
        OneOrMany::One(value) => (vec![value], false),
    };
    if values.is_empty() {
        return Err(PayloadError::EmptyBatch);
    }
    if values.len() > MAX_BATCH {
        return Err(PayloadError::BatchTooLarge(values.len()));
    }
    let mut events = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let at = if batched { format!("event [{index}]") } else { "event".to_owned() };
        let raw: RawEvent = serde_json::from_value(value)
            .map_err(|e| PayloadError::Invalid { at: at.clone(), message: e.to_string() })?;
        raw.into_events(&at, &mut events)?;
    }
    Ok(events)
}

fn required(value: Option<String>, field: &str, kind: &str, at: &str) -> Result<String, PayloadError> {
    match value.map(|v| v.trim().to_owned()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(PayloadError::Invalid {
            at: at.to_owned(),
            message: format!("field `{field}` is required for type `{kind}` and must be a non-empty string"),
        }),
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl RawEvent {
    fn into_events(self, at: &str, out: &mut Vec<Event>) -> Result<(), PayloadError> {
        if self.contact_id.as_opportunity().is_some() {
            return Err(PayloadError::Invalid {
                at: at.to_owned(),
                message: format!(
                    "`contact_id` may not begin with `{}`: followd keeps that for opportunities' queues",
                    super::OPPORTUNITY_PREFIX
                ),
            });
        }
        let event = |kind| Event {
            id: self.id.clone(),
            location_id: self.location_id.clone(),
            contact_id: self.contact_id.clone(),
            occurred_at: self.occurred_at,
            kind,
        };
        match self.kind {
            RawKind::TagAdded => {
                out.push(event(EventKind::TagAdded { tag: required(self.tag.clone(), "tag", "tag_added", at)? }))
            }
            RawKind::TagRemoved => {
                out.push(event(EventKind::TagRemoved { tag: required(self.tag.clone(), "tag", "tag_removed", at)? }))
            }
            RawKind::ContactCreated => {
                out.push(event(EventKind::ContactCreated { source: non_empty(self.source.clone()) }));
                // A contact that starts with tags has had each of them added: rules on `tag_added` apply.
                for tag in self.tags.iter().flatten().filter_map(|t| non_empty(Some(t.clone()))) {
                    out.push(event(EventKind::TagAdded { tag }));
                }
            }
            RawKind::StageChanged => out.push(event(EventKind::StageChanged {
                pipeline: required(self.pipeline.clone(), "pipeline", "stage_changed", at)?,
                stage: required(self.stage.clone(), "stage", "stage_changed", at)?,
                from_stage: non_empty(self.from_stage.clone()),
                names: None,
                opportunity_id: non_empty(self.opportunity_id.clone()),
                assigned_to: self.assigned_to.clone(),
            })),
            RawKind::AssignedChanged => {
                let opportunity_id = non_empty(self.opportunity_id.clone());
                let record = Record::of(opportunity_id.as_deref());
                out.push(event(EventKind::AssignedChanged {
                    record,
                    assigned_to: self.assigned_to.clone(),
                    from: self.from_assigned_to.clone(),
                    opportunity_id,
                }))
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_tag_added_event_parses() {
        let events =
            parse(br#"{"id":"e1","type":"tag_added","location_id":"l","contact_id":"c","tag":" VIP "}"#).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::TagAdded { tag: "VIP".into() });
        assert_eq!(events[0].id.as_str(), "e1");
    }

    #[test]
    fn a_contact_created_with_tags_also_adds_each_tag() {
        let body = br#"{"id":"e1","type":"contact_created","location_id":"l","contact_id":"c","source":"Facebook Ads","tags":["a","b"]}"#;
        let kinds: Vec<_> = parse(body).unwrap().into_iter().map(|e| e.kind.name()).collect();
        assert_eq!(kinds, ["contact_created", "tag_added", "tag_added"]);
    }

    #[test]
    fn a_missing_field_names_the_field_and_the_event() {
        let err = parse(br#"[{"id":"e1","type":"stage_changed","location_id":"l","contact_id":"c","pipeline":"p"}]"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("event [0]") && err.contains("`stage`"), "{err}");
    }

    #[test]
    fn an_assignment_names_its_record_and_both_assignees_and_a_reserved_contact_id_is_refused() {
        let body = br#"{"id":"e1","type":"assigned_changed","location_id":"l","contact_id":"c","assigned_to":"usr_b","from_assigned_to":"usr_a","opportunity_id":"o-1"}"#;
        let event = &parse(body).unwrap()[0];
        assert_eq!(event.kind.assignee().map(UserId::as_str), Some("usr_b"));
        assert_eq!(event.kind.previous_assignee().map(UserId::as_str), Some("usr_a"));
        assert_eq!(event.kind.opportunity_id(), Some("o-1"));
        assert!(matches!(event.kind, EventKind::AssignedChanged { record: Record::Opportunity, .. }));
        let reserved = br#"{"id":"e1","type":"tag_added","location_id":"l","contact_id":"opportunity:o","tag":"t"}"#;
        assert!(parse(reserved).unwrap_err().to_string().contains("opportunity:"));
    }

    #[test]
    fn unknown_fields_and_types_are_rejected() {
        assert!(
            parse(br#"{"id":"e","type":"tag_added","location_id":"l","contact_id":"c","tag":"t","tga":1}"#).is_err()
        );
        assert!(parse(br#"{"id":"e","type":"tag_renamed","location_id":"l","contact_id":"c"}"#).is_err());
        assert!(matches!(parse(b"[]"), Err(PayloadError::EmptyBatch)));
        assert!(matches!(parse(b"{not json"), Err(PayloadError::Json(_))));
    }
}
