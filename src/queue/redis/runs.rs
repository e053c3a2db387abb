//! Reconcile runs in Redis: a hash per partition (run id → the run's record), in its location's partition.

use async_trait::async_trait;

use super::RedisQueue;
use crate::queue::{QueueError, RunLog, RunRecord};

#[async_trait]
impl RunLog for RedisQueue {
    async fn save_run(&self, run: &RunRecord) -> Result<(), QueueError> {
        let key = self.keys.for_location(&run.location_id).runs();
        let _: () = redis::cmd("HSET")
            .arg(key)
            .arg(&run.id)
            .arg(serde_json::to_string(run)?)
            .query_async(&mut self.conn()?)
            .await?;
        Ok(())
    }

    async fn runs(&self) -> Result<Vec<RunRecord>, QueueError> {
        let mut runs = Vec::new();
        for n in 0..self.keys.partitions() {
            let records: Vec<String> =
                redis::cmd("HVALS").arg(self.keys.partition(n).runs()).query_async(&mut self.conn()?).await?;
            for record in records {
                runs.push(serde_json::from_str::<RunRecord>(&record)?);
            }
        }
        runs.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(runs)
    }
}
