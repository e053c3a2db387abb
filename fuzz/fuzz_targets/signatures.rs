//! Fuzz target `signatures`: see `followd::fuzzing::signatures`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| followd::fuzzing::signatures(data));
