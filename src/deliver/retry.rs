//! What to do after a failed delivery, and when to try again: exponential backoff with jitter, capped.
//!
//! Pure: the attempt number, the clock and a jitter value in `[0, 1)` come in as arguments, so every outcome
//! is tested without clocks or dice. The table in the README ("upstream answer → what followd does") is this
//! module's [`decide`].

use std::time::Duration;

use crate::domain::clock::{Millis, millis};
use crate::queue::Failure;
use crate::upstream::UpstreamError;

/// How a process retries and pauses; from the `[delivery]` configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub backoff: Backoff,
    /// A transient failure is retried until the oldest operation has waited this long, then dead-lettered.
    pub give_up_after: Duration,
    /// How long a location pauses after its token is refused (401/403), before followd tries it again.
    pub auth_pause: Duration,
    /// How long a location pauses after a 429 that says nothing of when to come back.
    pub throttle_pause: Duration,
    /// How often a paused location's contacts are looked at again (a pause may be lifted early).
    pub pause_recheck: Duration,
}

impl From<&crate::config::DeliveryConfig> for Policy {
    fn from(config: &crate::config::DeliveryConfig) -> Self {
        Self {
            backoff: Backoff { base: config.retry_base, cap: config.retry_max_delay },
            give_up_after: config.give_up_after,
            auth_pause: config.auth_pause,
            throttle_pause: config.throttle_pause,
            pause_recheck: config.pause_recheck,
        }
    }
}

/// What becomes of a lease whose delivery failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Keep the operations and try again at this time.
    Retry { at: Millis },
    /// Pause the whole location until this time (every process), keeping the operations.
    Pause { until: Millis, reason: String },
    /// The CRM refused the operations for good: set them aside with the reason.
    DeadLetter(Failure),
}

fn after(now: Millis, wait: Duration) -> Millis {
    now.saturating_add(millis(wait))
}

/// Decides what a failure means. `attempts`: failed leases so far; `oldest`: when the oldest operation of the
/// lease was enqueued.
pub fn decide(
    error: &UpstreamError,
    attempts: u32,
    oldest: Millis,
    now: Millis,
    jitter: f64,
    policy: &Policy,
) -> Decision {
    match error {
        UpstreamError::Status { status: 429, retry_after, .. } => Decision::Pause {
            until: after(now, retry_after.unwrap_or(policy.throttle_pause)),
            reason: "the CRM answered 429 (rate limited)".to_owned(),
        },
        UpstreamError::Status { status: status @ (401 | 403), message, .. } => Decision::Pause {
            until: after(now, policy.auth_pause),
            reason: format!("the CRM refused the token ({status}: {message}); fix upstream.token(s)"),
        },
        UpstreamError::NoToken(location) => Decision::Pause {
            until: after(now, policy.auth_pause),
            reason: format!("no upstream token for location {location}"),
        },
        refused @ UpstreamError::OAuthRefused { .. } if refused.is_auth() => {
            Decision::Pause { until: after(now, policy.auth_pause), reason: format!("OAuth: {refused}") }
        }
        UpstreamError::Status { status, message, .. } if *status < 500 => Decision::DeadLetter(Failure {
            status: Some(*status),
            reason: format!("the CRM refused the change: {message}"),
        }),
        transient => {
            let waited = Duration::from_millis(now.saturating_sub(oldest));
            if waited >= policy.give_up_after {
                Decision::DeadLetter(Failure {
                    status: transient.status(),
                    reason: format!("gave up after {}s of retries; last error: {transient}", waited.as_secs()),
                })
            } else {
                Decision::Retry { at: after(now, policy.backoff.delay(attempts, jitter)) }
            }
        }
    }
}

/// The retry schedule of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// How long to wait after `attempt` failures (0 = after the first). "Equal jitter": half the exponential
    /// delay is fixed and half is random, so retries spread out but never come back at once.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponential = self.base.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
        let capped = exponential.min(self.cap);
        let jitter = jitter.clamp(0.0, 1.0);
        capped.mul_f64(0.5 + jitter / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        backoff: Backoff { base: Duration::from_secs(5), cap: Duration::from_secs(600) },
        give_up_after: Duration::from_secs(86_400),
        auth_pause: Duration::from_secs(900),
        throttle_pause: Duration::from_secs(10),
        pause_recheck: Duration::from_secs(30),
    };

    fn status(status: u16, retry_after: Option<Duration>) -> UpstreamError {
        UpstreamError::Status { status, message: "m".into(), retry_after }
    }

    #[test]
    fn each_upstream_answer_ends_where_the_readme_says() {
        let now = 1_000_000;
        let d = |e: &UpstreamError| decide(e, 0, now, now, 1.0, &POLICY);
        assert_eq!(d(&status(503, None)), Decision::Retry { at: now + 5_000 });
        assert!(
            matches!(d(&status(429, Some(Duration::from_secs(7)))), Decision::Pause { until, .. } if until == now + 7_000)
        );
        assert!(matches!(d(&status(429, None)), Decision::Pause { until, .. } if until == now + 10_000));
        assert!(matches!(d(&status(401, None)), Decision::Pause { until, .. } if until == now + 900_000));
        assert!(matches!(d(&status(403, None)), Decision::Pause { .. }));
        for permanent in [400, 404, 422] {
            assert!(
                matches!(d(&status(permanent, None)), Decision::DeadLetter(Failure { status: Some(s), .. }) if s == permanent)
            );
        }
    }

    #[test]
    fn a_token_store_failure_is_retried_and_pauses_nothing() {
        let now = 1_000_000;
        let store_down = UpstreamError::TokenStore(crate::upstream::TokenStoreError(Box::new(std::io::Error::other(
            "connection refused",
        ))));
        assert!(!store_down.is_auth() && store_down.is_transient());
        assert_eq!(decide(&store_down, 0, now, now, 1.0, &POLICY), Decision::Retry { at: now + 5_000 });
        // The token endpoint refusing the refresh token is what pauses; its 5xx is retried.
        assert!(matches!(
            decide(&UpstreamError::OAuthRefused { status: 400 }, 0, now, now, 1.0, &POLICY),
            Decision::Pause { .. }
        ));
        assert!(matches!(
            decide(&UpstreamError::OAuthRefused { status: 502 }, 0, now, now, 1.0, &POLICY),
            Decision::Retry { .. }
        ));
    }

    #[test]
    fn a_transient_failure_is_dead_lettered_once_the_retry_window_is_spent() {
        let oldest = 0;
        let now = 86_400_000;
        assert!(matches!(decide(&status(502, None), 40, oldest, now, 0.5, &POLICY), Decision::DeadLetter(_)));
        assert!(matches!(decide(&status(502, None), 40, oldest, now - 1, 0.5, &POLICY), Decision::Retry { .. }));
    }

    #[test]
    fn the_delay_doubles_and_stops_at_the_cap() {
        let backoff = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(60) };
        assert_eq!(backoff.delay(0, 1.0), Duration::from_secs(1));
        assert_eq!(backoff.delay(3, 1.0), Duration::from_secs(8));
        assert_eq!(backoff.delay(30, 1.0), Duration::from_secs(60));
        assert_eq!(backoff.delay(u32::MAX, 1.0), Duration::from_secs(60));
        assert_eq!(backoff.delay(3, 0.0), Duration::from_secs(4));
    }
}
