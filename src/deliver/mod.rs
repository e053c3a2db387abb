//! Delivery: workers lease contacts from the queue, fold their operations and call the CRM.
//!
//! - [`fold`]: pending operations → the net change (pure).
//! - [`retry`]: the backoff schedule (pure).
//! - [`worker`]: the worker pool, the reaper, and one delivery's I/O.

pub mod credentials;
pub mod fold;
pub mod limit;
pub mod retry;
pub mod worker;

pub use worker::{Deliverer, Workers};
