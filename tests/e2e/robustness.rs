//! No panic, no hang: every bundled capture, and truncated and corrupted copies.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, root, run};

fn all_captures() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for proto in std::fs::read_dir(root().join("tests/pcaps")).unwrap() {
        let p = proto.unwrap().path();
        if p.is_dir() {
            for f in std::fs::read_dir(&p).unwrap() {
                v.push(f.unwrap().path());
            }
        }
    }
    v.sort();
    v
}

/// Runs a replay with a deadline; returns (exit code, stderr).
fn replay_bounded(file: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .args(["replay", file.to_str().unwrap(), "--format", "jsonl"])
        .env("WASMTAP_LOG", "error")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err);
        }
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().ok();
            panic!("replay of {} hung (over 60 s)", file.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn check_clean(file: &Path, code: Option<i32>, err: &str) {
    assert!(
        !err.contains("panicked"),
        "{}: panic: {err}",
        file.display()
    );
    assert!(
        matches!(code, Some(0) | Some(1)),
        "{}: exit {code:?}: {err}",
        file.display()
    );
    if code == Some(1) {
        let lines: Vec<_> = err
            .lines()
            .filter(|l| l.starts_with("wasmtap: error"))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: want one error line: {err}",
            file.display()
        );
    }
}

#[test]
fn every_bundled_capture_replays_cleanly() {
    let files = all_captures();
    assert!(
        files.len() >= 80,
        "bundled captures missing: {}",
        files.len()
    );
    for f in files {
        let (code, err) = replay_bounded(&f);
        check_clean(&f, code, &err);
        assert_eq!(code, Some(0), "{}: {err}", f.display());
    }
}

/// A small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn truncated_and_corrupted_copies_never_panic_or_hang() {
    let tmp = std::env::temp_dir().join(format!("wasmtap-robust-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for f in all_captures() {
        let bytes = std::fs::read(&f).unwrap();
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        // Truncations: inside the file header, and at two points in the records.
        for cut in [10, bytes.len() / 3, bytes.len() * 2 / 3 + 1] {
            let p = tmp.join(format!("cut{cut}-{name}"));
            std::fs::write(&p, &bytes[..cut.min(bytes.len())]).unwrap();
            let (code, err) = replay_bounded(&p);
            check_clean(&p, code, &err);
        }
        // Corruption: flip 16 random bytes past the file header (packet data and record headers).
        let mut c = bytes.clone();
        for _ in 0..16 {
            if c.len() > 24 {
                let i = 24 + (rng.next() as usize) % (c.len() - 24);
                c[i] ^= (rng.next() as u8) | 1;
            }
        }
        let p = tmp.join(format!("flip-{name}"));
        std::fs::write(&p, &c).unwrap();
        let (code, err) = replay_bounded(&p);
        check_clean(&p, code, &err);
    }
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn not_a_capture_fails_with_one_line() {
    let tmp = std::env::temp_dir().join(format!("wasmtap-notcap-{}.pcap", std::process::id()));
    std::fs::write(&tmp, b"GET / HTTP/1.1\r\n\r\n this is text, not a capture").unwrap();
    let out = run(&["replay", tmp.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("wasmtap-notcap"), "{err}");
    let missing = run(&["replay", "/nonexistent/file.pcap"]);
    assert_eq!(missing.status.code(), Some(1));
    std::fs::remove_file(&tmp).ok();
}

#[test]
fn bad_config_names_the_field() {
    let tmp = std::env::temp_dir().join(format!("wasmtap-cfg-{}.toml", std::process::id()));
    std::fs::write(&tmp, "[flows]\nmax_flowz = 10\n").unwrap();
    let f = root().join("tests/pcaps/http/deepflow__httpv1.pcap");
    let out = run(&[
        "replay",
        f.to_str().unwrap(),
        "--config",
        tmp.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("max_flowz"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    std::fs::remove_file(&tmp).ok();
}
