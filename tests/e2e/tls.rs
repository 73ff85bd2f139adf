//! TLS handshakes: the shared captures against Zeek's and Suricata's
//! baselines in the MANIFEST (versions, ciphers, SNI, HelloRetryRequest,
//! client certificates, a ClientHello fragmented over many segments), and
//! real handshakes between openssl's s_server and s_client
//! (`scripts/capture-tls.sh`: TLS 1.2 and 1.3, with and without SNI and
//! ALPN h2, clients that do not trust the CA): SNI, version, ALPN and
//! failures exactly as the clients logged them; JA4 the same for the same
//! client. The capture made once is kept in `tests/pcaps/tls/openssl.pcap`.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::{attr, replay_spans, root};

fn one(file: &str) -> Value {
    let spans = replay_spans(&root().join("tests/pcaps/tls").join(file), &[]);
    assert_eq!(spans.len(), 1, "{file}: {spans:#?}");
    spans.into_iter().next().unwrap()
}

#[test]
fn shared_captures_match_the_baselines() {
    // Zeek tls-1.2: TLSv12, TLS_RSA_WITH_RC4_128_MD5, established.
    let s = one("zeek__tls-tls1.2.pcap");
    assert_eq!(attr(&s, "tls.protocol.version"), "1.2");
    assert_eq!(attr(&s, "tls.cipher"), "TLS_RSA_WITH_RC4_128_MD5");
    assert_eq!(attr(&s, "tls.established"), "true");
    // Zeek tls13_encrypted_handshake: TLSv13, TLS_AES_256_GCM_SHA384, established.
    let s = one("zeek__tls-tls13_wolfssl.pcap");
    assert_eq!(attr(&s, "tls.protocol.version"), "1.3");
    assert_eq!(attr(&s, "tls.cipher"), "TLS_AES_256_GCM_SHA384");
    assert_eq!(attr(&s, "tls.established"), "true");
    // Zeek tls13 (hrr): the client retries after a HelloRetryRequest; one handshake.
    let s = one("zeek__tls-hrr.pcap");
    assert_eq!(attr(&s, "wasmtap.tls.hello_retry"), "true");
    assert_eq!(attr(&s, "tls.protocol.version"), "1.3");
    // Zeek client-certificate: SNI certauth.idrix.fr, the client sends a certificate.
    let s = one("zeek__tls-client-certificate.pcap");
    assert_eq!(attr(&s, "server.address"), "certauth.idrix.fr");
    assert_eq!(attr(&s, "wasmtap.tls.client_certificate"), "sent");
    // Suricata tls-client-hello-frag: SNI www.google.com from a ClientHello over many segments.
    let s = one("suricata__tls-client-hello-frag-01-dump_mtu300.pcap");
    assert_eq!(attr(&s, "server.address"), "www.google.com");
    assert_eq!(attr(&s, "tls.protocol.version"), "1.2");
}

fn check(pcap: &Path, log: &Path) {
    let clients: Vec<Value> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut spans = replay_spans(pcap, &[]);
    spans.sort_by_key(|s| s["start_unix_nano"].as_u64().unwrap());
    assert_eq!(spans.len(), clients.len(), "{}", pcap.display());
    for (s, c) in spans.iter().zip(&clients) {
        let ctx = format!("{c} vs {s}");
        assert_eq!(
            attr(s, "server.address"),
            c["sni"].as_str().unwrap(),
            "{ctx}"
        );
        assert_eq!(
            attr(s, "tls.protocol.version"),
            c["version"].as_str().unwrap(),
            "{ctx}"
        );
        let ok = c["ok"].as_bool().unwrap();
        assert_eq!(attr(s, "tls.established"), ok.to_string(), "{ctx}");
        assert_eq!(s["status"]["code"] == "error", !ok, "{ctx}");
        if !ok {
            assert_eq!(attr(s, "error.type"), "unknown_ca", "{ctx}");
            assert_eq!(attr(s, "wasmtap.tls.alert_by"), "client", "{ctx}");
        }
        let alpn = c["alpn"].as_str().unwrap();
        assert_eq!(attr(s, "wasmtap.tls.alpn_offered"), alpn, "{ctx}");
        // The chosen protocol is in the clear in 1.2 only (1.3 encrypts it).
        if ok && c["version"] == "1.2" {
            assert_eq!(attr(s, "tls.next_protocol"), alpn, "{ctx}");
        }
    }
    // The same client, twice: the same JA4; a different client: another.
    let ja4: Vec<String> = spans.iter().map(|s| attr(s, "tls.client.ja4")).collect();
    assert_eq!(ja4[3], ja4[4]);
    assert_ne!(ja4[2], ja4[3], "ALPN changes the fingerprint");
    assert!(ja4[3].starts_with("t13d"), "{}", ja4[3]);
    assert!(ja4[0].starts_with("t12d"), "{}", ja4[0]);
}

