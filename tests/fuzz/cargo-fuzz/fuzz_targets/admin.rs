#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmtap_fuzz::run_target("admin", data));
