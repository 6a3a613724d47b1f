//! The route table, URLs, credentials and model lists.

use std::collections::HashMap;

use iris_config::{AuthMode, AuthScheme, Compatibility, Config, IrisSettings, Provider, Secret};
use iris_providers::models_list::{anthropic_models_json, openai_models_json};
use iris_providers::{ApiFamily, Route, RouteError, RouteTable, auth_header, serves, upstream_url};

fn compat(chat: bool, responses: bool, messages: bool) -> Compatibility {
    Compatibility {
        openai_chat: chat,
        openai_responses: responses,
        anthropic_messages: messages,
        ..Compatibility::default()
    }
}

fn provider(id: &str, models: &[&str], c: Compatibility, preference: i64) -> Provider {
    Provider {
        id: id.to_owned(),
        name: String::new(),
        description: String::new(),
        baseurl: format!("https://{id}.example"),
        apikey: Some(Secret::new(format!("key-{id}"))),
        authorization: AuthScheme::Bearer,
        auth_mode: AuthMode::Override,
        models: models.iter().map(|m| (*m).to_owned()).collect(),
        compatibility: c,
        disabled: false,
        add_headers: Vec::new(),
        preference,
        cost_basis: None,
        model_cost_map: Vec::new(),
    }
}

fn config(providers: Vec<Provider>) -> Config {
    Config {
        providers,
        grants: Vec::new(),
        iris: IrisSettings::default(),
        database: Default::default(),
        auto_cost_basis: true,
    }
}

