//! Delivery: workers lease contacts from the queue, fold their operations and call the CRM.
//!
//! - [`fold`]: pending operations → the net change (pure).
//! - [`calls`]: which upstream calls reach a net change, ownership and the follower cap included (pure).
//! - [`skip`]: which operations a rule's `skip_if_following` gives up (pure).
//! - [`retry`]: the backoff schedule (pure).
//! - [`limit`]: in-process smoothing in front of the shared rate budget.
//! - [`report`]: where each delivery's outcome goes (status page, metrics, other processes).
//! - [`worker`]: the worker pool, the reaper, and one delivery's I/O.
//! - [`credentials`]: taking new upstream tokens on SIGHUP.

pub mod calls;
pub mod credentials;
pub mod emails;
pub mod fold;
pub mod limit;
pub mod report;
pub mod retry;
pub mod skip;
pub mod worker;

pub use worker::{Deliverer, Workers};
