//! Synthetic captures for tests whose outcome must be known exactly: TCP
//! connections with a handshake, request and response segments and a close,
//! written as a classic pcap (Ethernet, microsecond timestamps). Packets are
//! built with etherparse, so checksums and lengths are real.

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;

/// A pcap file being written in memory.
pub struct Pcap {
    buf: Vec<u8>,
}

impl Pcap {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        buf.extend_from_slice(&2u16.to_le_bytes());
        buf.extend_from_slice(&4u16.to_le_bytes());
        buf.extend_from_slice(&0i32.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        buf.extend_from_slice(&262_144u32.to_le_bytes());
        buf.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        Self { buf }
    }

    fn frame(&mut self, ts_ns: u64, data: &[u8]) {
        let us = ts_ns / 1000;
        self.buf
            .extend_from_slice(&((us / 1_000_000) as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&((us % 1_000_000) as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.buf
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(data);
    }

    pub fn write(&self, path: &std::path::Path) {
        std::fs::write(path, &self.buf).unwrap();
    }
}

/// One TCP connection between `client` and `server`.
pub struct Conn {
    client: (Ipv4Addr, u16),
    server: (Ipv4Addr, u16),
    cseq: u32,
    sseq: u32,
}

impl Conn {
    /// Writes the handshake (SYN, SYN-ACK, ACK, 100 µs apart) at `ts_ns`.
    pub fn open(
        p: &mut Pcap,
        ts_ns: u64,
        client: (Ipv4Addr, u16),
        server: (Ipv4Addr, u16),
    ) -> Self {
        let mut c = Self {
            client,
            server,
            cseq: 1000,
            sseq: 5000,
        };
        c.packet(p, ts_ns, true, |b, _, _| b.syn(), &[]);
        c.cseq += 1;
        c.packet(p, ts_ns + 100_000, false, |b, _, ack| b.syn().ack(ack), &[]);
        c.sseq += 1;
        c.packet(p, ts_ns + 200_000, true, |b, _, ack| b.ack(ack), &[]);
        c
    }

    fn packet(
        &mut self,
        p: &mut Pcap,
        ts_ns: u64,
        to_server: bool,
        flags: impl FnOnce(
            etherparse::PacketBuilderStep<etherparse::TcpHeader>,
            u32,
            u32,
        ) -> etherparse::PacketBuilderStep<etherparse::TcpHeader>,
        payload: &[u8],
    ) {
        let (src, dst, seq, ack) = if to_server {
            (self.client, self.server, self.cseq, self.sseq)
        } else {
            (self.server, self.client, self.sseq, self.cseq)
        };
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src.0.octets(), dst.0.octets(), 64)
            .tcp(src.1, dst.1, seq, 65_535);
        let b = flags(b, seq, ack);
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, payload).unwrap();
        p.frame(ts_ns, &out);
    }

    /// Sends `data` in one segment (with ACK) at `ts_ns`.
    pub fn send(&mut self, p: &mut Pcap, ts_ns: u64, to_server: bool, data: &[u8]) {
        self.packet(p, ts_ns, to_server, |b, _, ack| b.ack(ack).psh(), data);
        if to_server {
            self.cseq = self.cseq.wrapping_add(data.len() as u32);
        } else {
            self.sseq = self.sseq.wrapping_add(data.len() as u32);
        }
    }

    /// Closes with FIN from both sides and the last ACK.
    pub fn close(mut self, p: &mut Pcap, ts_ns: u64) {
        self.packet(p, ts_ns, true, |b, _, ack| b.fin().ack(ack), &[]);
        self.cseq += 1;
        self.packet(p, ts_ns + 100_000, false, |b, _, ack| b.fin().ack(ack), &[]);
        self.sseq += 1;
        self.packet(p, ts_ns + 200_000, true, |b, _, ack| b.ack(ack), &[]);
    }

    /// One HTTP/1.1 exchange: `method path` at `ts_ns`, answered with
    /// `status` after `dur_ns`.
    pub fn http(
        &mut self,
        p: &mut Pcap,
        ts_ns: u64,
        method: &str,
        path: &str,
        status: u16,
        dur_ns: u64,
    ) {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: svc\r\nUser-Agent: synth\r\n\r\n");
        self.send(p, ts_ns, true, req.as_bytes());
        let body = "ok\n";
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(p, ts_ns + dur_ns, false, resp.as_bytes());
    }
}
