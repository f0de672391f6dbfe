//! Write Squall actions and sensors in Rust.
//!
//! An action is a WebAssembly component in the `squall:automation/action`
//! world. With this crate it is a plain function with typed parameters:
//!
//! ```no_run
//! use serde::Deserialize;
//! use squall_sdk::{Context, Result};
//!
//! #[derive(Deserialize)]
//! struct Params {
//!     message: String,
//! }
//!
//! #[squall_sdk::action]
//! fn run(ctx: &Context, p: Params) -> Result<serde_json::Value> {
//!     squall_sdk::log::info!("echo {} for {}", p.message, ctx.execution_id);
//!     Ok(serde_json::json!({ "message": p.message }))
//! }
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --target wasm32-wasip2 --release` from a crate
//! with `crate-type = ["cdylib"]`, and point an action's `entry_point` at the
//! resulting `.wasm`.
//!
//! Parameters arrive already validated against the action's metadata, with
//! defaults applied; the function's `P` only has to deserialize them. Its
//! return value is serialized to JSON and becomes the execution's result. An
//! [`Error`] ends the execution as `failed`; a panic does too, with the panic
//! message in the record.
//!
//! One component may implement several actions of a pack: see
//! [`export_actions!`].

#![deny(missing_docs)]

extern crate self as squall_sdk;

use std::fmt;

/// ```no_run
/// #[derive(serde::Deserialize)]
/// struct Params {
///     host: String,
///     count: Option<u32>,
/// }
///
/// #[squall_sdk::action]
/// fn ping(_: &squall_sdk::Context, p: Params) -> squall_sdk::Result<serde_json::Value> {
///     Ok(serde_json::json!({ "host": p.host, "sent": p.count.unwrap_or(3) }))
/// }
/// # fn main() {}
/// ```
#[doc(inline)]
pub use squall_sdk_macro::action;
/// ```no_run
/// struct Tick;
///
/// #[squall_sdk::sensor]
/// impl squall_sdk::sensor::Sensor for Tick {
///     fn setup() -> squall_sdk::Result<Self> {
///         Ok(Tick)
///     }
///     fn poll(&mut self) -> squall_sdk::Result<()> {
///         squall_sdk::sensor::dispatch("tick", &serde_json::json!({}))
///     }
/// }
/// # fn main() {}
/// ```
#[doc(inline)]
pub use squall_sdk_macro::sensor;

/// Generated bindings for the `action` world. Not part of the stable API.
#[doc(hidden)]
#[allow(
    unsafe_code,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations
)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "action",
        pub_export_macro: true,
        default_bindings_module: "squall_sdk::bindings",
        runtime_path: "squall_sdk::__private::wit_bindgen::rt",
    });
}

/// Generated bindings for the `sensor` world, sharing the action world's
/// interfaces. Not part of the stable API.
#[doc(hidden)]
#[allow(
    unsafe_code,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations
)]
pub mod sensor_bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sensor",
        pub_export_macro: true,
        default_bindings_module: "squall_sdk::sensor_bindings",
        runtime_path: "squall_sdk::__private::wit_bindgen::rt",
        with: {
            "squall:automation/types@0.1.0": crate::bindings::squall::automation::types,
            "squall:automation/log@0.1.0": crate::bindings::squall::automation::log,
            "squall:automation/config@0.1.0": crate::bindings::squall::automation::config,
            "squall:automation/kv@0.1.0": crate::bindings::squall::automation::kv,
        },
    });
}

use bindings::squall::automation::types as wit;

/// Who is running and why: handed to every action.
///
/// ```no_run
/// #[squall_sdk::action]
/// fn run(ctx: &squall_sdk::Context, _: serde_json::Value) -> squall_sdk::Result<String> {
///     Ok(format!("{} ran {}.{} for {}", ctx.execution_id, ctx.pack, ctx.action, ctx.tenant))
/// }
/// # fn main() {}
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The execution's id, as `squall execution get` shows it.
    pub execution_id: String,
    /// The tenant that owns the execution.
    pub tenant: String,
    /// The pack's ref, e.g. `core`.
    pub pack: String,
    /// The action's name inside its pack, e.g. `echo`.
    pub action: String,
    /// Base URL of the Squall API, when running under a server.
    pub api_url: Option<String>,
    /// A short-lived API token, when running under a server.
    pub auth_token: Option<String>,
    /// The trace tag of the event that led here, if any.
    pub trace_tag: Option<String>,
}

