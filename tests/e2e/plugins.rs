//! `--plugins DIR`: a file decoder replaces the embedded one of the same name;
//! a file that is not a valid component is skipped with one log line.

use std::process::Command;

use crate::{bin, replay_spans, root};

#[test]
fn plugin_dir_overrides_embedded_and_skips_bad_files() {
    let built = root().join("target/wasm-plugins/wasm32-wasip2/release/wasmtap_plugin_http1.wasm");
    assert!(built.is_file(), "the agent build makes {}", built.display());
    let dir = std::env::temp_dir().join(format!("wasmtap-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&built, dir.join("http1.wasm")).unwrap();
    std::fs::write(dir.join("broken.wasm"), b"\0asm\x0d\0\x01\0garbage").unwrap();

    let out = Command::new(bin())
        .args(["plugins", "--plugins", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    let http1: Vec<&&str> = rows.iter().filter(|r| r.starts_with("http1 ")).collect();
    assert_eq!(http1.len(), 1, "one http1 decoder, from the file: {stdout}");
    assert!(
        http1[0].contains("http1.wasm"),
        "source is the file: {stdout}"
    );
    assert!(http1[0].contains(" 0.1.0 "), "WIT version shown: {stdout}");
    // The other decoders stay the embedded ones.
    for name in ["redis", "pgsql", "memcached", "mongodb"] {
        assert!(
            rows.iter()
                .any(|r| r.starts_with(name) && r.ends_with("embedded")),
            "{name}: {stdout}"
        );
    }
    assert_eq!(stderr.matches("plugin rejected").count(), 1, "{stderr}");
    assert!(stderr.contains("broken.wasm"), "{stderr}");

    // The replacement decodes as the embedded one did.
    let f = root().join("tests/pcaps/http/zeek__http-pipelined-requests.pcap");
    let with_dir = replay_spans(&f, &["--plugins", dir.to_str().unwrap()]);
    assert_eq!(with_dir, replay_spans(&f, &[]));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sha256_allowlist_refuses_unlisted_files() {
    let built = root().join("target/wasm-plugins/wasm32-wasip2/release/wasmtap_plugin_http1.wasm");
    let dir = std::env::temp_dir().join(format!("wasmtap-allow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&built, dir.join("http1.wasm")).unwrap();
    let sum = Command::new("sha256sum")
        .arg(dir.join("http1.wasm"))
        .output()
        .unwrap();
    let digest = String::from_utf8(sum.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let list = |allowed: &str| {
        let cfg = dir.join("allow.toml");
        std::fs::write(&cfg, format!("[plugins]\nallow_sha256 = [\"{allowed}\"]\n")).unwrap();
        let out = Command::new(bin())
            .args([
                "plugins",
                "--plugins",
                dir.to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        (
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // Not listed: refused with one line; the embedded http1 stays in service.
    let (stdout, stderr) = list(&"0".repeat(64));
    assert!(stderr.contains("not in plugins.allow_sha256"), "{stderr}");
    let http1 = stdout.lines().find(|l| l.starts_with("http1 ")).unwrap();
    assert!(http1.ends_with("embedded"), "{stdout}");
    // Listed: loaded from the file.
    let (stdout, stderr) = list(&digest);
    assert!(!stderr.contains("rejected"), "{stderr}");
    let http1 = stdout.lines().find(|l| l.starts_with("http1 ")).unwrap();
    assert!(
        http1.contains(&digest) && http1.contains("http1.wasm"),
        "{stdout}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn decoder_files_others_can_write_are_refused_until_fixed() {
    use std::os::unix::fs::PermissionsExt;
    let built = root().join("target/wasm-plugins/wasm32-wasip2/release/wasmtap_plugin_http1.wasm");
    let dir = std::env::temp_dir().join(format!("wasmtap-perms-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("http1.wasm");
    std::fs::copy(&built, &file).unwrap();
    let chmod = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let list = || {
        let out = Command::new(bin())
            .args(["plugins", "--plugins", dir.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    chmod(&dir, 0o755);
    // A file anyone may rewrite: refused, naming the path and the mode.
    chmod(&file, 0o666);
    let (ok, stdout, stderr) = list();
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("http1.wasm has mode 0666") && stderr.contains("chmod go-w"),
        "{stderr}"
    );
    let http1 = stdout.lines().find(|l| l.starts_with("http1 ")).unwrap();
    assert!(http1.ends_with("embedded"), "{stdout}");
    // Fixed: loaded from the file.
    chmod(&file, 0o644);
    let (ok, stdout, stderr) = list();
    assert!(ok && !stderr.contains("rejected"), "{stderr}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("http1 ") && l.contains("http1.wasm")),
        "{stdout}"
    );
    // A directory its group may write to: the agent refuses to start.
    chmod(&dir, 0o775);
    let (ok, _, stderr) = list();
    assert!(!ok && stderr.contains("has mode 0775"), "{stderr}");
    chmod(&dir, 0o755);
    std::fs::remove_dir_all(&dir).ok();
}
