//! DNS decoder (plugins/dns), the first decoder over UDP: golden tests on
//! every capture in tests/pcaps/dns/ against the peer expectations of the
//! shared MANIFEST (tshark, Zeek, Suricata, DeepFlow), per-span summaries in
//! tests/golden/dns/ (regenerate with `UPDATE_EXPECT=1`), and a real resolver
//! exchange on loopback.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::{attr, check_golden, replay_spans, root};

fn capture(file: &str) -> Vec<Value> {
    replay_spans(&root().join("tests/pcaps/dns").join(file), &[])
}

/// "QTYPE RCODE" per span ("QTYPE -" for a query without a response).
fn exchanges(spans: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in spans {
        assert_eq!(attr(s, "network.protocol.name"), "dns", "{s}");
        let rcode = attr(s, "wasmtap.dns.response_code");
        let rcode = if rcode.is_empty() { "-".into() } else { rcode };
        *counts
            .entry(format!("{} {rcode}", s["name"].as_str().unwrap_or("")))
            .or_default() += 1;
    }
    counts
}

fn map(items: &[(&str, usize)]) -> BTreeMap<String, usize> {
    items.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

fn transport(spans: &[Value]) -> String {
    let mut t: Vec<String> = spans.iter().map(|s| attr(s, "network.transport")).collect();
    t.dedup();
    t.join(",")
}

#[test]
fn tcp_without_handshake_nxdomain_and_noerror() {
    // tshark: 2 queries, 2 responses (NXDOMAIN x1, NOERROR x1); DeepFlow the same.
    let spans = capture("deepflow__dns.pcap");
    assert_eq!(
        exchanges(&spans),
        map(&[("A NXDOMAIN", 1), ("A NOERROR", 1)])
    );
    assert_eq!(transport(&spans), "tcp");
    let names: Vec<String> = spans.iter().map(|s| attr(s, "dns.question.name")).collect();
    assert!(names.contains(&"guoyongxin.com".to_string()), "{names:?}");
    assert!(names.contains(&"yunshan.net.cn".to_string()), "{names:?}");
    // NXDOMAIN is the client's problem, not a server error (as HTTP 4xx).
    assert!(spans.iter().all(|s| s["status"]["code"] != "error"));
}

#[test]
fn tcp_pipelined_queries() {
    // tshark: A and AAAA pipelined on one connection, both NOERROR.
    let spans = capture("deepflow__dns-tcp-multi.pcap");
    assert_eq!(
        exchanges(&spans),
        map(&[("A NOERROR", 1), ("AAAA NOERROR", 1)])
    );
    // Suricata: 20 queries then 20 NXDOMAIN answers, several per segment.
    let spans = capture("suricata__dns-tcp-multirequest-buffer-dns-tcp-multirequest-buffer.pcap");
    assert_eq!(exchanges(&spans), map(&[("A NXDOMAIN", 20)]));
}

#[test]
fn tcp_capture_with_oversized_wire_lengths() {
    // Every frame's wire length is 16 bytes above the IP length; tshark:
    // 3 queries, rcode NXDOMAIN x2 and NOERROR x1 (DeepFlow's "ok" for one
    // NXDOMAIN contradicts its own response_code=3: tshark wins here).
    let spans = capture("deepflow__nxdomain.pcap");
    assert_eq!(
        exchanges(&spans),
        map(&[("AAAA NXDOMAIN", 2), ("A NOERROR", 1)])
    );
}

#[test]
fn udp_long_lived_flow_pairs_every_query() {
    // Zeek: 22 packets on one 5-tuple, 11 queries; tshark: NOERROR x10,
    // NXDOMAIN x1; qtypes (queries and responses) AAAA 12, MX 2, LOC 2,
    // PTR 2, A 2, ANY 2.
    let spans = capture("zeek__dns-long-connection.pcap");
    assert_eq!(spans.len(), 11);
    assert_eq!(transport(&spans), "udp");
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_rcode: BTreeMap<String, usize> = BTreeMap::new();
    for s in &spans {
        *by_type
            .entry(s["name"].as_str().unwrap().to_string())
            .or_default() += 1;
        *by_rcode
            .entry(attr(s, "wasmtap.dns.response_code"))
            .or_default() += 1;
    }
    assert_eq!(
        by_type,
        map(&[
            ("AAAA", 6),
            ("MX", 1),
            ("LOC", 1),
            ("PTR", 1),
            ("A", 1),
            ("ANY", 1)
        ])
    );
    assert_eq!(by_rcode, map(&[("NOERROR", 10), ("NXDOMAIN", 1)]));
}

#[test]
fn udp_duplicate_response_is_counted_not_paired_twice() {
    // Zeek logs two rows for one query answered twice; as exchanges that is
    // one query and one response too many: 1 span, 1 unmatched response.
    let out = Command::new(crate::bin())
        .args([
            "replay",
            root()
                .join("tests/pcaps/dns/zeek__dns-two-responses.pcap")
                .to_str()
                .unwrap(),
            "--format",
            "jsonl",
            "--stats",
        ])
        .env("WASMTAP_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success());
    let spans: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exchanges(&spans), map(&[("A NOERROR", 1)]));
    assert_eq!(attr(&spans[0], "dns.question.name"), "www.cmu.edu");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("wasmtap.agent.responses.unmatched 1"),
        "{stderr}"
    );
}

