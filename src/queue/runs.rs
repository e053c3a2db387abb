//! Reconcile runs: where each run stands, kept in the store so an interrupted run resumes where it stopped
//! (from another process, or after a restart) and `followd reconcile status` shows every run.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::QueueError;
use crate::domain::clock::Millis;
use crate::domain::followers::Ownership;
use crate::event::LocationId;

/// Where a run is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "reason")]
pub enum RunState {
    Running,
    Done,
    /// Stopped on an error it could not get past (the reason); running the command again resumes it.
    Failed(String),
}

/// One reconcile run of one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique; part of the event ids of the changes it queues (`reconcile:<run>:<contact>`).
    pub id: String,
    pub location_id: LocationId,
    pub started_at: Millis,
    pub updated_at: Millis,
    /// The search cursor of the next page to read; `None` before the first page.
    pub cursor: Option<serde_json::Value>,
    pub contacts_read: u64,
    pub contacts_changed: u64,
    pub adds: u64,
    pub removes: u64,
    #[serde(flatten)]
    pub state: RunState,
    /// `--ownership`, if given: a resumed run keeps it.
    #[serde(default)]
    pub ownership: Option<Ownership>,
}

/// Keeps reconcile runs. Each save replaces the run's record whole.
#[async_trait]
pub trait RunLog: Send + Sync + 'static {
    async fn save_run(&self, run: &RunRecord) -> Result<(), QueueError>;

    /// Every run, oldest first.
    async fn runs(&self) -> Result<Vec<RunRecord>, QueueError>;
}
