//! Grouping requests into sessions, the way each client makes that possible.
//!
//! In order:
//! 1. **Claude Code** (`cc_…`): the `session_id` inside the request body's `metadata.user_id`,
//!    which is a JSON-encoded string (`{"device_id":…,"account_uuid":…,"session_id":"<uuid>"}`);
//!    older clients wrote `user_<hash>_account_<uuid>_session_<uuid>` (the part after
//!    `_session_` is taken); else the `X-Claude-Code-Session-Id` header.
//! 2. **Codex** (`cx_…`): the `session-id` header; else `session_id` in the
//!    `x-codex-turn-metadata` header's JSON; else the body's `prompt_cache_key`, but only when
//!    the request otherwise looks like Codex (an `originator` or `user-agent` starting with
//!    `codex`, or an `x-codex-*` header): other clients use `prompt_cache_key` for caching
//!    only, possibly one value for everyone.
//! 3. **Fingerprint** (`fp_…`), OpenAI chat only: every turn of a chat resends the whole
//!    conversation, so its beginning identifies it. SHA-256 over the caller's identity, the
//!    system/developer messages that come before the first user message, and that first user
//!    message; each message's text is normalised (text parts joined with a newline, other parts
//!    as `[type]` or `[image:<url>]`, whitespace runs collapsed, trimmed). The model is not part
//!    of it, so switching models mid-conversation keeps the session. Two people sending the same
//!    opening never share a session. First 128 bits, hex.
//! 4. **Single** (`rq_…`): the request's own id.
//!
//! Client-supplied ids are kept as they are when they are 1–128 characters of
//! `[A-Za-z0-9._:-]`; anything else is replaced by a hash of it, so ids are always safe in a
//! URL path.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// How a session id was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    ClaudeCode,
    Codex,
    Fingerprint,
    Single,
}

impl SessionKind {
    /// The API name: `claude_code`, `codex`, `fingerprint`, `single`.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::ClaudeCode => "claude_code",
            SessionKind::Codex => "codex",
            SessionKind::Fingerprint => "fingerprint",
            SessionKind::Single => "single",
        }
    }

    /// The id prefix: `cc_`, `cx_`, `fp_`, `rq_`.
    pub fn prefix(self) -> &'static str {
        match self {
            SessionKind::ClaudeCode => "cc_",
            SessionKind::Codex => "cx_",
            SessionKind::Fingerprint => "fp_",
            SessionKind::Single => "rq_",
        }
    }
}

/// A session id (prefixed by kind) and its kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionKey {
    pub id: String,
    pub kind: SessionKind,
}

impl SessionKey {
    fn new(kind: SessionKind, raw: &str) -> Self {
        SessionKey {
            id: {
                let mut id = String::with_capacity(kind.prefix().len() + raw.len().min(33));
                id.push_str(kind.prefix());
                push_safe_id(&mut id, raw);
                id
            },
            kind,
        }
    }
}

const MAX_ID_LEN: usize = 128;

#[cfg(test)]
fn safe_id(raw: &str) -> String {
    let mut out = String::new();
    push_safe_id(&mut out, raw);
    out
}

