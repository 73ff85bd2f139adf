//! Flow-table pressure: a SYN flood and a port scan (flows that never carry
//! a byte) mixed into real HTTP traffic, against a small flow table. The
//! flood evicts itself (counted), the HTTP exchanges come out exactly as
//! without it, and memory stays bounded.
//!
//! The README's figure: `cargo build --release -p wasmtap &&
//! WASMTAP_FLOOD_BIN=target/release/wasmtap WASMTAP_FLOOD_FLOWS=1000000
//! WASMTAP_FLOOD_MAX_FLOWS=262144 cargo test -p wasmtap --test e2e a_syn_flood
//! -- --nocapture` (the suite: the debug build, 200,000 SYNs, 4,096 flows).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{attr, bin, replay_spans, root};

/// The records of a little-endian, microsecond pcap: (ts µs, frame).
fn records(pcap: &[u8]) -> Vec<(u64, &[u8])> {
    assert_eq!(&pcap[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
    let mut out = Vec::new();
    let mut pos = 24;
    while pos + 16 <= pcap.len() {
        let u = |o: usize| u32::from_le_bytes(pcap[pos + o..pos + o + 4].try_into().unwrap());
        let ts = u64::from(u(0)) * 1_000_000 + u64::from(u(4));
        let len = u(8) as usize;
        out.push((ts, &pcap[pos + 16..pos + 16 + len]));
        pos += 16 + len;
    }
    out
}

/// A SYN on Ethernet: the scan's (one source, port after port) or the
/// flood's (forged sources, one port).
fn syn(n: u32) -> Vec<u8> {
    let (src, sport, dport) = if n.is_multiple_of(2) {
        ([198, 51, 100, 7], 40_000, (n / 2 % 65_000) as u16 + 1)
    } else {
        let m = n / 2;
        (
            [10, (m >> 16) as u8, (m >> 8) as u8, m as u8],
            1024 + (m % 60_000) as u16,
            80,
        )
    };
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, [192, 0, 2, 80], 64)
        .tcp(sport, dport, n, 1024)
        .syn();
    let mut v = Vec::with_capacity(b.size(0));
    b.write(&mut v, &[]).unwrap();
    v
}

/// Writes `http` with `flood` SYNs spread between its packets.
fn mix(http: &[u8], flood: u32, out: &std::path::Path) {
    let recs = records(http);
    let mut f = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    f.write_all(&http[..24]).unwrap();
    let mut rec = |ts: u64, frame: &[u8]| {
        f.write_all(&((ts / 1_000_000) as u32).to_le_bytes())
            .unwrap();
        f.write_all(&((ts % 1_000_000) as u32).to_le_bytes())
            .unwrap();
        f.write_all(&(frame.len() as u32).to_le_bytes()).unwrap();
        f.write_all(&(frame.len() as u32).to_le_bytes()).unwrap();
        f.write_all(frame).unwrap();
    };
    let per = flood / recs.len() as u32 + 1;
    let mut n = 0;
    for (ts, frame) in &recs {
        for _ in 0..per {
            if n < flood {
                rec(*ts, &syn(n));
                n += 1;
            }
        }
        rec(*ts, frame);
    }
}

fn summary(spans: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in spans
        .iter()
        .filter(|s| attr(s, "network.protocol.name") == "http")
    {
        let key = format!(
            "{} {} {}",
            s["name"].as_str().unwrap_or(""),
            attr(s, "http.response.status_code"),
            attr(s, "client.port")
        );
        *m.entry(key).or_default() += 1;
    }
    m
}

#[test]
fn a_syn_flood_and_a_port_scan_do_not_push_out_the_traffic_being_decoded() {
    let http_path = root().join("tests/pcaps/http/zeek__http-methods.pcap");
    let http = std::fs::read(&http_path).unwrap();
    let mixed = std::env::temp_dir().join(format!("wasmtap-flood-{}.pcap", std::process::id()));
    let env = |k: &str, d: u32| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let flood = env("WASMTAP_FLOOD_FLOWS", 200_000);
    let max_flows = env("WASMTAP_FLOOD_MAX_FLOWS", 4096);
    let agent = std::env::var("WASMTAP_FLOOD_BIN").unwrap_or_else(|_| bin().to_string());
    mix(&http, flood, &mixed);
    let cfg = std::env::temp_dir().join(format!("wasmtap-flood-{}.toml", std::process::id()));
    std::fs::write(&cfg, format!("[flows]\nmax_flows = {max_flows}\n")).unwrap();

    let want = summary(&replay_spans(&http_path, &[]));
    assert!(want.values().sum::<usize>() >= 49);

    // The flooded replay, its peak memory sampled from /proc.
    let started = std::time::Instant::now();
    let child = Command::new(&agent)
        .args([
            "replay",
            mixed.to_str().unwrap(),
            "--format",
            "jsonl",
            "--stats",
        ])
        .args(["--config", cfg.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let sampler = std::thread::spawn(move || {
        let mut peak_kib = 0u64;
        while let Ok(s) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        peak_kib
    });
    let out = child.wait_with_output().unwrap();
    let secs = started.elapsed().as_secs_f64();
    let peak_kib = sampler.join().unwrap();
    std::fs::remove_file(&mixed).ok();
    std::fs::remove_file(&cfg).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let spans: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Every HTTP exchange, exactly as without the flood.
    assert_eq!(summary(&spans), want);
    // The flood was evicted, and only the flood.
    let counter = |name: &str| -> u64 {
        stderr
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{stderr}"))
    };
    let evicted = counter("wasmtap.agent.flows.evicted");
    let bare = counter("wasmtap.agent.flows.evicted_bare");
    // (The capture spans minutes: flood flows older than the idle timeout
    // leave by expiry, the others by eviction.)
    assert!(evicted > 0, "{evicted}");
    assert_eq!(bare, evicted);
    // Bounded by the table, not by the flood (the binary, wasmtime and the
    // decoders are most of it: 130 MiB in a debug build with 4,096 flows).
    let bound_kib = 400 * 1024 + u64::from(max_flows);
    assert!(
        peak_kib > 0 && peak_kib < bound_kib,
        "peak RSS {peak_kib} KiB"
    );
    eprintln!(
        "flood: {flood} SYN flows into a table of {max_flows}: {evicted} evicted, peak RSS {} MiB, {secs:.1} s",
        peak_kib / 1024
    );
}
