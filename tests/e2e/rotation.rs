//! Capture files as a capture tool writes them: one capture rotated into
//! ten files (`editcap -c`), replayed as files (in any order on the command
//! line), as a directory, and with `--follow` while the files are dropped
//! in, gives exactly the spans and metrics of the whole file: flows that
//! span a rotation stay one flow.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, root, run};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wasmtap-rot-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Spans (ids left in: they are deterministic in one pipeline) and the metrics file.
fn outputs(args: &[&str], metrics: &Path) -> (String, String) {
    let mut a = vec!["replay"];
    a.extend_from_slice(args);
    a.extend([
        "--format",
        "jsonl",
        "--metrics-out",
        metrics.to_str().unwrap(),
    ]);
    let o = run(&a);
    assert!(
        o.status.success(),
        "{a:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (
        String::from_utf8(o.stdout).unwrap(),
        std::fs::read_to_string(metrics).unwrap(),
    )
}

fn sorted(text: &str) -> Vec<&str> {
    let mut v: Vec<&str> = text.lines().collect();
    v.sort_unstable();
    v
}

#[test]
fn a_rotated_capture_gives_the_whole_files_spans_and_metrics() {
    let whole = root().join("tests/pcaps/iso8583/bin2-ascii.pcap");
    let dir = tmp("parts");
    let parts_dir = dir.join("parts");
    std::fs::create_dir_all(&parts_dir).unwrap();
    // About 260 packets: ten files of 27.
    let st = Command::new("editcap")
        .args(["-c", "27"])
        .arg(&whole)
        .arg(parts_dir.join("cap.pcap"))
        .status()
        .unwrap();
    assert!(st.success());
    let mut parts: Vec<PathBuf> = std::fs::read_dir(&parts_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    assert!(parts.len() >= 9, "{} parts", parts.len());

    let (want_spans, want_metrics) = outputs(&[whole.to_str().unwrap()], &dir.join("whole.jsonl"));
    assert_eq!(want_spans.lines().count(), 60);

    // Files, given in reverse order: read by first packet time.
    let mut rev: Vec<&str> = parts.iter().map(|p| p.to_str().unwrap()).collect();
    rev.reverse();
    let (spans, metrics) = outputs(&rev, &dir.join("files.jsonl"));
    assert_eq!(sorted(&spans), sorted(&want_spans), "as files");
    assert_eq!(metrics, want_metrics, "as files: metrics");

    // A directory.
    let (spans, metrics) = outputs(&[parts_dir.to_str().unwrap()], &dir.join("dir.jsonl"));
    assert_eq!(sorted(&spans), sorted(&want_spans), "as a directory");
    assert_eq!(metrics, want_metrics, "as a directory: metrics");

    // --follow: the files arrive one by one while it runs (written, then
    // renamed in, as a rotating capture tool's finished files), then SIGTERM.
    let follow = dir.join("follow");
    let moved = dir.join("moved");
    std::fs::create_dir_all(&follow).unwrap();
    std::fs::create_dir_all(&moved).unwrap();
    let metrics_f = dir.join("follow.jsonl");
    // Spans and logs to files: a full pipe would stall the agent.
    let spans_f = dir.join("follow.spans");
    let log_f = dir.join("follow.log");
    let child = Command::new(bin())
        .args(["replay", "--follow", follow.to_str().unwrap()])
        .args(["--follow-idle-ms", "300", "--format", "jsonl"])
        .args(["--after-read", &format!("move:{}", moved.display())])
        .args(["--metrics-out", metrics_f.to_str().unwrap()])
        .env("WASMTAP_LOG", "info")
        .stdout(Stdio::from(std::fs::File::create(&spans_f).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&log_f).unwrap()))
        .spawn()
        .unwrap();
    for p in &parts {
        let name = p.file_name().unwrap();
        let hidden = follow.join(format!(".{}", name.to_str().unwrap()));
        std::fs::copy(p, &hidden).unwrap();
        std::fs::rename(&hidden, follow.join(name)).unwrap();
        std::thread::sleep(Duration::from_millis(150));
    }
    // Every file read (moved out), then stop.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&moved).unwrap().count() < parts.len() {
        assert!(
            Instant::now() < deadline,
            "--follow did not read every file"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait_with_output().unwrap().status;
    let log = std::fs::read_to_string(&log_f).unwrap();
    assert!(status.success(), "{log}");
    let spans = std::fs::read_to_string(&spans_f).unwrap();
    assert_eq!(sorted(&spans), sorted(&want_spans), "--follow");
    let metrics = std::fs::read_to_string(&metrics_f).unwrap();
    assert_eq!(metrics, want_metrics, "--follow: metrics");
    assert_eq!(std::fs::read_dir(&follow).unwrap().count(), 0, "all moved");
    std::fs::remove_dir_all(&dir).ok();
}

/// The newest file is decoded while the capture tool is still writing it
/// (records cut anywhere between writes), not when it is complete.
#[test]
fn a_growing_file_is_decoded_as_it_is_written() {
    let whole = root().join("tests/pcaps/iso8583/bin2-ascii.pcap");
    let bytes = std::fs::read(&whole).unwrap();
    let dir = tmp("grow");
    let watch = dir.join("watch");
    std::fs::create_dir_all(&watch).unwrap();
    let (want_spans, want_metrics) = outputs(&[whole.to_str().unwrap()], &dir.join("whole.jsonl"));
    let total = want_spans.lines().count();
    let spans_f = dir.join("spans");
    let metrics_f = dir.join("metrics.jsonl");
    let log_f = dir.join("log");
    let mut child = Command::new(bin())
        .args(["replay", "--follow", watch.to_str().unwrap()])
        // Never closed for idleness: only the stop ends the file.
        .args(["--follow-idle-ms", "600000", "--format", "jsonl"])
        .args(["--metrics-out", metrics_f.to_str().unwrap()])
        .env("WASMTAP_LOG", "info")
        .stdout(Stdio::from(std::fs::File::create(&spans_f).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&log_f).unwrap()))
        .spawn()
        .unwrap();
    let lines = || {
        std::fs::read_to_string(&spans_f)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let wait_for = |what: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while lines() < n {
            assert!(
                Instant::now() < deadline,
                "{what}: {} of {n} spans",
                lines()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    use std::io::Write;
    let mut f = std::fs::File::create(watch.join("live.pcap")).unwrap();
    // The header and part of a record first, then the first half.
    let half = bytes.len() / 2 + 7;
    for chunk in [&bytes[..40], &bytes[40..half]] {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for("first half", 1);
    let early = lines();
    assert!(early < total, "{early} spans before the second half");
    for chunk in bytes[half..].chunks(4093) {
        f.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(f);
    wait_for("whole file", total);
    assert!(child.try_wait().unwrap().is_none(), "still following");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&log_f).unwrap();
    assert!(status.success(), "{log}");
    let spans = std::fs::read_to_string(&spans_f).unwrap();
    assert_eq!(sorted(&spans), sorted(&want_spans));
    assert_eq!(std::fs::read_to_string(&metrics_f).unwrap(), want_metrics);
    std::fs::remove_dir_all(&dir).ok();
}
