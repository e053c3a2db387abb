//! A private `redis-server` on a free loopback port, killed when dropped. Never a mock: the queue's Lua,
//! atomicity and ordering are only tested against the real server.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        launch(|_| args.iter().map(|a| (*a).to_owned()).collect()).await
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
        assert!(self.ready().await, "redis-server did not come back on port {} within {READY_WITHIN:?}", self.port);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Polls until this child answers on its port, or it exits, or [`READY_WITHIN`] passes. The answer must
    /// come from this child's process id: another test's server may hold the port this one failed to bind.
    async fn ready(&mut self) -> bool {
        let deadline = Instant::now() + READY_WITHIN;
        let url = self.url();
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return false;
            }
            if answering_pid(&url).await == Some(self.child.id()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

/// How long a starting redis-server may take to answer (a busy CI machine starts many at once).
const READY_WITHIN: Duration = Duration::from_secs(30);
/// Free ports tried before giving up.
const PORT_ATTEMPTS: usize = 5;

/// Starts a redis-server on a free port, in a new working directory that `args` may name. A port that another
/// process takes between `free_port` and the bind makes the child exit; then another port is tried.
async fn launch(args: impl Fn(&Path) -> Vec<String>) -> RedisServer {
    for _ in 0..PORT_ATTEMPTS {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let port = super::free_port();
        let args = args(dir.path());
        let child = spawn(port, dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
        let mut server = RedisServer { child, port, _dir: dir, args };
        if server.ready().await {
            return server;
        }
        // Dropping `server` kills the child.
    }
    panic!("redis-server did not start on {PORT_ATTEMPTS} free ports; run it by hand to see why");
}

/// The process id of the Redis answering at `url`, if one answers.
async fn answering_pid(url: &str) -> Option<u32> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.ok()?;
    info.lines().find_map(|line| line.strip_prefix("process_id:")).and_then(|pid| pid.trim().parse().ok())
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
            let node = launch(|dir| {
                let config = dir.join("nodes.conf").to_string_lossy().into_owned();
                ["--cluster-enabled", "yes", "--cluster-config-file", &config, "--save", "", "--appendonly", "no"]
                    .map(str::to_owned)
                    .to_vec()
            })
            .await;
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
