//! Integration tests through HTTP against the real application, a fake CRM and real processes. One binary
//! for all of them, to link once.

#[path = "../support/mod.rs"]
mod support;

/// Runs each scenario (an `async fn(Store)` of the module) twice: on the embedded store and on a private Redis,
/// since users run either.
macro_rules! on_both_stores {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test] async fn $scenario() { super::$scenario(super::Store::Embedded).await })*
        }
        mod redis {
            $(#[tokio::test] async fn $scenario() { super::$scenario(super::Store::Redis).await })*
        }
    };
}

mod assignments;
mod delivery;
mod durability;
mod ghl;
mod health;
mod limits;
mod oauth;
mod operations;
mod ownership;
mod reconcile;
mod redis;
mod rules;
mod scale_out;
mod spool;
mod status_page;
mod users;
mod webhook;
