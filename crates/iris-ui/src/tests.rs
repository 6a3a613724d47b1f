//! Checks on the embedded assets: routing, content types, the CSP, and that nothing in the app
//! can load from outside the gateway or run inline code.

use super::*;
use std::collections::BTreeSet;

fn text(path: &str) -> &'static str {
    let a = lookup(path).unwrap_or_else(|| panic!("asset {path} missing"));
    std::str::from_utf8(a.bytes).unwrap_or_else(|e| panic!("{path} is not UTF-8: {e}"))
}

fn index() -> &'static str {
    text(INDEX)
}

/// Values of `attr="..."` in an HTML text.
fn attr_values<'a>(html: &'a str, attr: &str) -> Vec<&'a str> {
    let needle = format!(" {attr}=\"");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&needle) {
        rest = &rest[i + needle.len()..];
        let end = rest.find('"').expect("unterminated attribute");
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// Module specifiers of the static imports in a JS text (`from "./x.js"`, `import "./x.js"`).
fn imports(js: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for key in ["from \"", "import \""] {
        let mut rest = js;
        while let Some(i) = rest.find(key) {
            rest = &rest[i + key.len()..];
            let end = rest.find('"').expect("unterminated import");
            out.push(&rest[..end]);
            rest = &rest[end..];
        }
    }
    out
}

/// `spec` relative to the directory of `from` (both relative to /ui/).
fn resolve(from: &str, spec: &str) -> String {
    let mut parts: Vec<&str> = from.split('/').collect();
    parts.pop();
    for seg in spec.split('/') {
        match seg {
            "." => {}
            ".." => {
                assert!(parts.pop().is_some(), "{spec} from {from} leaves /ui/");
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

fn js_files() -> Vec<(&'static str, &'static str)> {
    assets()
        .filter(|(p, _)| p.ends_with(".js"))
        .map(|(p, _)| (p, text(p)))
        .collect()
}

fn text_assets() -> Vec<(&'static str, &'static str)> {
    assets()
        .filter(|(_, a)| !a.content_type.starts_with("image/png"))
        .map(|(p, _)| (p, text(p)))
        .collect()
}

#[test]
fn every_asset_index_html_references_exists() {
    let html = index();
    let refs: Vec<&str> = attr_values(html, "src")
        .into_iter()
        .chain(attr_values(html, "href"))
        .collect();
    assert!(
        refs.len() >= 4,
        "index.html references too little: {refs:?}"
    );
    for r in refs {
        if let Some(p) = r.strip_prefix("/ui/") {
            assert!(
                lookup(p).is_some(),
                "index.html references /ui/{p}, which is not embedded"
            );
        } else {
            assert!(
                r.starts_with("#/"),
                "index.html reference {r:?} is neither /ui/ nor a route"
            );
        }
    }
}

#[test]
fn every_js_import_resolves_and_every_file_is_used() {
    let mut used: BTreeSet<String> = BTreeSet::from([INDEX.to_owned()]);
    for r in attr_values(index(), "src")
        .into_iter()
        .chain(attr_values(index(), "href"))
    {
        if let Some(p) = r.strip_prefix("/ui/") {
            used.insert(p.to_owned());
        }
    }
    for (path, js) in js_files() {
        for spec in imports(js) {
            assert!(
                spec.starts_with("./") || spec.starts_with("../"),
                "{path} imports {spec:?}: only relative module paths are allowed"
            );
            let target = resolve(path, spec);
            assert!(
                lookup(&target).is_some(),
                "{path} imports {spec}, which resolves to missing {target}"
            );
            used.insert(target);
        }
    }
    let all: BTreeSet<String> = assets().map(|(p, _)| p.to_owned()).collect();
    let unused: Vec<_> = all.difference(&used).collect();
    assert!(unused.is_empty(), "embedded but never loaded: {unused:?}");
}

#[test]
fn content_types_match_extensions() {
    let cases = [
        ("index.html", "text/html; charset=utf-8"),
        ("style.css", "text/css; charset=utf-8"),
        ("js/app.js", "text/javascript; charset=utf-8"),
        ("js/pages/settings.js", "text/javascript; charset=utf-8"),
        ("favicon.svg", "image/svg+xml"),
    ];
    for (path, ct) in cases {
        assert_eq!(asset(path).map(|a| a.content_type), Some(ct), "{path}");
    }
    for (path, a) in assets() {
        let ext = path.rsplit('.').next().unwrap_or_default();
        let expected = match ext {
            "html" => "text/html",
            "css" => "text/css",
            "js" => "text/javascript",
            "svg" => "image/svg+xml",
            "json" => "application/json",
            "txt" => "text/plain",
            "png" => "image/png",
            other => panic!("{path}: unexpected extension {other}"),
        };
        assert!(
            a.content_type.starts_with(expected),
            "{path}: {}",
            a.content_type
        );
    }
}

#[test]
fn routes_without_a_dot_get_index_html_and_missing_files_404() {
    let idx = lookup(INDEX).expect("index.html embedded");
    for route in [
        "",
        "/",
        "logs",
        "/logs",
        "logs/sessions/sess_123",
        "dashboard/alice@example.com",
        "logs/sessions/sess.v2",
        "settings/",
        "?x=1",
        "overview#frag",
    ] {
        assert_eq!(
            asset(route),
            Some(idx),
            "route {route:?} should serve index.html"
        );
    }
    for missing in [
        "missing.js",
        "js/missing.js",
        "favicon.ico",
        "js/../index.html",
        "style.CSS",
        "fonts/x.woff2",
    ] {
        assert_eq!(asset(missing), None, "{missing:?} should be a 404");
    }
    let app = lookup("js/app.js").expect("app.js embedded");
    assert_eq!(asset("/js/app.js?v=2"), Some(app));
    assert_ne!(app, idx);
}

#[test]
fn etags_are_quoted_and_follow_content() {
    let mut seen = std::collections::BTreeMap::new();
    for (path, a) in assets() {
        assert_eq!(a.etag.len(), 18, "{path}: {}", a.etag);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"'), "{path}");
        assert!(
            a.etag[1..17].bytes().all(|b| b.is_ascii_hexdigit()),
            "{path}"
        );
        if let Some((other, bytes)) = seen.insert(a.etag, (path, a.bytes)) {
            assert_eq!(bytes, a.bytes, "{path} and {other} share an etag");
        }
    }
}

#[test]
fn csp_is_strict() {
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(
            CSP.split("; ").any(|d| d == directive),
            "CSP lacks {directive:?}: {CSP}"
        );
    }
    for loose in [
        "unsafe-inline",
        "unsafe-eval",
        "unsafe-hashes",
        "wasm-unsafe-eval",
        "http:",
        "https:",
        "data:",
        "blob:",
        "*",
    ] {
        assert!(!CSP.contains(loose), "CSP allows {loose}: {CSP}");
    }
    let (_, v) = SECURITY_HEADERS
        .iter()
        .find(|(k, _)| *k == "content-security-policy")
        .expect("CSP in SECURITY_HEADERS");
    assert_eq!(*v, CSP);
    for name in [
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
    ] {
        assert!(SECURITY_HEADERS.iter().any(|(k, _)| *k == name), "{name}");
    }
}

/// No asset names an outside URL: the only absolute URL allowed is the SVG namespace, an
/// identifier the browser never fetches.
#[test]
fn no_asset_references_an_outside_url() {
    const SVG_NS: &str = "http://www.w3.org/2000/svg";
    for (path, t) in text_assets() {
        let cleaned = t.replace(SVG_NS, "");
        for scheme in ["http://", "https://", "ws://", "wss://", "ftp://"] {
            assert!(
                !cleaned.contains(scheme),
                "{path} contains a {scheme} URL: {}",
                cleaned
                    .split(scheme)
                    .nth(1)
                    .unwrap_or_default()
                    .chars()
                    .take(40)
                    .collect::<String>()
            );
        }
        for protocol_relative in ["src=\"//", "href=\"//", "url(//", "url(\"//", "url('//"] {
            assert!(
                !t.contains(protocol_relative),
                "{path}: {protocol_relative}"
            );
        }
        if path.ends_with(".css") {
            assert!(!t.contains("@import"), "{path} imports a stylesheet");
            assert!(!t.contains("url("), "{path} loads a resource from CSS");
        }
    }
}

#[test]
fn index_html_has_no_inline_script_or_handlers() {
    let html = index();
    let mut rest = html;
    let mut scripts = 0;
    while let Some(i) = rest.find("<script") {
        rest = &rest[i..];
        let open_end = rest.find('>').expect("unterminated <script");
        let open = &rest[..open_end];
        assert!(
            open.contains(" src=\"/ui/"),
            "inline or foreign script: {open}"
        );
        let close = rest.find("</script>").expect("no </script>");
        assert_eq!(
            rest[open_end + 1..close].trim(),
            "",
            "script body must be empty"
        );
        rest = &rest[close..];
        scripts += 1;
    }
    assert_eq!(scripts, 1, "exactly the app module");
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("javascript:"), "javascript: URL");
    assert!(!lower.contains(" style=\""), "inline style attribute");
    assert!(!lower.contains("<style"), "inline <style>");
    for tag in lower.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or_default();
        for word in tag.split_whitespace().skip(1) {
            assert!(
                !(word.starts_with("on") && word.contains('=')),
                "inline event handler in <{tag}>"
            );
        }
    }
}

#[test]
fn js_never_evaluates_strings_or_writes_html() {
    let banned = [
        "eval(",
        "new Function",
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "createContextualFragment",
        "DOMParser",
        "import(",
        "setTimeout(\"",
        "setInterval(\"",
        "XMLHttpRequest",
        "WebSocket",
        "EventSource",
        "sendBeacon",
        "window.open",
        "setAttribute(\"style\"",
        "localStorage",
    ];
    for (path, js) in js_files() {
        for b in banned {
            assert!(!js.contains(b), "{path} uses {b}");
        }
        if path != "js/api.js" {
            assert!(
                !js.contains("fetch("),
                "{path} calls fetch: only js/api.js may"
            );
        }
    }
    let api = text("js/api.js");
    assert!(
        api.contains("path.startsWith(\"/api/\")"),
        "api.js must refuse paths outside /api/"
    );
}

/// Every `/api/...` the app names is one the admin API has (a typo would be a silent 404).
#[test]
fn js_calls_only_known_api_paths() {
    let known = [
        "/api/whoami",
        "/api/health",
        "/api/usage",
        "/api/logs",
        "/api/sessions",
        "/api/sessions/",
        "/api/captures/",
        "/api/tools",
        "/api/adoption",
        "/api/adoption.csv",
        "/api/prices",
        "/api/models",
        "/api/models/test",
        "/api/providers",
        "/api/config",
        "/api/config/validate",
        "/api/config/history",
        "/api/config/rollback",
        "/api/keys",
        "/api/keys/",
        "/api/",
    ];
    let mut found = 0;
    for (path, js) in js_files() {
        let mut rest = js;
        while let Some(i) = rest.find("/api/") {
            rest = &rest[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "/._-".contains(c)))
                .unwrap_or(rest.len());
            let p = &rest[..end];
            assert!(known.contains(&p), "{path} calls unknown API path {p}");
            found += 1;
            rest = &rest[end..];
        }
    }
    assert!(found >= 15, "only {found} API paths found");
}
