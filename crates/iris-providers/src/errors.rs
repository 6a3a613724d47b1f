//! The one place that knows error body shapes, per API dialect, and the status of each kind.
//!
//! OpenAI answers `{"error":{"message","type","param","code"}}`; OpenAI's SDKs choose their
//! exception from the HTTP status, and OpenAI itself uses `type: "invalid_request_error"` for
//! nearly every 4xx, with `code` telling them apart (`invalid_api_key`, `model_not_found`). iris
//! follows that. Anthropic answers `{"type":"error","error":{"type","message"}}` with the types of
//! its error documentation (`invalid_request_error`, `authentication_error`, `permission_error`,
//! `not_found_error`, `request_too_large`, `rate_limit_error`, `api_error`, `timeout_error`,
//! `overloaded_error`).
//!
//! Messages are caller-supplied and must already be safe to show: never put a secret, an upstream
//! URL with credentials or an internal error chain in them.

use serde::Serialize;

use crate::api::Dialect;

/// What went wrong, independent of dialect. `status` and the bodies below match on it
/// exhaustively: adding a kind forces every mapping to be revisited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    BadRequest,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    /// A path no API has (OpenAI answers these with `code: null`, not `model_not_found`).
    NoSuchEndpoint,
    PayloadTooLarge,
    RateLimited,
    UpstreamUnavailable,
    UpstreamTimeout,
    Internal,
    Overloaded,
    MethodNotAllowed,
    /// The client was too slow sending its request.
    RequestTimeout,
}

impl ErrorKind {
    /// Every kind, for tables and tests.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::BadRequest,
        ErrorKind::Unauthenticated,
        ErrorKind::PermissionDenied,
        ErrorKind::NotFound,
        ErrorKind::NoSuchEndpoint,
        ErrorKind::PayloadTooLarge,
        ErrorKind::RateLimited,
        ErrorKind::UpstreamUnavailable,
        ErrorKind::UpstreamTimeout,
        ErrorKind::Internal,
        ErrorKind::Overloaded,
        ErrorKind::MethodNotAllowed,
        ErrorKind::RequestTimeout,
    ];
}

/// HTTP status for a kind. The same in both dialects: Anthropic's own overload status is 529,
/// but iris is not Anthropic and answers the standard 503, which every SDK retries alike.
pub fn status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::BadRequest => 400,
        ErrorKind::Unauthenticated => 401,
        ErrorKind::PermissionDenied => 403,
        ErrorKind::NotFound | ErrorKind::NoSuchEndpoint => 404,
        ErrorKind::MethodNotAllowed => 405,
        ErrorKind::RequestTimeout => 408,
        ErrorKind::PayloadTooLarge => 413,
        ErrorKind::RateLimited => 429,
        ErrorKind::Internal => 500,
        ErrorKind::UpstreamUnavailable => 502,
        ErrorKind::Overloaded => 503,
        ErrorKind::UpstreamTimeout => 504,
    }
}

/// OpenAI's `error.type` for a kind.
pub fn openai_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadRequest
        | ErrorKind::Unauthenticated
        | ErrorKind::PermissionDenied
        | ErrorKind::NotFound
        | ErrorKind::NoSuchEndpoint
        | ErrorKind::PayloadTooLarge
        | ErrorKind::MethodNotAllowed
        | ErrorKind::RequestTimeout => "invalid_request_error",
        // OpenAI labels 429s by the limit hit ("requests" / "tokens"); iris's limits are on
        // requests.
        ErrorKind::RateLimited => "requests",
        ErrorKind::UpstreamUnavailable
        | ErrorKind::UpstreamTimeout
        | ErrorKind::Internal
        | ErrorKind::Overloaded => "server_error",
    }
}

/// OpenAI's `error.code` for a kind (`null` when OpenAI sends none for that case).
pub fn openai_code(kind: ErrorKind) -> Option<&'static str> {
    match kind {
        ErrorKind::Unauthenticated => Some("invalid_api_key"),
        ErrorKind::PermissionDenied => Some("permission_denied"),
        ErrorKind::NotFound => Some("model_not_found"),
        ErrorKind::RateLimited => Some("rate_limit_exceeded"),
        ErrorKind::UpstreamTimeout => Some("timeout"),
        ErrorKind::RequestTimeout => Some("request_timeout"),
        ErrorKind::BadRequest
        | ErrorKind::NoSuchEndpoint
        | ErrorKind::PayloadTooLarge
        | ErrorKind::MethodNotAllowed
        | ErrorKind::UpstreamUnavailable
        | ErrorKind::Internal
        | ErrorKind::Overloaded => None,
    }
}

