//! The write timeout: a response must be written within `write_timeout` of its request, or the
//! connection is closed (Go's `http.Server.WriteTimeout`, which exporters built on it share).
//! hyper has no such timeout, so it lives in the connection's I/O: `WriteDeadlineIo` wraps the
//! stream, the service arms a `WriteDeadline` when a request arrives, and a write still
//! unfinished at that deadline fails with `TimedOut`, which ends the connection. A client that
//! reads a large response very slowly (or stops reading) therefore holds its slot for at most
//! `write_timeout`.
//!
//! At the deadline the socket is also set to reset on close (`SO_LINGER` 0), so what the kernel
//! still buffers for that client is dropped with the connection instead of trickling out.
//!
//! Reads are untouched (the header read timeout bounds those), and an idle kept-alive
//! connection whose last deadline has passed is not affected: only writes are checked.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The deadline of the response being written on one connection.
#[derive(Debug, Clone)]
pub struct WriteDeadline {
    timeout: Duration,
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl WriteDeadline {
    pub fn new(timeout: Duration) -> WriteDeadline {
        WriteDeadline {
            timeout,
            deadline: Arc::new(Mutex::new(None)),
        }
    }

    /// Starts the clock for the response to the request that just arrived.
    pub fn arm(&self) {
        *self
            .deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now() + self.timeout);
    }

    fn current(&self) -> Option<Instant> {
        *self
            .deadline
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a stream does when its write deadline passes, before the error ends the connection.
pub trait AbortOnTimeout {
    fn abort(&self) {}
}

impl AbortOnTimeout for tokio::net::TcpStream {
    /// Reset on close: the unsent rest of the response is discarded, not sent at the slow
    /// client's pace.
    fn abort(&self) {
        let _ = self.set_zero_linger();
    }
}

impl AbortOnTimeout for tokio::io::DuplexStream {}

/// A stream whose writes fail once the armed deadline has passed.
pub struct WriteDeadlineIo<T> {
    inner: T,
    deadline: WriteDeadline,
    /// Wakes a write that is waiting for the peer when the deadline comes.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<T: AbortOnTimeout> WriteDeadlineIo<T> {
    pub fn new(inner: T, deadline: WriteDeadline) -> WriteDeadlineIo<T> {
        WriteDeadlineIo {
            inner,
            deadline,
            timer: None,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// `Err(TimedOut)` when past the deadline; with a pending write, also makes sure the task
    /// is woken at the deadline.
    fn check(&mut self, context: &mut Context<'_>, pending: bool) -> io::Result<()> {
        let Some(deadline) = self.deadline.current() else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(self.timed_out());
        }
        if pending {
            match &mut self.timer {
                Some(timer) if timer.deadline() == deadline => {}
                timer => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            if let Some(timer) = &mut self.timer {
                if timer.as_mut().poll(context).is_ready() {
                    return Err(self.timed_out());
                }
            }
        }
        Ok(())
    }

    fn timed_out(&self) -> io::Error {
        self.inner.abort();
        io::Error::new(
            io::ErrorKind::TimedOut,
            "the response was not written within write_timeout",
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadlineIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(context, buffer)
    }
}

impl<T: AsyncWrite + AbortOnTimeout + Unpin> AsyncWrite for WriteDeadlineIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(context, false)?;
        match Pin::new(&mut this.inner).poll_write(context, buffer) {
            Poll::Pending => {
                this.check(context, true)?;
                Poll::Pending
            }
            ready => ready,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check(context, false)?;
        match Pin::new(&mut this.inner).poll_write_vectored(context, buffers) {
            Poll::Pending => {
                this.check(context, true)?;
                Poll::Pending
            }
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(context) {
            Poll::Pending => {
                this.check(context, true)?;
                Poll::Pending
            }
            ready => ready,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_stalled_write_fails_at_the_deadline_and_a_read_one_succeeds() {
        // A 64 KiB pipe that nobody reads fills up, so the write waits for the peer.
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let deadline = WriteDeadline::new(Duration::from_millis(200));
        let mut stream = WriteDeadlineIo::new(near, deadline.clone());
        stream
            .write_all(b"unarmed writes are not limited")
            .await
            .unwrap();
        let mut sink = vec![0u8; 30];
        far.read_exact(&mut sink).await.unwrap();

        deadline.arm();
        let started = std::time::Instant::now();
        let error = stream.write_all(&vec![7u8; 1 << 20]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(190) && waited < Duration::from_secs(5),
            "cut off at the deadline, after {waited:?}"
        );

        // A new request re-arms the clock; a reader that keeps up is never cut off.
        let (near, mut far) = tokio::io::duplex(64 * 1024);
        let deadline = WriteDeadline::new(Duration::from_secs(5));
        let mut stream = WriteDeadlineIo::new(near, deadline.clone());
        deadline.arm();
        let reader = tokio::spawn(async move {
            let mut received = Vec::new();
            far.read_to_end(&mut received).await.unwrap();
            received.len()
        });
        stream.write_all(&vec![7u8; 1 << 20]).await.unwrap();
        stream.shutdown().await.unwrap();
        drop(stream);
        assert_eq!(reader.await.unwrap(), 1 << 20);
    }
}
