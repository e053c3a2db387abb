//! The real `followd` binary as a child process, for tests that must kill it (crash safety) or signal it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::app::{RULES, SECRET, SIGNATURE_HEADER, sign};
use super::upstream::TOKEN;

/// Writes a configuration file for the real binary in `dir`, with the test rules beside it. The webhook secret
/// is read from a file, as a deployment would. `redis_url`: the Redis queue; `None`: the embedded one.
pub fn write_config(dir: &Path, upstream: &str, redis_url: Option<&str>) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("rules")).expect("rules dir");
    std::fs::write(dir.join("rules/rules.toml"), RULES).expect("rules");
    std::fs::write(dir.join("secret.txt"), format!("{SECRET}\n")).expect("secret file");
    let redis = redis_url.map(|url| format!("redis_url = \"{url}\"")).unwrap_or_default();
    let config = format!(
        r#"
{redis}
data_dir = "{data}"
rules_dir = "{rules}"
shutdown_grace = "3s"
workers = 4
[upstream]
base_url = "{upstream}"
token = "{TOKEN}"
timeout = "2s"
[queue]
lease = "3s"
prefix = "t"
partitions = 4
[[source]]
name = "test"
format = "generic"
verify = {{ scheme = "hmac-sha256", header = "{SIGNATURE_HEADER}", secrets = ["file:secret.txt"] }}
"#,
        data = dir.join("data").display(),
        rules = dir.join("rules").display(),
    );
    let path = dir.join("followd.toml");
    std::fs::write(&path, config).expect("config file");
    path
}

/// POSTs a signed body to the `test` source of a running process.
pub async fn post(addr: &str, body: &[u8]) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{addr}/webhooks/test"))
        .header("content-type", "application/json")
        .header(SIGNATURE_HEADER, sign(SECRET, body))
        .body(body.to_vec())
        .send()
        .await
        .expect("the request reaches followd")
}

pub struct Followd {
    pub child: Child,
    pub addr: String,
}

impl Followd {
    /// Starts `followd serve` with `config` (a TOML file) and the given extra arguments; waits for `/healthz`.
    pub async fn start(config: &Path, port: u16, args: &[&str]) -> Self {
        Self::start_with(config, port, args, &[], None).await
    }

    /// Like [`Followd::start`], with extra environment variables and, when `log` is given, stderr (the log)
    /// written to that file.
    pub async fn start_with(config: &Path, port: u16, args: &[&str], env: &[(&str, &str)], log: Option<&Path>) -> Self {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::null(),
        };
        let child = Command::new(env!("CARGO_BIN_EXE_followd"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("FOLLOWD_LISTEN", format!("127.0.0.1:{port}"))
            .env_remove("FOLLOWD_REDIS_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("start the followd binary");
        let addr = format!("http://127.0.0.1:{port}");
        let healthz = format!("{addr}/healthz");
        let up = super::eventually(Duration::from_secs(20), || {
            let healthz = healthz.clone();
            async move { reqwest::get(&healthz).await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        assert!(up, "followd did not answer /healthz within 20s");
        Self { child, addr }
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub async fn kill(mut self) {
        self.child.kill().await.expect("kill followd");
    }

    /// SIGTERM, then waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("followd exits after SIGTERM")
            .expect("exit status")
    }
}