impl From<wit::Context> for Context {
    fn from(c: wit::Context) -> Self {
        Self {
            execution_id: c.execution_id,
            tenant: c.tenant,
            pack: c.pack,
            action: c.action,
            api_url: c.api_url,
            auth_token: c.auth_token,
            trace_tag: c.trace_tag,
        }
    }
}

/// Why an action failed. Any `std::error::Error` converts into
/// [`Error::Failed`], so `?` works on most results.
///
/// ```
/// fn parse(n: &str) -> squall_sdk::Result<u32> {
///     if n.is_empty() {
///         return Err(squall_sdk::Error::invalid_input("n must not be empty"));
///     }
///     Ok(n.parse()?)
/// }
/// assert!(parse("").is_err());
/// assert_eq!(parse("7").ok(), Some(7));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The parameters make no sense to the action (beyond what the schema checks).
    InvalidInput(String),
    /// The action ran and failed.
    Failed(String),
    /// A transient failure: a retry may succeed.
    Retryable(String),
}

impl Error {
    /// An [`Error::InvalidInput`].
    ///
    /// ```
    /// let e = squall_sdk::Error::invalid_input("port must be below 65536");
    /// assert_eq!(e.to_string(), "invalid input: port must be below 65536");
    /// ```
    pub fn invalid_input(message: impl fmt::Display) -> Self {
        Self::InvalidInput(message.to_string())
    }

    /// An [`Error::Failed`].
    ///
    /// ```
    /// let e = squall_sdk::Error::failed("the service answered 503");
    /// assert_eq!(e.to_string(), "the service answered 503");
    /// ```
    pub fn failed(message: impl fmt::Display) -> Self {
        Self::Failed(message.to_string())
    }

    /// An [`Error::Failed`] whose execution's result is `result` (a JSON
    /// object), as StackStorm's `return (False, result)`: the execution
    /// ends `failed` with that result instead of `{"error": message}`.
    ///
    /// ```
    /// let e = squall_sdk::Error::failed_with(serde_json::json!({"return_code": 1}));
    /// assert_eq!(e.to_string(), r#"{"return_code":1}"#);
    /// ```
    pub fn failed_with(result: serde_json::Value) -> Self {
        match result {
            serde_json::Value::Object(_) => Self::Failed(result.to_string()),
            other => Self::Failed(serde_json::json!({ "error": other }).to_string()),
        }
    }

    /// An [`Error::Retryable`].
    ///
    /// ```
    /// let e = squall_sdk::Error::retryable("the database is busy");
    /// assert!(matches!(e, squall_sdk::Error::Retryable(_)));
    /// ```
    pub fn retryable(message: impl fmt::Display) -> Self {
        Self::Retryable(message.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Self::Failed(m) => f.write_str(m),
            Self::Retryable(m) => write!(f, "retryable: {m}"),
        }
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Self::Failed(e.to_string())
    }
}

impl From<Error> for wit::ActionError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput(m) => Self::InvalidInput(m),
            Error::Failed(m) => Self::Failed(m),
            Error::Retryable(m) => Self::Retryable(m),
        }
    }
}

/// `Result` with [`Error`] as the default error.
///
/// ```
/// fn half(n: u32) -> squall_sdk::Result<u32> {
///     if n % 2 == 1 {
///         return Err(squall_sdk::Error::invalid_input("n must be even"));
///     }
///     Ok(n / 2)
/// }
/// assert_eq!(half(4).ok(), Some(2));
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The pack's configuration (`config.yaml`, validated against
/// `config.schema.yaml`, defaults applied), as JSON.
///
/// ```no_run
/// let region = squall_sdk::config()["region"].as_str().unwrap_or("eu-west-1").to_owned();
/// ```
pub fn config() -> serde_json::Value {
    serde_json::from_str(&bindings::squall::automation::config::get())
        .unwrap_or(serde_json::Value::Object(Default::default()))
}

