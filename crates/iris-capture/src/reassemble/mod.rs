//! Rebuilding the final assistant message from a response, streamed (SSE) or not, for the
//! three dialects iris proxies. One file per dialect:
//! - [`anthropic`]: Messages API (`anthropic_messages`; Vertex `google_raw_predict` speaks it too);
//! - [`openai_chat`]: Chat Completions (`openai_chat`) and legacy Completions (`openai_completions`);
//! - [`openai_responses`]: Responses API (`openai_responses`).
//!
//! The result is one shape for all of them, [`Reassembled`]: the visible text, the reasoning
//! ("thinking") text, the tool calls with parsed arguments, and the stop reason.
//!
//! Joining rules, the same streamed or not:
//! - text parts (Anthropic text blocks, OpenAI content deltas, Responses `output_text` parts) are
//!   concatenated as they are (citations split one sentence over several blocks); refusals count
//!   as text;
//! - separate reasoning blocks (Anthropic thinking blocks, Responses reasoning summary parts and
//!   items) are joined with a blank line; signatures, redacted and encrypted reasoning are not
//!   text and are left out;
//! - tool arguments arrive as JSON text in pieces; the joined text is parsed, and kept as a JSON
//!   string when it does not parse (a cut stream, a model that wrote bad JSON).
//!
//! Memory: a [`StreamReassembler`] holds at most `max_output_bytes` of text, thinking, names and
//! arguments together (more is dropped and reported as truncated), at most [`MAX_TOOL_CALLS`]
//! calls, and one SSE event of at most `max_output_bytes + 64 KiB` at a time.

mod anthropic;
mod openai_chat;
mod openai_responses;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use iris_providers::sse::{SseParser, SseSink};

/// A complete SSE event, as the dialect reassemblers read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub name: String,
    pub data: Vec<u8>,
}

/// Hands every event (all are wanted here) to a closure.
struct Each<F: FnMut(Event)>(F);

impl<F: FnMut(Event)> SseSink for Each<F> {
    fn wants_data(&self, _name: &[u8]) -> bool {
        true
    }
    fn on_event(&mut self, name: &[u8], data: &[u8]) {
        (self.0)(Event {
            name: String::from_utf8_lossy(name).into_owned(),
            data: data.to_vec(),
        })
    }
}

/// The most tool calls (or content blocks / output items) kept for one response.
pub const MAX_TOOL_CALLS: usize = 1024;
const EVENT_SLACK: usize = 64 * 1024;

/// The final message of a response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reassembled {
    pub text: String,
    pub thinking: String,
    pub tool_calls: Vec<ToolCall>,
    /// As the provider names it: Anthropic `stop_reason` (`end_turn`, `tool_use`, ...), OpenAI
    /// `finish_reason` (`stop`, `tool_calls`, ...), Responses `incomplete_details.reason` or else
    /// `status` (`completed`, `incomplete`, `failed`). An error event mid-stream gives
    /// `error:<type or code>`. `None` when the response never said (e.g. a cut stream).
    pub stop_reason: Option<String>,
}

/// One tool call the model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The id the client answers with (`toolu_…`, `call_…`); empty when the provider gave none.
    pub id: String,
    pub name: String,
    /// The parsed arguments, or the raw text as a JSON string when it is not valid JSON.
    pub arguments: Value,
}

/// The response formats reassembly understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireDialect {
    AnthropicMessages,
    OpenAiChat,
    OpenAiCompletions,
    OpenAiResponses,
}

impl WireDialect {
    /// From an API family name as iris-providers spells it; `None` for families without an
    /// assistant message (embeddings, count_tokens) or unknown ones.
    pub fn from_family(api_family: &str) -> Option<WireDialect> {
        match api_family {
            "anthropic_messages" | "google_raw_predict" => Some(WireDialect::AnthropicMessages),
            "openai_chat" => Some(WireDialect::OpenAiChat),
            "openai_completions" => Some(WireDialect::OpenAiCompletions),
            "openai_responses" => Some(WireDialect::OpenAiResponses),
            _ => None,
        }
    }
}

