//! Read what iris needs from a request body, and rewrite one top-level field, without building a
//! JSON tree.
//!
//! Claude Code sends 75–90 KB bodies (and far larger as a conversation grows); the peek
//! deserialises only `model`, `stream` and `stream_options.include_usage` and skips everything
//! else with `IgnoredAny`. A fast path (`scan`) reads the same in one pass over the bytes and
//! gives up to this serde reading wherever the two could differ, so errors stay serde's. The
//! rewrites keep every other top-level member as its original text (`RawValue`), in its
//! original order: numbers keep their exact digits, nothing is re-sorted, nothing is re-escaped
//! except top-level key names.
//!
//! A duplicated `model`, `stream`, `stream_options` or `stream_options.include_usage` key is an
//! error, not "last one wins": a gateway that checks one `model` while the provider reads
//! another is a policy bypass.
//!
//! The fast path also notes where the fields the rewrites change are (`RewriteSpots`), so that
//! [`PeekedBody::rewrite`] makes the upstream body in one copy, splicing, instead of reading the
//! body again. The spots travel with a borrow of the body they were found in ([`peek_body`]), so
//! they cannot be applied to another.
//!
//! The same pass notes where the fields session detection reads are ([`SessionParts`]: byte
//! ranges of `metadata`, `prompt_cache_key` and the opening of `messages`), so the observer never
//! parses the body again. Those are read as a `serde_json::Value` would read them (of a key given
//! twice the last counts; a field of an unexpected shape is simply not there): session detection
//! must never make a request fail.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use thiserror::Error;

mod scan;

/// What iris reads from a request before routing it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestPeek {
    /// The requested model, exactly as sent (no trimming, no normalisation).
    pub model: Option<String>,
    /// `stream: true`. Absent or `null` means false.
    pub stream: bool,
    /// `stream_options.include_usage`, when the client set it to a boolean.
    pub include_usage: Option<bool>,
    /// Where the fields session detection reads are.
    pub session: SessionParts,
}

/// A request body and what the peek read in it ([`peek_body`]): what
/// [`rewrite`](PeekedBody::rewrite) needs to make the upstream body. It borrows the body, so
/// the spots it splices at are always the ones found in the bytes it splices into. Its `Debug`
/// shows the body's length, never the body (a prompt, perhaps with secrets in it).
#[derive(Clone)]
pub struct PeekedBody<'b> {
    /// What the peek read; the caller may take fields out (the rewrite reads none of them).
    pub peek: RequestPeek,
    body: &'b [u8],
    /// The client's own `stream_options.include_usage`, kept apart from `peek`.
    include_usage: Option<bool>,
    /// `None` when the body was read through serde (the fast path gave up): the rewrite then
    /// rebuilds the body as [`with_model`] and [`with_include_usage`] do.
    spots: Option<RewriteSpots>,
}

/// Where, in a body the peek's fast path read, the fields the rewrites change are: byte offsets
/// into the body. Only the peek makes them, and only [`PeekedBody`] holds them, next to the
/// body they are offsets of. The splice still checks what stands at each spot and rebuilds the
/// body if it is not what the peek saw (a bug in the fast path, never silently a wrong body).
/// What the fast path accepted has no escaped key and no duplicate `model`, `stream_options` or
/// `include_usage`, so each of these is the one member of its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RewriteSpots {
    /// The top-level object's closing `}`.
    pub(crate) end: usize,
    /// Whether the top-level object has any member (a member added before `end` then needs a
    /// comma).
    pub(crate) members: bool,
    /// The text of `model`'s value, quotes included; `None` when there is no `model`.
    pub(crate) model: Option<Range<usize>>,
    /// `stream_options`; `None` when there is none.
    pub(crate) stream_options: Option<OptionsSpot>,
}

/// Where `stream_options` is: see [`RewriteSpots`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OptionsSpot {
    /// `stream_options: null`: the text of the `null`.
    Null(Range<usize>),
    Object {
        /// The object's closing `}`.
        end: usize,
        /// Whether the object has any member.
        members: bool,
        /// The text of `include_usage`'s value (`true`, `false` or `null`); `None` when absent.
        include_usage: Option<Range<usize>>,
    },
}

