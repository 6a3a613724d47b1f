//! Phase 1: HuJSON text -> [`Raw`] tree.
//!
//! The tree keeps object keys in file order (provider order matters) and collapses duplicate keys
//! (the last one wins, with a warning), so later phases never see a duplicate.

use std::collections::HashMap;
use std::str::FromStr;

use jsonc_parser::ast;
use jsonc_parser::common::Ranged;
use jsonc_parser::{CollectOptions, ParseOptions};

use crate::diagnostic::{Diags, Path, quote};

/// A parsed JSON value. Deliberately not `Debug`: string values may hold secrets after substitution.
#[derive(Clone, PartialEq)]
pub(crate) enum Raw {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Raw>),
    /// Keys in file order, without duplicates.
    Object(Vec<(String, Raw)>),
    /// A value that already produced an error (a bad number literal, a failed `${VAR}`
    /// substitution). Validators accept it silently so one mistake yields one diagnostic.
    Invalid,
}

impl Raw {
    /// What the value is, for "expected X, found Y" messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Raw::Null => "null",
            Raw::Bool(_) => "a boolean",
            Raw::Number(_) => "a number",
            Raw::String(_) => "a string",
            Raw::Array(_) => "an array",
            Raw::Object(_) => "an object",
            Raw::Invalid => "an invalid value",
        }
    }

    pub(crate) fn from_json(v: &serde_json::Value) -> Raw {
        match v {
            serde_json::Value::Null => Raw::Null,
            serde_json::Value::Bool(b) => Raw::Bool(*b),
            serde_json::Value::Number(n) => Raw::Number(n.clone()),
            serde_json::Value::String(s) => Raw::String(s.clone()),
            serde_json::Value::Array(a) => Raw::Array(a.iter().map(Raw::from_json).collect()),
            serde_json::Value::Object(m) => Raw::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), Raw::from_json(v)))
                    .collect(),
            ),
        }
    }
}

/// Parses HuJSON (JSON plus `//` and `/* */` comments and trailing commas). Syntax errors are
/// reported as one error with a line and column; duplicate keys as warnings.
pub(crate) fn parse(text: &str, d: &mut Diags) -> Option<Raw> {
    if nests_deeper_than(text, MAX_CONFIG_DEPTH) {
        d.error(
            &Path::root(),
            format!(
                "the config nests arrays and objects deeper than {MAX_CONFIG_DEPTH} levels; it is not read"
            ),
        );
        return None;
    }
    let options = ParseOptions {
        allow_comments: true,
        // HuJSON keeps JSON's quoted keys; a bare word key is a mistake Aperture would reject.
        allow_loose_object_property_names: false,
        allow_trailing_commas: true,
    };
    match jsonc_parser::parse_to_ast(text, &CollectOptions::default(), &options) {
        Err(e) => {
            d.error(&Path::root(), format!("invalid HuJSON: {e}"));
            None
        }
        Ok(parsed) => match parsed.value {
            None => {
                d.error(&Path::root(), "config is empty");
                None
            }
            Some(value) => {
                if let Err(offset) = check_commas(&value, text) {
                    let (line, column) = line_and_column(text, offset);
                    d.error(
                        &Path::root(),
                        format!("invalid HuJSON: Expected comma on line {line} column {column}"),
                    );
                    return None;
                }
                Some(from_ast(&value, &Path::root(), d))
            }
        },
    }
}

/// Configs nest a handful of levels; the HuJSON parser recurses once per level, so a text nested
/// thousands deep would overflow the stack and abort the gateway. Such texts are refused before
/// they are parsed.
pub(crate) const MAX_CONFIG_DEPTH: usize = 64;

