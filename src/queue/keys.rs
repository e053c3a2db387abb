//! Every Redis key the queue uses, in one place.
//!
//! The hash-tag rule (`DESIGN.md`): every key one script touches shares one hash tag, so each script runs in one
//! Redis Cluster slot. The queue is split into `partitions`, each with its own tag `{<prefix>:<n>}`; a location
//! (sub-account) always maps to the same partition, so its contacts, their event ids and its round robins' standings
//! live together, and the partitions spread over the cluster's shards. Changing the partition function or the
//! count moves every location: treat both as part of the stored format.

use crate::event::{ContactKey, EventId, LocationId};

/// The key names of one queue (one prefix, one partition count).
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    partitions: u16,
}

/// The keys of one partition; each starts with the partition's hash tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionKeys {
    /// `{prefix:n}:` — the tag and a separator; scripts build per-contact keys from it.
    base: String,
}

/// FNV-1a, 64 bit: stable across processes, platforms and releases (unlike `std`'s hasher), which a stored
/// mapping needs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// How a contact is written inside key names: `location \x1f contact` (ids hold no control characters).
pub fn contact_member(contact: &ContactKey) -> String {
    format!("{}\u{1f}{}", contact.location_id, contact.contact_id)
}

impl Keys {
    pub fn new(prefix: &str, partitions: u16) -> Self {
        Self { prefix: prefix.to_owned(), partitions: partitions.max(1) }
    }

    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The partition a location's data lives in.
    pub fn partition_of(&self, location: &LocationId) -> u16 {
        u16::try_from(fnv1a(location.as_str().as_bytes()) % u64::from(self.partitions)).unwrap_or(0)
    }

    pub fn partition(&self, n: u16) -> PartitionKeys {
        PartitionKeys { base: format!("{{{}:{n}}}:", self.prefix) }
    }

    pub fn for_location(&self, location: &LocationId) -> PartitionKeys {
        self.partition(self.partition_of(location))
    }
}

impl PartitionKeys {
    /// The prefix scripts extend with `pending:<contact>` and `state:<contact>`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sorted set: contact → when it is ready (ms).
    pub fn ready(&self) -> String {
        format!("{}ready", self.base)
    }

    /// Sorted set: contact → lease deadline (ms).
    pub fn leases(&self) -> String {
        format!("{}leases", self.base)
    }

    /// Counter: operations not yet acknowledged.
    pub fn pending_count(&self) -> String {
        format!("{}pending_count", self.base)
    }

    /// List: the contact's operations in enqueue order.
    pub fn pending(&self, contact: &str) -> String {
        format!("{}pending:{contact}", self.base)
    }

    /// Hash: the contact's lease id, deadline and failed attempts.
    pub fn state(&self, contact: &str) -> String {
        format!("{}state:{contact}", self.base)
    }

    /// String with a TTL: the event id was seen.
    pub fn seen(&self, event: &EventId) -> String {
        format!("{}seen:{event}", self.base)
    }

    /// Sorted set: `contact \x1e user` → when (ms) that timed follower's removal is due.
    pub fn timers(&self) -> String {
        format!("{}timers", self.base)
    }

    /// Hash: the contact's timed followers, user → the removal to queue when due.
    pub fn contact_timers(&self, contact: &str) -> String {
        format!("{}ctimers:{contact}", self.base)
    }

    /// Hash: a round robin's standings, its team weight and each member's credit (see `enqueue.lua`).
    pub fn rotation(&self, cursor_key: &str) -> String {
        format!("{}rotation:{cursor_key}", self.base)
    }

    /// Set: the contact's last seen tags, normalized.
    pub fn tags(&self, contact: &str) -> String {
        format!("{}tags:{contact}", self.base)
    }

    /// Hash: reconcile run id → its record, for the locations of this partition.
    pub fn runs(&self) -> String {
        format!("{}runs", self.base)
    }

    /// String: the time (ms) of the last whole-state payload applied for the contact.
    pub fn state_time(&self, contact: &str) -> String {
        format!("{}state_time:{contact}", self.base)
    }

    /// String: an opportunity's last seen stage.
    pub fn stage(&self, location: &LocationId, opportunity: &str) -> String {
        format!("{}stage:{location}\u{1f}{opportunity}", self.base)
    }