/// Where, in a request body, the fields session detection reads are: byte ranges of their JSON
/// text (each a complete, valid JSON value of the body).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionParts {
    pub metadata: Option<Range<usize>>,
    pub prompt_cache_key: Option<Range<usize>>,
    /// The opening of `messages`; `None` when `messages` is absent or `null`.
    pub opening: Option<ChatOpening>,
}

/// The opening of a chat's `messages`, as its fingerprint reads it: the `content` of each
/// `system` or `developer` message before the first `user` message, and that message's. A
/// message that is not an object, or whose (last) `role` is not a string, has no role;
/// `messages` that is not an array has no opening messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatOpening {
    /// `None` for a message without `content`.
    pub system: Vec<Option<Range<usize>>>,
    /// `Some` once the first user message was found (`Some(None)`: it has no `content`).
    pub first_user: Option<Option<Range<usize>>>,
}

/// Only the [`SessionParts`] of a body that is a JSON object (`None` otherwise): for a body the
/// peek did not read (a request refused before it).
pub fn session_parts(body: &[u8]) -> Option<SessionParts> {
    let text = std::str::from_utf8(body).ok()?;
    let raw: SessionRaw<'_> = serde_json::from_str(text).ok()?;
    Some(raw.into_parts(text))
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PeekError {
    /// Not parseable JSON; the message is serde's, with line and column.
    #[error("request body is not valid JSON: {0}")]
    NotJson(String),
    /// Valid JSON (or at least starting like it) but not an object.
    #[error("request body must be a JSON object, found {0}")]
    NotObject(&'static str),
    #[error("`model` must be a string, found {0}")]
    ModelNotString(&'static str),
    /// A field iris reads has the wrong type, or is duplicated. (The server's error says
    /// "invalid request body" before it.)
    #[error("{0}")]
    InvalidField(String),
}

/// Peek at a request body. See [`RequestPeek`].
pub fn peek_request(body: &[u8]) -> Result<RequestPeek, PeekError> {
    peek_body(body).map(|p| p.peek)
}

/// Peek at a request body, keeping the body and where the rewrites would change it: see
/// [`PeekedBody`].
pub fn peek_body(body: &[u8]) -> Result<PeekedBody<'_>, PeekError> {
    let text = object_text(body)?;
    let (peek, spots) = match scan::peek(text) {
        Some(fast) => (
            RequestPeek {
                model: fast.model.map(str::to_owned),
                stream: fast.stream,
                include_usage: fast.include_usage,
                session: fast.session,
            },
            Some(fast.spots),
        ),
        None => (by_serde(text)?, None),
    };
    Ok(PeekedBody {
        include_usage: peek.include_usage,
        peek,
        body,
        spots,
    })
}

/// [`peek_request`] through serde alone, without the fast path (`scan`) that gives up to it:
/// what the fast path must agree with (the fuzz target `peek_model` and the tests compare the
/// two).
#[doc(hidden)]
pub fn peek_request_by_serde(body: &[u8]) -> Result<RequestPeek, PeekError> {
    by_serde(object_text(body)?)
}

/// The body as text, when it starts like a JSON object and is UTF-8.
fn object_text(body: &[u8]) -> Result<&str, PeekError> {
    check_object(body)?;
    // JSON text is UTF-8 (RFC 8259 §8.1). serde_json checks UTF-8 only in the strings it hands
    // out, not in those it skips, so without this a body with invalid UTF-8 in an unread field
    // passed the peek, then failed the rewrites (400 only when a rewrite was needed) or reached
    // the provider as invalid JSON. Found by fuzzing (fuzz/fuzz_targets/peek_model.rs).
    utf8(body).map_err(|at| PeekError::NotJson(format!("invalid UTF-8 at byte {at}")))
}

/// The body as text, or where its UTF-8 breaks. simdutf8 checks 64 bytes at a time with SIMD (a
/// fifth of the peek's time for a Claude Code body with std's check); below a few KB its
/// dispatch costs more than it saves.
fn utf8(body: &[u8]) -> Result<&str, usize> {
    if body.len() < 4096 {
        std::str::from_utf8(body).map_err(|e| e.valid_up_to())
    } else {
        simdutf8::compat::from_utf8(body).map_err(|e| e.valid_up_to())
    }
}

fn by_serde(text: &str) -> Result<RequestPeek, PeekError> {
    let raw: PeekRaw<'_> = serde_json::from_str(text).map_err(classify)?;
    let session = raw.session.into_parts(text);
    let model = match raw.model {
        Scalar::Absent => None,
        Scalar::Str(s) => Some(s.into_owned()),
        other => return Err(PeekError::ModelNotString(other.kind())),
    };
    let stream = match raw.stream {
        Scalar::Absent | Scalar::Null => false,
        Scalar::Bool(b) => b,
        other => {
            return Err(PeekError::InvalidField(format!(
                "`stream` must be a boolean, found {}",
                other.kind()
            )));
        }
    };
    let include_usage = match raw.stream_options {
        StreamOptionsField::Absent | StreamOptionsField::Null => None,
        StreamOptionsField::Wrong(kind) => {
            return Err(PeekError::InvalidField(format!(
                "`stream_options` must be an object, found {kind}"
            )));
        }
        StreamOptionsField::Object(inner) => match inner {
            Scalar::Absent | Scalar::Null => None,
            Scalar::Bool(b) => Some(b),
            other => {
                return Err(PeekError::InvalidField(format!(
                    "`stream_options.include_usage` must be a boolean, found {}",
                    other.kind()
                )));
            }
        },
    };
    Ok(RequestPeek {
        model,
        stream,
        include_usage,
        session,
    })
}

/// The body with `stream_options.include_usage` set to `true`; every other member (including
/// other `stream_options` members) is kept. `stream_options: null` becomes an object.
pub fn with_include_usage(body: &[u8]) -> Result<Vec<u8>, PeekError> {
    rewrite_member(body, "stream_options", |old| {
        let mut options = match old {
            None => OrderedObject::default(),
            Some(raw) => match first_byte(raw.as_bytes()) {
                Some(b'n') => OrderedObject::default(),
                Some(b'{') => serde_json::from_str::<OrderedObject<'_>>(raw)
                    .map_err(|e| PeekError::InvalidField(format!("`stream_options`: {e}")))?,
                other => {
                    return Err(PeekError::InvalidField(format!(
                        "`stream_options` must be an object, found {}",
                        json_kind(other)
                    )));
                }
            },
        };
        options.set("include_usage", "true")?;
        Ok(options.to_json())
    })
}

/// The body with `model` replaced by `model` (added if absent). Used when a client asked for
/// `provider/model` and the provider expects its bare id.
pub fn with_model(body: &[u8], model: &str) -> Result<Vec<u8>, PeekError> {
    let encoded = json_string(model);
    rewrite_member(body, "model", |_| Ok(encoded))
}

impl fmt::Debug for PeekedBody<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeekedBody")
            .field("peek", &self.peek)
            .field("body_bytes", &self.body.len())
            .field("splices", &self.spots.is_some())
            .finish()
    }
}

