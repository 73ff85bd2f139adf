//! Captures are imperfect; the service is not to blame for it. From a real
//! nginx capture (curl sends five requests one after another on one
//! connection) and Zeek's http-post-large capture, `scripts/capture-imperfect.sh`
//! deletes packets with editcap and keeps one direction with tshark, as
//! mirror ports and busy hosts do:
//! - a request whose body tail was lost is still paired with its response
//!   (the response waits for the lost bytes to be reported as a gap);
//! - a request whose whole response was lost is *incomplete* (a span with
//!   `wasmtap.capture.incomplete`, counted, no metrics), never unanswered,
//!   and the requests after it keep their own responses;
//! - a flow captured in one direction only is reported as one-sided, not as
//!   a storm of unanswered requests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{attr, root, run};

fn replay(pcap: &Path) -> (Vec<Value>, BTreeMap<String, u64>) {
    let out = run(&[
        "replay",
        pcap.to_str().unwrap(),
        "--format",
        "jsonl",
        "--stats",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let spans = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stats = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    (spans, stats)
}

/// (target, status code, `wasmtap.response_missing`) per span, in order.
fn summary(spans: &[Value]) -> Vec<(String, String, String)> {
    spans
        .iter()
        .map(|s| {
            (
                attr(s, "url.path"),
                attr(s, "http.response.status_code"),
                attr(s, "wasmtap.response_missing"),
            )
        })
        .collect()
}

fn no_blame(name: &str, spans: &[Value]) {
    for s in spans {
        assert_ne!(attr(s, "error.type"), "no_response", "{name}: {s}");
    }
}

fn captures() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmtap-imperfect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = Command::new(root().join("scripts/capture-imperfect.sh"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "capture-imperfect.sh: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    dir
}

fn s(path: &str, code: &str, missing: &str) -> (String, String, String) {
    (path.to_string(), code.to_string(), missing.to_string())
}

#[test]
fn capture_losses_and_one_sided_flows_are_never_the_services() {
    let dir = captures();

    // The whole capture: five answers.
    let (spans, stats) = replay(&dir.join("seq.pcap"));
    let whole = [
        s("/", "200", ""),
        s("/missing", "404", ""),
        s("/", "200", ""),
        s("/fail", "500", ""),
        s("/", "200", ""),
    ];
    assert_eq!(summary(&spans), whole);
    assert_eq!(stats["wasmtap.agent.reassembly.gaps"], 0);

    // The third response lost: that request is incomplete, the others keep
    // their own answers, and only the real 500 is an error.
    let (spans, stats) = replay(&dir.join("response-lost.pcap"));
    no_blame("response-lost", &spans);
    let mut got = summary(&spans);
    got.sort();
    let mut want = vec![
        s("/", "200", ""),
        s("/missing", "404", ""),
        s("/", "", "capture_gap"),
        s("/fail", "500", ""),
        s("/", "200", ""),
    ];
    want.sort();
    assert_eq!(got, want);
    let lost = spans
        .iter()
        .find(|s| attr(s, "wasmtap.response_missing") == "capture_gap")
        .unwrap();
    assert_eq!(attr(lost, "wasmtap.capture.incomplete"), "true");
    assert_ne!(lost["status"]["code"], "error");
    assert_eq!(stats["wasmtap.agent.exchanges.incomplete"], 1);
    assert!(stats["wasmtap.agent.reassembly.gaps"] >= 1);
    let errors = spans
        .iter()
        .filter(|s| s["status"]["code"] == "error")
        .count();
    assert_eq!(errors, 1, "only /fail's 500");

    // One direction only: one-sided, no unanswered requests.
    let (spans, stats) = replay(&dir.join("one-sided.pcap"));
    no_blame("one-sided", &spans);
    assert_eq!(spans.len(), 5);
    for sp in &spans {
        assert_eq!(attr(sp, "wasmtap.response_missing"), "one_sided", "{sp}");
        assert_eq!(attr(sp, "wasmtap.capture.one_sided"), "true");
        assert_ne!(sp["status"]["code"], "error");
    }
    assert_eq!(stats["wasmtap.agent.flows.one_sided"], 1);
    assert_eq!(stats["wasmtap.agent.exchanges.cut_one_sided"], 5);
    assert_eq!(stats["wasmtap.agent.exchanges{kind=unanswered}"], 0);

    // The first POST's body tail lost: still paired with its 200.
    let (spans, stats) = replay(&dir.join("request-tail-lost.pcap"));
    no_blame("request-tail-lost", &spans);
    let codes: Vec<String> = spans
        .iter()
        .map(|s| attr(s, "http.response.status_code"))
        .collect();
    assert_eq!(codes, ["200", "200"]);
    assert_eq!(stats["wasmtap.agent.reassembly.gaps"], 1);
    assert_eq!(stats["wasmtap.agent.responses.unmatched"], 0);
    assert!(stats["wasmtap.agent.reassembly.held_answers"] >= 1);
    let _ = std::fs::remove_dir_all(&dir);
}
