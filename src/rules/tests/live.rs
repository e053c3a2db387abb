//! The live rule set: reloads that fail keep the previous rules, reloads that compile replace them whole, and
//! the watcher and SIGHUP trigger them. Waits poll a condition with a deadline; nothing sleeps to synchronize.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{USERS, fired, tag_added};
use crate::rules::LiveRules;

/// How long a test waits for the watcher or a signal before it fails.
const DEADLINE: Duration = Duration::from_secs(10);

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// Saves as editors do: a temporary file renamed over the original.
fn save_by_rename(dir: &Path, name: &str, text: &str) {
    let temporary = dir.join(format!(".{name}.tmp"));
    std::fs::write(&temporary, text).unwrap();
    std::fs::rename(&temporary, dir.join(name)).unwrap();
}

/// A rule named `name` on tag `x`, adding `who`.
fn rule(name: &str, who: &str) -> String {
    format!(
        "[[rule]]\nname = \"{name}\"\nwhen = {{ event = \"tag_added\", tag = \"x\" }}\nthen = {{ add = [\"{who}\"] }}\n"
    )
}

/// A rules directory with the shared users and one rule file.
fn rules_dir(rules: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "users.toml", USERS);
    write(dir.path(), "rules.toml", rules);
    dir
}

fn live_fires(live: &LiveRules) -> Vec<String> {
    fired(&live.current(), &tag_added("x"))
}

/// Polls `condition` until it holds or [`DEADLINE`] passes.
async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    condition()
}

#[test]
fn an_invalid_rule_edit_keeps_the_previous_rules_live_and_the_fix_then_takes_effect() {
    let dir = rules_dir(&rule("before", "alice"));
    let live = LiveRules::load(dir.path()).unwrap();
    let loaded_at = live.status().last_success_unix;
    assert!(loaded_at > 0 && live.status().last_error.is_none(), "{:?}", live.status());

    write(dir.path(), "rules.toml", &format!("{}{}", rule("after", "alce"), rule("also", "nobdy")));
    let error = live.reload().unwrap_err();
    assert_eq!(error.diagnostics.len(), 2, "{error}");
    assert_eq!(live_fires(&live), ["before"], "the previous rules stay live");
    let status = live.status();
    assert_eq!(status.last_success_unix, loaded_at);
    let reported = status.last_error.unwrap_or_default();
    let file = dir.path().join("rules.toml").display().to_string();
    let lines: Vec<&str> = reported.lines().collect();
    assert_eq!(lines.len(), 2, "one line per diagnostic: {reported}");
    assert!(lines[0].starts_with(&format!("{file}:4:17: unknown alias `alce` in `add`")), "{reported}");
    assert!(lines[1].starts_with(&format!("{file}:8:17: unknown alias `nobdy` in `add`")), "{reported}");

    write(dir.path(), "rules.toml", &rule("after", "alice"));
    let summary = live.reload().unwrap();
    assert_eq!(summary.rules, 1);
    assert_eq!(live_fires(&live), ["after"]);
    assert_eq!(live.status().last_error, None, "a successful reload clears the error");
}

#[test]
fn a_reader_during_many_reloads_always_sees_one_whole_set() {
    // Two variants of three files; every rule of variant A is named a-*, of B b-*.
    let variant = |marker: char| -> Vec<(String, String)> {
        (0..3)
            .map(|file| {
                let rules: String = (0..20).map(|n| rule(&format!("{marker}-{file}-{n}"), "alice")).collect();
                (format!("rules-{file}.toml"), rules)
            })
            .collect()
    };
    let (a, b) = (variant('a'), variant('b'));
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "users.toml", USERS);
    for (name, text) in &a {
        write(dir.path(), name, text);
    }
    let live = LiveRules::load(dir.path()).unwrap();
    let done = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    let seen = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut seen = [0usize; 2];
            while !done.load(Ordering::Acquire) {
                let names = live_fires(&live);
                let marker = names[0].as_bytes()[0];
                assert_eq!(names.len(), 60, "a whole set has 60 rules");
                assert!(names.iter().all(|name| name.as_bytes()[0] == marker), "a mixed set: {names:?}");
                seen[usize::from(marker == b'b')] += 1;
                reads.fetch_add(1, Ordering::AcqRel);
            }
            seen
        });
        for round in 0..100 {
            for (name, text) in if round % 2 == 0 { &b } else { &a } {
                write(dir.path(), name, text);
            }
            live.reload().unwrap();
            // Let the reader finish one whole read that began after this reload, so it sees both variants.
            let after = reads.load(Ordering::Acquire);
            while reads.load(Ordering::Acquire) < after + 2 && !reader.is_finished() {
                std::thread::yield_now();
            }
        }
        done.store(true, Ordering::Release);
        reader.join().unwrap()
    });
    assert!(seen[0] > 0 && seen[1] > 0, "the reader saw both variants: {seen:?}");
}