impl<'b> PeekedBody<'b> {
    /// The body the peek read.
    pub fn body(&self) -> &'b [u8] {
        self.body
    }

    /// Whether the fast path read the body, noting where to splice (else [`rewrite`] rebuilds
    /// it). For tests and benchmarks.
    ///
    /// [`rewrite`]: PeekedBody::rewrite
    #[doc(hidden)]
    pub fn splices(&self) -> bool {
        self.spots.is_some()
    }

    /// The upstream body: `model` set to `model` when given (added at the end when absent),
    /// and, when `include_usage` and the client did not already ask for it,
    /// `stream_options.include_usage` set to `true` (`stream_options` made an object, or added
    /// at the end). `Ok(None)` when nothing changes. The caller gives `model` only when it
    /// differs from the requested one: a model given is written even when it is the same.
    ///
    /// It means the same as [`with_model`] then [`with_include_usage`], but where the peek's
    /// fast path noted the spots it copies the body once, splicing the new text in: every byte
    /// it does not replace is kept (whitespace, key spellings and member order included, also
    /// inside `stream_options`), and the body is not read again: `model` in an 80 KB Claude
    /// Code body 27 → 2.3 µs, model and usage in a 64 KiB code chat 30 → 1.5 µs, usage in a
    /// small chat 450 → 50 ns (benches/wire.rs). A replaced `include_usage` stays where it was
    /// (the two-call path moves it to the end of `stream_options`), which is the same JSON
    /// value. Without spots (the body was read through serde) it calls the two functions, so
    /// every answer and error is theirs.
    pub fn rewrite(
        &self,
        model: Option<&str>,
        include_usage: bool,
    ) -> Result<Option<Vec<u8>>, PeekError> {
        let include_usage = include_usage && self.include_usage != Some(true);
        if model.is_none() && !include_usage {
            return Ok(None);
        }
        if let Some(spots) = &self.spots
            && let Some(out) = splice(self.body, spots, model, include_usage)
        {
            return Ok(Some(out));
        }
        rebuild(self.body, model, include_usage)
    }
}

