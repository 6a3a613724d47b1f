//! The one place where a gateway error becomes an HTTP answer, in the caller's dialect.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use iris_providers::api::Dialect;
use iris_providers::errors::{ErrorKind, error_body, status};

use crate::body::{RespBody, full};

/// Everything that can stop a request before (or instead of) the upstream's own answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("identity could not be checked: {0}")]
    IdentityUnavailable(String),
    #[error(
        "access denied: no role granted to {who}; an admin must add a grant with role \"user\" for this identity (GET /api/whoami shows what iris sees)"
    )]
    NoRole { who: String },
    #[error("model {model:?} is not granted to {who} (or does not exist)")]
    ModelNotGranted { model: String, who: String },
    #[error("model {0:?} not found: no enabled provider serves it")]
    UnknownModel(String),
    #[error(
        "model {model:?} is not available on this API ({api}); it is served through another API"
    )]
    WrongApi { model: String, api: &'static str },
    #[error("the request body has no \"model\" field")]
    MissingModel,
    #[error("invalid request body: {0}")]
    BadRequest(String),
    #[error("request body is larger than the gateway's limit of {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0:.0}s")]
    RequestTimeout(f64),
    #[error("too many failed iris key attempts from this address; wait a minute")]
    TooManyKeyFailures,
    /// A browser request from another site, or for a host name iris cannot vouch for.
    #[error("{}", if *rebinding { crate::admin::REBINDING_REFUSED } else {
        "cross-site browser requests are refused: call iris from a program, not from a web page on another site"
    })]
    CrossSite { rebinding: bool },
    #[error("method {0} is not allowed on this path")]
    MethodNotAllowed(String),
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("upstream provider {provider:?} is unreachable")]
    UpstreamUnreachable { provider: String, detail: String },
    #[error("upstream provider {provider:?} did not answer within {secs:.1}s")]
    UpstreamTimeout { provider: String, secs: f64 },
    #[error("the usage store is unavailable")]
    StoreUnavailable(String),
    #[error("internal gateway error")]
    Internal(String),
}

impl GatewayError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            GatewayError::Unauthenticated(_) => ErrorKind::Unauthenticated,
            GatewayError::IdentityUnavailable(_) => ErrorKind::Overloaded,
            GatewayError::NoRole { .. } => ErrorKind::PermissionDenied,
            GatewayError::ModelNotGranted { .. } => ErrorKind::NotFound,
            GatewayError::UnknownModel(_) => ErrorKind::NotFound,
            GatewayError::WrongApi { .. } => ErrorKind::NotFound,
            GatewayError::MissingModel => ErrorKind::BadRequest,
            GatewayError::BadRequest(_) => ErrorKind::BadRequest,
            GatewayError::TooLarge(_) => ErrorKind::PayloadTooLarge,
            GatewayError::RequestTimeout(_) => ErrorKind::RequestTimeout,
            GatewayError::TooManyKeyFailures => ErrorKind::RateLimited,
            GatewayError::CrossSite { .. } => ErrorKind::PermissionDenied,
            GatewayError::MethodNotAllowed(_) => ErrorKind::MethodNotAllowed,
            GatewayError::NotFound(_) => ErrorKind::NoSuchEndpoint,
            GatewayError::UpstreamUnreachable { .. } => ErrorKind::UpstreamUnavailable,
            GatewayError::UpstreamTimeout { .. } => ErrorKind::UpstreamTimeout,
            GatewayError::StoreUnavailable(_) => ErrorKind::Overloaded,
            GatewayError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The short class stored in the usage record.
    pub fn class(&self) -> &'static str {
        match self {
            GatewayError::Unauthenticated(_) => "unauthenticated",
            GatewayError::IdentityUnavailable(_) => "identity_unavailable",
            GatewayError::NoRole { .. } => "denied_no_role",
            GatewayError::ModelNotGranted { .. } => "denied_model",
            GatewayError::UnknownModel(_) => "unknown_model",
            GatewayError::WrongApi { .. } => "wrong_api",
            GatewayError::MissingModel => "missing_model",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::TooLarge(_) => "too_large",
            GatewayError::RequestTimeout(_) => "client_timeout",
            GatewayError::TooManyKeyFailures => "key_failures",
            GatewayError::CrossSite { .. } => "cross_site",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::NotFound(_) => "not_found",
            GatewayError::UpstreamUnreachable { .. } => "upstream_unreachable",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::StoreUnavailable(_) => "store_unavailable",
            GatewayError::Internal(_) => "internal",
        }
    }

    /// Detail for the server log (never sent to the client).
    pub fn log_detail(&self) -> Option<&str> {
        match self {
            GatewayError::UpstreamUnreachable { detail, .. } => Some(detail),
            GatewayError::IdentityUnavailable(d)
            | GatewayError::StoreUnavailable(d)
            | GatewayError::Internal(d) => Some(d),
            _ => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(status(self.kind())).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The answer in the caller's dialect.
    pub fn to_response(&self, dialect: Dialect, request_id: &str) -> Response<RespBody> {
        let body = error_body(dialect, self.kind(), &self.to_string());
        let mut resp = Response::new(full(Bytes::from(body)));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-iris-request-id", v);
        }
        if matches!(self, GatewayError::TooManyKeyFailures) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        }
        if matches!(self, GatewayError::Unauthenticated(_)) {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"iris\""),
            );
        }
        resp
    }
}
