//! Building the stored record of one request/response pair from the raw parts the server
//! collected.
//!
//! For each body: decode it by its `Content-Encoding` (see [`crate::decode`]), scrub secrets
//! (see [`crate::redact`]) and keep at most `max_body_bytes` of it as text. A body that is not
//! UTF-8 is stored lossily (invalid bytes become U+FFFD) behind [`NON_UTF8_MARKER`]; a body whose
//! coding cannot be undone is replaced by a one-line note. An empty body is `None`.
//!
//! The response is also reassembled into the final message (see [`crate::reassemble`]): from
//! the SSE events (at most `max_raw_events_bytes` of decoded stream) or from the JSON answer.
//! For a stream, `response_body` keeps the raw event text (scrubbed, capped like any body) and
//! `raw_events_truncated` says the reassembly saw only part of the stream.
//!
//! [`build_capture_deferred`] leaves the reassembly for when the capture is read
//! ([`stored_document`]) whenever the stored response text holds the whole answer and the answer
//! calls no tool: reassembling every stream as it ends costs more than the rest of the gateway's
//! work on it, and most captures are never opened. Tool calls are still worked out at once (the
//! usage record lists their names), which is why a response that mentions one is reassembled
//! eagerly.

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};

use crate::decode::{DecodeError, Decoded, decode_body};
use crate::headers::HeaderList;
use crate::reassemble::{Reassembled, StreamReassembler, ToolCall, reassemble_json};
use crate::redact::Redactor;
use crate::stored::{COMPACT, Doc};

/// Put before a body that was not valid UTF-8.
pub const NON_UTF8_MARKER: &str =
    "[iris: body is not valid UTF-8; invalid bytes shown as U+FFFD]\n";

/// Size caps for one capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureLimits {
    /// Most bytes of each stored body (after decoding).
    pub max_body_bytes: usize,
    /// Most bytes of decoded SSE stream read for reassembly; also bounds the reassembled text.
    pub max_raw_events_bytes: usize,
}

impl Default for CaptureLimits {
    fn default() -> Self {
        CaptureLimits {
            max_body_bytes: 1024 * 1024,
            max_raw_events_bytes: 4 * 1024 * 1024,
        }
    }
}

/// What the server hands over: everything as it went over the wire.
#[derive(Debug, Clone, Copy)]
pub struct RawExchange<'a> {
    pub method: &'a str,
    /// Path and query as the client sent them.
    pub path: &'a str,
    /// As iris-providers names it (`openai_chat`, `openai_responses`, `anthropic_messages`, ...).
    pub api_family: &'a str,
    pub request_headers: &'a HeaderList,
    pub request_body: &'a [u8],
    /// False when the server kept only the start of the request body.
    pub request_body_complete: bool,
    pub response_headers: &'a HeaderList,
    pub response_body: &'a [u8],
    /// False when the server kept only the start of the response body.
    pub response_body_complete: bool,
    /// The response is an SSE stream (`text/event-stream`).
    pub response_is_sse: bool,
}

/// The stored capture (the `/api/captures/{id}` shape, minus what the store adds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capture {
    pub method: String,
    pub path: String,
    pub request_headers: HeaderList,
    pub response_headers: HeaderList,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
    pub request_truncated: bool,
    pub response_truncated: bool,
    pub reassembled: Option<Reassembled>,
    pub raw_events_truncated: bool,
    /// Set when the reassembly was left for [`stored_document`] (never in an API answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<DeferredReassembly>,
}

/// What [`stored_document`] needs to reassemble a stored response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeferredReassembly {
    pub api_family: String,
    pub sse: bool,
}

impl Capture {
    /// The tool calls the response made (empty without a reassembled message).
    pub fn tool_calls(&self) -> &[ToolCall] {
        self.reassembled
            .as_ref()
            .map(|r| r.tool_calls.as_slice())
            .unwrap_or(&[])
    }

