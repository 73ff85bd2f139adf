//! A tiny reader for classic pcap files (tests only).

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

/// One captured frame.
pub struct Frame {
    pub ts_ns: u64,
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// A classic pcap file, read whole.
pub struct Pcap {
    pub linktype: u32,
    pub frames: Vec<Frame>,
}

/// Path of a capture under the repository's tests/pcaps.
pub fn pcap_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/pcaps")
        .join(rel)
}

/// Reads `tests/pcaps/<rel>`; panics on anything but a classic pcap.
pub fn read(rel: &str) -> Pcap {
    let path = pcap_path(rel);
    let b = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(b.len() >= 24, "short pcap header");
    let magic = [b[0], b[1], b[2], b[3]];
    let (le, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        _ => panic!("{}: not a classic pcap", path.display()),
    };
    let u32_at = |at: usize| {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let linktype = u32_at(20) & 0x0fff_ffff;
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let (sec, frac, caplen, orig_len) = (
            u32_at(at),
            u32_at(at + 4),
            u32_at(at + 8) as usize,
            u32_at(at + 12),
        );
        at += 16;
        assert!(at + caplen <= b.len(), "record past end of file");
        let ts_ns = u64::from(sec) * 1_000_000_000 + u64::from(frac) * if nanos { 1 } else { 1000 };
        frames.push(Frame {
            ts_ns,
            orig_len,
            data: b[at..at + caplen].to_vec(),
        });
        at += caplen;
    }
    Pcap { linktype, frames }
}
