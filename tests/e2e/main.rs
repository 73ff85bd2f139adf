//! End-to-end tests: drive the `wasmtap` binary on real captures and real servers.

#![allow(missing_docs, unreachable_pub, clippy::unwrap_used)]

mod golden;
mod nginx;
mod otlp;
mod plugins;
mod robustness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The agent binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wasmtap")
}

/// Runs `wasmtap` with `args`, returning its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("WASMTAP_LOG", "error")
        .output()
        .unwrap()
}

/// Replays `file` (relative to the root) with `--format jsonl` and returns the spans.
pub fn replay_spans(file: &Path, extra: &[&str]) -> Vec<Value> {
    let f = file.to_str().unwrap();
    let mut args = vec!["replay", f, "--format", "jsonl"];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(
        out.status.success(),
        "wasmtap replay {f} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// A span attribute as text ("" when absent).
pub fn attr(span: &Value, key: &str) -> String {
    match &span["attributes"][key] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}
