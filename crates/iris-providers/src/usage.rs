//! Token usage, extracted while response bytes flow to the client.
//!
//! Feed every response chunk to [`UsageExtractor::feed`] as it passes (chunks may split anywhere)
//! and call [`UsageExtractor::finish`] at the end. Nothing is ever buffered whole:
//! - streaming responses go through an incremental SSE parser, and only the events that can carry
//!   usage are parsed as JSON: Anthropic `message_start` / `message_delta` / `error`; OpenAI chat
//!   and completion chunks that contain a `"usage": {` object (checked with `memmem` first, since
//!   with `include_usage` every chunk carries `"usage": null`), the first chunk (for the model)
//!   and error chunks; Responses `response.completed` / `response.incomplete` /
//!   `response.failed` / `error`. A single event larger than [`MAX_SSE_EVENT`] is skipped.
//! - non-streaming bodies are kept up to [`MAX_BODY`] and read once at the end by a validating
//!   scanner of their own (`body_scan`), which skips every field but `model` and `usage`. Past
//!   the cap only the last [`TAIL`] bytes are kept, and the last top-level-looking
//!   `"usage": {...}` in them is read: large embedding batches put usage at the very end.
//!
//! Parsing is lenient: a field of an unexpected type reads as absent rather than losing the
//! whole event.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use memchr::memmem;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::api::ApiFamily;
use crate::body_scan::{self, Shape};
use crate::sse::{SseParser, SseSink};

/// One SSE event larger than this is skipped, not buffered.
pub const MAX_SSE_EVENT: usize = 16 * 1024 * 1024;
/// Non-streaming bodies up to this size are parsed whole.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Past [`MAX_BODY`], this many trailing bytes are kept to find `usage` in.
pub const TAIL: usize = 64 * 1024;

/// Tokens one request used, as the provider reported them.
///
/// The fields keep each provider's own accounting, which differs:
/// - OpenAI (chat, completions, responses): `input_tokens` is `prompt_tokens` / `input_tokens`
///   and **includes** the cached tokens, which are also reported in `cache_read_tokens`;
///   `output_tokens` **includes** `reasoning_tokens`. OpenAI reports no cache writes.
/// - Anthropic: `input_tokens` **excludes** cache reads and writes, which are reported apart in
///   `cache_read_tokens` (`cache_read_input_tokens`) and `cache_write_tokens`
///   (`cache_creation_input_tokens`); thinking is part of `output_tokens` and not reported
///   apart, so `reasoning_tokens` is 0.
/// - Embeddings: `input_tokens` is `prompt_tokens`; nothing else.
///
/// Pricing code must know the provider's dialect to total these; this type does not pretend they
/// are comparable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
}

/// What the extractor found once the response ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Extracted {
    /// `None` when the response carried no usage (error, cut stream, chat stream without
    /// `include_usage`, a body over the cap without usage near its end) and always for
    /// `count_tokens`, which is not billable usage.
    pub usage: Option<TokenUsage>,
    /// The model the provider says answered (may be a dated snapshot of the requested one).
    pub response_model: Option<String>,
    /// For streams: the type (or code) of an error event the provider sent mid-stream.
    pub stream_error: Option<String>,
    /// A whole (non-streaming) body that does not parse as its API's answer: cut short, not
    /// JSON, or JSON of the wrong kind. Bodies past the whole-body cap are not judged (only
    /// their tail is kept), nor are streams.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub malformed_body: bool,
}

/// Incremental usage extraction for one response. See the module docs.
#[derive(Debug, Clone)]
pub struct UsageExtractor {
    state: State,
    mode: Mode,
}

#[derive(Debug, Clone)]
enum Mode {
    /// `count_tokens`: nothing to extract, nothing kept.
    Ignore,
    Stream(SseParser),
    Body(Vec<u8>),
    /// The body passed [`MAX_BODY`]: only its tail is kept.
    Tail(Vec<u8>),
}

impl UsageExtractor {
    /// `streaming`: whether the response is an SSE stream (the request asked `stream: true` and
    /// the provider answered `text/event-stream`).
    pub fn new(family: ApiFamily, streaming: bool) -> Self {
        let mode = if !family.is_billable() {
            Mode::Ignore
        } else if streaming {
            Mode::Stream(SseParser::new(MAX_SSE_EVENT))
        } else {
            Mode::Body(Vec::new())
        };
        UsageExtractor {
            state: State {
                family,
                usage: None,
                model: None,
                stream_error: None,
                malformed_body: false,
                tried_model: false,
            },
            mode,
        }
    }

