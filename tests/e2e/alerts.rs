//! `deploy/prometheus` and `deploy/grafana`: the alert rules pass `promtool
//! check rules` and their unit tests (`promtool test rules`), which do fail
//! when an expectation is wrong; the dashboard and the rules use only metrics
//! and labels the agent exports (`deploy/ci/validate_dashboards.py`, checked
//! against `deploy/prometheus/exported-metrics.txt`), and the validator names
//! an unknown one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::root;

const RULES: &str = "deploy/prometheus/wasmtap-alerts.yaml";
const RULE_TESTS: &str = "deploy/prometheus/wasmtap-alerts.test.yaml";
const VALIDATOR: &str = "deploy/ci/validate_dashboards.py";

/// Runs `program` with `args` from the repository root.
fn tool(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .current_dir(root())
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {program} ({e}); promtool comes with the Debian package prometheus \
                 (scripts/setup.sh --test)"
            )
        })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fresh scratch directory for one test (tests run in parallel in one process).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wasmtap-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
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

/// Replaces every occurrence of `from` in `file` (which must hold it).
fn edit(file: &Path, from: &str, to: &str) {
    let s = std::fs::read_to_string(file).unwrap();
    assert!(s.contains(from), "{} holds {from:?}", file.display());
    std::fs::write(file, s.replace(from, to)).unwrap();
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn alert_rules_pass_promtool() {
    let out = tool("promtool", &["check", "rules", RULES]);
    assert!(
        out.status.success(),
        "promtool check rules {RULES}:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("SUCCESS"), "{}", text(&out));

    let out = tool("promtool", &["test", "rules", RULE_TESTS]);
    assert!(
        out.status.success(),
        "promtool test rules {RULE_TESTS}:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("SUCCESS"), "{}", text(&out));
}

#[test]
fn alert_rule_tests_can_fail() {
    // (text of the test file, replacement, alert whose test must then fail)
    let cases: &[(&str, &str, &str)] = &[
        // An expected alert with a wrong label: 10 % errors fire as critical, not warning.
        (
            "severity: critical",
            "severity: warning",
            "WasmtapHighErrorRate",
        ),
        // The silent service is never called again: the alert expected to clear keeps firing.
        (
            "values: '0+60x8 0 60 120'",
            "values: '0+60x10'",
            "WasmtapServiceSilent",
        ),
    ];
    let base = scratch("alerts-neg");
    for (i, (from, to, alert)) in cases.iter().enumerate() {
        let dir = base.join(i.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        // The test file names its rule file relative to itself: copy both.
        std::fs::copy(root().join(RULES), dir.join("wasmtap-alerts.yaml")).unwrap();
        let tests = dir.join("wasmtap-alerts.test.yaml");
        std::fs::copy(root().join(RULE_TESTS), &tests).unwrap();

        // The unmodified copy passes, so the failure below is the edit's.
        let out = tool("promtool", &["test", "rules", path_str(&tests)]);
        assert!(
            out.status.success(),
            "copy of {RULE_TESTS}:\n{}",
            text(&out)
        );

        edit(&tests, from, to);
        let out = tool("promtool", &["test", "rules", path_str(&tests)]);
        let all = text(&out);
        assert!(
            !out.status.success(),
            "{from:?} -> {to:?} must make promtool test rules fail:\n{all}"
        );
        assert!(
            all.contains("FAILED") && all.contains(&format!("alertname: {alert}")),
            "{from:?} -> {to:?}: expected a failure of {alert}:\n{all}"
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn dashboards_and_rules_use_exported_metrics() {
    // With PyYAML (when installed) cross-checked by the built-in YAML reader,
    // and with the built-in reader alone (the validator needs only the stdlib).
    for extra in [None, Some("--no-yaml")] {
        let mut args = vec![VALIDATOR];
        args.extend(extra);
        let out = tool("python3", &args);
        let all = text(&out);
        assert!(out.status.success(), "python3 {args:?} failed:\n{all}");
        assert!(all.contains("validate-dashboards: ok"), "{all}");
        for what in [
            "wasmtap-dashboard.json:",
            "wasmtap-alerts.yaml: 7 rules (7 alerts)",
            "every alert fires in one and stays quiet in another",
        ] {
            assert!(all.contains(what), "{what:?} in:\n{all}");
        }
    }
}

#[test]
fn dashboard_validator_rejects_unknown_metrics() {
    // (file under deploy/, text, replacement, expected in one FAIL line)
    let cases: &[(&str, &str, &str, &[&str])] = &[
        (
            "grafana/wasmtap-dashboard.json",
            "wasmtap_l4_retransmitted_bytes_total",
            "wasmtap_l4_retransmitted_bytez_total",
            &[
                "panel",
                "Retransmitted bytes",
                "unknown metric wasmtap_l4_retransmitted_bytez_total",
            ],
        ),
        (
            "prometheus/wasmtap-alerts.yaml",
            "increase(wasmtap_agent_capture_kernel_dropped_total",
            "increase(wasmtap_agent_capture_kernel_drops_total",
            &[
                "alert WasmtapKernelDrops",
                "unknown metric wasmtap_agent_capture_kernel_drops_total",
            ],
        ),
        (
            "prometheus/wasmtap-alerts.yaml",
            "sum by (client, server) (increase(",
            "sum by (client, service) (increase(",
            &["alert WasmtapNewFailingEdge", "grouping by 'service'"],
        ),
    ];
    let base = scratch("dashboards-neg");
    for (i, (file, from, to, expect)) in cases.iter().enumerate() {
        let copy = base.join(i.to_string()).join("deploy");
        for sub in ["grafana", "prometheus"] {
            copy_tree(&root().join("deploy").join(sub), &copy.join(sub));
        }
        edit(&copy.join(file), from, to);
        let out = tool("python3", &[VALIDATOR, path_str(&copy)]);
        let all = text(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{file}: {from:?} -> {to:?} must fail validation:\n{all}"
        );
        assert!(
            all.lines()
                .any(|l| l.starts_with("FAIL:") && expect.iter().all(|e| l.contains(*e))),
            "{file}: {from:?} -> {to:?}: expected a FAIL line with {expect:?}:\n{all}"
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}
