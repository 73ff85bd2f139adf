//! The decoder author's path, as a new user walks it in a fresh directory
//! outside the repository: `wasmtap plugin new`, `cargo test`, `wasmtap
//! plugin build`, `plugin test --update` then `--expect`, a planted
//! regression caught with a readable diff, `plugin inspect`, and the built
//! decoder dropped into an agent's plugin directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{LiveAgent, bin, free_port, root};

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
        "wasmtap:decoder/",
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
    // Back to the template's decoder, for live traffic.
    std::fs::write(&lib, &src).unwrap();
    let o = wasmtap(&proj, &["plugin", "build"]);
    assert!(o.status.success(), "{}", text(&o));
    live_agent_decodes(&work, &proj, &wasm, "");
    std::fs::remove_dir_all(&work).ok();
}

/// The same path in Python (componentize-py) and JavaScript
/// (componentize-js): `plugin new --lang python|js`, its native tests,
/// `plugin build`, a golden that the Rust template's decoder matches
/// exchange for exchange, a planted regression caught, and the component
/// dropped into an agent beside its `plugin.toml` limits (and refused, with
/// a clear error, under a memory limit it cannot live in).
struct Lang {
    lang: &'static str,
    /// The native test command and what its output says on success.
    test: &'static [&'static str],
    passed: &'static str,
    /// The decoder's source file, a line of it, and that line mislabelling DEL.
    source: &'static str,
    line: &'static str,
    planted: &'static str,
}

#[test]
fn a_python_decoder_builds_tests_and_decodes_like_the_rust_one() {
    script_decoder(&Lang {
        lang: "python",
        test: &["python3", "-m", "unittest", "-v"],
        passed: "Ran 3 tests",
        source: "plugin.py",
        line: "op = \"\".join(c.upper() if \"a\" <= c <= \"z\" else c for c in op)",
        planted: "op = \"\".join(c.upper() if \"a\" <= c <= \"z\" else c for c in op)\n        op = \"REMOVE\" if op == \"DEL\" else op",
    });
}

#[test]
fn a_javascript_decoder_builds_tests_and_decodes_like_the_rust_one() {
    script_decoder(&Lang {
        lang: "js",
        test: &["npm", "test"],
        passed: "# pass 3",
        source: "plugin.js",
        line: "const op = (words.length > 2 ? words[2] : 'UNKNOWN').replace(/[a-z]/g, (c) => c.toUpperCase());",
        planted: "const op0 = (words.length > 2 ? words[2] : 'UNKNOWN').replace(/[a-z]/g, (c) => c.toUpperCase());\n    const op = op0 === 'DEL' ? 'REMOVE' : op0;",
    });
}

