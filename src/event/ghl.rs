//! GoHighLevel's marketplace-app webhooks (`format = "ghl"`): flat JSON objects with a `type`
//! (`shared/ghl/API.md` §7).
//!
//! Contact events carry the contact's whole tag list, not the change, and opportunity events carry the stage
//! id without the previous stage; both become [`Observation`]s that `intake` resolves against the queue's
//! stored state. Types followd does not use become [`Observation::Ignored`]: the CRM sends every subscribed
//! type to one URL, so they are acknowledged, not refused. Unknown fields are tolerated (the CRM adds fields).

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{ContactId, EventId, LocationId, Observation, Parsed, PayloadError, UserChange, UserId, UserStatus};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    location_id: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    contact_id: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    pipeline_id: Option<String>,
    #[serde(default)]
    pipeline_stage_id: Option<String>,
    #[serde(default)]
    webhook_id: Option<String>,
    #[serde(default)]
    timestamp: Option<DateTime<Utc>>,
    /// The contact's last change: the time of a whole-state payload without `timestamp`.
    #[serde(default)]
    date_updated: Option<DateTime<Utc>>,
    /// User events: the user's name and, in a user record, whether it is deleted.
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    deleted: Option<bool>,
    #[serde(default)]
    email: Option<String>,
    /// Whom the contact or opportunity is assigned to: absent (not said), `null` or `""` (nobody), or a user id.
    #[serde(default, deserialize_with = "present")]
    assigned_to: Option<serde_json::Value>,
}

/// Keeps a field that is present with `null` apart from an absent one (`Some(Value::Null)` vs `None`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(deserializer).map(Some)
}

/// `assignedTo` as the payload gives it: `None` when absent, `Some(None)` for nobody.
fn assignee(payload: &Payload) -> Result<Option<Option<UserId>>, PayloadError> {
    match &payload.assigned_to {
        None => Ok(None),
        Some(serde_json::Value::Null) => Ok(Some(None)),
        Some(serde_json::Value::String(id)) if id.trim().is_empty() => Ok(Some(None)),
        Some(serde_json::Value::String(id)) => {
            UserId::parse(id).map(|id| Some(Some(id))).map_err(|e| invalid("assignedTo", &e.to_string()))
        }
        Some(_) => Err(invalid("assignedTo", "must be a user id (a string) or null")),
    }
}

/// The event id: the payload's `webhookId`, else the SHA-256 of the raw body (a redelivery is byte-identical).
pub fn event_id(webhook_id: Option<&str>, body: &[u8]) -> Result<EventId, PayloadError> {
    match webhook_id.map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) => EventId::parse(id).map_err(|e| invalid("webhookId", &e.to_string())),
        None => EventId::parse(&hex::encode(Sha256::digest(body))).map_err(|e| invalid("body", &e.to_string())),
    }
}

fn invalid(field: &str, message: &str) -> PayloadError {
    PayloadError::Invalid { at: format!("field `{field}`"), message: message.to_owned() }
}

fn required<'a>(value: &'a Option<String>, field: &str, kind: &str) -> Result<&'a str, PayloadError> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid(field, &format!("is required in a `{kind}` payload")))
}