/// [`PeekedBody::rewrite`] without the spots: the body rebuilt by [`with_model`], then
/// [`with_include_usage`], as the server made it before the splice. What the splice must agree
/// with (the tests and the fuzz target `peek_model` compare the two).
#[doc(hidden)]
pub fn rewrite_by_rebuilding(
    body: &[u8],
    peek: &RequestPeek,
    model: Option<&str>,
    include_usage: bool,
) -> Result<Option<Vec<u8>>, PeekError> {
    rebuild(
        body,
        model,
        include_usage && peek.include_usage != Some(true),
    )
}

fn rebuild(
    body: &[u8],
    model: Option<&str>,
    include_usage: bool,
) -> Result<Option<Vec<u8>>, PeekError> {
    let mut out = None;
    if let Some(model) = model {
        out = Some(with_model(body, model)?);
    }
    if include_usage {
        out = Some(with_include_usage(out.as_deref().unwrap_or(body))?);
    }
    Ok(out)
}

/// One change [`splice`] makes: the bytes `at` (empty for an insertion) replaced by the
/// concatenation of `text`.
struct Edit<'a> {
    at: Range<usize>,
    text: [&'a [u8]; 6],
}

impl<'a> Edit<'a> {
    fn new(at: Range<usize>, text: &[&'a [u8]]) -> Self {
        let mut all: [&[u8]; 6] = [b""; 6];
        for (slot, t) in all.iter_mut().zip(text) {
            *slot = t;
        }
        Edit { at, text: all }
    }

    fn len(&self) -> usize {
        self.text.iter().map(|t| t.len()).sum()
    }
}

/// [`PeekedBody::rewrite`] by the spots; `None` when a spot does not hold what the peek saw
/// there (which would be a bug of the fast path), and the caller then rebuilds the body.
fn splice(
    body: &[u8],
    spots: &RewriteSpots,
    model: Option<&str>,
    include_usage: bool,
) -> Option<Vec<u8>> {
    const USAGE_OBJECT: &[u8] = br#"{"include_usage":true}"#;
    let comma = |after_member: bool| if after_member { &b","[..] } else { b"" };
    (body.get(spots.end) == Some(&b'}')).then_some(())?;
    let model = model.map(json_string);
    // At most three: `model`'s value, something in `stream_options`, and members added at the
    // end of the top-level object (in the order the two-call path adds them).
    let mut edits: [Option<Edit<'_>>; 3] = [None, None, None];
    let (mut at_end, mut n): ([&[u8]; 6], usize) = ([b""; 6], 0);
    let mut after_member = spots.members;
    if let Some(model) = &model {
        match &spots.model {
            Some(at) => {
                let old = body.get(at.clone())?;
                (old.len() >= 2 && old.first() == Some(&b'"') && old.last() == Some(&b'"'))
                    .then_some(())?;
                edits[0] = Some(Edit::new(at.clone(), &[model.as_bytes()]));
            }
            None => {
                at_end[..3].copy_from_slice(&[
                    comma(after_member),
                    br#""model":"#,
                    model.as_bytes(),
                ]);
                n = 3;
                after_member = true;
            }
        }
    }
    if include_usage {
        match &spots.stream_options {
            None => {
                at_end[n..n + 3].copy_from_slice(&[
                    comma(after_member),
                    br#""stream_options":"#,
                    USAGE_OBJECT,
                ]);
                n += 3;
            }
            Some(OptionsSpot::Null(at)) => {
                (body.get(at.clone())? == b"null").then_some(())?;
                edits[1] = Some(Edit::new(at.clone(), &[USAGE_OBJECT]));
            }
            Some(OptionsSpot::Object {
                include_usage: Some(at),
                ..
            }) => {
                matches!(body.get(at.clone())?, b"true" | b"false" | b"null").then_some(())?;
                edits[1] = Some(Edit::new(at.clone(), &[b"true"]));
            }
            Some(OptionsSpot::Object {
                end,
                members,
                include_usage: None,
            }) => {
                (body.get(*end) == Some(&b'}')).then_some(())?;
                edits[1] = Some(Edit::new(
                    *end..*end,
                    &[comma(*members), br#""include_usage":true"#],
                ));
            }
        }
    }
    if n > 0 {
        edits[2] = Some(Edit::new(spots.end..spots.end, &at_end[..n]));
    }
    // `model` and `stream_options` may come in either order; the end comes last.
    if let [Some(m), Some(o), _] = &edits
        && o.at.start < m.at.start
    {
        edits.swap(0, 1);
    }
    let added: usize = edits.iter().flatten().map(Edit::len).sum();
    let mut out = Vec::with_capacity(body.len() + added);
    let mut from = 0;
    for edit in edits.iter().flatten() {
        // Spots that overlap or run backwards (not the peek's) give up here.
        out.extend_from_slice(body.get(from..edit.at.start)?);
        for t in edit.text {
            out.extend_from_slice(t);
        }
        from = edit.at.end;
    }
    out.extend_from_slice(body.get(from..)?);
    Some(out)
}

// ---------------------------------------------------------------------------------------------

fn classify(e: serde_json::Error) -> PeekError {
    match e.classify() {
        serde_json::error::Category::Data => PeekError::InvalidField(e.to_string()),
        serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof
        | serde_json::error::Category::Io => PeekError::NotJson(e.to_string()),
    }
}

fn first_byte(body: &[u8]) -> Option<u8> {
    body.iter()
        .copied()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
}

fn json_kind(first: Option<u8>) -> &'static str {
    match first {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'-' | b'0'..=b'9') => "a number",
        _ => "something else",
    }
}

/// Reject a body whose first token is not `{`; leave real syntax errors to serde (which reports
/// line and column).
fn check_object(body: &[u8]) -> Result<(), PeekError> {
    if first_byte(body) == Some(b'{') {
        return Ok(());
    }
    match serde_json::from_slice::<IgnoredAny>(body) {
        Ok(_) => Err(PeekError::NotObject(json_kind(first_byte(body)))),
        Err(e) => Err(PeekError::NotJson(e.to_string())),
    }
}

fn json_string(s: &str) -> String {
    // Serialising a &str cannot fail.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// Replace (or append) top-level member `key` with the JSON text `f(old)` returns.
fn rewrite_member(
    body: &[u8],
    key: &str,
    f: impl FnOnce(Option<&str>) -> Result<String, PeekError>,
) -> Result<Vec<u8>, PeekError> {
    rewrite_member_by(body, key, f, true)
}

/// [`rewrite_member`], its members read by the fast path (`scan::members`) when `fast` and it
/// does not give up, else through serde (`OrderedObject`).
fn rewrite_member_by(
    body: &[u8],
    key: &str,
    f: impl FnOnce(Option<&str>) -> Result<String, PeekError>,
    fast: bool,
) -> Result<Vec<u8>, PeekError> {
    check_object(body)?;
    let read_fast = || scan::members(utf8(body).ok()?);
    let entries = match fast.then(read_fast).flatten() {
        Some(entries) => entries,
        None => {
            let obj: OrderedObject<'_> = serde_json::from_slice(body).map_err(classify)?;
            obj.entries.into_iter().map(|(k, v)| (k, v.get())).collect()
        }
    };
    let mut found: Option<usize> = None;
    for (i, (k, _)) in entries.iter().enumerate() {
        if k.as_ref() == key {
            if found.is_some() {
                return Err(PeekError::InvalidField(format!("duplicate field `{key}`")));
            }
            found = Some(i);
        }
    }
    let new_value = f(found.and_then(|i| entries.get(i).map(|(_, v)| *v)))?;
    let mut out = Vec::with_capacity(body.len() + key.len() + new_value.len() + 8);
    out.push(b'{');
    let mut first = true;
    for (i, (k, v)) in entries.iter().enumerate() {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(json_string(k).as_bytes());
        out.push(b':');
        if Some(i) == found {
            out.extend_from_slice(new_value.as_bytes());
        } else {
            out.extend_from_slice(v.as_bytes());
        }
    }
    if found.is_none() {
        if !first {
            out.push(b',');
        }
        out.extend_from_slice(json_string(key).as_bytes());
        out.push(b':');
        out.extend_from_slice(new_value.as_bytes());
    }
    out.push(b'}');
    Ok(out)
}

/// A JSON object as its members in order, each value kept as its original text.
#[derive(Default)]
struct OrderedObject<'a> {
    entries: Vec<(Cow<'a, str>, &'a RawValue)>,
    /// Values this object owns (set by [`OrderedObject::set`]).
    owned: Vec<(String, Box<RawValue>)>,
}

impl OrderedObject<'_> {
    fn set(&mut self, key: &str, json: &str) -> Result<(), PeekError> {
        let value = RawValue::from_string(json.to_owned())
            .map_err(|e| PeekError::InvalidField(e.to_string()))?;
        let before = self.entries.len();
        self.entries.retain(|(k, _)| k.as_ref() != key);
        if self.entries.len() + 1 < before {
            return Err(PeekError::InvalidField(format!("duplicate field `{key}`")));
        }
        self.owned.retain(|(k, _)| k != key);
        self.owned.push((key.to_owned(), value));
        Ok(())
    }

