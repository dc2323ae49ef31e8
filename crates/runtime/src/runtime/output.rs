//! Guest stdout and stderr, captured for the execution's journal and
//! bounded: one budget for both streams of an invocation. A write past the
//! budget ends the invocation with an error naming the limit, so a guest
//! printing in a loop cannot fill the host's memory.

use bytes::{Bytes, BytesMut};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Which stream a [`CapturedStream`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Default)]
struct State {
    stdout: BytesMut,
    stderr: BytesMut,
    /// Bytes both streams may hold together.
    limit: usize,
    /// Set when a write did not fit.
    exceeded: bool,
}

/// The captured output of one invocation (both streams).
#[derive(Debug, Clone)]
pub struct CapturedOutput(Arc<Mutex<State>>);

impl CapturedOutput {
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Mutex::new(State {
            limit,
            ..State::default()
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer of one stream, for the WASI context.
    pub fn stream(&self, stream: Stream) -> CapturedStream {
        CapturedStream {
            output: self.clone(),
            stream,
        }
    }

    /// Empties both streams and sets a new limit: the output of another
    /// invocation begins.
    pub fn reset(&self, limit: usize) {
        let mut state = self.state();
        state.stdout.clear();
        state.stderr.clear();
        state.limit = limit;
        state.exceeded = false;
    }

    /// What the stream holds so far.
    pub fn contents(&self, stream: Stream) -> Bytes {
        let state = self.state();
        match stream {
            Stream::Stdout => state.stdout.clone().freeze(),
            Stream::Stderr => state.stderr.clone().freeze(),
        }
    }

    /// What `stream` holds past its first `from` bytes, if anything.
    pub fn since(&self, stream: Stream, from: usize) -> Option<Bytes> {
        let state = self.state();
        let written = match stream {
            Stream::Stdout => &state.stdout,
            Stream::Stderr => &state.stderr,
        };
        (written.len() > from).then(|| Bytes::copy_from_slice(&written[from..]))
    }

    /// Whether a write was refused for going past the limit.
    pub fn exceeded(&self) -> bool {
        self.state().exceeded
    }

    pub fn limit(&self) -> usize {
        self.state().limit
    }

    fn write(&self, stream: Stream, bytes: &[u8]) -> Result<(), StreamError> {
        let mut state = self.state();
        let used = state.stdout.len() + state.stderr.len();
        if used + bytes.len() > state.limit {
            state.exceeded = true;
            return Err(StreamError::Trap(wasmtime::format_err!(
                "the invocation wrote more than {} bytes to stdout and stderr (max output)",
                state.limit
            )));
        }
        match stream {
            Stream::Stdout => state.stdout.extend_from_slice(bytes),
            Stream::Stderr => state.stderr.extend_from_slice(bytes),
        }
        Ok(())
    }
}

/// One stream of a [`CapturedOutput`].
#[derive(Debug, Clone)]
pub struct CapturedStream {
    output: CapturedOutput,
    stream: Stream,
}

impl IsTerminal for CapturedStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for CapturedStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.output.write(self.stream, &bytes)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Writes are accepted whole or end the invocation: never block.
        Ok(64 << 10)
    }
}

#[async_trait::async_trait]
impl Pollable for CapturedStream {
    async fn ready(&mut self) {}
}

impl AsyncWrite for CapturedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.output
                .write(self.stream, buf)
                .map(|()| buf.len())
                .map_err(|e| std::io::Error::other(e.to_string())),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_streams_share_one_budget() {
        let out = CapturedOutput::new(10);
        out.write(Stream::Stdout, b"hello").unwrap();
        out.write(Stream::Stderr, b"oops").unwrap();
        assert!(!out.exceeded());
        let refused = out.write(Stream::Stdout, b"!!").unwrap_err();
        assert!(refused.to_string().contains("max output"), "{refused}");
        assert!(out.exceeded());
        assert_eq!(&out.contents(Stream::Stdout)[..], b"hello");
        assert_eq!(&out.contents(Stream::Stderr)[..], b"oops");
    }
}
