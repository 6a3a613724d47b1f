//! The baseline: a minimal passthrough proxy over the same stack iris uses (hyper 1 with
//! hyper-util's auto HTTP/1.1 + h2c server, TCP_NODELAY, the pooled hyper-util client), with no
//! identity, no policy and no parsing. Whatever iris costs beyond this proxy is iris's own work.
//!
//! It forwards method, path, query, headers (minus hop-by-hop ones) and the body as a stream,
//! and streams the answer back frame by frame.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Uri, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type ProxyClient = Client<HttpConnector, Incoming>;
type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Headers that describe one hop and are never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        h.remove(*name);
    }
}

/// The upstream client: same pool settings as iris's (idle 90 s, 256 idle per host).
pub fn client() -> ProxyClient {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(http)
}

/// Forward one request to `upstream` (an `http://host:port` authority).
pub async fn forward(
    client: &ProxyClient,
    upstream: &str,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    parts.uri = match format!("http://{upstream}{pq}").parse::<Uri>() {
        Ok(u) => u,
        Err(_) => return status(StatusCode::BAD_REQUEST),
    };
    strip_hop_by_hop(&mut parts.headers);
    // The client sets Host from the URI.
    parts.headers.remove(header::HOST);
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Either::Left(body))
        }
        Err(e) => {
            tracing::debug!(error = %e, "upstream request failed");
            status(StatusCode::BAD_GATEWAY)
        }
    }
}

fn status(s: StatusCode) -> Response<ProxyBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
    *r.status_mut() = s;
    r
}

/// Serve until `shutdown` resolves. `upstream` is `host:port` (loopback).
pub async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    if !upstream.ip().is_loopback() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the baseline proxy only forwards to loopback, not {upstream}"),
        ));
    }
    let client = client();
    let upstream: std::sync::Arc<str> = upstream.to_string().into();
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let client = client.clone();
                let upstream = upstream.clone();
                async move { Ok::<_, Infallible>(forward(&client, &upstream, req).await) }
            });
            if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
