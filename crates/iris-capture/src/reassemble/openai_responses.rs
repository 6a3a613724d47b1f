//! OpenAI Responses API.
//!
//! A response's `output` is a list of items: `message` (content parts `output_text` and
//! `refusal`), `reasoning` (`summary[]` of `summary_text`, and for some models `content[]` of
//! `reasoning_text`; `encrypted_content` is opaque and left out), and tool calls: every item
//! type ending in `_call` (`function_call`, `custom_tool_call`, `mcp_call`, `web_search_call`,
//! `local_shell_call`, ...). A call's id is its `call_id` (what the client answers with), else its
//! item `id`; its name is `name`, else the type without `_call` (`web_search`); its arguments are
//! `arguments` (JSON text), else `input` (custom tools' free text), else `action`.
//!
//! Streamed, items are announced by `response.output_item.added`, filled by deltas keyed by
//! `output_index` (`response.output_text.delta`, `response.refusal.delta`,
//! `response.reasoning_summary_text.delta`, `response.reasoning_text.delta`,
//! `response.function_call_arguments.delta`, `response.custom_tool_call_input.delta`,
//! `response.mcp_call_arguments.delta`), settled by the matching `.done` events and
//! `response.output_item.done`, and the whole response comes last in `response.completed`
//! (or `.incomplete` / `.failed`). When that final response lists its output, it is taken as the
//! truth; otherwise (a cut stream, a server that sends an empty list) the deltas are used.
//! `stop_reason` is `incomplete_details.reason` when present, else `status`; an `error` event
//! gives `error:<code>`.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::{Budget, Reassembled, ToolCall, error_reason, join_blocks, parse_arguments, str_field};

#[derive(Debug)]
enum Item {
    Message {
        parts: BTreeMap<u64, String>,
    },
    Reasoning {
        summary: BTreeMap<u64, String>,
        content: BTreeMap<u64, String>,
    },
    Call {
        id: String,
        name: String,
        /// JSON text (`arguments`) or free text (`input`), joined from deltas.
        raw: String,
        /// Structured arguments (`action`) when there is no text.
        structured: Option<Value>,
    },
    Other,
}

fn parts_of(
    list: Option<&Value>,
    kinds: &[&str],
    field_of: impl Fn(&str) -> &'static str,
    budget: &mut Budget,
) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    if let Some(items) = list.and_then(Value::as_array) {
        for (i, p) in items.iter().enumerate() {
            let kind = str_field(p, "type");
            if kinds.contains(&kind) {
                out.insert(i as u64, budget.owned(str_field(p, field_of(kind))));
            }
        }
    }
    out
}

fn item_from_json(v: &Value, budget: &mut Budget) -> Item {
    let kind = str_field(v, "type");
    match kind {
        "message" => Item::Message {
            parts: parts_of(
                v.get("content"),
                &["output_text", "refusal"],
                |k| if k == "refusal" { "refusal" } else { "text" },
                budget,
            ),
        },
        "reasoning" => Item::Reasoning {
            summary: parts_of(v.get("summary"), &["summary_text"], |_| "text", budget),
            content: parts_of(v.get("content"), &["reasoning_text"], |_| "text", budget),
        },
        _ if kind.ends_with("_call") => {
            let id = [str_field(v, "call_id"), str_field(v, "id")]
                .into_iter()
                .find(|s| !s.is_empty())
                .unwrap_or("");
            let name = match str_field(v, "name") {
                "" => kind.trim_end_matches("_call"),
                n => n,
            };
            let text = v
                .get("arguments")
                .and_then(Value::as_str)
                .or_else(|| v.get("input").and_then(Value::as_str));
            let structured = if text.is_none() {
                v.get("arguments")
                    .or_else(|| v.get("input"))
                    .or_else(|| v.get("action"))
                    .cloned()
            } else {
                None
            };
            Item::Call {
                id: budget.owned(id),
                name: budget.owned(name),
                raw: budget.owned(text.unwrap_or("")),
                structured,
            }
        }
        _ => Item::Other,
    }
}