fn script_decoder(l: &Lang) {
    let work =
        std::env::temp_dir().join(format!("wasmtap-author-{}-{}", l.lang, std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let o = wasmtap(&work, &["plugin", "new", "kvrpc", "--lang", l.lang]);
    assert!(o.status.success(), "{}", text(&o));
    let proj = work.join("kvrpc");
    let o = in_dir(&proj, Command::new(l.test[0]).args(&l.test[1..]));
    assert!(o.status.success(), "{:?}: {}", l.test, text(&o));
    assert!(text(&o).contains(l.passed), "{}", text(&o));

    let o = wasmtap(&proj, &["plugin", "build"]);
    assert!(o.status.success(), "plugin build: {}", text(&o));
    assert!(text(&o).contains("decoder kvrpc 0.1.0"), "{}", text(&o));
    let wasm = proj.join("build/kvrpc.wasm");
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
    assert_eq!(lines.lines().count(), 6, "{lines}");
    assert!(lines.contains("\"kvrpc.key\":\"user:1\""), "{lines}");

    // The Rust template's decoder gives the same exchanges, field for field.
    // (a crate of its own per language: the tests share the target directory)
    let crate_name = format!("kvrust{}", l.lang);
    let o = wasmtap(&work, &["plugin", "new", &crate_name, "--port", "7878"]);
    assert!(o.status.success(), "{}", text(&o));
    let rust_proj = work.join(&crate_name);
    // Same protocol, same names: only the crate differs.
    let lib = rust_proj.join("src/lib.rs");
    let src = std::fs::read_to_string(&lib)
        .unwrap()
        .replace(&format!("\"{crate_name}\""), "\"kvrpc\"")
        .replace(&format!("\"{crate_name}."), "\"kvrpc.");
    std::fs::write(&lib, src).unwrap();
    let o = wasmtap(&rust_proj, &["plugin", "build"]);
    assert!(o.status.success(), "rust plugin build: {}", text(&o));
    let rust_wasm = target().join(format!("wasm32-wasip2/release/{crate_name}.wasm"));
    let o = wasmtap(
        &proj,
        &[
            "plugin",
            "test",
            rust_wasm.to_str().unwrap(),
            "--pcap",
            "tests/sample.pcap",
            "--expect",
            golden_s,
        ],
    );
    assert!(o.status.success(), "Rust and Python differ: {}", text(&o));

    // A planted regression: one operation mislabelled.
    let plugin = proj.join(l.source);
    let src = std::fs::read_to_string(&plugin).unwrap();
    let planted = src.replace(l.line, l.planted);
    assert_ne!(src, planted, "the template changed: update this test");
    std::fs::write(&plugin, &planted).unwrap();
    let o = wasmtap(&proj, &["plugin", "build"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = wasmtap(&proj, &args);
    let t = text(&o);
    assert!(!o.status.success(), "the regression must fail: {t}");
    assert!(t.contains("2 of 6 exchanges differ"), "{t}");
    assert!(t.contains("+ operation: \"REMOVE\""), "{t}");
    std::fs::write(&plugin, &src).unwrap();
    let o = wasmtap(&proj, &["plugin", "build"]);
    assert!(o.status.success(), "{}", text(&o));

    // Into an agent's plugin directory, with its own limits.
    let plugins = work.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(&wasm, plugins.join("kvrpc.wasm")).unwrap();
    std::fs::copy(proj.join("kvrpc.toml"), plugins.join("kvrpc.toml")).unwrap();
    let replay = |plugins: &Path| {
        wasmtap(
            &proj,
            &[
                "replay",
                "tests/sample.pcap",
                "--format",
                "jsonl",
                "--plugins",
                plugins.to_str().unwrap(),
            ],
        )
    };
    let o = replay(&plugins);
    assert!(o.status.success(), "{}", text(&o));
    let spans = String::from_utf8_lossy(&o.stdout).to_string();
    let kv = |s: &str| {
        s.lines()
            .filter(|l| l.contains("\"network.protocol.name\":\"kvrpc\""))
            .count()
    };
    assert_eq!(kv(&spans), 6, "{spans}");
    // The interpreter (or engine) does not fit in 8 MiB: the decoder is refused, by name.
    std::fs::write(
        plugins.join("kvrpc.toml"),
        "ports = [7878]\n[limits]\nmemory_mb = 8\n",
    )
    .unwrap();
    let o = replay(&plugins);
    let t = text(&o);
    assert_eq!(kv(&String::from_utf8_lossy(&o.stdout)), 0, "{t}");
    assert!(t.contains("kvrpc") && t.contains("memory"), "{t}");
    // `plugin inspect` applies the same file's limits.
    let inspected = plugins.join("kvrpc.wasm");
    let o = wasmtap(&proj, &["plugin", "inspect", inspected.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("memory limit"), "{}", text(&o));
    // A limit out of range is a clear error too.
    std::fs::write(plugins.join("kvrpc.toml"), "[limits]\nmemory_mb = 0\n").unwrap();
    let t = text(&replay(&plugins));
    assert!(t.contains("limits.memory_mb = 0"), "{t}");
    live_agent_decodes(
        &work,
        &proj,
        &wasm,
        "[limits]\nmemory_mb = 128\ncall_deadline_ms = 200\n",
    );
    std::fs::remove_dir_all(&work).ok();
}

/// The tutorial's last step: the template's peer (`tools/peer.py`) serves on
/// a free port, a live agent captures `lo`, the built decoder is dropped into
/// its plugin directory (with a `plugin.toml` naming that port) while it
/// runs, and every exchange the peer's client printed becomes a span of the
/// decoder, with its operation and status.
fn live_agent_decodes(work: &Path, proj: &Path, wasm: &Path, limits: &str) {
    let port = free_port();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(
        Command::new("python3")
            .current_dir(proj)
            .args(["tools/peer.py", "server", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "peer server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let plugins = work.join("live-plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let agent = LiveAgent::spawn(Command::new(bin()).args([
        "run",
        "--interface",
        "lo",
        "--bpf",
        &format!("tcp port {port}"),
        "--format",
        "jsonl",
        "--plugins",
        plugins.to_str().unwrap(),
    ]));
    // Dropped in while it runs: settings first, then the component (write, rename).
    std::fs::write(
        plugins.join("kvrpc.toml"),
        format!("ports = [{port}]\n{limits}"),
    )
    .unwrap();
    let tmp = plugins.join(".kvrpc.wasm.tmp");
    std::fs::copy(wasm, &tmp).unwrap();
    std::fs::rename(&tmp, plugins.join("kvrpc.wasm")).unwrap();
    // Compiled off the packet path (a Python or JavaScript component takes seconds).
    agent.wait_log("decoder loaded plugin=kvrpc", 180);
    let client = Command::new("python3")
        .current_dir(proj)
        .args(["tools/peer.py", "client", &port.to_string(), "30", "3"])
        .output()
        .unwrap();
    assert!(client.status.success(), "peer client: {}", text(&client));
    let printed = String::from_utf8_lossy(&client.stdout).to_string();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let mut want: Vec<String> = printed
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            format!("{} {}", w[1].to_uppercase(), w[2])
        })
        .collect();
    let mut got: Vec<String> = stopped
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| crate::attr(v, "network.protocol.name") == "kvrpc")
        .map(|v| {
            format!(
                "{} {}",
                v["name"].as_str().unwrap_or(""),
                crate::attr(&v, "kvrpc.status")
            )
        })
        .collect();
    assert_eq!(want.len(), 30, "{printed}");
    want.sort();
    got.sort();
    assert_eq!(got, want, "live spans vs the client's exchanges");
}
