//! OpenAI wire formats: Chat Completions, legacy Completions, Responses, Embeddings, Models,
//! and the `{"error":{...}}` error shape.

use base64::Engine as _;
use http::HeaderMap;
use serde_json::{Value, json};

use super::sse::Sse;
use super::{
    Answer, Ctx, DEFAULT_EMBEDDING_DIMENSIONS, Dialect, MODELS, MockUsage,
    REASONING_TOKENS_PER_CHUNK, embedding_for,
};

const FINGERPRINT: &str = "fp_mock";

/// OpenAI's error body for `status`; `message` empty means the provider's usual text.
pub(crate) fn error_body(status: u16, message: &str) -> (Value, Vec<(&'static str, String)>) {
    let (default_message, kind, code): (&str, &str, Value) = match status {
        400 => ("Invalid request.", "invalid_request_error", Value::Null),
        401 => (
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            json!("invalid_api_key"),
        ),
        403 => (
            "You are not allowed to sample from this model",
            "invalid_request_error",
            Value::Null,
        ),
        404 => (
            "The model does not exist or you do not have access to it.",
            "invalid_request_error",
            json!("model_not_found"),
        ),
        413 => ("Request too large.", "invalid_request_error", Value::Null),
        429 => (
            "Rate limit reached for requests. Please try again in 1s.",
            "requests",
            json!("rate_limit_exceeded"),
        ),
        500 => (
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
            Value::Null,
        ),
        503 => (
            "The engine is currently overloaded, please try again later.",
            "server_error",
            Value::Null,
        ),
        s if s >= 500 => ("Upstream error.", "server_error", Value::Null),
        _ => ("Invalid request.", "invalid_request_error", Value::Null),
    };
    let message = if message.is_empty() {
        default_message
    } else {
        message
    };
    let body = json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    });
    let headers = if status == 429 {
        vec![("retry-after", "1".to_owned())]
    } else {
        Vec::new()
    };
    (body, headers)
}

/// `GET /v1/models`: OpenAI's list, or Anthropic's when an `anthropic-version` header is present.
pub(crate) fn models(headers: &HeaderMap) -> Answer {
    if headers.contains_key("anthropic-version") {
        return super::anthropic::models();
    }
    let data: Vec<Value> = MODELS
        .iter()
        .map(|id| {
            let owner = if id.starts_with("claude") {
                "anthropic"
            } else {
                "openai"
            };
            json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": owner})
        })
        .collect();
    Answer::json(json!({"object": "list", "data": data}), None)
}

fn require_model<'a>(ctx: &'a Ctx<'_>) -> Result<&'a str, Answer> {
    ctx.model()
        .ok_or_else(|| Answer::error(Dialect::OpenAi, 400, "you must provide a model parameter"))
}

/// Usage for a generating endpoint: see [`MockUsage`] for the rules.
fn generation_usage(ctx: &Ctx<'_>, reasoning_key: Option<&str>) -> MockUsage {
    let input = ctx.input_tokens();
    let chunks = ctx.knobs.chunks as u64;
    let reasoning = if reasoning_key.is_some_and(|k| ctx.body.get(k).is_some_and(|v| !v.is_null()))
    {
        chunks * REASONING_TOKENS_PER_CHUNK
    } else {
        0
    };
    let cached = if ctx
        .body
        .get("prompt_cache_key")
        .is_some_and(|v| !v.is_null())
    {
        input / 2
    } else {
        0
    };
    MockUsage {
        input_tokens: input,
        output_tokens: chunks + reasoning,
        cache_read_tokens: cached,
        cache_write_tokens: 0,
        reasoning_tokens: reasoning,
    }
}

fn chat_usage_json(u: &MockUsage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": u.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

fn include_usage(ctx: &Ctx<'_>) -> bool {
    ctx.body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true)
}

