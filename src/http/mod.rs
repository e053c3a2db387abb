//! The actix-web side: [`Application`] (bind, serve, shut down), the webhook route, health and metrics.
//! `error.rs` is the only place that chooses status codes.

mod answers;
mod app;
mod error;
mod health;
mod reconcile;
mod routes;
mod status;
mod webhook;

pub use app::{Application, Role, StartupError, store_options};
pub use error::ApiError;
