//! Which HTTP version a new connection speaks, told from its first bytes without taking them off
//! the socket, and the connection served by a builder for that version alone.
//!
//! hyper-util's `auto` builder tells HTTP/1.1 from HTTP/2 with prior knowledge (h2c) by reading
//! up to 24 bytes (the length of HTTP/2's preface) into a buffer of its own and handing them back
//! in front of the socket. hyper's first read then returns only those bytes, the request head is
//! incomplete, and its second read grows the connection's read buffer from 8 to 16 KiB (a
//! `realloc` and a copy into fresh pages), which the connection keeps for its life. Its
//! `into_owned` also clones the whole builder for every connection. Measured on the 5,000 held
//! streams of the benchmark: 276 MB peak RSS before, 223 MB after (captures off: 259 and 203 MB).
//!
//! Here the first bytes are peeked (`MSG_PEEK`) and stay in the socket, and the connection goes
//! to a builder limited to the version they show (`http1_only` or `http2_only`), which hands
//! hyper the socket as it is: hyper reads the whole head at once into its first 8 KiB. Bytes too
//! few to tell (a prefix of the preface, or none when the peer closed at once) leave the
//! connection to the `auto` builder, which reads until it can: an h2c client that sends its
//! preface in pieces is served as before, at the cost every connection had before.

use std::future::Future;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::{HttpService, Service};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::{Builder, HttpServerConnExec};
use tokio::io::ReadBuf;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a client speaking HTTP/2 with prior knowledge sends first (RFC 9113, section 3.4).
pub const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection's first bytes show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// They differ from HTTP/2's preface: HTTP/1.x (or garbage, which hyper answers 400).
    Http1,
    /// They are the preface.
    Http2,
    /// Too few to tell: a prefix of the preface so far, or none.
    Unknown,
}

/// The protocol `first` (a connection's first bytes, as many as have arrived) shows.
pub fn classify(first: &[u8]) -> Protocol {
    let n = first.len().min(H2_PREFACE.len());
    if first[..n] != H2_PREFACE[..n] {
        Protocol::Http1
    } else if n == H2_PREFACE.len() {
        Protocol::Http2
    } else {
        Protocol::Unknown
    }
}

/// The listener's builders: the configured one (`auto`, both versions), and one limited to each.
pub struct Builders {
    auto: Builder<TokioExecutor>,
    http1: Builder<TokioExecutor>,
    http2: Builder<TokioExecutor>,
}

impl Builders {
    /// `auto` must not be limited to one version yet (hyper-util asserts it).
    pub fn new(auto: Builder<TokioExecutor>) -> Builders {
        Builders {
            http1: auto.clone().http1_only(),
            http2: auto.clone().http2_only(),
            auto,
        }
    }

    fn for_protocol(&self, p: Protocol) -> &Builder<TokioExecutor> {
        match p {
            Protocol::Http1 => &self.http1,
            Protocol::Http2 => &self.http2,
            Protocol::Unknown => &self.auto,
        }
    }
}

/// What hyper-util's connections ask of a service, named once for both impls below.
pub trait ConnService:
    Service<Request<Incoming>, Response = Response<Self::Body>, Future: 'static, Error: Into<BoxError>>
{
    type Body: Body<Error: Into<BoxError>> + 'static;
}

impl<S, B> ConnService for S
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Future: 'static,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    type Body = B;
}

// `serve_connection`, not `serve_connection_with_upgrades`: the latter reads the version even
// from a builder limited to one. iris switches no protocol (it strips `Upgrade` as hop-by-hop
// and never answers 101), so what upgrades would add is never used.
type Served<S> =
    hyper_util::server::conn::auto::Connection<'static, TokioIo<TcpStream>, S, TokioExecutor>;

