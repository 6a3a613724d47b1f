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

use iris_providers::json_text::decode_escape;
use iris_providers::{ChatOpening, SessionParts};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::headers::HeaderList;

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

fn header<'a>(headers: &'a HeaderList, name: &str) -> Option<&'a str> {
    headers.get(name).map(str::trim).filter(|v| !v.is_empty())
}

/// The session a request belongs to (see the module docs). `caller_identity` is who is calling
/// (the login, tag set or key id); `request_id` is used for a one-request session.
pub fn session_key(
    api_family: &str,
    request_headers: &HeaderList,
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
    request_headers: &HeaderList,
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

/// [`session_key`] from the raw request body, in one pass over it: the `metadata` and
/// `prompt_cache_key` fields and, for OpenAI chat, the roles and raw `content` of the messages up
/// to the first user message (`iris_providers::session_parts`); everything else is skipped
/// (validated, not built). Agent requests carry hundreds of kilobytes of tools and history;
/// building a whole `serde_json::Value` of them per request would cost more than everything else
/// the gateway does. A body that is not a JSON object gives the same answer as `Value::Null`.
pub fn session_key_from_body(
    api_family: &str,
    request_headers: &HeaderList,
    request_body: &[u8],
    caller_identity: &str,
    request_id: &str,
) -> SessionKey {
    let parts = iris_providers::session_parts(request_body);
    session_key_from_parts(
        api_family,
        request_headers,
        request_body,
        parts.as_ref(),
        caller_identity,
        request_id,
        None,
    )
}

/// [`session_key`] from where the request peek found the session fields in `request_body`
/// (`parts`; `None` for a body that is not a JSON object): the body is not parsed again. With a
/// `cache`, fingerprints are remembered: every turn of a chat resends its opening, whose
/// fingerprint is then found by a fast hash of the opening's raw JSON instead of decoded,
/// collapsed and hashed again.
pub fn session_key_from_parts(
    api_family: &str,
    request_headers: &HeaderList,
    request_body: &[u8],
    parts: Option<&SessionParts>,
    caller_identity: &str,
    request_id: &str,
    cache: Option<&mut FingerprintCache>,
) -> SessionKey {
    let ids = parts.map_or(Value::Null, |p| ids(request_body, p));
    decide(api_family, request_headers, &ids, request_id, || {
        let opening = Opening::new(request_body, parts?.opening.as_ref()?);
        match cache {
            Some(cache) => opening.fingerprint_cached(caller_identity, cache),
            None => opening.fingerprint(caller_identity),
        }
    })
}

/// The JSON text of `range` in `body` (a value the peek delimited).
fn slice<'a>(body: &'a [u8], range: &std::ops::Range<usize>) -> Option<&'a str> {
    std::str::from_utf8(body.get(range.clone())?).ok()
}

/// The fields the client ids come from, as the object [`claude_code_session`] and
/// [`codex_session`] read (small: most requests have neither).
fn ids(body: &[u8], parts: &SessionParts) -> Value {
    if parts.metadata.is_none() && parts.prompt_cache_key.is_none() {
        // What the readers see for an object without either field.
        return Value::Null;
    }
    let mut out = serde_json::Map::new();
    for (name, range) in [
        ("metadata", &parts.metadata),
        ("prompt_cache_key", &parts.prompt_cache_key),
    ] {
        if let Some(text) = range.as_ref().and_then(|r| slice(body, r))
            && let Ok(v) = serde_json::from_str::<Value>(text)
        {
            out.insert(name.into(), v);
        }
    }
    Value::Object(out)
}

/// Fingerprints of chat openings already worked out, by a 128-bit XXH3 of the caller and the
/// opening's raw JSON (XXH3 reads gigabytes a second; decoding, collapsing and SHA-256 of a coding
/// agent's 64 KiB opening took most of the observer's time for such a request). The caller is
/// kept and compared too. Bounded: two generations of at most `max` entries each; when the
/// current one is full it becomes the previous one, and a hit in the previous one moves back.
/// Pure: no clock, no IO; one per observer.
pub struct FingerprintCache {
    current: std::collections::HashMap<u128, CachedFingerprint>,
    previous: std::collections::HashMap<u128, CachedFingerprint>,
    max: usize,
    hits: u64,
}

