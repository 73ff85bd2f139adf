//! Mirrored traffic arrives tunnelled: nginx and an ISO 8583 issuer
//! (pyiso8583) behind a tunnel between two
//! network namespaces (`scripts/capture-tunnels.sh`), captured on the
//! underlay (GRE with key and sequence, layer-3 GRE, ERSPAN II, ERSPAN III,
//! VXLAN, Geneve) and on the tunnel device (unwrapped). The tunnelled
//! capture must give exactly the exchanges of the unwrapped one. VXLAN is
//! the kernel's own; a kernel without the GRE and Geneve drivers (this CI's)
//! gets the other kinds from the script's userspace encapsulator
//! (`EMULATE=1`), which writes the same wire formats.

use std::process::Command;

use serde_json::Value;

use crate::{attr, replay_spans, root};

/// What must be equal between the two captures of one exchange.
fn summary(spans: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = spans
        .iter()
        .map(|s| {
            format!(
                "{} {} {} {} {} {} {} {}",
                s["name"].as_str().unwrap_or(""),
                attr(s, "url.path"),
                attr(s, "http.response.status_code"),
                attr(s, "wasmtap.iso8583.stan"),
                attr(s, "wasmtap.iso8583.response_code"),
                s["status"]["code"].as_str().unwrap_or(""),
                attr(s, "server.port"),
                attr(s, "client.address"),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn tunnelled_captures_give_the_exchanges_of_the_unwrapped_ones() {
    let dir = std::env::temp_dir().join(format!("wasmtap-tunnels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(root().join("scripts/capture-tunnels.sh"))
        .arg(&dir)
        .arg("12")
        .env("EMULATE", "1")
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut kinds = 0;
    for kind in ["gretap", "gre", "erspan", "erspan3", "vxlan", "geneve"] {
        let outer = dir.join(format!("{kind}.outer.pcap"));
        let inner = dir.join(format!("{kind}.inner.pcap"));
        assert!(outer.exists() && inner.exists(), "{kind}: {report}");
        kinds += 1;
        let wrapped = replay_spans(&outer, &[]);
        let plain = replay_spans(&inner, &[]);
        // 12 x 200, 3 x 404, 2 x 500 (the script's requests), and the
        // card payments the ISO 8583 client logged.
        let iso = std::fs::read_to_string(dir.join(format!("{kind}.iso8583.log.jsonl")))
            .unwrap()
            .lines()
            .count();
        assert_eq!(iso, 20, "{kind}: ISO 8583 exchanges logged");
        assert_eq!(plain.len(), 17 + iso, "{kind}: unwrapped capture");
        let payments = |spans: &[Value]| {
            spans
                .iter()
                .filter(|s| attr(s, "network.protocol.name") == "iso8583")
                .count()
        };
        assert_eq!(payments(&wrapped), iso, "{kind}: tunnelled card payments");
        assert_eq!(summary(&wrapped), summary(&plain), "{kind}");
        // The flow is the inner one, not the tunnel's.
        assert!(
            wrapped
                .iter()
                .all(|s| attr(s, "client.address") == "192.168.98.1"),
            "{kind}: inner client address"
        );
    }
    assert_eq!(kinds, 6);
    std::fs::remove_dir_all(&dir).ok();
}
