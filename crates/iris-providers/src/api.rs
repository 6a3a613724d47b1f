//! The API families iris proxies, how their paths look, and which provider flag serves each.

use std::fmt;

use iris_config::Compatibility;

/// The error and body dialect a family speaks: decides the shape of error bodies and model lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

/// One LLM API endpoint shape. The server recognises it from the request path; routing and usage
/// extraction depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApiFamily {
    /// `POST /v1/chat/completions`
    OpenAiChat,
    /// `POST /v1/responses`
    OpenAiResponses,
    /// `POST /v1/completions` (legacy text completions)
    OpenAiCompletions,
    /// `POST /v1/embeddings`
    OpenAiEmbeddings,
    /// `POST /v1/messages`
    AnthropicMessages,
    /// `POST /v1/messages/count_tokens`
    AnthropicCountTokens,
}

impl ApiFamily {
    /// Every family, in a stable order (useful for tables and tests).
    pub const ALL: [ApiFamily; 6] = [
        ApiFamily::OpenAiChat,
        ApiFamily::OpenAiResponses,
        ApiFamily::OpenAiCompletions,
        ApiFamily::OpenAiEmbeddings,
        ApiFamily::AnthropicMessages,
        ApiFamily::AnthropicCountTokens,
    ];

    /// This family's position in [`ApiFamily::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable snake_case name, used in logs, the store and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiFamily::OpenAiChat => "openai_chat",
            ApiFamily::OpenAiResponses => "openai_responses",
            ApiFamily::OpenAiCompletions => "openai_completions",
            ApiFamily::OpenAiEmbeddings => "openai_embeddings",
            ApiFamily::AnthropicMessages => "anthropic_messages",
            ApiFamily::AnthropicCountTokens => "anthropic_count_tokens",
        }
    }

    pub fn dialect(self) -> Dialect {
        match self {
            ApiFamily::OpenAiChat
            | ApiFamily::OpenAiResponses
            | ApiFamily::OpenAiCompletions
            | ApiFamily::OpenAiEmbeddings => Dialect::OpenAi,
            ApiFamily::AnthropicMessages | ApiFamily::AnthropicCountTokens => Dialect::Anthropic,
        }
    }

    /// The path iris appends to a provider's base URL (which never ends in `/v1`).
    pub fn upstream_path(self) -> &'static str {
        match self {
            ApiFamily::OpenAiChat => "/v1/chat/completions",
            ApiFamily::OpenAiResponses => "/v1/responses",
            ApiFamily::OpenAiCompletions => "/v1/completions",
            ApiFamily::OpenAiEmbeddings => "/v1/embeddings",
            ApiFamily::AnthropicMessages => "/v1/messages",
            ApiFamily::AnthropicCountTokens => "/v1/messages/count_tokens",
        }
    }

    /// Recognise a request path (query string already stripped). Both `/v1/<api>` and the bare
    /// `/<api>` that self-hosted clients use are accepted, exactly: no trailing slash, no case
    /// folding, no `..` resolution.
    pub fn from_path(path: &str) -> Option<ApiFamily> {
        let rest = path.strip_prefix("/v1").unwrap_or(path);
        match rest {
            "/chat/completions" => Some(ApiFamily::OpenAiChat),
            "/responses" => Some(ApiFamily::OpenAiResponses),
            "/completions" => Some(ApiFamily::OpenAiCompletions),
            "/embeddings" => Some(ApiFamily::OpenAiEmbeddings),
            "/messages" => Some(ApiFamily::AnthropicMessages),
            "/messages/count_tokens" => Some(ApiFamily::AnthropicCountTokens),
            _ => None,
        }
    }

    /// Whether responses of this family are billable token usage. `count_tokens` is a free
    /// estimate, not usage.
    pub fn is_billable(self) -> bool {
        !matches!(self, ApiFamily::AnthropicCountTokens)
    }
}

impl fmt::Display for ApiFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ApiFamily {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Whether a provider with these compatibility flags serves `family`: chat, completions and
/// embeddings need `openai_chat`; responses needs `openai_responses`; messages and count_tokens
/// need `anthropic_messages`.
pub fn serves(c: &Compatibility, family: ApiFamily) -> bool {
    match family {
        ApiFamily::OpenAiChat | ApiFamily::OpenAiCompletions | ApiFamily::OpenAiEmbeddings => {
            c.openai_chat
        }
        ApiFamily::OpenAiResponses => c.openai_responses,
        ApiFamily::AnthropicMessages | ApiFamily::AnthropicCountTokens => c.anthropic_messages,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_with_and_without_v1() {
        for f in ApiFamily::ALL {
            let p = f.upstream_path();
            assert_eq!(ApiFamily::ALL[f.index()], f);
            assert_eq!(ApiFamily::from_path(p), Some(f), "{p}");
            let bare = p.strip_prefix("/v1").unwrap();
            assert_eq!(ApiFamily::from_path(bare), Some(f), "{bare}");
        }
    }

    #[test]
    fn unknown_and_near_miss_paths_are_rejected() {
        for p in [
            "",
            "/",
            "/v1",
            "/v1/",
            "/v1/models",
            "/v1/chat/completions/",
            "/V1/chat/completions",
            "/v1/Chat/Completions",
            "/v1/v1/chat/completions",
            "/v1/messages/../chat/completions",
            "/v2/messages",
            "/v1/messages/count_tokens/x",
            "v1/messages",
        ] {
            assert_eq!(ApiFamily::from_path(p), None, "{p:?}");
        }
    }

    #[test]
    fn names_and_dialects() {
        let table: Vec<(&str, Dialect)> = ApiFamily::ALL
            .iter()
            .map(|f| (f.as_str(), f.dialect()))
            .collect();
        assert_eq!(
            table,
            vec![
                ("openai_chat", Dialect::OpenAi),
                ("openai_responses", Dialect::OpenAi),
                ("openai_completions", Dialect::OpenAi),
                ("openai_embeddings", Dialect::OpenAi),
                ("anthropic_messages", Dialect::Anthropic),
                ("anthropic_count_tokens", Dialect::Anthropic),
            ]
        );
        assert_eq!(ApiFamily::OpenAiChat.to_string(), "openai_chat");
        assert_eq!(
            serde_json::to_string(&ApiFamily::AnthropicMessages).unwrap(),
            "\"anthropic_messages\""
        );
    }
}