pin_project_lite::pin_project! {
    /// A connection accepted on the listener: its first bytes peeked, then served by the builder
    /// for what they show. A drop-in for what `Builder::serve_connection` returns, told to shut
    /// down the same way: while it is still waiting for its first bytes, it ends at once (with
    /// `Ok`, where hyper-util's version read ended with an `Interrupted` error).
    pub struct Connection<S>
    where
        S: HttpService<Incoming>,
    {
        #[pin]
        state: State<S>,
        // What the first bytes showed, once peeked.
        protocol: Option<Protocol>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S>
    where
        S: HttpService<Incoming>,
    {
        Peeking {
            stream: Option<TcpStream>,
            service: Option<S>,
            builders: Arc<Builders>,
        },
        Serving {
            #[pin]
            conn: Served<S>,
        },
        Ended,
    }
}

impl<S> Connection<S>
where
    S: HttpService<Incoming>,
{
    pub fn new(stream: TcpStream, service: S, builders: Arc<Builders>) -> Connection<S> {
        Connection {
            state: State::Peeking {
                stream: Some(stream),
                service: Some(service),
                builders,
            },
            protocol: None,
        }
    }

    /// What the connection's first bytes showed; `None` before they were peeked (or when the
    /// peek failed).
    pub fn protocol(&self) -> Option<Protocol> {
        self.protocol
    }
}

impl<S: ConnService> Future for Connection<S>
where
    TokioExecutor: HttpServerConnExec<S::Future, S::Body>,
{
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            let mut state = this.state;
            let conn = match state.as_mut().project() {
                StateProj::Peeking {
                    stream,
                    service,
                    builders,
                } => {
                    let Some(s) = stream.as_ref() else {
                        state.set(State::Ended);
                        continue;
                    };
                    let mut first = [MaybeUninit::<u8>::uninit(); H2_PREFACE.len()];
                    let mut buf = ReadBuf::uninit(&mut first);
                    if let Err(e) = ready!(s.poll_peek(cx, &mut buf)) {
                        state.set(State::Ended);
                        return Poll::Ready(Err(e.into()));
                    }
                    let protocol = classify(buf.filled());
                    *this.protocol = Some(protocol);
                    let (Some(s), Some(svc)) = (stream.take(), service.take()) else {
                        state.set(State::Ended);
                        continue;
                    };
                    builders
                        .for_protocol(protocol)
                        .serve_connection(TokioIo::new(s), svc)
                        .into_owned()
                }
                StateProj::Serving { conn } => return conn.poll(cx),
                StateProj::Ended => return Poll::Ready(Ok(())),
            };
            state.set(State::Serving { conn });
        }
    }
}

impl<S: ConnService> crate::drain::Graceful for Connection<S>
where
    TokioExecutor: HttpServerConnExec<S::Future, S::Body>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        let mut state = self.project().state;
        match state.as_mut().project() {
            // Nothing read yet: like hyper-util's builder while it reads the version, it ends.
            StateProj::Peeking { .. } => state.set(State::Ended),
            StateProj::Serving { conn } => conn.graceful_shutdown(),
            StateProj::Ended => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection's first bytes, as a client sends them, reach the classifier through the peek
    /// (and stay for hyper: a request told HTTP/1 is answered).
    #[tokio::test]
    async fn a_connection_goes_to_the_builder_its_first_bytes_show() {
        use http_body_util::Empty;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let builders = Arc::new(Builders::new(Builder::new(TokioExecutor::new())));
        let service = hyper::service::service_fn(|_req: Request<Incoming>| async {
            Ok::<_, std::convert::Infallible>(Response::new(Empty::<bytes::Bytes>::new()))
        });
        for (first, want) in [
            (
                &b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"[..],
                Protocol::Http1,
            ),
            (H2_PREFACE, Protocol::Http2),
            (b"P", Protocol::Unknown),
        ] {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(first).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            let mut conn = Box::pin(Connection::new(accepted, service, builders.clone()));
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while conn.protocol().is_none() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{first:?} never peeked"
                );
                let _ = futures_util::poll!(conn.as_mut());
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            assert_eq!(conn.protocol(), Some(want), "{first:?}");
            if want == Protocol::Http1 {
                let serve = tokio::spawn(conn);
                let mut answer = Vec::new();
                client.read_to_end(&mut answer).await.unwrap();
                assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
                serve.await.unwrap().unwrap();
            }
        }
    }

    #[test]
    fn requests_are_told_from_the_preface_by_their_first_differing_byte() {
        for first in [
            &b"POST /v1/chat/completions HTTP/1.1\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"PUT",
            b"PO",
            b"PRI * HTTP/1.1\r\n",
            b"\x16\x03\x01",
            b"x",
        ] {
            assert_eq!(classify(first), Protocol::Http1, "{first:?}");
        }
    }

    #[test]
    fn the_whole_preface_is_http2_with_or_without_what_follows() {
        assert_eq!(classify(H2_PREFACE), Protocol::Http2);
        let mut more = H2_PREFACE.to_vec();
        more.extend_from_slice(&[0, 0, 18, 4, 0, 0, 0, 0, 0]);
        assert_eq!(classify(&more), Protocol::Http2);
    }

    #[test]
    fn a_prefix_of_the_preface_or_nothing_cannot_be_told() {
        assert_eq!(classify(b""), Protocol::Unknown);
        for n in 1..H2_PREFACE.len() {
            assert_eq!(classify(&H2_PREFACE[..n]), Protocol::Unknown, "{n} bytes");
        }
        // One byte off at the end is not the preface.
        let mut off = *H2_PREFACE;
        off[23] = b'x';
        assert_eq!(classify(&off), Protocol::Http1);
    }
}
