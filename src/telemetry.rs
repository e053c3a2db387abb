//! Logs (tracing, human-readable or JSON) and the Prometheus metrics registry.
//!
//! The `metrics` facade has one recorder per process, so every [`crate::Application`] in a process (tests
//! start several) renders the same registry; nothing else is shared between them.
//!
//! [`describe`] lists every metric followd emits with its help text, and starts the counters of rare events
//! at 0. The code that counts an event still names its metric where the event happens; the list here is what
//! `/metrics` promises before any traffic (the Grafana dashboard in `deploy/` queries these names).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global log subscriber. `RUST_LOG` (e.g. `followd=debug`) overrides the default `info`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // `try_init`: a second call (tests) keeps the first subscriber instead of panicking.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Upstream latency buckets, in seconds: the CRM answers in tens to hundreds of milliseconds.
const LATENCY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Commit buckets, in seconds: a batch commits in about a millisecond, a durable one in tens.
const COMMIT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0];

/// The process's metrics registry, installed on first use.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("followd_embedded_commit_seconds".to_owned()), COMMIT_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS))
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    handle
                }
                // Another recorder is installed (an embedding program): render an empty registry of our own.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// What kind of metric a name is, as `/metrics` types it.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric followd emits, with its help text: the `# HELP` lines of `/metrics`.
const METRICS: &[(&str, Kind, &str)] = &[
    (
        "followd_webhooks_received_total",
        Kind::Counter,
        "Webhook requests, by source and result (HTTP status or error code).",
    ),
    (
        "followd_webhooks_ignored_total",
        Kind::Counter,
        "Webhooks acknowledged without effect: a payload type followd does not use.",
    ),
    ("followd_events_total", Kind::Counter, "Events parsed from accepted webhooks, by kind."),
    (
        "followd_events_stale_total",
        Kind::Counter,
        "Whole-state payloads older than the state applied for their contact: acknowledged, nothing done.",
    ),
    ("followd_rule_matches_total", Kind::Counter, "Rules that fired, by rule."),
    (
        "followd_rule_unresolved_names_total",
        Kind::Counter,
        "Rules that could not fire: a pipeline or stage name unknown in the location.",
    ),
    ("followd_operations_enqueued_total", Kind::Counter, "Follower operations queued."),
    ("followd_operations_delivered_total", Kind::Counter, "Follower operations delivered to the CRM."),
    (
        "followd_deliveries_total",
        Kind::Counter,
        "Delivery attempts by outcome: delivered, dry_run, retrying, paused, dead_lettered.",
    ),
    (
        "followd_outcomes_dropped_total",
        Kind::Counter,
        "Delivery outcomes not shared with other processes' status pages (buffer full or store down).",
    ),
    ("followd_delivery_retries_total", Kind::Counter, "Failed deliveries tried again, in place or requeued."),
    ("followd_dead_letters_total", Kind::Counter, "Deliveries set aside after a permanent failure."),
    ("followd_timed_removals_total", Kind::Counter, "Removals of timed followers (a rule's `for`) queued when due."),
    (
        "followd_operations_skipped_total",
        Kind::Counter,
        "Operations skipped at delivery: skip_if_following, or an add of a deleted user.",
    ),
    ("followd_users_deleted_total", Kind::Counter, "Users the CRM said were deleted (UserDelete), recorded once each."),
    (
        "followd_location_pauses_total",
        Kind::Counter,
        "Locations paused after the CRM refused calls (429, a rejected token).",
    ),
    (
        "followd_rate_limit_waits_total",
        Kind::Counter,
        "Deliveries held back by a location's rate budget, waiting in place or rescheduled.",
    ),
    ("followd_upstream_requests_total", Kind::Counter, "Calls to the CRM, by method and status."),
    ("followd_upstream_request_duration_seconds", Kind::Histogram, "Latency of calls to the CRM, by method."),
    ("followd_upstream_dry_run_calls_total", Kind::Counter, "Calls the dry run logged instead of sending, by method."),
    ("followd_upstream_token_reloads_total", Kind::Counter, "Upstream token reloads, by result."),
    ("followd_oauth_refreshes_total", Kind::Counter, "OAuth access token refreshes, by result."),
    ("followd_rules_reloads_total", Kind::Counter, "Rule reloads, by result."),
    ("followd_reconcile_contacts_read_total", Kind::Counter, "Contacts a reconcile read through the CRM's search."),
    ("followd_reconcile_changes_total", Kind::Counter, "Follower changes a reconcile queued, by kind (add, remove)."),
    ("followd_rules_reload_failures_total", Kind::Counter, "Rule reloads rejected; the previous rules stayed live."),
    (
        "followd_embedded_commit_batch",
        Kind::Histogram,
        "Writes committed together in one transaction (one fsync) by the embedded store.",
    ),
    (
        "followd_embedded_commit_seconds",
        Kind::Histogram,
        "Time the embedded store took to commit a batch and answer it, by kind (journal, durable).",
    ),
    ("followd_spool_events", Kind::Gauge, "Webhooks waiting in this receiver's spool for the queue to answer."),
    ("followd_spool_spooled_total", Kind::Counter, "Webhooks written to the spool because the queue was unavailable."),
    ("followd_spool_forwarded_total", Kind::Counter, "Spooled webhooks forwarded to the queue."),
    ("followd_spool_dropped_total", Kind::Counter, "Spooled webhooks that could no longer be admitted (logged)."),
    ("followd_rules_loaded", Kind::Gauge, "Enabled rules live now."),
    ("followd_rules_last_success_timestamp_seconds", Kind::Gauge, "When the live rules were loaded (Unix time)."),
    ("followd_queue_contacts", Kind::Gauge, "Contacts in the queue, by state (ready, leased); read at each scrape."),
    ("followd_queue_operations_pending", Kind::Gauge, "Operations not yet acknowledged; read at each scrape."),
    ("followd_queue_dead_letters", Kind::Gauge, "Dead letters waiting for replay or purge; read at each scrape."),
];

