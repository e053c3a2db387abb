//! The Redis queue: any number of `followd` processes share one Redis (or Redis Cluster).
//!
//! Data structures, per partition (see `../keys.rs` for names and the hash-tag rule):
//! - `ready`   sorted set, contact → when it is ready (ms); a retry is scheduled in the future
//! - `leases`  sorted set, contact → lease deadline (ms), for the reaper
//! - `pending:<contact>` list of JSON operations, oldest first; only an ack removes from its front
//! - `state:<contact>`   hash: lease id, deadline, failed attempts
//! - `seen:<event id>`   a string with a TTL: the de-duplication window
//! - `cursor:<rule \x1f location>`, `known:<contact>`, `pending_count`
//!
//! Every state change is one Lua script (`src/queue/lua/*.lua`, each with a header naming its KEYS and ARGV), so
//! a crash between two commands cannot leave a contact half-leased. Scripts are hashed once, loaded at connect (so
//! a Redis that cannot run them fails at start) and run with EVALSHA; `redis::Script` reloads them on NOSCRIPT,
//! e.g. after a Redis restart. Time comes in as an argument, never from Redis's clock, like the embedded queue.
//!
//! The code is split by concern. The [`Queue`] implementation below hands each call to its part (a call that
//! is one short command, like `stats`, stays here); each other store trait is implemented in its own file:
//! - `conn.rs`: the connection, standalone or Cluster; `scripts.rs`: the scripts; `reply.rs`: decoding replies
//! - `enqueue.rs`: a batch, per partition, and `enqueue.lua`'s argument layout (round robin included)
//! - `leases.rs`: taking, ending (ack or dead letter), retrying and reaping leases
//! - `letters.rs`: listing, replaying and purging dead letters
//! - `contact_memory.rs`: [`super::ContactMemory`], tags, stages and known followers kept between events
//! - `locations.rs`: [`super::LocationState`] (budget and pause) and the OAuth [`crate::upstream::TokenStore`]
//! - `audit.rs`: [`super::AuditLog`]; `outcomes.rs`: [`super::Outcomes`], for status pages of other processes
//! - `runs.rs`: [`super::RunLog`], reconcile runs, in their location's partition

mod audit;
mod conn;
mod contact_memory;
mod covers;
mod enqueue;
mod leases;
mod letters;
mod locations;
mod outcomes;
mod reply;
mod roster;
mod runs;
mod scripts;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;

use self::conn::Conn;
use self::scripts::Scripts;
use super::keys::Keys;
use super::{
    Applied, DeadLetter, EnqueueOutcome, EventOps, Failure, Lease, LeaseOutcome, Queue, QueueError, QueueStats,
    Selection,
};
use crate::config::RedisUrl;
use crate::domain::clock::Millis;
use crate::event::{LocationId, UserId};

/// How the Redis queue is laid out and timed.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub prefix: String,
    pub partitions: u16,
    pub lease_for: Duration,
    pub dedup_ttl: Duration,
}

/// The Redis-backed store: [`super::Queue`] and every other store trait.
pub struct RedisQueue {
    /// `None` until Redis first answers, for a receiver that started while it did not (see
    /// [`RedisQueue::connect_in_background`]).
    conn: Arc<ArcSwapOption<Conn>>,
    url: String,
    keys: Keys,
    scripts: Scripts,
    lease_for: Duration,
    dedup_ttl: Duration,
    /// Where the next lease starts looking, so workers spread over the partitions.
    next_partition: AtomicUsize,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue").field("keys", &self.keys).finish_non_exhaustive()
    }
}

impl RedisQueue {
    /// Connects (standalone or Cluster, detected from the server), then loads every script.
    pub async fn connect(url: &RedisUrl, options: RedisOptions) -> Result<Self, QueueError> {
        let conn = open_and_load(url).await?;
        Ok(Self::with(Some(conn), url, options))
    }