    fn to_json(&self) -> String {
        let mut out = String::from("{");
        let members = self
            .entries
            .iter()
            .map(|(k, v)| (k.as_ref(), v.get()))
            .chain(self.owned.iter().map(|(k, v)| (k.as_str(), v.get())));
        for (i, (k, v)) in members.enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&json_string(k));
            out.push(':');
            out.push_str(v);
        }
        out.push('}');
        out
    }
}

impl<'de> Deserialize<'de> for OrderedObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    entries.push((k, v));
                }
                Ok(OrderedObject {
                    entries,
                    owned: Vec::new(),
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Visitor methods that take any scalar (a shape the field does not have) and give `$value`.
macro_rules! any_scalar_is {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// The top level as the peek reads it. Written out rather than derived: the three fields that
/// route the request refuse a duplicate, the session fields take the last one.
#[derive(Default)]
struct PeekRaw<'a> {
    model: Scalar<'a>,
    stream: Scalar<'a>,
    stream_options: StreamOptionsField<'a>,
    session: SessionRaw<'a>,
}

impl<'de: 'a, 'a> Deserialize<'de> for PeekRaw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = PeekRaw<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PeekRaw<'a>, A::Error> {
                let mut raw = PeekRaw::default();
                let (mut model, mut stream, mut options) = (false, false, false);
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    match k.as_ref() {
                        "model" => {
                            if std::mem::replace(&mut model, true) {
                                return Err(de::Error::duplicate_field("model"));
                            }
                            raw.model = map.next_value()?;
                        }
                        "stream" => {
                            if std::mem::replace(&mut stream, true) {
                                return Err(de::Error::duplicate_field("stream"));
                            }
                            raw.stream = map.next_value()?;
                        }
                        "stream_options" => {
                            if std::mem::replace(&mut options, true) {
                                return Err(de::Error::duplicate_field("stream_options"));
                            }
                            raw.stream_options = map.next_value()?;
                        }
                        other => raw.session.read(other, &mut map)?,
                    }
                }
                Ok(raw)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The session fields, borrowed from the body.
#[derive(Default)]
struct SessionRaw<'a> {
    metadata: Option<&'a RawValue>,
    prompt_cache_key: Option<&'a RawValue>,
    opening: Option<OpeningRaw<'a>>,
}

