//! `deploy/`: the Kubernetes manifests and the Dockerfile pass
//! `scripts/validate-deploy.sh` (renderings, schemas, policy), the validator
//! catches violations, and the manifests agree with the agent itself (its
//! configuration parser and the flags of `wasmtap run`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{bin, root};

fn validate(deploy_dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(root().join("scripts/validate-deploy.sh"));
    if let Some(d) = deploy_dir {
        cmd.arg(d);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Replaces the first occurrence of `from` in `file` (which must hold it).
fn edit(file: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(file).unwrap();
    assert!(s.contains(from), "{} holds {from:?}", file.display());
    std::fs::write(file, s.replacen(from, to, 1)).unwrap();
}

#[test]
fn deploy_tree_is_valid() {
    let out = validate(None);
    let all = text(&out);
    assert!(
        out.status.success(),
        "scripts/validate-deploy.sh failed:\n{all}"
    );
    assert!(all.contains("validate-deploy: ok"), "{all}");
    for entry in ["overlays/sidecar", "overlays/daemonset", "collector"] {
        assert!(
            all.contains(&format!("rendered {entry}:")),
            "{entry} rendered: {all}"
        );
    }

    // The agent's own parser accepts the configuration the manifests mount.
    let cfg = root().join("deploy/kubernetes/base/wasmtap.toml");
    let out = Command::new(bin())
        .args(["check-config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "check-config: {}", text(&out));
}

#[test]
fn deploy_validator_rejects_violations() {
    // (file under deploy/, text, replacement, expected message)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "kubernetes/overlays/sidecar/app.yaml",
            "privileged: false",
            "privileged: true",
            "privileged: true is not allowed",
        ),
        (
            "kubernetes/overlays/daemonset/daemonset.yaml",
            "              memory: 1Gi\n",
            "",
            "resources.limits.memory missing",
        ),
        (
            "kubernetes/overlays/daemonset/daemonset.yaml",
            "allowPrivilegeEscalation: true",
            "allowPrivilegeEscalation: false",
            "no_new_privs",
        ),
        (
            "kubernetes/overlays/sidecar/app.yaml",
            "add: [\"NET_RAW\"]",
            "add: [\"NET_RAW\", \"SYS_ADMIN\"]",
            "SYS_ADMIN",
        ),
        (
            "kubernetes/overlays/daemonset/rbac.yaml",
            "resources: [\"pods\", \"services\"]",
            "resources: [\"pods\", \"services\", \"secrets\"]",
            "core/secrets is not a kind the agent reads",
        ),
        (
            "kubernetes/overlays/daemonset/rbac.yaml",
            "verbs: [\"get\", \"list\", \"watch\"]\n  - apiGroups: [\"apps\"]",
            "verbs: [\"get\", \"list\", \"watch\", \"patch\"]\n  - apiGroups: [\"apps\"]",
            "beyond get/list/watch",
        ),
        (
            "Dockerfile",
            "FROM debian:bookworm-slim",
            "FROM debian:latest",
            "is not pinned",
        ),
    ];
    let base: PathBuf =
        std::env::temp_dir().join(format!("wasmtap-deploy-neg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    for (i, (file, from, to, expect)) in cases.iter().enumerate() {
        let copy = base.join(i.to_string()).join("deploy");
        copy_tree(&root().join("deploy"), &copy);
        edit(&copy.join(file), from, to);
        let out = validate(Some(&copy));
        let all = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{file}: {from:?} -> {to:?} must fail validation:\n{all}"
        );
        assert!(
            all.lines()
                .any(|l| l.starts_with("FAIL:") && l.contains(expect)),
            "{file}: {from:?} -> {to:?}: expected a FAIL line with {expect:?}:\n{all}"
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn deploy_manifests_use_flags_of_wasmtap_run() {
    // Every flag the manifests pass to the agent exists in `wasmtap run`.
    let out = Command::new(bin())
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "wasmtap run --help: {}", text(&out));
    let overlays = root().join("deploy/kubernetes/overlays");
    let mut flags = Vec::new();
    for dir in std::fs::read_dir(&overlays).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let s = std::fs::read_to_string(f.unwrap().path()).unwrap();
            for line in s.lines() {
                // Agent arguments are list items: `- --flag=value` or `- --flag`.
                if let Some(arg) = line.trim().strip_prefix("- --") {
                    let name = arg.split(['=', ' ']).next().unwrap();
                    flags.push(format!("--{name}"));
                }
            }
        }
    }
    flags.sort();
    flags.dedup();
    for must in [
        "--mode",
        "--interface",
        "--config",
        "--plugins",
        "--admin-listen",
    ] {
        assert!(
            flags.iter().any(|f| f == must),
            "the manifests pass {must}: {flags:?}"
        );
    }
    for f in &flags {
        assert!(
            help.contains(f.as_str()),
            "the manifests pass {f}, which `wasmtap run` does not take:\n{help}"
        );
    }
    for mode in ["sidecar", "host"] {
        assert!(
            help.contains(mode),
            "--mode {mode} in `wasmtap run --help`:\n{help}"
        );
    }
}