struct CachedFingerprint {
    caller: String,
    fingerprint: String,
}

impl FingerprintCache {
    pub fn new(max: usize) -> FingerprintCache {
        FingerprintCache {
            current: Default::default(),
            previous: Default::default(),
            max: max.max(1),
            hits: 0,
        }
    }

    /// Lookups answered from the cache so far.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Entries held (both generations).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&mut self, key: u128, caller: &str) -> Option<String> {
        if let Some(c) = self.current.get(&key) {
            let hit = (c.caller == caller).then(|| c.fingerprint.clone());
            self.hits += u64::from(hit.is_some());
            return hit;
        }
        let c = self.previous.remove(&key)?;
        if c.caller != caller {
            return None;
        }
        self.hits += 1;
        let fingerprint = c.fingerprint.clone();
        self.insert(key, c);
        Some(fingerprint)
    }

    fn insert(&mut self, key: u128, entry: CachedFingerprint) {
        if self.current.len() >= self.max {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, entry);
    }
}

/// A chat's opening (see `iris_providers::ChatOpening`), its contents as raw JSON bytes (made
/// text only when a fingerprint is worked out: a cache hit reads each byte once, in XXH3).
struct Opening<'a> {
    system: Vec<Option<&'a [u8]>>,
    /// `Some` once the first user message was seen (`Some(None)`: it has no `content`).
    first_user: Option<Option<&'a [u8]>>,
}

impl<'a> Opening<'a> {
    fn new(body: &'a [u8], o: &ChatOpening) -> Opening<'a> {
        Opening {
            system: o
                .system
                .iter()
                .map(|c| c.as_ref().and_then(|r| body.get(r.clone())))
                .collect(),
            first_user: o
                .first_user
                .as_ref()
                .map(|c| c.as_ref().and_then(|r| body.get(r.clone()))),
        }
    }

    fn fingerprint_cached(
        &self,
        caller_identity: &str,
        cache: &mut FingerprintCache,
    ) -> Option<String> {
        self.first_user?;
        let key = self.cache_key(caller_identity);
        if let Some(fp) = cache.get(key, caller_identity) {
            return Some(fp);
        }
        let fingerprint = self.fingerprint(caller_identity)?;
        cache.insert(
            key,
            CachedFingerprint {
                caller: caller_identity.to_owned(),
                fingerprint: fingerprint.clone(),
            },
        );
        Some(fingerprint)
    }

    /// XXH3-128 of the caller and the raw contents, each length-prefixed (an absent content
    /// has its own marker), so different openings never share a key by concatenation.
    fn cache_key(&self, caller_identity: &str) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3Default::new();
        h.update(b"iris-opening-v1\0");
        let mut part = |bytes: Option<&[u8]>| match bytes {
            Some(b) => {
                h.update(&(b.len() as u64).to_le_bytes());
                h.update(b);
            }
            None => h.update(&u64::MAX.to_le_bytes()),
        };
        part(Some(caller_identity.as_bytes()));
        part(Some(&(self.system.len() as u64).to_le_bytes()));
        for content in &self.system {
            part(*content);
        }
        part(self.first_user.flatten());
        h.digest128()
    }

    fn fingerprint(&self, caller_identity: &str) -> Option<String> {
        let first_user = self.first_user?;
        let mut system = String::new();
        for (i, content) in self.system.iter().enumerate() {
            if i > 0 {
                system.push('\n');
            }
            system.push_str(&content.map(raw_content).unwrap_or_default());
        }
        let first_user = first_user.map(raw_content).unwrap_or_default();
        Some(fingerprint(caller_identity, &system, &first_user))
    }
}

