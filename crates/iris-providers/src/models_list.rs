//! `GET /v1/models` bodies: OpenAI's list shape and Anthropic's (which the Anthropic SDKs expect:
//! `data`, `has_more`, `first_id`, `last_id`).

use serde::Serialize;

use crate::routing::ModelEntry;

#[derive(Serialize)]
struct OpenAiList<'a> {
    object: &'static str,
    data: Vec<OpenAiModel<'a>>,
}

#[derive(Serialize)]
struct OpenAiModel<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

#[derive(Serialize)]
struct AnthropicList<'a> {
    data: Vec<AnthropicModel<'a>>,
    has_more: bool,
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
}

#[derive(Serialize)]
struct AnthropicModel<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    display_name: &'a str,
    created_at: &'static str,
}

/// `{"object":"list","data":[{"id","object":"model","created":0,"owned_by":<provider id>}]}`.
pub fn openai_models_json(models: &[ModelEntry]) -> Vec<u8> {
    let list = OpenAiList {
        object: "list",
        data: models
            .iter()
            .map(|m| OpenAiModel {
                id: &m.id,
                object: "model",
                created: m.created_unix,
                owned_by: &m.provider_id,
            })
            .collect(),
    };
    serde_json::to_vec(&list).unwrap_or_else(|_| br#"{"object":"list","data":[]}"#.to_vec())
}

/// `{"data":[{"type":"model","id","display_name","created_at"}],"has_more":false,"first_id",
/// "last_id"}`. iris knows no creation dates: `created_at` is the Unix epoch. The display name is
/// the id (providers configure no per-model names).
pub fn anthropic_models_json(models: &[ModelEntry]) -> Vec<u8> {
    let list = AnthropicList {
        data: models
            .iter()
            .map(|m| AnthropicModel {
                kind: "model",
                id: &m.id,
                display_name: &m.id,
                created_at: "1970-01-01T00:00:00Z",
            })
            .collect(),
        has_more: false,
        first_id: models.first().map(|m| m.id.as_str()),
        last_id: models.last().map(|m| m.id.as_str()),
    };
    serde_json::to_vec(&list).unwrap_or_else(|_| {
        br#"{"data":[],"has_more":false,"first_id":null,"last_id":null}"#.to_vec()
    })
}