    /// The capture's JSON document, as the API serves it and as the store kept it before
    /// [`to_stored_text`](Self::to_stored_text): `request_id` and `status` first, then the
    /// capture's own fields, byte for byte what serde_json writes for them (the tests hold the
    /// two together). Written by hand because a capture is mostly header text, which serde_json
    /// escapes one byte at a time; `json_text` looks at eight at once. The reassembled message,
    /// present only when the answer called a tool, goes through serde.
    pub fn to_stored_json(&self, request_id: &str, status: u16) -> String {
        // Writing a message cannot fail; if it did, the document says `null`.
        let reassembled = (self.reassembled.as_ref()).and_then(|r| serde_json::to_string(r).ok());
        Doc::of(self, request_id, status, reassembled.as_deref()).to_json()
    }
}

/// Build the capture. Pure: no IO, bounded memory (about the caps plus the input).
pub fn build_capture(
    raw: &RawExchange<'_>,
    limits: &CaptureLimits,
    redactor: &Redactor,
) -> Capture {
    let headers = (raw.request_headers.clone(), raw.response_headers.clone());
    build(raw, headers, limits, redactor, false)
}

/// [`build_capture`], leaving the reassembly of a complete, tool-free answer for
/// [`stored_document`] (see the module docs). Tool calls are the same as `build_capture`'s.
pub fn build_capture_deferred(
    raw: &RawExchange<'_>,
    limits: &CaptureLimits,
    redactor: &Redactor,
) -> Capture {
    let headers = (raw.request_headers.clone(), raw.response_headers.clone());
    build(raw, headers, limits, redactor, true)
}

/// [`build_capture_deferred`] for a caller that owns the exchange's header lists (`raw`'s
/// header slices are ignored): they are redacted in place and moved into the capture, not
/// copied.
pub fn build_capture_deferred_owning(
    raw: &RawExchange<'_>,
    request_headers: HeaderList,
    response_headers: HeaderList,
    limits: &CaptureLimits,
    redactor: &Redactor,
) -> Capture {
    build(
        raw,
        (request_headers, response_headers),
        limits,
        redactor,
        true,
    )
}

/// Whether an answer may call a tool: every tool call iris reassembles has a type or field
/// ending in `_use` (Anthropic) or containing `_call` (OpenAI chat and Responses). Looser than
/// the reassemblers, never stricter.
fn mentions_tools(bytes: &[u8]) -> bool {
    use memchr::memmem::Finder;
    // Built once: building a searcher costs more than running it over a small answer.
    static CALL: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"_call"));
    static USE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"_use\""));
    CALL.find(bytes).is_some() || USE.find(bytes).is_some()
}

/// The capture document the API serves, from what the store kept: `document` (the capture's
/// compact text, [`Capture::to_stored_text`], or its JSON from earlier versions) and the body
/// texts kept beside it, which go back in as its `request_body` and `response_body` (a `None`
/// leaves the document's own value: null, or the body of a capture stored with its bodies
/// inside). When the reassembly was deferred, the stored response text is reassembled now
/// (scrubbed again with `redactor`: a secret split across stream events joins up in the
/// reassembled text). A JSON document that is not an object is served as it is; a compact one
/// that cannot be read is an error.
pub fn stored_document(
    document: String,
    request_body: Option<String>,
    response_body: Option<String>,
    redactor: &Redactor,
) -> Result<String, DamagedDocument> {
    if let Some(compact) = document.strip_prefix(COMPACT) {
        let Some(mut doc) = Doc::parse_compact(compact) else {
            return Err(DamagedDocument);
        };
        if request_body.is_some() {
            doc.request_body = request_body.as_deref();
        }
        if response_body.is_some() {
            doc.response_body = response_body.as_deref();
        }
        let reassembled;
        if let Some((family, sse)) = doc.deferred.take() {
            reassembled = serde_json::to_string(&reassemble_stored(
                family,
                sse,
                doc.response_body.unwrap_or("").as_bytes(),
                redactor,
            ))
            .ok();
            doc.reassembled = reassembled.as_deref();
        }
        return Ok(doc.to_json());
    }
    if request_body.is_none() && response_body.is_none() && !document.contains("\"deferred\"") {
        return Ok(document);
    }
    let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_str(&document) else {
        return Ok(document);
    };
    if let Some(b) = request_body {
        obj.insert("request_body".into(), b.into());
    }
    if let Some(b) = response_body {
        obj.insert("response_body".into(), b.into());
    }
    if let Some(d) = obj.remove("deferred")
        && let Ok(deferred) = serde_json::from_value::<DeferredReassembly>(d)
    {
        let body = obj
            .get("response_body")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .as_bytes();
        let reassembled = reassemble_stored(&deferred.api_family, deferred.sse, body, redactor);
        obj.insert(
            "reassembled".into(),
            serde_json::to_value(reassembled).unwrap_or(serde_json::Value::Null),
        );
    }
    Ok(serde_json::Value::Object(obj).to_string())
}

