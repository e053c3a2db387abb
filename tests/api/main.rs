//! Integration tests through HTTP against the real application, a fake CRM and real processes. One binary
//! for all of them, to link once.

#[path = "../support/mod.rs"]
mod support;

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
mod status_page;
mod webhook;
