//! The fake tailscaled's accept loop and the HTTP helpers both servers share. (The mock
//! provider has its own accept loop, `mock::conn`, because its fault modes reach below HTTP.)
//!
//! The loop runs until the returned [`ShutdownGuard`] is dropped; dropping it also drops every
//! open connection, so an in-process server never outlives its owner.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::sync::watch;

/// Response body type of both servers: a full buffer or a (possibly delayed) stream of frames.
pub(crate) type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// Stops the server it came from when dropped.
#[derive(Debug)]
pub(crate) struct ShutdownGuard {
    _tx: watch::Sender<()>,
}

/// Serves HTTP/1.1 on a unix socket (what tailscaled's LocalAPI speaks).
pub(crate) fn spawn_unix<F, Fut>(listener: UnixListener, handler: F) -> ShutdownGuard
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
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            let mut conn_stop = rx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    r = conn => if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended with an error");
                    },
                    _ = conn_stop.changed() => {}
                }
            });
        }
    });
    ShutdownGuard { _tx: tx }
}

/// A complete body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into()).boxed_unsync()
}

/// A JSON response with `status`.
pub(crate) fn json_response(status: u16, value: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A `text/plain` response with `status` (Go's `http.Error` shape: message plus newline).
pub(crate) fn text_response(status: u16, message: &str) -> Response<Body> {
    let mut resp = Response::new(full(format!("{message}\n")));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        http::HeaderName::from_static("x-content-type-options"),
        http::HeaderValue::from_static("nosniff"),
    );
    resp
}

/// Decodes `%XX` escapes and `+` in a query component; invalid escapes are kept as written.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of query parameter `name`, percent-decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        let cases = [
            ("127.0.0.2%3A4567", "127.0.0.2:4567"),
            ("%5B%3A%3A1%5D%3A80", "[::1]:80"),
            ("a+b", "a b"),
            ("100%", "100%"),
            ("%zz", "%zz"),
            ("%4", "%4"),
            ("plain", "plain"),
        ];
        for (input, want) in cases {
            assert_eq!(percent_decode(input), want, "input {input}");
        }
    }

    #[test]
    fn query_params() {
        let q = Some("proto=tcp&addr=127.0.0.2%3A80&empty");
        assert_eq!(query_param(q, "addr").as_deref(), Some("127.0.0.2:80"));
        assert_eq!(query_param(q, "proto").as_deref(), Some("tcp"));
        assert_eq!(query_param(q, "empty").as_deref(), Some(""));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(None, "addr"), None);
    }
}
