//! A private `redis-server` on a free loopback port, killed when dropped. Never a mock: the queue's Lua,
//! atomicity and ordering are only tested against the real server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    child: Child,
    pub port: u16,
    /// Holds the data directory of a persistent server.
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// A throwaway server: persistence off.
    pub async fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"]).await
    }

    /// A server that persists with AOF (`appendfsync everysec`), as the README recommends.
    pub async fn start_persistent() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]).await
    }

    async fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = super::free_port();
        let child = spawn(port, dir.path(), args);
        let server = Self { child, port, _dir: dir };
        server.wait_ready().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    async fn wait_ready(&self) {
        let url = self.url();
        let ready = super::eventually(Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url) else { return false };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return false };
                redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok_and(|pong| pong == "PONG")
            }
        })
        .await;
        assert!(ready, "redis-server on port {} did not answer PING within 10s", self.port);
    }
}

fn binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("redis-server"))
}

fn spawn(port: u16, dir: &Path, args: &[&str]) -> Child {
    let mut command = Command::new(binary());
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    match command.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("redis-server is not installed: run `apt-get install -y redis-server` (or set REDIS_SERVER)")
        }
        Err(e) => panic!("cannot start redis-server: {e}"),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