/// `raw` when it is a safe id, else `h` and a hash of it.
fn push_safe_id(out: &mut String, raw: &str) {
    let ok = (1..=MAX_ID_LEN).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    if ok {
        out.push_str(raw);
    } else {
        out.push('h');
        out.push_str(&hex::encode(&Sha256::digest(raw.as_bytes())[..16]));
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The session a request belongs to (see the module docs). `caller_identity` is who is calling
/// (the login, tag set or key id); `request_id` is used for a one-request session.
pub fn session_key(
    api_family: &str,
    request_headers: &[(String, String)],
    request_body: &Value,
    caller_identity: &str,
    request_id: &str,
) -> SessionKey {
    decide(
        api_family,
        request_headers,
        request_body,
        request_id,
        || chat_fingerprint(request_body, caller_identity),
    )
}

/// The order of the module docs; `fingerprint` is asked only for OpenAI chat, and only when
/// neither client id is there.
fn decide(
    api_family: &str,
    request_headers: &[(String, String)],
    ids: &Value,
    request_id: &str,
    fingerprint: impl FnOnce() -> Option<String>,
) -> SessionKey {
    if let Some(id) = claude_code_session(request_headers, ids) {
        return SessionKey::new(SessionKind::ClaudeCode, &id);
    }
    if let Some(id) = codex_session(request_headers, ids) {
        return SessionKey::new(SessionKind::Codex, &id);
    }
    if api_family == "openai_chat"
        && let Some(fp) = fingerprint()
    {
        return SessionKey {
            id: [SessionKind::Fingerprint.prefix(), &fp].concat(),
            kind: SessionKind::Fingerprint,
        };
    }
    SessionKey::new(SessionKind::Single, request_id)
}

/// Whether [`session_key`] reads this request header (lowercase name). The request path keeps
/// only these when captures are off.
pub fn is_session_header(name: &str) -> bool {
    matches!(
        name,
        "x-claude-code-session-id"
            | "session-id"
            | "x-codex-turn-metadata"
            | "originator"
            | "user-agent"
    ) || name.starts_with("x-codex-")
}

/// [`session_key`] from the raw request body, parsing only what session detection reads: the
/// `metadata` and `prompt_cache_key` fields and, for OpenAI chat, the messages up to the first
/// user message. Agent requests carry hundreds of kilobytes of tools and history; building a
/// whole `serde_json::Value` of them per request would cost more than everything else the
/// gateway does. A body that is not a JSON object gives the same answer as `Value::Null`.
pub fn session_key_from_body(
    api_family: &str,
    request_headers: &[(String, String)],
    request_body: &[u8],
    caller_identity: &str,
    request_id: &str,
) -> SessionKey {
    let fields = serde_json::from_slice::<SessionFields<'_>>(request_body).ok();
    let ids = fields.as_ref().map_or(Value::Null, SessionFields::ids);
    decide(api_family, request_headers, &ids, request_id, || {
        chat_fingerprint_raw(fields.as_ref()?.messages?, caller_identity)
    })
}

#[derive(Deserialize)]
struct SessionFields<'a> {
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow, default)]
    prompt_cache_key: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
}

impl SessionFields<'_> {
    /// The fields the client ids come from, as the object [`claude_code_session`] and
    /// [`codex_session`] read (small: most requests have neither).
    fn ids(&self) -> Value {
        if self.metadata.is_none() && self.prompt_cache_key.is_none() {
            // What the readers see for an object without either field.
            return Value::Null;
        }
        let mut out = serde_json::Map::new();
        for (name, raw) in [
            ("metadata", self.metadata),
            ("prompt_cache_key", self.prompt_cache_key),
        ] {
            if let Some(raw) = raw
                && let Ok(v) = serde_json::from_str::<Value>(raw.get())
            {
                out.insert(name.into(), v);
            }
        }
        Value::Object(out)
    }
}

/// A chat message as the fingerprint reads it, borrowed from the body. One that does not fit
/// (a role that is not a string, a repeated key) is read as a `Value` instead, so both paths
/// give the same answer.
#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

/// [`chat_fingerprint`] over the raw `messages`, building no `Value` for the usual message (a
/// string role and a string content).
fn chat_fingerprint_raw(messages: &RawValue, caller_identity: &str) -> Option<String> {
    // Usually every message fits: one pass over the history. Otherwise message by message.
    let messages: Vec<Message<'_>> =
        match serde_json::from_str::<Vec<RawMessage<'_>>>(messages.get()) {
            Ok(all) => all.into_iter().map(Message::Raw).collect(),
            Err(_) => serde_json::from_str::<Vec<&RawValue>>(messages.get())
                .ok()?
                .into_iter()
                .filter_map(
                    |raw| match serde_json::from_str::<RawMessage<'_>>(raw.get()) {
                        Ok(m) => Some(Message::Raw(m)),
                        // Not an object with a string role (or a key given twice): as the `Value`
                        // path.
                        Err(_) => serde_json::from_str::<Value>(raw.get())
                            .ok()
                            .map(Message::Value),
                    },
                )
                .collect(),
        };
    let mut system = String::new();
    let mut any_system = false;
    for message in messages {
        match message.role() {
            Some("system" | "developer") => {
                if any_system {
                    system.push('\n');
                }
                any_system = true;
                system.push_str(&message.content());
            }
            Some("user") => {
                return Some(fingerprint(caller_identity, &system, &message.content()));
            }
            _ => {}
        }
    }
    None
}

enum Message<'a> {
    Raw(RawMessage<'a>),
    Value(Value),
}

