//! W3C trace context and B3: a request that carries `traceparent` (HTTP/1.1
//! and HTTP/2) or B3 headers (single and multi) yields a span in the
//! caller's trace, with the caller's span as parent and its `tracestate`;
//! without them, nothing changes. The capture is written by the test
//! (etherparse), over the real decoders.

use std::net::Ipv4Addr;

use crate::synth::{Conn, Pcap};
use crate::{attr, replay_spans};
use wasmtap_plugin_http2::frame;

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

fn http1(c: &mut Conn, p: &mut Pcap, ts: u64, path: &str, headers: &str) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: svc\r\n{headers}\r\n");
    c.send(p, ts, true, req.as_bytes());
    c.send(
        p,
        ts + 5 * MS,
        false,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    );
}

/// A literal header field without indexing, new name.
fn lit(name: &str, value: &str) -> Vec<u8> {
    let mut v = vec![0x00, name.len() as u8];
    v.extend(name.as_bytes());
    v.push(value.len() as u8);
    v.extend(value.as_bytes());
    v
}

#[test]
fn requests_with_trace_context_join_the_callers_trace() {
    let mut p = Pcap::new();
    let server = (Ipv4Addr::new(10, 0, 0, 1), 8080);
    let mut c = Conn::open(&mut p, T0, (Ipv4Addr::new(10, 0, 0, 2), 40000), server);
    http1(
        &mut c,
        &mut p,
        T0 + MS,
        "/w3c",
        "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\ntracestate: congo=t61rcWkgMzE\r\n",
    );
    http1(
        &mut c,
        &mut p,
        T0 + 20 * MS,
        "/b3",
        "b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1\r\n",
    );
    http1(
        &mut c,
        &mut p,
        T0 + 40 * MS,
        "/b3multi",
        "X-B3-TraceId: 463ac35c9f6413ad\r\nX-B3-SpanId: a2fb4a1d1a96d312\r\nX-B3-Sampled: 1\r\n",
    );
    http1(&mut c, &mut p, T0 + 60 * MS, "/plain", "");
    http1(
        &mut c,
        &mut p,
        T0 + 80 * MS,
        "/bad",
        "traceparent: nonsense\r\n",
    );
    http1(
        &mut c,
        &mut p,
        T0 + 90 * MS,
        "/unsampled",
        "traceparent: 00-11111111111111111111111111111111-2222222222222222-00\r\n",
    );
    c.close(&mut p, T0 + 100 * MS);
    // HTTP/2 with prior knowledge.
    let mut h2 = Conn::open(
        &mut p,
        T0,
        (Ipv4Addr::new(10, 0, 0, 3), 40001),
        (Ipv4Addr::new(10, 0, 0, 1), 50051),
    );
    let mut c2 = wasmtap_plugin_http2::PREFACE.to_vec();
    c2.extend(frame(4, 0, 0, &[]));
    let mut block = vec![0x82, 0x86, 0x84]; // GET http /
    block.extend(lit(
        "traceparent",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    ));
    c2.extend(frame(1, 0x5, 1, &block));
    h2.send(&mut p, T0 + MS, true, &c2);
    let mut s2 = frame(4, 0, 0, &[]);
    s2.extend(frame(1, 0x5, 1, &[0x88]));
    h2.send(&mut p, T0 + 3 * MS, false, &s2);
    h2.close(&mut p, T0 + 10 * MS);
    let file =
        std::env::temp_dir().join(format!("wasmtap-tracecontext-{}.pcap", std::process::id()));
    p.write(&file);

    let spans = replay_spans(&file, &[]);
    let find = |path: &str| {
        spans
            .iter()
            .find(|s| attr(s, "url.path") == path)
            .unwrap_or_else(|| panic!("no span for {path}: {spans:#?}"))
    };
    let ids = |path: &str| {
        let s = find(path);
        (
            s["trace_id"].as_str().unwrap().to_string(),
            s["parent_span_id"].as_str().unwrap_or("").to_string(),
            s["trace_state"].as_str().unwrap_or("").to_string(),
        )
    };
    assert_eq!(
        ids("/w3c"),
        (
            "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            "00f067aa0ba902b7".into(),
            "congo=t61rcWkgMzE".into()
        )
    );
    assert_eq!(
        ids("/b3"),
        (
            "80f198ee56343ba864fe8b2a57d3eff7".into(),
            "e457b5a2e4d86bd1".into(),
            String::new()
        )
    );
    assert_eq!(
        ids("/b3multi"),
        (
            "0000000000000000463ac35c9f6413ad".into(),
            "a2fb4a1d1a96d312".into(),
            String::new()
        )
    );
    assert_eq!(ids("/").0, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(ids("/").1, "b7ad6b7169203331");
    for path in ["/plain", "/bad"] {
        let (trace, parent, _) = ids(path);
        assert_eq!(parent, "", "{path}");
        assert_eq!(trace.len(), 32);
    }
    // The context is consumed: it is not left as an attribute.
    for s in &spans {
        assert_eq!(attr(s, "wasmtap.trace.parent"), "");
    }
    assert_eq!(ids("/unsampled").0, "11111111111111111111111111111111");
    // With `respect_sampled`, the caller's "not sampled" keeps that span out
    // of the export (and only that one); its metrics still count.
    let cfg =
        std::env::temp_dir().join(format!("wasmtap-tracecontext-{}.toml", std::process::id()));
    std::fs::write(&cfg, "[telemetry]\nrespect_sampled = true\n").unwrap();
    let kept = replay_spans(&file, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(kept.len(), spans.len() - 1);
    assert!(kept.iter().all(|s| attr(s, "url.path") != "/unsampled"));
    let _ = std::fs::remove_file(&cfg);
    let _ = std::fs::remove_file(&file);
}
