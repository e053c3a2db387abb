//! The queue's Lua scripts, one per state change (the scripts themselves are `src/queue/lua/*.lua`).

use redis::Script;

/// The queue's Lua scripts, hashed once.
pub(super) struct Scripts {
    pub(super) enqueue: Script,
    pub(super) lease: Script,
    pub(super) ack: Script,
    pub(super) retry: Script,
    pub(super) reap: Script,
    pub(super) diff_tags: Script,
    pub(super) swap_stage: Script,
    pub(super) replay: Script,
    pub(super) throttle: Script,
    pub(super) timers: Script,
    pub(super) refund: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            enqueue: Script::new(include_str!("../lua/enqueue.lua")),
            lease: Script::new(include_str!("../lua/lease.lua")),
            ack: Script::new(include_str!("../lua/ack.lua")),
            retry: Script::new(include_str!("../lua/retry.lua")),
            reap: Script::new(include_str!("../lua/reap.lua")),
            diff_tags: Script::new(include_str!("../lua/diff_tags.lua")),
            swap_stage: Script::new(include_str!("../lua/swap_stage.lua")),
            replay: Script::new(include_str!("../lua/replay.lua")),
            throttle: Script::new(include_str!("../lua/throttle.lua")),
            timers: Script::new(include_str!("../lua/timers.lua")),
            refund: Script::new(include_str!("../lua/refund.lua")),
        }
    }

    pub(super) fn all(&self) -> [&Script; 11] {
        [
            &self.enqueue,
            &self.lease,
            &self.ack,
            &self.retry,
            &self.reap,
            &self.diff_tags,
            &self.swap_stage,
            &self.replay,
            &self.throttle,
            &self.timers,
            &self.refund,
        ]
    }
}

#[cfg(test)]
mod tests {
    /// The lane offset is written in the scripts as a literal: it must be the one the Rust side uses.
    #[test]
    fn every_script_that_places_a_contact_uses_the_background_offset() {
        let offset = crate::queue::BACKGROUND_OFFSET.to_string();
        for (name, script) in [
            ("enqueue", include_str!("../lua/enqueue.lua")),
            ("lease", include_str!("../lua/lease.lua")),
            ("ack", include_str!("../lua/ack.lua")),
            ("retry", include_str!("../lua/retry.lua")),
            ("reap", include_str!("../lua/reap.lua")),
            ("replay", include_str!("../lua/replay.lua")),
            ("timers", include_str!("../lua/timers.lua")),
        ] {
            assert!(script.contains(&offset), "{name}.lua does not use {offset}");
        }
    }
}
