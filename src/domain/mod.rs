//! The vocabulary every stage shares, below all of them: time, the rate limit's arithmetic, what can be asked
//! of a contact's followers, and what became of it. Nothing here does I/O or imports another part of the
//! crate except the typed ids of [`crate::event`].
//!
//! - [`clock`]: [`clock::Millis`], always passed in; only drivers read the clock.
//! - [`rate`]: the per-location limit (GCRA without burst, daily count), pure.
//! - [`followers`]: [`followers::Action`] (what a rule asks), [`followers::FollowerOp`] (what is stored).
//! - [`pick`] and [`rotation`]: a round robin's arithmetic and the rule's round robin that uses it;
//!   [`availability`]: who is away when; [`cover`]: who follows for whom while they are away.
//! - [`outcome`]: [`outcome::Outcome`], the one delivery result.

pub mod availability;
pub mod clock;
pub mod cover;
pub mod followers;
pub mod outcome;
pub mod pick;
pub mod rate;
pub mod rotation;
