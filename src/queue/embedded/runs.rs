//! Reconcile runs in the embedded store: one record per run id, written whole in one transaction.

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};

use super::EmbeddedQueue;
use super::tables::{OrQueue, RUNS};
use crate::queue::{QueueError, RunLog, RunRecord};

#[async_trait]
impl RunLog for EmbeddedQueue {
    async fn save_run(&self, run: &RunRecord) -> Result<(), QueueError> {
        let (id, value) = (run.id.clone(), serde_json::to_vec(run)?);
        self.write(move |tx| {
            tx.open_table(RUNS).q()?.insert(id.as_str(), value.as_slice()).q()?;
            Ok(())
        })
        .await
    }

    async fn runs(&self) -> Result<Vec<RunRecord>, QueueError> {
        self.blocking(|db| {
            let tx = db.begin_read().q()?;
            let table = tx.open_table(RUNS).q()?;
            let mut runs = table
                .iter()
                .q()?
                .map(|entry| Ok(serde_json::from_slice::<RunRecord>(entry.q()?.1.value())?))
                .collect::<Result<Vec<_>, QueueError>>()?;
            runs.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
            Ok(runs)
        })
        .await
    }
}
