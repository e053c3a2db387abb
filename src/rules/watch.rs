//! What makes [`LiveRules`] reload: a change in the rules directory ([`LiveRules::watch`]) or a SIGHUP
//! ([`LiveRules::reload_on_sighup`]). Both run until their cancellation token is cancelled and leave the
//! reload itself, its logging and its metrics to `live.rs`.
//!
//! The watcher watches the directory, not the files: editors save by writing a temporary file and renaming it
//! over the original, which a watch on the original file would lose. It is debounced: a save (or a `git
//! checkout`, or `cp rules/*`) is several events, and the reload should read the directory once they are done.
//! The directory is watched again after each change, as vector's config watcher does, so a directory replaced
//! as a whole (moved away and recreated) is followed too.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::LiveRules;

/// How long the directory must stay quiet after a change before the rules are reloaded.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// Why the rules directory cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch the rules directory {dir}: {source}; reload with SIGHUP instead, or fix the directory")]
    Watch { dir: std::path::PathBuf, source: notify::Error },
    #[error("watching the rules needs a Tokio runtime; call `watch` from within one")]
    NoRuntime,
}

impl LiveRules {
    /// Starts watching the rules directory: any change to a `*.toml` file in it reloads the whole set once the
    /// directory has been quiet for [`DEBOUNCE`]. Runs in a task of `tasks` until `cancel` is cancelled;
    /// returns once the watch is in place, so a change made after it returns is seen.
    pub fn watch(self: &Arc<Self>, tasks: &TaskTracker, cancel: CancellationToken) -> Result<(), WatchError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime)?;
        let dir = self.dir().to_path_buf();
        // `Notify` keeps at most one pending wake-up: a burst of events costs one reload, and nothing queues
        // up without bound while a reload runs.
        let changed = Arc::new(Notify::new());
        let wake = Arc::clone(&changed);
        let watched = dir.clone();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            // Reading is not changing: a reload opens every file, and must not wake the watcher again.
            Ok(event) if !event.kind.is_access() && touches_rules(&watched, &event.paths) => wake.notify_one(),
            Ok(_) => {}
            Err(error) => {
                // An overflowed or failed watch may have lost events: reloading reads the truth.
                tracing::warn!(%error, "the rules watcher reported an error; reloading the rules to be safe");
                wake.notify_one();
            }
        })
        .map_err(|source| WatchError::Watch { dir: dir.clone(), source })?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch { dir: dir.clone(), source })?;
        tracing::info!(dir = %dir.display(), debounce_ms = DEBOUNCE.as_millis(), "watching the rules for changes");
        let live = Arc::clone(self);
        tasks.spawn_on(async move {
            while settled(&changed, &cancel).await {
                // Watch again before reading: a directory replaced whole is followed, and a change made while
                // reloading still wakes us.
                let _ = watcher.unwatch(&dir);
                if let Err(error) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), %error, "cannot watch the rules directory again; SIGHUP still reloads");
                }
                reload_in_background(&live).await;
            }
            tracing::debug!(dir = %dir.display(), "stopped watching the rules");
        }, &runtime);
        Ok(())
    }

    /// Reloads the rules on each SIGHUP until `cancel` is cancelled.
    #[cfg(unix)]
    pub async fn reload_on_sighup(self: Arc<Self>, cancel: CancellationToken) {
        crate::signals::on_hangup("rules", cancel, || reload_in_background(&self)).await;
    }
}

/// Reloads on a blocking thread (it reads files and compiles), waiting for it to finish. The outcome is
/// already logged and counted by `reload`.
async fn reload_in_background(live: &Arc<LiveRules>) {
    let live = Arc::clone(live);
    if let Err(error) = tokio::task::spawn_blocking(move || live.reload()).await {
        tracing::error!(%error, "the rules reload did not finish");
    }
}

/// Waits for a change, then until none has come for [`DEBOUNCE`]. False once `cancel` is cancelled.
async fn settled(changed: &Notify, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = cancel.cancelled() => return false,
        () = changed.notified() => {}
    }
    loop {
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = changed.notified() => {}
            () = tokio::time::sleep(DEBOUNCE) => return true,
        }
    }
}

/// Whether an event in the rules directory may change the rule set: a visible `*.toml` file (what
/// `RuleSet::load_dir` reads), the directory itself, a Kubernetes ConfigMap swap (it renames a `..data` link,
/// and the `*.toml` names point through it), or an event that names no path (the watcher lost track).
/// Editor swap and lock files (`.x.toml.swp`, `.#x.toml`) and other files are left alone.
fn touches_rules(dir: &Path, paths: &[std::path::PathBuf]) -> bool {
    paths.is_empty()
        || paths.iter().any(|path| {
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
            path == dir
                || name.starts_with("..")
                || (!name.starts_with('.') && path.extension().is_some_and(|extension| extension == "toml"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changes_that_can_alter_the_rule_set_wake_the_watcher() {
        let dir = Path::new("/srv/rules");
        let wakes = |name: &str| touches_rules(dir, &[dir.join(name)]);
        assert!(wakes("tags.toml"));
        assert!(wakes("..data"), "a ConfigMap update renames ..data");
        assert!(touches_rules(dir, &[dir.to_path_buf()]), "the directory itself was moved or deleted");
        assert!(touches_rules(dir, &[]), "an event without paths means the watcher lost track");
        assert!(!wakes(".tags.toml.swp"));
        assert!(!wakes(".#tags.toml"));
        assert!(!wakes("notes.md"));
        assert!(!wakes("4913"), "vim's write test file");
    }
}