    /// Whether [`finish`](Self::finish) reads the kept body (a non-streaming answer, scanned
    /// whole: work in proportion to its size), rather than only closing what was read as the
    /// bytes passed (a stream). A caller that must not delay the answer's last bytes hands such
    /// an extractor to other work to finish.
    pub fn reads_body_at_finish(&self) -> bool {
        matches!(self.mode, Mode::Body(_) | Mode::Tail(_))
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match &mut self.mode {
            Mode::Ignore => {}
            Mode::Stream(parser) => parser.feed(chunk, &mut self.state),
            Mode::Body(body) => {
                if body.len() + chunk.len() <= MAX_BODY {
                    body.extend_from_slice(chunk);
                } else {
                    // Past the cap only the end is kept, in a buffer of its own: the body's has
                    // grown to megabytes, and the chunk may be larger still (a caller may hand
                    // over all it kept elsewhere at once).
                    let mut tail = Vec::with_capacity(2 * TAIL);
                    push_tail(&mut tail, body);
                    push_tail(&mut tail, chunk);
                    self.mode = Mode::Tail(tail);
                }
            }
            Mode::Tail(tail) => push_tail(tail, chunk),
        }
    }

    pub fn finish(self) -> Extracted {
        let UsageExtractor { mut state, mode } = self;
        match mode {
            Mode::Ignore => {}
            Mode::Stream(mut parser) => parser.finish(&mut state),
            Mode::Body(body) => state.parse_body(&body),
            Mode::Tail(mut tail) => {
                trim_front(&mut tail, TAIL);
                state.parse_tail(&tail);
            }
        }
        state.extracted()
    }

    /// Finish an extractor of a whole (non-streaming) answer that was fed none of it: `body` is
    /// the answer, kept elsewhere (a capture keeps the same bytes, and copying them twice on the
    /// request path would be waste). What is found is what feeding `body` and then finishing
    /// finds. An extractor of another kind finishes as [`finish`](Self::finish) does, and one
    /// that was fed ignores `body`.
    pub fn finish_reading(self, body: &[u8]) -> Extracted {
        match self.mode {
            Mode::Body(ref kept) if kept.is_empty() => {
                let mut state = self.state;
                if body.len() > MAX_BODY {
                    state.parse_tail(&body[body.len() - TAIL..]);
                } else {
                    state.parse_body(body);
                }
                state.extracted()
            }
            _ => self.finish(),
        }
    }
}

/// Append `bytes` to a tail, which then holds at least the last [`TAIL`] bytes of all it was
/// given and at most three times that: a chunk of a tail's size or more replaces it, copied
/// from its end only.
fn push_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    if let Some(cut) = bytes.len().checked_sub(TAIL) {
        tail.clear();
        tail.extend_from_slice(&bytes[cut..]);
    } else {
        tail.extend_from_slice(bytes);
        if tail.len() > 2 * TAIL {
            trim_front(tail, TAIL);
        }
    }
}

/// Keep the last `keep` bytes.
fn trim_front(buf: &mut Vec<u8>, keep: usize) {
    if buf.len() > keep {
        let cut = buf.len() - keep;
        buf.drain(..cut);
    }
}

#[derive(Debug, Clone)]
struct State {
    family: ApiFamily,
    usage: Option<TokenUsage>,
    model: Option<String>,
    stream_error: Option<String>,
    malformed_body: bool,
    /// OpenAI chat: the first chunk was parsed for its model already.
    tried_model: bool,
}

impl State {
    fn extracted(self) -> Extracted {
        Extracted {
            usage: self.usage,
            response_model: self.model,
            stream_error: self.stream_error,
            malformed_body: self.malformed_body,
        }
    }
}

const ANTHROPIC_EVENTS: [&[u8]; 3] = [b"message_start", b"message_delta", b"error"];
const RESPONSES_EVENTS: [&[u8]; 4] = [
    b"response.completed",
    b"response.incomplete",
    b"response.failed",
    b"error",
];

impl SseSink for State {
    fn wants_data(&self, name: &[u8]) -> bool {
        if name.is_empty() {
            return true;
        }
        match self.family {
            ApiFamily::AnthropicMessages => ANTHROPIC_EVENTS.contains(&name),
            ApiFamily::OpenAiResponses => RESPONSES_EVENTS.contains(&name),
            // OpenAI chat streams name no events; an OpenAI-compatible server that does is still
            // read (its usage chunk could carry any name).
            ApiFamily::OpenAiChat | ApiFamily::OpenAiCompletions | ApiFamily::OpenAiEmbeddings => {
                true
            }
            ApiFamily::AnthropicCountTokens => false,
        }
    }

    fn on_event(&mut self, name: &[u8], data: &[u8]) {
        match self.family {
            ApiFamily::AnthropicMessages => self.anthropic_event(name, data),
            ApiFamily::OpenAiResponses => self.responses_event(name, data),
            ApiFamily::OpenAiChat | ApiFamily::OpenAiCompletions | ApiFamily::OpenAiEmbeddings => {
                self.openai_chunk(name, data)
            }
            ApiFamily::AnthropicCountTokens => {}
        }
    }
}

impl State {
    fn set_model(&mut self, model: Text<'_>) {
        if let Some(m) = model.0 {
            self.model = Some(m.into_owned());
        }
    }

