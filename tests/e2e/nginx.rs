//! Real traffic: Debian's nginx driven by wrk on loopback, captured by dumpcap,
//! then decoded by wasmtap and by tshark. Status-code counts must be equal.

use std::collections::BTreeMap;
use std::process::Command;

use crate::{attr, replay_spans, root};

#[test]
fn nginx_wrk_capture_status_codes_equal_tshark() {
    let pcap = std::env::temp_dir().join(format!("wasmtap-nginx-{}.pcap", std::process::id()));
    let st = Command::new(root().join("scripts/capture-nginx.sh"))
        .arg(&pcap)
        .args(["1", "2"])
        .status()
        .unwrap();
    assert!(st.success(), "capture-nginx.sh failed");

    let spans = replay_spans(&pcap, &[]);
    let mut ours: BTreeMap<String, usize> = BTreeMap::new();
    for s in &spans {
        *ours
            .entry(attr(s, "http.response.status_code"))
            .or_default() += 1;
    }

    let out = Command::new("tshark")
        .args([
            "-r",
            pcap.to_str().unwrap(),
            "-Y",
            "http.response",
            "-T",
            "fields",
            "-e",
            "http.response.code",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut theirs: BTreeMap<String, usize> = BTreeMap::new();
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        *theirs.entry(l.trim().to_string()).or_default() += 1;
    }
    std::fs::remove_file(&pcap).ok();
    // The script's nginx answers 200, 302, 404 and 500: all four must be seen.
    assert_eq!(ours.len(), 4, "{ours:?}");
    assert!(
        ours.values().sum::<usize>() > 1000,
        "too little traffic: {ours:?}"
    );
    assert_eq!(ours, theirs);
    // 5xx are errors (server spans), the rest are not.
    let errors = spans
        .iter()
        .filter(|s| s["status"]["code"] == "error")
        .count();
    assert_eq!(errors, ours["500"]);
}
