//! Writes the seed corpus of every fuzz target: `fuzz-seeds DIR` creates
//! `DIR/<target>/seed-<n>` (existing files are replaced, other files kept).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: fuzz-seeds CORPUS_DIR");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    for (target, seeds) in shmetrics_fuzz_checks::seeds::corpus() {
        let target_dir = dir.join(target);
        let written = std::fs::create_dir_all(&target_dir).and_then(|()| {
            for (i, seed) in seeds.iter().enumerate() {
                std::fs::write(target_dir.join(format!("seed-{i}")), seed)?;
            }
            Ok(())
        });
        if let Err(e) = written {
            eprintln!("fuzz-seeds: {}: {e}", target_dir.display());
            return ExitCode::FAILURE;
        }
        println!("{}: {} seeds", target_dir.display(), seeds.len());
    }
    ExitCode::SUCCESS
}