    fn anthropic_event(&mut self, name: &[u8], data: &[u8]) {
        if name.is_empty() && !has_key(data, b"usage", b'{') && !has_key(data, b"error", b'{') {
            return;
        }
        let Ok(ev) = serde_json::from_slice::<AnthropicEvent<'_>>(data) else {
            return;
        };
        let kind: &[u8] = match &ev.kind.0 {
            Some(k) => k.as_bytes(),
            None => name,
        };
        match kind {
            b"message_start" => {
                if let Some(msg) = ev.message.0 {
                    self.set_model(msg.model);
                    if let Some(u) = msg.usage.0 {
                        let mut total = TokenUsage::default();
                        u.apply_to(&mut total);
                        self.usage = Some(total);
                    }
                }
            }
            b"message_delta" => {
                if let Some(u) = ev.usage.0 {
                    u.apply_to(self.usage.get_or_insert_with(TokenUsage::default));
                }
            }
            b"error" => {
                let kind = ev.error.0.and_then(|e| e.kind.0);
                self.stream_error = Some(kind.map_or_else(|| "error".to_owned(), Cow::into_owned));
            }
            _ => {}
        }
    }

    fn openai_chunk(&mut self, name: &[u8], data: &[u8]) {
        if data == b"[DONE]" {
            return;
        }
        let wanted = !self.tried_model
            || name == b"error"
            || has_key(data, b"usage", b'{')
            || has_key(data, b"error", b'{');
        if !wanted {
            return;
        }
        self.tried_model = true;
        let Ok(chunk) = serde_json::from_slice::<OpenAiBody<'_>>(data) else {
            return;
        };
        self.set_model(chunk.model);
        if let Some(u) = chunk.usage.0 {
            self.usage = Some(u.to_usage());
        }
        if let Some(e) = chunk.error.0 {
            self.stream_error = Some(e.label());
        }
    }

    fn responses_event(&mut self, name: &[u8], data: &[u8]) {
        if name.is_empty()
            && !has_key(data, b"usage", b'{')
            && !has_key(data, b"error", b'{')
            && memmem::find(data, br#""type":"error""#).is_none()
        {
            return;
        }
        let Ok(ev) = serde_json::from_slice::<ResponsesEvent<'_>>(data) else {
            return;
        };
        let kind: &[u8] = match &ev.kind.0 {
            Some(k) => k.as_bytes(),
            None => name,
        };
        if kind == b"error" {
            let label = ev
                .code
                .0
                .map(Cow::into_owned)
                .or_else(|| ev.error.0.map(|e| e.label()))
                .unwrap_or_else(|| "error".to_owned());
            self.stream_error = Some(label);
            return;
        }
        if let Some(resp) = ev.response.0 {
            self.set_model(resp.model);
            if let Some(u) = resp.usage.0 {
                self.usage = Some(u.to_usage());
            }
            if kind == b"response.failed" {
                let label = resp
                    .error
                    .0
                    .map(|e| e.label())
                    .unwrap_or_else(|| "response.failed".to_owned());
                self.stream_error = Some(label);
            }
        }
    }

    fn parse_body(&mut self, body: &[u8]) {
        let shape = match self.family {
            ApiFamily::AnthropicMessages => Shape::Anthropic,
            ApiFamily::OpenAiResponses => Shape::Responses,
            ApiFamily::OpenAiChat | ApiFamily::OpenAiCompletions | ApiFamily::OpenAiEmbeddings => {
                Shape::OpenAi
            }
            ApiFamily::AnthropicCountTokens => return,
        };
        match body_scan::read_body(shape, body) {
            Ok(fields) => {
                if fields.model.is_some() {
                    self.model = fields.model;
                }
                self.usage = fields.usage;
            }
            Err(body_scan::Malformed) => self.malformed_body = true,
        }
    }

    /// The end of a body too large to keep: read the last `"usage": {...}` and `"model": "..."`.
    fn parse_tail(&mut self, tail: &[u8]) {
        if let Some(at) = last_key_value(tail, b"model", b'"') {
            let mut de = serde_json::Deserializer::from_slice(&tail[at..]);
            if let Ok(t) = Text::deserialize(&mut de) {
                self.set_model(t);
            }
        }
        let Some(at) = last_key_value(tail, b"usage", b'{') else {
            return;
        };
        let mut de = serde_json::Deserializer::from_slice(&tail[at..]);
        self.usage = match self.family {
            ApiFamily::AnthropicMessages => AnthropicUsage::deserialize(&mut de).ok().map(|u| {
                let mut total = TokenUsage::default();
                u.apply_to(&mut total);
                total
            }),
            ApiFamily::OpenAiResponses => ResponsesUsage::deserialize(&mut de)
                .ok()
                .map(|u| u.to_usage()),
            ApiFamily::OpenAiChat | ApiFamily::OpenAiCompletions | ApiFamily::OpenAiEmbeddings => {
                OpenAiUsage::deserialize(&mut de).ok().map(|u| u.to_usage())
            }
            ApiFamily::AnthropicCountTokens => None,
        };
    }
}