/// Reassemble a non-streaming JSON answer. `None` for an unsupported family, a body that is not
/// JSON, or a body that is not a message of that dialect (an error body, for instance).
pub fn reassemble_json(api_family: &str, body: &[u8]) -> Option<Reassembled> {
    let dialect = WireDialect::from_family(api_family)?;
    let v: Value = serde_json::from_slice(body).ok()?;
    let mut budget = Budget::new(body.len());
    match dialect {
        WireDialect::AnthropicMessages => anthropic::from_json(&v, &mut budget),
        WireDialect::OpenAiChat | WireDialect::OpenAiCompletions => {
            openai_chat::from_json(&v, &mut budget)
        }
        WireDialect::OpenAiResponses => openai_responses::from_json(&v, &mut budget),
    }
}

/// Reassemble a whole SSE stream held in memory. `None` for an unsupported family.
pub fn reassemble_stream(api_family: &str, body: &[u8]) -> Option<Reassembled> {
    let mut r = StreamReassembler::new(api_family, body.len())?;
    r.feed(body);
    Some(r.finish().message)
}

/// The tool calls of a response body (already decoded), streamed or not: empty when there are
/// none or the body cannot be read.
pub fn response_tool_calls(api_family: &str, body: &[u8], is_sse: bool) -> Vec<ToolCall> {
    let r = if is_sse {
        reassemble_stream(api_family, body)
    } else {
        reassemble_json(api_family, body)
    };
    r.map(|r| r.tool_calls).unwrap_or_default()
}

/// What [`StreamReassembler::finish`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamOutcome {
    pub message: Reassembled,
    /// Some content was dropped (the output cap, the tool-call cap, or an oversized event).
    pub truncated: bool,
    /// Events seen (including ones that carried nothing to keep).
    pub events: usize,
}

/// Incremental reassembly: feed the (decoded) stream in chunks of any size, then finish.
#[derive(Debug)]
pub struct StreamReassembler {
    parser: SseParser,
    state: State,
    budget: Budget,
    events: usize,
}

#[derive(Debug)]
enum State {
    Anthropic(anthropic::StreamState),
    Chat(openai_chat::StreamState),
    Responses(openai_responses::StreamState),
}

impl StreamReassembler {
    /// `None` for a family without an assistant message. `max_output_bytes` bounds what is kept.
    pub fn new(api_family: &str, max_output_bytes: usize) -> Option<Self> {
        let state = match WireDialect::from_family(api_family)? {
            WireDialect::AnthropicMessages => State::Anthropic(Default::default()),
            WireDialect::OpenAiChat => State::Chat(openai_chat::StreamState::new(false)),
            WireDialect::OpenAiCompletions => State::Chat(openai_chat::StreamState::new(true)),
            WireDialect::OpenAiResponses => State::Responses(Default::default()),
        };
        Some(StreamReassembler {
            parser: SseParser::new(max_output_bytes.saturating_add(EVENT_SLACK)),
            state,
            budget: Budget::new(max_output_bytes),
            events: 0,
        })
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let (state, budget, events) = (&mut self.state, &mut self.budget, &mut self.events);
        self.parser.feed(
            chunk,
            &mut Each(|e: Event| on_event(state, budget, events, &e)),
        );
    }

    pub fn finish(mut self) -> StreamOutcome {
        let (state, budget, events) = (&mut self.state, &mut self.budget, &mut self.events);
        self.parser
            .finish(&mut Each(|e: Event| on_event(state, budget, events, &e)));
        let message = match self.state {
            State::Anthropic(s) => s.finish(&mut self.budget),
            State::Chat(s) => s.finish(),
            State::Responses(s) => s.finish(&mut self.budget),
        };
        StreamOutcome {
            message,
            truncated: self.budget.truncated || self.parser.dropped() > 0,
            events: self.events,
        }
    }
}