impl Message<'_> {
    fn role(&self) -> Option<&str> {
        match self {
            Message::Raw(m) => m.role.as_deref(),
            Message::Value(v) => v.get("role").and_then(Value::as_str),
        }
    }

    fn content(&self) -> String {
        match self {
            Message::Raw(m) => m.content.map(raw_content).unwrap_or_default(),
            Message::Value(v) => normalised_content(v.get("content")),
        }
    }
}

/// A message's normalised `content` from its raw JSON: a string directly, anything else through
/// [`normalised_content`].
fn raw_content(raw: &RawValue) -> String {
    let text = raw.get();
    if text.starts_with('"')
        && let Ok(s) = serde_json::from_str::<Cow<'_, str>>(text)
    {
        return collapse_whitespace(&s);
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => normalised_content(Some(&v)),
        Err(_) => String::new(),
    }
}

fn claude_code_session(headers: &[(String, String)], body: &Value) -> Option<String> {
    let from_body = body
        .get("metadata")
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
        .and_then(|user_id| {
            let trimmed = user_id.trim();
            if trimmed.starts_with('{') {
                let inner: Value = serde_json::from_str(trimmed).ok()?;
                inner
                    .get("session_id")
                    .and_then(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            } else {
                trimmed
                    .rsplit_once("_session_")
                    .map(|(_, s)| s.trim())
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
            }
        });
    from_body.or_else(|| header(headers, "x-claude-code-session-id").map(str::to_owned))
}

fn looks_like_codex(headers: &[(String, String)]) -> bool {
    let starts_codex =
        |v: Option<&str>| v.is_some_and(|v| v.to_ascii_lowercase().starts_with("codex"));
    starts_codex(header(headers, "originator"))
        || starts_codex(header(headers, "user-agent"))
        || headers
            .iter()
            .any(|(n, _)| n.len() > 8 && n[..8].eq_ignore_ascii_case("x-codex-"))
}

fn codex_session(headers: &[(String, String)], body: &Value) -> Option<String> {
    if let Some(id) = header(headers, "session-id") {
        return Some(id.to_owned());
    }
    if let Some(meta) = header(headers, "x-codex-turn-metadata")
        && let Ok(v) = serde_json::from_str::<Value>(meta)
        && let Some(id) = v
            .get("session_id")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    {
        return Some(id.to_owned());
    }
    if looks_like_codex(headers) {
        return body
            .get("prompt_cache_key")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
    }
    None
}

/// The normalised text of a chat message's `content`.
fn normalised_content(content: Option<&Value>) -> String {
    let mut raw = String::new();
    match content {
        Some(Value::String(s)) => raw.push_str(s),
        Some(Value::Array(parts)) => {
            for p in parts {
                if !raw.is_empty() {
                    raw.push('\n');
                }
                match p {
                    Value::String(s) => raw.push_str(s),
                    _ => match p.get("type").and_then(Value::as_str).unwrap_or("") {
                        "text" | "input_text" => {
                            raw.push_str(p.get("text").and_then(Value::as_str).unwrap_or(""));
                        }
                        "image_url" => {
                            let url = p
                                .get("image_url")
                                .and_then(|u| u.get("url").or(Some(u)))
                                .and_then(Value::as_str)
                                .unwrap_or("");
                            raw.push_str("[image:");
                            raw.push_str(url);
                            raw.push(']');
                        }
                        other => {
                            raw.push('[');
                            raw.push_str(other);
                            raw.push(']');
                        }
                    },
                }
            }
        }
        _ => {}
    }
    collapse_whitespace(&raw)
}

/// `char::is_whitespace` for ASCII: space, \t, \n, vertical tab, form feed, \r.
static ASCII_SPACE: [bool; 128] = {
    let mut t = [false; 128];
    t[b' ' as usize] = true;
    let mut b = b'\t' as usize;
    while b <= b'\r' as usize {
        t[b] = true;
        b += 1;
    }
    t
};

/// Whitespace runs (as `char::is_whitespace` defines it) become one space; the ends are trimmed.
/// The same as joining `split_whitespace` with spaces, but without a branch per word in ASCII
/// text (every byte is written, and the write position moves on unless it is a second
/// whitespace in a row): a conversation's opening can be a hundred kilobytes of code, and this
/// was the observer's largest cost for such requests (~30% less time for 64 KiB of code).
fn collapse_whitespace(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = vec![0u8; bytes.len()];
    let mut len = 0;
    // True at the start, so leading whitespace is dropped.
    let mut in_space = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(&space) = ASCII_SPACE.get(usize::from(b)) {
            out[len] = if space { b' ' } else { b };
            len += usize::from(!(space && in_space));
            in_space = space;
            i += 1;
            continue;
        }
        // `i` is always at a character boundary: it moves by whole characters.
        let Some(c) = text.get(i..).and_then(|rest| rest.chars().next()) else {
            break;
        };
        let n = c.len_utf8();
        if c.is_whitespace() {
            if !in_space {
                out[len] = b' ';
                len += 1;
            }
            in_space = true;
        } else {
            out[len..len + n].copy_from_slice(&bytes[i..i + n]);
            len += n;
            in_space = false;
        }
        i += n;
    }
    // A trailing run wrote one space (a leading-only run wrote nothing).
    if in_space && len > 0 {
        len -= 1;
    }
    out.truncate(len);
    // Whole characters and ASCII spaces only: always UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

fn chat_fingerprint(body: &Value, caller_identity: &str) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    let mut system = Vec::new();
    let mut first_user = None;
    for m in messages {
        match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => system.push(normalised_content(m.get("content"))),
            Some("user") => {
                first_user = Some(normalised_content(m.get("content")));
                break;
            }
            _ => {}
        }
    }
    let first_user = first_user?;
    Some(fingerprint(
        caller_identity,
        &system.join("\n"),
        &first_user,
    ))
}

