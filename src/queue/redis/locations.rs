//! What Redis keeps per sub-account (location), shared by every process: its rate budget (one GCRA script,
//! `throttle.lua`), whether it is paused ([`LocationState`]), and its OAuth tokens ([`TokenStore`]).

use async_trait::async_trait;

use super::RedisQueue;
use crate::domain::clock::Millis;
use crate::domain::rate::{LimiterState, Limits};
use crate::event::LocationId;
use crate::queue::{LocationState, Pause, QueueError};
use crate::upstream::{OAuthTokens, TokenStore, TokenStoreError};

#[async_trait]
impl LocationState for RedisQueue {
    async fn throttle(
        &self,
        location: &LocationId,
        limits: Limits,
        cost: u64,
        now: Millis,
    ) -> Result<Option<Millis>, QueueError> {
        let partition = self.keys.for_location(location);
        let wait: u64 = self
            .scripts
            .throttle
            .key(partition.limiter(location))
            .arg(now)
            .arg(limits.spacing_ms)
            .arg(limits.daily)
            .arg(cost)
            .arg(limits.tolerance_ms)
            .invoke_async(&mut self.conn()?)
            .await?;
        Ok((wait > 0).then_some(wait))
    }

    async fn limiter_state(&self, location: &LocationId) -> Result<Option<LimiterState>, QueueError> {
        let key = self.keys.for_location(location).limiter(location);
        let (tat, day, count): (Option<u64>, Option<u64>, Option<u64>) =
            redis::cmd("HMGET").arg(key).arg("tat").arg("day").arg("count").query_async(&mut self.conn()?).await?;
        Ok(tat.map(|tat| LimiterState { tat, day: day.unwrap_or(0), count: count.unwrap_or(0) }))
    }

    async fn pause(&self, location: &LocationId, until: Millis, reason: &str, now: Millis) -> Result<(), QueueError> {
        let key = self.keys.for_location(location).pause(location);
        if until <= now {
            let _: () = redis::cmd("DEL").arg(key).query_async(&mut self.conn()?).await?;
            return Ok(());
        }
        let ttl = until - now;
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(format!("{until} {reason}"))
            .arg("PX")
            .arg(ttl)
            .query_async(&mut self.conn()?)
            .await?;
        Ok(())
    }

    async fn paused(&self, location: &LocationId, now: Millis) -> Result<Option<Pause>, QueueError> {
        let partition = self.keys.for_location(location);
        let value: Option<String> =
            redis::cmd("GET").arg(partition.pause(location)).query_async(&mut self.conn()?).await?;
        Ok(value.and_then(|v| {
            let (until, reason) = v.split_once(' ').unwrap_or((v.as_str(), ""));
            let until = until.parse::<Millis>().ok()?;
            (until > now).then(|| Pause { until, reason: reason.to_owned() })
        }))
    }
}

#[async_trait]
impl TokenStore for RedisQueue {
    async fn load_tokens(&self, location: &LocationId) -> Result<Option<OAuthTokens>, TokenStoreError> {
        self.read_oauth_tokens(location).await.map_err(|e| TokenStoreError(Box::new(e)))
    }

    async fn save_tokens(&self, location: &LocationId, tokens: &OAuthTokens) -> Result<(), TokenStoreError> {
        self.write_oauth_tokens(location, tokens).await.map_err(|e| TokenStoreError(Box::new(e)))
    }
}

impl RedisQueue {
    async fn read_oauth_tokens(&self, location: &LocationId) -> Result<Option<OAuthTokens>, QueueError> {
        let key = self.keys.for_location(location).oauth(location);
        let stored: Option<String> = redis::cmd("GET").arg(key).query_async(&mut self.conn()?).await?;
        Ok(stored.map(|json| serde_json::from_str(&json)).transpose()?)
    }

    async fn write_oauth_tokens(&self, location: &LocationId, tokens: &OAuthTokens) -> Result<(), QueueError> {
        let key = self.keys.for_location(location).oauth(location);
        let _: () =
            redis::cmd("SET").arg(key).arg(serde_json::to_string(tokens)?).query_async(&mut self.conn()?).await?;
        Ok(())
    }
}