/// A stored capture document whose lengths do not add up (see [`crate::stored`]): the store's
/// data is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the capture's stored document is damaged and cannot be read")]
pub struct DamagedDocument;

/// The deferred reassembly of a stored response text, scrubbed.
fn reassemble_stored(
    api_family: &str,
    sse: bool,
    body: &[u8],
    redactor: &Redactor,
) -> Option<Reassembled> {
    if sse {
        crate::reassemble::reassemble_stream(api_family, body)
    } else {
        reassemble_json(api_family, body)
    }
    .map(|mut m| {
        scrub_message(redactor, &mut m);
        m
    })
}

/// The capture of `raw` with its (request, response) header lists `headers`, which are redacted
/// in place and moved into it (`raw`'s own header slices are not read).
fn build(
    raw: &RawExchange<'_>,
    headers: (HeaderList, HeaderList),
    limits: &CaptureLimits,
    redactor: &Redactor,
    defer: bool,
) -> Capture {
    let (mut request_headers, mut response_headers) = headers;
    // Credential headers' values go whole, first: what is left of every value is then stored
    // as it came unless the search below finds a secret in it.
    redactor.redact_credentials_in_place(&mut request_headers);
    redactor.redact_credentials_in_place(&mut response_headers);
    let slack = redactor.max_secret_len();
    let window = limits.max_body_bytes.saturating_add(slack);
    let req_decoded = decode_body(
        request_headers.get("content-encoding"),
        raw.request_body,
        raw.request_body_complete,
        window,
    );
    // One decode of the response serves both storage and reassembly.
    let want = if raw.response_is_sse {
        limits
            .max_raw_events_bytes
            .max(limits.max_body_bytes.saturating_add(slack))
    } else {
        limits.max_body_bytes.saturating_add(slack)
    };
    let decoded = decode_body(
        response_headers.get("content-encoding"),
        raw.response_body,
        raw.response_body_complete,
        want,
    );
    // Everything stored as it came (all but the reassembled message, which is scrubbed on its
    // own: decoding JSON escapes can spell out a secret the raw bytes do not) is searched for
    // secrets at once; the common capture holds none, and is then only capped.
    let search = redactor.holds_secret(
        request_headers
            .values()
            .chain(response_headers.values())
            .chain([
                raw.path.as_bytes(),
                decoded_window(&req_decoded, window),
                decoded_window(&decoded, window),
            ]),
    );
    let req = match req_decoded {
        Err(e) => (Some(undecodable_note(&e)), !raw.request_body_complete),
        Ok(d) if d.bytes.is_empty() && !d.truncated => (None, false),
        Ok(d) => {
            let (text, truncated) = to_text(
                redactor,
                &d.bytes,
                limits.max_body_bytes,
                d.truncated,
                search,
            );
            (Some(text), truncated)
        }
    };
    let mut deferred = None;
    let (response_body, response_truncated, reassembled, raw_events_truncated) = match &decoded {
        Err(e) => (
            Some(undecodable_note(e)),
            !raw.response_body_complete,
            None,
            raw.response_is_sse,
        ),
        Ok(d) if d.bytes.is_empty() && !d.truncated => (None, false, None, false),
        Ok(d) => {
            let (body, truncated) = to_text(
                redactor,
                &d.bytes[..d.bytes.len().min(window)],
                limits.max_body_bytes,
                d.truncated,
                search,
            );
            let whole_in_text = !d.truncated
                && !truncated
                && d.bytes.len() <= limits.max_raw_events_bytes
                && !body.starts_with(NON_UTF8_MARKER);
            if defer
                && whole_in_text
                && crate::reassemble::WireDialect::from_family(raw.api_family).is_some()
                && !mentions_tools(&d.bytes)
            {
                deferred = Some(DeferredReassembly {
                    api_family: raw.api_family.to_owned(),
                    sse: raw.response_is_sse,
                });
                (Some(body), false, None, false)
            } else {
                let (reassembled, events_cut) = reassemble_now(raw, limits, redactor, d);
                (Some(body), truncated, reassembled, events_cut)
            }
        }
    };

    let path = if search {
        redactor.scrub_other_values_in_place(&mut request_headers);
        redactor.scrub_other_values_in_place(&mut response_headers);
        redactor.redact_path(raw.path)
    } else {
        Redactor::redact_query_keys(raw.path)
    };
    Capture {
        method: raw.method.to_owned(),
        path,
        request_headers,
        response_headers,
        request_body: req.0,
        response_body,
        request_truncated: req.1,
        response_truncated,
        reassembled,
        raw_events_truncated,
        deferred,
    }
}

