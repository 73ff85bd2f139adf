//! The decoder author's path, as a new user walks it in a fresh directory
//! outside the repository: `wasmtap plugin new`, `cargo test`, `wasmtap
//! plugin build`, `plugin test --update` then `--expect`, a planted
//! regression caught with a readable diff, `plugin inspect`, and the built
//! decoder dropped into an agent's plugin directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{bin, root};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `cmd` in `dir` with the shared template target directory (so the
/// SDK's dependencies build once per machine).
fn in_dir(dir: &Path, cmd: &mut Command) -> Output {
    cmd.current_dir(dir)
        .env("CARGO_TARGET_DIR", target())
        .env("WASMTAP_LOG", "warn")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap()
}

fn target() -> PathBuf {
    root().join("target/plugin-template")
}

fn wasmtap(dir: &Path, args: &[&str]) -> Output {
    in_dir(dir, Command::new(bin()).args(args))
}

#[test]
fn a_new_decoder_builds_tests_and_catches_a_regression() {
    let work = std::env::temp_dir().join(format!("wasmtap-author-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let o = wasmtap(&work, &["plugin", "new", "kvrpc"]);
    assert!(o.status.success(), "{}", text(&o));
    let proj = work.join("kvrpc");
    // A second `new` refuses to overwrite; a bad name is refused.
    assert!(!wasmtap(&work, &["plugin", "new", "kvrpc"]).status.success());
    let bad = wasmtap(&work, &["plugin", "new", "Bad/Name"]);
    assert!(!bad.status.success() && text(&bad).contains("decoder name"));

    // Its own tests pass as made, and it is clean code.
    let o = in_dir(
        &proj,
        Command::new(env!("CARGO")).args(["test", "-j2", "-q"]),
    );
    assert!(o.status.success(), "cargo test: {}", text(&o));
    let clippy = [
        "clippy",
        "-j2",
        "-q",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ];
    let o = in_dir(&proj, Command::new(env!("CARGO")).args(clippy));
    assert!(o.status.success(), "cargo clippy: {}", text(&o));
    let fmt = ["--edition", "2024", "--check", "src/lib.rs"];
    let o = in_dir(&proj, Command::new("rustfmt").args(fmt));
    assert!(o.status.success(), "rustfmt: {}", text(&o));

    let o = wasmtap(&proj, &["plugin", "build"]);
    assert!(o.status.success(), "plugin build: {}", text(&o));
    assert!(text(&o).contains("decoder kvrpc 0.1.0"), "{}", text(&o));
    let wasm = target().join("wasm32-wasip2/release/kvrpc.wasm");
    let wasm_s = wasm.to_str().unwrap();

    let golden = proj.join("tests/sample.golden.jsonl");
    let golden_s = golden.to_str().unwrap();
    let args = [
        "plugin",
        "test",
        wasm_s,
        "--pcap",
        "tests/sample.pcap",
        "--expect",
        golden_s,
    ];
    let o = wasmtap(&proj, &[&args[..], &["--update"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let lines = std::fs::read_to_string(&golden).unwrap();
    // Two connections, three requests each, answered out of order; DEL fails.
    assert_eq!(lines.lines().count(), 6, "{lines}");
    assert_eq!(lines.matches("\"status\":\"error\"").count(), 2, "{lines}");
    assert_eq!(lines.matches("\"operation\":\"DEL\"").count(), 2, "{lines}");
    let o = wasmtap(&proj, &args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("matches"), "{}", text(&o));

    // A planted regression: one operation mislabelled.
    let lib = proj.join("src/lib.rs");
    let src = std::fs::read_to_string(&lib).unwrap();
    let planted = src.replace(
        "let op = words.next().unwrap_or(\"UNKNOWN\").to_ascii_uppercase();",
        "let op = words.next().unwrap_or(\"UNKNOWN\").to_ascii_uppercase();\n            let op = if op == \"DEL\" { \"REMOVE\".to_string() } else { op };",
    );
    assert_ne!(src, planted, "the template changed: update this test");
    std::fs::write(&lib, planted).unwrap();
    let o = wasmtap(&proj, &["plugin", "build"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = wasmtap(&proj, &args);
    let t = text(&o);
    assert!(
        !o.status.success(),
        "the regression must fail the test: {t}"
    );
    assert!(t.contains("2 of 6 exchanges differ"), "{t}");
    assert!(t.contains("- operation: \"DEL\""), "{t}");
    assert!(t.contains("+ operation: \"REMOVE\""), "{t}");
    // Accepting it on purpose.
    let o = wasmtap(&proj, &[&args[..], &["--update"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert!(wasmtap(&proj, &args).status.success());

    let o = wasmtap(&proj, &["plugin", "inspect", wasm_s]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for want in [
        "kvrpc",
        "wasmtap:decoder@0.1.0",
        "kvrpc.key, kvrpc.status",
        "[7878]",
        "sha256",
    ] {
        assert!(t.contains(want), "inspect lacks {want}: {t}");
    }

    // Dropped into an agent's plugin directory, it decodes the capture.
    let plugins = work.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&wasm, plugins.join("kvrpc.wasm")).unwrap();
    let o = wasmtap(
        &proj,
        &[
            "replay",
            "tests/sample.pcap",
            "--format",
            "jsonl",
            "--plugins",
            plugins.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let spans = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        spans
            .lines()
            .filter(|l| l.contains("\"network.protocol.name\":\"kvrpc\""))
            .count(),
        6,
        "{spans}"
    );
    std::fs::remove_dir_all(&work).ok();
}
