//! stdout/stderr capture with a cap that truncates instead of trapping
//! (wasmtime-wasi's `MemoryOutputPipe` traps when full).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Largest write permit handed to the guest at a time.
const PERMIT: usize = 64 << 10;

#[derive(Debug, Default)]
struct Buffer {
    data: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Buffer {
    fn push(&mut self, bytes: &[u8]) {
        let room = self.cap.saturating_sub(self.data.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.data.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// A clonable handle on one captured stream.
#[derive(Debug, Clone)]
pub(crate) struct CappedPipe(Arc<Mutex<Buffer>>);

impl CappedPipe {
    pub(crate) fn new(cap: usize) -> Self {
        Self(Arc::new(Mutex::new(Buffer {
            data: Vec::new(),
            cap,
            truncated: false,
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Buffer) -> R) -> R {
        f(&mut self.0.lock().expect("output pipe lock poisoned"))
    }

    /// Append `bytes`, as far as the cap allows.
    pub(crate) fn push(&self, bytes: &[u8]) {
        self.with(|b| b.push(bytes));
    }

    /// A copy of what was captured so far (lossy UTF-8), and whether it was cut.
    pub(crate) fn snapshot(&self) -> (String, bool) {
        self.with(|b| (String::from_utf8_lossy(&b.data).into_owned(), b.truncated))
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.with(|b| b.push(&bytes));
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept: bytes beyond the cap are dropped, never refused,
        // so a chatty guest is cut short in its output, not killed.
        Ok(PERMIT)
    }
}

impl AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.with(|b| b.push(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_past_the_cap_are_truncated_not_refused() {
        let mut pipe = CappedPipe::new(8);
        pipe.write(Bytes::from_static(b"hello ")).expect("write");
        pipe.write(Bytes::from_static(b"world"))
            .expect("write past cap");
        assert_eq!(pipe.check_write().expect("still writable"), PERMIT);
        assert_eq!(pipe.snapshot(), ("hello wo".to_owned(), true));
    }
}