/// Reassemble the answer from the decoded response now: (message, raw events cut short).
fn reassemble_now(
    raw: &RawExchange<'_>,
    limits: &CaptureLimits,
    redactor: &Redactor,
    d: &Decoded,
) -> (Option<Reassembled>, bool) {
    let (reassembled, events_cut) = if raw.response_is_sse {
        let events = &d.bytes[..d.bytes.len().min(limits.max_raw_events_bytes)];
        let events_cut = d.truncated || d.bytes.len() > limits.max_raw_events_bytes;
        match StreamReassembler::new(raw.api_family, limits.max_raw_events_bytes) {
            Some(mut r) => {
                r.feed(events);
                let out = r.finish();
                (Some(out.message), events_cut || out.truncated)
            }
            None => (None, events_cut),
        }
    } else if d.truncated {
        (None, false)
    } else {
        (reassemble_json(raw.api_family, &d.bytes), false)
    };
    let reassembled = reassembled.map(|mut m| {
        scrub_message(redactor, &mut m);
        m
    });
    (reassembled, events_cut)
}

/// The part of a decoded body that is stored (before the cap) and must be searched.
fn decoded_window<'a>(d: &'a Result<Decoded<'_>, DecodeError>, window: usize) -> &'a [u8] {
    match d {
        Ok(d) => &d.bytes[..d.bytes.len().min(window)],
        Err(_) => &[],
    }
}

fn undecodable_note(e: &DecodeError) -> String {
    format!("[iris: body not stored: {e}]")
}

/// Scrub (with `search`; else only a cut tail), cap, and make text of decoded bytes.
fn to_text(
    redactor: &Redactor,
    bytes: &[u8],
    cap: usize,
    cut: bool,
    search: bool,
) -> (String, bool) {
    let (mut out, truncated) = if search {
        redactor.scrub_capped(bytes, cap, cut)
    } else {
        redactor.cap_only(bytes, cap, cut)
    };
    if truncated {
        // A cap may split a UTF-8 sequence: drop the incomplete tail rather than call the
        // whole body non-UTF-8.
        if let Err(e) = std::str::from_utf8(&out)
            && e.error_len().is_none()
        {
            out.truncate(e.valid_up_to());
        }
    }
    match String::from_utf8(out) {
        Ok(s) => (s, truncated),
        Err(e) => {
            let lossy = String::from_utf8_lossy(e.as_bytes());
            (format!("{NON_UTF8_MARKER}{lossy}"), truncated)
        }
    }
}

