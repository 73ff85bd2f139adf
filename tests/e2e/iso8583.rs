//! ISO 8583 from a third-party library: pyiso8583 encodes and decodes the
//! messages of an acquirer client and an issuer server on loopback
//! (`scripts/capture-iso8583.sh`: four connections, pipelined, answered out
//! of order; four framings, five encodings, ISO 8583:1987 and 1993, EBCDIC
//! among them). Framing, encoding and edition are
//! detected; every exchange's MTI, STAN, processing code, amount, response
//! code, masked PAN, terminal and acquirer must equal what the client
//! logged. The captures made once are kept in `tests/pcaps/iso8583/`, their
//! logs in `tests/golden/iso8583/`, so the same comparison runs without
//! Python too. No full PAN
//! or track data may reach any output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{attr, replay_spans, root, run};

const SCENARIOS: [&str; 6] = [
    "bin2-ascii",
    "ascii4-binary",
    "bin2tpdu-bcd",
    "bin2-binary",
    "bin2-ebcdic",
    "bin2le-binary93",
];
/// The system-failure codes the peer sends (ISO 8583:1987 and 1993).
const SYSTEM_FAILURE: [&str; 4] = ["91", "96", "909", "912"];
/// The approval codes the peer sends.
const APPROVED: [&str; 3] = ["00", "000", "800"];

fn log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// First 6 and last 4 digits: the agent masks with as many `*` as hidden digits.
fn ends(masked: &str) -> (String, String) {
    let d: String = masked.chars().filter(|c| *c != '*').collect();
    if d.len() < 10 {
        return (String::new(), d);
    }
    (d[..6].to_string(), d[d.len() - 4..].to_string())
}

/// Compares the spans of `pcap` with the client's log, exchange by exchange (by STAN).
fn check(pcap: &Path, log_path: &Path) {
    let name = pcap.file_name().unwrap().to_string_lossy().to_string();
    let spans = replay_spans(pcap, &[]);
    let want = log(log_path);
    assert!(!want.is_empty(), "{name}: empty log");
    let by_stan: BTreeMap<String, &Value> = spans
        .iter()
        .map(|sp| (attr(sp, "wasmtap.iso8583.stan"), sp))
        .collect();
    assert_eq!(spans.len(), want.len(), "{name}: spans vs logged exchanges");
    for w in &want {
        let stan = s(&w["stan"]);
        let sp = by_stan
            .get(&stan)
            .unwrap_or_else(|| panic!("{name}: no span for STAN {stan}"));
        let a = |k: &str| attr(sp, &format!("wasmtap.iso8583.{k}"));
        let ctx = format!("{name} STAN {stan}: {sp}");
        assert_eq!(attr(sp, "network.protocol.name"), "iso8583", "{ctx}");
        assert_eq!(a("mti"), s(&w["request_mti"]), "{ctx}");
        assert_eq!(a("response_mti"), s(&w["response_mti"]), "{ctx}");
        assert_eq!(a("processing_code"), s(&w["processing_code"]), "{ctx}");
        assert_eq!(a("amount"), s(&w["amount"]), "{ctx}");
        assert_eq!(a("response_code"), s(&w["response_code"]), "{ctx}");
        assert_eq!(a("terminal_id"), s(&w["terminal"]), "{ctx}");
        assert_eq!(a("acquirer_id"), s(&w["acquirer"]), "{ctx}");
        assert_eq!(ends(&a("pan")), ends(&s(&w["pan_masked"])), "{ctx}");
        let code = s(&w["response_code"]);
        let failed = SYSTEM_FAILURE.contains(&code.as_str());
        assert_eq!(sp["status"]["code"] == "error", failed, "{ctx}");
        let outcome = if APPROVED.contains(&code.as_str()) {
            "approved"
        } else if failed {
            "system_failure"
        } else {
            "declined"
        };
        assert_eq!(a("outcome"), outcome, "{ctx}");
        assert_ne!(attr(sp, "error.type"), "no_response", "{ctx}");
        // The operation names the MTI and what it does.
        assert!(s(&sp["name"]).starts_with(&s(&w["request_mti"])), "{ctx}");
    }
}

/// Whether `b` holds track 2 data: a run of 12 to 19 digits, `=`, 4 digits.
fn track2_like(b: &[u8]) -> bool {
    b.windows(1).enumerate().any(|(i, w)| {
        w[0] == b'='
            && b[..i]
                .iter()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .count()
                >= 12
            && b.get(i + 1..i + 5)
                .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
    })
}

#[test]
fn bundled_captures_match_the_client_logs() {
    let dir = root().join("tests/pcaps/iso8583");
    let logs = root().join("tests/golden/iso8583");
    for sc in SCENARIOS {
        check(
            &dir.join(format!("{sc}.pcap")),
            &logs.join(format!("{sc}.log.jsonl")),
        );
    }
}

