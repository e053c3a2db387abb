//! Fuzz target `crm_answers`: see `followd::fuzzing::crm_answers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| followd::fuzzing::crm_answers(data));
