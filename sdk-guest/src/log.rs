//! Log lines recorded with the execution (`squall execution get` shows them).
//!
//! ```no_run
//! squall_sdk::log::info!("processed {} items", 3);
//! squall_sdk::log::warn!("slow response");
//! ```

use crate::bindings::squall::automation::log as wit;

/// Severity of a log line.
///
/// ```no_run
/// use squall_sdk::log::{Level, log};
/// let used = 91;
/// let level = if used > 90 { Level::Warn } else { Level::Info };
/// log(level, &format!("disk {used}% full"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

/// Record one line. The macros in this module call this.
///
/// ```no_run
/// squall_sdk::log::log(squall_sdk::log::Level::Error, "the backup failed");
/// ```
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => wit::Level::Trace,
        Level::Debug => wit::Level::Debug,
        Level::Info => wit::Level::Info,
        Level::Warn => wit::Level::Warn,
        Level::Error => wit::Level::Error,
    };
    wit::log(level, message);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::log($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

/// Log at trace level, with `format!` arguments.
///
/// ```no_run
/// squall_sdk::log::trace!("raw response: {:?}", b"ok");
/// ```
#[macro_export]
macro_rules! __log_trace { ($($arg:tt)+) => { $crate::__log!(Trace, $($arg)+) }; }
/// Log at debug level, with `format!` arguments.
///
/// ```no_run
/// squall_sdk::log::debug!("retrying {} of {}", 2, 5);
/// ```
#[macro_export]
macro_rules! __log_debug { ($($arg:tt)+) => { $crate::__log!(Debug, $($arg)+) }; }
/// Log at info level, with `format!` arguments.
///
/// ```no_run
/// squall_sdk::log::info!("deployed {} to {}", "v1.4.2", "prod");
/// ```
#[macro_export]
macro_rules! __log_info { ($($arg:tt)+) => { $crate::__log!(Info, $($arg)+) }; }
/// Log at warn level, with `format!` arguments.
///
/// ```no_run
/// squall_sdk::log::warn!("{} took {} ms", "the API", 2400);
/// ```
#[macro_export]
macro_rules! __log_warn { ($($arg:tt)+) => { $crate::__log!(Warn, $($arg)+) }; }
/// Log at error level, with `format!` arguments.
///
/// ```no_run
/// squall_sdk::log::error!("cannot reach {}", "db-1");
/// ```
#[macro_export]
macro_rules! __log_error { ($($arg:tt)+) => { $crate::__log!(Error, $($arg)+) }; }

#[doc(inline)]
pub use crate::__log_debug as debug;
#[doc(inline)]
pub use crate::__log_error as error;
#[doc(inline)]
pub use crate::__log_info as info;
#[doc(inline)]
pub use crate::__log_trace as trace;
#[doc(inline)]
pub use crate::__log_warn as warn;
