//! `grants`, legacy `temp_grants`, capabilities, and the checks that look across sections.

use globset::{GlobBuilder, GlobMatcher};

use super::{Fields, array, object, string};
use crate::diagnostic::{Diags, Path, quote};
use crate::raw::Raw;
use crate::types::{Cap, Grant, GrantOrigin, Provider, Role};

/// The app-capability key Aperture grants live under.
pub(crate) const APERTURE_CAP: &str = "tailscale.com/cap/aperture";

/// Why a `models` pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid models pattern {pattern:?}: {reason}")]
pub struct ModelPatternError {
    pub pattern: String,
    pub reason: String,
}

/// Compiles a `models` pattern the way grants match it: against `provider/model`, where `*`
/// stays within one `/`-separated segment and `**` spans any number of segments.
pub fn compile_model_pattern(pattern: &str) -> Result<GlobMatcher, ModelPatternError> {
    if pattern.is_empty() {
        return Err(ModelPatternError {
            pattern: String::new(),
            reason: "pattern is empty".to_owned(),
        });
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|e| ModelPatternError {
            pattern: pattern.to_owned(),
            reason: e.kind().to_string(),
        })
}

/// A `models` pattern seen in a grant, kept for the "matches no configured model" check.
struct PatternUse {
    path: Path,
    pattern: String,
    matcher: GlobMatcher,
}

/// What the grant sections produced.
#[derive(Default)]
pub(super) struct Collected {
    pub(super) grants: Vec<Grant>,
    patterns: Vec<PatternUse>,
    /// Any grant (in either section) that had entries, valid or not.
    any_grant_written: bool,
    any_admin: bool,
}

/// Aperture capability fields iris accepts but does not act on, with the reason given to users.
const IGNORED_CAP_FIELDS_WARN: [(&str, &str); 3] = [
    (
        "quotas",
        "iris does not enforce quotas yet; this field is ignored",
    ),
    (
        "send_hooks",
        "iris does not run hooks yet; this field is ignored",
    ),
    (
        "add_headers",
        "iris does not apply per-grant add_headers yet; this field is ignored",
    ),
];

/// Aperture capability fields that only concern Aperture's UI, CORS, metrics and MCP: accepted
/// silently.
const IGNORED_CAP_FIELDS: [&str; 11] = [
    "enable_chat_ui",
    "read_metrics",
    "set_cors",
    "cors_paths",
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Headers",
    "mcp_tools",
    "mcp_resources",
    "mcp_templates",
    "connectors",
];

/// One Aperture capability object. Returns the cap (with what was valid) and the compiled models
/// matcher. Unknown fields warn; `from_config` also warns about fields iris ignores.
pub(crate) fn cap_from_raw(
    raw: &Raw,
    path: &Path,
    from_config: bool,
    d: &mut Diags,
) -> Option<(Cap, Option<GlobMatcher>)> {
    let entries = object(raw, path, d)?;
    let mut f = Fields::new(entries, path);
    let role = f.get("role").and_then(|(raw, path)| role(raw, &path, d));
    let mut matcher = None;
    let mut models = None;
    if let Some((raw, path)) = f.get("models")
        && let Some(pattern) = string(raw, &path, d)
    {
        match compile_model_pattern(pattern) {
            Ok(m) => {
                matcher = Some(m);
                models = Some(pattern.to_owned());
            }
            Err(e) => d.error(&path, e.to_string()),
        }
    }
    for (key, why) in IGNORED_CAP_FIELDS_WARN {
        if let Some((_, path)) = f.get(key)
            && from_config
        {
            d.warn(&path, why);
        }
    }
    f.accept(&IGNORED_CAP_FIELDS);
    f.finish(d);
    Some((Cap { role, models }, matcher))
}

