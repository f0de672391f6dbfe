//! Handles on an execution while it runs: its cancel signal and its output
//! so far. Both are cheap to clone; the reactor keeps one, the `Store` the
//! other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use squall_core::execution::{CapturedOutput, GuestLogLine};

use crate::host::output::CappedPipe;

/// Asks a running execution to stop. The guest is interrupted at its next
/// epoch tick (computing) or at once (waiting in a host call).
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<CancelInner>);

#[derive(Debug, Default)]
struct CancelInner {
    canceled: AtomicBool,
    notify: tokio::sync::Notify,
}

impl Cancel {
    pub fn new() -> Self {
        Self::default()
    }

    /// Request the stop; idempotent.
    pub fn cancel(&self) {
        self.0.canceled.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
    }

    pub fn is_canceled(&self) -> bool {
        self.0.canceled.load(Ordering::Acquire)
    }

    /// Resolves once [`Cancel::cancel`] was called.
    pub async fn canceled(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_canceled() {
                return;
            }
            notified.await;
        }
    }
}

/// What an execution has printed and logged so far, readable while it runs.
#[derive(Debug, Clone)]
pub struct LiveOutput {
    pub(crate) stdout: CappedPipe,
    pub(crate) stderr: CappedPipe,
    pub(crate) log: Arc<Mutex<LogBuffer>>,
}

impl LiveOutput {
    /// Buffers keeping up to `cap` bytes of each of stdout, stderr and log.
    pub fn new(cap: usize) -> Self {
        Self {
            stdout: CappedPipe::new(cap),
            stderr: CappedPipe::new(cap),
            log: Arc::new(Mutex::new(LogBuffer::new(cap))),
        }
    }

    /// Append to stdout what something other than a guest printed (a
    /// host command), as far as the cap allows.
    pub fn push_stdout(&self, bytes: &[u8]) {
        self.stdout.push(bytes);
    }

    /// Append to stderr, as [`LiveOutput::push_stdout`].
    pub fn push_stderr(&self, bytes: &[u8]) {
        self.stderr.push(bytes);
    }

    /// Append a log line, as far as the cap allows.
    pub fn push_log(&self, level: &str, message: String) {
        self.log
            .lock()
            .expect("log lock poisoned")
            .push(level, message);
    }

    /// A copy of everything captured so far.
    pub fn snapshot(&self) -> CapturedOutput {
        let (stdout, stdout_cut) = self.stdout.snapshot();
        let (stderr, stderr_cut) = self.stderr.snapshot();
        let log = self.log.lock().expect("log lock poisoned");
        CapturedOutput {
            stdout,
            stderr,
            log: log.lines.iter().cloned().collect(),
            truncated: stdout_cut || stderr_cut || log.truncated,
        }
    }
}

/// Guest log lines, capped by total bytes like stdout and stderr. An
/// execution's buffer keeps the first lines and drops the rest; a sensor's
/// (`ring`) keeps the most recent ones.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    pub(crate) lines: std::collections::VecDeque<GuestLogLine>,
    pub(crate) bytes: usize,
    pub(crate) cap: usize,
    pub(crate) truncated: bool,
    pub(crate) ring: bool,
    /// The sequence number of `lines[0]` (lines ever pushed before it).
    first_seq: u64,
}

impl LogBuffer {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            lines: Default::default(),
            bytes: 0,
            cap,
            truncated: false,
            ring: false,
            first_seq: 0,
        }
    }

    pub(crate) fn ring(cap: usize) -> Self {
        Self {
            ring: true,
            ..Self::new(cap)
        }
    }

    pub(crate) fn push(&mut self, level: &str, mut message: String) {
        if self.ring {
            // One huge line must not wipe the history: cut it to a quarter
            // of the ring first.
            let most = self.cap / 4;
            if message.len() > most {
                let mut end = most;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                message.truncate(end);
                message.push_str(" [cut]");
            }
            while self.bytes + message.len() > self.cap {
                let Some(old) = self.lines.pop_front() else {
                    break;
                };
                self.bytes -= old.message.len();
                self.first_seq += 1;
                self.truncated = true;
            }
        }
        if self.bytes + message.len() > self.cap {
            self.truncated = true;
            return;
        }
        self.bytes += message.len();
        self.lines.push_back(GuestLogLine {
            level: level.to_owned(),
            message,
        });
    }
}

/// A sensor's recent log lines (its `log` calls and its stdout/stderr, line
/// by line), kept in a ring of `cap` bytes.
#[derive(Debug, Clone)]
pub struct SensorLog(pub(crate) Arc<Mutex<LogBuffer>>);

impl SensorLog {
    pub fn new(cap: usize) -> Self {
        Self(Arc::new(Mutex::new(LogBuffer::ring(cap))))
    }

    /// The lines kept, oldest first.
    pub fn lines(&self) -> Vec<GuestLogLine> {
        let log = self.0.lock().expect("log lock poisoned");
        log.lines.iter().cloned().collect()
    }

    /// The sequence number the next line will get.
    pub(crate) fn next_seq(&self) -> u64 {
        let log = self.0.lock().expect("log lock poisoned");
        log.first_seq + log.lines.len() as u64
    }

    /// The lines kept whose sequence number is `seq` or later.
    pub(crate) fn lines_since(&self, seq: u64) -> Vec<GuestLogLine> {
        let log = self.0.lock().expect("log lock poisoned");
        let skip = usize::try_from(seq.saturating_sub(log.first_seq)).unwrap_or(usize::MAX);
        log.lines.iter().skip(skip).cloned().collect()
    }

    /// Add a line from the host (e.g. why the sensor restarted).
    pub fn host(&self, level: &str, message: String) {
        self.0
            .lock()
            .expect("log lock poisoned")
            .push(level, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancel_wakes_a_waiter_registered_before_or_after() {
        let cancel = Cancel::new();
        let waiter = tokio::spawn({
            let cancel = cancel.clone();
            async move { cancel.canceled().await }
        });
        tokio::task::yield_now().await;
        assert!(!cancel.is_canceled());
        cancel.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(60), waiter)
            .await
            .expect("woken")
            .expect("task");
        // Already canceled: resolves at once.
        cancel.canceled().await;
    }
}