fn finish_items<'a>(
    items: impl Iterator<Item = &'a Item>,
    stop_reason: Option<String>,
) -> Reassembled {
    let mut text = String::new();
    let mut thinking: Vec<String> = Vec::new();
    let mut tool_calls = Vec::new();
    for item in items {
        match item {
            Item::Message { parts } => parts.values().for_each(|p| text.push_str(p)),
            Item::Reasoning { summary, content } => {
                let src = if summary.values().any(|s| !s.is_empty()) {
                    summary
                } else {
                    content
                };
                thinking.push(join_blocks(src.values().map(String::as_str)));
            }
            Item::Call {
                id,
                name,
                raw,
                structured,
            } => tool_calls.push(ToolCall {
                id: id.clone(),
                name: name.clone(),
                arguments: match structured {
                    Some(v) if raw.is_empty() => v.clone(),
                    _ => parse_arguments(raw),
                },
            }),
            Item::Other => {}
        }
    }
    Reassembled {
        text,
        thinking: join_blocks(thinking.iter().map(String::as_str)),
        tool_calls,
        stop_reason,
    }
}

fn stop_reason_of(response: &Value) -> Option<String> {
    if let Some(r) = response
        .get("incomplete_details")
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str)
    {
        return Some(r.to_owned());
    }
    if let Some(err) = response.get("error").filter(|e| e.is_object()) {
        return Some(error_reason(err));
    }
    response
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn items_of(response: &Value, budget: &mut Budget) -> Option<Vec<Item>> {
    let output = response.get("output")?.as_array()?;
    let mut items = Vec::new();
    for v in output {
        if !budget.room_for_item(items.len()) {
            break;
        }
        items.push(item_from_json(v, budget));
    }
    Some(items)
}

/// A non-streaming response object (`"object": "response"`).
pub(super) fn from_json(v: &Value, budget: &mut Budget) -> Option<Reassembled> {
    if v.get("object")
        .and_then(Value::as_str)
        .is_some_and(|o| o != "response")
    {
        return None;
    }
    let items = items_of(v, budget)?;
    Some(finish_items(items.iter(), stop_reason_of(v)))
}

#[derive(Debug, Default)]
pub(super) struct StreamState {
    items: BTreeMap<u64, Item>,
    by_item_id: HashMap<String, u64>,
    final_response: Option<Value>,
    stop_reason: Option<String>,
}

