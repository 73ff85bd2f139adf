//! Golden tests on every HTTP capture in tests/pcaps/http/.
//!
//! Two layers: (1) the exchanges and status codes must equal the peer tool's
//! expectation from the shared MANIFEST (Zeek, Suricata, DeepFlow; where the
//! MANIFEST says tshark is wrong, the peer wins); (2) a full per-span summary is
//! compared with `tests/golden/http/<file>.txt` (regenerate with `UPDATE_EXPECT=1`).

use std::collections::BTreeMap;

use crate::{attr, replay_spans, root};

/// (file, expected exchanges as "METHOD STATUS" with counts; "-" = no response).
const PEER: &[(&str, &[(&str, usize)])] = &[
    // Zeek http-pipelining baseline: 5 rows, all GET 200.
    ("zeek__http-pipelined-requests.pcap", &[("GET 200", 5)]),
    ("zeek__http-get-gzip.pcap", &[("GET 200", 1)]),
    // Zeek 100-continue baseline: one row, POST with the final status 200.
    ("zeek__http-100-continue.pcap", &[("POST 200", 1)]),
    ("zeek__http-get_nosyn.pcap", &[("GET 200", 1)]),
    ("zeek__http-vlan-0.pcap", &[("GET 200", 1)]),
    ("zeek__http-http-post-large.pcap", &[("POST 200", 2)]),
    ("zeek__tcp-handshake-reorder.pcap", &[("GET 200", 1)]),
    // Zeek core.nflog baseline: GET / 200.
    ("zeek__nflog-http.pcap", &[("GET 200", 1)]),
    // Headers only (payload cut by snaplen): nothing to decode.
    ("zeek__tcp-retransmit-fast009.pcap", &[]),
    ("zeek__tcp-missing-syn.pcap", &[("GET 200", 1)]),
    // Zeek dvwa baseline: 3 GETs.
    ("zeek__http-cooper-grill-dvwa.pcapng", &[("GET 200", 3)]),
    // Suricata http-gap-simple: /1, /2 and /3 each with status 200.
    ("suricata__http-gap-simple.pcap", &[("GET 200", 3)]),
    // Suricata http-pipeline-files-with-gap: 3 files, so 3 answered GETs.
    (
        "suricata__http-pipeline-files-with-gap.pcap",
        &[("GET 200", 3)],
    ),
    // A request whose response was never captured becomes an unanswered span.
    ("suricata__http-chunked.pcap", &[("HEAD -", 1)]),
    ("suricata__decode-sll2-01.pcap", &[("GET -", 1)]),
    // Starts with a 200 response (unmatched, counted), then GET /favicon.ico answered 404.
    (
        "suricata__tcp-stream-after-swap-http-start-from-response.pcap",
        &[("GET 404", 1)],
    ),
    // DeepFlow httpv1.result: POST, 200.
    ("deepflow__httpv1.pcap", &[("POST 200", 1)]),
    // DeepFlow istio-tcp-frag.result: GET /productpage and a 200 whose header is cut short.
    ("deepflow__istio-tcp-frag.pcap", &[("GET 200", 1)]),
];

fn exchanges(file: &str) -> (Vec<serde_json::Value>, BTreeMap<String, usize>) {
    let spans = replay_spans(&root().join("tests/pcaps/http").join(file), &[]);
    let mut counts = BTreeMap::new();
    for s in &spans {
        let method = attr(s, "http.request.method_original");
        let method = if method.is_empty() {
            attr(s, "http.request.method")
        } else {
            method
        };
        let status = attr(s, "http.response.status_code");
        let status = if status.is_empty() {
            "-".to_string()
        } else {
            status
        };
        *counts.entry(format!("{method} {status}")).or_default() += 1;
    }
    (spans, counts)
}

#[test]
fn http_captures_match_peer_expectations() {
    let mut failures = Vec::new();
    for (file, want) in PEER {
        let (_, got) = exchanges(file);
        let want: BTreeMap<String, usize> = want.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        if got != want {
            failures.push(format!("{file}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn zeek_http_methods_has_49_exchanges() {
    // Zeek's http-methods baseline logs 49 rows, one per connection, most of
    // them malformed requests answered 400/405/411 by the server.
    let (spans, counts) = exchanges("zeek__http-methods.pcap");
    assert_eq!(spans.len(), 49, "{counts:?}");
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for s in &spans {
        *by_status
            .entry(attr(s, "http.response.status_code"))
            .or_default() += 1;
    }
    // tshark agrees on the responses: 400 x30, 405 x8, 200 x5, 411 x5, 403 x1.
    let want: BTreeMap<String, usize> =
        [("400", 30), ("405", 8), ("200", 5), ("411", 5), ("403", 1)]
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect();
    assert_eq!(by_status, want);
}

#[test]
fn ipv6_atomic_fragments_give_four_exchanges() {
    // Zeek core.ipv6-atomic-frag: 4 HTTP connections; tshark 4.0 sees none.
    let (spans, counts) = exchanges("zeek__ipv6-http-atomic-frag.pcap");
    assert_eq!(spans.len(), 4, "{counts:?}");
    for s in &spans {
        // HTTP/0.9: `GET /bad.html` answered by raw HTML until close.
        assert_eq!(attr(s, "client.address"), "2001:db8:1::2");
        assert_eq!(attr(s, "network.protocol.version"), "0.9");
        assert_eq!(attr(s, "url.path"), "/bad.html");
        assert_eq!(attr(s, "http.response.body.size"), "88");
        assert_eq!(attr(s, "http.response.status_code"), "");
    }
}

/// One line per span: what a reviewer needs to see a regression.
fn summary_line(s: &serde_json::Value) -> String {
    format!(
        "{} {} {} {} {} status={} dur_ns={} req={} resp={}",
        s["start_unix_nano"],
        s["resource"]["service.name"].as_str().unwrap_or(""),
        s["name"].as_str().unwrap_or(""),
        attr(s, "url.path"),
        attr(s, "http.response.status_code"),
        s["status"]["code"].as_str().unwrap_or(""),
        s["end_unix_nano"].as_u64().unwrap_or(0) - s["start_unix_nano"].as_u64().unwrap_or(0),
        attr(s, "http.request.body.size"),
        attr(s, "http.response.body.size"),
    )
}

#[test]
fn http_golden_summaries() {
    crate::check_golden("http", |spans| {
        spans.iter().map(|s| summary_line(s) + "\n").collect()
    });
}

#[test]
fn replay_is_deterministic() {
    let f = root().join("tests/pcaps/http/zeek__http-pipelined-requests.pcap");
    assert_eq!(replay_spans(&f, &[]), replay_spans(&f, &[]));
}

#[test]
fn secrets_are_never_exported() {
    // dvwa carries a Cookie header on every request.
    let f = root().join("tests/pcaps/http/zeek__http-cooper-grill-dvwa.pcapng");
    let out = crate::run(&["replay", f.to_str().unwrap(), "--format", "jsonl"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.to_ascii_lowercase().contains("phpsessid"), "{text}");
    assert!(!text.to_ascii_lowercase().contains("cookie"), "{text}");
    // Query values are masked, keys kept.
    assert!(text.contains("\"url.query\":\"id=?&Submit=?\""), "{text}");
}