    /// String with a TTL: the answer a state-changing call gave to one event, so a retry gets the same one.
    pub fn memo(&self, kind: &str, event: &EventId, subject: &str) -> String {
        format!("{}memo:{kind}:{event}\u{1f}{subject}", self.base)
    }

    /// Hash: dead letter id → its description (JSON, operations apart).
    pub fn dead(&self) -> String {
        format!("{}dead", self.base)
    }

    /// List: a dead letter's operations.
    pub fn dead_ops(&self, id: &str) -> String {
        format!("{}deadops:{id}", self.base)
    }

    /// Hash: a location's rate limiter state.
    pub fn limiter(&self, location: &LocationId) -> String {
        format!("{}limiter:{location}", self.base)
    }

    /// String with a TTL: `<until ms> <reason>` while a location is paused.
    pub fn pause(&self, location: &LocationId) -> String {
        format!("{}pause:{location}", self.base)
    }

    /// List: a contact's audit trail, newest first.
    pub fn audit(&self, contact: &str) -> String {
        format!("{}audit:{contact}", self.base)
    }

    /// String: a location's OAuth tokens (JSON).
    pub fn oauth(&self, location: &LocationId) -> String {
        format!("{}oauth:{location}", self.base)
    }

    /// String with a TTL: what delivery made of an event, for status pages of other processes.
    pub fn outcome(&self, event: &EventId) -> String {
        format!("{}outcome:{event}", self.base)
    }

    /// Set: followers followd added to the contact, as versions before ownership kept them (unordered).
    /// `ack.lua` moves them into [`PartitionKeys::owned`] the first time it touches the contact.
    pub fn known(&self, contact: &str) -> String {
        format!("{}known:{contact}", self.base)
    }

    /// Sorted set: followers followd added to the contact, scored by when (ms): oldest first.
    pub fn owned(&self, contact: &str) -> String {
        format!("{}owned:{contact}", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Redis Cluster hashes: the part between the first `{` and the next `}`, when non-empty.
    fn hash_tag(key: &str) -> &str {
        key.find('{')
            .and_then(|open| key[open + 1..].find('}').map(|close| &key[open + 1..open + 1 + close]))
            .filter(|tag| !tag.is_empty())
            .unwrap_or(key)
    }

    #[test]
    fn every_key_of_a_partition_shares_its_hash_tag() {
        let keys = Keys::new("followd", 8);
        let location = LocationId::parse("loc_{odd}").unwrap();
        let p = keys.for_location(&location);
        let contact = "loc_{odd}\u{1f}c-{1}";
        let all = [
            p.ready(),
            p.leases(),
            p.pending_count(),
            p.pending(contact),
            p.state(contact),
            p.seen(&EventId::parse("e}{").unwrap()),
            p.rotation("rule\u{1f}loc"),
            p.known(contact),
            p.owned(contact),
            p.dead(),
            p.limiter(&location),
            p.pause(&location),
            p.oauth(&location),
            p.audit(contact),
            p.dead_ops("3-00ff"),
            p.tags(contact),
            p.state_time(contact),
            p.runs(),
            p.stage(&location, "opp-1"),
            p.memo("tags", &EventId::parse("e").unwrap(), contact),
            p.outcome(&EventId::parse("e}{").unwrap()),
            format!("{}pending:{contact}", p.base()),
        ];
        let tag = hash_tag(&all[0]).to_owned();
        assert_eq!(tag, format!("followd:{}", keys.partition_of(&location)));
        for key in &all {
            assert_eq!(hash_tag(key), tag, "{key}");
        }
    }

    #[test]
    fn a_location_always_maps_to_the_same_partition() {
        let keys = Keys::new("followd", 8);
        let location = LocationId::parse("loc7QpX2mVb9RkTn4WsA").unwrap();
        assert_eq!(keys.partition_of(&location), keys.partition_of(&location.clone()));
        // Pinned: this mapping is stored state; a change would strand queued work.
        assert_eq!(fnv1a(b"loc7QpX2mVb9RkTn4WsA"), 0xcf26_da09_5a39_35b3);
    }
}
