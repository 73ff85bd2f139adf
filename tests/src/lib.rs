//! wasmtap-e2e