/// The pack's configuration deserialized into `T`.
///
/// ```no_run
/// #[derive(serde::Deserialize)]
/// struct Config { log_file: String }
/// let cfg: Config = squall_sdk::config_as()?;
/// # Ok::<(), squall_sdk::Error>(())
/// ```
pub fn config_as<T: serde::de::DeserializeOwned>() -> Result<T> {
    serde_json::from_str(&bindings::squall::automation::config::get())
        .map_err(|e| Error::failed(format!("the pack's config does not fit: {e}")))
}

pub mod http;
pub mod kv;
pub mod log;
pub mod sensor;

#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use crate::bindings::squall::automation::types as wit;
    use crate::{Context, Error, Result};

    /// Decode the parameters, call the action, encode its result.
    pub fn invoke<P, R>(
        ctx: wit::Context,
        parameters: String,
        action: fn(&Context, P) -> Result<R>,
    ) -> std::result::Result<String, wit::ActionError>
    where
        P: serde::de::DeserializeOwned,
        R: serde::Serialize,
    {
        let ctx = Context::from(ctx);
        let params: P = serde_json::from_str(&parameters)
            .map_err(|e| Error::invalid_input(format!("parameters do not fit the action: {e}")))?;
        let result = action(&ctx, params)?;
        serde_json::to_string(&result)
            .map_err(|e| Error::failed(format!("result is not serializable: {e}")).into())
    }

    /// The error for an action name this component does not implement.
    pub fn unknown_action(ctx: &wit::Context, known: &[&str]) -> wit::ActionError {
        wit::ActionError::InvalidInput(format!(
            "this component does not implement action '{}' (it implements: {})",
            ctx.action,
            known.join(", ")
        ))
    }
}

/// Export one function as this component's action. `#[squall_sdk::action]`
/// expands to this.
///
/// ```no_run
/// fn noop(_: &squall_sdk::Context, _: serde_json::Value) -> squall_sdk::Result<()> {
///     Ok(())
/// }
/// squall_sdk::export_action!(noop);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_action {
    ($action:path) => {
        const _: () = {
            struct SquallAction;
            impl $crate::bindings::Guest for SquallAction {
                fn run(
                    ctx: $crate::bindings::squall::automation::types::Context,
                    parameters: ::std::string::String,
                ) -> ::std::result::Result<
                    ::std::string::String,
                    $crate::bindings::squall::automation::types::ActionError,
                > {
                    $crate::__private::invoke(ctx, parameters, $action)
                }
            }
    $crate::bindings::export!(SquallAction with_types_in $crate::bindings);
        };
    };
}

/// Export several actions from one component; each execution is routed by
/// the action's name (the part after the pack in `pack.action`).
///
/// ```no_run
/// use squall_sdk::{Context, Result};
/// fn echo(_: &Context, p: serde_json::Value) -> Result<serde_json::Value> { Ok(p) }
/// fn noop(_: &Context, _: serde_json::Value) -> Result<()> { Ok(()) }
/// squall_sdk::export_actions! {
///     "echo" => echo,
///     "noop" => noop,
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_actions {
    ($($name:literal => $action:path),+ $(,)?) => {
        const _: () = {
            struct SquallActions;
            impl $crate::bindings::Guest for SquallActions {
                fn run(
                    ctx: $crate::bindings::squall::automation::types::Context,
                    parameters: ::std::string::String,
                ) -> ::std::result::Result<
                    ::std::string::String,
                    $crate::bindings::squall::automation::types::ActionError,
                > {
                    match ctx.action.as_str() {
                        $($name => $crate::__private::invoke(ctx, parameters, $action),)+
                        _ => ::std::result::Result::Err(
                            $crate::__private::unknown_action(&ctx, &[$($name),+]),
                        ),
                    }
                }
            }
            $crate::bindings::export!(SquallActions with_types_in $crate::bindings);
        };
    };
}
