//! Fuzz target `payload_generic`: see `followd::fuzzing::payload_generic`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| followd::fuzzing::payload_generic(data));
