//! Delivery outcomes shared between processes: a worker notes what became of a lease's events, and a receiver's
//! status page, which recorded the decisions, reads them. One key per event with a TTL, in its location's
//! partition, so a status page reads each location's with one MGET (one slot on Cluster).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::RedisQueue;
use crate::domain::clock::millis;
use crate::domain::outcome::Outcome;
use crate::event::{EventId, LocationId};
use crate::queue::{OUTCOME_TTL, Outcomes, QueueError};

#[async_trait]
impl Outcomes for RedisQueue {
    fn is_shared(&self) -> bool {
        true
    }

    async fn note_outcome(
        &self,
        location: &LocationId,
        events: &[EventId],
        outcome: &Outcome,
    ) -> Result<(), QueueError> {
        let result = outcome.to_string();
        let partition = self.keys.for_location(location);
        let mut pipeline = redis::pipe();
        for event in events {
            pipeline.cmd("SET").arg(partition.outcome(event)).arg(&result).arg("PX").arg(millis(OUTCOME_TTL)).ignore();
        }
        let _: () = pipeline.query_async(&mut self.conn()?).await?;
        Ok(())
    }

    async fn outcomes(&self, events: &[(LocationId, EventId)]) -> Result<Vec<Option<Outcome>>, QueueError> {
        let mut by_partition: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, (location, _)) in events.iter().enumerate() {
            by_partition.entry(self.keys.partition_of(location)).or_default().push(i);
        }
        let mut outcomes = vec![None; events.len()];
        for (partition, indices) in by_partition {
            let partition = self.keys.partition(partition);
            let keys: Vec<String> = indices.iter().map(|&i| partition.outcome(&events[i].1)).collect();
            let found: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut self.conn()?).await?;
            for (&i, outcome) in indices.iter().zip(found) {
                outcomes[i] = outcome.map(Outcome::from);
            }
        }
        Ok(outcomes)
    }
}