pub fn parse(body: &[u8]) -> Result<Parsed, PayloadError> {
    let payload: Payload = serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
    let kind = payload.kind.as_str();
    let ignored = |kind: &str| Parsed {
        observations: vec![Observation::Ignored { kind: kind.to_owned() }],
        sent_at: payload.timestamp,
        state_at: None,
    };
    if matches!(kind, "UserDelete" | "UserUpdate") {
        return Ok(Parsed { observations: vec![user_change(&payload)?], sent_at: payload.timestamp, state_at: None });
    }
    let uses_contact = matches!(kind, "ContactCreate" | "ContactTagUpdate" | "ContactDelete" | "ContactUpdate");
    let uses_opportunity = matches!(
        kind,
        "OpportunityCreate" | "OpportunityStageUpdate" | "OpportunityStatusUpdate" | "OpportunityAssignedToUpdate"
    );
    // A contact update matters only for its assignee; without `assignedTo` it says nothing followd uses.
    if (!uses_contact && !uses_opportunity) || (kind == "ContactUpdate" && payload.assigned_to.is_none()) {
        return Ok(ignored(kind));
    }
    let id = event_id(payload.webhook_id.as_deref(), body)?;
    let location_id = LocationId::parse(required(&payload.location_id, "locationId", kind)?)
        .map_err(|e| invalid("locationId", &e.to_string()))?;
    let occurred_at = payload.timestamp;
    let assigned = assignee(&payload)?;
    let mut observations = Vec::with_capacity(2);
    if uses_contact {
        let contact_id =
            ContactId::parse(required(&payload.id, "id", kind)?).map_err(|e| invalid("id", &e.to_string()))?;
        match kind {
            "ContactDelete" => observations.push(Observation::ContactDeleted {
                id: id.clone(),
                location_id: location_id.clone(),
                contact_id: contact_id.clone(),
            }),
            "ContactUpdate" => {}
            _ => observations.push(Observation::Tags {
                id: id.clone(),
                location_id: location_id.clone(),
                contact_id: contact_id.clone(),
                // Whole state: its time says whether it is older than what was applied (DESIGN.md, "Stale
                // whole-state payloads"): `timestamp`, else `dateUpdated`.
                occurred_at: occurred_at.or(payload.date_updated),
                tags: payload.tags.clone().unwrap_or_default(),
                created: kind == "ContactCreate",
                source: payload.source.clone().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
            }),
        }
        if let (Some(assigned_to), false) = (assigned, kind == "ContactDelete") {
            observations.push(Observation::Assigned {
                id,
                location_id,
                contact_id,
                occurred_at,
                opportunity_id: None,
                assigned_to,
                announces: matches!(kind, "ContactUpdate" | "ContactCreate"),
            });
        }
    } else {
        let contact_id = ContactId::parse(required(&payload.contact_id, "contactId", kind)?)
            .map_err(|e| invalid("contactId", &e.to_string()))?;
        let opportunity_id = required(&payload.id, "id", kind)?.to_owned();
        if kind != "OpportunityAssignedToUpdate" {
            observations.push(Observation::Stage {
                id: id.clone(),
                location_id: location_id.clone(),
                contact_id: contact_id.clone(),
                occurred_at,
                opportunity_id: opportunity_id.clone(),
                pipeline: required(&payload.pipeline_id, "pipelineId", kind)?.to_owned(),
                stage: required(&payload.pipeline_stage_id, "pipelineStageId", kind)?.to_owned(),
                assigned_to: assigned.clone().flatten(),
            });
        }
        // The assignee is remembered from every opportunity payload that says it, so the change that
        // `OpportunityAssignedToUpdate` reports knows who had it before; an unsaid one is nobody there.
        let said = if kind == "OpportunityAssignedToUpdate" { Some(assigned.flatten()) } else { assigned };
        if let Some(assigned_to) = said {
            observations.push(Observation::Assigned {
                id,
                location_id,
                contact_id,
                occurred_at,
                opportunity_id: Some(opportunity_id),
                assigned_to,
                announces: matches!(kind, "OpportunityAssignedToUpdate" | "OpportunityCreate"),
            });
        }
    }
    Ok(Parsed { observations, sent_at: occurred_at, state_at: None })
}