fn on_event(state: &mut State, budget: &mut Budget, events: &mut usize, e: &Event) {
    *events += 1;
    if e.data.trim_ascii() == b"[DONE]" {
        return;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&e.data) else {
        return;
    };
    match state {
        State::Anthropic(s) => s.on_event(&e.name, &v, budget),
        State::Chat(s) => s.on_chunk(&v, budget),
        State::Responses(s) => s.on_event(&e.name, &v, budget),
    }
}

/// Bounds the bytes of text kept across a whole response.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    left: usize,
    pub(crate) truncated: bool,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Self {
        Budget {
            left: max,
            truncated: false,
        }
    }

    /// Append as much of `s` to `dst` as the budget allows (cut on a char boundary).
    pub(crate) fn push(&mut self, dst: &mut String, s: &str) {
        let take = self.admit(s);
        dst.push_str(take);
    }

    /// The part of `s` the budget allows, charged.
    pub(crate) fn admit<'a>(&mut self, s: &'a str) -> &'a str {
        if s.len() <= self.left {
            self.left -= s.len();
            return s;
        }
        self.truncated = true;
        let mut end = self.left;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.left -= end;
        &s[..end]
    }

    /// An owned, charged copy of `s`.
    pub(crate) fn owned(&mut self, s: &str) -> String {
        self.admit(s).to_owned()
    }

    /// Whether one more tool call / block may be kept.
    pub(crate) fn room_for_item(&mut self, count: usize) -> bool {
        if count >= MAX_TOOL_CALLS {
            self.truncated = true;
            return false;
        }
        true
    }
}

/// Tool arguments from their JSON text; the text itself when it does not parse.
pub(crate) fn parse_arguments(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// A string field, or "".
pub(crate) fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Join non-empty parts with a blank line.
pub(crate) fn join_blocks<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for p in parts {
        if p.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\n\n");
        }
        out.push_str(p);
    }
    out
}

/// The type or code of an error object, for `stop_reason` (`error:<type>`).
pub(crate) fn error_reason(err: &Value) -> String {
    let kind = ["type", "code"]
        .iter()
        .find_map(|k| {
            err.get(k).and_then(|c| match c {
                Value::String(s) if !s.is_empty() => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let kind: String = kind.chars().take(64).collect();
    format!("error:{kind}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_cuts_on_char_boundaries() {
        let mut b = Budget::new(5);
        let mut s = String::new();
        b.push(&mut s, "ab");
        b.push(&mut s, "cé€");
        assert_eq!(s, "abcé");
        assert!(b.truncated);
        b.push(&mut s, "zzz");
        assert_eq!(s, "abcé");
    }

    #[test]
    fn unknown_families_have_no_message() {
        for f in [
            "openai_embeddings",
            "anthropic_count_tokens",
            "nonsense",
            "",
        ] {
            assert!(WireDialect::from_family(f).is_none(), "{f}");
            assert!(StreamReassembler::new(f, 10).is_none());
            assert!(reassemble_json(f, b"{}").is_none());
        }
    }

    #[test]
    fn arguments_parse_or_stay_raw() {
        assert_eq!(parse_arguments("{\"a\":1}"), serde_json::json!({"a": 1}));
        assert_eq!(parse_arguments("{\"a\":"), Value::String("{\"a\":".into()));
        assert_eq!(parse_arguments(""), Value::String(String::new()));
    }

    #[test]
    fn error_reasons() {
        assert_eq!(
            error_reason(&serde_json::json!({"type": "overloaded_error"})),
            "error:overloaded_error"
        );
        assert_eq!(error_reason(&serde_json::json!({"code": 500})), "error:500");
        assert_eq!(error_reason(&serde_json::json!({})), "error:unknown");
    }
}