/// `POST /v1/chat/completions`.
pub(crate) fn chat(ctx: &Ctx<'_>) -> Answer {
    let model = match require_model(ctx) {
        Ok(m) => m,
        Err(answer) => return answer,
    };
    if !ctx.body.get("messages").is_some_and(Value::is_array) {
        return Answer::error(
            Dialect::OpenAi,
            400,
            "Missing required parameter: 'messages'.",
        );
    }
    let usage = generation_usage(ctx, Some("reasoning_effort"));
    let pieces = ctx.pieces(model);
    let id = format!("chatcmpl-mock{}", ctx.seq);

    if !ctx.wants_stream() {
        let body = json!({
            "id": id,
            "object": "chat.completion",
            "created": ctx.created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": pieces.concat(), "refusal": null, "annotations": []},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": chat_usage_json(&usage),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT
        });
        return Answer::json(body, Some(usage));
    }

    let with_usage = include_usage(ctx);
    let chunk = |choices: Value, usage_field: Option<Value>| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": choices
        });
        if with_usage {
            c["usage"] = usage_field.unwrap_or(Value::Null);
        }
        c
    };
    let mut sse = Sse::default();
    sse.push_json(
        false,
        None,
        &chunk(
            json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null}, "logprobs": null, "finish_reason": null}]),
            None,
        ),
    );
    for piece in &pieces {
        sse.push_json(
            true,
            None,
            &chunk(
                json!([{"index": 0, "delta": {"content": piece}, "logprobs": null, "finish_reason": null}]),
                None,
            ),
        );
    }
    sse.push_json(
        false,
        None,
        &chunk(
            json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]),
            None,
        ),
    );
    if with_usage {
        sse.push_json(
            false,
            None,
            &chunk(json!([]), Some(chat_usage_json(&usage))),
        );
    }
    sse.push(false, None, "[DONE]");
    Answer::stream(sse, with_usage.then_some(usage))
}

/// `POST /v1/completions` (legacy).
pub(crate) fn completions(ctx: &Ctx<'_>) -> Answer {
    let model = match require_model(ctx) {
        Ok(m) => m,
        Err(answer) => return answer,
    };
    if ctx.body.get("prompt").is_none() {
        return Answer::error(
            Dialect::OpenAi,
            400,
            "Missing required parameter: 'prompt'.",
        );
    }
    let usage = generation_usage(ctx, None);
    let usage_json = json!({
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens
    });
    let pieces = ctx.pieces(model);
    let id = format!("cmpl-mock{}", ctx.seq);
    if !ctx.wants_stream() {
        let body = json!({
            "id": id,
            "object": "text_completion",
            "created": ctx.created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": [{"text": pieces.concat(), "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage_json
        });
        return Answer::json(body, Some(usage));
    }
    let with_usage = include_usage(ctx);
    let chunk = |choices: Value, usage_field: Option<Value>| {
        let mut c = json!({
            "id": id,
            "object": "text_completion",
            "created": ctx.created,
            "model": model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices
        });
        if with_usage {
            c["usage"] = usage_field.unwrap_or(Value::Null);
        }
        c
    };
    let mut sse = Sse::default();
    for piece in &pieces {
        sse.push_json(
            true,
            None,
            &chunk(
                json!([{"text": piece, "index": 0, "logprobs": null, "finish_reason": null}]),
                None,
            ),
        );
    }
    sse.push_json(
        false,
        None,
        &chunk(
            json!([{"text": "", "index": 0, "logprobs": null, "finish_reason": "stop"}]),
            None,
        ),
    );
    if with_usage {
        sse.push_json(false, None, &chunk(json!([]), Some(usage_json)));
    }
    sse.push(false, None, "[DONE]");
    Answer::stream(sse, with_usage.then_some(usage))
}