/// A message's normalised `content` from its raw JSON: a string decoded and collapsed in one
/// pass, anything else through [`normalised_content`].
fn raw_content(raw: &[u8]) -> String {
    let Ok(text) = std::str::from_utf8(raw) else {
        return String::new();
    };
    if text.starts_with('"') {
        return collapse_json_string(text).unwrap_or_default();
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => normalised_content(Some(&v)),
        Err(_) => String::new(),
    }
}

/// [`collapse_whitespace`] of the text of a JSON string literal (`"..."`, as it stands in a
/// document that has been validated), decoding its escapes on the way: one pass and one
/// allocation, where decoding first and collapsing after took two of each (a conversation's
/// opening can be a hundred kilobytes of code, full of `\n` and `\"`). `None` for what JSON does
/// not allow in a string, a lone surrogate escape among them (`serde_json` refuses those too).
fn collapse_json_string(literal: &str) -> Option<String> {
    let inner = literal.strip_prefix('"')?.strip_suffix('"')?;
    collapse(inner, true)
}

fn claude_code_session(headers: &HeaderList, body: &Value) -> Option<String> {
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

fn looks_like_codex(headers: &HeaderList) -> bool {
    let starts_codex =
        |v: Option<&str>| v.is_some_and(|v| v.to_ascii_lowercase().starts_with("codex"));
    starts_codex(header(headers, "originator"))
        || starts_codex(header(headers, "user-agent"))
        || headers.iter().any(|(n, _)| {
            n.len() > 8
                && n.get(..8)
                    .is_some_and(|p| p.eq_ignore_ascii_case("x-codex-"))
        })
}

fn codex_session(headers: &HeaderList, body: &Value) -> Option<String> {
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
    // Without escapes to decode nothing can be refused.
    collapse(text, false).unwrap_or_default()
}

/// [`collapse_whitespace`] of `text`, or with `json_escapes` of the JSON string body `text`
/// (decoding `\` escapes on the way; `None` for one JSON does not allow).
fn collapse(text: &str, json_escapes: bool) -> Option<String> {
    let bytes = text.as_bytes();
    // Decoding never lengthens: an escape is longer than what it stands for.
    let mut out = vec![0u8; bytes.len()];
    let mut len = 0;
    // True at the start, so leading whitespace is dropped.
    let mut in_space = true;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(json_escapes && b == b'\\')
            && let Some(&space) = ASCII_SPACE.get(usize::from(b))
        {
            out[len] = if space { b' ' } else { b };
            len += usize::from(!(space && in_space));
            in_space = space;
            i += 1;
            continue;
        }
        let (c, n) = if b == b'\\' {
            decode_escape(bytes, i)?
        } else {
            // `i` is at a character boundary: it moves by whole characters and escapes.
            let c = text.get(i..)?.chars().next()?;
            (c, c.len_utf8())
        };
        if c.is_whitespace() {
            if !in_space {
                out[len] = b' ';
                len += 1;
            }
            in_space = true;
        } else {
            len += c.encode_utf8(&mut out[len..]).len();
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
    String::from_utf8(out).ok()
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
        let key = |body: &Value| {
            session_key(
                "anthropic_messages",
                &HeaderList::new(),
                body,
                "alice",
                "r1",
            )
        };
        let k = key(
            &json!({"metadata": {"user_id": "user_0a1b2c_account__session_6f1c2d3e-aaaa-bbbb-cccc-1234567890ab"}}),
        );
        assert_eq!(k.id, "cc_6f1c2d3e-aaaa-bbbb-cccc-1234567890ab");
        assert_eq!(k.kind, SessionKind::ClaudeCode);
        // A plain user id from another Anthropic client is not a session.
        let k = key(&json!({"metadata": {"user_id": "alice-42"}}));
        assert_eq!(
            k,
            SessionKey {
                id: "rq_r1".into(),
                kind: SessionKind::Single
            }
        );
        // Malformed JSON in user_id falls through to the header.
        let body = json!({"metadata": {"user_id": "{\"session_id\": "}});
        let hdr = HeaderList::from_iter([("X-Claude-Code-Session-Id", "hdr-1")]);
        assert_eq!(
            session_key("anthropic_messages", &hdr, &body, "alice", "r1").id,
            "cc_hdr-1"
        );
    }

    #[test]
    fn prompt_cache_key_needs_codex_markers() {
        let body = json!({"prompt_cache_key": "shared-key", "messages": [{"role": "user", "content": "hi"}]});
        let k = session_key("openai_responses", &HeaderList::new(), &body, "alice", "r9");
        assert_eq!(k.id, "rq_r9");
        let hdr = HeaderList::from_iter([("originator", "codex_cli_rs")]);
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
        let k = session_key(
            "openai_embeddings",
            &HeaderList::new(),
            &json!({}),
            "a",
            "req/../x",
        );
        assert_eq!(k.kind, SessionKind::Single);
        assert!(k.id.starts_with("rq_h"));
        assert!(k.id[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn from_body_bytes_matches_the_whole_value() {
        let headers: HeaderList = [("originator", "codex_cli_rs")].into_iter().collect();
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
            for hdrs in [&HeaderList::new(), &headers] {
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
        let top_twice = br#"{"messages":"no","metadata":{"user_id":"a_session_1"},"messages":[{"role":"user","content":"x"}],"metadata":null}"#;
        let odd_roles = br#"{"messages":[{"role":"user","role":["x"]},{"role":{"a":1},"content":"c"},{"role":null},{"role":true},{"role":"user","content":[" a ",{"type":"text","text":"b"}]}]}"#;
        for raw in [&twice[..], &escaped[..], &top_twice[..], &odd_roles[..]] {
            let v: Value = serde_json::from_slice(raw).unwrap();
            assert_eq!(
                session_key_from_body("openai_chat", &HeaderList::new(), raw, "alice", "r1"),
                session_key("openai_chat", &HeaderList::new(), &v, "alice", "r1"),
            );
        }
        assert_eq!(
            session_key_from_body("openai_chat", &HeaderList::new(), twice, "alice", "r1").kind,
            SessionKind::Fingerprint
        );
        // Not JSON at all: a one-request session, as with `Value::Null`.
        assert_eq!(
            session_key_from_body("openai_chat", &HeaderList::new(), b"{nope", "alice", "r2").id,
            "rq_r2"
        );
    }

    /// What `collapse_json_string` must equal: `serde_json`'s decoding of the literal, collapsed
    /// (and nothing where `serde_json` refuses the literal).
    fn decode_then_collapse(literal: &str) -> Option<String> {
        serde_json::from_str::<String>(literal)
            .ok()
            .map(|s| collapse_whitespace(&s))
    }

    #[test]
    fn a_json_string_is_decoded_and_collapsed_in_one_pass_like_serde_json_then_collapse() {
        let mut literals: Vec<String> = [
            r#""""#,
            r#"" ""#,
            r#""a""#,
            r#""  fn main() {\n    println!(\"hi\");\n}\n""#,
            r#""tab\there\r\nnext\fform\bback\/slash\\end""#,
            r#""\u0041\u00e9\u2003\u3000\u00a0x\u0085y\u200bz""#,
            r#""pair \ud83d\ude00 smile""#,
            r#""caf\u00E9 UPPER \u00C9""#,
            "\"raw caf\u{e9} \u{2003} \u{1f600} \u{a0}\"",
            r#""\u0020\u0009lead and trail\u000a\u000d""#,
            // What serde_json refuses: lone surrogates, a pair cut short, bad escapes.
            r#""lone \ud800 high""#,
            r#""lone \udc00 low""#,
            r#""high then text \ud83dx""#,
            r#""high then bad \ud83d\u0041""#,
            r#""bad \x escape""#,
            r#""short \u12""#,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Generated strings: every kind of piece, in a fixed pseudo-random order.
        let pieces = [
            "a",
            "Z",
            " ",
            "  ",
            "\\n",
            "\\t",
            "\\r",
            "\\f",
            "\\b",
            "\\\"",
            "\\\\",
            "\\/",
            "\\u0020",
            "\\u00a0",
            "\\u2028",
            "\\u3000",
            "\\u0041",
            "\\ud83d\\ude00",
            "\\ud800",
            "\\udfff",
            "\u{e9}",
            "\u{2003}",
            "\u{1f600}",
            "\u{85}",
            "x y",
            "\\u000b",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut lit = String::from("\"");
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let n = (seed % 12) as usize;
            for k in 0..n {
                let r = seed.rotate_left((k * 5) as u32);
                lit.push_str(pieces[(r % pieces.len() as u64) as usize]);
            }
            lit.push('"');
            literals.push(lit);
        }
        for lit in &literals {
            assert_eq!(
                collapse_json_string(lit),
                decode_then_collapse(lit),
                "{lit}"
            );
        }
        assert_eq!(collapse_json_string("not a literal"), None);
    }

    /// The cache answers exactly what the fingerprint would, per caller, and stays bounded.
    #[test]
    fn cached_fingerprints_are_the_fingerprints() {
        let bodies: Vec<Vec<u8>> = [
            json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a  b"}]}),
            json!({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a b"}]}),
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}),
            json!({"messages": [{"role": "user"}]}),
            json!({"messages": [{"role": "system"}, {"role": "user", "content": "s"}]}),
            json!({"messages": [{"role": "user", "content": "s"}]}),
            json!({"messages": [{"role": "assistant", "content": "no user"}]}),
            json!({"metadata": {"user_id": "u_session_abc"}, "messages": [{"role": "user", "content": "m"}]}),
        ]
        .iter()
        .map(|b| serde_json::to_vec(b).unwrap())
        .collect();
        let mut cache = FingerprintCache::new(64);
        for round in 0..2 {
            for body in &bodies {
                for caller in ["alice", "bob"] {
                    let plain = session_key_from_body(
                        "openai_chat",
                        &HeaderList::new(),
                        body,
                        caller,
                        "r1",
                    );
                    let parts = iris_providers::session_parts(body);
                    let cached = session_key_from_parts(
                        "openai_chat",
                        &HeaderList::new(),
                        body,
                        parts.as_ref(),
                        caller,
                        "r1",
                        Some(&mut cache),
                    );
                    assert_eq!(cached, plain, "round {round} {caller}");
                }
            }
        }
        // Six bodies have a fingerprint, for two callers: the second round found them all.
        assert_eq!(cache.hits(), 12);
        assert_eq!(cache.len(), 12);
        // Whitespace variants share a fingerprint but not a cache entry; callers share neither.
        let k = |b: &[u8], c: &str| {
            session_key_from_body("openai_chat", &HeaderList::new(), b, c, "r").id
        };
        assert_eq!(k(&bodies[0], "alice"), k(&bodies[1], "alice"));
        assert_ne!(k(&bodies[0], "alice"), k(&bodies[0], "bob"));
        // A system message without content reads as no system text (the fingerprint's own
        // definition); the two openings have keys of their own and agree.
        assert_eq!(k(&bodies[4], "alice"), k(&bodies[5], "alice"));

        let mut small = FingerprintCache::new(2);
        for i in 0..10 {
            let body = serde_json::to_vec(
                &json!({"messages": [{"role": "user", "content": i.to_string()}]}),
            )
            .unwrap();
            let parts = iris_providers::session_parts(&body);
            session_key_from_parts(
                "openai_chat",
                &HeaderList::new(),
                &body,
                parts.as_ref(),
                "alice",
                "r",
                Some(&mut small),
            );
            assert!(small.len() <= 4, "{}", small.len());
        }
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
