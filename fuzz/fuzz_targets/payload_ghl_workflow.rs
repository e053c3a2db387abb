//! Fuzz target `payload_ghl_workflow`: see `followd::fuzzing::payload_ghl_workflow`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| followd::fuzzing::payload_ghl_workflow(data));
