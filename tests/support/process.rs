//! The real `followd` binary as a child process, for tests that must kill it (crash safety) or signal it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct Followd {
    pub child: Child,
    pub addr: String,
}

impl Followd {
    /// Starts `followd serve` with `config` (a TOML file) and the given extra arguments; waits for `/healthz`.
    pub async fn start(config: &Path, port: u16, args: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_followd"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .args(args)
            .env("FOLLOWD_LISTEN", format!("127.0.0.1:{port}"))
            .env_remove("FOLLOWD_REDIS_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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