/// SHA-256 over the caller and the conversation's opening (each part length-prefixed), the
/// first 128 bits in hex.
fn fingerprint(caller_identity: &str, system: &str, first_user: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"iris-session-fingerprint-v1\0");
    for part in [caller_identity, system, first_user] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_url_safe() {
        assert_eq!(safe_id("d21b5422-124d-4bc9"), "d21b5422-124d-4bc9");
        assert_eq!(safe_id("a/b").len(), 33);
        assert!(safe_id("a/b").starts_with('h'));
        assert_eq!(safe_id(&"x".repeat(129)).len(), 33);
        assert_eq!(safe_id(""), safe_id(""));
        assert_ne!(safe_id("a b"), safe_id("a c"));
    }

    #[test]
    fn legacy_claude_code_user_id() {
        let body = json!({"metadata": {"user_id": "user_0a1b2c_account__session_6f1c2d3e-aaaa-bbbb-cccc-1234567890ab"}});
        let k = session_key("anthropic_messages", &[], &body, "alice", "r1");
        assert_eq!(k.id, "cc_6f1c2d3e-aaaa-bbbb-cccc-1234567890ab");
        assert_eq!(k.kind, SessionKind::ClaudeCode);
        // A plain user id from another Anthropic client is not a session.
        let body = json!({"metadata": {"user_id": "alice-42"}});
        let k = session_key("anthropic_messages", &[], &body, "alice", "r1");
        assert_eq!(
            k,
            SessionKey {
                id: "rq_r1".into(),
                kind: SessionKind::Single
            }
        );
        // Malformed JSON in user_id falls through to the header.
        let body = json!({"metadata": {"user_id": "{\"session_id\": "}});
        let hdr = vec![("X-Claude-Code-Session-Id".to_owned(), "hdr-1".to_owned())];
        assert_eq!(
            session_key("anthropic_messages", &hdr, &body, "alice", "r1").id,
            "cc_hdr-1"
        );
    }

    #[test]
    fn prompt_cache_key_needs_codex_markers() {
        let body = json!({"prompt_cache_key": "shared-key", "messages": [{"role": "user", "content": "hi"}]});
        let k = session_key("openai_responses", &[], &body, "alice", "r9");
        assert_eq!(k.id, "rq_r9");
        let hdr = vec![("originator".to_owned(), "codex_cli_rs".to_owned())];
        let k = session_key("openai_responses", &hdr, &body, "alice", "r9");
        assert_eq!(
            k,
            SessionKey {
                id: "cx_shared-key".into(),
                kind: SessionKind::Codex
            }
        );
    }

    #[test]
    fn single_request_ids_are_sanitised() {
        let k = session_key("openai_embeddings", &[], &json!({}), "a", "req/../x");
        assert_eq!(k.kind, SessionKind::Single);
        assert!(k.id.starts_with("rq_h"));
        assert!(k.id[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn from_body_bytes_matches_the_whole_value() {
        let headers = [("originator".to_owned(), "codex_cli_rs".to_owned())];
        let bodies = [
            json!({"metadata": {"user_id": "{\"session_id\":\"s-1\"}"}, "tools": [{"name": "x"}]}),
            json!({"prompt_cache_key": "pk-7", "input": "hi"}),
            json!({"model": "m", "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hello   there"}]},
                {"role": "assistant", "content": "hi"},
                {"role": "user", "content": "more"}
            ]}),
            json!({"messages": [{"role": "assistant", "content": "no user"}]}),
            json!([1, 2]),
            json!("text"),
            json!({"metadata": {"user_id": "u_session_abc"}, "messages": "not a list"}),
            // The fingerprint's fast path and its fallbacks.
            json!({"messages": [
                {"role": "developer", "content": " rules\n\t here "},
                {"role": "system", "content": null},
                {"role": "system"},
                {"role": 7, "content": "role is not a string"},
                "not an object",
                {"role": "assistant", "content": [{"type": "text", "text": "skipped"}]},
                {"role": "user", "content": "caf\u{e9}\u{2003} \"quoted\"  \u{a0}end"}
            ]}),
            json!({"messages": [
                {"role": "user", "content": [
                    "bare string part",
                    {"type": "input_text", "text": "a"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    {"type": "image_url", "image_url": "data:inline"},
                    {"type": "audio"},
                    {"text": "no type"}
                ]}
            ]}),
            json!({"messages": [{"role": "user", "content": 42}]}),
            json!({"messages": [{"role": "user"}]}),
            json!({"messages": []}),
        ];
        for family in ["openai_chat", "openai_responses", "anthropic_messages"] {
            for hdrs in [&[][..], &headers[..]] {
                for b in &bodies {
                    let bytes = serde_json::to_vec(b).unwrap();
                    assert_eq!(
                        session_key_from_body(family, hdrs, &bytes, "alice", "r1"),
                        session_key(family, hdrs, b, "alice", "r1"),
                        "{family} {b}"
                    );
                }
            }
        }
        // A key given twice (the last one counts, as in a `Value`), and JSON escapes.
        let twice =
            br#"{"messages":[{"role":"system","role":"user","content":"a","content":"b"}]}"#;
        let escaped = br#"{"messages":[{"role":"us\u0065r","content":"x\u2003\ty \"z\""}]}"#;
        for raw in [&twice[..], &escaped[..]] {
            let v: Value = serde_json::from_slice(raw).unwrap();
            assert_eq!(
                session_key_from_body("openai_chat", &[], raw, "alice", "r1"),
                session_key("openai_chat", &[], &v, "alice", "r1"),
            );
        }
        assert_eq!(
            session_key_from_body("openai_chat", &[], twice, "alice", "r1").kind,
            SessionKind::Fingerprint
        );
        // Not JSON at all: a one-request session, as with `Value::Null`.
        assert_eq!(
            session_key_from_body("openai_chat", &[], b"{nope", "alice", "r2").id,
            "rq_r2"
        );
    }

    #[test]
    fn collapsing_whitespace_is_split_whitespace_joined() {
        let unicode_spaces: String = (0..=0x3000u32)
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .collect();
        assert!(unicode_spaces.chars().count() >= 25, "{unicode_spaces:?}");
        let mut cases = vec![
            String::new(),
            " ".into(),
            "a".into(),
            "  a  b\t\nc \r\n".into(),
            "\u{b}v\u{c}f\u{1c}not-space\u{85}nel\u{a0}nbsp".into(),
            "caf\u{e9} na\u{ef}ve \u{1f600}\u{2003}emoji\u{3000}\u{200b}zero-width".into(),
            format!("x{unicode_spaces}y{unicode_spaces}"),
        ];
        // Every whitespace character alone, between words and at the ends.
        for c in unicode_spaces.chars() {
            cases.push(format!("{c}a{c}{c}b{c}"));
        }
        for text in &cases {
            let want = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(collapse_whitespace(text), want, "{text:?}");
        }
    }

    #[test]
    fn kinds_have_api_names() {
        assert_eq!(
            serde_json::to_string(&SessionKind::ClaudeCode).unwrap(),
            "\"claude_code\""
        );
        for k in [
            SessionKind::ClaudeCode,
            SessionKind::Codex,
            SessionKind::Fingerprint,
            SessionKind::Single,
        ] {
            assert_eq!(serde_json::to_value(k).unwrap(), json!(k.as_str()));
        }
    }
}