fn capture(out: &Path) {
    let o = Command::new(root().join("scripts/capture-iso8583.sh"))
        .arg(out)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "capture-iso8583.sh: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("wasmtap-iso8583-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn real_pyiso8583_traffic_matches_the_client_log_and_leaks_no_card_data() {
    let dir = tmp("live");
    capture(&dir);
    for sc in SCENARIOS {
        check(
            &dir.join(format!("{sc}.pcap")),
            &dir.join(format!("{sc}.log.jsonl")),
        );
    }

    // Card data is on the wire; it must reach no output.
    let pcap = dir.join("bin2-ascii.pcap");
    let wire = std::fs::read(&pcap).unwrap();
    let logged = log(&dir.join("bin2-ascii.log.jsonl"));
    let pans: Vec<(String, String)> = logged
        .iter()
        .filter(|w| !w["pan_masked"].is_null())
        .map(|w| ends(&s(&w["pan_masked"])))
        .collect();
    assert!(!pans.is_empty());
    let full_pans = |text: &[u8]| -> Vec<String> {
        let t = String::from_utf8_lossy(text);
        let b = t.as_bytes();
        let mut found = Vec::new();
        for (first, last) in &pans {
            let mut from = 0;
            while let Some(i) = t[from..].find(first.as_str()) {
                let at = from + i;
                let run = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
                if (13..=19).contains(&run) && t[at..at + run].ends_with(last.as_str()) {
                    found.push(t[at..at + run].to_string());
                }
                from = at + 1;
            }
        }
        found
    };
    assert!(!full_pans(&wire).is_empty(), "the PANs are on the wire");
    assert!(track2_like(&wire), "track 2 is on the wire");
    let metrics = dir.join("m.jsonl");
    let collector = crate::otlp::Collector::start("iso8583");
    let spans = Command::new(crate::bin())
        .args([
            "replay",
            pcap.to_str().unwrap(),
            "--format",
            "jsonl",
            "--stats",
        ])
        .args(["--metrics-out", metrics.to_str().unwrap()])
        .args([
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{}", collector.http),
        ])
        .args(["--otlp-protocol", "http"])
        .env("WASMTAP_LOG", "debug")
        .output()
        .unwrap();
    assert!(spans.status.success());
    let ids: Vec<String> = String::from_utf8_lossy(&spans.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["span_id"].as_str().unwrap().to_string()
        })
        .collect();
    let received = collector.wait_for(|t| {
        ids.iter().all(|id| t.contains(id.as_str())) && t.contains("wasmtap.iso8583.pan")
    });
    assert!(
        ids.iter().all(|id| received.contains(id.as_str())),
        "every span reached the collector"
    );
    let table = run(&["replay", pcap.to_str().unwrap()]);
    assert!(table.status.success());
    for (what, bytes) in [
        ("OTLP at the collector", received.into_bytes()),
        ("spans", spans.stdout.clone()),
        ("debug log and stats", spans.stderr.clone()),
        ("metrics file", std::fs::read(&metrics).unwrap()),
        ("table", table.stdout.clone()),
    ] {
        assert!(bytes.len() > 100, "{what} is empty");
        let leaked = full_pans(&bytes);
        assert!(leaked.is_empty(), "{what} holds full PANs: {leaked:?}");
        assert!(!track2_like(&bytes), "{what} holds track 2 data");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn tshark(args: &[&str]) -> String {
    let o = Command::new("tshark").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// tshark's own ISO 8583 dissector (2-byte length framing only) counts
/// the same messages: two per exchange.
#[test]
fn tshark_counts_the_same_messages() {
    let dir = root().join("tests/pcaps/iso8583");
    for (sc, extra, endian) in [
        ("bin2-ascii", None, "bigendian"),
        ("bin2-binary", Some("iso8583.binencode:bin"), "bigendian"),
        (
            "bin2le-binary93",
            Some("iso8583.binencode:bin"),
            "littleendian",
        ),
    ] {
        let f = dir.join(format!("{sc}.pcap"));
        let f = f.to_str().unwrap();
        let syn = "tcp.flags.syn==1 && tcp.flags.ack==0";
        let port = tshark(&[
            "-r",
            f,
            "-Y",
            syn,
            "-T",
            "fields",
            "-e",
            "tcp.dstport",
            "-c",
            "1",
        ]);
        let decode_as = format!("tcp.port=={},iso8583", port.trim());
        let endian = format!("iso8583.len_endian:{endian}");
        let mut args = vec!["-r", f, "-d", &decode_as, "-o", &endian];
        if let Some(e) = extra {
            args.extend(["-o", e]);
        }
        args.extend(["-T", "fields", "-e", "iso8583.mti"]);
        let mtis = tshark(&args)
            .lines()
            .flat_map(|l| l.split(','))
            .filter(|m| !m.trim().is_empty())
            .count();
        let exchanges = log(&root().join(format!("tests/golden/iso8583/{sc}.log.jsonl"))).len();
        assert_eq!(mtis, 2 * exchanges, "{sc}: tshark's messages");
        assert_eq!(replay_spans(Path::new(f), &[]).len(), exchanges, "{sc}");
    }
}
