//! Fuzz target `payload_ghl`: see `followd::fuzzing::payload_ghl`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| followd::fuzzing::payload_ghl(data));
