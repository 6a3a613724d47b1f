//! JSON merges through a concrete syntax tree, so a user's key order, comments and indentation
//! survive: only the values iris owns are touched.

use jsonc_parser::ParseOptions;
use jsonc_parser::cst::{CstInputValue, CstObject, CstRootNode};

use super::{MergeError, Merged};

/// OpenCode provider ids iris owns.
pub(super) const OPENCODE_OPENAI: &str = "iris";
pub(super) const OPENCODE_ANTHROPIC: &str = "iris-anthropic";
const OPENCODE_SCHEMA: &str = "https://opencode.ai/config.json";

fn parse(existing: &str) -> Result<(CstRootNode, CstObject), MergeError> {
    let root =
        CstRootNode::parse(existing, &ParseOptions::default()).map_err(|e| MergeError::Parse {
            kind: "JSON",
            detail: e.to_string(),
        })?;
    let obj = root
        .object_value_or_create()
        .ok_or_else(|| MergeError::Shape("the top level is not a JSON object".to_owned()))?;
    Ok((root, obj))
}

fn finish(root: &CstRootNode) -> String {
    let mut text = root.to_string();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// A JSON string value. jsonc-parser 0.26 escapes only `"` when it writes a new string literal,
/// so backslashes and control characters are escaped here first (a key-file path or a shell
/// helper can hold both); the `claude_code_values` test pins this.
fn str_value(s: &str) -> CstInputValue {
    CstInputValue::String(cst_escape(s))
}

/// See [`str_value`]; also used for property names, which are written the same way.
fn cst_escape(s: &str) -> String {
    let mut escaped = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if c.is_control() => escaped.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The string value of `obj.name`, if it is a string.
fn string_prop(obj: &CstObject, name: &str) -> Option<String> {
    obj.get(name)?
        .value()?
        .as_string_lit()?
        .decoded_value()
        .ok()
}

/// Sets `obj.name` in place (keeping its position) or appends it.
fn set(obj: &CstObject, name: &str, value: CstInputValue) {
    match obj.get(name) {
        Some(prop) => prop.set_value(value),
        None => {
            obj.append(name, value);
        }
    }
}

fn object_prop(obj: &CstObject, name: &str) -> Result<CstObject, MergeError> {
    obj.object_value_or_create(name)
        .ok_or_else(|| MergeError::Shape(format!("`{name}` is there but is not a JSON object")))
}

/// `~/.claude/settings.json`: `apiKeyHelper`, `env.ANTHROPIC_BASE_URL`, optionally `model`.
/// `env.ANTHROPIC_API_KEY` and `env.ANTHROPIC_AUTH_TOKEN` are removed (with a note): Claude Code
/// prefers them over `apiKeyHelper`, so they would send a stale credential to the gateway.
pub(super) fn merge_claude_code(
    existing: &str,
    base_url: &str,
    helper: &str,
    model: Option<&str>,
) -> Result<Merged, MergeError> {
    let (root, obj) = parse(existing)?;
    let mut notes = Vec::new();
    if let Some(old) = string_prop(&obj, "apiKeyHelper")
        && old != helper
    {
        notes.push(format!("apiKeyHelper was `{old}`"));
    }
    set(&obj, "apiKeyHelper", str_value(helper));
    let env = object_prop(&obj, "env")?;
    if let Some(old) = string_prop(&env, "ANTHROPIC_BASE_URL")
        && old != base_url
    {
        notes.push(format!("env.ANTHROPIC_BASE_URL was {old}"));
    }
    set(&env, "ANTHROPIC_BASE_URL", str_value(base_url));
    for name in ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN"] {
        if let Some(prop) = env.get(name) {
            prop.remove();
            notes.push(format!(
                "removed env.{name}: Claude Code would send it instead of apiKeyHelper's key"
            ));
        }
    }
    if let Some(model) = model {
        set(&obj, "model", str_value(model));
    }
    Ok(Merged {
        text: finish(&root),
        notes,
    })
}

fn opencode_provider(
    package: &str,
    name: &str,
    base_url_v1: &str,
    api_key: &str,
    models: &[String],
) -> CstInputValue {
    let models = models
        .iter()
        .map(|id| {
            (
                cst_escape(id),
                CstInputValue::Object(vec![("name".to_owned(), str_value(id))]),
            )
        })
        .collect();
    CstInputValue::Object(vec![
        ("npm".to_owned(), str_value(package)),
        ("name".to_owned(), str_value(name)),
        (
            "options".to_owned(),
            CstInputValue::Object(vec![
                ("baseURL".to_owned(), str_value(base_url_v1)),
                ("apiKey".to_owned(), str_value(api_key)),
            ]),
        ),
        ("models".to_owned(), CstInputValue::Object(models)),
    ])
}

/// `~/.config/opencode/opencode.json`: providers `iris` (OpenAI-compatible) and, when Anthropic
/// models are listed, `iris-anthropic`; each replaced whole. Other providers are kept.
pub(super) fn merge_opencode(
    existing: &str,
    base_url_v1: &str,
    api_key: &str,
    openai: &[String],
    anthropic: &[String],
    model: Option<&str>,
) -> Result<Merged, MergeError> {
    let (root, obj) = parse(existing)?;
    let mut notes = Vec::new();
    if obj.get("$schema").is_none() {
        obj.insert(0, "$schema", str_value(OPENCODE_SCHEMA));
    }
    let providers = object_prop(&obj, "provider")?;
    if !openai.is_empty() || anthropic.is_empty() {
        if providers.get(OPENCODE_OPENAI).is_some() {
            notes.push(format!("replaced provider.{OPENCODE_OPENAI}"));
        }
        set(
            &providers,
            OPENCODE_OPENAI,
            opencode_provider(
                "@ai-sdk/openai-compatible",
                "iris",
                base_url_v1,
                api_key,
                openai,
            ),
        );
    }
    if !anthropic.is_empty() {
        if providers.get(OPENCODE_ANTHROPIC).is_some() {
            notes.push(format!("replaced provider.{OPENCODE_ANTHROPIC}"));
        }
        set(
            &providers,
            OPENCODE_ANTHROPIC,
            opencode_provider(
                "@ai-sdk/anthropic",
                "iris (Anthropic)",
                base_url_v1,
                api_key,
                anthropic,
            ),
        );
    }
    if let Some(model) = model {
        if let Some(old) = string_prop(&obj, "model")
            && old != model
        {
            notes.push(format!("model was {old}"));
        }
        set(&obj, "model", str_value(model));
    }
    Ok(Merged {
        text: finish(&root),
        notes,
    })
}
