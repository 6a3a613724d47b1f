//! Anthropic wire formats: Messages (plain and streamed), count_tokens, Models, and the
//! `{"type":"error","error":{...}}` error shape.

use serde_json::{Value, json};

use super::sse::Sse;
use super::{Answer, CACHE_READ_TOKENS, CACHE_WRITE_TOKENS, Ctx, Dialect, MODELS, MockUsage};

/// Anthropic's error body for `status`; `message` empty means the provider's usual text.
pub(crate) fn error_body(status: u16, message: &str) -> (Value, Vec<(&'static str, String)>) {
    let (kind, default_message) = match status {
        400 => ("invalid_request_error", "Invalid request."),
        401 => ("authentication_error", "invalid x-api-key"),
        402 => ("billing_error", "Your credit balance is too low."),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => (
            "not_found_error",
            "The requested resource could not be found.",
        ),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        429 => (
            "rate_limit_error",
            "This request would exceed the rate limit for your organization. Please retry later.",
        ),
        500 => ("api_error", "Internal server error"),
        504 => ("timeout_error", "Request timed out."),
        529 => ("overloaded_error", "Overloaded"),
        s if s >= 500 => ("api_error", "Internal server error"),
        _ => ("invalid_request_error", "Invalid request."),
    };
    let message = if message.is_empty() {
        default_message
    } else {
        message
    };
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_mock_error"
    });
    let mut headers = Vec::new();
    if status == 429 || status == 529 {
        headers.push(("retry-after", "1".to_owned()));
    }
    headers.push((
        "x-should-retry",
        (status == 429 || status >= 500).to_string(),
    ));
    (body, headers)
}

/// `GET /v1/models` in Anthropic's list shape (only the Claude models).
pub(crate) fn models() -> Answer {
    let data: Vec<Value> = MODELS
        .iter()
        .filter(|id| id.starts_with("claude"))
        .map(|id| {
            json!({
                "type": "model",
                "id": id,
                "display_name": display_name(id),
                "created_at": "2025-09-29T00:00:00Z"
            })
        })
        .collect();
    let first = data.first().map_or(Value::Null, |m| m["id"].clone());
    let last = data.last().map_or(Value::Null, |m| m["id"].clone());
    Answer::json(
        json!({"data": data, "has_more": false, "first_id": first, "last_id": last}),
        None,
    )
}

/// `claude-sonnet-4-5` -> `Claude Sonnet 4.5`.
fn display_name(id: &str) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut version: Vec<&str> = Vec::new();
    for part in id.split('-') {
        if part.chars().all(|c| c.is_ascii_digit()) {
            version.push(part);
        } else {
            let mut chars = part.chars();
            if let Some(first) = chars.next() {
                words.push(first.to_uppercase().chain(chars).collect());
            }
        }
    }
    if !version.is_empty() {
        words.push(version.join("."));
    }
    words.join(" ")
}

fn validate(ctx: &Ctx<'_>, needs_max_tokens: bool) -> Result<String, Answer> {
    let bad = |msg: &str| Answer::error(Dialect::Anthropic, 400, msg);
    let model = ctx.model().ok_or_else(|| bad("model: Field required"))?;
    if !ctx.body.get("messages").is_some_and(Value::is_array) {
        return Err(bad("messages: Field required"));
    }
    if needs_max_tokens && !ctx.body.get("max_tokens").is_some_and(Value::is_u64) {
        return Err(bad("max_tokens: Field required"));
    }
    Ok(model.to_owned())
}

