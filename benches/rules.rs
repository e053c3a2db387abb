//! Rule matching cost against the size of the rule set, and the cost of compiling (and reloading) a large one.
//!
//! `cargo bench --bench rules` measures, with criterion:
//! - `evaluate/{10,1000,100000}`: one `tag_added vip` event against a set of that many rules, all but three on
//!   distinct tags (so they share the event's kind but not its key) and three that fire on `vip`;
//! - `compile/100000`: compiling those 100,000 rules from text;
//! - `reload/100000`: `LiveRules::reload` of a directory holding them (read, compile, swap).
//!
//! Then it times evaluate against 10 and 100,000 rules itself, interleaved in one run (machines here are
//! shared and noisy; only ratios compare across runs), and prints the ratio. The design promises that
//! matching cost does not grow with the number of rules: the target is a ratio within 2.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use followd::event::{ContactId, Event, EventId, EventKind, LocationId};
use followd::rules::{LiveRules, RuleSet};

const SIZES: [usize; 3] = [10, 1_000, 100_000];
/// Rules that fire for the benchmark's event, included in each size.
const MATCHING: usize = 3;
const TARGET_RATIO: f64 = 2.0;

const USERS: &str = "[users]\nalice = \"usr_alice\"\nbob = \"usr_bob\"\nteam = [\"alice\", \"bob\"]\n";

/// `size` rules: `size - MATCHING` on tags `tag-N`, then `MATCHING` on `vip`, spread through the file.
fn rules_text(size: usize) -> String {
    let mut text = String::with_capacity(size * 120);
    let every = (size / MATCHING).max(1);
    let mut matching = 0;
    for n in 0..size {
        let fires = matching < MATCHING && (n % every == every - 1 || size - n <= MATCHING - matching);
        let tag = if fires { "vip".to_owned() } else { format!("tag-{n}") };
        matching += usize::from(fires);
        let then = if n % 2 == 0 { r#"add = ["team"]"# } else { r#"round_robin = "team""# };
        let _ = write!(
            text,
            "[[rule]]\nname = \"rule-{n}\"\nwhen = {{ event = \"tag_added\", tag = \"{tag}\" }}\nthen = {{ {then} }}\n"
        );
    }
    text
}

fn files(size: usize) -> Vec<(PathBuf, String)> {
    vec![(PathBuf::from("bench/users.toml"), USERS.to_owned()), (PathBuf::from("bench/rules.toml"), rules_text(size))]
}

fn compile(size: usize) -> RuleSet {
    let set = RuleSet::compile(&files(size)).unwrap_or_else(|error| panic!("the bench rules are invalid:\n{error}"));
    assert_eq!(set.summary().rules, size);
    assert_eq!(set.evaluate(&event()).len(), MATCHING, "the bench event fires {MATCHING} rules");
    set
}

fn event() -> Event {
    Event {
        id: EventId::parse("evt-bench").expect("a valid id"),
        location_id: LocationId::parse("loc-bench").expect("a valid id"),
        contact_id: ContactId::parse("c-bench").expect("a valid id"),
        occurred_at: None,
        kind: EventKind::TagAdded { tag: "vip".to_owned() },
    }
}

fn bench_evaluate(c: &mut Criterion, sets: &[(usize, RuleSet)]) {
    let event = event();
    let mut group = c.benchmark_group("evaluate");
    for (size, set) in sets {
        group.bench_with_input(BenchmarkId::from_parameter(size), set, |b, set| {
            b.iter(|| set.evaluate(black_box(&event)))
        });
    }
    group.finish();
}

fn bench_compile(c: &mut Criterion) {
    let size = SIZES[SIZES.len() - 1];
    let files = files(size);
    let mut group = c.benchmark_group("compile");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_with_input(BenchmarkId::from_parameter(size), &files, |b, files| {
        b.iter(|| RuleSet::compile(black_box(files)).expect("valid rules"))
    });
    group.finish();

    let dir = tempfile::tempdir().expect("a temporary directory");
    for (path, text) in &files {
        let name = path.file_name().expect("a file name");
        std::fs::write(dir.path().join(name), text).expect("write the bench rules");
    }
    let live = LiveRules::load(dir.path()).expect("valid rules");
    let mut group = c.benchmark_group("reload");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.bench_function(BenchmarkId::from_parameter(size), |b| b.iter(|| live.reload().expect("valid rules")));
    group.finish();
}

/// Median time of one evaluate against each set, measured in interleaved batches so both see the same noise.
fn evaluate_medians(small: &RuleSet, large: &RuleSet) -> (f64, f64) {
    const BATCHES: usize = 41;
    const CALLS: u32 = 20_000;
    let event = event();
    let time = |set: &RuleSet| {
        let started = Instant::now();
        for _ in 0..CALLS {
            black_box(set.evaluate(black_box(&event)));
        }
        started.elapsed().as_secs_f64() * 1e9 / f64::from(CALLS)
    };
    let (mut small_ns, mut large_ns) = (Vec::with_capacity(BATCHES), Vec::with_capacity(BATCHES));
    for _ in 0..BATCHES {
        small_ns.push(time(small));
        large_ns.push(time(large));
    }
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    (median(small_ns), median(large_ns))
}

fn main() {
    let sets: Vec<(usize, RuleSet)> = SIZES.iter().map(|&size| (size, compile(size))).collect();
    let mut criterion = Criterion::default().configure_from_args();
    bench_evaluate(&mut criterion, &sets);
    bench_compile(&mut criterion);
    criterion.final_summary();

    let (small, large) = (&sets[0].1, &sets[sets.len() - 1].1);
    let (small_ns, large_ns) = evaluate_medians(small, large);
    let ratio = large_ns / small_ns;
    let verdict = if ratio <= TARGET_RATIO { "within" } else { "OVER" };
    println!(
        "evaluate: {small_ns:.0} ns with {} rules, {large_ns:.0} ns with {} rules: ratio {ratio:.2} ({verdict} the \
         target of {TARGET_RATIO})",
        SIZES[0],
        SIZES[SIZES.len() - 1]
    );
}
