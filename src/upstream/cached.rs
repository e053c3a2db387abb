//! A per-location cache in front of a CRM read that changes rarely (pipelines, users): each location's answer
//! is trusted for [`TTL`], and after a failed read the location is not asked again for a while, so a CRM
//! outage costs one failed call per location per [`RETRY_AFTER_FAILURE`], not one per event.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::UpstreamError;
use crate::event::LocationId;

/// How long a location's answer is trusted before it is read again.
pub const TTL: Duration = Duration::from_secs(600);
/// After a failed read, how long before trying again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

enum Cached<T> {
    Ready(Instant, Arc<T>),
    Failed(Instant),
}

/// Each location's last answer.
pub struct PerLocation<T> {
    cache: Mutex<HashMap<LocationId, Cached<T>>>,
}

impl<T> Default for PerLocation<T> {
    fn default() -> Self {
        Self { cache: Mutex::new(HashMap::new()) }
    }
}

impl<T> PerLocation<T> {
    /// The location's value: cached, or `read` now when missing or older than [`TTL`] (`on_fetch` sees each
    /// fresh one once). `None` when `read` has nothing (a dry run) or failed lately (logged, with `what`).
    pub async fn get<F>(&self, location: &LocationId, what: &str, read: F, on_fetch: impl FnOnce(&T)) -> Option<Arc<T>>
    where
        F: Future<Output = Result<Option<T>, UpstreamError>>,
    {
        {
            let cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match cache.get(location) {
                Some(Cached::Ready(at, value)) if at.elapsed() < TTL => return Some(Arc::clone(value)),
                Some(Cached::Failed(at)) if at.elapsed() < RETRY_AFTER_FAILURE => return None,
                _ => {}
            }
        }
        let fetched = read.await;
        let mut cache = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match fetched {
            Ok(Some(value)) => {
                on_fetch(&value);
                let value = Arc::new(value);
                cache.insert(location.clone(), Cached::Ready(Instant::now(), Arc::clone(&value)));
                Some(value)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(%location, error = %e, "cannot read the location's {what}");
                cache.insert(location.clone(), Cached::Failed(Instant::now()));
                None
            }
        }
    }
}
