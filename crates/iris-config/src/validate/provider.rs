//! `providers.<id>`.

use std::collections::HashMap;

use super::{Fields, array, boolean, integer, object, string};
use crate::diagnostic::{Diags, Path, quote};
use crate::raw::Raw;
use crate::types::{AuthMode, AuthScheme, Compatibility, Provider, Secret};

/// Aperture's cost bases. iris does not price requests, but a typo is still worth a warning.
const COST_BASES: [&str; 12] = [
    "anthropic",
    "openai",
    "google",
    "bedrock",
    "bedrock-us",
    "bedrock-eu",
    "bedrock-ap",
    "vertex",
    "azure",
    "azure-eu",
    "openrouter",
    "vercel",
];

/// Headers that describe the connection or the message framing. iris (hyper) sets them; a
/// configured value would corrupt the upstream request.
const RESERVED_HEADERS: [&str; 9] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "upgrade",
    "te",
    "trailer",
];

pub(super) fn providers(raw: &Raw, path: &Path, d: &mut Diags) -> Vec<Provider> {
    let Some(entries) = object(raw, path, d) else {
        return Vec::new();
    };
    if entries.is_empty() {
        d.warn(
            path,
            "no providers configured; every model request will fail",
        );
    }
    entries
        .iter()
        .filter_map(|(id, value)| provider(id, value, &path.key(id), d))
        .collect()
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One provider. Every field is checked even after an error; the provider is returned only when
/// it had no errors.
fn provider(id: &str, raw: &Raw, path: &Path, d: &mut Diags) -> Option<Provider> {
    let errors_before = d.error_count();
    if !valid_id(id) {
        d.error(
            path,
            format!(
                "invalid provider id {}: use letters, digits, '.', '_' and '-' (no '/')",
                quote(id)
            ),
        );
    }
    let entries = object(raw, path, d)?;
    let mut f = Fields::new(entries, path);

    let name = optional_string(&mut f, "name", d);
    let description = optional_string(&mut f, "description", d);

    let baseurl = match f.get("baseurl") {
        Some((raw, path)) => string(raw, &path, d).and_then(|s| baseurl(s, &path, d)),
        None => {
            d.error(&f.path_of("baseurl"), "missing required field");
            None
        }
    };

    let auth_mode = match f.get("auth_mode") {
        Some((raw, path)) => match string(raw, &path, d) {
            Some("" | "override") => AuthMode::Override,
            Some("passthrough") => AuthMode::Passthrough,
            Some("none") => AuthMode::None,
            Some(other) => {
                d.error(
                    &path,
                    format!(
                        "invalid auth_mode {}: expected \"override\", \"passthrough\" or \"none\"",
                        quote(other)
                    ),
                );
                AuthMode::Override
            }
            None => AuthMode::Override,
        },
        None => AuthMode::Override,
    };

    let apikey_path = f.path_of("apikey");
    let apikey = match f.get("apikey") {
        Some((raw, path)) => string(raw, &path, d).and_then(|s| apikey(s, &path, auth_mode, d)),
        None => {
            if auth_mode != AuthMode::None {
                d.warn(&apikey_path, NO_KEY);
            }
            None
        }
    };

    let authorization = match f.get("authorization") {
        Some((raw, path)) => match string(raw, &path, d) {
            Some("bearer") => AuthScheme::Bearer,
            Some("x-api-key") => AuthScheme::XApiKey,
            Some("x-goog-api-key") => AuthScheme::XGoogApiKey,
            Some(other) => {
                // Aperture treats this as a warning and falls back to bearer.
                d.warn(
                    &path,
                    format!(
                        "invalid authorization {}: expected \"bearer\", \"x-api-key\" or \"x-goog-api-key\"; using \"bearer\"",
                        quote(other)
                    ),
                );
                AuthScheme::Bearer
            }
            None => AuthScheme::Bearer,
        },
        None => AuthScheme::Bearer,
    };

    let models = match f.get("models") {
        Some((raw, path)) => models(raw, &path, d),
        None => {
            d.error(&f.path_of("models"), "missing required field");
            Vec::new()
        }
    };

    let compatibility = match f.get("compatibility") {
        Some((raw, path)) => compatibility(raw, &path, d),
        None => Compatibility::default(),
    };

    let disabled = f
        .get("disabled")
        .and_then(|(raw, path)| boolean(raw, &path, d))
        .unwrap_or(false);

    let add_headers = match f.get("add_headers") {
        Some((raw, path)) => add_headers(raw, &path, d),
        None => Vec::new(),
    };

    let preference = f
        .get("preference")
        .and_then(|(raw, path)| integer(raw, &path, d))
        .unwrap_or(0);

    let mut cost_basis = None;
    if let Some((raw, path)) = f.get("cost_basis")
        && let Some(basis) = string(raw, &path, d)
        && !basis.is_empty()
    {
        if COST_BASES.contains(&basis) {
            cost_basis = Some(basis.to_owned());
        } else {
            d.warn(&path, format!("unknown cost_basis {}", quote(basis)));
        }
    }
    let mut model_cost_map = Vec::new();
    if let Some((raw, path)) = f.get("model_cost_map")
        && let Some(items) = array(raw, &path, d)
    {
        for (i, item) in items.iter().enumerate() {
            let ipath = path.index(i);
            let Some(entries) = object(item, &ipath, d) else {
                continue;
            };
            let mut rf = super::Fields::new(entries, &ipath);
            let pattern = rf
                .get("match")
                .and_then(|(r, p)| string(r, &p, d).map(|s| (s.to_owned(), p)));
            let as_model = rf
                .get("as")
                .and_then(|(r, p)| string(r, &p, d).map(str::to_owned));
            let adjustment = match rf.get("adjustment") {
                Some((Raw::Number(n), p)) => match n.as_f64() {
                    Some(x) if x.is_finite() && x >= 0.0 => x,
                    _ => {
                        d.error(&p, "must be a non-negative number");
                        1.0
                    }
                },
                Some((r, p)) => {
                    super::mismatch(r, &p, "a number", d);
                    1.0
                }
                None => 1.0,
            };
            rf.finish(d);
            match (pattern, as_model) {
                (Some((pattern, ppath)), Some(as_model)) => {
                    if let Err(e) = check_go_glob(&pattern) {
                        d.error(&ppath, e);
                    } else {
                        model_cost_map.push(crate::types::CostRule {
                            pattern,
                            as_model,
                            adjustment,
                        });
                    }
                }
                (None, _) => d.error(&ipath.key("match"), "required"),
                (_, None) => d.error(&ipath.key("as"), "required"),
            }
        }
    }
    f.finish(d);

    if d.error_count() > errors_before {
        return None;
    }
    Some(Provider {
        id: id.to_owned(),
        name,
        description,
        baseurl: baseurl?,
        apikey,
        authorization,
        auth_mode,
        models,
        compatibility,
        disabled,
        add_headers,
        preference,
        cost_basis,
        model_cost_map,
    })
}

/// Go `path.Match` pattern syntax check: balanced `[...]`, no trailing backslash.
fn check_go_glob(p: &str) -> Result<(), String> {
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => {
                return Err("pattern ends with a backslash".into());
            }
            '[' => {
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == ']' {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err("unclosed [ in pattern".into());
                }
            }
            _ => {}
        }
    }
    Ok(())
}

