//! `${VAR}` substitution in string values; the rules are documented on the crate (lib.rs).

use std::collections::HashMap;

use crate::diagnostic::{Diags, Path, quote};
use crate::raw::Raw;

/// Where `${NAME}` values come from. Tests pass a `HashMap` so they never touch process env vars.
pub trait EnvSource {
    /// The value of `name`, or `None` when it is unset.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment. A variable whose value is not valid Unicode counts as unset.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubstError {
    /// Variables that are unset and have no fallback, in order of appearance.
    Unset(Vec<String>),
    Unterminated,
    InvalidName(String),
}

impl SubstError {
    pub(crate) fn message(&self) -> String {
        match self {
            SubstError::Unset(names) => format!("unsubstituted macros: [{}]", names.join(" ")),
            SubstError::Unterminated => {
                "unterminated macro: \"${\" without a closing \"}\" (write \"$${\" for a literal \"${\")"
                    .to_owned()
            }
            SubstError::InvalidName(name) => format!(
                "invalid macro name {}: use letters, digits and '_', not starting with a digit",
                quote(name)
            ),
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Replaces the macros in one string value.
pub(crate) fn substitute(s: &str, env: &dyn EnvSource) -> Result<String, SubstError> {
    let mut out = String::with_capacity(s.len());
    let mut unset = Vec::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(body) = tail.strip_prefix("${") {
            let end = body.find('}').ok_or(SubstError::Unterminated)?;
            let inner = &body[..end];
            let (name, fallback) = match inner.split_once(":-") {
                Some((name, fallback)) => (name, Some(fallback)),
                None => (inner, None),
            };
            if !valid_name(name) {
                return Err(SubstError::InvalidName(name.to_owned()));
            }
            match (env.var(name), fallback) {
                (Some(value), Some(fallback)) if value.is_empty() => out.push_str(fallback),
                (Some(value), _) => out.push_str(&value),
                (None, Some(fallback)) => out.push_str(fallback),
                (None, None) => {
                    if !unset.iter().any(|n| n == name) {
                        unset.push(name.to_owned());
                    }
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    if unset.is_empty() {
        Ok(out)
    } else {
        Err(SubstError::Unset(unset))
    }
}

/// Substitutes every string value in the tree. A value that fails becomes [`Raw::Invalid`] so the
/// validators do not report it a second time.
pub(crate) fn substitute_tree(raw: &mut Raw, env: &dyn EnvSource, path: &Path, d: &mut Diags) {
    match raw {
        Raw::String(s) => {
            if s.contains('$') {
                match substitute(s, env) {
                    Ok(value) => *s = value,
                    Err(e) => {
                        d.error(path, e.message());
                        *raw = Raw::Invalid;
                    }
                }
            }
        }
        Raw::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_tree(item, env, &path.index(i), d);
            }
        }
        Raw::Object(entries) => {
            for (key, value) in entries.iter_mut() {
                substitute_tree(value, env, &path.key(key), d);
            }
        }
        Raw::Null | Raw::Bool(_) | Raw::Number(_) | Raw::Invalid => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> HashMap<String, String> {
        [("KEY", "sk-123"), ("EMPTY", ""), ("_X1", "x")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn substitution_table() {
        let cases: &[(&str, Result<&str, SubstError>)] = &[
            ("plain", Ok("plain")),
            ("${KEY}", Ok("sk-123")),
            ("Bearer ${KEY}!", Ok("Bearer sk-123!")),
            ("${KEY}${_X1}", Ok("sk-123x")),
            ("${EMPTY}", Ok("")),
            ("${MISSING:-fallback}", Ok("fallback")),
            ("${MISSING:-}", Ok("")),
            ("${EMPTY:-fallback}", Ok("fallback")),
            ("${KEY:-fallback}", Ok("sk-123")),
            ("${MISSING:-a:-b}", Ok("a:-b")),
            ("$${KEY}", Ok("${KEY}")),
            ("cost $5 and $KEY", Ok("cost $5 and $KEY")),
            ("trailing $", Ok("trailing $")),
            ("${MISSING}", Err(SubstError::Unset(vec!["MISSING".into()]))),
            (
                "${A}-${B}-${A}",
                Err(SubstError::Unset(vec!["A".into(), "B".into()])),
            ),
            ("${KEY", Err(SubstError::Unterminated)),
            ("${}", Err(SubstError::InvalidName(String::new()))),
            ("${1X}", Err(SubstError::InvalidName("1X".into()))),
            ("${A-B}", Err(SubstError::InvalidName("A-B".into()))),
            ("${A:B}", Err(SubstError::InvalidName("A:B".into()))),
        ];
        let env = env();
        for (input, want) in cases {
            let got = substitute(input, &env);
            assert_eq!(
                got.as_deref().map_err(|e| e.message()),
                want.as_ref().map(|s| *s).map_err(|e| e.message()),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn unset_message_matches_aperture() {
        assert_eq!(
            SubstError::Unset(vec!["A".into(), "B".into()]).message(),
            "unsubstituted macros: [A B]"
        );
    }
}