fn role(raw: &Raw, path: &Path, d: &mut Diags) -> Option<Role> {
    match string(raw, path, d)? {
        "user" => Some(Role::User),
        "admin" => Some(Role::Admin),
        other => {
            d.error(
                path,
                format!(
                    "invalid role {}: expected \"user\" or \"admin\"",
                    quote(other)
                ),
            );
            None
        }
    }
}

/// `src`: an array of non-empty strings. An empty array loads (Aperture's own default config has
/// an empty-src hook grant) but is warned about: it matches no one, so the grant does nothing.
fn src(raw: &Raw, path: &Path, d: &mut Diags) -> Option<Vec<String>> {
    let items = array(raw, path, d)?;
    if items.is_empty() {
        d.warn(
            path,
            "src is empty: this grant matches no one and has no effect (list sources such as \"*\", \"alice@example.com\" or \"tag:ci\")",
        );
        return Some(Vec::new());
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let item_path = path.index(i);
        let Some(s) = string(item, &item_path, d) else {
            ok = false;
            continue;
        };
        if s.is_empty() {
            d.error(&item_path, "source is empty");
            ok = false;
            continue;
        }
        if s.contains(',') {
            comma_source(s, &item_path, d);
        }
        out.push(s.to_owned());
    }
    ok.then_some(out)
}

/// A tagged device is matched by its tags sorted and joined with commas (`tag:a,tag:b`), as one
/// exact string. Warn about spellings that can never match.
fn comma_source(s: &str, path: &Path, d: &mut Diags) {
    let parts: Vec<&str> = s.split(',').collect();
    if !parts.iter().all(|p| p.starts_with("tag:")) {
        d.warn(
            path,
            format!(
                "source {} contains a comma but is not a tag list like \"tag:a,tag:b\"; it matches nothing (list each source as its own string)",
                quote(s)
            ),
        );
        return;
    }
    let mut sorted = parts.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted != parts {
        d.warn(
            path,
            format!(
                "tagged devices are matched by their tags sorted and joined with commas; {} never matches, write {}",
                quote(s),
                quote(&sorted.join(","))
            ),
        );
    }
}

/// Per-grant bookkeeping shared by `grants` and `temp_grants`.
struct GrantBuilder {
    caps: Vec<Cap>,
    patterns: Vec<PatternUse>,
}

impl GrantBuilder {
    fn new() -> GrantBuilder {
        GrantBuilder {
            caps: Vec::new(),
            patterns: Vec::new(),
        }
    }

    fn push(&mut self, cap: Cap, matcher: Option<GlobMatcher>, path: &Path) {
        if let (Some(pattern), Some(matcher)) = (&cap.models, matcher) {
            self.patterns.push(PatternUse {
                path: path.key("models"),
                pattern: pattern.clone(),
                matcher,
            });
        }
        self.caps.push(cap);
    }

    /// Ends one grant: warns when it does nothing, records it.
    fn finish(
        self,
        src: Option<Vec<String>>,
        origin: GrantOrigin,
        path: &Path,
        had_errors: bool,
        out: &mut Collected,
        d: &mut Diags,
    ) {
        let has_effect = self
            .caps
            .iter()
            .any(|c| c.role.is_some() || c.models.is_some());
        if !has_effect && !had_errors {
            d.warn(
                path,
                "grant assigns neither a role nor models; it has no effect",
            );
        }
        out.any_grant_written = true;
        out.any_admin |= self.caps.iter().any(|c| c.role == Some(Role::Admin));
        out.patterns.extend(self.patterns);
        if let Some(src) = src {
            out.grants.push(Grant {
                src,
                caps: self.caps,
                origin,
            });
        }
    }
}

