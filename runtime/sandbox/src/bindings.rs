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
