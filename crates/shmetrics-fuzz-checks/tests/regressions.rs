//! The fuzz targets' checks, run by `cargo test` without a fuzzer:
//!
//! - every minimised crasher in `fuzz/regressions/<target>/` is replayed through its
//!   target's check (the bug it found stays fixed);
//! - the target list here matches `fuzz/Cargo.toml` and `fuzz/fuzz_targets/`;
//! - the seeds pass their checks, and the segment seeds are valid segments with series;
//! - a few hundred pseudo-random scenarios run through `writer_model`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use shmetrics_fuzz_checks::{TARGETS, check, seeds};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

#[test]
fn regressions_replay() {
    let root = fuzz_dir().join("regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&root).expect("fuzz/regressions exists") {
        let dir = entry.expect("list fuzz/regressions").path();
        if !dir.is_dir() {
            continue;
        }
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        let check = check(&target)
            .unwrap_or_else(|| panic!("fuzz/regressions/{target} names no fuzz target"));
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            eprintln!("replaying {}", file.display());
            check(&data);
            replayed += 1;
        }
    }
    eprintln!("{replayed} regression inputs replayed");
}

#[test]
fn targets_match_the_fuzz_crate() {
    let ours: BTreeSet<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let bins: BTreeSet<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|n| *n != "shmetrics-fuzz")
        .collect();
    assert_eq!(bins, ours, "[[bin]] entries of fuzz/Cargo.toml");
    let files: BTreeSet<String> = std::fs::read_dir(fuzz_dir().join("fuzz_targets"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = ours.iter().map(|n| format!("{n}.rs")).collect();
    assert_eq!(files, want, "fuzz/fuzz_targets/");
    for name in &ours {
        let source =
            std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs"))).unwrap();
        let call = format!("shmetrics_fuzz_checks::{}", module_fn(name));
        assert!(source.contains(&call), "{name}.rs does not call {call}");
    }
}

/// The check function a target calls, as `module::function`.
fn module_fn(target: &str) -> &'static str {
    match target {
        "layout_header" => "layout::header",
        "layout_records" => "layout::records",
        "segment_file" => "segment::file",
        "segment_records" => "segment::records",
        "accept_negotiation" => "negotiate::accept",
        "writer_model" => "model::scenario",
        "legacy_db" => "legacy::db",
        other => panic!("unknown target {other}"),
    }
}

#[test]
fn seeds_are_valid_and_pass_their_checks() {
    let segments = seeds::segments();
    assert!(segments.len() >= 3, "{} segments", segments.len());
    for bytes in &segments {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join(shmetrics_fuzz_checks::segment::SEGMENT_NAME);
        std::fs::write(&path, bytes).unwrap();
        let dump = shmetrics_reader::inspect::inspect(&path).unwrap();
        assert!(dump.is_valid(), "{dump}");
        assert!(dump.records.len() > 2, "{dump}");
        let rebuilt = shmetrics_fuzz_checks::segment::records_segment(
            &shmetrics_fuzz_checks::segment::records_input(bytes),
        );
        assert_eq!(rebuilt.len(), bytes.len());
        assert_eq!(
            &rebuilt[128..],
            &bytes[128..],
            "segment_records keeps the records"
        );
        let mut reader = shmetrics_reader::Reader::open(dir.path()).unwrap();
        assert!(reader.snapshot().snapshot.series_count() > 0);
    }
    for (target, inputs) in seeds::corpus() {
        let check = check(target).unwrap();
        assert!(!inputs.is_empty(), "{target}");
        for input in inputs {
            check(&input);
        }
    }
}

/// A xorshift generator: the scenarios are the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u8 {
        (self.next() % n) as u8
    }
}