impl StreamState {
    pub(super) fn on_event(&mut self, name: &str, v: &Value, budget: &mut Budget) {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(name);
        match kind {
            "response.output_item.added" | "response.output_item.done" => {
                let Some(item) = v.get("item") else { return };
                let index = v
                    .get("output_index")
                    .and_then(Value::as_u64)
                    .or_else(|| self.by_item_id.get(str_field(item, "id")).copied())
                    .unwrap_or(self.items.len() as u64);
                if !self.items.contains_key(&index) && !budget.room_for_item(self.items.len()) {
                    return;
                }
                let id = str_field(item, "id");
                if !id.is_empty() && self.by_item_id.len() < super::MAX_TOOL_CALLS {
                    self.by_item_id.insert(id.to_owned(), index);
                }
                let parsed = item_from_json(item, budget);
                // An `added` item is usually empty; keep deltas that may already be there.
                let keep_existing =
                    kind == "response.output_item.added" && self.items.contains_key(&index);
                if !keep_existing {
                    self.items.insert(index, parsed);
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(Item::Message { parts }) = self.item(v, budget, new_message) {
                    let slot = parts.entry(content_index(v)).or_default();
                    budget.push(slot, str_field(v, "delta"));
                }
            }
            "response.output_text.done" | "response.refusal.done" => {
                let field = if kind == "response.refusal.done" {
                    "refusal"
                } else {
                    "text"
                };
                if let Some(t) = v.get(field).and_then(Value::as_str)
                    && let Some(Item::Message { parts }) = self.item(v, budget, new_message)
                {
                    parts.insert(content_index(v), budget.owned(t));
                }
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                let summary_event = kind.starts_with("response.reasoning_summary");
                let at = if summary_event {
                    summary_index(v)
                } else {
                    content_index(v)
                };
                if let Some(Item::Reasoning { summary, content }) =
                    self.item(v, budget, new_reasoning)
                {
                    let map = if summary_event { summary } else { content };
                    budget.push(map.entry(at).or_default(), str_field(v, "delta"));
                }
            }
            "response.reasoning_summary_text.done" | "response.reasoning_text.done" => {
                let summary_event = kind.starts_with("response.reasoning_summary");
                let at = if summary_event {
                    summary_index(v)
                } else {
                    content_index(v)
                };
                if let Some(t) = v.get("text").and_then(Value::as_str)
                    && let Some(Item::Reasoning { summary, content }) =
                        self.item(v, budget, new_reasoning)
                {
                    let map = if summary_event { summary } else { content };
                    map.insert(at, budget.owned(t));
                }
            }
            "response.function_call_arguments.delta"
            | "response.custom_tool_call_input.delta"
            | "response.mcp_call_arguments.delta" => {
                if let Some(Item::Call { raw, .. }) = self.item(v, budget, new_call) {
                    budget.push(raw, str_field(v, "delta"));
                }
            }
            "response.function_call_arguments.done"
            | "response.custom_tool_call_input.done"
            | "response.mcp_call_arguments.done" => {
                let text = v
                    .get("arguments")
                    .and_then(Value::as_str)
                    .or_else(|| v.get("input").and_then(Value::as_str));
                let new_name = str_field(v, "name");
                if let Some(Item::Call { raw, name, .. }) = self.item(v, budget, new_call) {
                    if let Some(t) = text {
                        *raw = budget.owned(t);
                    }
                    if name.is_empty() && !new_name.is_empty() {
                        *name = budget.owned(new_name);
                    }
                }
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(r) = v.get("response") {
                    self.stop_reason = stop_reason_of(r);
                    self.final_response = Some(r.clone());
                }
            }
            "error" => {
                let err = v.get("error").filter(|e| e.is_object()).unwrap_or(v);
                self.stop_reason = Some(error_reason(err));
            }
            _ => {}
        }
    }

    /// The item an event refers to (`output_index`, else `item_id`), created with `make` when
    /// the stream skipped its `output_item.added`.
    fn item(&mut self, v: &Value, budget: &mut Budget, make: fn() -> Item) -> Option<&mut Item> {
        let index = v
            .get("output_index")
            .and_then(Value::as_u64)
            .or_else(|| self.by_item_id.get(str_field(v, "item_id")).copied())?;
        if !self.items.contains_key(&index) {
            if !budget.room_for_item(self.items.len()) {
                return None;
            }
            self.items.insert(index, make());
        }
        self.items.get_mut(&index)
    }

    pub(super) fn finish(self, budget: &mut Budget) -> Reassembled {
        if let Some(r) = &self.final_response {
            let mut b = budget.clone();
            if let Some(items) = items_of(r, &mut b).filter(|i| !i.is_empty()) {
                budget.truncated |= b.truncated;
                return finish_items(items.iter(), self.stop_reason);
            }
        }
        finish_items(self.items.values(), self.stop_reason)
    }
}

fn content_index(v: &Value) -> u64 {
    v.get("content_index").and_then(Value::as_u64).unwrap_or(0)
}

fn summary_index(v: &Value) -> u64 {
    v.get("summary_index").and_then(Value::as_u64).unwrap_or(0)
}

fn new_message() -> Item {
    Item::Message {
        parts: BTreeMap::new(),
    }
}

fn new_reasoning() -> Item {
    Item::Reasoning {
        summary: BTreeMap::new(),
        content: BTreeMap::new(),
    }
}

fn new_call() -> Item {
    Item::Call {
        id: String::new(),
        name: String::new(),
        raw: String::new(),
        structured: None,
    }
}
