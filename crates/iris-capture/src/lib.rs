//! iris-capture: what iris records about a request after it is answered, as pure functions
//! over data. It owns redaction of credentials ([`redact`]), decoding of compressed bodies
//! ([`decode`]), capture records ([`capture`]), their header lists ([`headers`]) and stored form
//! ([`stored`]), reassembly of streamed and non-streamed answers into the final message and its
//! tool calls ([`reassemble`]), session grouping ([`session`]), cost estimates from a price table
//! shipped as data ([`cost`], with Go-glob `model_cost_map` rules in [`glob`]), and the retention
//! setting ([`retention`]).
//!
//! It must never do IO, read a clock, open a socket or spawn: the server calls it off the
//! request path (after the response went out) and passes in everything, including `now`.
//! Every buffer it fills has a cap; every failure is a value.
//!
//! # API at a glance
//! - [`Redactor::new`]`(secrets)` `.with_extra_headers(names)`; `redact_headers_in_place`,
//!   `redact_header_value`, `redact_path`, `scrub_str`, `scrub_json`, `scrub_capped`; for a
//!   capture searched once with `holds_secret`: `redact_credentials_in_place` first, then
//!   `scrub_other_values_in_place` only if it found something, else `redact_query_keys`,
//!   `cap_only`.
//! - [`decode_body`]`(content_encoding, body, input_complete, max_output) -> Result<Decoded,
//!   DecodeError>`.
//! - [`build_capture`]`(&RawExchange, &CaptureLimits, &Redactor) -> Capture`;
//!   [`Capture::tool_calls`]; [`Capture::to_stored_text`]`(request_id, status)` (the store's
//!   compact document, [`stored`]) and [`Capture::to_stored_json`] (the API's), the first read
//!   back as the second by [`stored_document`].
//! - [`reassemble_json`] / [`reassemble_stream`]`(api_family, body) -> Option<Reassembled>`,
//!   [`StreamReassembler`] for chunked input, [`response_tool_calls`].
//! - [`session_key`]`(api_family, headers, body_json, caller_identity, request_id) ->
//!   SessionKey`.
//! - [`PriceTable::builtin`], [`estimate`]`(basis, model, &TokenUsage, Accounting, rules) ->
//!   CostEstimate`, [`CostBasis::infer`], [`ModelCostRule`].
//! - [`Retention::parse`]`(s)`, [`Retention::cutoff`]`(now_ms)`.

pub mod capture;
pub mod cost;
pub mod decode;
pub mod glob;
pub mod headers;
pub mod reassemble;
pub mod redact;
pub mod retention;
pub mod session;
pub mod stored;

pub use capture::{
    Capture, CaptureLimits, DamagedDocument, DeferredReassembly, NON_UTF8_MARKER, RawExchange,
    build_capture, build_capture_deferred, build_capture_deferred_owning, stored_document,
};
pub use cost::{
    Accounting, CostBasis, CostEstimate, ModelCostRule, ModelPrice, PriceTable, PriceTableError,
    PriceTier, ResolvedPrice, RuleError, TokenUsage, UnknownCostBasis, estimate,
};
pub use decode::{Coding, DecodeError, Decoded, decode_body, parse_content_encoding};
pub use glob::{BadPattern, check_pattern, glob_match};
pub use headers::HeaderList;
pub use reassemble::{
    Reassembled, StreamOutcome, StreamReassembler, ToolCall, WireDialect, reassemble_json,
    reassemble_stream, response_tool_calls,
};
pub use redact::{REDACTED, Redactor, SENSITIVE_HEADERS};
pub use retention::{Retention, RetentionError};
pub use session::{
    FingerprintCache, SessionKey, SessionKind, is_session_header, session_key,
    session_key_from_body, session_key_from_parts,
};
