//! The mock's accept loop. It is the shared one (HTTP/1.1 and h2c, `TCP_NODELAY`, everything
//! dropped with the [`Stop`] guard) plus what the fault modes need below HTTP: each connection
//! carries a [`ConnFaults`] (in the request's extensions) through which a handler can close the
//! connection at once, with a TCP reset when asked, or make every later write trickle one byte at
//! a time. The number of open connections is counted, so a test can see that an upstream
//! connection was really closed.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Sleep;

use crate::server::Body;

/// Stops the accept loop and drops every open connection when dropped.
#[derive(Debug)]
pub(crate) struct Stop {
    _tx: watch::Sender<()>,
}

/// Per-connection fault controls, found in each request's extensions as `Arc<ConnFaults>`.
#[derive(Debug, Default)]
pub(crate) struct ConnFaults {
    abort: Notify,
    reset: AtomicBool,
    trickle_ms: AtomicU64,
}

impl ConnFaults {
    /// Close the connection now, without finishing the answer; `reset` sends a TCP RST instead
    /// of a FIN.
    pub fn close(&self, reset: bool) {
        self.reset.store(reset, Ordering::Release);
        // `notify_one` keeps a permit when the connection task is not waiting yet.
        self.abort.notify_one();
    }

    /// From now on, write one byte every `ms` milliseconds (the whole answer, head included).
    pub fn trickle(&self, ms: u64) {
        self.trickle_ms.store(ms.max(1), Ordering::Release);
    }
}

/// Counts a connection as open for as long as it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `listener` until the returned guard is dropped. `open` counts the live connections.
pub(crate) fn spawn<F, Fut>(listener: TcpListener, open: Arc<AtomicUsize>, handler: F) -> Stop
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let (tx, rx) = watch::channel(());
    tokio::spawn(async move {
        let mut stop = rx.clone();
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                _ = stop.changed() => return,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "set_nodelay failed");
            }
            open.fetch_add(1, Ordering::AcqRel);
            let guard = OpenGuard(open.clone());
            let handler = handler.clone();
            let mut conn_stop = rx.clone();
            tokio::spawn(async move {
                let _guard = guard;
                let faults = Arc::new(ConnFaults::default());
                let io = FaultIo::new(stream, faults.clone());
                let svc_faults = faults.clone();
                let svc = service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(svc_faults.clone());
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(io), svc);
                // Leaving the select drops `conn` and with it the socket (reset when asked).
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    },
                    _ = conn_stop.changed() => {}
                    _ = faults.abort.notified() => {}
                }
            });
        }
    });
    Stop { _tx: tx }
}

/// The socket under hyper: passes everything through, except that writes trickle when asked and
/// the socket is closed with a reset when asked.
struct FaultIo {
    stream: TcpStream,
    faults: Arc<ConnFaults>,
    /// While trickling: the wait before the next byte may go out.
    wait: Option<Pin<Box<Sleep>>>,
}

impl FaultIo {
    fn new(stream: TcpStream, faults: Arc<ConnFaults>) -> Self {
        Self {
            stream,
            faults,
            wait: None,
        }
    }

    /// `Some(n)` when trickling: write at most one byte of `buf`, then wait.
    fn poll_trickle(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Option<Poll<io::Result<usize>>> {
        let ms = self.faults.trickle_ms.load(Ordering::Acquire);
        if ms == 0 {
            return None;
        }
        if let Some(wait) = self.wait.as_mut() {
            if wait.as_mut().poll(cx).is_pending() {
                return Some(Poll::Pending);
            }
            self.wait = None;
        }
        let Some(first) = buf.first() else {
            return Some(Poll::Ready(Ok(0)));
        };
        let written = match Pin::new(&mut self.stream).poll_write(cx, std::slice::from_ref(first)) {
            Poll::Ready(Ok(n)) => n,
            other => return Some(other),
        };
        self.wait = Some(Box::pin(tokio::time::sleep(Duration::from_millis(ms))));
        Some(Poll::Ready(Ok(written)))
    }
}

impl Drop for FaultIo {
    fn drop(&mut self) {
        if self.faults.reset.load(Ordering::Acquire) {
            // SO_LINGER 0: close() sends a RST and returns at once (it never blocks the thread,
            // which is what the deprecation warns about for other linger values).
            #[allow(deprecated)]
            let _ = self.stream.set_linger(Some(Duration::ZERO));
        }
    }
}

impl AsyncRead for FaultIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FaultIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(p) = this.poll_trickle(cx, buf) {
            return p;
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let first = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &b[..]);
        if let Some(p) = this.poll_trickle(cx, first) {
            return p;
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
