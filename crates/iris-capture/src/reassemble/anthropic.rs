//! Anthropic Messages: `content` blocks (`text`, `thinking`, `redacted_thinking`, `tool_use`,
//! `server_tool_use`, `mcp_tool_use`, tool results) and, streamed, the events
//! `message_start` → (`content_block_start` → `content_block_delta`* → `content_block_stop`)* →
//! `message_delta` (with `stop_reason`) → `message_stop`, plus `ping` and `error`.
//! Deltas: `text_delta`, `thinking_delta`, `signature_delta` (ignored), `input_json_delta`
//! (`partial_json` pieces of the tool input), `citations_delta` (ignored).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Budget, Reassembled, ToolCall, error_reason, join_blocks, parse_arguments, str_field};

#[derive(Debug)]
enum Block {
    Text(String),
    Thinking(String),
    Tool {
        id: String,
        name: String,
        /// The joined `partial_json` pieces.
        json: String,
        /// `input` from `content_block_start` (normally `{}`), used when no piece came.
        start_input: Value,
    },
    Other,
}

fn is_tool_block(kind: &str) -> bool {
    matches!(kind, "tool_use" | "server_tool_use" | "mcp_tool_use")
}

fn block_from_json(b: &Value, budget: &mut Budget) -> Block {
    let kind = str_field(b, "type");
    match kind {
        "text" => Block::Text(budget.owned(str_field(b, "text"))),
        "thinking" => Block::Thinking(budget.owned(str_field(b, "thinking"))),
        _ if is_tool_block(kind) => Block::Tool {
            id: budget.owned(str_field(b, "id")),
            name: budget.owned(str_field(b, "name")),
            json: String::new(),
            start_input: b.get("input").cloned().unwrap_or(Value::Null),
        },
        _ => Block::Other,
    }
}

fn finish_blocks<'a>(
    blocks: impl Iterator<Item = &'a Block>,
    stop_reason: Option<String>,
) -> Reassembled {
    let mut text = String::new();
    let mut thinking = Vec::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b {
            Block::Text(t) => text.push_str(t),
            Block::Thinking(t) => thinking.push(t.as_str()),
            Block::Tool {
                id,
                name,
                json,
                start_input,
            } => {
                let arguments = if json.trim().is_empty() {
                    start_input.clone()
                } else {
                    parse_arguments(json)
                };
                tool_calls.push(ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments,
                });
            }
            Block::Other => {}
        }
    }
    Reassembled {
        text,
        thinking: join_blocks(thinking),
        tool_calls,
        stop_reason,
    }
}

/// A non-streaming Messages response (`"type": "message"`).
pub(super) fn from_json(v: &Value, budget: &mut Budget) -> Option<Reassembled> {
    let content = v.get("content")?.as_array()?;
    if v.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t != "message")
    {
        return None;
    }
    let mut blocks = Vec::new();
    for b in content {
        if !budget.room_for_item(blocks.len()) {
            break;
        }
        blocks.push(block_from_json(b, budget));
    }
    let stop = v
        .get("stop_reason")
        .and_then(Value::as_str)
        .map(str::to_owned);
    // Tool inputs come whole here, as `input` (the block's start input).
    Some(finish_blocks(blocks.iter(), stop))
}

#[derive(Debug, Default)]
pub(super) struct StreamState {
    blocks: BTreeMap<u64, Block>,
    next_index: u64,
    last_index: u64,
    stop_reason: Option<String>,
}

impl StreamState {
    pub(super) fn on_event(&mut self, name: &str, v: &Value, budget: &mut Budget) {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or(name);
        match kind {
            "content_block_start" => {
                let index = v
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(self.next_index);
                self.last_index = index;
                let Some(b) = v.get("content_block") else {
                    return;
                };
                if !self.blocks.contains_key(&index) && !budget.room_for_item(self.blocks.len()) {
                    return;
                }
                self.blocks.insert(index, block_from_json(b, budget));
                self.next_index = self.next_index.max(index.saturating_add(1));
            }
            "content_block_delta" => {
                let index = v
                    .get("index")
                    .and_then(Value::as_u64)
                    .unwrap_or(self.last_index);
                let Some(d) = v.get("delta") else { return };
                let dkind = str_field(d, "type");
                if !self.blocks.contains_key(&index) {
                    // A delta without its start: make the block from the delta kind.
                    if !budget.room_for_item(self.blocks.len()) {
                        return;
                    }
                    let block = match dkind {
                        "text_delta" => Block::Text(String::new()),
                        "thinking_delta" => Block::Thinking(String::new()),
                        "input_json_delta" => Block::Tool {
                            id: String::new(),
                            name: String::new(),
                            json: String::new(),
                            start_input: Value::Null,
                        },
                        _ => return,
                    };
                    self.blocks.insert(index, block);
                    self.next_index = self.next_index.max(index.saturating_add(1));
                }
                match (self.blocks.get_mut(&index), dkind) {
                    (Some(Block::Text(t)), "text_delta") => budget.push(t, str_field(d, "text")),
                    (Some(Block::Thinking(t)), "thinking_delta") => {
                        budget.push(t, str_field(d, "thinking"))
                    }
                    (Some(Block::Tool { json, .. }), "input_json_delta") => {
                        budget.push(json, str_field(d, "partial_json"))
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(s) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(budget.owned(s));
                }
            }
            "message_start" => {
                if let Some(s) = v
                    .get("message")
                    .and_then(|m| m.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(budget.owned(s));
                }
            }
            "error" => {
                let err = v.get("error").unwrap_or(v);
                self.stop_reason = Some(error_reason(err));
            }
            _ => {}
        }
    }

    pub(super) fn finish(self, _budget: &mut Budget) -> Reassembled {
        finish_blocks(self.blocks.values(), self.stop_reason)
    }
}