const NO_KEY: &str =
    "no API key configured; requests will be forwarded without a provider credential";

fn optional_string(f: &mut Fields<'_>, key: &'static str, d: &mut Diags) -> String {
    f.get(key)
        .and_then(|(raw, path)| string(raw, &path, d))
        .unwrap_or_default()
        .to_owned()
}

/// Checks a base URL and normalizes it: no trailing `/`, no trailing `/v1`. The URL is not echoed
/// in messages: some providers take a key in the query string.
fn baseurl(s: &str, path: &Path, d: &mut Diags) -> Option<String> {
    if s.trim() != s {
        d.error(path, "baseurl has leading or trailing whitespace");
        return None;
    }
    let url = match url::Url::parse(s) {
        Ok(url) => url,
        Err(e) => {
            d.error(path, format!("invalid URL: {e}"));
            return None;
        }
    };
    let mut ok = true;
    if !matches!(url.scheme(), "http" | "https") {
        d.error(
            path,
            format!(
                "URL scheme must be http or https, found {}",
                quote(url.scheme())
            ),
        );
        ok = false;
    }
    if url.host_str().is_none_or(str::is_empty) {
        d.error(path, "URL has no host");
        ok = false;
    }
    if !url.username().is_empty() || url.password().is_some() {
        d.error(
            path,
            "URL must not contain credentials; put the key in apikey",
        );
        ok = false;
    }
    if url.query().is_some() {
        d.error(path, "URL must not contain a query string");
        ok = false;
    }
    if url.fragment().is_some() {
        d.error(path, "URL must not contain a fragment");
        ok = false;
    }
    if !ok {
        return None;
    }
    let mut base = s.trim_end_matches('/');
    // Without query and fragment the string ends where the path ends, so checking the parsed
    // path keeps `https://v1` (a host named v1) intact.
    if url.path().trim_end_matches('/').ends_with("/v1")
        && let Some(stripped) = base.strip_suffix("/v1")
    {
        base = stripped.trim_end_matches('/');
        d.warn(
            path,
            "baseurl ends in /v1; iris appends the API path itself (the /v1 was removed)",
        );
    }
    Some(base.to_owned())
}

