//! Redaction of credentials from headers, paths and bodies before anything is stored.
//!
//! Rules:
//! - The values of credential headers ([`SENSITIVE_HEADERS`] plus the caller's extra names,
//!   compared case-insensitively) become `[redacted]`; an auth scheme word is kept
//!   (`Bearer [redacted]`, `Basic [redacted]`).
//! - Everywhere else (other header values, the path and query, bodies, reassembled text), every
//!   occurrence of an iris key (`iris_sk_` followed by URL-safe base64 characters) and of every
//!   caller-supplied secret string (the provider keys) is replaced by `[redacted]`.
//! - Secrets shorter than [`MIN_SECRET_LEN`] bytes are only removed as whole credential-header
//!   values: replacing every occurrence of a 3-letter "key" in a body would destroy the capture
//!   without protecting anything.
//! - When a body was cut (by a size cap), a tail that is the beginning of a secret (at least
//!   [`MIN_PARTIAL_SECRET`] bytes of it) is redacted too, so a cut never leaves half a key.
//! - Query parameters that carry keys by convention ([`SENSITIVE_QUERY_PARAMS`], e.g. Gemini's
//!   `?key=`) are redacted in paths.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use aho_corasick::packed;
use memchr::memmem;

use crate::headers::HeaderList;

/// What a redacted value (or part of one) is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Header names whose values are always redacted (lower case).
pub const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "cookie",
    "set-cookie",
];

/// Query parameter names whose values are redacted in paths (lower case).
pub const SENSITIVE_QUERY_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "api-key",
    "apikey",
    "access_token",
    "token",
];

/// Secrets shorter than this are not searched for inside text (see the module docs).
pub const MIN_SECRET_LEN: usize = 8;
/// The shortest secret prefix redacted at the end of a cut body.
pub const MIN_PARTIAL_SECRET: usize = 4;

const IRIS_KEY_PREFIX: &[u8] = b"iris_sk_";

/// The most secrets the one-pass screen takes (with the iris key prefix, the 64 patterns that
/// aho-corasick's Teddy takes; a test checks it builds with them); a configuration with more
/// screens with one search per secret.
const SCREEN_MAX_SECRETS: usize = 63;

/// The bit of [`Redactor::sensitive_lengths`] for a name `len` bytes long (none from 64 on).
fn length_bit(len: usize) -> u64 {
    if len < 64 { 1 << len } else { 0 }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Redacts credentials; built once per configuration (it precomputes substring searchers).
/// Its `Debug` output never shows the secrets.
#[derive(Clone)]
pub struct Redactor {
    sensitive_headers: Vec<String>,
    /// Bit `n` set when a credential header name is `n` bytes long (for `n` below 64): most
    /// header names are ruled out by their length alone.
    sensitive_lengths: u64,
    /// The secrets searched for inside text: those of at least [`MIN_SECRET_LEN`] bytes (the
    /// shorter ones are only ever whole credential-header values, redacted as such).
    secrets: Vec<memmem::Finder<'static>>,
    iris_finder: memmem::Finder<'static>,
    /// The same needles (every secret of `secrets` and the iris key prefix) in one SIMD
    /// searcher: the screen of [`holds_secret`](Self::holds_secret), one pass over the text
    /// whatever the number of secrets (the finders take one pass each, and give the
    /// positions). `None` where it cannot be built (see [`screen`]): the finders screen then.
    screen: Option<packed::Searcher>,
    max_secret_len: usize,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("sensitive_headers", &self.sensitive_headers)
            .field("secrets", &format_args!("<{} hidden>", self.secrets.len()))
            .finish()
    }
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(std::iter::empty::<&str>())
    }
}

