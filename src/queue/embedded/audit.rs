//! Each contact's audit trail in the embedded queue: what every ended lease did to its followers, the newest
//! [`AUDIT_PER_CONTACT`] entries per contact.

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::EmbeddedQueue;
use super::tables::{AUDIT, META, OrQueue, contact_key};
use crate::domain::clock::Millis;
use crate::domain::outcome::Outcome;
use crate::event::{ContactId, ContactKey, LocationId};
use crate::queue::{AUDIT_PER_CONTACT, AuditEntry, AuditLog, Lease, QueueError, QueuedOp};

#[async_trait]
impl AuditLog for EmbeddedQueue {
    async fn audit(&self, location: Option<&LocationId>, contact: &ContactId) -> Result<Vec<AuditEntry>, QueueError> {
        let location = location.cloned();
        let contact = contact.clone();
        self.blocking(move |db| audit(db, location.as_ref(), &contact)).await
    }
}

/// Records the lease's operations in the contact's audit trail with `result`, dropping the oldest entries
/// beyond [`AUDIT_PER_CONTACT`].
pub(super) fn record_audit(
    tx: &WriteTransaction,
    key: &str,
    lease: &Lease,
    now: Millis,
    result: &dyn Fn(&QueuedOp) -> Outcome,
) -> Result<(), QueueError> {
    let mut meta = tx.open_table(META).q()?;
    let mut seq = meta.get("audit_seq").q()?.map(|v| v.value()).unwrap_or(0);
    let mut audit = tx.open_table(AUDIT).q()?;
    for op in &lease.ops {
        seq += 1;
        let entry = AuditEntry {
            at: now,
            location_id: lease.contact.location_id.clone(),
            contact_id: lease.contact.contact_id.clone(),
            result: result(op),
            operation: op.clone(),
        };
        audit.insert((key, seq), serde_json::to_vec(&entry)?.as_slice()).q()?;
    }
    meta.insert("audit_seq", seq).q()?;
    let kept: Vec<u64> = audit
        .range((key, 0)..=(key, u64::MAX))
        .q()?
        .map(|entry| entry.q().map(|(k, _)| k.value().1))
        .collect::<Result<_, _>>()?;
    for old in kept.iter().take(kept.len().saturating_sub(AUDIT_PER_CONTACT)) {
        audit.remove((key, *old)).q()?;
    }
    Ok(())
}

/// The contact's audit trail, newest first; `location: None` matches the contact id in every location.
fn audit(db: &Database, location: Option<&LocationId>, contact: &ContactId) -> Result<Vec<AuditEntry>, QueueError> {
    let tx = db.begin_read().q()?;
    let audit = tx.open_table(AUDIT).q()?;
    let mut entries = Vec::new();
    for entry in audit.iter().q()? {
        let (key, value) = entry.q()?;
        let (contact_part, seq) = key.value();
        let matches = match location {
            Some(location) => {
                contact_part == contact_key(&ContactKey { location_id: location.clone(), contact_id: contact.clone() })
            }
            None => contact_part.rsplit_once('\u{1f}').is_some_and(|(_, c)| c == contact.as_str()),
        };
        if matches {
            entries.push((seq, serde_json::from_slice::<AuditEntry>(value.value())?));
        }
    }
    entries.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    Ok(entries.into_iter().map(|(_, entry)| entry).collect())
}