/// Positions just past `"key"` + optional whitespace + `:` + optional whitespace, where the next
/// byte is `first` (`{` for an object, `"` for a string). Inside JSON strings quotes are escaped,
/// so an unescaped `"key"` followed by `:` is an object key.
fn key_values<'a>(hay: &'a [u8], key: &'a [u8], first: u8) -> impl Iterator<Item = usize> + 'a {
    memmem::find_iter(hay, key).filter_map(move |pos| value_start(hay, pos, key.len(), first))
}

fn value_start(hay: &[u8], pos: usize, key_len: usize, first: u8) -> Option<usize> {
    if pos == 0 || hay.get(pos - 1) != Some(&b'"') {
        return None;
    }
    let mut i = pos + key_len;
    if hay.get(i) != Some(&b'"') {
        return None;
    }
    i += 1;
    while matches!(hay.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    if hay.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    while matches!(hay.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    (hay.get(i) == Some(&first)).then_some(i)
}

fn has_key(hay: &[u8], key: &[u8], first: u8) -> bool {
    key_values(hay, key, first).next().is_some()
}

fn last_key_value(hay: &[u8], key: &[u8], first: u8) -> Option<usize> {
    memmem::rfind_iter(hay, key).find_map(|pos| value_start(hay, pos, key.len(), first))
}

// --- lenient JSON pieces ---------------------------------------------------------------------

/// A token count: a non-negative integer (a float is truncated); anything else reads as absent.
#[derive(Debug, Default, Clone, Copy)]
struct Tokens(Option<u64>);

impl<'de> Deserialize<'de> for Tokens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tokens;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token count")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Tokens, E> {
                Ok(Tokens(Some(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Tokens, E> {
                Ok(Tokens(u64::try_from(v).ok()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Tokens, E> {
                // `as` saturates; negative and NaN are not counts.
                Ok(Tokens((v.is_finite() && v >= 0.0).then_some(v as u64)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Tokens, E> {
                Ok(Tokens(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Tokens, E> {
                Ok(Tokens(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Tokens, E> {
                Ok(Tokens(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Tokens, E> {
                Ok(Tokens(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Tokens, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Tokens(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Tokens, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Tokens(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl Tokens {
    fn get(self) -> u64 {
        self.0.unwrap_or(0)
    }
}

/// A string, borrowed when it has no escapes; anything else reads as absent.
#[derive(Debug, Default)]
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// An object read as `T`; `null` or any non-object reads as absent.
struct Lenient<T>(Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Lenient(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Lenient<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(m)).map(|t| Lenient(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

// --- provider shapes (only the fields iris reads) ---------------------------------------------

#[derive(Deserialize, Default)]
#[serde(default)]
struct ErrorInfo<'a> {
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    code: Text<'a>,
}

impl ErrorInfo<'_> {
    fn label(self) -> String {
        self.kind
            .0
            .or(self.code.0)
            .map_or_else(|| "error".to_owned(), Cow::into_owned)
    }
}

/// Anthropic `usage` (message, `message_start`) or `message_delta.usage` (cumulative counts; in
/// newer API versions it may repeat input and cache counts, which then override).
#[derive(Deserialize, Default)]
#[serde(default)]
struct AnthropicUsage {
    input_tokens: Tokens,
    output_tokens: Tokens,
    cache_creation_input_tokens: Tokens,
    cache_read_input_tokens: Tokens,
}

impl AnthropicUsage {
    fn apply_to(&self, total: &mut TokenUsage) {
        if let Some(v) = self.input_tokens.0 {
            total.input_tokens = v;
        }
        if let Some(v) = self.output_tokens.0 {
            total.output_tokens = v;
        }
        if let Some(v) = self.cache_creation_input_tokens.0 {
            total.cache_write_tokens = v;
        }
        if let Some(v) = self.cache_read_input_tokens.0 {
            total.cache_read_tokens = v;
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AnthropicMessage<'a> {
    #[serde(borrow)]
    model: Text<'a>,
    usage: Lenient<AnthropicUsage>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AnthropicEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    message: Lenient<AnthropicMessage<'a>>,
    usage: Lenient<AnthropicUsage>,
    #[serde(borrow)]
    error: Lenient<ErrorInfo<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CachedDetails {
    cached_tokens: Tokens,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ReasoningDetails {
    reasoning_tokens: Tokens,
}

/// OpenAI chat / completions / embeddings `usage`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct OpenAiUsage {
    prompt_tokens: Tokens,
    completion_tokens: Tokens,
    prompt_tokens_details: Lenient<CachedDetails>,
    completion_tokens_details: Lenient<ReasoningDetails>,
}

impl OpenAiUsage {
    fn to_usage(&self) -> TokenUsage {
        TokenUsage {
            input_tokens: self.prompt_tokens.get(),
            output_tokens: self.completion_tokens.get(),
            cache_read_tokens: self
                .prompt_tokens_details
                .0
                .as_ref()
                .map_or(0, |d| d.cached_tokens.get()),
            cache_write_tokens: 0,
            reasoning_tokens: self
                .completion_tokens_details
                .0
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens.get()),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OpenAiBody<'a> {
    #[serde(borrow)]
    model: Text<'a>,
    usage: Lenient<OpenAiUsage>,
    #[serde(borrow)]
    error: Lenient<ErrorInfo<'a>>,
}

/// Responses API `usage`.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponsesUsage {
    input_tokens: Tokens,
    output_tokens: Tokens,
    input_tokens_details: Lenient<CachedDetails>,
    output_tokens_details: Lenient<ReasoningDetails>,
}

impl ResponsesUsage {
    fn to_usage(&self) -> TokenUsage {
        TokenUsage {
            input_tokens: self.input_tokens.get(),
            output_tokens: self.output_tokens.get(),
            cache_read_tokens: self
                .input_tokens_details
                .0
                .as_ref()
                .map_or(0, |d| d.cached_tokens.get()),
            cache_write_tokens: 0,
            reasoning_tokens: self
                .output_tokens_details
                .0
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens.get()),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponsesObject<'a> {
    #[serde(borrow)]
    model: Text<'a>,
    usage: Lenient<ResponsesUsage>,
    #[serde(borrow)]
    error: Lenient<ErrorInfo<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResponsesEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Text<'a>,
    #[serde(borrow)]
    response: Lenient<ResponsesObject<'a>>,
    /// Top-level `code` of a Responses `error` event.
    #[serde(borrow)]
    code: Text<'a>,
    /// Some servers nest the error instead.
    #[serde(borrow)]
    error: Lenient<ErrorInfo<'a>>,
}

/// How serde_json reads a whole body into the provider shapes above: the model and usage, or
/// `None` for a malformed body. Not used to extract usage: it is the reference `body_scan` is
/// tested against (this crate's unit tests and the `sse_usage_*` fuzz targets), which must agree
/// with it except where `body_scan`'s docs say they differ on purpose.
#[doc(hidden)]
pub fn reference_body_reading(
    family: ApiFamily,
    body: &[u8],
) -> Option<(Option<String>, Option<TokenUsage>)> {
    let model = |t: Text<'_>| t.0.map(Cow::into_owned);
    match family {
        ApiFamily::AnthropicMessages => serde_json::from_slice::<AnthropicMessage<'_>>(body)
            .ok()
            .map(|m| {
                let usage = m.usage.0.map(|u| {
                    let mut total = TokenUsage::default();
                    u.apply_to(&mut total);
                    total
                });
                (model(m.model), usage)
            }),
        ApiFamily::OpenAiResponses => serde_json::from_slice::<ResponsesObject<'_>>(body)
            .ok()
            .map(|r| (model(r.model), r.usage.0.map(|u| u.to_usage()))),
        ApiFamily::OpenAiChat | ApiFamily::OpenAiCompletions | ApiFamily::OpenAiEmbeddings => {
            serde_json::from_slice::<OpenAiBody<'_>>(body)
                .ok()
                .map(|b| (model(b.model), b.usage.0.map(|u| u.to_usage())))
        }
        ApiFamily::AnthropicCountTokens => Some((None, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rng::Rng;

    fn run(family: ApiFamily, streaming: bool, input: &[u8], step: usize) -> Extracted {
        let mut x = UsageExtractor::new(family, streaming);
        for c in input.chunks(step.max(1)) {
            x.feed(c);
        }
        x.finish()
    }

    #[test]
    fn key_detection_requires_a_real_key() {
        assert!(has_key(br#"{"usage":{"a":1}}"#, b"usage", b'{'));
        assert!(has_key(br#"{"usage" :  {"a":1}}"#, b"usage", b'{'));
        assert!(!has_key(br#"{"usage":null}"#, b"usage", b'{'));
        assert!(!has_key(br#"{"x":"the \"usage\": {"}"#, b"usage", b'{'));
        assert!(!has_key(br#"{"my_usage":{}}"#, b"usage", b'{'));
        assert!(!has_key(br#"{"x":"usage"}"#, b"usage", b'{'));
    }

    #[test]
    fn lenient_fields_do_not_lose_the_rest() {
        let body = br#"{"model":"m","usage":{"prompt_tokens":"12","completion_tokens":3.0,
            "prompt_tokens_details":"n/a","completion_tokens_details":{"reasoning_tokens":-1}}}"#;
        let got = run(ApiFamily::OpenAiChat, false, body, body.len());
        assert_eq!(
            got.usage,
            Some(TokenUsage {
                output_tokens: 3,
                ..TokenUsage::default()
            })
        );
        assert_eq!(got.response_model.as_deref(), Some("m"));
    }

    #[test]
    fn count_tokens_is_never_usage() {
        let body = br#"{"input_tokens":1234}"#;
        for streaming in [false, true] {
            assert_eq!(
                run(ApiFamily::AnthropicCountTokens, streaming, body, 3),
                Extracted::default()
            );
        }
    }

    /// An embeddings answer past MAX_BODY, usage at the end as OpenAI sends it.
    fn huge_embeddings() -> Vec<u8> {
        let mut body = br#"{"object":"list","data":["#.to_vec();
        let item = br#"{"object":"embedding","index":0,"embedding":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},"#;
        while body.len() < MAX_BODY + 3 * TAIL {
            body.extend_from_slice(item);
        }
        body.extend_from_slice(
            br#"{"object":"embedding","index":1,"embedding":"AA=="}],"model":"text-embedding-3-small","usage":{"prompt_tokens":4242,"total_tokens":4242}}"#,
        );
        body
    }

    #[test]
    fn huge_body_keeps_only_its_tail_and_still_finds_usage() {
        let body = huge_embeddings();
        for step in [body.len(), 65536, 10007] {
            let got = run(ApiFamily::OpenAiEmbeddings, false, &body, step);
            assert_eq!(
                got.usage,
                Some(TokenUsage {
                    input_tokens: 4242,
                    ..TokenUsage::default()
                }),
                "step {step}"
            );
            assert_eq!(
                got.response_model.as_deref(),
                Some("text-embedding-3-small")
            );
        }
    }

    #[test]
    fn a_body_past_the_cap_keeps_a_tail_of_bounded_size_however_it_is_fed() {
        let body = huge_embeddings();
        let want = run(ApiFamily::OpenAiEmbeddings, false, &body, 4096);
        assert!(want.usage.is_some());
        // All at once, or the cap's worth and then the rest (as a caller hands over what a
        // capture kept): the tail is copied from the end, never the whole.
        for first in [body.len(), MAX_BODY, MAX_BODY + 1, 10] {
            let mut x = UsageExtractor::new(ApiFamily::OpenAiEmbeddings, false);
            x.feed(&body[..first]);
            x.feed(&body[first..]);
            match &x.mode {
                Mode::Tail(t) => assert!(t.capacity() <= 3 * TAIL, "{}", t.capacity()),
                _ => panic!("past the cap, only a tail is kept"),
            }
            assert_eq!(x.finish(), want, "first {first}");
        }
    }

    #[test]
    fn an_answer_kept_elsewhere_reads_as_if_it_had_been_fed() {
        let chat = br#"{"model":"gpt-4o-2024-08-06","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10}}"#;
        let message =
            br#"{"model":"claude-sonnet-4-5","usage":{"input_tokens":12,"output_tokens":30}}"#;
        let huge = huge_embeddings();
        // At the cap a body is still read whole; one byte past it, only its tail.
        let mut at_cap = huge[huge.len() - MAX_BODY..].to_vec();
        at_cap[0] = b'{';
        let mut past_cap = huge[huge.len() - MAX_BODY - 1..].to_vec();
        past_cap[0] = b'{';
        for family in ApiFamily::ALL {
            for body in [
                &chat[..],
                message,
                &huge,
                &at_cap,
                &past_cap,
                b"<html>502</html>",
                b"",
            ] {
                let fresh = UsageExtractor::new(family, false);
                assert_eq!(fresh.reads_body_at_finish(), family.is_billable());
                assert_eq!(
                    fresh.finish_reading(body),
                    run(family, false, body, body.len().max(1)),
                    "{family:?}, {} bytes",
                    body.len()
                );
            }
        }
        // One that was fed, or a stream's, does not read what it is given.
        let mut fed = UsageExtractor::new(ApiFamily::OpenAiChat, false);
        fed.feed(chat);
        assert_eq!(
            fed.finish_reading(b"<html>"),
            run(ApiFamily::OpenAiChat, false, chat, 5)
        );
        let stream = UsageExtractor::new(ApiFamily::OpenAiChat, true);
        assert!(!stream.reads_body_at_finish());
        assert_eq!(stream.finish_reading(chat), Extracted::default());
    }

    #[test]
    fn non_json_body_gives_nothing_and_is_called_malformed() {
        for family in ApiFamily::ALL {
            for body in [&b"<html>502 Bad Gateway</html>"[..], b"", b"{\"id\":\"cut"] {
                assert_eq!(
                    run(family, false, body, 5),
                    Extracted {
                        malformed_body: family.is_billable(),
                        ..Extracted::default()
                    },
                    "{family:?} {body:?}"
                );
            }
            // A stream is never judged as a body.
            assert!(!run(family, true, b"<html>", 5).malformed_body);
        }
    }

    // --- the body scanner against serde --------------------------------------------------------

    fn scanned(family: ApiFamily, body: &[u8]) -> Option<(Option<String>, Option<TokenUsage>)> {
        let got = run(family, false, body, body.len().max(1));
        (!got.malformed_body).then_some((got.response_model, got.usage))
    }

    const KEYS: [&str; 26] = [
        "model",
        "usage",
        "error",
        "id",
        "object",
        "choices",
        "type",
        "code",
        "prompt_tokens",
        "completion_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
        "input_tokens",
        "output_tokens",
        "input_tokens_details",
        "output_tokens_details",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "us\\u0061ge",
        "mod\\u0065l",
        "\\u0069nput_tokens",
        "content",
        "usage ",
        "\\ud83d\\ude00",
    ];

    const NUMBERS: [&str; 22] = [
        "0",
        "7",
        "123",
        "18446744073709551615",
        "18446744073709551616",
        "-0",
        "-5",
        "12.7",
        "1e3",
        "1E-2",
        "-0.0",
        "2.5e1",
        "1e400",
        "-1e400",
        "99999999999999999999999",
        "0.0",
        "-99999999999999999999",
        "4e+2",
        "1.5E+3",
        "01",
        "1.",
        "-",
    ];

    const STRINGS: [&str; 12] = [
        "\"gpt-4o\"",
        "\"claude-\\u0033\"",
        "\"\"",
        "\"a\\\"b\\\\c\\/d\\n\"",
        "\"\\ud83d\\ude00x\"",
        "\"\\ud83d\"",
        "\"\\udc00\"",
        "\"h\\u00e9llo \u{e9}\u{1F600}\"",
        "\"\\x\"",
        "\"\\u12g4\"",
        "\"tab\there\"",
        "\"{\\\"usage\\\": {\\\"prompt_tokens\\\": 9}}\"",
    ];

    fn ws(r: &mut Rng, out: &mut String) {
        if r.chance(20) {
            out.push_str(r.pick(&[" ", "\n", "\t", "\r\n  ", "  "]));
        }
    }

    fn value(r: &mut Rng, depth: usize, out: &mut String) {
        ws(r, out);
        match r.below(if depth > 3 { 4 } else { 7 }) {
            0 => out.push_str(r.pick(&NUMBERS)),
            1 => out.push_str(r.pick(&STRINGS)),
            2 => out.push_str(r.pick(&["null", "true", "false"])),
            3 => out.push_str(r.pick(&NUMBERS[..12])),
            4 | 5 => object(r, depth + 1, out),
            _ => {
                out.push('[');
                let n = r.below(3);
                for i in 0..n {
                    if i > 0 {
                        out.push(',');
                    }
                    value(r, depth + 1, out);
                }
                ws(r, out);
                out.push(']');
            }
        }
        ws(r, out);
    }

    fn object(r: &mut Rng, depth: usize, out: &mut String) {
        out.push('{');
        let n = r.below(6);
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            ws(r, out);
            out.push('"');
            out.push_str(r.pick(&KEYS));
            out.push('"');
            ws(r, out);
            out.push(':');
            value(r, depth, out);
        }
        ws(r, out);
        out.push('}');
    }

    /// A document that looks like an answer: a top-level object whose members are mostly the
    /// known ones, with usage objects holding counts of every kind.
    fn answer(r: &mut Rng) -> String {
        let mut out = String::new();
        ws(r, &mut out);
        out.push('{');
        let n = 1 + r.below(5);
        let mut used = Vec::new();
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            let tops = [
                "model",
                "usage",
                "usage",
                "error",
                "id",
                "choices",
                "us\\u0061ge",
            ];
            let mut key = r.pick(&tops);
            let same = |k: &'static str| if k.starts_with("us") { "usage" } else { k };
            while used.contains(&same(key)) && r.chance(90) {
                key = r.pick(&tops);
            }
            used.push(same(key));
            out.push_str(&format!("\"{key}\":"));
            if key.starts_with("us") && r.chance(80) {
                out.push('{');
                let m = r.below(6);
                let mut used = Vec::new();
                for j in 0..m {
                    let mut k = r.pick(&KEYS[8..20]);
                    // Now and then a key twice (malformed); mostly not.
                    while used.contains(&k) && r.chance(90) {
                        k = r.pick(&KEYS[8..20]);
                    }
                    used.push(k);
                    if j > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!("\"{k}\":"));
                    if r.chance(25) {
                        out.push_str(&format!(
                            "{{\"{}\": {}}}",
                            r.pick(&["cached_tokens", "reasoning_tokens", "x"]),
                            r.pick(&NUMBERS)
                        ));
                    } else if r.chance(50) {
                        out.push_str(r.pick(&NUMBERS[1..5]));
                    } else if r.chance(70) {
                        out.push_str(r.pick(&NUMBERS));
                    } else {
                        value(r, 2, &mut out);
                    }
                }
                out.push('}');
            } else {
                value(r, 1, &mut out);
            }
        }
        out.push('}');
        ws(r, &mut out);
        out
    }

    #[test]
    fn the_body_scanner_reads_what_serde_reads() {
        let families = [
            ApiFamily::OpenAiChat,
            ApiFamily::OpenAiResponses,
            ApiFamily::AnthropicMessages,
        ];
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut compared, mut well_formed, mut counted) = (0, 0, 0);
        for case in 0..40_000 {
            let mut doc = answer(&mut r).into_bytes();
            // Half the cases get up to three single-byte edits.
            if r.chance(50) {
                r.edit(&mut doc);
            }
            // Out of the comparison: broken UTF-8 (an edit inside a multi-byte character) and
            // a top-level array, where the scanner is stricter or more lenient on purpose.
            if std::str::from_utf8(&doc).is_err() || doc.trim_ascii_start().starts_with(b"[") {
                continue;
            }
            let family = families[case % families.len()];
            let want = reference_body_reading(family, &doc);
            let got = scanned(family, &doc);
            assert_eq!(
                got,
                want,
                "case {case}, {family:?}: {}",
                String::from_utf8_lossy(&doc)
            );
            compared += 1;
            well_formed += usize::from(want.is_some());
            counted +=
                usize::from(matches!(want, Some((_, Some(u))) if u != TokenUsage::default()));
        }
        // The generator must exercise every outcome in earnest.
        assert!(compared > 35_000, "{compared}");
        assert!(
            well_formed > 8_000 && compared - well_formed > 10_000,
            "{well_formed}"
        );
        assert!(counted > 1_000, "{counted}");
    }

    #[test]
    fn the_body_scanner_reads_real_answers() {
        let chat = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hi \u00e9 \"there\"","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":3,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":4,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_1"}"#;
        let got = run(ApiFamily::OpenAiChat, false, chat, 7);
        assert!(!got.malformed_body);
        assert_eq!(got.response_model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(
            got.usage,
            Some(TokenUsage {
                input_tokens: 19,
                output_tokens: 10,
                cache_read_tokens: 3,
                cache_write_tokens: 0,
                reasoning_tokens: 4,
            })
        );
        let message = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"tool_use","id":"t","name":"f","input":{"usage":{"input_tokens":1}}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":5,"cache_read_input_tokens":7,"output_tokens":30,"service_tier":"standard"}}"#;
        let got = run(ApiFamily::AnthropicMessages, false, message, 5);
        assert_eq!(
            got.usage,
            Some(TokenUsage {
                input_tokens: 12,
                output_tokens: 30,
                cache_read_tokens: 7,
                cache_write_tokens: 5,
                reasoning_tokens: 0,
            })
        );
        let response = br#"{"id":"resp_1","object":"response","model":"gpt-4.1","output":[],"usage":{"input_tokens":8,"input_tokens_details":{"cached_tokens":2},"output_tokens":6,"output_tokens_details":{"reasoning_tokens":1},"total_tokens":14}}"#;
        let got = run(ApiFamily::OpenAiResponses, false, response, 3);
        assert_eq!(
            got.usage.map(|u| (
                u.input_tokens,
                u.output_tokens,
                u.cache_read_tokens,
                u.reasoning_tokens
            )),
            Some((8, 6, 2, 1))
        );
    }

    #[test]
    fn the_body_scanner_on_purpose_differs_from_serde() {
        // Broken UTF-8 in the content still leaves the usage counted.
        let mut body = br#"{"model":"m","choices":[{"message":{"content":"ab"}}],"usage":{"prompt_tokens":2,"completion_tokens":1}}"#.to_vec();
        let at = body.windows(2).position(|w| w == b"ab").unwrap();
        body[at] = 0xC3;
        let got = run(ApiFamily::OpenAiChat, false, &body, 9);
        assert!(!got.malformed_body);
        assert_eq!(got.usage.map(|u| u.input_tokens), Some(2));
        // ... but not in the model, which is kept as text.
        let body = b"{\"model\":\"\xC3x\"}";
        assert!(run(ApiFamily::OpenAiChat, false, body, 9).malformed_body);
        // A top-level array is not an answer.
        let got = run(
            ApiFamily::OpenAiChat,
            false,
            br#"["m", {"prompt_tokens": 1}]"#,
            4,
        );
        assert!(got.malformed_body);
        assert_eq!(got.usage, None);
    }

    #[test]
    fn the_body_scanner_survives_any_depth() {
        let mut body = b"{\"x\":".to_vec();
        body.extend(std::iter::repeat_n(b'[', 1_000_000));
        body.extend(std::iter::repeat_n(b']', 1_000_000));
        body.extend_from_slice(br#","usage":{"prompt_tokens":4}}"#);
        let got = run(ApiFamily::OpenAiChat, false, &body, body.len());
        assert_eq!(got.usage.map(|u| u.input_tokens), Some(4));
        body.truncate(body.len() - 40);
        assert!(run(ApiFamily::OpenAiChat, false, &body, body.len()).malformed_body);
    }
}
