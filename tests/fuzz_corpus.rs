//! Replays every fuzz target's corpus (`fuzz/corpus/<target>/`): the inputs the fuzzers found interesting,
//! crashes they found once included, run through the same entry points on every `cargo test`, so a parser
//! that panics again fails CI. The fuzzers themselves run by hand (README, "Fuzzing").

use std::path::Path;

#[test]
fn every_fuzz_target_s_corpus_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in followd::fuzzing::TARGETS {
        let dir = root.join(name);
        let inputs: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        assert!(!inputs.is_empty(), "{}: no corpus", dir.display());
        for input in inputs {
            let bytes = std::fs::read(&input).unwrap();
            // A panic names the input, so it can be run again by itself.
            let result = std::panic::catch_unwind(|| target(&bytes));
            assert!(result.is_ok(), "{name} panicked on {}", input.display());
        }
    }
}
