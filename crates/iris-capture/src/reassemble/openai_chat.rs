//! OpenAI Chat Completions (and legacy Completions).
//!
//! Non-streaming: `choices[0].message` with `content` (a string, or an array of `{type:"text"}`
//! parts as some compatible servers send), `refusal`, `tool_calls[{id, function{name,
//! arguments}}]`, the deprecated `function_call{name, arguments}`, and reasoning text as
//! `reasoning_content` / `reasoning` (DeepSeek, vLLM, OpenRouter); `finish_reason`.
//!
//! Streaming: `chat.completion.chunk` objects, `data: [DONE]` at the end. Only choice 0 is
//! reassembled (`n > 1` is rare). `delta.content` / `delta.refusal` / reasoning pieces are
//! appended; `delta.tool_calls[]` fragments are merged by their `index` (position in the array
//! when a server omits it): the first non-empty `id` wins, `function.name` pieces are joined
//! (a server repeating the whole name in every fragment is tolerated), `function.arguments`
//! pieces are joined. A chunk with an `error` object sets `error:<type>`.
//! Legacy completions carry `choices[].text` instead of `delta`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Budget, Reassembled, ToolCall, error_reason, parse_arguments, str_field};

#[derive(Debug, Default)]
struct CallAcc {
    id: String,
    name: String,
    args: String,
}

impl CallAcc {
    fn into_call(self) -> ToolCall {
        ToolCall {
            id: self.id,
            name: self.name,
            arguments: parse_arguments(&self.args),
        }
    }
}

/// Text of `content`: a string, or the `text` of array parts.
fn content_text(v: Option<&Value>, dst: &mut String, budget: &mut Budget) {
    match v {
        Some(Value::String(s)) => budget.push(dst, s),
        Some(Value::Array(parts)) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(Value::as_str) {
                    budget.push(dst, t);
                }
            }
        }
        _ => {}
    }
}

fn reasoning_text(v: &Value) -> Option<&str> {
    ["reasoning_content", "reasoning"]
        .iter()
        .find_map(|k| v.get(k).and_then(Value::as_str))
}

/// The choice to reassemble: index 0, or the first one without an index.
fn first_choice(v: &Value) -> Option<&Value> {
    v.get("choices")?
        .as_array()?
        .iter()
        .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
}

pub(super) fn from_json(v: &Value, budget: &mut Budget) -> Option<Reassembled> {
    let choice = first_choice(v)?;
    let mut r = Reassembled {
        stop_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        ..Reassembled::default()
    };
    let Some(msg) = choice.get("message") else {
        // Legacy completions: `text` on the choice.
        budget.push(&mut r.text, str_field(choice, "text"));
        return Some(r);
    };
    content_text(msg.get("content"), &mut r.text, budget);
    if let Some(refusal) = msg.get("refusal").and_then(Value::as_str) {
        budget.push(&mut r.text, refusal);
    }
    if let Some(t) = reasoning_text(msg) {
        budget.push(&mut r.thinking, t);
    }
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            if !budget.room_for_item(r.tool_calls.len()) {
                break;
            }
            let f = c.get("function").unwrap_or(&Value::Null);
            r.tool_calls.push(ToolCall {
                id: budget.owned(str_field(c, "id")),
                name: budget.owned(str_field(f, "name")),
                arguments: parse_arguments(budget.admit(str_field(f, "arguments"))),
            });
        }
    }
    if let Some(f) = msg.get("function_call").filter(|f| f.is_object()) {
        r.tool_calls.push(ToolCall {
            id: String::new(),
            name: budget.owned(str_field(f, "name")),
            arguments: parse_arguments(budget.admit(str_field(f, "arguments"))),
        });
    }
    Some(r)
}

#[derive(Debug)]
pub(super) struct StreamState {
    legacy: bool,
    text: String,
    thinking: String,
    calls: BTreeMap<u64, CallAcc>,
    function_call: Option<CallAcc>,
    stop_reason: Option<String>,
}

impl StreamState {
    pub(super) fn new(legacy: bool) -> Self {
        StreamState {
            legacy,
            text: String::new(),
            thinking: String::new(),
            calls: BTreeMap::new(),
            function_call: None,
            stop_reason: None,
        }
    }

    pub(super) fn on_chunk(&mut self, v: &Value, budget: &mut Budget) {
        if let Some(err) = v.get("error").filter(|e| e.is_object()) {
            self.stop_reason = Some(error_reason(err));
            return;
        }
        let Some(choice) = first_choice(v) else {
            return;
        };
        if let Some(fr) = choice.get("finish_reason").and_then(Value::as_str) {
            self.stop_reason = Some(budget.owned(fr));
        }
        if self.legacy {
            budget.push(&mut self.text, str_field(choice, "text"));
            return;
        }
        let Some(delta) = choice.get("delta") else {
            return;
        };
        content_text(delta.get("content"), &mut self.text, budget);
        if let Some(refusal) = delta.get("refusal").and_then(Value::as_str) {
            budget.push(&mut self.text, refusal);
        }
        if let Some(t) = reasoning_text(delta) {
            budget.push(&mut self.thinking, t);
        }
        if let Some(frags) = delta.get("tool_calls").and_then(Value::as_array) {
            for (pos, frag) in frags.iter().enumerate() {
                let index = frag
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(pos as u64);
                if !self.calls.contains_key(&index) && !budget.room_for_item(self.calls.len()) {
                    continue;
                }
                let acc = self.calls.entry(index).or_default();
                merge_fragment(acc, frag, budget);
            }
        }
        if let Some(f) = delta.get("function_call").filter(|f| f.is_object()) {
            let acc = self.function_call.get_or_insert_with(CallAcc::default);
            merge_function(acc, f, budget);
        }
    }

    pub(super) fn finish(self) -> Reassembled {
        let mut tool_calls: Vec<ToolCall> =
            self.calls.into_values().map(CallAcc::into_call).collect();
        if let Some(f) = self.function_call {
            tool_calls.push(f.into_call());
        }
        Reassembled {
            text: self.text,
            thinking: self.thinking,
            tool_calls,
            stop_reason: self.stop_reason,
        }
    }
}

fn merge_fragment(acc: &mut CallAcc, frag: &Value, budget: &mut Budget) {
    let id = str_field(frag, "id");
    if acc.id.is_empty() && !id.is_empty() {
        acc.id = budget.owned(id);
    }
    if let Some(f) = frag.get("function") {
        merge_function(acc, f, budget);
    }
}

fn merge_function(acc: &mut CallAcc, f: &Value, budget: &mut Budget) {
    let name = str_field(f, "name");
    if !name.is_empty() && name != acc.name {
        budget.push(&mut acc.name, name);
    }
    budget.push(&mut acc.args, str_field(f, "arguments"));
}
