//! `squall:automation/log`: guest log lines, recorded with the execution and
//! mirrored to the host's tracing at debug level.

use super::HostState;
use crate::bindings::squall::automation::log::{Host, Level};

fn name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        tracing::debug!(target: "squall::guest", level = name(level), "{message}");
        self.log
            .lock()
            .expect("log lock poisoned")
            .push(name(level), message);
    }
}