/// Anthropic's `error.type` for a kind.
pub fn anthropic_type(kind: ErrorKind) -> &'static str {
    match kind {
        // Anthropic uses invalid_request_error for 4xx statuses it has no own type for (405).
        ErrorKind::BadRequest | ErrorKind::MethodNotAllowed | ErrorKind::RequestTimeout => {
            "invalid_request_error"
        }
        ErrorKind::Unauthenticated => "authentication_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::NotFound | ErrorKind::NoSuchEndpoint => "not_found_error",
        ErrorKind::PayloadTooLarge => "request_too_large",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::Internal | ErrorKind::UpstreamUnavailable => "api_error",
        ErrorKind::UpstreamTimeout => "timeout_error",
        ErrorKind::Overloaded => "overloaded_error",
    }
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    error: OpenAiErrorInner<'a>,
}

#[derive(Serialize)]
struct OpenAiErrorInner<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'a str>,
    code: Option<&'static str>,
}

#[derive(Serialize)]
struct AnthropicError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicErrorInner<'a>,
}

#[derive(Serialize)]
struct AnthropicErrorInner<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

/// The JSON error body for `kind` in `dialect`; serve it with [`status`]`(kind)` and
/// `content-type: application/json`.
pub fn error_body(dialect: Dialect, kind: ErrorKind, message: &str) -> Vec<u8> {
    let body = match dialect {
        Dialect::OpenAi => serde_json::to_vec(&OpenAiError {
            error: OpenAiErrorInner {
                message,
                kind: openai_type(kind),
                param: None,
                code: openai_code(kind),
            },
        }),
        Dialect::Anthropic => serde_json::to_vec(&AnthropicError {
            kind: "error",
            error: AnthropicErrorInner {
                kind: anthropic_type(kind),
                message,
            },
        }),
    };
    // Serialising these plain structs of strings cannot fail; keep a fixed body rather than
    // panic, should it ever.
    body.unwrap_or_else(|_| br#"{"error":{"message":"internal error"}}"#.to_vec())
}

/// An SSE event reporting `kind` inside a stream that has already started (status 200 sent), for
/// when upstream dies mid-stream. Anthropic: `event: error` with the error body, as Anthropic
/// sends it. OpenAI: a `data:` line holding `{"error":{...}}`, which OpenAI's SDKs raise as an
/// API error.
pub fn sse_error_event(dialect: Dialect, kind: ErrorKind, message: &str) -> Vec<u8> {
    let body = error_body(dialect, kind, message);
    let mut out = Vec::with_capacity(body.len() + 24);
    match dialect {
        Dialect::Anthropic => out.extend_from_slice(b"event: error\ndata: "),
        Dialect::OpenAi => out.extend_from_slice(b"data: "),
    }
    // serde_json never writes a raw newline (it escapes them), so the body is one data line.
    out.extend_from_slice(&body);
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_in_range_and_kinds_tell_apart() {
        let mut seen = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            let s = status(k);
            assert!((400..600).contains(&s));
            // Kinds sharing a status differ in what a client reads (OpenAI's `code`).
            assert!(
                seen.insert((s, openai_code(k))),
                "{k:?} duplicates status {s}"
            );
        }
        assert_eq!(openai_code(ErrorKind::NotFound), Some("model_not_found"));
        assert_eq!(openai_code(ErrorKind::NoSuchEndpoint), None);
    }

    #[test]
    fn message_is_escaped_not_injected() {
        let body = error_body(
            Dialect::OpenAi,
            ErrorKind::BadRequest,
            "bad \"model\"\n</script>",
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "bad \"model\"\n</script>");
        let ev = sse_error_event(Dialect::Anthropic, ErrorKind::Overloaded, "a\nb\r\nc");
        // Exactly one blank line, at the end: the event cannot be split by the message.
        let text = std::str::from_utf8(&ev).unwrap();
        assert_eq!(text.matches("\n\n").count(), 1);
        assert!(text.ends_with("\n\n"));
        assert!(!text.contains('\r'));
    }
}