fn usage_for(ctx: &Ctx<'_>) -> MockUsage {
    let cached = contains_bytes(ctx.raw, b"\"cache_control\"");
    MockUsage {
        input_tokens: ctx.input_tokens(),
        output_tokens: ctx.knobs.chunks as u64,
        cache_read_tokens: if cached { CACHE_READ_TOKENS } else { 0 },
        cache_write_tokens: if cached { CACHE_WRITE_TOKENS } else { 0 },
        reasoning_tokens: 0,
    }
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// `POST /v1/messages`.
pub(crate) fn messages(ctx: &Ctx<'_>) -> Answer {
    let model = match validate(ctx, true) {
        Ok(m) => m,
        Err(answer) => return answer,
    };
    let usage = usage_for(ctx);
    let pieces = ctx.pieces(&model);
    let id = format!("msg_mock{}", ctx.seq);
    let full_usage = |output_tokens: u64| {
        json!({
            "input_tokens": usage.input_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens,
            "cache_read_input_tokens": usage.cache_read_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": usage.cache_write_tokens,
                "ephemeral_1h_input_tokens": 0
            },
            "output_tokens": output_tokens,
            "service_tier": "standard"
        })
    };

    // A request that offers tools gets its first tool called after the text, like a model that
    // decides to use it: `{"q": "mock"}` as input.
    let tool = ctx.body["tools"][0]["name"].as_str().map(str::to_owned);
    let stop_reason = if tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    };
    if !ctx.wants_stream() {
        let mut content = vec![json!({"type": "text", "text": pieces.concat()})];
        if let Some(name) = &tool {
            content.push(json!({"type": "tool_use", "id": format!("toolu_mock{}", ctx.seq), "name": name, "input": {"q": "mock"}}));
        }
        let body = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": null,
            "usage": full_usage(usage.output_tokens)
        });
        return Answer::json(body, Some(usage));
    }

    let mut sse = Sse::default();
    sse.push_json(
        false,
        Some("message_start"),
        &json!({
            "type": "message_start",
            "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                // Like the real API: a provisional output count that message_delta replaces.
                "usage": full_usage(1)
            }
        }),
    );
    sse.push_json(
        false,
        Some("content_block_start"),
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    sse.push(false, Some("ping"), r#"{"type": "ping"}"#);
    for piece in &pieces {
        sse.push_json(
            true,
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        );
    }
    sse.push_json(
        false,
        Some("content_block_stop"),
        &json!({"type": "content_block_stop", "index": 0}),
    );
    if let Some(name) = &tool {
        sse.push_json(
            false,
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": 1,
                    "content_block": {"type": "tool_use", "id": format!("toolu_mock{}", ctx.seq), "name": name, "input": {}}}),
        );
        for part in [r#"{"q": "#, r#""mock"}"#] {
            sse.push_json(
                false,
                Some("content_block_delta"),
                &json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}}),
            );
        }
        sse.push_json(
            false,
            Some("content_block_stop"),
            &json!({"type": "content_block_stop", "index": 1}),
        );
    }
    sse.push_json(
        false,
        Some("message_delta"),
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": usage.output_tokens}
        }),
    );
    sse.push_json(
        false,
        Some("message_stop"),
        &json!({"type": "message_stop"}),
    );
    Answer::stream(sse, Some(usage))
}

/// `POST /v1/messages/count_tokens`.
pub(crate) fn count_tokens(ctx: &Ctx<'_>) -> Answer {
    if let Err(answer) = validate(ctx, false) {
        return answer;
    }
    let usage = MockUsage {
        input_tokens: ctx.input_tokens(),
        ..MockUsage::default()
    };
    Answer::json(json!({"input_tokens": usage.input_tokens}), Some(usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names() {
        assert_eq!(display_name("claude-sonnet-4-5"), "Claude Sonnet 4.5");
        assert_eq!(display_name("claude-haiku-4-5"), "Claude Haiku 4.5");
        assert_eq!(display_name("claude-opus-4"), "Claude Opus 4");
    }

    #[test]
    fn cache_control_detection() {
        assert!(contains_bytes(
            br#"{"cache_control": {}}"#,
            b"\"cache_control\""
        ));
        assert!(!contains_bytes(br#"{"cache": 1}"#, b"\"cache_control\""));
        assert!(!contains_bytes(b"", b"\"cache_control\""));
    }
}