/// A scenario biased towards operations that succeed: mostly valid names and label names
/// (pool indices 0 to 10 and 0, 1, 2, 8), writes to registered families, an occasional
/// check or corruption, and near the end an exit or truncation.
fn scenario(rng: &mut Rng) -> shmetrics_fuzz_checks::model::Scenario {
    use shmetrics_fuzz_checks::model::{Bounds, Cut, Kind, Num, Op, Place, Scenario, Write};
    let mut ops = Vec::new();
    let count = 1 + u32::from(rng.below(250));
    for i in 0..count {
        let names = if rng.below(8) == 0 { 15 } else { 11 };
        // Exits and truncations end the writing: only near the end.
        let end = if i * 10 > count * 9 { 100 } else { 97 };
        let op = match rng.below(end) {
            0..8 => Op::Register {
                kind: match rng.below(4) {
                    0 => Kind::Counter,
                    1 => Kind::Gauge(rng.below(10)),
                    2 => Kind::Histogram,
                    _ => Kind::Summary,
                },
                name: rng.below(names),
                help: rng.below(5),
                labels: (0..rng.below(3))
                    .map(|_| [0, 1, 2, 8][rng.below(4) as usize])
                    .collect(),
                bounds: match rng.below(3) {
                    0 => Bounds::Default,
                    1 => Bounds::Listed(rng.below(10)),
                    _ => Bounds::Custom(vec![rng.below(10) as f64, 20.0]),
                },
            },
            8..86 | 93..97 => Op::Write {
                family: rng.below(8),
                values: if rng.below(20) == 0 {
                    255
                } else {
                    rng.below(216)
                },
                write: match rng.below(5) {
                    0 => Write::Touch,
                    1 => Write::Inc,
                    2 => Write::Dec,
                    3 => Write::Add(Num::Eighths(rng.below(64) as i16 - 8)),
                    _ => Write::Set(Num::Raw(f64::from_bits(rng.next()))),
                },
            },
            86..91 => Op::Check,
            91..93 => Op::Corrupt {
                segment: rng.below(4),
                at: match rng.below(4) {
                    0 => Place::Header(rng.below(128)),
                    1 => Place::Metadata(rng.below(255).into()),
                    2 => Place::Slots(rng.below(64).into()),
                    _ => Place::Anywhere(rng.next() as u32),
                },
                bytes: vec![rng.below(256)],
                overwrite: rng.below(2) == 0,
            },
            97 => Op::Exit,
            _ => Op::Truncate {
                segment: rng.below(4),
                len: match rng.below(5) {
                    0 => Cut::Empty,
                    1 => Cut::InHeader(rng.below(128)),
                    2 => Cut::Shorter(rng.below(255).into()),
                    3 => Cut::Same,
                    _ => Cut::Longer(rng.below(255).into()),
                },
            },
        };
        ops.push(op);
    }
    Scenario {
        // Mostly the smallest segments, so continuations and drops happen.
        initial_pages: rng.below(4) / 3,
        growth: rng.below(4),
        max_segments: rng.below(4),
        ops,
    }
}

#[test]
fn pseudo_random_scenarios() {
    use shmetrics_fuzz_checks::model::{Stats, run};
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut total = Stats::default();
    for _ in 0..300 {
        let s = run(&scenario(&mut rng));
        total.families += s.families;
        total.series += s.series;
        total.dropped += s.dropped;
        total.segments += s.segments;
        total.truncations += s.truncations;
        total.corruptions += s.corruptions;
        total.exact_checks += s.exact_checks;
        total.lenient_checks += s.lenient_checks;
    }
    eprintln!("{total:?}");
    // The scenarios reach every part of the model, or this test checks little: 300
    // scenarios, continuation segments (more segments than scenarios), dropped series,
    // truncations, corruptions, and both kinds of check.
    assert!(total.families >= 500, "{total:?}");
    assert!(total.series >= 3000, "{total:?}");
    assert!(total.dropped >= 50, "{total:?}");
    assert!(total.segments >= 330, "{total:?}");
    assert!(total.truncations >= 30, "{total:?}");
    assert!(total.corruptions >= 300, "{total:?}");
    assert!(total.exact_checks >= 500, "{total:?}");
    assert!(total.lenient_checks >= 300, "{total:?}");
}

#[test]
fn arbitrary_bytes_decode_to_scenarios() {
    // What the fuzzer feeds the target: any bytes, including none.
    for len in [0usize, 1, 7, 64, 512] {
        let data: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
        shmetrics_fuzz_checks::model::scenario(&data);
    }
}
