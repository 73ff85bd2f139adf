//! `wasmtap`: the agent binary.

fn main() -> std::process::ExitCode {
    wasmtap::main()
}
