//! Error bodies for every (dialect, kind), as clients will see them.

use std::fmt::Write;

use iris_providers::{Dialect, ErrorKind, error_body, sse_error_event, status};

#[test]
fn error_bodies() {
    let mut table = String::new();
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        for kind in ErrorKind::ALL {
            let body = error_body(dialect, kind, "something went wrong");
            // Always valid JSON.
            serde_json::from_slice::<serde_json::Value>(&body).unwrap();
            writeln!(
                table,
                "{dialect:?} {kind:?} {} {}",
                status(kind),
                String::from_utf8(body).unwrap()
            )
            .unwrap();
        }
    }
    insta::assert_snapshot!(table);
}

#[test]
fn sse_error_events() {
    let mut table = String::new();
    for dialect in [Dialect::OpenAi, Dialect::Anthropic] {
        for kind in [ErrorKind::UpstreamUnavailable, ErrorKind::UpstreamTimeout] {
            let ev = sse_error_event(dialect, kind, "upstream connection lost");
            table.push_str(&String::from_utf8(ev).unwrap());
        }
    }
    insta::assert_snapshot!(table);
}

#[test]
fn injected_events_parse_as_errors_with_our_own_extractor() {
    // The server may append one of these to a stream; usage extraction then reports it.
    use iris_providers::{ApiFamily, UsageExtractor};
    for (family, dialect, want) in [
        (
            ApiFamily::AnthropicMessages,
            Dialect::Anthropic,
            "timeout_error",
        ),
        (ApiFamily::OpenAiChat, Dialect::OpenAi, "server_error"),
    ] {
        let mut x = UsageExtractor::new(family, true);
        x.feed(&sse_error_event(
            dialect,
            ErrorKind::UpstreamTimeout,
            "timed out",
        ));
        assert_eq!(x.finish().stream_error.as_deref(), Some(want));
    }
}
