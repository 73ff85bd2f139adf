//! The worker against a real component: the hostile test decoder
//! (`tests/plugins/hostile`), which decodes HTTP/1 correctly by default and
//! misbehaves as its configuration says. Dispatch by port and by probe,
//! failures and quarantine, deadlines, and hot reload's slot life cycle.

#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use wasmtap_runtime::{
    CloseReason, Direction, Failure, L4, Plugin, PluginHost, PluginSource, Registry, RuntimeConfig,
    SessionEnd, Worker,
};
use wasmtap_telemetry::exchange::{Message, MessageKind};

const REQ: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

/// The hostile decoder's component, built as the e2e suite builds it.
fn hostile() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let target = root.join("target/wasm-plugins");
        let st = std::process::Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["rustc", "--release", "--lib", "--crate-type", "cdylib"])
            .args(["--target", "wasm32-wasip2", "-p", "wasmtap-test-hostile"])
            .arg("--target-dir")
            .arg(&target)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("WASMTAP_TEST_PLUGIN_VERSION")
            .status()
            .unwrap();
        assert!(st.success(), "building the hostile decoder failed");
        std::fs::read(target.join("wasm32-wasip2/release/wasmtap_test_hostile.wasm")).unwrap()
    })
}

fn host() -> PluginHost {
    PluginHost::new(RuntimeConfig::default()).unwrap()
}

fn load(host: &PluginHost, mode: &str) -> Arc<Plugin> {
    load_bytes(host, mode, hostile())
}

fn load_bytes(host: &PluginHost, mode: &str, bytes: &[u8]) -> Arc<Plugin> {
    let cfg = format!("{{\"mode\":\"{mode}\"}}");
    Arc::new(
        host.load("hostile", bytes, PluginSource::Embedded, &cfg)
            .unwrap(),
    )
}

/// The same decoder as another file (a custom section appended): a new
/// version as far as a reload can tell.
fn another_build() -> Vec<u8> {
    let mut b = hostile().to_vec();
    let name = b"wasmtap-test";
    b.extend([0x00, (1 + name.len() + 1) as u8, name.len() as u8]);
    b.extend(name);
    b.push(b'2');
    b
}

/// One request and its response on a new flow to `port`; the messages.
fn exchange(w: &mut Worker, port: u16, ts: u64) -> (Vec<Message>, Option<SessionEnd>) {
    let mut s = w.open(L4::Tcp, port);
    s.set_flow(
        "10.0.0.1:40000".parse().unwrap(),
        format!("10.0.0.2:{port}").parse().unwrap(),
        false,
    );
    let mut out = Vec::new();
    w.data(&mut s, Direction::ToServer, ts, REQ, &mut out);
    w.data(&mut s, Direction::ToClient, ts + 1_000, RESP, &mut out);
    w.close(&mut s, CloseReason::Fin, ts + 2_000, &mut out);
    (out, s.ended().cloned())
}

fn kinds(out: &[Message]) -> Vec<MessageKind> {
    out.iter().map(|m| m.kind).collect()
}

#[test]
fn a_flow_on_the_decoders_port_is_decoded() {
    let host = host();
    let mut w = Worker::new(&host, &[load(&host, "correct")]).unwrap();
    let (out, end) = exchange(&mut w, 5000, 1_000_000);
    assert_eq!(kinds(&out), [MessageKind::Request, MessageKind::Response]);
    assert_eq!(out[0].operation, "GET");
    assert_eq!(end, Some(SessionEnd::Closed));
    let st = &w.stats().plugins[0].1;
    assert_eq!(st.sessions, 1);
    assert!(st.calls >= 3 && st.messages == 2, "{st:?}");
}

#[test]
fn a_flow_on_another_port_is_dispatched_by_probe() {
    let host = host();
    let mut w = Worker::new(&host, &[load(&host, "correct")]).unwrap();
    let (out, _) = exchange(&mut w, 8081, 1_000_000);
    assert_eq!(kinds(&out), [MessageKind::Request, MessageKind::Response]);
    // Bytes no probe recognises get no decoder, counted.
    let mut s = w.open(L4::Tcp, 8082);
    let mut junk = Vec::new();
    w.data(
        &mut s,
        Direction::ToServer,
        1,
        &[0u8, 1, 2, 3, 0xff, 0xfe],
        &mut junk,
    );
    w.data(&mut s, Direction::ToClient, 2, &[9u8; 64], &mut junk);
    assert!(junk.is_empty());
    assert!(
        s.ended().is_none() || s.ended() == Some(&SessionEnd::NoDecoder),
        "{:?}",
        s.ended()
    );
}

#[test]
fn repeated_traps_quarantine_the_decoder_and_refused_flows_are_counted() {
    let host = host();
    let mut w = Worker::new(&host, &[load(&host, "trap-always")]).unwrap();
    let mut ended = Vec::new();
    for i in 0..8u64 {
        let (out, end) = exchange(&mut w, 5000, 1_000_000_000 + i * 1_000_000);
        assert!(out.is_empty());
        ended.push(end);
    }
    assert_eq!(ended[0], Some(SessionEnd::Failed(Failure::Trap)));
    assert!(w.is_quarantined("hostile"));
    assert!(ended.contains(&Some(SessionEnd::Quarantined)), "{ended:?}");
    let st = &w.stats().plugins[0].1;
    assert!(
        st.traps >= 5 && st.quarantines == 1 && st.refused_quarantined > 0,
        "{st:?}"
    );
}

#[test]
fn a_call_past_its_deadline_fails_that_session_only() {
    let host = host();
    let mut w = Worker::new(&host, &[load(&host, "loop")]).unwrap();
    let (out, end) = exchange(&mut w, 5000, 1_000_000);
    assert!(out.is_empty());
    assert_eq!(end, Some(SessionEnd::Failed(Failure::Deadline)));
    assert_eq!(w.stats().plugins[0].1.deadline_hits, 1);
    assert!(
        !w.is_quarantined("hostile"),
        "one failure does not quarantine"
    );
}

#[test]
fn a_reload_drains_the_old_slot_while_its_sessions_live() {
    let host = host();
    let registry = Registry::new(vec![load(&host, "correct")]);
    let mut w = Worker::following(&host, registry.clone()).unwrap();
    // A session opened on version 1, mid-request when the reload comes.
    let mut old = w.open(L4::Tcp, 5000);
    let mut out = Vec::new();
    w.data(&mut old, Direction::ToServer, 1, &REQ[..10], &mut out);
    registry.publish(vec![load_bytes(&host, "correct", &another_build())]);
    w.refresh();
    let states: Vec<&str> = w.loaded().iter().map(|l| l.3).collect();
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(states.contains(&"draining"), "{states:?}");
    // The old session finishes its request on its own slot.
    w.data(&mut old, Direction::ToServer, 2, &REQ[10..], &mut out);
    w.data(&mut old, Direction::ToClient, 3, RESP, &mut out);
    assert_eq!(kinds(&out), [MessageKind::Request, MessageKind::Response]);
    // A new flow goes to the new slot.
    let (new, _) = exchange(&mut w, 5000, 10);
    assert_eq!(new.len(), 2);
    // Once the old session ends, its slot retires.
    w.close(&mut old, CloseReason::Fin, 4, &mut out);
    let states: Vec<&str> = w.loaded().iter().map(|l| l.3).collect();
    assert!(!states.contains(&"draining"), "{states:?}");
}