fn scrub_message(redactor: &Redactor, m: &mut Reassembled) {
    m.text = redactor.scrub_str(&m.text).into_owned();
    m.thinking = redactor.scrub_str(&m.thinking).into_owned();
    for c in &mut m.tool_calls {
        c.id = redactor.scrub_str(&c.id).into_owned();
        c.name = redactor.scrub_str(&c.name).into_owned();
        redactor.scrub_json(&mut c.arguments);
    }
    if let Some(s) = &mut m.stop_reason {
        *s = redactor.scrub_str(s).into_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document as serde_json writes it, with `request_id` and `status` put first: what the
    /// store kept before `to_stored_json`, and what the API serves.
    fn serde_stored_json(c: &Capture, request_id: &str, status: u16) -> String {
        let doc = serde_json::to_string(c).unwrap();
        format!(
            "{{\"request_id\":{},\"status\":{status},{}",
            serde_json::to_string(request_id).unwrap(),
            &doc[1..]
        )
    }

    #[test]
    fn the_stored_document_is_what_serde_writes() {
        // Awkward texts, every flag, a deferred reassembly, a reassembled tool call.
        let cases = crate::stored::tests::cases();
        for (n, c) in cases.iter().enumerate() {
            for (id, status) in [
                ("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 200),
                ("r\"1", 0),
                ("", 65535),
            ] {
                assert_eq!(
                    c.to_stored_json(id, status),
                    serde_stored_json(c, id, status),
                    "case {n}"
                );
            }
        }
    }

    #[test]
    fn a_document_without_escapes_is_written_without_growing() {
        let c = Capture {
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            request_headers: h(&[
                ("host", "127.0.0.1:4747"),
                ("content-type", "application/json"),
                ("user-agent", "claude-cli/2.1.0"),
            ]),
            response_headers: h(&[("content-type", "application/json"), ("x", "")]),
            request_body: None,
            response_body: None,
            request_truncated: false,
            response_truncated: false,
            reassembled: None,
            raw_events_truncated: false,
            deferred: Some(DeferredReassembly {
                api_family: "anthropic_messages".into(),
                sse: false,
            }),
        };
        for c in [
            c.clone(),
            Capture {
                deferred: None,
                request_headers: HeaderList::new(),
                ..c
            },
        ] {
            let id = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
            let doc = c.to_stored_json(id, 65535);
            // Grown, the string's capacity would be a doubling, not the reserve.
            assert_eq!(
                doc.capacity(),
                Doc::of(&c, id, 65535, None).json_capacity(),
                "{doc}"
            );
            assert!(
                doc.len() + 64 > doc.capacity(),
                "reserves far too much: {doc}"
            );
        }
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderList {
        pairs.iter().copied().collect()
    }

    fn exchange<'a>(
        req_h: &'a HeaderList,
        req: &'a [u8],
        resp_h: &'a HeaderList,
        resp: &'a [u8],
        sse: bool,
    ) -> RawExchange<'a> {
        RawExchange {
            method: "POST",
            path: "/v1/chat/completions",
            api_family: "openai_chat",
            request_headers: req_h,
            request_body: req,
            request_body_complete: true,
            response_headers: resp_h,
            response_body: resp,
            response_body_complete: true,
            response_is_sse: sse,
        }
    }

    #[test]
    fn non_utf8_and_split_utf8() {
        let r = Redactor::default();
        let (s, t) = to_text(&r, b"ok \xff\xfe end", 100, false, true);
        assert_eq!(s, format!("{NON_UTF8_MARKER}ok \u{fffd}\u{fffd} end"));
        assert!(!t);
        // "é" is two bytes; a cap after its first byte is not "invalid UTF-8".
        let (s, t) = to_text(&r, "abé".as_bytes(), 3, false, true);
        assert_eq!((s.as_str(), t), ("ab", true));
    }

    #[test]
    fn bodies_are_capped_and_flagged() {
        let r = Redactor::default();
        let req_h = h(&[("content-type", "application/json")]);
        let resp_h = h(&[]);
        let body = vec![b'a'; 100];
        let limits = CaptureLimits {
            max_body_bytes: 10,
            max_raw_events_bytes: 1000,
        };
        let c = build_capture(&exchange(&req_h, &body, &resp_h, b"", false), &limits, &r);
        assert_eq!(c.request_body.as_deref(), Some("aaaaaaaaaa"));
        assert!(c.request_truncated);
        assert_eq!(c.response_body, None);
        assert!(!c.response_truncated);
        assert_eq!(c.reassembled, None);

        let mut x = exchange(&req_h, b"{}", &resp_h, b"", false);
        x.request_body_complete = false;
        let c = build_capture(&x, &limits, &r);
        assert_eq!(c.request_body.as_deref(), Some("{}"));
        assert!(c.request_truncated);
    }

    #[test]
    fn undecodable_body_becomes_a_note() {
        let r = Redactor::default();
        let req_h = h(&[("Content-Encoding", "compress")]);
        let c = build_capture(
            &exchange(&req_h, b"xx", &HeaderList::new(), b"", false),
            &CaptureLimits::default(),
            &r,
        );
        assert_eq!(
            c.request_body.as_deref(),
            Some("[iris: body not stored: unsupported content-encoding \"compress\"]")
        );
    }
}