/// Whether a HuJSON text nests arrays and objects deeper than `max` (strings and comments are
/// skipped; the scan is linear and needs no parse).
pub(crate) fn nests_deeper_than(text: &str, max: usize) -> bool {
    let b = text.as_bytes();
    let (mut i, mut depth) = (0, 0usize);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 1;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// jsonc-parser accepts `{"a": 1 "b": 2}` and `[1 2]`; HuJSON (like JSON) requires the comma.
/// Returns the offset of the first element that lacks one.
fn check_commas(value: &ast::Value<'_>, text: &str) -> Result<(), usize> {
    let siblings: Vec<(usize, usize)> = match value {
        ast::Value::Object(o) => {
            for prop in &o.properties {
                check_commas(&prop.value, text)?;
            }
            o.properties.iter().map(|p| (p.start(), p.end())).collect()
        }
        ast::Value::Array(a) => {
            for element in &a.elements {
                check_commas(element, text)?;
            }
            a.elements.iter().map(|e| (e.start(), e.end())).collect()
        }
        _ => return Ok(()),
    };
    for pair in siblings.windows(2) {
        let (prev_end, next_start) = (pair[0].1, pair[1].0);
        if !gap_has_comma(text.get(prev_end..next_start).unwrap_or("")) {
            return Err(next_start);
        }
    }
    Ok(())
}

/// The text between two values holds only whitespace, comments and commas; look for a comma
/// outside the comments.
fn gap_has_comma(mut gap: &str) -> bool {
    loop {
        if let Some(rest) = gap.strip_prefix("//") {
            gap = rest.find('\n').map_or("", |i| &rest[i..]);
        } else if let Some(rest) = gap.strip_prefix("/*") {
            gap = rest.find("*/").map_or("", |i| &rest[i + 2..]);
        } else {
            let mut chars = gap.chars();
            match chars.next() {
                None => return false,
                Some(',') => return true,
                Some(_) => gap = chars.as_str(),
            }
        }
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn from_ast(value: &ast::Value<'_>, path: &Path, d: &mut Diags) -> Raw {
    match value {
        ast::Value::NullKeyword(_) => Raw::Null,
        ast::Value::BooleanLit(b) => Raw::Bool(b.value),
        ast::Value::StringLit(s) => Raw::String(s.value.to_string()),
        ast::Value::NumberLit(n) => match serde_json::Number::from_str(n.value) {
            Ok(n) => Raw::Number(n),
            Err(_) => {
                d.error(
                    path,
                    format!("invalid number {}: use a JSON number", quote(n.value)),
                );
                Raw::Invalid
            }
        },
        ast::Value::Array(a) => Raw::Array(
            a.elements
                .iter()
                .enumerate()
                .map(|(i, v)| from_ast(v, &path.index(i), d))
                .collect(),
        ),
        ast::Value::Object(o) => {
            let mut entries: Vec<(String, Raw)> = Vec::with_capacity(o.properties.len());
            let mut index: HashMap<String, usize> = HashMap::new();
            for prop in &o.properties {
                let key = prop.name.as_str().to_owned();
                let child = path.key(&key);
                let value = from_ast(&prop.value, &child, d);
                match index.get(&key) {
                    Some(&i) => {
                        d.warn(&child, format!("duplicate config key {}", quote(&key)));
                        // The last occurrence wins, as in Go's encoding/json; it keeps the
                        // position of the first so file order stays stable.
                        entries[i].1 = value;
                    }
                    None => {
                        index.insert(key.clone(), entries.len());
                        entries.push((key, value));
                    }
                }
            }
            Raw::Object(entries)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_nested_thousands_deep_is_refused_before_parsing() {
        // Parsing it would overflow the stack and abort the process (file reload, CLI, API).
        let env = std::collections::HashMap::<String, String>::new();
        for text in [
            "[".repeat(200_000),
            format!("{{\"a\": {}", "{\"b\": ".repeat(100_000)),
        ] {
            let d = crate::check(&text, &env);
            assert_eq!(d.len(), 1, "{d:?}");
            assert!(d[0].message.contains("deeper than 64 levels"), "{d:?}");
        }
    }

    #[test]
    fn nesting_depth_skips_strings_and_comments() {
        assert!(!nests_deeper_than(r#"{"a": [1, {"b": "[[[["}]}"#, 3));
        assert!(nests_deeper_than(r#"{"a": [1, {"b": [2]}]}"#, 3));
        assert!(!nests_deeper_than(
            "// [[[[\n{/* {{{{ */ \"x\\\"[[\": 1}",
            1
        ));
        assert!(nests_deeper_than(&"[".repeat(100_000), MAX_CONFIG_DEPTH));
        assert!(!nests_deeper_than(
            crate::default_config_text(),
            MAX_CONFIG_DEPTH
        ));
    }

    fn parse_ok(text: &str) -> (Raw, Vec<String>) {
        let mut d = Diags::default();
        let raw = parse(text, &mut d);
        let msgs = d.into_vec().iter().map(ToString::to_string).collect();
        (raw.unwrap_or(Raw::Invalid), msgs)
    }

    #[test]
    fn comments_and_trailing_commas() {
        let (raw, msgs) = parse_ok(
            "// leading comment\n{ /* block */ \"a\": [1, 2,], // trailing\n \"b\": {\"c\": true,}, }\n",
        );
        assert!(msgs.is_empty(), "{msgs:?}");
        let Raw::Object(entries) = raw else {
            panic!("not an object")
        };
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn keys_keep_file_order() {
        let (raw, _) = parse_ok(r#"{"z": 1, "a": 2, "m": 3}"#);
        let Raw::Object(entries) = raw else {
            panic!("not an object")
        };
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a", "m"]);
    }

    #[test]
    fn duplicate_keys_warn_and_last_wins() {
        let (raw, msgs) = parse_ok(r#"{"a": {"x": 1, "y": 2, "x": 3}, "b": 0, "a2": 1}"#);
        assert_eq!(msgs, [r#"warning: a.x: duplicate config key "x""#]);
        let Raw::Object(entries) = raw else {
            panic!("not an object")
        };
        let Raw::Object(a) = &entries[0].1 else {
            panic!("not an object")
        };
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].0, "x");
        assert!(a[0].1 == Raw::Number(3.into()));
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let (_, msgs) = parse_ok("{\n  \"a\": 1\n  \"b\": 2\n}");
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].starts_with("error: invalid HuJSON: "), "{msgs:?}");
        assert!(msgs[0].contains("line 3"), "{msgs:?}");
    }

    #[test]
    fn missing_commas_are_rejected() {
        for text in [
            "{\"a\": 1 \"b\": 2}",
            "[1 2]",
            "{\"a\": [1, 2 /* , */ 3]}",
            "{\"a\": 1 // ,\n \"b\": 2}",
        ] {
            let (_, msgs) = parse_ok(text);
            assert_eq!(msgs.len(), 1, "{text}: {msgs:?}");
            assert!(
                msgs[0].starts_with("error: invalid HuJSON: Expected comma on line "),
                "{text}: {msgs:?}"
            );
        }
        let (_, msgs) = parse_ok("{\"a\": [1, /* x */ 2, // y\n 3], /* , */ \"b\": {}}");
        assert!(msgs.is_empty(), "{msgs:?}");
    }

    #[test]
    fn bare_word_keys_are_rejected() {
        let (_, msgs) = parse_ok("{ providers: {} }");
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].starts_with("error: invalid HuJSON: "), "{msgs:?}");
    }

    #[test]
    fn empty_text_is_an_error() {
        let (_, msgs) = parse_ok("  // nothing here\n");
        assert_eq!(msgs, ["error: config is empty"]);
    }
}
