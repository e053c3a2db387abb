//! The test support's private Redis works here, so the Redis queue's tests can rely on it.

use crate::support::redis::RedisServer;

#[tokio::test]
async fn a_private_redis_server_starts_and_answers() {
    let server = RedisServer::start().await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET").arg("k").arg("v").query_async(&mut conn).await.unwrap();
    let value: String = redis::cmd("GET").arg("k").query_async(&mut conn).await.unwrap();
    assert_eq!(value, "v");
}
