//! memcached decoder (plugins/memcached): golden tests on every capture in
//! tests/pcaps/memcached/ against the DeepFlow expectations of the shared
//! MANIFEST, per-capture summaries in tests/golden/memcached/ (regenerate with
//! `UPDATE_EXPECT=1`), and a real memcached driven by a Python client.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{attr, replay_spans, root};

fn spans(path: &Path) -> Vec<Value> {
    replay_spans(path, &[])
}

fn pcap(file: &str) -> std::path::PathBuf {
    root().join("tests/pcaps/memcached").join(file)
}

/// "op STATUS" per span; "-" when the span has no response status code
/// (one-way messages, unanswered requests, numeric incr/decr replies).
fn exchanges(spans: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in spans {
        let code = attr(s, "db.response.status_code");
        let code = if code.is_empty() {
            "-".to_string()
        } else {
            code
        };
        *counts
            .entry(format!("{} {code}", attr(s, "db.operation.name")))
            .or_default() += 1;
    }
    counts
}

fn map(items: &[(&str, usize)]) -> BTreeMap<String, usize> {
    items.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

#[test]
fn memcached_small_session_matches_deepflow() {
    // DeepFlow memcached.result: Request 2 / Response 2 (set -> STORED,
    // get -> VALUE..END). The trailing `quit` has no response: DeepFlow does
    // not report it; we report it as a one-way span (tshark sees 3 commands),
    // so requests with a response are exactly DeepFlow's 2.
    let spans = spans(&pcap("deepflow__memcached.pcap"));
    assert_eq!(
        exchanges(&spans),
        map(&[("set STORED", 1), ("get VALUE", 1), ("quit -", 1)])
    );
    let get = spans.iter().find(|s| s["name"] == "get").unwrap();
    assert_eq!(attr(get, "db.system.name"), "memcached");
    assert_eq!(attr(get, "db.query.text"), "get ?");
    assert_eq!(attr(get, "db.response.returned_rows"), "1");
    let set = spans.iter().find(|s| s["name"] == "set").unwrap();
    assert_eq!(attr(set, "db.query.text"), "set ? ? ? ?");
}

#[test]
fn memcached_userdata_matches_deepflow() {
    // DeepFlow memcached-userdata.result: Request 10154 / Response 10153.
    // The client stream holds get x10041, gets x112, set x1 = 10154 commands;
    // the server stream END x10152 (hits are VALUE blocks ending in END: 122
    // hits) + STORED x1 = 10153 responses: the last get is cut by the end of
    // the capture (a span marked `wasmtap.response_missing`, not an error). tshark counts fewer (10138 commands,
    // 10031 responses): counting lines in the raw reassembled streams (no
    // holes) gives 10154 / 10153, as DeepFlow and we do, so the peer wins.
    let spans = spans(&pcap("deepflow__memcached-userdata.pcap"));
    assert_eq!(spans.len(), 10154);
    let got = exchanges(&spans);
    assert_eq!(
        got,
        map(&[
            ("get END", 10030),
            ("get VALUE", 10),
            ("gets VALUE", 112),
            ("set STORED", 1),
            ("get -", 1),
        ])
    );
    let answered = spans
        .iter()
        .filter(|s| !attr(s, "db.response.status_code").is_empty())
        .count();
    assert_eq!(answered, 10153);
    let errors = spans
        .iter()
        .filter(|s| s["status"]["code"] == "error")
        .count();
    // The last get's answer is not in the capture, which ends within the
    // response timeout: cut, not an error of the service.
    assert_eq!(errors, 0, "the capture's end is not the service's failure");
    let cut: Vec<_> = spans
        .iter()
        .filter(|s| attr(s, "wasmtap.response_missing") == "capture_end")
        .collect();
    assert_eq!(cut.len(), 1);
    let rows: i64 = spans
        .iter()
        .filter_map(|s| s["attributes"]["db.response.returned_rows"].as_i64())
        .sum();
    assert_eq!(rows, 122);
}

/// Counts per "op status rows span-status", then the first 30 spans.
fn summary(spans: &[Value]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for s in spans {
        *counts
            .entry(format!(
                "{} status_code={} rows={} status={}",
                s["name"].as_str().unwrap_or(""),
                attr(s, "db.response.status_code"),
                attr(s, "db.response.returned_rows"),
                s["status"]["code"].as_str().unwrap_or("")
            ))
            .or_default() += 1;
    }
    let mut out = String::new();
    for (k, n) in &counts {
        out.push_str(&format!("{n:>6} {k}\n"));
    }
    out.push_str("--\n");
    for s in spans.iter().take(30) {
        out.push_str(&format!(
            "{} {} {} query={:?} status_code={} rows={} dur_ns={}\n",
            s["start_unix_nano"],
            s["resource"]["service.name"].as_str().unwrap_or(""),
            s["name"].as_str().unwrap_or(""),
            attr(s, "db.query.text"),
            attr(s, "db.response.status_code"),
            attr(s, "db.response.returned_rows"),
            s["end_unix_nano"].as_u64().unwrap_or(0) - s["start_unix_nano"].as_u64().unwrap_or(0),
        ));
    }
    out
}

#[test]
fn memcached_golden_summaries() {
    crate::check_golden("memcached", summary);
}

#[test]
fn memcached_real_server_counts_equal_client() {
    let pcap = std::env::temp_dir().join(format!("wasmtap-memcached-{}.pcap", std::process::id()));
    let st = Command::new(root().join("scripts/capture-memcached.sh"))
        .arg(&pcap)
        .arg("200")
        .status()
        .unwrap();
    assert!(st.success(), "capture-memcached.sh failed");
    let expect_path = format!("{}.expect.json", pcap.display());
    let expect: Value =
        serde_json::from_str(&std::fs::read_to_string(&expect_path).unwrap()).unwrap();
    let spans = spans(&pcap);
    std::fs::remove_file(&pcap).ok();
    std::fs::remove_file(&expect_path).ok();

    let want: BTreeMap<String, usize> = expect["exchanges"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap() as usize))
        .collect();
    assert_eq!(exchanges(&spans), want);
    let rows: i64 = spans
        .iter()
        .filter_map(|s| s["attributes"]["db.response.returned_rows"].as_i64())
        .sum();
    assert_eq!(rows, expect["hits"].as_i64().unwrap());
    // The only error is the unknown command (ERROR).
    let errors: Vec<String> = spans
        .iter()
        .filter(|s| s["status"]["code"] == "error")
        .map(|s| format!("{} {}", s["name"], attr(s, "error.type")))
        .collect();
    assert_eq!(errors, ["\"_OTHER\" ERROR"]);
}
