//! `replay --shards N`: every bundled capture, of every protocol, gives the
//! same spans (ids included), the same metrics and the same counters
//! through 2 and 3 shards as through one. One indicator is left out: the
//! consecutive failures gauge counts in the order exchanges reach the
//! telemetry stage, which across shards is not the capture's (README, "Shards").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{root, run};

fn captures() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(&root().join("tests/pcaps"), &mut v);
    v.sort();
    v
}

/// Sorted span lines, the metrics file's lines (sorted, durations' sums
/// rounded: floating-point sums depend on the order they were added in),
/// and the counters (but elapsed and time spent in decoders).
fn replay(
    file: &Path,
    shards: &str,
    tag: &str,
) -> (Vec<String>, Vec<String>, BTreeMap<String, String>) {
    let metrics = std::env::temp_dir().join(format!(
        "wasmtap-shards-{tag}-{shards}-{}.jsonl",
        std::process::id()
    ));
    let f = file.to_str().unwrap();
    let m = metrics.to_str().unwrap();
    let out = run(&[
        "replay",
        f,
        "--format",
        "jsonl",
        "--stats",
        "--shards",
        shards,
        "--metrics-out",
        m,
    ]);
    assert!(
        out.status.success(),
        "{f}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut spans: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    spans.sort();
    let mut points: Vec<String> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("consecutive_failures"))
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            if let Some(s) = v.get_mut("sum").and_then(|s| s.as_f64()) {
                v["sum"] = serde_json::json!(format!("{s:.9}"));
            }
            v.to_string()
        })
        .collect();
    points.sort();
    std::fs::remove_file(&metrics).ok();
    let counters = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| {
            l.starts_with("wasmtap.agent.") && !l.contains("elapsed") && !l.contains("time_ns")
        })
        .filter_map(|l| {
            l.rsplit_once(' ')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    (spans, points, counters)
}

#[test]
fn every_capture_gives_the_same_spans_metrics_and_counters_through_several_shards() {
    let files = captures();
    assert!(files.len() >= 80, "{}", files.len());
    let mut failures = Vec::new();
    let mut spans = 0;
    for (i, f) in files.iter().enumerate() {
        let tag = i.to_string();
        let one = replay(f, "1", &tag);
        spans += one.0.len();
        for n in ["2", "3"] {
            let many = replay(f, n, &tag);
            let name = f.strip_prefix(root()).unwrap().display().to_string();
            if many.0 != one.0 {
                failures.push(format!("{name}: {n} shards: spans differ"));
            }
            if many.1 != one.1 {
                failures.push(format!("{name}: {n} shards: metrics differ"));
            }
            for (k, v) in &one.2 {
                if many.2.get(k) != Some(v) {
                    failures.push(format!(
                        "{name}: {n} shards: {k} {v} vs {:?}",
                        many.2.get(k)
                    ));
                }
            }
        }
    }
    assert!(spans > 1000, "{spans}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
