//! Go `path.Match` glob semantics, used by `model_cost_map` patterns (Aperture documents them as
//! Go path.Match globs).
//!
//! - `*` matches any run of characters other than `/` (possibly empty);
//! - `?` matches one character other than `/`;
//! - `[...]` matches one character (not `/`) in the class: single characters, `a-z` ranges, a
//!   leading `^` negates; `\` escapes the next character, in and out of classes;
//! - any other character matches itself (case-sensitive).
//!
//! A malformed pattern (unclosed class, bad range, trailing `\`, empty class) is an error, as Go
//! reports `ErrBadPattern`, whatever the name. Go only detects some bad patterns when matching
//! gets that far; here the whole pattern is checked first, so a typo in a rule is reported at
//! config load, not silently never matched.

use thiserror::Error;

/// The pattern is not a valid Go `path.Match` glob.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid glob pattern {pattern:?}: {reason}")]
pub struct BadPattern {
    pub pattern: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    Any,
    Star,
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, BadPattern> {
    let bad = |reason| BadPattern {
        pattern: pattern.to_owned(),
        reason,
    };
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                // Consecutive stars mean the same as one.
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
                i += 1;
            }
            '?' => {
                out.push(Token::Any);
                i += 1;
            }
            '\\' => {
                let c = *chars.get(i + 1).ok_or_else(|| bad("trailing backslash"))?;
                out.push(Token::Literal(c));
                i += 2;
            }
            '[' => {
                i += 1;
                let negated = chars.get(i) == Some(&'^');
                if negated {
                    i += 1;
                }
                let mut items = Vec::new();
                loop {
                    let c = *chars
                        .get(i)
                        .ok_or_else(|| bad("unclosed character class"))?;
                    if c == ']' && !items.is_empty() {
                        i += 1;
                        break;
                    }
                    let lo =
                        class_char(&chars, &mut i).ok_or_else(|| bad("bad character class"))?;
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') {
                        i += 1;
                        hi = class_char(&chars, &mut i).ok_or_else(|| bad("bad range"))?;
                        if hi < lo {
                            return Err(bad("range out of order"));
                        }
                    }
                    items.push((lo, hi));
                }
                out.push(Token::Class { negated, items });
            }
            c => {
                out.push(Token::Literal(c));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// One character of a class: an escaped character, or anything but `-`, `]` (Go rejects an
/// unescaped `-` or `]` where a character is expected, and an empty class).
fn class_char(chars: &[char], i: &mut usize) -> Option<char> {
    let c = *chars.get(*i)?;
    match c {
        '\\' => {
            let e = *chars.get(*i + 1)?;
            *i += 2;
            Some(e)
        }
        '-' | ']' => None,
        _ => {
            *i += 1;
            Some(c)
        }
    }
}

fn matches_from(tokens: &[Token], name: &[char]) -> bool {
    // Iterative matching with backtracking to the last star (stars never cross `/`).
    let (mut t, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match tokens.get(t) {
            Some(Token::Star) => {
                star = Some((t, n));
                t += 1;
                continue;
            }
            Some(tok) if single_matches(tok, name[n]) => {
                t += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        match star {
            // Let the last star swallow one more character, unless that character is `/`.
            Some((st, sn)) if name[sn] != '/' => {
                star = Some((st, sn + 1));
                t = st + 1;
                n = sn + 1;
            }
            _ => return false,
        }
    }
    tokens[t..].iter().all(|tok| *tok == Token::Star)
}

fn single_matches(tok: &Token, c: char) -> bool {
    match tok {
        Token::Literal(l) => *l == c,
        Token::Any => c != '/',
        Token::Class { negated, items } => {
            c != '/' && (items.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated)
        }
        Token::Star => false,
    }
}

/// Check a pattern without matching anything (for config validation).
pub fn check_pattern(pattern: &str) -> Result<(), BadPattern> {
    tokenize(pattern).map(|_| ())
}

/// Whether `name` matches `pattern` in Go `path.Match` semantics (see the module docs).
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, BadPattern> {
    let tokens = tokenize(pattern)?;
    let name: Vec<char> = name.chars().collect();
    Ok(matches_from(&tokens, &name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_path_match_table() {
        // (pattern, name, expected) in the spirit of Go's own path.Match table.
        let table: &[(&str, &str, bool)] = &[
            ("abc", "abc", true),
            ("*", "abc", true),
            ("*c", "abc", true),
            ("a*", "a", true),
            ("a*", "abc", true),
            ("a*", "ab/c", false),
            ("a*/b", "abc/b", true),
            ("a*/b", "a/c/b", false),
            ("a*b*c*d*e*/f", "axbxcxdxe/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/f", true),
            ("a*b*c*d*e*/f", "axbxcxdxe/xxx/f", false),
            ("a*b*c*d*e*/f", "axbxcxdxexxx/fff", false),
            ("a*b?c*x", "abxbbxdbxebxczzx", true),
            ("a*b?c*x", "abxbbxdbxebxczzy", false),
            ("ab[c]", "abc", true),
            ("ab[b-d]", "abc", true),
            ("ab[e-g]", "abc", false),
            ("ab[^c]", "abc", false),
            ("ab[^b-d]", "abc", false),
            ("ab[^e-g]", "abc", true),
            ("a\\*b", "a*b", true),
            ("a\\*b", "ab", false),
            ("a?b", "a☺b", true),
            ("a[^a]b", "a☺b", true),
            ("a???b", "a☺b", false),
            ("a[^a][^a][^a]b", "a☺b", false),
            ("[a-ζ]*", "α", true),
            ("*[a-ζ]", "A", false),
            ("a?b", "a/b", false),
            ("a*b", "a/b", false),
            ("[\\]a]", "]", true),
            ("[\\-]", "-", true),
            ("[x\\-]", "x", true),
            ("[x\\-]", "-", true),
            ("[x\\-]", "z", false),
            ("[\\-x]", "a", false),
            ("*x", "xxx", true),
            ("gpt-4o*", "gpt-4o-2024-08-06", true),
            ("claude-*-4-5*", "claude-sonnet-4-5-20250929", true),
            ("openai/*", "openai/gpt-5", true),
            ("*", "openai/gpt-5", false),
            ("", "", true),
            ("", "x", false),
            ("**", "abc", true),
        ];
        for (p, n, want) in table {
            assert_eq!(glob_match(p, n), Ok(*want), "pattern {p:?} name {n:?}");
        }
    }

    #[test]
    fn bad_patterns_are_errors() {
        for p in [
            "[", "[^", "[^bc", "a[", "[]a]", "[-]", "[x-]", "[-x]", "\\", "[a-b-c]", "[z-a]", "[\\",
        ] {
            assert!(
                glob_match(p, "anything").is_err(),
                "{p:?} should be rejected"
            );
            assert!(check_pattern(p).is_err(), "{p:?}");
        }
        assert!(check_pattern("gpt-*-[0-9]").is_ok());
    }
}