fn apikey(s: &str, path: &Path, auth_mode: AuthMode, d: &mut Diags) -> Option<Secret> {
    if s.starts_with("keyfile::") {
        d.warn(
            path,
            "keyfile:: service-account keys are not supported yet; requests will be forwarded without a provider credential",
        );
        return None;
    }
    if s.is_empty() {
        if auth_mode != AuthMode::None {
            d.warn(path, NO_KEY);
        }
        return None;
    }
    if s.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        // Never echo the key.
        d.error(
            path,
            "API key contains a line break or NUL character and cannot be sent in a header",
        );
        return None;
    }
    Some(Secret::new(s))
}

fn models(raw: &Raw, path: &Path, d: &mut Diags) -> Vec<String> {
    let Some(items) = array(raw, path, d) else {
        return Vec::new();
    };
    if items.is_empty() {
        d.error(path, "must list at least one model");
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = path.index(i);
        let Some(model) = string(item, &item_path, d) else {
            continue;
        };
        if model.trim().is_empty() {
            d.error(&item_path, "model id is empty");
            continue;
        }
        if let Some(first) = seen.get(model) {
            d.warn(
                &item_path,
                format!(
                    "duplicate model {} (already listed at index {first})",
                    quote(model)
                ),
            );
            continue;
        }
        seen.insert(model, i);
        out.push(model.to_owned());
    }
    out
}

fn compatibility(raw: &Raw, path: &Path, d: &mut Diags) -> Compatibility {
    let Some(entries) = object(raw, path, d) else {
        return Compatibility::default();
    };
    let mut f = Fields::new(entries, path);
    let mut flag = |key: &'static str, d: &mut Diags| -> Option<bool> {
        f.get(key).and_then(|(raw, path)| boolean(raw, &path, d))
    };
    let openai_chat = flag("openai_chat", d);
    let mut c = Compatibility {
        openai_chat: false,
        openai_responses: flag("openai_responses", d).unwrap_or(false),
        anthropic_messages: flag("anthropic_messages", d).unwrap_or(false),
        gemini_generate_content: flag("gemini_generate_content", d).unwrap_or(false),
        google_generate_content: flag("google_generate_content", d).unwrap_or(false),
        google_raw_predict: flag("google_raw_predict", d).unwrap_or(false),
        bedrock_model_invoke: flag("bedrock_model_invoke", d).unwrap_or(false),
        bedrock_converse: flag("bedrock_converse", d).unwrap_or(false),
        experimental_gemini_cli_vertex_compat: flag("experimental_gemini_cli_vertex_compat", d)
            .unwrap_or(false),
    };
    // openai_chat is on unless another flag is on and openai_chat is not listed.
    c.openai_chat = openai_chat.unwrap_or(!c.any());
    f.finish(d);
    if !c.any() {
        d.warn(
            path,
            "no compatibility flag is enabled; no request can be routed to this provider",
        );
    }
    c
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `["Name: value", ...]`. Values are never echoed (they often carry credentials).
fn add_headers(raw: &Raw, path: &Path, d: &mut Diags) -> Vec<(String, String)> {
    let Some(items) = array(raw, path, d) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = path.index(i);
        let Some(line) = string(item, &item_path, d) else {
            continue;
        };
        let Some((name, value)) = line.split_once(':') else {
            d.error(&item_path, "expected \"Header-Name: value\" (no ':' found)");
            continue;
        };
        let name = name.trim_matches([' ', '\t']);
        let value = value.trim_matches([' ', '\t']);
        if name.is_empty() || !name.bytes().all(is_token_char) {
            d.error(
                &item_path,
                format!(
                    "invalid header name {}: use letters, digits and !#$%&'*+-.^_`|~",
                    quote(name)
                ),
            );
            continue;
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            d.error(
                &item_path,
                format!(
                    "header {} cannot be set with add_headers; iris manages it",
                    quote(name)
                ),
            );
            continue;
        }
        if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
            d.error(
                &item_path,
                format!(
                    "value of header {} contains a line break or NUL character",
                    quote(name)
                ),
            );
            continue;
        }
        // What the request path can send: visible ASCII and tabs (anything else would fail on
        // every request to this provider instead of here).
        if !value
            .bytes()
            .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            d.error(
                &item_path,
                format!(
                    "value of header {} contains a control or non-ASCII character; header values must be visible ASCII",
                    quote(name)
                ),
            );
            continue;
        }
        out.push((name.to_owned(), value.to_owned()));
    }
    out
}
