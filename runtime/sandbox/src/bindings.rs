//! The one `bindgen!` site: host bindings for the `squall:automation` worlds.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "action",
    imports: {
        "squall:automation/kv": async,
        default: tracing,
    },
    exports: { default: async },
});

/// The `sensor` world, sharing the action world's interfaces (one host
/// implementation of `log`, `config` and `kv`).
pub(crate) mod sensor {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "sensor",
        imports: {
            "squall:automation/events": async,
            default: tracing,
        },
        exports: { default: async },
        with: {
            "squall:automation/types": crate::bindings::squall::automation::types,
            "squall:automation/log": crate::bindings::squall::automation::log,
            "squall:automation/config": crate::bindings::squall::automation::config,
            "squall:automation/kv": crate::bindings::squall::automation::kv,
        },
    });
}
