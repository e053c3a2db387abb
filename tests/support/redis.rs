//! A private `redis-server` on a free loopback port, killed when dropped. Never a mock: the queue's Lua,
//! atomicity and ordering are only tested against the real server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    child: Child,
    pub port: u16,
    /// The server's working directory: where a persistent server keeps its AOF.
    _dir: tempfile::TempDir,
    args: Vec<String>,
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
        let server = Self { child, port, _dir: dir, args: args.iter().map(|a| (*a).to_owned()).collect() };
        server.wait_ready().await;
        server
    }

    /// Stops the server as an operator would (SIGTERM: it writes what it holds and exits).
    pub fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port and directory (so with its AOF, if persistent).
    pub async fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.child = spawn(self.port, self._dir.path(), &args);
        self.wait_ready().await;
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

/// A real Redis Cluster of three masters on loopback ports, made with `redis-cli --cluster create`.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub async fn start() -> Self {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let port = super::free_port();
            let config = dir.path().join("nodes.conf");
            let config = config.to_str().expect("a UTF-8 temp path").to_owned();
            let args =
                ["--cluster-enabled", "yes", "--cluster-config-file", &config, "--save", "", "--appendonly", "no"];
            let child = spawn(port, dir.path(), &args);
            let node = RedisServer { child, port, _dir: dir, args: Vec::new() };
            node.wait_ready().await;
            nodes.push(node);
        }
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let created = tokio::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli is installed with redis-server");
        assert!(created.status.success(), "cluster create failed: {}", String::from_utf8_lossy(&created.stdout));
        let cluster = Self { nodes };
        for node in &cluster.nodes {
            let url = node.url();
            let ok = super::eventually(Duration::from_secs(20), || {
                let url = url.clone();
                async move {
                    let Ok(client) = redis::Client::open(url) else { return false };
                    let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return false };
                    let info: String =
                        redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await.unwrap_or_default();
                    info.contains("cluster_state:ok")
                }
            })
            .await;
            assert!(ok, "the cluster did not reach cluster_state:ok");
        }
        cluster
    }

    /// A seed node's URL; the client discovers the others.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }
}