#[test]
fn udp_over_fragmented_ipv6() {
    // Zeek: 3 TXT queries, 2 answered (one answer is a fragmented IPv6
    // datagram, reassembled before decoding); the third's answer is not in
    // the capture, which ends within the response timeout: cut, not an
    // error of the service.
    let spans = capture("zeek__ipv6-fragmented-dns.pcap");
    assert_eq!(exchanges(&spans), map(&[("TXT NOERROR", 2), ("TXT -", 1)]));
    let unanswered = spans
        .iter()
        .find(|s| attr(s, "wasmtap.dns.response_code").is_empty())
        .unwrap();
    assert_eq!(unanswered["status"]["code"], "unset");
    assert_eq!(attr(unanswered, "wasmtap.response_missing"), "capture_end");
}

#[test]
fn pcapng_with_several_interfaces() {
    // Zeek: 3 UDP DNS query/response pairs; tshark: A x2, AAAA x1 (q+r 4, 2).
    let spans = capture("zeek__pcapng-multi-interface.pcapng");
    assert_eq!(
        exchanges(&spans),
        map(&[("A NOERROR", 2), ("AAAA NOERROR", 1)])
    );
}

#[test]
fn dns_golden_summaries() {
    check_golden("dns", |spans| {
        spans
            .iter()
            .map(|s| {
                format!(
                    "{} {} {} {} {}\n",
                    attr(s, "network.transport"),
                    s["name"].as_str().unwrap_or(""),
                    attr(s, "dns.question.name"),
                    attr(s, "wasmtap.dns.response_code"),
                    s["status"]["code"].as_str().unwrap_or("")
                )
            })
            .collect()
    });
}

#[test]
fn real_dnsmasq_counts_equal_client_and_tshark() {
    // dnsmasq on loopback, on a random port (so the decoder is chosen by
    // probing, not by port), queried over UDP and over pipelined TCP.
    let pcap = std::env::temp_dir().join(format!("wasmtap-dns-{}.pcap", std::process::id()));
    let st = Command::new(root().join("scripts/capture-dns.sh"))
        .arg(&pcap)
        .arg("100")
        .status()
        .unwrap();
    assert!(st.success(), "capture-dns.sh failed");
    let expect_path = format!("{}.expect.json", pcap.display());
    let expect: Value =
        serde_json::from_str(&std::fs::read_to_string(&expect_path).unwrap()).unwrap();
    let spans = replay_spans(&pcap, &[]);
    let port = expect["port"].as_u64().unwrap();
    let tshark = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-d", &format!("tcp.port=={port},dns")])
        .args(["-d", &format!("udp.port=={port},dns")])
        .args(["-Y", "dns.flags.response == 1"])
        .args([
            "-T",
            "fields",
            "-e",
            "dns.qry.type",
            "-e",
            "dns.flags.rcode",
        ])
        .output()
        .unwrap();
    std::fs::remove_file(&pcap).ok();
    std::fs::remove_file(&expect_path).ok();
    assert!(tshark.status.success());

    let want: BTreeMap<String, usize> = expect["exchanges"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap() as usize))
        .collect();
    assert_eq!(exchanges(&spans), want);
    assert_eq!(transport_counts(&spans), (100, 25), "(udp, tcp) exchanges");
    // tshark, told the port is DNS, counts the same responses by type and rcode.
    let types = [("1", "A"), ("28", "AAAA"), ("15", "MX"), ("16", "TXT")];
    let rcodes = [("0", "NOERROR"), ("3", "NXDOMAIN"), ("5", "REFUSED")];
    let mut theirs: BTreeMap<String, usize> = BTreeMap::new();
    for line in String::from_utf8(tshark.stdout).unwrap().lines() {
        let (t, r) = line.split_once('\t').unwrap();
        let t = types.iter().find(|x| x.0 == t).map_or(t, |x| x.1);
        let r = rcodes.iter().find(|x| x.0 == r).map_or(r, |x| x.1);
        *theirs.entry(format!("{t} {r}")).or_default() += 1;
    }
    assert_eq!(exchanges(&spans), theirs);
}

fn transport_counts(spans: &[Value]) -> (usize, usize) {
    let n = |t: &str| {
        spans
            .iter()
            .filter(|s| attr(s, "network.transport") == t)
            .count()
    };
    (n("udp"), n("tcp"))
}
