//! Diagnostics (one problem found in a config file) and the paths that locate them.

use std::fmt;

/// How bad a problem is. An `Error` stops the config from loading; a `Warning` is reported and the
/// config loads anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem in a config file.
///
/// `path` locates the value, for example `providers.anthropic.baseurl` or
/// `grants[1].app["tailscale.com/cap/aperture"][0].role`; it is empty for problems with the file as a
/// whole (a syntax error). Messages never contain secret values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    pub severity: Severity,
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// `error: providers.anthropic.baseurl: <message>`, or `error: <message>` when the path is empty.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.severity, self.message)
        } else {
            write!(f, "{}: {}: {}", self.severity, self.path, self.message)
        }
    }
}

/// A location in the config tree, rendered the way users write it: `.key` for plain keys,
/// `["key"]` for keys with other characters (dots, slashes, spaces), `[3]` for array elements.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Path(String);

impl Path {
    pub(crate) fn root() -> Path {
        Path(String::new())
    }

    pub(crate) fn key(&self, key: &str) -> Path {
        let plain = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let mut s = self.0.clone();
        if plain {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(key);
        } else {
            s.push('[');
            s.push_str(&quote(key));
            s.push(']');
        }
        Path(s)
    }

    pub(crate) fn index(&self, i: usize) -> Path {
        Path(format!("{}[{i}]", self.0))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A string as a JSON string literal, for messages and paths (`"a\"b"`).
pub(crate) fn quote(s: &str) -> String {
    // Serializing a &str to JSON cannot fail; fall back to Debug formatting just in case.
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// Collects diagnostics in the order they are found.
#[derive(Default)]
pub(crate) struct Diags {
    list: Vec<Diagnostic>,
}

impl Diags {
    pub(crate) fn error(&mut self, path: &Path, message: impl Into<String>) {
        self.push(Severity::Error, path, message.into());
    }

    pub(crate) fn warn(&mut self, path: &Path, message: impl Into<String>) {
        self.push(Severity::Warning, path, message.into());
    }

    fn push(&mut self, severity: Severity, path: &Path, message: String) {
        self.list.push(Diagnostic {
            severity,
            path: path.as_str().to_owned(),
            message,
        });
    }

    pub(crate) fn error_count(&self) -> usize {
        self.list.iter().filter(|d| d.is_error()).count()
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.list.iter().any(Diagnostic::is_error)
    }

    pub(crate) fn into_vec(self) -> Vec<Diagnostic> {
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_like_users_write_them() {
        let p = Path::root()
            .key("grants")
            .index(1)
            .key("app")
            .key("tailscale.com/cap/aperture")
            .index(0)
            .key("role");
        assert_eq!(
            p.as_str(),
            r#"grants[1].app["tailscale.com/cap/aperture"][0].role"#
        );
        assert_eq!(
            Path::root().key("providers").key("my.provider").as_str(),
            r#"providers["my.provider"]"#
        );
        assert_eq!(Path::root().key("a b").as_str(), r#"["a b"]"#);
        assert_eq!(Path::root().key("").as_str(), r#"[""]"#);
        assert_eq!(
            Path::root().key("iris").key("max_body-bytes").as_str(),
            "iris.max_body-bytes"
        );
    }

    #[test]
    fn display_with_and_without_path() {
        let d = Diagnostic {
            severity: Severity::Warning,
            path: "iris.listen".into(),
            message: "m".into(),
        };
        assert_eq!(d.to_string(), "warning: iris.listen: m");
        let d = Diagnostic {
            severity: Severity::Error,
            path: String::new(),
            message: "m".into(),
        };
        assert_eq!(d.to_string(), "error: m");
    }
}