impl Redactor {
    /// A redactor for these secret strings (provider keys, hook keys, ...). Empty strings and
    /// duplicates are ignored.
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.as_ref().as_bytes().to_vec())
            .filter(|s| !s.is_empty())
            .collect();
        list.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        list.dedup();
        let max_secret_len = list
            .iter()
            .map(Vec::len)
            .max()
            .unwrap_or(0)
            .max(IRIS_KEY_PREFIX.len() + 64);
        let secrets: Vec<memmem::Finder<'static>> = list
            .iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .map(|s| memmem::Finder::new(s).into_owned())
            .collect();
        Redactor {
            sensitive_headers: SENSITIVE_HEADERS.iter().map(|s| (*s).to_owned()).collect(),
            sensitive_lengths: SENSITIVE_HEADERS
                .iter()
                .fold(0, |m, h| m | length_bit(h.len())),
            screen: screen(secrets.iter().map(memmem::Finder::needle)),
            secrets,
            iris_finder: memmem::Finder::new(IRIS_KEY_PREFIX).into_owned(),
            max_secret_len,
        }
    }

    /// Also treat these header names (case-insensitive) as credential headers.
    pub fn with_extra_headers<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for n in names {
            let n = n.as_ref().trim().to_ascii_lowercase();
            if !n.is_empty() && !self.sensitive_headers.contains(&n) {
                self.sensitive_lengths |= length_bit(n.len());
                self.sensitive_headers.push(n);
            }
        }
        self
    }

    /// The longest secret (or iris key) this redactor looks for, in bytes. A window this much
    /// longer than a cap is enough to redact a secret that straddles the cap.
    pub fn max_secret_len(&self) -> usize {
        self.max_secret_len
    }

    /// Whether `name` is a credential header (its whole value is redacted).
    pub fn is_sensitive_header(&self, name: &str) -> bool {
        // Header names are ASCII; `trim` would look for Unicode spaces too.
        let name = name.trim_ascii();
        if name.len() < 64 && self.sensitive_lengths & length_bit(name.len()) == 0 {
            return false;
        }
        self.sensitive_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Redact `headers` where they are: each value is replaced by its stored form
    /// ([`redact_header_value`](Self::redact_header_value)) where that differs.
    pub fn redact_headers_in_place(&self, headers: &mut HeaderList) {
        self.redact_credentials_in_place(headers);
        self.scrub_other_values_in_place(headers);
    }

    /// The other half of [`redact_headers_in_place`](Self::redact_headers_in_place): every value
    /// but the credential headers' scrubbed, for a list whose credentials were redacted already.
    pub fn scrub_other_values_in_place(&self, headers: &mut HeaderList) {
        headers.replace_values(|n, v| {
            if self.is_sensitive_header(n) {
                return None;
            }
            match self.scrub_str(v) {
                Cow::Owned(scrubbed) => Some(scrubbed),
                Cow::Borrowed(_) => None,
            }
        });
    }

    /// Redact only the values of credential headers, where they are: for header lists whose
    /// other values [`holds_secret`](Self::holds_secret) found clean.
    pub fn redact_credentials_in_place(&self, headers: &mut HeaderList) {
        headers.replace_values(|n, v| self.is_sensitive_header(n).then(|| redact_credential(v)));
    }

    /// Whether any of `texts` holds a secret or an iris key. One pass of the screen (every
    /// secret and the iris key prefix at once; without it, one search per secret) over all the
    /// short texts joined, which for the dozen short texts of a capture (header values, the
    /// path, two small bodies) costs a fraction of a pass over each; a long text gets a pass of
    /// its own where it is. A `false` is certain: every text
    /// can then be stored without [`scrub_str`](Self::scrub_str) (but for the query keys and a
    /// cut tail: [`redact_query_keys`](Self::redact_query_keys),
    /// [`cap_only`](Self::cap_only)). A `true` may come from a match across a join, which only
    /// costs the per-text scrubbing it leads to.
    pub fn holds_secret<'a>(&self, texts: impl IntoIterator<Item = &'a [u8]> + Clone) -> bool {
        // Joined, small bodies included: a search's fixed cost is larger than copying a few
        // kilobytes (measured with callgrind on small chats, session 10). A long text (a coding
        // agent's prompt) is searched where it is.
        const JOIN_BELOW: usize = 4096;
        let short = || texts.clone().into_iter().filter(|t| t.len() < JOIN_BELOW);
        let mut joined = Vec::with_capacity(short().map(|t| t.len() + 1).sum());
        for t in short() {
            joined.extend_from_slice(t);
            joined.push(b'\n');
        }
        let holds = |t: &[u8]| match &self.screen {
            Some(screen) => screen.find(t).is_some(),
            None => !self.find(t, false, true).is_empty(),
        };
        holds(&joined)
            || texts
                .into_iter()
                .filter(|t| t.len() >= JOIN_BELOW)
                .any(holds)
    }

    /// The stored form of one header value.
    pub fn redact_header_value(&self, name: &str, value: &str) -> String {
        if self.is_sensitive_header(name) {
            return redact_credential(value);
        }
        self.scrub_str(value).into_owned()
    }

    /// `text` with every secret and iris key replaced by `[redacted]`.
    pub fn scrub_str<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let ranges = self.find(text.as_bytes(), false, true);
        if ranges.is_empty() {
            return Cow::Borrowed(text);
        }
        // Every range starts and ends on a char boundary: secrets are whole strings and iris
        // key bodies are ASCII.
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for r in ranges {
            out.push_str(&text[last..r.start]);
            out.push_str(REDACTED);
            last = r.end;
        }
        out.push_str(&text[last..]);
        Cow::Owned(out)
    }

    /// Scrub every string inside a JSON value (keys included), in place.
    pub fn scrub_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(s) => {
                if let Cow::Owned(o) = self.scrub_str(s) {
                    *s = o;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_json(v)),
            Value::Object(map) => {
                let taken = std::mem::take(map);
                for (k, mut v) in taken {
                    self.scrub_json(&mut v);
                    map.insert(self.scrub_str(&k).into_owned(), v);
                }
            }
            _ => {}
        }
    }

    /// A path (with its query string) fit for storage: secrets and iris keys scrubbed, and the
    /// values of [`SENSITIVE_QUERY_PARAMS`] redacted.
    pub fn redact_path(&self, path: &str) -> String {
        Self::redact_query_keys(&self.scrub_str(path))
    }

    /// `path` with the values of [`SENSITIVE_QUERY_PARAMS`] redacted (and nothing else: for a
    /// path [`holds_secret`](Self::holds_secret) found clean).
    pub fn redact_query_keys(path: &str) -> String {
        let Some((base, query)) = path.split_once('?') else {
            return path.to_owned();
        };
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, v))
                    if !v.is_empty()
                        && SENSITIVE_QUERY_PARAMS
                            .iter()
                            .any(|s| s.eq_ignore_ascii_case(k)) =>
                {
                    format!("{k}={REDACTED}")
                }
                _ => p.to_owned(),
            })
            .collect();
        format!("{base}?{}", params.join("&"))
    }

    /// The stored form of (part of) a body: every secret and iris key replaced, at most `cap`
    /// bytes of `bytes` kept. `cut` says the bytes are already not the whole body. Returns the
    /// scrubbed bytes and whether anything was left out.
    ///
    /// Matching runs over all of `bytes`, so give it up to `cap + max_secret_len()` bytes: a
    /// secret that starts before the cap is then found whole and replaced whole.
    pub fn scrub_capped(&self, bytes: &[u8], cap: usize, cut: bool) -> (Vec<u8>, bool) {
        self.capped(bytes, cap, cut, true)
    }

    /// [`scrub_capped`](Self::scrub_capped) for bytes [`holds_secret`](Self::holds_secret) found
    /// clean: only capped, and a cut tail that begins a secret redacted.
    pub fn cap_only(&self, bytes: &[u8], cap: usize, cut: bool) -> (Vec<u8>, bool) {
        self.capped(bytes, cap, cut, false)
    }

    fn capped(&self, bytes: &[u8], cap: usize, cut: bool, search: bool) -> (Vec<u8>, bool) {
        let truncated = cut || bytes.len() > cap;
        let mut ranges = self.find(bytes, truncated, search);
        if bytes.len() > cap {
            // Past the cap only what a range covers matters, and a range that starts before
            // the cap is emitted as a whole `[redacted]`.
            ranges.retain(|r| r.start < cap);
        }
        let mut out = Vec::with_capacity(bytes.len().min(cap) + 16);
        let mut last = 0;
        for r in &ranges {
            out.extend_from_slice(&bytes[last..r.start]);
            out.extend_from_slice(REDACTED.as_bytes());
            last = r.end;
        }
        if last < cap {
            out.extend_from_slice(&bytes[last..bytes.len().min(cap)]);
        }
        (out, truncated)
    }

    /// Sorted, merged byte ranges to replace. With `cut_tail`, a tail that begins a secret is
    /// included.
    /// With `search` off (`hay` is known to hold no whole secret) only the tail is looked at.
    fn find(&self, hay: &[u8], cut_tail: bool, search: bool) -> Vec<Range<usize>> {
        let mut ranges: Vec<Range<usize>> = Vec::new();
        let secrets = if search { &self.secrets[..] } else { &[] };
        for f in secrets {
            let n = f.needle().len();
            ranges.extend(f.find_iter(hay).map(|s| s..s + n));
        }
        let iris_keys = search.then(|| self.iris_finder.find_iter(hay));
        for s in iris_keys.into_iter().flatten() {
            let mut e = s + IRIS_KEY_PREFIX.len();
            while e < hay.len() && is_token_byte(hay[e]) {
                e += 1;
            }
            ranges.push(s..e);
        }
        if cut_tail {
            for f in &self.secrets {
                let needle = f.needle();
                // The longest proper prefix of the secret that the text ends with.
                let longest = (MIN_PARTIAL_SECRET..needle.len())
                    .rev()
                    .find(|&k| hay.ends_with(&needle[..k]));
                if let Some(k) = longest {
                    ranges.push(hay.len() - k..hay.len());
                }
            }
        }
        ranges.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
        let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        merged
    }
}