#[test]
fn each_reload_outcome_is_counted_in_the_metrics() {
    let dir = rules_dir(&rule("r", "alice"));
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        let live = LiveRules::load(dir.path()).unwrap();
        live.reload().unwrap();
        write(dir.path(), "rules.toml", "[[rule]]\nname = \"broken\"\n");
        live.reload().unwrap_err();
        live.reload().unwrap_err();
    });
    let rendered = handle.render();
    for expected in [
        "followd_rules_reloads_total{result=\"ok\"} 1",
        "followd_rules_reloads_total{result=\"error\"} 2",
        "followd_rules_reload_failures_total 2",
        "followd_rules_loaded 1",
        "followd_rules_last_success_timestamp_seconds ",
    ] {
        assert!(rendered.contains(expected), "missing `{expected}` in:\n{rendered}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reloads_after_an_editor_saves_and_keeps_the_rules_on_a_broken_save() {
    let dir = rules_dir(&rule("before", "alice"));
    let live = LiveRules::load(dir.path()).unwrap();
    let cancel = CancellationToken::new();
    live.watch(&tokio_util::task::TaskTracker::new(), cancel.clone()).unwrap();

    save_by_rename(dir.path(), "rules.toml", &rule("after", "bob"));
    assert!(eventually(|| live_fires(&live) == ["after"]).await, "the watcher did not reload: {:?}", live.status());

    save_by_rename(dir.path(), "rules.toml", &rule("broken", "nobody-known"));
    assert!(eventually(|| live.status().last_error.is_some()).await, "the broken save was not seen");
    assert_eq!(live_fires(&live), ["after"], "a broken save keeps the rules live");
    let error = live.status().last_error.unwrap_or_default();
    assert!(error.contains("rules.toml:4:17: unknown alias `nobody-known`"), "{error}");

    write(dir.path(), "more.toml", &rule("more", "carol"));
    save_by_rename(dir.path(), "rules.toml", &rule("after", "bob"));
    assert!(eventually(|| live_fires(&live) == ["more", "after"]).await, "{:?}", live.status());

    // Reloading reads every file; those reads must not count as changes. This waits on purpose: it checks
    // that nothing happens during a quiet spell several debounce periods long.
    let reloads = live.status().reloads;
    tokio::time::sleep(crate::rules::DEBOUNCE * 4).await;
    assert_eq!(live.status().reloads, reloads, "the watcher reloads with no change to the files");
    cancel.cancel();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_reloads_the_rules() {
    use tokio::signal::unix::{SignalKind, signal};
    // Listening here first makes SIGHUP harmless to the test process from now on (its default is to end the
    // process), so the signal can be sent until the reloader, which starts listening in its task, sees it.
    let _harmless = signal(SignalKind::hangup()).unwrap();
    let dir = rules_dir(&rule("before", "alice"));
    let live = LiveRules::load(dir.path()).unwrap();
    let cancel = CancellationToken::new();
    let reloader = tokio::spawn(Arc::clone(&live).reload_on_sighup(cancel.clone()));
    write(dir.path(), "rules.toml", &rule("after", "alice"));
    let sighup = || {
        std::process::Command::new("sh").args(["-c", &format!("kill -HUP {}", std::process::id())]).status().unwrap()
    };
    let until = Instant::now() + DEADLINE;
    while live_fires(&live) != ["after"] && Instant::now() < until {
        assert!(sighup().success());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(live_fires(&live), ["after"]);
    cancel.cancel();
    tokio::time::timeout(DEADLINE, reloader).await.unwrap().unwrap();
}
