//! The pooled HTTP client to the providers: HTTP/1.1 and HTTP/2, rustls for HTTPS (webpki roots
//! compiled in, so it works on a machine without a CA bundle), TCP_NODELAY, connect timeout.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use iris_providers::api::ApiFamily;
use iris_providers::routing::{auth_header, upstream_url};

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub fn build_client(connect_timeout: Duration) -> UpstreamClient {
    // Only one rustls provider is compiled in; installing it is idempotent across calls.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https)
}

/// Whether a client error was a timeout while connecting.
pub fn is_connect_timeout(err: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if e.to_string().contains("timed out") {
            return true;
        }
        source = e.source();
    }
    false
}

/// What iris adds to every upstream request of one provider, worked out once per config instead
/// of once per request: the credential header (marked sensitive, so it never shows in a debug
/// print), the `add_headers`, and each API family's endpoint: its parsed URL and, for plain HTTP,
/// its `Host` header. A value the `http` crate refuses is kept as the message every request to
/// the provider fails with.
#[derive(Debug)]
pub struct ProviderUpstream {
    /// The configured credential, for `auth_mode` other than `none`.
    pub auth: Result<Option<(HeaderName, HeaderValue)>, String>,
    pub add_headers: Result<Vec<(HeaderName, HeaderValue)>, String>,
    /// By `ApiFamily::ALL` position: the endpoint's URL without a query string, and the `Host`
    /// header iris sets for it (plain HTTP only; see `host_header`).
    uris: Vec<Option<(Uri, Option<HeaderValue>)>>,
}

impl ProviderUpstream {
    pub fn new(p: &iris_config::Provider) -> ProviderUpstream {
        let auth = match auth_header(p) {
            None => Ok(None),
            Some((name, value)) => match HeaderValue::from_str(&value) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    Ok(Some((HeaderName::from_static(name), v)))
                }
                Err(_) => Err(format!(
                    "provider {} has an API key that is not a valid header value",
                    p.id
                )),
            },
        };
        let add_headers = p
            .add_headers
            .iter()
            .map(|(name, value)| {
                let n = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("provider {}: invalid add_headers name", p.id))?;
                let v = HeaderValue::from_str(value)
                    .map_err(|_| format!("provider {}: invalid add_headers value", p.id))?;
                Ok((n, v))
            })
            .collect();
        let uris = ApiFamily::ALL
            .iter()
            .map(|&f| {
                let uri = upstream_url(p, f, None).parse::<Uri>().ok()?;
                let host = host_header(&uri);
                Some((uri, host))
            })
            .collect();
        ProviderUpstream {
            auth,
            add_headers,
            uris,
        }
    }

    /// The upstream URL of `family`'s endpoint with the client's query string; `None` when it
    /// is not a valid URI.
    pub fn uri(
        &self,
        p: &iris_config::Provider,
        family: ApiFamily,
        query: Option<&str>,
    ) -> Option<Uri> {
        match query.filter(|q| !q.is_empty()) {
            None => self
                .uris
                .get(family.index())?
                .as_ref()
                .map(|(u, _)| u.clone()),
            Some(_) => upstream_url(p, family, query).parse().ok(),
        }
    }

    /// The `Host` header of `family`'s endpoint when it is plain HTTP (the query string does not
    /// change it). Set by iris rather than by the HTTP client, which formats it afresh for every
    /// request to a non-default port (a local vLLM or Ollama).
    pub fn host(&self, family: ApiFamily) -> Option<&HeaderValue> {
        self.uris.get(family.index())?.as_ref()?.1.as_ref()
    }
}

/// The `Host` header for requests to a plain `http://` `uri`: its host, and its port unless it is
/// 80 (what hyper-util's client would set). `None` for any other URI: over HTTPS the connection
/// may turn out to be HTTP/2, which names the host in `:authority` and where hyper-util adds no
/// `Host` (iris adds none either); plain HTTP is always HTTP/1.1 here.
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    if uri.scheme_str() != Some("http") {
        return None;
    }
    let host = uri.host()?;
    let value = match uri.port_u16() {
        Some(port) if port != 80 => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::from_str(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header_is_what_the_client_would_set() {
        let table = [
            // HTTPS may be HTTP/2: left to the client, which sets `Host` on HTTP/1.1 only.
            ("https://api.openai.com/v1/chat", None),
            ("https://gw.example:8443/x", None),
            ("http://127.0.0.1:80/v1", Some("127.0.0.1")),
            ("http://127.0.0.1:11434/v1", Some("127.0.0.1:11434")),
            ("http://[::1]:8000/v1", Some("[::1]:8000")),
            ("http://user:pw@h.example:81/", Some("h.example:81")),
            ("/relative/only", None),
        ];
        for (uri, want) in table {
            let got = host_header(&uri.parse().unwrap()).map(|v| v.to_str().unwrap().to_owned());
            assert_eq!(got.as_deref(), want, "{uri}");
        }
    }
}