/// The screen of [`Redactor::holds_secret`]: the needles of the secret finders and the iris
/// key prefix in aho-corasick's packed searcher (Teddy: SIMD over the patterns' first bytes,
/// for up to a few dozen patterns), which a yes-or-no answer is all that is asked of. Not its
/// full automaton: that one picks a prefilter by heuristics, and for these keys picked a single
/// "rare" byte that JSON is full of, which cost more than a search per secret (measured with
/// callgrind on the small chat, session 28).
///
/// `None`, and the finders screen instead, where the packed searcher cannot be built: no Teddy
/// for this CPU (x86-64 without SSSE3, a big-endian or other architecture than x86-64 and
/// AArch64; decided at run time) or more patterns than Teddy takes ([`SCREEN_MAX_SECRETS`]
/// secrets and the prefix at most).
fn screen<'a>(secrets: impl ExactSizeIterator<Item = &'a [u8]>) -> Option<packed::Searcher> {
    if secrets.len() > SCREEN_MAX_SECRETS {
        return None;
    }
    packed::Config::new()
        .match_kind(packed::MatchKind::LeftmostFirst)
        .builder()
        .extend(secrets.chain([IRIS_KEY_PREFIX]))
        .build()
}

/// A credential header value: keep the scheme word (`Bearer`, `Basic`, ...) if there is one.
fn redact_credential(value: &str) -> String {
    let v = value.trim();
    if let Some((scheme, rest)) = v.split_once(' ')
        && !rest.trim().is_empty()
        && (1..=20).contains(&scheme.len())
        && scheme.bytes().all(|b| b.is_ascii_alphabetic())
    {
        return format!("{scheme} {REDACTED}");
    }
    REDACTED.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROVIDER_KEY: &str = "sk-ant-api03-PROVIDERKEYabcdefghijklmnop";
    const IRIS_KEY: &str = "iris_sk_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo";

    fn r() -> Redactor {
        Redactor::new([PROVIDER_KEY, "short", ""]).with_extra_headers(["X-Custom-Token"])
    }

    #[test]
    fn credential_headers_are_known_by_name_whatever_their_length() {
        let long = "x-".to_owned() + &"k".repeat(70);
        let r = Redactor::new([PROVIDER_KEY]).with_extra_headers(["X-Sig", &long, " Z "]);
        for name in SENSITIVE_HEADERS.iter().copied().chain([
            "x-sig",
            "X-SIG",
            long.as_str(),
            "z",
            " authorization ",
        ]) {
            assert!(r.is_sensitive_header(name), "{name}");
        }
        for name in [
            "x-si",
            "x-sigs",
            "y-sig",
            "content-type",
            "",
            "zz",
            &long[1..],
        ] {
            assert!(!r.is_sensitive_header(name), "{name}");
        }
        assert!(!Redactor::default().is_sensitive_header("x-sig"));
    }

    #[test]
    fn credential_headers_keep_the_scheme_only() {
        let r = r();
        let table = [
            ("Authorization", "Bearer abc.def", "Bearer [redacted]"),
            (
                "authorization",
                "  basic dXNlcjpwYXNz  ",
                "basic [redacted]",
            ),
            ("x-api-key", PROVIDER_KEY, "[redacted]"),
            ("X-Goog-Api-Key", "AIzaSomething", "[redacted]"),
            ("api-key", "azurekey", "[redacted]"),
            ("Cookie", "session=abc; theme=dark", "[redacted]"),
            ("set-cookie", "id=a3fWa; Max-Age=2592000", "[redacted]"),
            ("Proxy-Authorization", "Digest x", "Digest [redacted]"),
            ("x-custom-token", "Token short", "Token [redacted]"),
            ("Authorization", "Bearer", "[redacted]"),
            ("Authorization", "", "[redacted]"),
            ("Authorization", "Bearer-ish:value x", "[redacted]"),
        ];
        for (name, value, want) in table {
            assert_eq!(r.redact_header_value(name, value), want, "{name}: {value}");
        }
    }

    #[test]
    fn secrets_inside_other_values_are_replaced() {
        let r = r();
        assert_eq!(
            r.redact_header_value("x-forwarded", &format!("a {PROVIDER_KEY} b {IRIS_KEY}")),
            "a [redacted] b [redacted]"
        );
        // A short secret is not hunted for inside text.
        assert_eq!(
            r.redact_header_value("x-note", "short story"),
            "short story"
        );
        // Adjacent and overlapping matches merge into one replacement.
        assert_eq!(
            r.scrub_str(&format!("{PROVIDER_KEY}{PROVIDER_KEY}")),
            "[redacted]"
        );
        assert_eq!(r.scrub_str("no secrets here"), "no secrets here");
        assert_eq!(r.scrub_str("iris_sk_"), "[redacted]");
        assert_eq!(r.scrub_str("x iris_sk_a.b"), "x [redacted].b");
    }

    #[test]
    fn one_search_over_many_texts_then_credentials_only() {
        let r = r();
        let texts = |list: &[&'static str]| list.iter().map(|t| t.as_bytes()).collect::<Vec<_>>();
        assert!(
            !r.holds_secret(
                texts(&["application/json", "42", "/v1/x?a=b"])
                    .iter()
                    .copied()
            )
        );
        assert!(!r.holds_secret(std::iter::empty::<&[u8]>()));
        let with_key = format!("k={PROVIDER_KEY}");
        let with_iris = format!("x {IRIS_KEY}");
        for hit in [with_key.as_str(), with_iris.as_str()] {
            let list = ["a", hit, "b"];
            assert!(r.holds_secret(list.iter().map(|t| t.as_bytes())), "{hit}");
        }
        // Short secrets are not hunted for inside text, joined or not.
        assert!(!r.holds_secret(["short story".as_bytes()].iter().copied()));
        // A match across a join only says "search each".
        let halves = Redactor::new(["left-half\nright-half"]);
        assert!(halves.holds_secret(["x left-half".as_bytes(), b"right-half y"].iter().copied()));
        assert_eq!(halves.scrub_str("x left-half"), "x left-half");

        let mut h: HeaderList = [
            ("content-type", "application/json"),
            ("authorization", "Bearer abc"),
            ("x-note", "plain"),
        ]
        .into_iter()
        .collect();
        r.redact_credentials_in_place(&mut h);
        let values: Vec<&str> = h.iter().map(|(_, v)| v).collect();
        assert_eq!(values, ["application/json", "Bearer [redacted]", "plain"]);
        assert_eq!(
            Redactor::redact_query_keys("/v1/m?alt=sse&key=AIza"),
            "/v1/m?alt=sse&key=[redacted]"
        );
        assert_eq!(Redactor::redact_query_keys("/v1/m"), "/v1/m");
        // Capping only: nothing searched, but a cut tail that begins a secret still goes.
        let (out, cut) = r.cap_only(b"0123456789", 4, false);
        assert_eq!((out.as_slice(), cut), (&b"0123"[..], true));
        let tail = format!("abc {}", &PROVIDER_KEY[..10]);
        let (out, cut) = r.cap_only(tail.as_bytes(), 100, true);
        assert_eq!(
            (String::from_utf8(out).unwrap(), cut),
            ("abc [redacted]".to_owned(), true)
        );
    }

    /// The one-pass screen says "clean" exactly when no finder finds anything: with one
    /// secret or many, secrets inside others, short ones (not searched), texts joined or long.
    #[test]
    fn the_screen_agrees_with_the_finders() {
        let many: Vec<String> = (0..40).map(|i| format!("sk-many-{i:03}-secret")).collect();
        let sets: [Vec<String>; 4] = [
            vec![],
            vec![PROVIDER_KEY.to_owned()],
            vec!["abcdefgh".into(), "abcdefgh-ijklmnop".into(), "tiny".into()],
            many.clone(),
        ];
        let mut texts: Vec<String> = vec![
            String::new(),
            "plain text".into(),
            format!("x {IRIS_KEY} y"),
            "iris_sk".into(),
            "abcdefg".into(),
            "xxabcdefghxx".into(),
            "tiny tiny".into(),
            format!("a{}b", PROVIDER_KEY),
            format!("{}", &PROVIDER_KEY[..PROVIDER_KEY.len() - 1]),
            format!("q {} r", many[39]),
            format!("q {} r", &many[7][..many[7].len() - 1]),
        ];
        // Long texts are searched where they are, not joined.
        texts.push(format!("{}{}", "z".repeat(5000), many[3]));
        texts.push(format!("{}abcdefgh", "z".repeat(5000)));
        texts.push("z".repeat(5000));
        for secrets in &sets {
            let r = Redactor::new(secrets);
            // The packed searcher is what is under test wherever it can run.
            assert_eq!(r.screen.is_some(), teddy_runs());
            for t in &texts {
                let found = !r.find(t.as_bytes(), false, true).is_empty();
                assert_eq!(
                    r.holds_secret([t.as_bytes()].iter().copied()),
                    found,
                    "{} secrets, text {:.40?}",
                    secrets.len(),
                    t
                );
                // Among other texts, joined or not.
                let list = ["content-type: x".as_bytes(), t.as_bytes(), b"/v1/chat"];
                assert_eq!(r.holds_secret(list.iter().copied()), found);
            }
        }
    }

    /// Whether this machine runs aho-corasick's Teddy (the packed searcher of the screen).
    #[cfg(target_arch = "x86_64")]
    fn teddy_runs() -> bool {
        std::arch::is_x86_feature_detected!("ssse3")
    }
    #[cfg(target_arch = "aarch64")]
    fn teddy_runs() -> bool {
        cfg!(target_endian = "little")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    fn teddy_runs() -> bool {
        false
    }

    /// A secret is found at every offset of a text, among non-ASCII bytes, beside secrets that
    /// share its prefix, and when it begins like an iris key; one byte short, it is not. With
    /// the screen, and with the finders that stand in for it past [`SCREEN_MAX_SECRETS`].
    #[test]
    fn the_screen_finds_a_secret_wherever_it_sits() {
        let shapes = [
            "sk-proj-Zm9vYmFyYmF6cXV4cXV1eGZv",
            "sk-proj-Zm9vYmFyYmF6cXV4cXV1eGZw",
            "sk-ant-api03-QUJDREVGR0hJSktMTU5PUFFSU1RV",
            "AIzaSyB-1234567890abcdefghijklmnopqrs",
            "gsk_0123456789abcdefghijklmnopqrstuv",
            "whsec_c2VjcmV0LXNpZ25pbmcta2V5",
            "iris_sk_configured-as-a-secret",
            "clé-secrète-ü-0001",
        ];
        let fallback: Vec<String> = shapes
            .iter()
            .map(|s| (*s).to_owned())
            .chain((shapes.len()..=SCREEN_MAX_SECRETS).map(|i| format!("pad-secret-{i:04}")))
            .collect();
        let with_screen = Redactor::new(shapes);
        let without = Redactor::new(&fallback);
        assert_eq!(with_screen.screen.is_some(), teddy_runs());
        assert!(without.screen.is_none());
        let filler = "ab é{\"x\":1}\n€".repeat(8);
        for r in [&with_screen, &without] {
            for secret in shapes {
                // One byte short of the secret (at a char boundary) is not the secret; the
                // iris-key-shaped one is still an iris key.
                let short = &secret[..secret.len() - 1];
                let iris_shaped = secret.starts_with("iris_sk_");
                for at in (0..filler.len()).filter(|&i| filler.is_char_boundary(i)) {
                    let (head, tail) = filler.split_at(at);
                    let t = format!("{head}{secret}{tail}");
                    assert!(r.holds_secret([t.as_bytes()]), "{secret} at {at}");
                    let t = format!("{head}{short}");
                    assert_eq!(
                        r.holds_secret([t.as_bytes()]),
                        iris_shaped,
                        "{short} at {at}"
                    );
                }
            }
            assert!(!r.holds_secret([filler.as_bytes()]));
        }
    }

    /// The screen takes [`SCREEN_MAX_SECRETS`] secrets and no more: past it the finders screen.
    #[test]
    fn the_screen_stops_at_its_limit() {
        let keys =
            |n: usize| -> Vec<String> { (0..n).map(|i| format!("key-{i:04}-secret")).collect() };
        assert_eq!(
            Redactor::new(keys(SCREEN_MAX_SECRETS)).screen.is_some(),
            teddy_runs()
        );
        assert!(Redactor::new(keys(SCREEN_MAX_SECRETS + 1)).screen.is_none());
        // Short secrets are not searched, so they do not count.
        let mut with_short = keys(SCREEN_MAX_SECRETS);
        with_short.extend(["tiny".into(), "abc".into()]);
        assert_eq!(Redactor::new(&with_short).screen.is_some(), teddy_runs());
        assert_eq!(Redactor::new(&with_short).secrets.len(), SCREEN_MAX_SECRETS);
    }

    #[test]
    fn longer_secret_containing_a_shorter_one_is_removed_whole() {
        let r = Redactor::new(["abcdefgh", "abcdefgh-ijklmnop"]);
        assert_eq!(r.scrub_str("<abcdefgh-ijklmnop>"), "<[redacted]>");
        assert_eq!(r.scrub_str("<abcdefgh>"), "<[redacted]>");
    }

    #[test]
    fn paths_lose_query_keys() {
        let r = r();
        assert_eq!(
            r.redact_path("/v1beta/models/g:generateContent?alt=sse&key=AIzaXYZ"),
            "/v1beta/models/g:generateContent?alt=sse&key=[redacted]"
        );
        assert_eq!(
            r.redact_path("/v1/messages?beta=true"),
            "/v1/messages?beta=true"
        );
        assert_eq!(
            r.redact_path(&format!("/v1/x/{IRIS_KEY}?a=b")),
            "/v1/x/[redacted]?a=b"
        );
    }

    #[test]
    fn capped_scrub_never_leaves_part_of_a_secret() {
        let r = r();
        let body = format!("0123456789{PROVIDER_KEY}tail");
        // Cap in the middle of the key: the whole key goes, nothing after the cap appears.
        for cap in 10..body.len() {
            let (out, truncated) = r.scrub_capped(body.as_bytes(), cap, false);
            let out = String::from_utf8(out).unwrap();
            assert!(!out.contains("PROVIDERKEY"), "cap {cap}: {out}");
            assert!(truncated, "cap {cap}");
        }
        let (out, truncated) = r.scrub_capped(body.as_bytes(), 1000, false);
        assert_eq!(String::from_utf8(out).unwrap(), "0123456789[redacted]tail");
        assert!(!truncated);
        // Input already cut inside the key: the partial key at the end is redacted.
        let cut = &body.as_bytes()[..10 + 12];
        let (out, truncated) = r.scrub_capped(cut, 1000, true);
        assert_eq!(String::from_utf8(out).unwrap(), "0123456789[redacted]");
        assert!(truncated);
        // Three bytes of a key are not a key.
        let cut = &body.as_bytes()[..13];
        let (out, _) = r.scrub_capped(cut, 1000, true);
        assert_eq!(String::from_utf8(out).unwrap(), "0123456789sk-");
    }

    #[test]
    fn json_strings_and_keys_are_scrubbed() {
        let r = r();
        let mut v =
            serde_json::json!({"cmd": format!("curl -H {PROVIDER_KEY}"), IRIS_KEY: [1, IRIS_KEY]});
        r.scrub_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"cmd": "curl -H [redacted]", "[redacted]": [1, "[redacted]"]})
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let s = format!("{:?}", r());
        assert!(!s.contains(PROVIDER_KEY));
        assert!(s.contains("hidden"));
    }
}