pub(super) fn grants(raw: &Raw, path: &Path, out: &mut Collected, d: &mut Diags) {
    let Some(items) = array(raw, path, d) else {
        return;
    };
    for (index, item) in items.iter().enumerate() {
        let grant_path = path.index(index);
        let errors_before = d.error_count();
        let Some(entries) = object(item, &grant_path, d) else {
            continue;
        };
        let mut f = Fields::new(entries, &grant_path);
        let src = match f.get("src") {
            Some((raw, path)) => src(raw, &path, d),
            None => {
                d.error(&f.path_of("src"), "missing required field");
                None
            }
        };
        if let Some((_, path)) = f.get("dst") {
            d.error(
                &path,
                "dst is not allowed in config grants: they always apply to this gateway (dst belongs in tailnet policy file grants)",
            );
        }
        let mut builder = GrantBuilder::new();
        if let Some((raw, app_path)) = f.get("app")
            && let Some(caps) = object(raw, &app_path, d)
        {
            // Other capability keys are custom caps Aperture forwards to hooks; iris
            // accepts them as they are.
            if let Some((_, raw)) = caps.iter().find(|(k, _)| k == APERTURE_CAP) {
                let caps_path = app_path.key(APERTURE_CAP);
                if let Some(items) = array(raw, &caps_path, d) {
                    for (i, item) in items.iter().enumerate() {
                        let cap_path = caps_path.index(i);
                        if let Some((cap, matcher)) = cap_from_raw(item, &cap_path, true, d) {
                            builder.push(cap, matcher, &cap_path);
                        }
                    }
                }
            }
        }
        f.finish(d);
        let had_errors = d.error_count() > errors_before;
        builder.finish(
            src,
            GrantOrigin::Grants { index },
            &grant_path,
            had_errors,
            out,
            d,
        );
    }
}

pub(super) fn temp_grants(
    raw: &Raw,
    path: &Path,
    providers: &[Provider],
    out: &mut Collected,
    d: &mut Diags,
) {
    let Some(items) = array(raw, path, d) else {
        return;
    };
    for (index, item) in items.iter().enumerate() {
        let grant_path = path.index(index);
        let errors_before = d.error_count();
        let Some(entries) = object(item, &grant_path, d) else {
            continue;
        };
        let mut f = Fields::new(entries, &grant_path);
        let src = match f.get("src") {
            Some((raw, path)) => src(raw, &path, d),
            None => {
                d.error(&f.path_of("src"), "missing required field");
                None
            }
        };
        let mut builder = GrantBuilder::new();
        if let Some((raw, entries_path)) = f.get("grants")
            && let Some(items) = array(raw, &entries_path, d)
        {
            for (i, item) in items.iter().enumerate() {
                temp_entry(item, &entries_path.index(i), providers, &mut builder, d);
            }
        }
        f.finish(d);
        let had_errors = d.error_count() > errors_before;
        builder.finish(
            src,
            GrantOrigin::TempGrants { index },
            &grant_path,
            had_errors,
            out,
            d,
        );
    }
}

/// One entry of a legacy `temp_grants[i].grants`: `{"role": ...}`, `{"providers": [...]}` or
/// `{"hook": {...}}`.
fn temp_entry(
    raw: &Raw,
    path: &Path,
    providers: &[Provider],
    builder: &mut GrantBuilder,
    d: &mut Diags,
) {
    let Some(entries) = object(raw, path, d) else {
        return;
    };
    let mut f = Fields::new(entries, path);
    if let Some((raw, path)) = f.get("role")
        && let Some(role) = role(raw, &path, d)
    {
        builder.caps.push(Cap {
            role: Some(role),
            models: None,
        });
    }
    if let Some((raw, list_path)) = f.get("providers")
        && let Some(items) = array(raw, &list_path, d)
    {
        for (i, item) in items.iter().enumerate() {
            provider_ref(item, &list_path.index(i), providers, builder, d);
        }
    }
    if let Some((_, path)) = f.get("hook") {
        d.warn(&path, "iris does not run hooks yet; this entry is ignored");
    }
    f.finish(d);
}