#[test]
fn bundled_openssl_capture_matches_the_clients() {
    let pcap = root().join("tests/pcaps/tls/openssl.pcap");
    check(&pcap, &root().join("tests/golden/tls/openssl.log.jsonl"));
    // Metrics per server: handshakes by version and cipher, failures by alert.
    let metrics = std::env::temp_dir().join(format!("wasmtap-tls-m-{}.jsonl", std::process::id()));
    let out = crate::run(&[
        "replay",
        pcap.to_str().unwrap(),
        "--format",
        "none",
        "--metrics-out",
        metrics.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    for line in std::fs::read_to_string(&metrics).unwrap().lines() {
        let m: Value = serde_json::from_str(line).unwrap();
        if m["name"] == "wasmtap.tls.handshake.duration" {
            let a = &m["attributes"];
            let k = format!(
                "{} {} {}",
                a["tls.protocol.version"].as_str().unwrap_or(""),
                a["wasmtap.status_class"].as_str().unwrap_or(""),
                a["error.type"].as_str().unwrap_or("")
            );
            *by.entry(k).or_insert(0) += m["count"].as_u64().unwrap();
        }
    }
    let want: std::collections::BTreeMap<String, u64> = [
        ("1.2 ok ", 2),
        ("1.3 ok ", 3),
        ("1.2 error unknown_ca", 1),
        ("1.3 error unknown_ca", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(by, want);
    let _ = std::fs::remove_file(&metrics);
}

#[test]
fn real_openssl_handshakes_match_the_clients() {
    let dir = std::env::temp_dir().join(format!("wasmtap-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = Command::new(root().join("scripts/capture-tls.sh"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "capture-tls.sh: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    check(&dir.join("tls.pcap"), &dir.join("tls.log.jsonl"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// JA3 and JA3S equal tshark's, on every TLS capture (tshark 4.0 computes
/// both; the HelloRetryRequest capture's final ServerHello is one tshark
/// does not decode, its out-of-order segment aside).
#[test]
fn ja3_and_ja3s_equal_tsharks() {
    let dir = root().join("tests/pcaps/tls");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    files.sort();
    for f in files {
        let out = Command::new("tshark")
            .args([
                "-r",
                f.to_str().unwrap(),
                "-Y",
                "tls.handshake.type==1 || tls.handshake.type==2",
            ])
            .args([
                "-T",
                "fields",
                "-e",
                "tls.handshake.ja3",
                "-e",
                "tls.handshake.ja3s",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let (mut ja3, mut ja3s) = (Vec::new(), Vec::new());
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let mut p = line.split('\t');
            let (a, b) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
            if !a.is_empty() {
                ja3.push(a.to_string());
            }
            if !b.is_empty() {
                ja3s.push(b.to_string());
            }
        }
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        for s in replay_spans(&f, &[]) {
            assert!(ja3.contains(&attr(&s, "tls.client.ja3")), "{name}: {s}");
            if !name.contains("hrr") && attr(&s, "tls.established") == "true" {
                assert!(ja3s.contains(&attr(&s, "tls.server.ja3s")), "{name}: {s}");
            }
        }
    }
}
