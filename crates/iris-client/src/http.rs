//! The hyper client shared by [`crate::unplug`] and [`crate::gateway`], gateway URL parsing, and
//! turning an error chain into the one line a person needs ("Connection refused (os error 111)").

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::uri::{Authority, Scheme};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;
/// Body type of every request and response this crate builds: a buffer or a stream passed through.
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;
pub(crate) type HttpsClient = Client<HttpsConnector<HttpConnector>, Body>;

/// How long a TCP (and TLS) connect to a gateway may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled client for `http://` and `https://` URLs: `TCP_NODELAY` on every socket (see
/// clients.md: Nagle plus delayed ACK costs ~40 ms per small write), rustls with the webpki root
/// set and the ring provider chosen explicitly (so a second provider elsewhere in the build can
/// never make rustls panic over which one is the default), HTTP/2 when TLS negotiates it.
pub(crate) fn https_client() -> Result<HttpsClient, rustls::Error> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let https = HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)?
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A gateway base URL, checked: `http` or `https`, a host, no user info, no query. A path is kept
/// as a prefix (a gateway behind a reverse proxy at `https://host/iris`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl {
    scheme: Scheme,
    authority: Authority,
    /// Empty or `/something` (never a trailing slash).
    prefix: String,
}

impl std::fmt::Debug for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BaseUrl({self})")
    }
}

impl std::fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

impl BaseUrl {
    /// Parses `url`; the error says what is wrong with it, for a sentence that names the URL.
    pub(crate) fn parse(url: &str) -> Result<BaseUrl, String> {
        let url = url.trim();
        if url.is_empty() {
            return Err("it is empty".to_owned());
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("it contains whitespace".to_owned());
        }
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| e.to_string())?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            Some(other) => return Err(format!("the scheme `{other}` is not http or https")),
            None => return Err("it has no scheme (start it with http:// or https://)".to_owned()),
        };
        let Some(authority) = uri.authority().cloned() else {
            return Err("it has no host".to_owned());
        };
        if authority.as_str().contains('@') {
            return Err(
                "it has a user name or password in it (iris sends keys in headers, never in URLs)"
                    .to_owned(),
            );
        }
        if authority.host().is_empty() {
            return Err("it has no host".to_owned());
        }
        if uri.query().is_some() {
            return Err("it has a query string".to_owned());
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(BaseUrl {
            scheme,
            authority,
            prefix,
        })
    }

    /// The URL of `path_and_query` (which starts with `/`) under this base.
    pub(crate) fn join(&self, path_and_query: &str) -> Result<Uri, http::Error> {
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.prefix, path_and_query))
            .build()?;
        Ok(uri)
    }
}

/// The innermost useful description of an error chain: the deepest `io::Error` (which carries the
/// OS's words, "Connection refused (os error 111)"), or else the deepest message.
pub(crate) struct Cause {
    pub(crate) message: String,
    pub(crate) io_kind: Option<std::io::ErrorKind>,
}

pub(crate) fn cause(err: &(dyn StdError + 'static)) -> Cause {
    let mut deepest_io: Option<&std::io::Error> = None;
    let mut deepest: &(dyn StdError + 'static) = err;
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            deepest_io = Some(io);
        }
        deepest = e;
        current = e.source();
    }
    match deepest_io {
        Some(io) => Cause {
            message: io.to_string(),
            io_kind: Some(io.kind()),
        },
        None => Cause {
            message: deepest.to_string(),
            io_kind: None,
        },
    }
}

/// `{"error": {"message": ...}}` (OpenAI and iris) or `{"type":"error","error":{...}}`
/// (Anthropic) or `{"error": "text"}`: the message, else the body text, shortened.
pub(crate) fn error_message(body: &[u8]) -> Option<String> {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let err = v.get("error");
        if let Some(m) = err
            .and_then(|e| e.get("message"))
            .and_then(serde_json::Value::as_str)
        {
            return Some(m.to_owned());
        }
        if let Some(m) = err.and_then(serde_json::Value::as_str) {
            return Some(m.to_owned());
        }
        if let Some(m) = v.get("message").and_then(serde_json::Value::as_str) {
            return Some(m.to_owned());
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(shorten(text, 300))
}

/// At most `max` characters of `s`, with `…` when cut.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let ok = [
            ("http://127.0.0.1:4747", "http://127.0.0.1:4747"),
            ("http://127.0.0.1:4747/", "http://127.0.0.1:4747"),
            (
                "https://iris.example.com/gw/",
                "https://iris.example.com/gw",
            ),
            (" http://ai ", "http://ai"),
        ];
        for (input, want) in ok {
            let b = BaseUrl::parse(input).unwrap();
            assert_eq!(b.to_string(), want, "{input}");
        }
        let b = BaseUrl::parse("https://iris.example.com/gw/").unwrap();
        assert_eq!(
            b.join("/v1/messages?beta=true").unwrap().to_string(),
            "https://iris.example.com/gw/v1/messages?beta=true"
        );
        for bad in [
            "",
            "127.0.0.1:4747",
            "ftp://x",
            "http://user:pw@host",
            "http://h/?a=b",
            "http://h /x",
        ] {
            assert!(BaseUrl::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad key","type":"x"}}"#).as_deref(),
            Some("bad key")
        );
        assert_eq!(
            error_message(br#"{"type":"error","error":{"type":"x","message":"m"}}"#).as_deref(),
            Some("m")
        );
        assert_eq!(
            error_message(b"  plain text\n").as_deref(),
            Some("plain text")
        );
        assert_eq!(error_message(b""), None);
        assert_eq!(shorten("abcdef", 3), "abc…");
    }
}