fn table() -> RouteTable {
    let mut off = provider(
        "off",
        &["gpt-4o", "only-off"],
        compat(true, true, true),
        100,
    );
    off.disabled = true;
    let mut openai = provider(
        "openai",
        &["gpt-4o", "gpt-5.1", "shared"],
        compat(true, true, false),
        0,
    );
    openai.name = "OpenAI".to_owned();
    config(vec![
        off,
        openai,
        provider(
            "anthropic",
            &["claude-opus-4-8", "shared", "modèle"],
            compat(false, false, true),
            0,
        ),
        // Same preference as openai for "shared": config order decides.
        provider(
            "azure",
            &["gpt-4o", "shared"],
            compat(true, false, false),
            0,
        ),
        // Higher preference for gpt-5.1, but chat only.
        provider("fast", &["gpt-5.1"], compat(true, false, false), 10),
        // OpenRouter-style ids that look like provider/model.
        provider(
            "openrouter",
            &["openai/gpt-4o", "anthropic/claude-opus-4-8"],
            compat(true, false, false),
            -5,
        ),
        // Self-hosted, model ids with '/'.
        provider(
            "vllm",
            &["Qwen/Qwen3-8B", "meta-llama/Llama-3.3-70B-Instruct"],
            compat(true, false, false),
            0,
        ),
    ])
    .pipe(|c| RouteTable::new(&c))
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

fn route(provider: &str, model: &str) -> Result<Route, RouteError> {
    Ok(Route {
        provider_id: provider.to_owned(),
        model: model.to_owned(),
        qualified: format!("{provider}/{model}"),
    })
}

fn unknown(m: &str) -> Result<Route, RouteError> {
    Err(RouteError::UnknownModel(m.to_owned()))
}

fn wrong(m: &str, family: ApiFamily) -> Result<Route, RouteError> {
    Err(RouteError::WrongApi {
        model: m.to_owned(),
        family,
    })
}

#[test]
fn resolution_table() {
    use ApiFamily::*;
    let t = table();
    let cases: Vec<(&str, ApiFamily, Result<Route, RouteError>)> = vec![
        // Exact ids.
        (
            "claude-opus-4-8",
            AnthropicMessages,
            route("anthropic", "claude-opus-4-8"),
        ),
        (
            "claude-opus-4-8",
            AnthropicCountTokens,
            route("anthropic", "claude-opus-4-8"),
        ),
        ("gpt-4o", OpenAiChat, route("openai", "gpt-4o")),
        ("gpt-4o", OpenAiEmbeddings, route("openai", "gpt-4o")),
        // Preference: "fast" (10) beats "openai" (0) where it serves the family...
        ("gpt-5.1", OpenAiChat, route("fast", "gpt-5.1")),
        // ...and is skipped where it does not.
        ("gpt-5.1", OpenAiResponses, route("openai", "gpt-5.1")),
        // Tie on preference: first in config order.
        ("shared", OpenAiChat, route("openai", "shared")),
        ("shared", AnthropicMessages, route("anthropic", "shared")),
        // provider/model.
        (
            "openai/gpt-4o",
            OpenAiChat,
            route("openrouter", "openai/gpt-4o"),
        ),
        ("azure/gpt-4o", OpenAiChat, route("azure", "gpt-4o")),
        ("azure/shared", OpenAiChat, route("azure", "shared")),
        ("fast/gpt-5.1", OpenAiChat, route("fast", "gpt-5.1")),
        ("openai/gpt-5.1", OpenAiChat, route("openai", "gpt-5.1")),
        (
            "anthropic/shared",
            AnthropicMessages,
            route("anthropic", "shared"),
        ),
        // Ids containing '/': the whole string first, then the provider prefix.
        ("Qwen/Qwen3-8B", OpenAiChat, route("vllm", "Qwen/Qwen3-8B")),
        (
            "vllm/Qwen/Qwen3-8B",
            OpenAiChat,
            route("vllm", "Qwen/Qwen3-8B"),
        ),
        (
            "meta-llama/Llama-3.3-70B-Instruct",
            OpenAiCompletions,
            route("vllm", "meta-llama/Llama-3.3-70B-Instruct"),
        ),
        // An exact id wins over the provider-prefix reading of the same string...
        (
            "anthropic/claude-opus-4-8",
            OpenAiChat,
            route("openrouter", "anthropic/claude-opus-4-8"),
        ),
        // ...unless its provider does not serve the family: then the prefix form is tried.
        (
            "anthropic/claude-opus-4-8",
            AnthropicMessages,
            route("anthropic", "claude-opus-4-8"),
        ),
        // Wrong API.
        (
            "claude-opus-4-8",
            OpenAiChat,
            wrong("claude-opus-4-8", OpenAiChat),
        ),
        ("modèle", OpenAiResponses, wrong("modèle", OpenAiResponses)),
        (
            "azure/gpt-4o",
            OpenAiResponses,
            wrong("azure/gpt-4o", OpenAiResponses),
        ),
        (
            "Qwen/Qwen3-8B",
            AnthropicMessages,
            wrong("Qwen/Qwen3-8B", AnthropicMessages),
        ),
        (
            "anthropic/shared",
            OpenAiChat,
            wrong("anthropic/shared", OpenAiChat),
        ),
        // Disabled providers do not exist for routing.
        ("only-off", OpenAiChat, unknown("only-off")),
        ("off/gpt-4o", OpenAiChat, unknown("off/gpt-4o")),
        // Unknown, and everything that merely looks like a known model.
        ("gpt-5", OpenAiChat, unknown("gpt-5")),
        ("", OpenAiChat, unknown("")),
        ("/", OpenAiChat, unknown("/")),
        ("openai/", OpenAiChat, unknown("openai/")),
        ("/gpt-4o", OpenAiChat, unknown("/gpt-4o")),
        ("nobody/gpt-4o", OpenAiChat, unknown("nobody/gpt-4o")),
        (
            "anthropic/../openai/gpt-4o",
            OpenAiChat,
            unknown("anthropic/../openai/gpt-4o"),
        ),
        (
            "anthropic/../openai/gpt-4o",
            AnthropicMessages,
            unknown("anthropic/../openai/gpt-4o"),
        ),
        ("openai/./gpt-4o", OpenAiChat, unknown("openai/./gpt-4o")),
        ("openai//gpt-4o", OpenAiChat, unknown("openai//gpt-4o")),
        ("OpenAI/gpt-4o", OpenAiChat, unknown("OpenAI/gpt-4o")),
        ("GPT-4o", OpenAiChat, unknown("GPT-4o")),
        ("gpt-4o ", OpenAiChat, unknown("gpt-4o ")),
        (" gpt-4o", OpenAiChat, unknown(" gpt-4o")),
        ("gpt-4o\0", OpenAiChat, unknown("gpt-4o\0")),
        // Cyrillic о (U+043E) in place of Latin o.
        ("gpt-4\u{43e}", OpenAiChat, unknown("gpt-4\u{43e}")),
        // Fullwidth letters.
        (
            "\u{ff47}\u{ff50}\u{ff54}-4o",
            OpenAiChat,
            unknown("\u{ff47}\u{ff50}\u{ff54}-4o"),
        ),
        // NFD spelling of the NFC "modèle" a provider lists: not normalised, not equal.
        ("mode\u{300}le", AnthropicMessages, unknown("mode\u{300}le")),
        ("modèle", AnthropicMessages, route("anthropic", "modèle")),
        // Percent-encoding is not decoded.
        ("openai%2Fgpt-4o", OpenAiChat, unknown("openai%2Fgpt-4o")),
    ];
    for (requested, family, want) in cases {
        assert_eq!(
            t.resolve(requested, family),
            want,
            "{requested:?} on {family}"
        );
    }
}

#[test]
fn route_errors_map_to_statuses() {
    let t = table();
    let e = t.resolve("gpt-5", ApiFamily::OpenAiChat).unwrap_err();
    assert_eq!(iris_providers::status(e.kind()), 404);
    assert_eq!(
        e.to_string(),
        "model `gpt-5` does not exist or is not available through this gateway"
    );
    let e = t
        .resolve("claude-opus-4-8", ApiFamily::OpenAiChat)
        .unwrap_err();
    assert_eq!(iris_providers::status(e.kind()), 400);
    assert_eq!(
        e.to_string(),
        "model `claude-opus-4-8` is not served on the openai_chat API by any provider"
    );
}

#[test]
fn model_list_is_unique_and_every_id_routes_back() {
    let t = table();
    let models = t.models();
    let ids: Vec<(&str, &str)> = models
        .iter()
        .map(|m| (m.id.as_str(), m.provider_id.as_str()))
        .collect();
    assert_eq!(
        ids,
        vec![
            // openai and azure both list gpt-4o at preference 0: openai comes first.
            ("gpt-4o", "openai"),
            // fast (preference 10) gets the bare gpt-5.1.
            ("openai/gpt-5.1", "openai"),
            ("shared", "openai"),
            ("claude-opus-4-8", "anthropic"),
            ("anthropic/shared", "anthropic"),
            ("modèle", "anthropic"),
            ("azure/gpt-4o", "azure"),
            ("azure/shared", "azure"),
            ("gpt-5.1", "fast"),
            // openrouter's own ids, which look qualified but are exact model ids.
            ("openai/gpt-4o", "openrouter"),
            ("anthropic/claude-opus-4-8", "openrouter"),
            ("Qwen/Qwen3-8B", "vllm"),
            ("meta-llama/Llama-3.3-70B-Instruct", "vllm"),
        ]
    );
    assert_routes_back(&t);
}

/// Every listed id, requested on a family its provider serves, reaches that provider and model.
fn assert_routes_back(t: &RouteTable) {
    let mut seen = HashMap::new();
    for m in t.models() {
        assert!(
            seen.insert(m.id.clone(), ()).is_none(),
            "duplicate id {}",
            m.id
        );
        let mut served = 0;
        for family in ApiFamily::ALL {
            // The bare id reaches the preferred provider only among those serving the family, so
            // check each family the listed provider serves.
            match t.resolve(&m.id, family) {
                Ok(r) if r.provider_id == m.provider_id => {
                    served += 1;
                    assert_eq!(r.qualified, m.qualified, "{}", m.id);
                }
                Ok(_) | Err(_) => {}
            }
        }
        assert!(
            served > 0,
            "{} does not route back to {}",
            m.id,
            m.provider_id
        );
    }
}

#[test]
fn default_config_routes_every_listed_model() {
    let env: HashMap<String, String> = HashMap::from([
        ("ANTHROPIC_API_KEY".to_owned(), "sk-ant-test".to_owned()),
        ("OPENAI_API_KEY".to_owned(), "sk-test".to_owned()),
    ]);
    let loaded = iris_config::load(iris_config::default_config_text(), &env)
        .unwrap_or_else(|d| panic!("default config does not load: {d:?}"));
    let t = RouteTable::new(&loaded.config);
    assert!(!t.models().is_empty());
    assert_routes_back(&t);
    for p in &loaded.config.providers {
        let url = upstream_url(p, ApiFamily::AnthropicMessages, Some("beta=true"));
        assert!(url.ends_with("/v1/messages?beta=true"), "{url}");
        assert!(!url.contains("/v1/v1/"), "{url}");
        assert!(auth_header(p).is_some(), "{} has a key", p.id);
    }
}

#[test]
fn model_list_bodies() {
    let t = table();
    let models = t.models();
    // Exact bytes as clients get them, for a few entries (bare id, qualified id, id with '/').
    let some = [models[0].clone(), models[1].clone(), models[11].clone()];
    let raw = |b: Vec<u8>| String::from_utf8(b).unwrap();
    insta::assert_snapshot!("openai_models", raw(openai_models_json(&some)));
    insta::assert_snapshot!("anthropic_models", raw(anthropic_models_json(&some)));
    let all: serde_json::Value = serde_json::from_slice(&anthropic_models_json(&models)).unwrap();
    assert_eq!(all["data"].as_array().unwrap().len(), models.len());
    assert_eq!(all["first_id"], "gpt-4o");
    assert_eq!(all["last_id"], "meta-llama/Llama-3.3-70B-Instruct");
    assert_eq!(
        anthropic_models_json(&[]),
        br#"{"data":[],"has_more":false,"first_id":null,"last_id":null}"#
    );
    assert_eq!(openai_models_json(&[]), br#"{"object":"list","data":[]}"#);
}

#[test]
fn upstream_urls() {
    let mut p = provider("p", &[], Compatibility::default(), 0);
    p.baseurl = "http://127.0.0.1:8000/api".to_owned();
    assert_eq!(
        upstream_url(&p, ApiFamily::OpenAiChat, None),
        "http://127.0.0.1:8000/api/v1/chat/completions"
    );
    assert_eq!(
        upstream_url(&p, ApiFamily::AnthropicCountTokens, Some("beta=true")),
        "http://127.0.0.1:8000/api/v1/messages/count_tokens?beta=true"
    );
    assert_eq!(
        upstream_url(&p, ApiFamily::OpenAiResponses, Some("")),
        "http://127.0.0.1:8000/api/v1/responses"
    );
}

#[test]
fn credentials() {
    let mut p = provider("p", &[], Compatibility::default(), 0);
    assert_eq!(
        auth_header(&p),
        Some(("authorization", "Bearer key-p".to_owned()))
    );
    p.authorization = AuthScheme::XApiKey;
    assert_eq!(auth_header(&p), Some(("x-api-key", "key-p".to_owned())));
    p.authorization = AuthScheme::XGoogApiKey;
    assert_eq!(
        auth_header(&p),
        Some(("x-goog-api-key", "key-p".to_owned()))
    );
    p.auth_mode = AuthMode::Passthrough;
    assert_eq!(
        auth_header(&p),
        Some(("x-goog-api-key", "key-p".to_owned()))
    );
    p.auth_mode = AuthMode::None;
    assert_eq!(auth_header(&p), None);
    p.auth_mode = AuthMode::Override;
    p.apikey = None;
    assert_eq!(auth_header(&p), None);
}

#[test]
fn compatibility_serves_families() {
    use ApiFamily::*;
    let table: Vec<(Compatibility, Vec<ApiFamily>)> = vec![
        (
            Compatibility::default(),
            vec![OpenAiChat, OpenAiCompletions, OpenAiEmbeddings],
        ),
        (compat(false, true, false), vec![OpenAiResponses]),
        (
            compat(false, false, true),
            vec![AnthropicMessages, AnthropicCountTokens],
        ),
        (compat(true, true, true), ApiFamily::ALL.to_vec()),
        (compat(false, false, false), vec![]),
    ];
    for (c, want) in table {
        let got: Vec<ApiFamily> = ApiFamily::ALL
            .into_iter()
            .filter(|f| serves(&c, *f))
            .collect();
        assert_eq!(got, want, "{c:?}");
    }
}
