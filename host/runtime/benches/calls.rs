//! Runtime costs, printed (not asserted): instantiation of a decoder, and one
//! `feed` call with a small HTTP request, with and without the CPU deadline.
//!
//! `cargo bench -p wasmtap-runtime` (needs the agent build's component:
//! `cargo build -p wasmtap` first).

// A benchmark times itself.
#![allow(clippy::disallowed_methods)]
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::Instant;

use wasmtap_runtime::{Direction, L4, PluginHost, PluginSource, RuntimeConfig, Worker};

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let wasm = root.join("target/wasm-plugins/wasm32-wasip2/release/wasmtap_plugin_http1.wasm");
    let bytes = std::fs::read(&wasm).expect("build the agent first (cargo build -p wasmtap)");
    for deadline_ms in [0u64, 50] {
        let host = PluginHost::new(RuntimeConfig {
            call_deadline_ms: deadline_ms,
            ..Default::default()
        })
        .expect("engine");
        let t = Instant::now();
        let plugin = Arc::new(
            host.load("http1", &bytes, PluginSource::Embedded, "{}")
                .expect("load"),
        );
        let compile = t.elapsed();
        // Instantiation: a worker with one instance of the decoder.
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            std::hint::black_box(
                Worker::new(&host, std::slice::from_ref(&plugin)).expect("worker"),
            );
        }
        let inst = t.elapsed() / n;
        // One feed call: a 64-byte request on a session, answered each time.
        let mut w = Worker::new(&host, std::slice::from_ref(&plugin)).expect("worker");
        let mut s = w.open(L4::Tcp, 80);
        let req = b"GET /a HTTP/1.1\r\nHost: x\r\nUser-Agent: bench/1.0\r\nAccept: */*\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let mut out = Vec::new();
        let calls = 200_000u32;
        let t = Instant::now();
        for i in 0..calls {
            let (d, b): (Direction, &[u8]) = if i % 2 == 0 {
                (Direction::ToServer, req)
            } else {
                (Direction::ToClient, resp)
            };
            w.data(&mut s, d, u64::from(i), b, &mut out);
            out.clear();
        }
        let per_call = t.elapsed() / calls;
        println!(
            "deadline {:>3} ms: compile {:>7.1} ms, instantiate {:>6.1} µs, feed call (64 B request / 38 B response, message out) {:>5.2} µs",
            deadline_ms,
            compile.as_secs_f64() * 1e3,
            inst.as_secs_f64() * 1e6,
            per_call.as_secs_f64() * 1e6
        );
    }
}
