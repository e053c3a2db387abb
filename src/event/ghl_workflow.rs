//! The body GoHighLevel's workflow "Webhook" action posts (`format = "ghl-workflow"`; `shared/ghl/API.md` §9),
//! for sub-accounts without the marketplace app.
//!
//! The default body says nothing about which event fired, so the workflow adds it as Custom Data:
//! `event` (`tag_added`, `tag_removed`, `contact_created`, `stage_changed`, `assigned_changed`) and, as the
//! event needs, `tag`, `source`, `pipeline`, `stage`, `from_stage`, `opportunity_id`, `assigned_to`,
//! `from_assigned_to` (merge fields such as `{{contact.assigned_to}}`); optionally `event_id`. Keys may also carry a `followd_` prefix.
//! The contact comes from `contact_id`, the sub-account from `location.id`; `tags` is a list or one
//! comma-separated string. Workflow senders can put stage *names* in Custom Data (merge fields), unlike app
//! webhooks, so these events match rules written with names directly.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{ContactId, Event, EventKind, LocationId, Observation, Parsed, PayloadError, Record, UserId};

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    contact_id: Option<String>,
    #[serde(default)]
    location: Option<Location>,
    #[serde(default)]
    location_id: Option<String>,
    #[serde(default)]
    tags: Option<Value>,
    #[serde(default)]
    contact_source: Option<String>,
    #[serde(default, rename = "customData")]
    custom_data: Option<Map<String, Value>>,
    /// When the body's state was taken: `timestamp`, else `date_updated` / `dateUpdated`.
    #[serde(default)]
    timestamp: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default, alias = "dateUpdated")]
    date_updated: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Deserialize)]
struct Location {
    #[serde(default)]
    id: Option<String>,
}

fn invalid(at: &str, message: &str) -> PayloadError {
    PayloadError::Invalid { at: at.to_owned(), message: message.to_owned() }
}

/// A Custom Data value, under its name or its `followd_` form.
fn custom(data: &Map<String, Value>, key: &str) -> Option<String> {
    let value = data.get(key).or_else(|| data.get(&format!("followd_{key}")))?;
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(text).filter(|t| !t.is_empty())
}

/// A user id given as Custom Data (`assigned_to`, `from_assigned_to`); empty or absent: nobody.
fn user(data: &Map<String, Value>, key: &str) -> Result<Option<UserId>, PayloadError> {
    custom(data, key)
        .map(|id| UserId::parse(&id).map_err(|e| invalid(&format!("customData.{key}"), &e.to_string())))
        .transpose()
}

