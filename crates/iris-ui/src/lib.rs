//! # iris-ui: the dashboard, embedded
//!
//! Layout: every file under `assets/` (hand-written HTML, CSS and vanilla JS modules; no build
//! step, no framework) is compiled into the binary by `build.rs`. [`asset`] maps a path below
//! `/ui/` to an [`Asset`] (bytes, content type, etag); paths that name no file and do not end
//! in a file extension are client-side routes and get `index.html`. [`CSP`] and
//! [`SECURITY_HEADERS`] are what the server must send with every asset.
//!
//! The app itself talks only to the same-origin `/api/*` (the admin API); it loads nothing from
//! anywhere else (no CDN, no fonts, no analytics) and never evaluates strings as code. It
//! routes with the URL fragment: `/ui/#/overview`, `#/adoption`, `#/logs`,
//! `#/logs/sessions/<id>`, `#/logs/requests/<request id>`, `#/tools`, `#/models`,
//! `#/settings`, `#/keys`; a path such as `/ui/logs` is rewritten to `/ui/#/logs` on load, and
//! Aperture's `/ui/dashboard/<login>` to `/ui/#/overview?login=<login>`.
//!
//! This crate never does IO at run time, never knows HTTP types (the server crate turns an
//! [`Asset`] into a response), and its assets never reference an outside host.

/// One embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub bytes: &'static [u8],
    /// For the `Content-Type` header, e.g. `text/javascript; charset=utf-8`.
    pub content_type: &'static str,
    /// A strong validator for `ETag` / `If-None-Match`, quotes included (`"0123456789abcdef"`):
    /// the first 16 hex digits of the file's SHA-256.
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The page every client-side route is served.
pub const INDEX: &str = "index.html";

/// The Content-Security-Policy for every `/ui/` response: only same-origin scripts, styles,
/// images and `fetch`; no inline script or style, no `eval`; never framed; DOM XSS sinks
/// (`innerHTML` and friends) refused by Trusted Types, since captures show attacker-influenced
/// text. Kept as one string literal (the browser tests read it from this file).
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'";

/// Headers the server should add to every `/ui/` response (besides `Content-Type` and `ETag`).
/// `Cache-Control: no-cache` keeps the app current after an upgrade (browsers revalidate with
/// the etag and get 304 while nothing changed).
pub const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cache-control", "no-cache"),
];

/// Extensions that mark a path as a request for a file (so a miss is a 404, not the app).
/// Anything else is a client-side route, including a last segment with a dot in it that is
/// no file type, like the login in Aperture's `/ui/dashboard/alice@example.com`.
pub const FILE_EXTENSIONS: &[&str] = &[
    "html",
    "htm",
    "css",
    "js",
    "mjs",
    "map",
    "json",
    "svg",
    "png",
    "jpg",
    "jpeg",
    "gif",
    "webp",
    "ico",
    "txt",
    "woff",
    "woff2",
    "ttf",
    "wasm",
    "xml",
    "webmanifest",
];

/// The asset for `path`, relative to `/ui/` (a leading `/`, a `?query` and a `#fragment` are
/// ignored). `""` is `index.html`; a path that names no file is a client-side route and also
/// gets `index.html`, unless its last segment ends in one of [`FILE_EXTENSIONS`] (a missing
/// file: `None`, a 404).
pub fn asset(path: &str) -> Option<Asset> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_start_matches('/');
    if let Some(a) = lookup(path) {
        return Some(a);
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    let is_file = last
        .rsplit_once('.')
        .is_some_and(|(_, ext)| FILE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()));
    if is_file { None } else { lookup(INDEX) }
}

/// Every embedded file with its path relative to `/ui/`, sorted by path.
pub fn assets() -> impl Iterator<Item = (&'static str, Asset)> {
    ASSETS.iter().map(|(p, a)| (*p, *a))
}

fn lookup(path: &str) -> Option<Asset> {
    ASSETS
        .binary_search_by(|(p, _)| (*p).cmp(path))
        .ok()
        .and_then(|i| ASSETS.get(i))
        .map(|(_, a)| *a)
}

#[cfg(test)]
mod tests;
