//! Every fuzz target over its corpus (`corpus/<target>/`): the regressions
//! each finding left, and seeds. Runs on the stable toolchain in the suite.
//!
//! Each target runs in a process of its own, as under cargo-fuzz: a
//! decoder's attribute keys are declared once per process.

use std::path::Path;
use std::process::Command;

const ONE: &str = "WASMTAP_FUZZ_TARGET";

fn run_one(target: &str) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("no corpus for {target} in {}", dir.display());
    };
    let mut n = 0;
    for e in entries {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| wasmtap_fuzz::run_target(target, &data));
        assert!(r.is_ok(), "{target}: {} fails", path.display());
        n += 1;
    }
    assert!(n > 0, "{target}: empty corpus");
    n
}

#[test]
fn every_target_passes_its_corpus() {
    if let Ok(target) = std::env::var(ONE) {
        run_one(&target);
        return;
    }
    let me = std::env::current_exe().unwrap();
    let mut failed = Vec::new();
    for target in wasmtap_fuzz::TARGETS {
        let out = Command::new(&me)
            .args(["--exact", "every_target_passes_its_corpus", "--nocapture"])
            .env(ONE, target)
            .output()
            .unwrap();
        if !out.status.success() {
            failed.push(format!(
                "{target}:\n{}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .filter(|l| !l.starts_with("   ") && !l.starts_with("stack"))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
}
