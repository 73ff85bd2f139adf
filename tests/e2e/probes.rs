//! Look-alikes: every decoder's probe must decline every other protocol's
//! traffic. Each capture in `tests/pcaps/<protocol>/` is cut into flows
//! (tshark), the opening bytes of each direction (up to the host's 1 KiB
//! probe sample; each datagram alone over UDP) are offered to every decoder
//! that does not own that protocol, in both directions, natively (the same
//! code as the components). An acceptance (a confidence at or above the
//! host's threshold, 50) names the decoder, the capture and the bytes.

use std::collections::BTreeMap;
use std::process::Command;

use wasmtap_sdk::{Decoder, Direction, Transport};

use crate::root;

type Probe = fn(Transport, Direction, &[u8]) -> u8;

const THRESHOLD: u8 = 50;

fn decoders() -> Vec<(&'static str, Probe)> {
    vec![
        ("amqp", wasmtap_plugin_amqp::Amqp::probe),
        ("dns", wasmtap_plugin_dns::Dns::probe),
        ("http1", wasmtap_plugin_http1::Http1::probe),
        ("http2", wasmtap_plugin_http2::Http2::probe),
        ("iso8583", wasmtap_plugin_iso8583::Iso8583::probe),
        ("kafka", wasmtap_plugin_kafka::Kafka::probe),
        ("memcached", wasmtap_plugin_memcached::Memcached::probe),
        ("mongodb", wasmtap_plugin_mongodb::MongoDb::probe),
        ("mysql", wasmtap_plugin_mysql::Mysql::probe),
        ("pgsql", wasmtap_plugin_pgsql::Pgsql::probe),
        ("redis", wasmtap_plugin_redis::Redis::probe),
        ("tls", wasmtap_plugin_tls::Tls::probe),
    ]
}

/// The decoder that owns a capture directory's protocol (none: nobody may accept it).
fn owner(dir: &str) -> Option<&'static str> {
    Some(match dir {
        "http" => "http1",
        "amqp" => "amqp",
        "http2" | "grpc" => "http2",
        "tls" => "tls",
        "dns" => "dns",
        "iso8583" => "iso8583",
        "kafka" => "kafka",
        "memcached" => "memcached",
        "mongodb" => "mongodb",
        "mysql" => "mysql",
        "pgsql" => "pgsql",
        "redis" => "redis",
        _ => return None,
    })
}

/// Per flow direction: transport and the samples a probe would see.
fn samples(pcap: &std::path::Path) -> BTreeMap<String, (Transport, Vec<Vec<u8>>)> {
    let out = Command::new("tshark")
        .args([
            "-r",
            pcap.to_str().unwrap(),
            "-T",
            "fields",
            "-E",
            "separator=|",
        ])
        .args([
            "-e",
            "tcp.stream",
            "-e",
            "udp.stream",
            "-e",
            "ip.src",
            "-e",
            "ipv6.src",
        ])
        .args([
            "-e",
            "tcp.srcport",
            "-e",
            "udp.srcport",
            "-e",
            "tcp.payload",
            "-e",
            "udp.payload",
        ])
        .output()
        .expect("tshark runs");
    assert!(out.status.success(), "tshark on {}", pcap.display());
    let mut flows: BTreeMap<String, (Transport, Vec<Vec<u8>>)> = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split('|').collect();
        if f.len() < 8 {
            continue;
        }
        let (tcp, payload) = if !f[6].is_empty() {
            (true, f[6])
        } else if !f[7].is_empty() {
            (false, f[7])
        } else {
            continue;
        };
        // Tunnelled frames carry several layers: the innermost is the last.
        let last = |s: &str| s.rsplit(',').next().unwrap_or("").to_string();
        let payload = last(payload);
        let bytes: Vec<u8> = (0..payload.len() / 2)
            .filter_map(|i| u8::from_str_radix(&payload[2 * i..2 * i + 2], 16).ok())
            .collect();
        let key = format!(
            "{}{} {}{} {}{}",
            if tcp { "tcp" } else { "udp" },
            last(if tcp { f[0] } else { f[1] }),
            last(f[2]),
            last(f[3]),
            last(f[4]),
            last(f[5])
        );
        let entry = flows.entry(key).or_insert_with(|| {
            (
                if tcp { Transport::Tcp } else { Transport::Udp },
                Vec::new(),
            )
        });
        if tcp {
            // One growing sample: the stream's first KiB.
            if entry.1.is_empty() {
                entry.1.push(Vec::new());
            }
            let s = &mut entry.1[0];
            let room = 1024usize.saturating_sub(s.len());
            s.extend_from_slice(&bytes[..bytes.len().min(room)]);
        } else if entry.1.len() < 4 {
            entry.1.push(bytes[..bytes.len().min(1024)].to_vec());
        }
    }
    flows
}

/// Whether a stream starts with an HTTP/1.x request or status line.
fn http1_start(b: &[u8]) -> bool {
    let line = b.split(|&c| c == b'\n').next().unwrap_or_default();
    let request = (line.ends_with(b" HTTP/1.1\r") || line.ends_with(b" HTTP/1.0\r"))
        && line.first().is_some_and(u8::is_ascii_uppercase)
        && !line.starts_with(b"PRI ");
    line.starts_with(b"HTTP/1.") || request
}

#[test]
fn no_probe_accepts_another_protocols_traffic() {
    let decoders = decoders();
    let mut dirs: Vec<_> = std::fs::read_dir(root().join("tests/pcaps"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut offered = 0usize;
    let mut accepted = Vec::new();
    for dir in dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if name == "mixed" {
            continue; // several protocols in one file
        }
        let own = owner(&name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
            .collect();
        files.sort();
        for file in files {
            for (flow, (transport, samples)) in samples(&file) {
                for sample in samples.iter().filter(|s| !s.is_empty()) {
                    for (decoder, probe) in &decoders {
                        // The HTTP/2 captures hold HTTP/1.1 connections too, and an
                        // h2c upgrade opens as HTTP/1.1: those are HTTP/1's (never
                        // the HTTP/2 preface, `PRI * HTTP/2.0`).
                        let h1 = name == "http2" && *decoder == "http1" && http1_start(sample);
                        if Some(*decoder) == own || h1 {
                            continue;
                        }
                        for dir in [Direction::ToServer, Direction::ToClient] {
                            offered += 1;
                            let c = probe(transport, dir, sample);
                            if c >= THRESHOLD {
                                let head: String =
                                    sample.iter().take(24).map(|b| format!("{b:02x}")).collect();
                                accepted.push(format!(
                                    "{decoder} took {}/{} {flow} {dir:?} at {c}: {head}",
                                    name,
                                    file.file_name().unwrap().to_string_lossy()
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(offered > 1000, "only {offered} probes offered");
    assert!(
        accepted.is_empty(),
        "{} look-alikes:\n{}",
        accepted.len(),
        accepted.join("\n")
    );
}
