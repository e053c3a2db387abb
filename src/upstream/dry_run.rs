//! The dry run: with no upstream token configured, each call followd would make is logged and counted, and
//! none is sent. It lets a team try its rules against real webhooks before giving followd a token.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::{ContactKey, UserId};

/// Counts the calls it was asked to make, for tests and the status page.
#[derive(Debug, Default)]
pub struct DryRun {
    calls: AtomicU64,
}

impl DryRun {
    pub(super) fn record(&self, method: &'static str, contact: &ContactKey, users: &[UserId]) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("followd_upstream_dry_run_calls_total", "method" => method).increment(1);
        let followers: Vec<&str> = users.iter().map(UserId::as_str).collect();
        tracing::info!(
            method,
            location_id = %contact.location_id,
            contact_id = %contact.contact_id,
            ?followers,
            "dry run: would call {}",
            match method {
                "SEARCH" => format!("POST /contacts/search for {}", contact.contact_id),
                _ => match contact.contact_id.as_opportunity() {
                    Some(opportunity) => format!("{method} /opportunities/{opportunity}/followers"),
                    None => format!("{method} /contacts/{}/followers", contact.contact_id),
                },
            }
        );
    }

    /// Calls recorded so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}
