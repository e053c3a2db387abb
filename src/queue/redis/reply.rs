//! Decoding what Redis stores and answers: contact members, integers, strings and the lease script's reply.

use redis::Value;

use crate::domain::clock::Millis;
use crate::event::{ContactId, LocationId};
use crate::queue::{ContactKey, Lease, QueueError, QueuedOp};

pub(super) fn corrupt(what: String) -> QueueError {
    QueueError::Corrupt(serde::de::Error::custom(what))
}

pub(super) fn parse_member(member: &str) -> Result<ContactKey, QueueError> {
    let (location, contact) = member.split_once('\u{1f}').ok_or_else(|| corrupt(format!("bad contact {member:?}")))?;
    Ok(ContactKey {
        location_id: LocationId::parse(location).map_err(|e| corrupt(format!("bad location: {e}")))?,
        contact_id: ContactId::parse(contact).map_err(|e| corrupt(format!("bad contact: {e}")))?,
    })
}

fn int(value: &Value) -> Result<i64, QueueError> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::BulkString(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("expected an integer".to_owned())),
        other => Err(corrupt(format!("expected an integer, got {other:?}"))),
    }
}

fn text(value: &Value) -> Result<&str, QueueError> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).map_err(|_| corrupt("not UTF-8".to_owned())),
        Value::SimpleString(s) => Ok(s),
        other => Err(corrupt(format!("expected a string, got {other:?}"))),
    }
}

/// What one partition's lease script answered.
pub(super) enum PartitionLease {
    Leased(Lease),
    Empty(Option<Millis>),
    Stale,
}

pub(super) fn parse_lease(reply: Value, id: u64) -> Result<PartitionLease, QueueError> {
    let Value::Array(items) = reply else { return Err(corrupt(format!("lease reply {reply:?}"))) };
    match items.first().map(int).transpose()? {
        Some(1) if items.len() >= 4 => {
            let contact = parse_member(text(&items[1])?)?;
            let deadline = u64::try_from(int(&items[2])?).unwrap_or(0);
            let attempts = u32::try_from(int(&items[3])?).unwrap_or(u32::MAX);
            // Stored operations carry no sequence number (it would cost a counter per write); within a lease,
            // their position in the list is their order.
            let ops = items[4..]
                .iter()
                .enumerate()
                .map(|(i, op)| Ok(QueuedOp { seq: i as u64 + 1, ..serde_json::from_str::<QueuedOp>(text(op)?)? }))
                .collect::<Result<Vec<_>, QueueError>>()?;
            Ok(PartitionLease::Leased(Lease { id, contact, ops, attempts, deadline }))
        }
        Some(0) => Ok(PartitionLease::Empty(items.get(1).map(int).transpose()?.and_then(|n| u64::try_from(n).ok()))),
        Some(2) => Ok(PartitionLease::Stale),
        _ => Err(corrupt(format!("lease reply {items:?}"))),
    }
}
