//! What the queue keeps per sub-account (location) besides its rate budget: whether it is paused, and its OAuth
//! tokens.

use super::RedisQueue;
use crate::event::LocationId;
use crate::queue::{Millis, OAuthTokens, QueueError, now_ms};

impl RedisQueue {
    pub(super) async fn pause_location(
        &self,
        location: &LocationId,
        until: Millis,
        reason: &str,
    ) -> Result<(), QueueError> {
        let partition = self.keys.for_location(location);
        let ttl = until.saturating_sub(now_ms()).max(1);
        let _: () = redis::cmd("SET")
            .arg(partition.pause(location))
            .arg(format!("{until} {reason}"))
            .arg("PX")
            .arg(ttl)
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    pub(super) async fn read_pause(
        &self,
        location: &LocationId,
        now: Millis,
    ) -> Result<Option<(Millis, String)>, QueueError> {
        let partition = self.keys.for_location(location);
        let value: Option<String> =
            redis::cmd("GET").arg(partition.pause(location)).query_async(&mut self.conn()).await?;
        Ok(value.and_then(|v| {
            let (until, reason) = v.split_once(' ').unwrap_or((v.as_str(), ""));
            let until = until.parse::<Millis>().ok()?;
            (until > now).then(|| (until, reason.to_owned()))
        }))
    }

    pub(super) async fn read_oauth_tokens(&self, location: &LocationId) -> Result<Option<OAuthTokens>, QueueError> {
        let key = self.keys.for_location(location).oauth(location);
        let stored: Option<String> = redis::cmd("GET").arg(key).query_async(&mut self.conn()).await?;
        Ok(stored.map(|json| serde_json::from_str(&json)).transpose()?)
    }

    pub(super) async fn write_oauth_tokens(
        &self,
        location: &LocationId,
        tokens: &OAuthTokens,
    ) -> Result<(), QueueError> {
        let key = self.keys.for_location(location).oauth(location);
        let _: () =
            redis::cmd("SET").arg(key).arg(serde_json::to_string(tokens)?).query_async(&mut self.conn()).await?;
        Ok(())
    }
}