/// `{"provider": "anthropic", "model": "claude-x"}` -> models `anthropic/claude-x`
/// (`anthropic/**` without a model).
fn provider_ref(
    raw: &Raw,
    path: &Path,
    providers: &[Provider],
    builder: &mut GrantBuilder,
    d: &mut Diags,
) {
    let Some(entries) = object(raw, path, d) else {
        return;
    };
    let mut f = Fields::new(entries, path);
    let provider = match f.get("provider") {
        Some((raw, path)) => string(raw, &path, d),
        None => {
            d.error(&f.path_of("provider"), "missing required field");
            None
        }
    };
    let model = f.get("model").and_then(|(raw, path)| string(raw, &path, d));
    f.finish(d);
    let Some(provider) = provider else {
        return;
    };
    let pattern = match model {
        Some(model) if !model.is_empty() => format!("{provider}/{model}"),
        _ => format!("{provider}/**"),
    };
    let matcher = match compile_model_pattern(&pattern) {
        Ok(m) => m,
        Err(e) => {
            d.error(path, e.to_string());
            return;
        }
    };
    let cap = Cap {
        role: None,
        models: Some(pattern),
    };
    if providers.iter().any(|p| p.id == provider) {
        // Checked against the models like any other pattern.
        builder.patterns.push(PatternUse {
            path: path.clone(),
            pattern: cap.models.clone().unwrap_or_default(),
            matcher,
        });
    } else {
        d.warn(
            &path.key("provider"),
            format!("references undefined provider {}", quote(provider)),
        );
    }
    builder.caps.push(cap);
}

/// Checks that need providers and grants together. Runs after everything else. The "no grants"
/// and "no admin" warnings are skipped when the grant sections had errors: they would only
/// repeat them.
pub(super) fn structural_checks(
    providers: &[Provider],
    grants: &Collected,
    grant_errors: bool,
    d: &mut Diags,
) {
    let grants_path = Path::root().key("grants");
    if grant_errors {
        // Reported already.
    } else if !grants.any_grant_written {
        if !providers.is_empty() {
            d.warn(
                &grants_path,
                "providers are configured but no grants; every request will be denied",
            );
        }
    } else if !grants.any_admin {
        d.warn(
            &grants_path,
            "no grant in grants or temp_grants assigns role:admin",
        );
    }

    let names: Vec<String> = providers
        .iter()
        .flat_map(|p| p.models.iter().map(move |m| format!("{}/{m}", p.id)))
        .collect();
    if names.is_empty() {
        // Nothing to match against; "no providers" is reported on its own.
        return;
    }
    for p in &grants.patterns {
        if !names.iter().any(|n| p.matcher.is_match(n)) {
            d.warn(
                &p.path,
                format!(
                    "grant models pattern {} matches no configured model",
                    quote(&p.pattern)
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_patterns_match_by_segment() {
        let cases: &[(&str, &str, bool)] = &[
            ("**", "anthropic/claude-x", true),
            ("**", "openrouter/anthropic/claude", true),
            ("anthropic/**", "anthropic/claude-x", true),
            ("anthropic/*", "anthropic/claude-x", true),
            ("*", "anthropic/claude-x", false),
            ("*/claude-*", "anthropic/claude-x", true),
            ("*/claude-*", "openrouter/anthropic/claude-x", false),
            ("openrouter/*", "openrouter/anthropic/claude", false),
            ("openrouter/**", "openrouter/anthropic/claude", true),
            ("anthropic/claude-x", "anthropic/claude-x", true),
            ("anthropic/claude-x", "anthropic/claude-xy", false),
            ("openai/gpt-{5,5-mini}", "openai/gpt-5-mini", true),
        ];
        for (pattern, name, want) in cases {
            let m = compile_model_pattern(pattern).unwrap();
            assert_eq!(m.is_match(name), *want, "{pattern} vs {name}");
        }
    }

    #[test]
    fn bad_model_patterns() {
        assert!(compile_model_pattern("").is_err());
        let e = compile_model_pattern("anthropic/[claude").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid models pattern \"anthropic/[claude\": "),
            "{e}"
        );
    }
}
