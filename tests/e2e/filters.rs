//! Filters changed on a running agent, without a restart: through the admin
//! endpoint (`PUT /filters`) and through the config file (as a ConfigMap
//! update lands). An invalid filter is refused and the previous one stays.

use std::process::Command;
use std::time::Duration;

use crate::{LiveAgent, bin, free_port, root};

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/stderr", "-w", "%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (code, String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn filters_change_at_runtime_and_bad_ones_are_refused() {
    let dir = std::env::temp_dir().join(format!("wasmtap-filters-{}", std::process::id()));
    let out = Command::new(root().join("scripts/nginx-serve.sh"))
        .arg("start")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let port: u16 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let admin = free_port();
    let cfg = dir.join("wasmtap.toml");
    std::fs::write(&cfg, "[filters]\nl4 = [\"tcp\"]\n").unwrap();

    let agent = LiveAgent::spawn(
        Command::new(bin())
            .args([
                "run",
                "--interface",
                "lo",
                "--bpf",
                &format!("tcp port {port}"),
                "--format",
                "jsonl",
            ])
            .args([
                "--config",
                cfg.to_str().unwrap(),
                "--admin-listen",
                &format!("127.0.0.1:{admin}"),
            ]),
    );
    let url = format!("http://127.0.0.1:{port}/");
    let api = format!("http://127.0.0.1:{admin}/filters");
    // Ready?
    let mut ready = false;
    for _ in 0..100 {
        if curl(&[&format!("http://127.0.0.1:{admin}/readyz")]).0 == 200 {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ready, "admin endpoint never ready");
    // Waits until `/status` reports `field` >= `n`: `filters_applied` (the
    // updates in force) or `spans` (written, so a filter change cannot
    // overtake packets still in the kernel's buffer).
    let status = format!("http://127.0.0.1:{admin}/status");
    let wait_status = |field: &str, n: u64| {
        for _ in 0..300 {
            let (code, body) = curl(&[&status]);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if code == 200 && v[field].as_u64().unwrap_or(0) >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("/status never reported {field} >= {n}");
    };
    let applied = |n: u64| wait_status("filters_applied", n);
    let spans_out = |n: u64| wait_status("spans", n);
    let get = |n: usize| (0..n).for_each(|_| assert_eq!(curl(&[&url]).0, 200));
    let post =
        |n: usize| (0..n).for_each(|_| assert_eq!(curl(&["-X", "POST", "-d", "x=1", &url]).0, 405));

    // A: everything reported.
    get(3);
    spans_out(3);
    // B: an L7 method exclusion drops GET spans, keeps POST.
    let (code, body) = curl(&[
        "-X",
        "PUT",
        "-d",
        r#"{"l4": ["tcp"], "l7_exclude": ["http:GET"]}"#,
        &api,
    ]);
    assert_eq!(code, 200, "{body}");
    applied(1);
    get(2);
    post(2);
    spans_out(5);
    // C: an invalid filter is refused with the reason; the previous one stays.
    let (code, body) = curl(&["-X", "PUT", "-d", r#"{"ports_include": ["80-"]}"#, &api]);
    assert_eq!(code, 400);
    assert!(body.contains("ports_include[0]"), "{body}");
    let (code, _) = curl(&["-X", "PUT", "-d", r#"{"no_such_field": 1}"#, &api]);
    assert_eq!(code, 400);
    // Nothing new was applied: the method exclusion is still the only update.
    std::thread::sleep(Duration::from_millis(1200));
    let (_, body) = curl(&[&status]);
    assert!(body.contains("\"filters_applied\":1"), "{body}");
    get(1);
    post(1);
    spans_out(6);
    // D: the config file changes (a ConfigMap update): the port is excluded.
    std::fs::write(&cfg, format!("[filters]\nports_exclude = [\"{port}\"]\n")).unwrap();
    applied(2);
    get(2);
    post(2);
    std::thread::sleep(Duration::from_millis(500));

    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let (spans, log) = (stopped.stdout, stopped.stderr);
    let _ = Command::new(root().join("scripts/nginx-serve.sh"))
        .arg("stop")
        .arg(&dir)
        .status();
    std::fs::remove_dir_all(&dir).ok();

    let gets = spans
        .lines()
        .filter(|l| l.contains("\"http.request.method\":\"GET\""))
        .count();
    let posts = spans
        .lines()
        .filter(|l| l.contains("\"http.request.method\":\"POST\""))
        .count();
    assert_eq!(
        (gets, posts),
        (3, 3),
        "A: 3 GET; B: 2 POST; C: 1 POST; D: none\n{spans}\n{log}"
    );
    assert!(log.contains("filters applied"), "{log}");
}
