//! The rule set in service: [`LiveRules`] holds the current [`RuleSet`] behind `arc-swap` and replaces it whole
//! when a reload of the directory compiles.
//!
//! Invariants:
//! - a reader ([`LiveRules::current`]) never waits and always gets one whole set, never a mix of two;
//! - a reload that fails changes nothing that matches: the previous set stays live, and the failure is kept
//!   (every diagnostic, `file:line:column`) in [`LiveRules::status`] for `/readyz`;
//! - each reload outcome is logged and counted by one small function below, so logs and metrics cannot drift.
//!
//! What triggers a reload (file watcher, SIGHUP) lives in `watch.rs`; this file is the part that is the same
//! whatever the trigger.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

use super::{RuleSet, RulesError, Summary};

/// The live rule set of one process, and how its last reload went.
pub struct LiveRules {
    dir: PathBuf,
    current: ArcSwap<RuleSet>,
    /// Replaced whole after each reload, so `/readyz` reads it without a lock, like the set itself.
    status: ArcSwap<ReloadStatus>,
    /// Held for the whole of a reload, so two triggers at once (a file change and a SIGHUP) cannot finish in
    /// the wrong order and leave the older files live. Readers never take it.
    reloading: Mutex<()>,
}

/// How the rules were last (re)loaded, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadStatus {
    /// When the set now live was loaded, in seconds since the Unix epoch.
    pub last_success_unix: i64,
    /// Every diagnostic of the last reload, one per line as `file:line:column: message`, when it failed;
    /// `None` once a later reload succeeds.
    pub last_error: Option<String>,
    /// Reloads tried since start, whether they compiled or not.
    pub reloads: u64,
}

impl LiveRules {
    /// Loads `dir` for the first time; a process should not start with rules that do not compile.
    pub fn load(dir: &Path) -> Result<Arc<Self>, RulesError> {
        let set = RuleSet::load_dir(dir)?;
        let now = unix_now();
        loaded(dir, set.summary(), now);
        Ok(Arc::new(Self {
            dir: dir.to_path_buf(),
            current: ArcSwap::from_pointee(set),
            status: ArcSwap::from_pointee(ReloadStatus { last_success_unix: now, last_error: None, reloads: 0 }),
            reloading: Mutex::new(()),
        }))
    }

    /// The set in service now. Lock-free; the set stays valid for as long as the caller holds it, even if a
    /// reload replaces it meanwhile.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// The directory the rules are loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How the last (re)load went.
    pub fn status(&self) -> ReloadStatus {
        ReloadStatus::clone(&self.status.load())
    }

    /// Recompiles the whole directory. On success the new set replaces the live one at once; on failure the
    /// live set is kept and the error recorded. Blocking (reads files, compiles): call it from a blocking
    /// thread in async code.
    pub fn reload(&self) -> Result<Summary, Arc<RulesError>> {
        // A panic while reloading poisons nothing worth protecting: the guarded value is `()`.
        let _serialized = self.reloading.lock().unwrap_or_else(PoisonError::into_inner);
        let started = Instant::now();
        let reloads = self.status.load().reloads + 1;
        match RuleSet::load_dir(&self.dir) {
            Ok(set) => {
                let summary = set.summary();
                self.current.store(Arc::new(set));
                let now = unix_now();
                self.status.store(Arc::new(ReloadStatus { last_success_unix: now, last_error: None, reloads }));
                reloaded(&self.dir, summary, now, started.elapsed().as_millis());
                Ok(summary)
            }
            Err(error) => {
                let error = Arc::new(error);
                let last_success_unix = self.status.load().last_success_unix;
                let last_error = Some(error.to_string());
                self.status.store(Arc::new(ReloadStatus { last_success_unix, last_error, reloads }));
                reload_rejected(&self.dir, &error);
                Err(error)
            }
        }
    }
}

impl std::fmt::Debug for LiveRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRules").field("dir", &self.dir).field("current", &self.current.load()).finish()
    }
}

/// Seconds since the Unix epoch; this type is the I/O shell around the pure rule set, so it reads the clock.
fn unix_now() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX)
}

/// The first load, at start: logged, and the gauges set so `/metrics` has them before any reload.
fn loaded(dir: &Path, summary: Summary, now_unix: i64) {
    tracing::info!(dir = %dir.display(), rules = %summary, "rules loaded");
    metrics::gauge!("followd_rules_last_success_timestamp_seconds").set(now_unix as f64);
    metrics::gauge!("followd_rules_loaded").set(summary.enabled as f64);
}

/// A reload compiled and is now live.
fn reloaded(dir: &Path, summary: Summary, now_unix: i64, elapsed_ms: u128) {
    tracing::info!(dir = %dir.display(), rules = %summary, elapsed_ms, "rules reloaded");
    metrics::counter!("followd_rules_reloads_total", "result" => "ok").increment(1);
    metrics::gauge!("followd_rules_last_success_timestamp_seconds").set(now_unix as f64);
    metrics::gauge!("followd_rules_loaded").set(summary.enabled as f64);
}

/// A reload did not compile; the previous rules stay live. One log event carries every diagnostic, so an
/// alert on it sees the whole story.
fn reload_rejected(dir: &Path, error: &RulesError) {
    tracing::error!(
        dir = %dir.display(),
        errors = error.diagnostics.len(),
        diagnostics = %error,
        "rules reload rejected; the previous rules stay live"
    );
    metrics::counter!("followd_rules_reloads_total", "result" => "error").increment(1);
    metrics::counter!("followd_rules_reload_failures_total").increment(1);
}
