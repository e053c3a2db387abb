//! The connection to Redis: one standalone server or a Cluster, detected at connect, behind one type.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::reply::corrupt;
use crate::config::RedisUrl;
use crate::queue::QueueError;

/// How long connecting may take before Redis counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command may take; the receiver answers within 5 s either way.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(3);

/// A standalone Redis (reconnecting manager) or a Cluster: both multiplexed and cheap to clone.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Conn {
    /// Connects to `url`, asking the server first whether it is a Cluster node.
    pub(super) async fn open(url: &RedisUrl) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url.expose())?;
        let mut probe = tokio::time::timeout(CONNECT_TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
        let info: String = redis::cmd("INFO").arg("cluster").query_async(&mut probe).await?;
        Ok(if info.contains("cluster_enabled:1") {
            let cluster = redis::cluster::ClusterClient::builder(vec![url.expose()])
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .build()?;
            Self::Cluster(cluster.get_async_connection().await?)
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(2));
            Self::Single(ConnectionManager::new_with_config(client, config).await?)
        })
    }

    /// Runs a keyless command (SCAN) where `key`'s partition lives: on a Cluster, the node owning its slot;
    /// on a standalone Redis, the server.
    pub(super) async fn on_partition_node<T: redis::FromRedisValue>(
        self,
        key: &str,
        command: Cmd,
    ) -> Result<T, QueueError> {
        match self {
            Self::Single(mut conn) => Ok(command.query_async(&mut conn).await?),
            Self::Cluster(mut conn) => {
                use ::redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = conn.route_command(command, routing).await?;
                redis::from_redis_value(value).map_err(|e| corrupt(format!("unexpected reply: {e}")))
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
