//! Fuzz target `config`: see `followd::fuzzing::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| followd::fuzzing::config(data));
