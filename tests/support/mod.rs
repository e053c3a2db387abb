//! Test support shared by the integration test binaries: a private `redis-server`, a fake CRM, the
//! application on port 0, and the real binary as a child process.
#![allow(dead_code)] // not every test binary uses every helper

pub mod app;
pub mod ghl;
pub mod openapi;
pub mod process;
pub mod redis;
pub mod upstream;

use std::time::Duration;

/// Polls `condition` until it holds or `deadline` passes; returns whether it held. A guard, not a clock:
/// tests wait on a condition, never for a fixed time.
pub async fn eventually<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A free loopback port: bound, read and released. Used where a child process must be told its port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}
