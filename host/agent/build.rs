//! Builds every decoder under `plugins/` for wasm32-wasip2 and embeds the
//! components in the agent binary (see `src/embedded.rs`).
//!
//! The nested cargo uses its own target directory (`target/wasm-plugins`), so it
//! never waits on the outer build's lock, and is shared by debug and release
//! builds of the agent.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .join("../..")
        .canonicalize()
        .expect("workspace root");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for dir in ["plugins", "sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=WASMTAP_PLUGIN_TARGET_DIR");

    let mut crates = Vec::new();
    let plugins_dir = root.join("plugins");
    let mut entries: Vec<_> = std::fs::read_dir(&plugins_dir)
        .expect("read plugins/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 dir name")
            .to_string();
        crates.push(name);
    }

    let target_dir = env::var("WASMTAP_PLUGIN_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/wasm-plugins"));
    // The decoders are built by the repository's pinned toolchain
    // (rust-toolchain.toml, with the wasm target), whatever toolchain runs
    // this build: under rustup, through its `cargo` proxy with the outer
    // toolchain's choice removed (cargo-fuzz runs on a nightly without the
    // wasm target).
    let under_rustup = env::var_os("RUSTUP_TOOLCHAIN").is_some();
    let cargo = if under_rustup {
        "cargo".into()
    } else {
        env::var("CARGO").unwrap_or_else(|_| "cargo".into())
    };
    // Plugin crates are plain rlibs (so their parsers test natively); the
    // component is made by asking rustc for a cdylib for wasm32-wasip2 here.
    for c in &crates {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&root)
            .args([
                "rustc",
                "--release",
                "--lib",
                "--crate-type",
                "cdylib",
                "--target",
                "wasm32-wasip2",
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .args(["-p", &format!("wasmtap-plugin-{c}")]);
        // Small, fast components: LTO, one codegen unit, no debug info.
        cmd.env("CARGO_PROFILE_RELEASE_LTO", "true")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "true");
        // The outer build's flags are for the host target, not for wasm.
        for var in [
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTFLAGS",
            "CARGO_BUILD_TARGET",
            "CARGO_TARGET_DIR",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_PRIMARY_PACKAGE",
            "RUSTUP_TOOLCHAIN",
            "RUSTC",
            "RUSTDOC",
            "RUSTC_WRAPPER",
        ] {
            cmd.env_remove(var);
        }
        let status = cmd.status().expect("run cargo for the plugins");
        if !status.success() {
            panic!(
                "building decoder plugins/{c} for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
            );
        }
    }

    let mut src = String::from(
        "/// Decoders compiled into the binary: (name, component bytes).\npub static EMBEDDED: &[(&str, &[u8])] = &[\n",
    );
    for c in &crates {
        let file = format!("wasmtap_plugin_{}.wasm", c.replace('-', "_"));
        let built = target_dir.join("wasm32-wasip2/release").join(&file);
        let dest = out.join(&file);
        copy(&built, &dest);
        writeln!(
            src,
            "    ({c:?}, include_bytes!({:?})),",
            dest.display().to_string()
        )
        .expect("write");
    }
    src.push_str("];\n");
    std::fs::write(out.join("embedded.rs"), src).expect("write embedded.rs");
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
}