/// A label, and every value a counter is counted under with it.
type LabelValues = (&'static str, &'static [&'static str]);

/// Counters of events that may not happen for days, with the label values they are counted under. They start
/// at 0: a series first seen at 1 hides its first event from `increase()` and `rate()`, and a dashboard panel
/// over it shows "no data" instead of 0. Counters labelled by open sets (source, rule, kind, status) are left
/// to appear with their first event.
const RARE_COUNTERS: &[(&str, Option<LabelValues>)] = &[
    ("followd_dead_letters_total", None),
    ("followd_location_pauses_total", None),
    ("followd_rules_reload_failures_total", None),
    ("followd_operations_enqueued_total", None),
    ("followd_operations_delivered_total", None),
    ("followd_outcomes_dropped_total", None),
    ("followd_spool_forwarded_total", None),
    ("followd_spool_dropped_total", None),
    ("followd_deliveries_total", Some(("result", crate::domain::outcome::LABELS))),
    ("followd_rules_reloads_total", Some(("result", &["ok", "error"]))),
    ("followd_delivery_retries_total", Some(("where", &["in_place", "requeued"]))),
    ("followd_rate_limit_waits_total", Some(("where", &["in_place", "rescheduled"]))),
    ("followd_upstream_dry_run_calls_total", Some(("method", &["POST", "DELETE", "SEARCH"]))),
    ("followd_upstream_token_reloads_total", Some(("result", &["ok", "error"]))),
    ("followd_oauth_refreshes_total", Some(("result", &["ok", "error"]))),
];

/// Describes [`METRICS`] and starts [`RARE_COUNTERS`] at 0; called once, when the recorder is installed. The
/// exporter prints a description only beside a metric that has a value, so describing alone would not make
/// a metric appear.
fn describe() {
    for &(name, kind, help) in METRICS {
        // Only the name says the unit: the exporter's unit suffixes are off, and the names already end in it.
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
    for &(name, labels) in RARE_COUNTERS {
        match labels {
            None => metrics::counter!(name).absolute(0),
            Some((label, values)) => {
                for &value in values {
                    metrics::counter!(name, label => value).absolute(0);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rare_counters_are_exposed_at_zero_with_their_help_before_any_event() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, describe);
        let exposed = handle.render();
        for &(name, labels) in RARE_COUNTERS {
            assert!(exposed.contains(&format!("# HELP {name} ")), "no help for {name}:\n{exposed}");
            match labels {
                None => assert!(exposed.contains(&format!("\n{name} 0\n")), "{name}:\n{exposed}"),
                Some((label, values)) => {
                    for value in values {
                        let series = format!("\n{name}{{{label}=\"{value}\"}} 0\n");
                        assert!(exposed.contains(&series), "{series}:\n{exposed}");
                    }
                }
            }
        }
        // Described but never counted: the exporter leaves it out, which is why rare counters start at 0.
        assert!(!exposed.contains("followd_events_total"), "{exposed}");
    }

    #[test]
    fn every_rare_counter_is_described() {
        for (name, _) in RARE_COUNTERS {
            assert!(METRICS.iter().any(|(described, kind, _)| described == name && matches!(kind, Kind::Counter)));
        }
    }
}