impl<'a> SessionRaw<'a> {
    /// Read the value of top-level member `key` (whatever the key, the value is consumed).
    fn read<'de: 'a, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "metadata" => self.metadata = Some(map.next_value()?),
            "prompt_cache_key" => self.prompt_cache_key = Some(map.next_value()?),
            "messages" => self.opening = map.next_value()?,
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    /// Ranges into `text`, which every borrowed value is a slice of.
    fn into_parts(self, text: &str) -> SessionParts {
        let range = |raw: &RawValue| {
            let start = (raw.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
            start..start + raw.get().len()
        };
        SessionParts {
            metadata: self.metadata.map(range),
            prompt_cache_key: self.prompt_cache_key.map(range),
            opening: self.opening.map(|o| ChatOpening {
                system: o.system.into_iter().map(|c| c.map(range)).collect(),
                first_user: o.first_user.map(|c| c.map(range)),
            }),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for SessionRaw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = SessionRaw<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SessionRaw<'a>, A::Error> {
                let mut raw = SessionRaw::default();
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    raw.read(&k, &mut map)?;
                }
                Ok(raw)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// [`ChatOpening`], borrowed.
#[derive(Default)]
struct OpeningRaw<'a> {
    system: Vec<Option<&'a RawValue>>,
    first_user: Option<Option<&'a RawValue>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for OpeningRaw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = OpeningRaw<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("chat messages")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OpeningRaw<'a>, A::Error> {
                let mut o = OpeningRaw::default();
                while o.first_user.is_none() {
                    let Some(m) = seq.next_element::<ChatMessage<'a>>()? else {
                        return Ok(o);
                    };
                    match m.role {
                        Some(Role::System) => o.system.push(m.content),
                        Some(Role::User) => o.first_user = Some(m.content),
                        Some(Role::Other) | None => {}
                    }
                }
                // The rest of the conversation is only validated.
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(o)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OpeningRaw<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(OpeningRaw::default())
            }
            any_scalar_is!(OpeningRaw::default());
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `system` or `developer`.
    System,
    User,
    Other,
}

/// One element of `messages`: its role (`None` unless the last `role` is a string) and its raw
/// `content` (the last one).
#[derive(Default)]
struct ChatMessage<'a> {
    role: Option<Role>,
    content: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for ChatMessage<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = ChatMessage<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a chat message")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ChatMessage<'a>, A::Error> {
                let mut m = ChatMessage::default();
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    match k.as_ref() {
                        "role" => m.role = map.next_value::<Scalar<'de>>()?.role(),
                        "content" => m.content = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(m)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ChatMessage<'a>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ChatMessage::default())
            }
            any_scalar_is!(ChatMessage::default());
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Any JSON value, remembering only what iris needs: strings and booleans, and the kind of the
/// rest (so errors can say what was found).
#[derive(Debug, Default)]
enum Scalar<'a> {
    #[default]
    Absent,
    Null,
    Bool(bool),
    Str(Cow<'a, str>),
    Number,
    Array,
    Object,
}

impl Scalar<'_> {
    /// A chat message's role: only a string is one.
    fn role(&self) -> Option<Role> {
        match self {
            Scalar::Str(r) => Some(match r.as_ref() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                _ => Role::Other,
            }),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Scalar::Absent => "nothing",
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::Str(_) => "a string",
            Scalar::Number => "a number",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Number)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Number)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Scalar::Number)
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Object)
            }
        }
        d.deserialize_any(V)
    }
}

/// `stream_options`: an object whose `include_usage` is read, or null, or a wrong type.
#[derive(Debug, Default)]
enum StreamOptionsField<'a> {
    #[default]
    Absent,
    Null,
    Object(Scalar<'a>),
    Wrong(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for StreamOptionsField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StreamOptionsField<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(StreamOptionsField::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(StreamOptionsField::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(StreamOptionsField::Wrong("a boolean"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(StreamOptionsField::Wrong("a number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(StreamOptionsField::Wrong("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(StreamOptionsField::Wrong("a number"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(StreamOptionsField::Wrong("a string"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StreamOptionsField::Wrong("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut include_usage = Scalar::Absent;
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    if k == "include_usage" {
                        if !matches!(include_usage, Scalar::Absent) {
                            return Err(de::Error::custom(
                                "duplicate field `stream_options.include_usage`",
                            ));
                        }
                        include_usage = map.next_value::<Scalar<'de>>()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(StreamOptionsField::Object(include_usage))
            }
        }
        d.deserialize_any(V)
    }
}