    /// As [`RedisQueue::connect`], but when Redis does not answer now the queue is returned anyway and keeps
    /// trying in the background (every [`RECONNECT_EVERY`]); until then every call fails with
    /// [`QueueError::NotConnected`]. For a receiver with a spool: it takes webhooks into the spool from its
    /// first second, as it would through any other outage.
    pub async fn connect_in_background(url: &RedisUrl, options: RedisOptions) -> Self {
        match open_and_load(url).await {
            Ok(conn) => Self::with(Some(conn), url, options),
            Err(error) => {
                tracing::warn!(%error, "Redis does not answer at start; webhooks go to the spool until it does");
                let queue = Self::with(None, url, options);
                let (slot, url) = (Arc::clone(&queue.conn), url.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(RECONNECT_EVERY).await;
                        if let Ok(conn) = open_and_load(&url).await {
                            slot.store(Some(Arc::new(conn)));
                            tracing::info!("Redis answers: connected");
                            return;
                        }
                    }
                });
                queue
            }
        }
    }

    fn with(conn: Option<Conn>, url: &RedisUrl, options: RedisOptions) -> Self {
        Self {
            conn: Arc::new(ArcSwapOption::new(conn.map(Arc::new))),
            url: url.to_string(),
            keys: Keys::new(&options.prefix, options.partitions),
            scripts: Scripts::new(),
            lease_for: options.lease_for,
            dedup_ttl: options.dedup_ttl,
            next_partition: AtomicUsize::new(rand::random::<u16>() as usize),
        }
    }

    fn conn(&self) -> Result<Conn, QueueError> {
        match &*self.conn.load() {
            Some(conn) => Ok(Conn::clone(conn)),
            None => Err(QueueError::NotConnected(self.url.clone())),
        }
    }
}

/// How often a queue that started without Redis tries again.
const RECONNECT_EVERY: Duration = Duration::from_secs(2);

/// Connects to `url` and loads every script.
async fn open_and_load(url: &RedisUrl) -> Result<Conn, QueueError> {
    let unreachable = |source: redis::RedisError| QueueError::Unreachable { url: url.to_string(), source };
    let mut conn = Conn::open(url).await.map_err(unreachable)?;
    for script in Scripts::new().all() {
        script.prepare_invoke().load_async(&mut conn).await.map_err(unreachable)?;
    }
    Ok(conn)
}

#[async_trait]
impl Queue for RedisQueue {
    async fn enqueue(&self, batch: Vec<EventOps>, now: Millis) -> Result<EnqueueOutcome, QueueError> {
        self.enqueue_batch(batch, now).await
    }

    async fn lease(&self, now: Millis) -> Result<LeaseOutcome, QueueError> {
        self.lease_next(now).await
    }

    async fn ack(&self, lease: &Lease, applied: &Applied, now: Millis) -> Result<(), QueueError> {
        self.end_lease(lease, applied, None, now).await
    }

    async fn dead_letter(&self, lease: &Lease, failure: &Failure, now: Millis) -> Result<(), QueueError> {
        self.end_lease(lease, &Applied::default(), Some(failure), now).await
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>, QueueError> {
        self.all_dead_letters().await
    }

    async fn replay(&self, which: &Selection, now: Millis) -> Result<usize, QueueError> {
        self.replay_letters(which, now).await
    }

    async fn purge(&self, which: &Selection) -> Result<usize, QueueError> {
        self.purge_letters(which).await
    }

    async fn retry(&self, lease: &Lease, retry_at: Millis) -> Result<(), QueueError> {
        self.retry_at(lease, retry_at).await
    }

    async fn reap(&self, now: Millis) -> Result<usize, QueueError> {
        self.reap_expired(now).await
    }

    async fn fire_timers(&self, now: Millis) -> Result<usize, QueueError> {
        self.fire_due_timers(now).await
    }

    async fn refund_turn(
        &self,
        location: &LocationId,
        rule: &str,
        user: &UserId,
        picked_at: Millis,
    ) -> Result<(), QueueError> {
        let partition = self.keys.for_location(location);
        let when = crate::domain::pick::When::at(picked_at);
        let _: i64 = self
            .scripts
            .refund
            .key(partition.rotation(&crate::domain::rotation::key(rule, location)))
            .arg(enqueue::escaped(user)?)
            .arg(when.day)
            .arg(when.week)
            .invoke_async(&mut self.conn()?)
            .await?;
        Ok(())
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let mut stats = QueueStats::default();
        for n in 0..self.keys.partitions() {
            let partition = self.keys.partition(n);
            let (ready, leased, pending, dead): (u64, u64, Option<i64>, u64) = redis::pipe()
                .cmd("ZCARD")
                .arg(partition.ready())
                .cmd("ZCARD")
                .arg(partition.leases())
                .cmd("GET")
                .arg(partition.pending_count())
                .cmd("HLEN")
                .arg(partition.dead())
                .query_async(&mut self.conn()?)
                .await?;
            stats.dead += dead;
            stats.ready += ready;
            stats.leased += leased;
            stats.pending += u64::try_from(pending.unwrap_or(0)).unwrap_or(0);
        }
        Ok(stats)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn()?).await?;
        Ok(())
    }
}
