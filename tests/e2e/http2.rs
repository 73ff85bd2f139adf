//! HTTP/2 and gRPC: every shared capture against the peers' expectations in
//! the MANIFEST (DeepFlow's `.result` files, Suricata's checks, tshark's
//! counts): streams, methods, paths, statuses, gRPC methods, codes and
//! message counts; captures that start mid-connection decode what can be
//! known and nothing else.

use serde_json::Value;

use crate::{attr, replay_spans, root};

/// (operation, HTTP status, gRPC status, `wasmtap.response_missing`) per span, sorted.
fn summary(spans: &[Value]) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = spans
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                attr(s, "http.response.status_code"),
                attr(s, "rpc.grpc.status_code"),
                attr(s, "wasmtap.response_missing"),
            )
        })
        .collect();
    v.sort();
    v
}

fn row(op: &str, status: &str, grpc: &str, missing: &str) -> (String, String, String, String) {
    (op.into(), status.into(), grpc.into(), missing.into())
}

#[test]
fn shared_captures_match_the_peers() {
    let dir = root().join("tests/pcaps/http2");
    let cases = [
        // DeepFlow grpc-unary.result: the Sync call answered 200 (picked up mid-connection).
        (
            "deepflow__grpc-unary.pcap",
            vec![row("agent.Synchronizer/Sync", "200", "", "")],
        ),
        // grpc-segmented.result: the Push request; its response was not captured
        // (only the client's side is in the file).
        (
            "deepflow__grpc-segmented.pcap",
            vec![row("agent.Synchronizer/Push", "", "", "one_sided")],
        ),
        // grpc-server-stream.result: 200, grpc-status 0 in the trailers.
        (
            "deepflow__grpc-server-stream.pcap",
            vec![row(
                "timeseriesquery.TimeSeriesQueryService/ServerStreamQuery",
                "200",
                "0",
                "",
            )],
        ),
        // h2c_ascii.result: GetCart, 200, grpc-status 0.
        (
            "deepflow__h2c_ascii.pcap",
            vec![row("hipstershop.CartService/GetCart", "200", "0", "")],
        ),
        // http2-multi.result: two POSTs, two 200s.
        (
            "deepflow__http2-multi.pcap",
            vec![row("POST", "200", "", ""), row("POST", "200", "", "")],
        ),
        // Suricata http2-continuation: GET /tata, its header block continued.
        (
            "suricata__http2-continuation.pcap",
            vec![row("GET /tata", "200", "", "")],
        ),
        // Suricata http2-long-frame: GET / answered, /malware/payload.exe's answer not in the file.
        (
            "suricata__http2-long-frame.pcap",
            vec![
                row("GET /", "200", "", ""),
                row("GET /malware/payload.exe", "", "", "capture_end"),
            ],
        ),
        // Suricata http2-range: five connections; three upgrade with
        // `Upgrade: h2c` and get their 206 on HTTP/2 stream 1, two stay HTTP/1.1.
        (
            "suricata__http2-range-http2-range.pcap",
            vec![row("GET /eicar", "206", "", ""); 5],
        ),
        // Suricata http2-bugfixes: GET x3 + POST x1, all 200.
        (
            "suricata__http2-bugfixes.pcap",
            vec![
                row("GET /favicon.ico", "200", "", ""),
                row("GET /robots.txt", "200", "", ""),
                row("GET /sw.js", "200", "", ""),
                row("POST /youtubei/v1/log_event", "200", "", ""),
            ],
        ),
    ];
    for (file, want) in cases {
        let spans = replay_spans(&dir.join(file), &[]);
        assert_eq!(summary(&spans), want, "{file}");
        for s in &spans {
            if !file.contains("range") {
                assert_eq!(attr(s, "network.protocol.version"), "2", "{file}");
            }
            assert_ne!(attr(s, "error.type"), "no_response", "{file}");
        }
    }
    // Paths (Suricata's http2-bugfixes and continuation, as tshark lists them).
    let paths = |file: &str| -> Vec<String> {
        let mut p: Vec<String> = replay_spans(&dir.join(file), &[])
            .iter()
            .map(|s| attr(s, "url.path"))
            .collect();
        p.sort();
        p
    };
    assert_eq!(
        paths("suricata__http2-bugfixes.pcap"),
        [
            "/favicon.ico",
            "/robots.txt",
            "/sw.js",
            "/youtubei/v1/log_event"
        ]
    );
    assert_eq!(paths("suricata__http2-continuation.pcap"), ["/tata"]);
    // gRPC: five streamed messages, service and method split.
    let spans = replay_spans(&dir.join("deepflow__grpc-server-stream.pcap"), &[]);
    assert_eq!(attr(&spans[0], "wasmtap.grpc.response_messages"), "5");
    assert_eq!(
        attr(&spans[0], "rpc.service"),
        "timeseriesquery.TimeSeriesQueryService"
    );
    assert_eq!(attr(&spans[0], "rpc.method"), "ServerStreamQuery");
    assert_eq!(attr(&spans[0], "rpc.system"), "grpc");
}

/// Statuses per span against nginx's own access log.
fn check_nginx(pcap: &std::path::Path, access_log: &std::path::Path) {
    let mut want: std::collections::BTreeMap<String, usize> = Default::default();
    for line in std::fs::read_to_string(access_log).unwrap().lines() {
        let mut f = line.split(' ');
        let (status, proto) = (f.next().unwrap(), f.next().unwrap());
        assert_eq!(proto, "HTTP/2.0");
        *want.entry(status.to_string()).or_insert(0) += 1;
    }
    assert!(want.values().sum::<usize>() > 300);
    let spans = replay_spans(pcap, &[]);
    let mut got: std::collections::BTreeMap<String, usize> = Default::default();
    for s in &spans {
        assert_eq!(attr(s, "network.protocol.version"), "2");
        *got.entry(attr(s, "http.response.status_code")).or_insert(0) += 1;
    }
    assert_eq!(got, want, "{}", pcap.display());
    // The query is masked; a 500 is an error, a 404 is the client's.
    assert!(spans.iter().any(|s| attr(s, "url.query") == "token=?"));
    for s in &spans {
        let err = s["status"]["code"] == "error";
        assert_eq!(err, attr(s, "http.response.status_code") == "500", "{s}");
    }
}

#[test]
fn bundled_nginx_h2load_capture_matches_the_access_log() {
    check_nginx(
        &root().join("tests/pcaps/http2/nginx-h2load.pcap"),
        &root().join("tests/golden/http2/nginx-h2load.access.log"),
    );
}

/// Real HTTP/2: nginx (`http2` on a cleartext listener) driven by curl
/// `--http2-prior-knowledge` and h2load with up to 40 concurrent streams per
/// connection (`scripts/capture-h2.sh`): statuses equal nginx's access log.
#[test]
fn real_nginx_http2_matches_its_access_log() {
    let dir = std::env::temp_dir().join(format!("wasmtap-h2-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let o = std::process::Command::new(root().join("scripts/capture-h2.sh"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "capture-h2.sh: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    check_nginx(&dir.join("h2.pcap"), &dir.join("access.log"));
    let _ = std::fs::remove_dir_all(&dir);
}
