//! [`Stores`]: one backend, embedded or Redis, seen as each of the small traits its parts use.
//!
//! The backend is chosen once, here, from [`StoreOptions`]; everything else holds only the traits it needs
//! (a worker: the queue, the contact memory, the location state and the outcomes; the OAuth client: the token
//! store), so no part can reach a concern it has no business with.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{
    AuditLog, ContactMemory, CoverLog, EmbeddedQueue, LocationState, Outcomes, Queue, QueueError, RedisOptions,
    RedisQueue, RosterLog, RunLog,
};
use crate::config::RedisUrl;
use crate::upstream::TokenStore;

/// Where and how the store lives.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Set: Redis, shared by every process. Unset: the embedded store in `data_dir`, for one process.
    pub redis_url: Option<RedisUrl>,
    pub data_dir: PathBuf,
    /// Redis only: how keys are named and spread.
    pub prefix: String,
    pub partitions: u16,
    /// How long a worker holds a contact before another may take it.
    pub lease_for: Duration,
    /// How long an event id is remembered for de-duplication.
    pub dedup_ttl: Duration,
    /// Redis only: open even when Redis does not answer yet, and connect once it does (a receiver with a
    /// spool, which takes webhooks meanwhile). Otherwise an unreachable Redis fails the open.
    pub connect_later: bool,
}

/// One backend, as every trait the service uses. Cheap to clone.
#[derive(Clone)]
pub struct Stores {
    pub queue: Arc<dyn Queue>,
    pub memory: Arc<dyn ContactMemory>,
    pub locations: Arc<dyn LocationState>,
    pub audit: Arc<dyn AuditLog>,
    pub outcomes: Arc<dyn Outcomes>,
    pub tokens: Arc<dyn TokenStore>,
    pub runs: Arc<dyn RunLog>,
    pub covers: Arc<dyn CoverLog>,
    pub roster: Arc<dyn RosterLog>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    /// Every trait of one backend.
    pub fn of<B>(backend: B) -> Self
    where
        B: Queue + ContactMemory + LocationState + AuditLog + Outcomes + TokenStore + RunLog + CoverLog + RosterLog,
    {
        let backend = Arc::new(backend);
        Self {
            queue: Arc::clone(&backend) as Arc<dyn Queue>,
            memory: Arc::clone(&backend) as Arc<dyn ContactMemory>,
            locations: Arc::clone(&backend) as Arc<dyn LocationState>,
            audit: Arc::clone(&backend) as Arc<dyn AuditLog>,
            outcomes: Arc::clone(&backend) as Arc<dyn Outcomes>,
            tokens: Arc::clone(&backend) as Arc<dyn TokenStore>,
            runs: Arc::clone(&backend) as Arc<dyn RunLog>,
            covers: Arc::clone(&backend) as Arc<dyn CoverLog>,
            roster: backend as Arc<dyn RosterLog>,
        }
    }

    /// Opens the backend `options` name: Redis when `redis_url` is set, else the embedded store.
    pub async fn open(options: &StoreOptions) -> Result<Self, QueueError> {
        match &options.redis_url {
            Some(url) => {
                let redis = RedisOptions {
                    prefix: options.prefix.clone(),
                    partitions: options.partitions,
                    lease_for: options.lease_for,
                    dedup_ttl: options.dedup_ttl,
                };
                let queue = if options.connect_later {
                    RedisQueue::connect_in_background(url, redis).await
                } else {
                    RedisQueue::connect(url, redis).await?
                };
                tracing::info!(%url, partitions = options.partitions, "queue: Redis (shared by every process)");
                Ok(Self::of(queue))
            }
            None => {
                let queue = EmbeddedQueue::open(&options.data_dir, options.lease_for, options.dedup_ttl)?;
                tracing::info!(path = %EmbeddedQueue::path(&options.data_dir).display(), "queue: embedded store (one process)");
                let released = queue.release_predecessor_leases(crate::domain::clock::now_ms()).await?;
                if released > 0 {
                    tracing::warn!(
                        released,
                        "contacts a previous process was delivering when it stopped go out again now"
                    );
                }
                Ok(Self::of(queue))
            }
        }
    }
}
