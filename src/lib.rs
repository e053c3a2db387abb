//! followd keeps CRM contact followers right from declarative rules.
//!
//! # Layout: the pipeline, one module per arrow
//! ```text
//! CRM ─webhook─▶ http ─▶ verify ─▶ event ─▶ rules ─▶ queue ─▶ deliver ─▶ upstream ─▶ CRM API
//! ```
//! - [`http`]: the actix app ([`Application`]), the webhook route, health, readiness, metrics.
//! - [`intake`]: the request path without HTTP: verify, parse, match, enqueue.
//! - [`verify`]: signature schemes over the raw body.
//! - [`event`]: the normalized [`event::Event`] and one adapter per payload format.
//! - [`rules`]: rule files, validation with file:line:column, the compiled index.
//! - [`queue`]: the durable per-contact queue ([`queue::Queue`]): embedded (redb) or Redis.
//! - [`spool`]: a receiver's local spool, where webhooks wait while Redis is unreachable.
//! - [`deliver`]: workers, folding, retries.
//! - [`upstream`]: the CRM API client, live or dry run.
//! - [`reconcile`]: bring existing contacts in line with the rules, or plan it.
//! - [`covering`]: cover for absences (`[[cover]]`) applied as time passes.
//! - [`domain`]: the vocabulary below every stage: time, rate-limit arithmetic, follower operations, outcomes.
//! - [`decisions`]: the recent decisions the status page shows.
//! - [`commands`]: the command line's subcommands other than `serve`; [`simulate`]: how `rules test` runs a case.
//! - [`config`], [`telemetry`], [`signals`]: configuration layers; logs and metrics; stop and reload signals.
//!
//! Imports point one way: the stages (`verify`, `event`, `rules`, `queue`, `upstream`) import only `domain`,
//! `event` and each other's types, never the drivers (`http`, `intake`, `deliver`, `reconcile`, `commands`) and never load
//! configuration. `../shared/tools/import-graph src` prints the graph.
#![forbid(unsafe_code)]

pub mod commands;
pub mod config;
pub mod covering;
pub mod decisions;
pub mod deliver;
pub mod domain;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod intake;
pub mod queue;
pub mod reconcile;
pub mod roster;
pub mod rules;
pub mod signals;
pub mod simulate;
pub mod spool;
pub mod telemetry;
pub mod upstream;
pub mod verify;

pub use http::{Application, Role};