/// A `UserDelete` or `UserUpdate`: the user's id is the payload's `id`. An update says the user is restored
/// only with an explicit `deleted: false` and a `timestamp` (so a late retry cannot undo a newer deletion).
fn user_change(payload: &Payload) -> Result<Observation, PayloadError> {
    let kind = payload.kind.as_str();
    let user_id = UserId::parse(required(&payload.id, "id", kind)?).map_err(|e| invalid("id", &e.to_string()))?;
    let location_id = match payload.location_id.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
        Some(location) => Some(LocationId::parse(location).map_err(|e| invalid("locationId", &e.to_string()))?),
        None => None,
    };
    let status = match (kind, payload.deleted, payload.timestamp) {
        ("UserDelete", _, _) | (_, Some(true), _) => UserStatus::Deleted,
        (_, Some(false), Some(_)) => UserStatus::Restored,
        _ => UserStatus::Updated,
    };
    let parts = [&payload.first_name, &payload.last_name];
    let name = parts.iter().filter_map(|p| p.as_deref().map(str::trim).filter(|p| !p.is_empty())).collect::<Vec<_>>();
    Ok(Observation::User(UserChange {
        user_id,
        location_id,
        occurred_at: payload.timestamp,
        name: (!name.is_empty()).then(|| name.join(" ")),
        email: payload.email.as_deref().map(|e| e.trim().to_lowercase()).filter(|e| !e.is_empty()),
        status,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(name: &str) -> Vec<u8> {
        let path = format!("{}/../shared/ghl/payloads/{name}.json", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn a_tag_update_carries_the_whole_tag_list_and_the_webhook_id() {
        let parsed = parse(&example("ContactTagUpdate")).unwrap();
        let Observation::Tags { id, tags, created, .. } = &parsed.observations[0] else { panic!("{parsed:?}") };
        assert_eq!(id.as_str(), "c4a7e2d9-8b1f-4e3a-a6c5-7d9e1f3b5a62");
        assert_eq!(tags.len(), 4);
        assert!(!created);
        assert!(parsed.sent_at.is_some());
    }

    #[test]
    fn opportunity_events_carry_pipeline_and_stage_ids() {
        for name in ["OpportunityCreate", "OpportunityStageUpdate", "OpportunityStatusUpdate"] {
            let parsed = parse(&example(name)).unwrap();
            assert!(
                matches!(&parsed.observations[0], Observation::Stage { pipeline, .. } if pipeline == "pip2Wx3Yz4Ab5Cd6Ef7G")
            );
        }
    }

    #[test]
    fn types_followd_does_not_use_are_ignored_not_refused() {
        let parsed = parse(&example("ContactDndUpdate")).unwrap();
        assert!(matches!(&parsed.observations[0], Observation::Ignored { .. }));
        let unassigned_update = br#"{"type":"ContactUpdate","locationId":"l","id":"c","tags":["a"]}"#;
        assert!(matches!(&parse(unassigned_update).unwrap().observations[0], Observation::Ignored { .. }));
    }

    #[test]
    fn assignees_come_from_contact_and_opportunity_payloads_and_null_is_nobody() {
        let assigned = |parsed: &Parsed| -> Vec<(Option<String>, Option<String>)> {
            parsed
                .observations
                .iter()
                .filter_map(|o| match o {
                    Observation::Assigned { opportunity_id, assigned_to, .. } => {
                        Some((opportunity_id.clone(), assigned_to.as_ref().map(|u| u.to_string())))
                    }
                    _ => None,
                })
                .collect()
        };
        let update = parse(&example("ContactUpdate")).unwrap();
        assert_eq!(assigned(&update), [(None, Some("usrA1b2C3d4E5f6G7h8J".to_owned()))]);
        let opportunity = parse(&example("OpportunityAssignedToUpdate")).unwrap();
        assert_eq!(
            assigned(&opportunity),
            [(Some("opp5Fg6Hj7Kl8Mn9Pq0R".to_owned()), Some("usrV1w2X3y4Z5a6B7c8D".to_owned()))]
        );
        assert_eq!(opportunity.observations.len(), 1, "no stage change from an assignment");
        let nobody =
            br#"{"type":"OpportunityAssignedToUpdate","locationId":"l","id":"o","contactId":"c","assignedTo":null}"#;
        assert_eq!(assigned(&parse(nobody).unwrap()), [(Some("o".to_owned()), None)]);
        let absent = br#"{"type":"OpportunityAssignedToUpdate","locationId":"l","id":"o","contactId":"c"}"#;
        assert_eq!(assigned(&parse(absent).unwrap()), [(Some("o".to_owned()), None)]);
        let wrong = br#"{"type":"ContactUpdate","locationId":"l","id":"c","assignedTo":7}"#;
        assert!(parse(wrong).unwrap_err().to_string().contains("assignedTo"));
    }

    #[test]
    fn user_events_say_who_was_deleted_and_only_a_timed_explicit_update_restores() {
        let delete = br#"{"type":"UserDelete","locationId":"loc","companyId":"co","id":"usr_1","firstName":"Ann","lastName":"Lee","email":" Ann@X.com"}"#;
        let Observation::User(change) = &parse(delete).unwrap().observations[0] else { panic!() };
        assert_eq!((change.user_id.as_str(), change.status), ("usr_1", UserStatus::Deleted));
        assert_eq!(change.email.as_deref(), Some("ann@x.com"));
        assert_eq!(change.name.as_deref(), Some("Ann Lee"));
        let restore = br#"{"type":"UserUpdate","id":"usr_1","deleted":false,"timestamp":"2026-11-29T10:00:00Z"}"#;
        let Observation::User(change) = &parse(restore).unwrap().observations[0] else { panic!() };
        assert_eq!(change.status, UserStatus::Restored);
        assert!(change.location_id.is_none());
        let untimed = br#"{"type":"UserUpdate","id":"usr_1","deleted":false}"#;
        let Observation::User(change) = &parse(untimed).unwrap().observations[0] else { panic!() };
        assert_eq!(change.status, UserStatus::Updated);
        assert!(parse(br#"{"type":"UserDelete","locationId":"loc"}"#).unwrap_err().to_string().contains("`id`"));
    }

    #[test]
    fn without_a_webhook_id_the_body_hash_is_the_event_id() {
        let body = br#"{"type":"ContactDelete","locationId":"l","id":"c"}"#;
        let Observation::ContactDeleted { id, .. } = &parse(body).unwrap().observations[0] else { panic!() };
        assert_eq!(id.as_str(), hex::encode(Sha256::digest(body)));
    }

    #[test]
    fn a_contact_event_without_a_location_is_invalid() {
        let err = parse(br#"{"type":"ContactTagUpdate","id":"c","tags":[]}"#).unwrap_err();
        assert!(err.to_string().contains("locationId"), "{err}");
    }
}