fn tag_list(tags: Option<&Value>) -> Vec<String> {
    let items: Vec<String> = match tags {
        Some(Value::String(s)) => s.split(',').map(str::to_owned).collect(),
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    items.into_iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect()
}

pub fn parse(body: &[u8]) -> Result<Parsed, PayloadError> {
    let payload: Payload = serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
    let data = payload.custom_data.unwrap_or_default();
    let need = |key: &str| {
        custom(&data, key).ok_or_else(|| {
            invalid(&format!("customData.{key}"), "is required: add it as Custom Data in the workflow's Webhook action")
        })
    };
    let contact_id = payload.contact_id.as_deref().map(str::trim).filter(|c| !c.is_empty());
    let contact_id = ContactId::parse(contact_id.ok_or_else(|| invalid("contact_id", "is required"))?)
        .map_err(|e| invalid("contact_id", &e.to_string()))?;
    let location = payload.location.and_then(|l| l.id).or(payload.location_id);
    let location = location.as_deref().map(str::trim).filter(|l| !l.is_empty());
    let location_id = LocationId::parse(location.ok_or_else(|| invalid("location.id", "is required"))?)
        .map_err(|e| invalid("location.id", &e.to_string()))?;
    let id = super::ghl::event_id(custom(&data, "event_id").as_deref(), body)?;
    let kind = need("event")?;
    let kinds = match kind.as_str() {
        "tag_added" => vec![EventKind::TagAdded { tag: need("tag")? }],
        "tag_removed" => vec![EventKind::TagRemoved { tag: need("tag")? }],
        "contact_created" => {
            let source = custom(&data, "source").or(payload.contact_source.map(|s| s.trim().to_owned()));
            let created = EventKind::ContactCreated { source: source.filter(|s| !s.is_empty()) };
            let tags = tag_list(payload.tags.as_ref()).into_iter().map(|tag| EventKind::TagAdded { tag });
            std::iter::once(created).chain(tags).collect()
        }
        "stage_changed" => vec![EventKind::StageChanged {
            pipeline: need("pipeline")?,
            stage: need("stage")?,
            from_stage: custom(&data, "from_stage"),
            names: None,
            opportunity_id: custom(&data, "opportunity_id"),
            assigned_to: user(&data, "assigned_to")?,
        }],
        "assigned_changed" => {
            let opportunity_id = custom(&data, "opportunity_id");
            let record = Record::of(opportunity_id.as_deref());
            let (assigned_to, from) = (user(&data, "assigned_to")?, user(&data, "from_assigned_to")?);
            vec![EventKind::AssignedChanged { record, assigned_to, from, opportunity_id }]
        }
        other => {
            return Err(invalid(
                "customData.event",
                &format!(
                    "`{other}` is not an event; use tag_added, tag_removed, contact_created, stage_changed or \
                     assigned_changed"
                ),
            ));
        }
    };
    let observations = kinds
        .into_iter()
        .map(|kind| {
            Observation::Event(Event {
                id: id.clone(),
                location_id: location_id.clone(),
                contact_id: contact_id.clone(),
                occurred_at: None,
                kind,
            })
        })
        .collect();
    // A body with the contact's tags is its whole state as of its time (DESIGN.md, "Stale whole-state payloads").
    let has_tags = payload.tags.as_ref().is_some_and(|tags| !tag_list(Some(tags)).is_empty());
    let state_at = if has_tags { payload.timestamp.or(payload.date_updated) } else { None };
    Ok(Parsed { observations, sent_at: None, state_at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(custom: Value) -> Vec<u8> {
        serde_json::json!({"contact_id": "c-1", "location": {"id": "loc-1"}, "tags": "a, b", "customData": custom})
            .to_string()
            .into_bytes()
    }

    fn kinds(parsed: &Parsed) -> Vec<EventKind> {
        parsed
            .observations
            .iter()
            .map(|o| match o {
                Observation::Event(e) => e.kind.clone(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn custom_data_names_the_event() {
        let parsed = parse(&body(serde_json::json!({"event": "tag_added", "tag": "vip"}))).unwrap();
        assert_eq!(kinds(&parsed), [EventKind::TagAdded { tag: "vip".into() }]);
        let parsed = parse(&body(serde_json::json!({"followd_event": "stage_changed", "followd_pipeline": "Sales",
                                                     "followd_stage": "Won"})))
        .unwrap();
        assert_eq!(
            kinds(&parsed),
            [EventKind::StageChanged {
                pipeline: "Sales".into(),
                stage: "Won".into(),
                from_stage: None,
                names: None,
                opportunity_id: None,
                assigned_to: None
            }]
        );
    }

    #[test]
    fn an_assignment_comes_from_custom_data_and_an_empty_assignee_is_nobody() {
        let data = serde_json::json!({"event": "assigned_changed", "assigned_to": "usr_b", "from_assigned_to": "",
                                      "opportunity_id": "opp-1"});
        let user = UserId::parse("usr_b").unwrap();
        assert_eq!(
            kinds(&parse(&body(data)).unwrap()),
            [EventKind::AssignedChanged {
                record: Record::Opportunity,
                assigned_to: Some(user),
                from: None,
                opportunity_id: Some("opp-1".into())
            }]
        );
    }

    #[test]
    fn comma_separated_tags_become_tag_added_events_of_a_new_contact() {
        let parsed = parse(&body(serde_json::json!({"event": "contact_created"}))).unwrap();
        assert_eq!(kinds(&parsed).len(), 3);
    }

    #[test]
    fn a_missing_event_says_how_to_add_it() {
        let err = parse(&body(serde_json::json!({}))).unwrap_err().to_string();
        assert!(err.contains("customData.event") && err.contains("Custom Data"), "{err}");
    }

    #[test]
    fn the_shared_example_needs_an_event_in_custom_data() {
        let path = format!("{}/../shared/ghl/payloads/workflow-webhook.json", env!("CARGO_MANIFEST_DIR"));
        let example = std::fs::read(path).unwrap();
        assert!(parse(&example).is_err());
    }
}
