//! Fuzz target `rules`: see `followd::fuzzing::rules`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| followd::fuzzing::rules(data));