/// `POST /v1/responses`.
pub(crate) fn responses(ctx: &Ctx<'_>) -> Answer {
    let model = match require_model(ctx) {
        Ok(m) => m,
        Err(answer) => return answer,
    };
    if ctx.body.get("input").is_none() && ctx.body.get("previous_response_id").is_none() {
        return Answer::error(Dialect::OpenAi, 400, "Missing required parameter: 'input'.");
    }
    let usage = generation_usage(ctx, Some("reasoning"));
    let pieces = ctx.pieces(model);
    let text = pieces.concat();
    let seq = ctx.seq;
    let resp_id = format!("resp_mock{seq}");
    let msg_id = format!("msg_mock{seq}");
    let reasoning_item = (usage.reasoning_tokens > 0)
        .then(|| json!({"id": format!("rs_mock{seq}"), "type": "reasoning", "summary": []}));
    let msg_index = usize::from(reasoning_item.is_some());
    let usage_json = json!({
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cache_read_tokens},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens
    });
    let message_done = json!({
        "id": msg_id,
        "type": "message",
        "status": "completed",
        "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
        "role": "assistant"
    });
    let response = |status: &str, output: Vec<Value>, usage: Value| {
        json!({
            "id": resp_id,
            "object": "response",
            "created_at": ctx.created,
            "status": status,
            "background": false,
            "error": null,
            "incomplete_details": null,
            "instructions": ctx.body.get("instructions").cloned().unwrap_or(Value::Null),
            "max_output_tokens": ctx.body.get("max_output_tokens").cloned().unwrap_or(Value::Null),
            "model": model,
            "output": output,
            "parallel_tool_calls": true,
            "previous_response_id": ctx.body.get("previous_response_id").cloned().unwrap_or(Value::Null),
            "prompt_cache_key": ctx.body.get("prompt_cache_key").cloned().unwrap_or(Value::Null),
            "reasoning": {
                "effort": ctx.body.pointer("/reasoning/effort").cloned().unwrap_or(Value::Null),
                "summary": null
            },
            "service_tier": "default",
            "store": ctx.body.get("store").cloned().unwrap_or(Value::Bool(true)),
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": usage,
            "user": null,
            "metadata": {}
        })
    };
    let mut output: Vec<Value> = reasoning_item.iter().cloned().collect();
    output.push(message_done.clone());

    if !ctx.wants_stream() {
        return Answer::json(response("completed", output, usage_json), Some(usage));
    }

    let mut sse = Sse::default();
    let mut n: u64 = 0;
    let mut emit = |sse: &mut Sse, delayed: bool, kind: &str, mut data: Value| {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(n);
        n += 1;
        sse.push_json(delayed, Some(kind), &data);
    };
    emit(
        &mut sse,
        false,
        "response.created",
        json!({"response": response("in_progress", vec![], Value::Null)}),
    );
    emit(
        &mut sse,
        false,
        "response.in_progress",
        json!({"response": response("in_progress", vec![], Value::Null)}),
    );
    if let Some(item) = &reasoning_item {
        emit(
            &mut sse,
            false,
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        );
        emit(
            &mut sse,
            false,
            "response.output_item.done",
            json!({"output_index": 0, "item": item}),
        );
    }
    emit(
        &mut sse,
        false,
        "response.output_item.added",
        json!({
            "output_index": msg_index,
            "item": {"id": msg_id, "type": "message", "status": "in_progress", "content": [], "role": "assistant"}
        }),
    );
    emit(
        &mut sse,
        false,
        "response.content_part.added",
        json!({
            "item_id": msg_id, "output_index": msg_index, "content_index": 0,
            "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        }),
    );
    for piece in &pieces {
        emit(
            &mut sse,
            true,
            "response.output_text.delta",
            json!({"item_id": msg_id, "output_index": msg_index, "content_index": 0, "delta": piece, "logprobs": []}),
        );
    }
    emit(
        &mut sse,
        false,
        "response.output_text.done",
        json!({"item_id": msg_id, "output_index": msg_index, "content_index": 0, "text": text, "logprobs": []}),
    );
    emit(
        &mut sse,
        false,
        "response.content_part.done",
        json!({
            "item_id": msg_id, "output_index": msg_index, "content_index": 0,
            "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
        }),
    );
    emit(
        &mut sse,
        false,
        "response.output_item.done",
        json!({"output_index": msg_index, "item": message_done}),
    );
    emit(
        &mut sse,
        false,
        "response.completed",
        json!({"response": response("completed", output, usage_json)}),
    );
    Answer::stream(sse, Some(usage))
}

/// `POST /v1/embeddings`: one vector per input, as floats or (when asked) base64 of
/// little-endian f32.
pub(crate) fn embeddings(ctx: &Ctx<'_>) -> Answer {
    let model = match require_model(ctx) {
        Ok(m) => m,
        Err(answer) => return answer,
    };
    let inputs: Vec<String> = match ctx.body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() => {
            if items.iter().all(Value::is_number) {
                // One input given as a token array.
                vec![Value::Array(items.clone()).to_string()]
            } else {
                items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect()
            }
        }
        _ => {
            return Answer::error(
                Dialect::OpenAi,
                400,
                "'input' must be a non-empty string or array.",
            );
        }
    };
    let dimensions = match ctx.body.get("dimensions").map(Value::as_u64) {
        None => DEFAULT_EMBEDDING_DIMENSIONS,
        Some(Some(d)) if (1..=8192).contains(&d) => d as usize,
        Some(_) => {
            return Answer::error(
                Dialect::OpenAi,
                400,
                "'dimensions' must be between 1 and 8192.",
            );
        }
    };
    let base64 = match ctx.body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Answer::error(
                Dialect::OpenAi,
                400,
                &format!("'{other}' is not one of ['float', 'base64'] - 'encoding_format'"),
            );
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let vector = embedding_for(input, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let usage = MockUsage {
        input_tokens: ctx.input_tokens(),
        ..MockUsage::default()
    };
    let body = json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens}
    });
    Answer::json(body, Some(usage))
}
