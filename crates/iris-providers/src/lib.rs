//! iris-providers owns the wire formats of the LLM APIs iris fronts: which path is which API
//! ([`api`]), what a request body says about itself ([`peek`]), which provider serves a model
//! ([`routing`]), how many tokens a response used ([`usage`], fed incrementally while bytes
//! stream through), how to hide a usage chunk the client never asked for ([`stream_filter`]),
//! and what an error looks like in each API dialect ([`errors`], [`models_list`]).
//!
//! **Architecture Invariant:** this crate is pure. It never opens a socket, never reads a clock,
//! never spawns, and knows nothing of hyper or axum: it works on `&[u8]`, `&str` and `u16`
//! statuses, so every function here is cheap to test, benchmark and fuzz.
//!
//! **Architecture Invariant:** no other crate knows a provider's body shapes. The server asks this
//! crate; it never parses or builds a provider's JSON itself.
//!
//! Layout:
//! - [`api`]: `ApiFamily` (chat, responses, completions, embeddings, messages, count_tokens) and
//!   its dialect; path recognition; which compatibility flag serves which family.
//! - [`peek`]: read `model` / `stream` / `stream_options.include_usage` from a request body
//!   without building a JSON tree (a fast path of its own, serde where it gives up), and rewrite `model` or `stream_options` without reordering or
//!   reformatting anything else.
//! - [`routing`]: the route table built from the config, upstream URL, auth and header policy.
//! - [`usage`]: incremental SSE parsing and token-usage extraction with bounded memory.
//! - [`stream_filter`]: drops the usage-only chunk of an OpenAI chat stream when iris (not the
//!   client) asked for it.
//! - [`errors`]: the one place that knows error bodies, per dialect, and their statuses.
//! - [`json_text`]: JSON string contents eight bytes at a time, a string's end 64 at a time, and
//!   their escapes (the whole-body usage scanner, the peek, the capture documents' writer, the
//!   session fingerprint).
//! - [`models_list`]: `GET /v1/models` bodies in OpenAI's and Anthropic's shapes.

pub mod api;
mod body_scan;
pub mod errors;
mod json_scan;
pub mod json_text;
pub mod models_list;
pub mod peek;
pub mod routing;
pub mod sse;
pub mod stream_filter;
#[cfg(test)]
mod test_rng;
pub mod usage;

pub use api::{ApiFamily, Dialect, serves};
pub use errors::{ErrorKind, error_body, sse_error_event, status};
pub use peek::{
    ChatOpening, PeekError, PeekedBody, RequestPeek, SessionParts, peek_body, peek_request,
    session_parts, with_include_usage, with_model,
};
pub use routing::{
    ModelEntry, Route, RouteError, RouteTable, auth_header, forward_request_header,
    forward_response_header, upstream_url,
};
pub use stream_filter::IncludeUsageFilter;
pub use usage::{Extracted, TokenUsage, UsageExtractor};
