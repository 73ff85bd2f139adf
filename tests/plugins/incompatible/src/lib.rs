//! A component for `wasmtap:decoder@9.0.0`, a WIT version the host does not
//! implement. Loading it must fail with one clear line; nothing else changes.

wit_bindgen::generate!({
    inline: "
        package wasmtap:decoder@9.0.0;
        interface decoder {
            describe: func() -> string;
        }
        world plugin {
            export decoder;
        }
    ",
    world: "plugin",
});

struct Incompatible;

impl exports::wasmtap::decoder::decoder::Guest for Incompatible {
    fn describe() -> String {
        "incompatible".to_string()
    }
}

export!(Incompatible);
