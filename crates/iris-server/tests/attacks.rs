//! Tier 2: the attack suite. Every case is an attack that must fail, run against the real server
//! on 127.0.0.1:0 with the mock provider and the fake tailscaled behind it.
//!
//! Cases are named rows: table-driven categories are `static` tables of rows (each row is run and
//! checked, and a failure names the row); scenario categories run named steps whose names are
//! listed in a `const` table and checked off one by one (a step that is listed but never run fails
//! the test too). [`the_suite_has_at_least_50_cases`] counts every row of every table.
//! docs/security.md lists each case with its test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use iris_store::{Store, UsageQuery};
use iris_testkit::mock::RecordedRequest;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LOOPBACK: [u8; 4] = [127, 0, 0, 1];
const ALICE: [u8; 4] = [127, 0, 0, 2];
const CI_NODE: [u8; 4] = [127, 0, 0, 3];
const BOB: [u8; 4] = [127, 0, 0, 5];
const JSON: (&str, &str) = ("content-type", "application/json");

// ---- shared machinery ----------------------------------------------------------------------

/// Named steps of a scenario test, checked off against the test's `const` table of case names.
struct Checks {
    table: &'static [&'static str],
    seen: Vec<&'static str>,
    failures: Vec<String>,
}

impl Checks {
    fn new(table: &'static [&'static str]) -> Checks {
        Checks {
            table,
            seen: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn check(&mut self, name: &'static str, ok: bool, detail: impl Display) {
        assert!(
            self.table.contains(&name),
            "{name:?} is not in this test's case table"
        );
        assert!(!self.seen.contains(&name), "{name:?} checked twice");
        self.seen.push(name);
        if !ok {
            self.failures
                .push(format!("ATTACK SUCCEEDED: {name}: {detail}"));
        }
    }

    fn finish(self) {
        let missing: Vec<_> = self
            .table
            .iter()
            .filter(|n| !self.seen.contains(n))
            .collect();
        assert!(missing.is_empty(), "cases never run: {missing:?}");
        assert!(self.failures.is_empty(), "\n{}", self.failures.join("\n"));
    }
}

/// Fail with every failed row named.
fn report(failures: Vec<String>) {
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A request of a table row. Templates may hold `{host}` (the gateway's address), `{canary}` (the
/// port of a listener nothing must connect to), `{body}` (a valid chat request for
/// `gpt-4o-mini`) and, in raw requests, `{len}` (the byte length of the body after `\r\n\r\n`).
#[derive(Debug)]
enum Req {
    Http {
        from: [u8; 4],
        method: &'static str,
        path: &'static str,
        headers: &'static [(&'static str, &'static str)],
        body: &'static str,
    },
    /// Exactly these bytes on a fresh TCP connection.
    Raw(&'static str),
}

struct Ctx {
    addr: SocketAddr,
    canary: u16,
}

impl Ctx {
    fn fill(&self, t: &str) -> String {
        t.replace("{body}", &chat("gpt-4o-mini", false))
            .replace("{host}", &self.addr.to_string())
            .replace("{canary}", &self.canary.to_string())
    }
}

/// Send a request exactly as given: no header is added (not even `content-type`).
async fn exact(
    h: &Harness,
    from: [u8; 4],
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: String,
) -> Answer {
    let c = h.client_from(from);
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("{}{}", c.base, path));
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    let req = b.body(Full::new(Bytes::from(body))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), c.client.request(req))
        .await
        .expect("gateway answered in time")
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// What came back on a raw connection.
struct RawAnswer {
    text: String,
    /// The server closed the connection (rather than leaving it idle).
    closed: bool,
}

impl RawAnswer {
    /// Responses on the connection (status lines).
    fn responses(&self) -> usize {
        self.text.matches("HTTP/1.1 ").count()
    }

    /// The first response, parsed.
    fn first(&self) -> Answer {
        let (head, body) = self.text.split_once("\r\n\r\n").unwrap_or((&self.text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut headers = http::HeaderMap::new();
        for l in lines {
            if let Some((n, v)) = l.split_once(':')
                && let (Ok(n), Ok(v)) = (
                    http::HeaderName::from_bytes(n.trim().as_bytes()),
                    http::HeaderValue::from_str(v.trim()),
                )
            {
                headers.append(n, v);
            }
        }
        // Only the first response's body, when its length is declared.
        let len = headers
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(body.len());
        Answer {
            status,
            headers,
            body: body.chars().take(len).collect(),
        }
    }
}

async fn raw(addr: SocketAddr, bytes: &[u8]) -> RawAnswer {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before everything is written: that is fine.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut closed = false;
    loop {
        let wait = if out.is_empty() {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(500)
        };
        match tokio::time::timeout(wait, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    RawAnswer {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// `{len}` is the length of what follows the head.
fn raw_bytes(ctx: &Ctx, template: &str) -> Vec<u8> {
    let t = ctx.fill(template);
    let len = t.split_once("\r\n\r\n").map(|(_, b)| b.len()).unwrap_or(0);
    t.replace("{len}", &len.to_string()).into_bytes()
}

async fn run(h: &Harness, ctx: &Ctx, req: &Req) -> Answer {
    match req {
        Req::Http {
            from,
            method,
            path,
            headers,
            body,
        } => {
            let headers: Vec<(String, String)> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), ctx.fill(v)))
                .collect();
            exact(h, *from, method, &ctx.fill(path), &headers, ctx.fill(body)).await
        }
        Req::Raw(t) => raw(ctx.addr, &raw_bytes(ctx, t)).await.first(),
    }
}

/// A loopback port with a listener that counts connections: nothing an attacker sends may make
/// iris connect to it.
struct Canary {
    port: u16,
    hits: Arc<AtomicUsize>,
}

async fn canary() -> Canary {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    Canary { port, hits }
}

fn ctx(h: &Harness, canary: u16) -> Ctx {
    Ctx {
        addr: h.addr,
        canary,
    }
}

fn header_of<'a>(r: &'a RecordedRequest, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

// ---- 1. HTTP framing: smuggling and malformed heads (raw bytes) ----------------------------

struct FramingCase {
    name: &'static str,
    bytes: &'static str,
    /// Acceptable statuses of the (only) response.
    status: &'static [u16],
}

/// A request smuggled behind the first one: if it were ever parsed as a request of its own, the
/// mock would see it.
const SMUGGLED: &str = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 88\r\n\r\n{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"smuggled\"}],\"pad\":\"xxxxxx\"}";

static FRAMING: &[FramingCase] = &[
    FramingCase {
        name: "CL.TE: Content-Length first, then Transfer-Encoding: chunked, a request smuggled after the chunked end",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        status: &[400],
    },
    FramingCase {
        name: "TE.CL: Transfer-Encoding: chunked first, then Content-Length, a request smuggled after the chunked end",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n0\r\n\r\n{smuggled}",
        status: &[400],
    },
    FramingCase {
        name: "two conflicting Content-Length headers",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nContent-Length: {len}\r\n\r\n{body}",
        status: &[400],
    },
    FramingCase {
        name: "a Content-Length list (\"N, N\")",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}, {len}\r\n\r\n{body}",
        status: &[400],
    },
    FramingCase {
        name: "an obfuscated Transfer-Encoding (xchunked)",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}",
        status: &[400],
    },
    FramingCase {
        name: "Transfer-Encoding whose last coding is not chunked (chunked, identity)",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}",
        status: &[400],
    },
    FramingCase {
        name: "whitespace before the colon (Transfer-Encoding :)",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{smuggled}",
        status: &[400],
    },
    FramingCase {
        name: "Transfer-Encoding in an HTTP/1.0 request",
        bytes: "POST /v1/chat/completions HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        status: &[400],
    },
    FramingCase {
        name: "an obs-fold header continuation line",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-A: a\r\n Content-Length: 0\r\nContent-Length: {len}\r\n\r\n{body}",
        status: &[400],
    },
    FramingCase {
        name: "a bare LF ending a chunk-size line",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\nxxxxx\r\n0\r\n\r\n{smuggled}",
        status: &[400],
    },
    FramingCase {
        name: "a bare CR inside a header value (header injection)",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-A: a\rContent-Length: 0\r\nContent-Length: {len}\r\n\r\n{body}",
        status: &[400],
    },
    FramingCase {
        name: "a NUL byte inside a header value",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-A: a\0b\r\nContent-Length: {len}\r\n\r\n{body}",
        status: &[400],
    },
    FramingCase {
        name: "a chunk size that overflows 64 bits",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1ffffffffffffffff\r\n{body}\r\n0\r\n\r\n",
        status: &[400],
    },
    FramingCase {
        name: "one 1 MiB header",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Big: {1MiB}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{body}",
        status: &[431],
    },
    FramingCase {
        name: "200 headers",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n{200 headers}Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n{body}",
        status: &[431],
    },
    FramingCase {
        name: "a 100 KB request target",
        bytes: "POST /v1/chat/completions?{100KB} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n{body}",
        status: &[414],
    },
    FramingCase {
        name: "a chunked body beyond max_body_bytes (no Content-Length to refuse early)",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{8 KiB chunked}0\r\n\r\n",
        status: &[413],
    },
    FramingCase {
        name: "Expect: 100-continue with a Content-Length beyond max_body_bytes (refused before the body is asked for)",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 999999999\r\n\r\n",
        status: &[413],
    },
    FramingCase {
        name: "an h2c upgrade request (Upgrade: h2c) is answered as HTTP/1.1, never switched",
        bytes: "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings, close\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        status: &[400],
    },
    FramingCase {
        name: "a backslash request target (\\api\\config)",
        bytes: "GET \\api\\config HTTP/1.1\r\nHost: x\r\n\r\n",
        status: &[400],
    },
];

fn framing_bytes(ctx: &Ctx, t: &str) -> Vec<u8> {
    let eight_kib: String = (0..8)
        .map(|_| format!("400\r\n{}\r\n", "a".repeat(1024)))
        .collect();
    let headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let t = t
        .replace("{smuggled}", SMUGGLED)
        .replace("{1MiB}", &"a".repeat(1 << 20))
        .replace("{200 headers}", &headers)
        .replace("{100KB}", &"a".repeat(100_000))
        .replace("{8 KiB chunked}", &eight_kib);
    raw_bytes(ctx, &t)
}

#[tokio::test]
async fn http_framing_attacks_are_refused_and_nothing_reaches_the_provider() {
    let h = Harness::start_with(Options {
        iris: r#", "limits": {"max_body_bytes": 4096}"#.into(),
        ..Options::default()
    })
    .await;
    let ctx = ctx(&h, 0);
    let mut failures = Vec::new();
    for case in FRAMING {
        h.mock.reset();
        let got = raw(h.addr, &framing_bytes(&ctx, case.bytes)).await;
        let first = got.first();
        let mut problems = Vec::new();
        if !case.status.contains(&first.status) {
            problems.push(format!(
                "status {} (wanted {:?})",
                first.status, case.status
            ));
        }
        if got.text.contains("HTTP/1.1 101") || got.text.contains("HTTP/1.1 100") {
            problems.push("an interim 100/101 answer".into());
        }
        if got.responses() != 1 {
            problems.push(format!("{} responses on one connection", got.responses()));
        }
        if !got.closed {
            problems.push("the connection stayed open after a malformed message".into());
        }
        if !h.mock.requests().is_empty() {
            problems.push(format!(
                "{} request(s) reached the provider",
                h.mock.requests().len()
            ));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "ATTACK SUCCEEDED: {}: {}\n{}",
                case.name,
                problems.join("; "),
                got.text.chars().take(400).collect::<String>()
            ));
        }
    }
    // The gateway is still serving.
    let ok = h
        .client()
        .post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    report(failures);
}

// ---- 2. Path tricks into /api and /ui ------------------------------------------------------

struct PathCase {
    name: &'static str,
    method: &'static str,
    target: &'static str,
    status: &'static [u16],
}

/// Sent from loopback, which is an admin: a path that reached `/api/config` would answer 200 with
/// the config. None may.
static PATHS: &[PathCase] = &[
    PathCase {
        name: "dot segments: /v1/../api/config",
        method: "GET",
        target: "/v1/../api/config",
        status: &[404],
    },
    PathCase {
        name: "encoded dot segments: /v1/%2e%2e/api/config",
        method: "GET",
        target: "/v1/%2e%2e/api/config",
        status: &[404],
    },
    PathCase {
        name: "encoded slashes: /v1/..%2fapi%2fconfig",
        method: "GET",
        target: "/v1/..%2fapi%2fconfig",
        status: &[404],
    },
    PathCase {
        name: "dot segments out of the dashboard: /ui/../api/config",
        method: "GET",
        target: "/ui/../api/config",
        status: &[200, 404],
    },
    PathCase {
        name: "encoded dot segments out of the dashboard: /ui/%2e%2e/api/config",
        method: "GET",
        target: "/ui/%2e%2e/api/config",
        status: &[200, 404],
    },
    PathCase {
        name: "upper case: /API/config",
        method: "GET",
        target: "/API/config",
        status: &[404],
    },
    PathCase {
        name: "mixed case: /Api/Config",
        method: "GET",
        target: "/Api/Config",
        status: &[404],
    },
    PathCase {
        name: "leading double slash: //api/config",
        method: "GET",
        target: "//api/config",
        status: &[404],
    },
    PathCase {
        name: "inner double slash: /api//config",
        method: "GET",
        target: "/api//config",
        status: &[404],
    },
    PathCase {
        name: "trailing slash: /api/config/",
        method: "GET",
        target: "/api/config/",
        status: &[404],
    },
    PathCase {
        name: "a dot segment: /api/./config",
        method: "GET",
        target: "/api/./config",
        status: &[404],
    },
    PathCase {
        name: "an encoded slash: /api%2fconfig",
        method: "GET",
        target: "/api%2fconfig",
        status: &[404],
    },
    PathCase {
        name: "an encoded letter: /api/%63onfig",
        method: "GET",
        target: "/api/%63onfig",
        status: &[404],
    },
    PathCase {
        name: "a path parameter: /api/config;x=1",
        method: "GET",
        target: "/api/config;x=1",
        status: &[404],
    },
    PathCase {
        name: "an encoded NUL: /api/config%00",
        method: "GET",
        target: "/api/config%00",
        status: &[404],
    },
    PathCase {
        name: "reading files through the dashboard: /ui/..%2f..%2fCargo.toml",
        method: "GET",
        target: "/ui/..%2f..%2fCargo.toml",
        status: &[200, 404],
    },
    PathCase {
        name: "reading files through the dashboard: /ui/../../../../etc/passwd",
        method: "GET",
        target: "/ui/../../../../etc/passwd",
        status: &[200, 404],
    },
    PathCase {
        name: "model endpoint in upper case: POST /V1/CHAT/COMPLETIONS",
        method: "POST",
        target: "/V1/CHAT/COMPLETIONS",
        status: &[404],
    },
    PathCase {
        name: "model endpoint with a trailing slash: POST /v1/chat/completions/",
        method: "POST",
        target: "/v1/chat/completions/",
        status: &[404],
    },
    PathCase {
        name: "model endpoint with a dot segment: POST /v1/./chat/completions",
        method: "POST",
        target: "/v1/./chat/completions",
        status: &[404],
    },
];

#[tokio::test]
async fn path_tricks_reach_neither_the_admin_api_nor_files() {
    let h = Harness::start().await;
    let ctx = ctx(&h, 0);
    let config_marker = "\"hash\"";
    let mut failures = Vec::new();
    for case in PATHS {
        h.mock.reset();
        let body = chat("gpt-4o-mini", false);
        let req = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            case.method,
            case.target,
            ctx.addr,
            if case.method == "POST" { body.len() } else { 0 },
            if case.method == "POST" {
                body.as_str()
            } else {
                ""
            },
        );
        let got = raw(h.addr, req.as_bytes()).await.first();
        let leaked = got.body.contains(config_marker)
            || got.body.contains("[package]")
            || got.body.contains("root:");
        let is_shell = got
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/html"));
        if !case.status.contains(&got.status)
            || leaked
            || (got.status == 200 && !is_shell)
            || !h.mock.requests().is_empty()
        {
            failures.push(format!(
                "ATTACK SUCCEEDED: {}: status {} (wanted {:?}), mock saw {}: {}",
                case.name,
                got.status,
                case.status,
                h.mock.requests().len(),
                got.body.chars().take(200).collect::<String>()
            ));
        }
    }
    report(failures);
}

// ---- 3. Identity spoofing from untrusted connections ---------------------------------------

enum Who {
    Is {
        source: &'static str,
        login: Option<&'static str>,
        tags: &'static [&'static str],
        role: Option<&'static str>,
    },
    Refused(u16),
}

struct IdentityCase {
    name: &'static str,
    serve_headers: bool,
    from: [u8; 4],
    headers: &'static [(&'static str, &'static str)],
    expect: Who,
}

const BOB_NO_ROLE: Who = Who::Is {
    source: "whois",
    login: Some("bob@example.com"),
    tags: &[],
    role: None,
};
const CI_VIA_SERVE: Who = Who::Is {
    source: "whois",
    login: None,
    tags: &["tag:ci"],
    role: Some("user"),
};

static IDENTITY: &[IdentityCase] = &[
    IdentityCase {
        name: "a tailnet peer (bob) sends Tailscale-User-Login of another user while serve headers are on",
        serve_headers: true,
        from: BOB,
        headers: &[
            ("tailscale-user-login", "carol@example.com"),
            ("tailscale-user-name", "Carol"),
        ],
        expect: BOB_NO_ROLE,
    },
    IdentityCase {
        name: "a tailnet peer sends Tailscale-App-Capabilities granting itself admin",
        serve_headers: true,
        from: BOB,
        headers: &[(
            "tailscale-app-capabilities",
            r#"{"tailscale.com/cap/aperture":[{"role":"admin"},{"models":"**"}]}"#,
        )],
        expect: BOB_NO_ROLE,
    },
    IdentityCase {
        name: "a tailnet peer sends X-Forwarded-For: 127.0.0.1 to pass as loopback",
        serve_headers: true,
        from: BOB,
        headers: &[("x-forwarded-for", "127.0.0.1")],
        expect: BOB_NO_ROLE,
    },
    IdentityCase {
        name: "a tailnet peer sends X-Forwarded-For with another user's address",
        serve_headers: true,
        from: BOB,
        headers: &[("x-forwarded-for", "127.0.0.2")],
        expect: BOB_NO_ROLE,
    },
    IdentityCase {
        name: "a tailnet peer sends Forwarded: for= with another user's address",
        serve_headers: true,
        from: BOB,
        headers: &[("forwarded", "for=127.0.0.2;host=ai;proto=http")],
        expect: BOB_NO_ROLE,
    },
    IdentityCase {
        name: "a tailnet peer sends X-Real-IP: 127.0.0.1",
        serve_headers: true,
        from: BOB,
        headers: &[("x-real-ip", "127.0.0.1")],
        expect: BOB_NO_ROLE,
    },
    IdentityCase {
        name: "a tagged node sends serve headers from its own connection",
        serve_headers: true,
        from: CI_NODE,
        headers: &[("tailscale-user-login", "carol@example.com")],
        expect: Who::Is {
            source: "whois",
            login: None,
            tags: &["tag:ci", "tag:prod"],
            role: Some("user"),
        },
    },
    IdentityCase {
        name: "a tagged node through `tailscale serve` (no user headers) asks for the admin API",
        serve_headers: true,
        from: LOOPBACK,
        headers: &[("x-forwarded-for", "100.64.0.9")],
        expect: CI_VIA_SERVE,
    },
    IdentityCase {
        name: "a tagged node through `tailscale serve` prepends 127.0.0.1 to X-Forwarded-For",
        serve_headers: true,
        from: LOOPBACK,
        headers: &[("x-forwarded-for", "127.0.0.1, 100.64.0.9")],
        expect: CI_VIA_SERVE,
    },
    IdentityCase {
        name: "a serve-proxied request whose X-Forwarded-For names loopback is not (loopback)",
        serve_headers: true,
        from: LOOPBACK,
        headers: &[("x-forwarded-for", "127.0.0.1")],
        expect: Who::Refused(401),
    },
    IdentityCase {
        name: "a serve-proxied request with an unparsable X-Forwarded-For is not (loopback)",
        serve_headers: true,
        from: LOOPBACK,
        headers: &[("x-forwarded-for", "localhost")],
        expect: Who::Refused(401),
    },
    IdentityCase {
        name: "a serve login spelled \"(loopback)\" is not the loopback source",
        serve_headers: true,
        from: LOOPBACK,
        headers: &[("tailscale-user-login", "(loopback)")],
        expect: Who::Is {
            source: "serve_headers",
            login: Some("(loopback)"),
            tags: &[],
            role: None,
        },
    },
    IdentityCase {
        name: "a serve login spelled like a tag is not a tagged node",
        serve_headers: true,
        from: LOOPBACK,
        headers: &[("tailscale-user-login", "tag:ci")],
        expect: Who::Is {
            source: "serve_headers",
            login: Some("tag:ci"),
            tags: &[],
            role: None,
        },
    },
    IdentityCase {
        name: "a serve login spelled like a group joins no group",
        serve_headers: true,
        from: LOOPBACK,
        headers: &[("tailscale-user-login", "group:ai-users")],
        expect: Who::Is {
            source: "serve_headers",
            login: Some("group:ai-users"),
            tags: &[],
            role: None,
        },
    },
    IdentityCase {
        name: "a serve login with an encoded line break is no identity (and not loopback)",
        serve_headers: true,
        from: LOOPBACK,
        headers: &[
            ("tailscale-user-login", "=?utf-8?q?carol=0A@example.com?="),
            ("x-forwarded-for", "100.99.99.99"),
        ],
        expect: Who::Refused(401),
    },
    IdentityCase {
        name: "X-Forwarded-For on a loopback connection is never read while serve headers are off",
        serve_headers: false,
        from: LOOPBACK,
        headers: &[("x-forwarded-for", "127.0.0.5")],
        expect: Who::Is {
            source: "loopback",
            login: None,
            tags: &[],
            role: Some("admin"),
        },
    },
];

#[tokio::test]
async fn identity_cannot_be_claimed_by_headers() {
    let off = Harness::start().await;
    let on = Harness::start_with(Options {
        identity: r#", "serve_headers": true"#.into(),
        ..Options::default()
    })
    .await;
    let mut failures = Vec::new();
    for case in IDENTITY {
        let h = if case.serve_headers { &on } else { &off };
        let c = h.client_from(case.from);
        let who = c.send("GET", "/api/whoami", case.headers, "").await;
        let config = c.send("GET", "/api/config", case.headers, "").await;
        let problem = match &case.expect {
            Who::Refused(code) => (who.status != *code || config.status != *code).then(|| {
                format!(
                    "whoami {} / config {} (wanted {code})",
                    who.status, config.status
                )
            }),
            Who::Is {
                source,
                login,
                tags,
                role,
            } => {
                let v = who.json();
                let id = &v["identity"];
                let want_config = if *role == Some("admin") { 200 } else { 403 };
                (who.status != 200
                    || id["source"] != *source
                    || id["login"] != json!(login)
                    || id["tags"] != json!(tags)
                    || v["role"] != json!(role)
                    || config.status != want_config)
                    .then(|| format!("got {v} and config {}", config.status))
            }
        };
        if let Some(p) = problem {
            failures.push(format!("ATTACK SUCCEEDED: {}: {p}", case.name));
        }
    }
    report(failures);
}

// ---- 4. Model names that try to escape their grant -----------------------------------------

struct ModelCase {
    name: &'static str,
    from: [u8; 4],
    path: &'static str,
    /// A `model` value (the body is built around it), or a whole body when `raw` is set.
    model: &'static str,
    raw: bool,
    status: u16,
}

/// alice may use `openai/**` and `anthropic/claude-haiku-*`; the CI node `anthropic/**`.
static MODELS: &[ModelCase] = &[
    ModelCase {
        name: "an ungranted model by its qualified name (anthropic/claude-sonnet-4-5)",
        from: ALICE,
        path: "/v1/messages",
        model: "anthropic/claude-sonnet-4-5",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "dot segments after a granted model (anthropic/claude-haiku-4-5/../claude-sonnet-4-5)",
        from: ALICE,
        path: "/v1/messages",
        model: "anthropic/claude-haiku-4-5/../claude-sonnet-4-5",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "dot segments across providers (openai/../anthropic/claude-sonnet-4-5)",
        from: ALICE,
        path: "/v1/messages",
        model: "openai/../anthropic/claude-sonnet-4-5",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "dot segments from the tagged node's provider into another (anthropic/../openai/gpt-4o-mini)",
        from: CI_NODE,
        path: "/v1/chat/completions",
        model: "anthropic/../openai/gpt-4o-mini",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "a glob as the model (anthropic/claude-haiku-*)",
        from: ALICE,
        path: "/v1/messages",
        model: "anthropic/claude-haiku-*",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "a double-star glob as the model (anthropic/**)",
        from: ALICE,
        path: "/v1/messages",
        model: "anthropic/**",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "glob metacharacters ? and [] (anthropic/claude-[hs]*-4-?)",
        from: ALICE,
        path: "/v1/messages",
        model: "anthropic/claude-[hs]*-4-?",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "brace alternation (anthropic/{claude-sonnet-4-5,claude-haiku-4-5})",
        from: ALICE,
        path: "/v1/messages",
        model: "anthropic/{claude-sonnet-4-5,claude-haiku-4-5}",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "a granted-looking prefix in upper case (ANTHROPIC/claude-sonnet-4-5)",
        from: ALICE,
        path: "/v1/messages",
        model: "ANTHROPIC/claude-sonnet-4-5",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "a trailing space (claude-sonnet-4-5 )",
        from: ALICE,
        path: "/v1/messages",
        model: "claude-sonnet-4-5 ",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "a trailing NUL (claude-sonnet-4-5\\0)",
        from: ALICE,
        path: "/v1/messages",
        model: "claude-sonnet-4-5\0",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "a unicode look-alike slash (anthropic\u{ff0f}claude-sonnet-4-5)",
        from: ALICE,
        path: "/v1/messages",
        model: "anthropic\u{ff0f}claude-sonnet-4-5",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "a unicode look-alike letter (claude-h\u{430}iku-4-5, a Cyrillic a)",
        from: ALICE,
        path: "/v1/messages",
        model: "claude-h\u{430}iku-4-5",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "a double slash (anthropic//claude-sonnet-4-5)",
        from: ALICE,
        path: "/v1/messages",
        model: "anthropic//claude-sonnet-4-5",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "a model under a provider that does not serve it (openai/claude-sonnet-4-5)",
        from: ALICE,
        path: "/v1/chat/completions",
        model: "openai/claude-sonnet-4-5",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "two `model` keys: a granted one for iris, an ungranted one for the provider",
        from: ALICE,
        path: "/v1/messages",
        model: r#"{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user","content":"x"}],"model":"claude-sonnet-4-5"}"#,
        raw: true,
        status: 400,
    },
    ModelCase {
        name: "`model` as an array of a granted and an ungranted model",
        from: ALICE,
        path: "/v1/messages",
        model: r#"{"model":["claude-haiku-4-5","claude-sonnet-4-5"],"max_tokens":8,"messages":[]}"#,
        raw: true,
        status: 400,
    },
    ModelCase {
        name: "`model` only inside a nested object",
        from: ALICE,
        path: "/v1/messages",
        model: r#"{"metadata":{"model":"claude-haiku-4-5"},"max_tokens":8,"messages":[]}"#,
        raw: true,
        status: 400,
    },
    ModelCase {
        name: "the model test button with dot segments (anthropic/../anthropic/claude-sonnet-4-5)",
        from: ALICE,
        path: "/api/models/test",
        model: "anthropic/../anthropic/claude-sonnet-4-5",
        raw: false,
        status: 404,
    },
    ModelCase {
        name: "the model test button with a glob (anthropic/*)",
        from: ALICE,
        path: "/api/models/test",
        model: "anthropic/*",
        raw: false,
        status: 404,
    },
];

#[tokio::test]
async fn model_names_cannot_escape_their_grant() {
    let h = Harness::start().await;
    let mut failures = Vec::new();
    for case in MODELS {
        h.mock.reset();
        let body = if case.raw {
            case.model.to_owned()
        } else if case.path == "/api/models/test" {
            json!({"model": case.model}).to_string()
        } else if case.path == "/v1/messages" {
            messages(case.model, false)
        } else {
            chat(case.model, false)
        };
        let r = h.client_from(case.from).post(case.path, &[], &body).await;
        if r.status != case.status || !h.mock.requests().is_empty() {
            failures.push(format!(
                "ATTACK SUCCEEDED: {}: status {} (wanted {}), provider saw {}: {}",
                case.name,
                r.status,
                case.status,
                h.mock.requests().len(),
                r.body
            ));
        }
    }
    // Control: the same caller's granted model works.
    let ok = h
        .client_from(ALICE)
        .post("/v1/messages", &[], &messages("claude-haiku-4-5", false))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    report(failures);
}

// ---- 5. Header injection and hop-by-hop abuse towards the provider -------------------------

struct HeaderCase {
    name: &'static str,
    req: Req,
    status: u16,
    /// Checks the answer and what the provider received.
    check: fn(&Answer, &[RecordedRequest]) -> Result<(), String>,
}

fn one_upstream(reqs: &[RecordedRequest]) -> Result<&RecordedRequest, String> {
    match reqs {
        [r] => Ok(r),
        _ => Err(format!("{} upstream requests", reqs.len())),
    }
}

static HEADERS: &[HeaderCase] = &[
    HeaderCase {
        name: "a client header of the same name cannot replace an add_headers value",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/v1/messages",
            headers: &[JSON, ("x-team", "evil")],
            body: r#"{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user","content":"x"}]}"#,
        },
        status: 200,
        check: |_, reqs| {
            let r = one_upstream(reqs)?;
            (header_of(r, "x-team") == ["platform"])
                .then_some(())
                .ok_or(format!("x-team upstream: {:?}", header_of(r, "x-team")))
        },
    },
    HeaderCase {
        name: "Connection: x-team cannot strip an add_headers header",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/v1/messages",
            headers: &[JSON, ("connection", "x-team")],
            body: r#"{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user","content":"x"}]}"#,
        },
        status: 200,
        check: |_, reqs| {
            let r = one_upstream(reqs)?;
            (header_of(r, "x-team") == ["platform"])
                .then_some(())
                .ok_or(format!("x-team upstream: {:?}", header_of(r, "x-team")))
        },
    },
    HeaderCase {
        name: "Connection: x-api-key cannot strip the provider key (nor let the client's through)",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/v1/messages",
            headers: &[
                JSON,
                ("connection", "x-api-key"),
                ("x-api-key", "client-secret"),
            ],
            body: r#"{"model":"claude-haiku-4-5","max_tokens":8,"messages":[{"role":"user","content":"x"}]}"#,
        },
        status: 200,
        check: |_, reqs| {
            let r = one_upstream(reqs)?;
            (header_of(r, "x-api-key") == [ANTHROPIC_KEY])
                .then_some(())
                .ok_or(format!(
                    "x-api-key upstream: {:?}",
                    header_of(r, "x-api-key")
                ))
        },
    },
    HeaderCase {
        name: "a client x-iris-request-id is neither forwarded nor echoed back",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/v1/chat/completions",
            headers: &[JSON, ("x-iris-request-id", "forged-id")],
            body: "{body}",
        },
        status: 200,
        check: |a, reqs| {
            let r = one_upstream(reqs)?;
            if r.headers.iter().any(|(n, _)| n.starts_with("x-iris-")) {
                return Err("an x-iris- header went upstream".into());
            }
            match a.headers.get("x-iris-request-id") {
                Some(v) if v != "forged-id" => Ok(()),
                other => Err(format!("request id answered: {other:?}")),
            }
        },
    },
    HeaderCase {
        name: "a client's chunked Transfer-Encoding is not forwarded (the provider gets one framing: Content-Length)",
        req: Req::Raw(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n10\r\n{\"model\":\"gpt-4o\r\n2c\r\n-mini\",\"messages\":[{\"role\":\"user\",\"content\":\r\n6\r\n\"x\"}]}\r\n0\r\n\r\n",
        ),
        status: 200,
        check: |_, reqs| {
            let r = one_upstream(reqs)?;
            if !header_of(r, "transfer-encoding").is_empty()
                || header_of(r, "content-length").len() != 1
            {
                return Err(format!("framing headers upstream: {:?}", r.headers));
            }
            Ok(())
        },
    },
    HeaderCase {
        name: "a model name carrying CR LF and a header does not reach any header",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/v1/chat/completions",
            headers: &[JSON],
            body: r#"{"model":"gpt-4o-mini\r\nX-Injected: 1","messages":[]}"#,
        },
        status: 404,
        check: |a, reqs| {
            if !reqs.is_empty() {
                return Err("reached the provider".into());
            }
            (!a.headers.contains_key("x-injected"))
                .then_some(())
                .ok_or("x-injected answered".into())
        },
    },
    HeaderCase {
        name: "a client Cookie and Proxy-Authorization are not forwarded",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/v1/chat/completions",
            headers: &[
                JSON,
                ("cookie", "session=s3cret"),
                ("proxy-authorization", "Basic czNjcmV0"),
            ],
            body: "{body}",
        },
        status: 200,
        check: |_, reqs| {
            let r = one_upstream(reqs)?;
            (header_of(r, "cookie").is_empty() && header_of(r, "proxy-authorization").is_empty())
                .then_some(())
                .ok_or(format!("forwarded: {:?}", r.headers))
        },
    },
];

#[tokio::test]
async fn header_injection_towards_the_provider_fails() {
    let h = Harness::start().await;
    let ctx = ctx(&h, 0);
    let mut failures = Vec::new();
    for case in HEADERS {
        h.mock.reset();
        let a = run(&h, &ctx, &case.req).await;
        let reqs = h.mock.requests();
        let res = if a.status != case.status {
            Err(format!(
                "status {} (wanted {}): {}",
                a.status, case.status, a.body
            ))
        } else {
            (case.check)(&a, &reqs)
        };
        if let Err(e) = res {
            failures.push(format!("ATTACK SUCCEEDED: {}: {e}", case.name));
        }
    }
    report(failures);
}

// ---- 6. Cross-site requests against the dashboard's actions (CSRF, DNS rebinding) -----------

struct CsrfCase {
    name: &'static str,
    req: Req,
    status: u16,
}

const KEY_BODY: &str = r#"{"for": "mallory@example.com"}"#;

static CSRF: &[CsrfCase] = &[
    CsrfCase {
        name: "PUT /api/config from another origin",
        req: Req::Http {
            from: LOOPBACK,
            method: "PUT",
            path: "/api/config",
            headers: &[JSON, ("origin", "https://evil.example")],
            body: r#"{"config": "{}", "hash": "x"}"#,
        },
        status: 403,
    },
    CsrfCase {
        name: "config rollback marked Sec-Fetch-Site: cross-site",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/api/config/rollback",
            headers: &[JSON, ("sec-fetch-site", "cross-site")],
            body: r#"{"id": 1, "hash": "x"}"#,
        },
        status: 403,
    },
    CsrfCase {
        name: "the model test button from another origin (spends the provider's money)",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/api/models/test",
            headers: &[JSON, ("origin", "https://evil.example")],
            body: r#"{"model": "gpt-4o-mini"}"#,
        },
        status: 403,
    },
    CsrfCase {
        name: "config validate as a form-style text/plain simple request",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/api/config/validate",
            headers: &[("content-type", "text/plain")],
            body: r#"{"config": "{}"}"#,
        },
        status: 415,
    },
    CsrfCase {
        name: "key creation with Origin: null (sandboxed frame, data: URL)",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/api/keys",
            headers: &[JSON, ("origin", "null")],
            body: KEY_BODY,
        },
        status: 403,
    },
    CsrfCase {
        name: "key creation from an origin that starts with the gateway's host",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/api/keys",
            headers: &[JSON, ("origin", "http://{host}.evil.example")],
            body: KEY_BODY,
        },
        status: 403,
    },
    CsrfCase {
        name: "key creation from the same host on another port",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/api/keys",
            headers: &[JSON, ("origin", "http://127.0.0.1:1")],
            body: KEY_BODY,
        },
        status: 403,
    },
    CsrfCase {
        name: "key creation marked Sec-Fetch-Site: same-site (a sibling site is not this origin)",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/api/keys",
            headers: &[JSON, ("sec-fetch-site", "same-site")],
            body: KEY_BODY,
        },
        status: 403,
    },
    CsrfCase {
        name: "key creation as multipart/form-data (an HTML form)",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/api/keys",
            headers: &[("content-type", "multipart/form-data; boundary=x")],
            body: "--x\r\nContent-Disposition: form-data; name=\"for\"\r\n\r\nmallory@example.com\r\n--x--\r\n",
        },
        status: 415,
    },
    CsrfCase {
        name: "key creation without any Content-Type",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/api/keys",
            headers: &[],
            body: KEY_BODY,
        },
        status: 415,
    },
    CsrfCase {
        name: "key revocation marked Sec-Fetch-Site: cross-site",
        req: Req::Http {
            from: LOOPBACK,
            method: "DELETE",
            path: "/api/keys/key_000000000000",
            headers: &[("sec-fetch-site", "cross-site")],
            body: "",
        },
        status: 403,
    },
    CsrfCase {
        name: "DNS rebinding: a same-origin key creation for a host iris cannot vouch for",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/api/keys",
            headers: &[
                JSON,
                ("host", "evil.example:4747"),
                ("origin", "http://evil.example:4747"),
                ("sec-fetch-site", "same-origin"),
            ],
            body: KEY_BODY,
        },
        status: 403,
    },
    CsrfCase {
        name: "DNS rebinding: a same-origin read of the logs",
        req: Req::Http {
            from: LOOPBACK,
            method: "GET",
            path: "/api/logs",
            headers: &[("host", "evil.example"), ("sec-fetch-site", "same-origin")],
            body: "",
        },
        status: 403,
    },
    CsrfCase {
        name: "DNS rebinding: a same-origin model request",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/v1/chat/completions",
            headers: &[
                JSON,
                ("host", "evil.example"),
                ("origin", "http://evil.example"),
            ],
            body: "{body}",
        },
        status: 403,
    },
    CsrfCase {
        name: "a cross-origin read gets no CORS grant (the page cannot read the answer)",
        req: Req::Http {
            from: LOOPBACK,
            method: "GET",
            path: "/api/logs",
            headers: &[("origin", "https://evil.example")],
            body: "",
        },
        status: 200,
    },
    CsrfCase {
        name: "a CORS preflight for PUT /api/config is not granted",
        req: Req::Http {
            from: LOOPBACK,
            method: "OPTIONS",
            path: "/api/config",
            headers: &[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "content-type"),
            ],
            body: "",
        },
        status: 405,
    },
];

#[tokio::test]
async fn cross_site_requests_cannot_use_ambient_identity() {
    let h = Harness::start().await;
    let ctx = ctx(&h, 0);
    let mut failures = Vec::new();
    for case in CSRF {
        let a = run(&h, &ctx, &case.req).await;
        let cors: Vec<_> = a
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-allow"))
            .collect();
        if a.status != case.status || !cors.is_empty() {
            failures.push(format!(
                "ATTACK SUCCEEDED: {}: status {} (wanted {}), CORS {cors:?}: {}",
                case.name, a.status, case.status, a.body
            ));
        }
        if case.req_is_api() && a.headers.get("x-content-type-options").is_none() {
            failures.push(format!("{}: /api answer without nosniff", case.name));
        }
    }
    let keys = h.client().send("GET", "/api/keys", &[], "").await.json();
    if !keys["keys"].as_array().unwrap().is_empty() {
        failures.push(format!("ATTACK SUCCEEDED: a key was created: {keys}"));
    }
    if !h.mock.requests().is_empty() {
        failures.push("ATTACK SUCCEEDED: a cross-site request reached the provider".into());
    }
    // Controls: the same actions from the dashboard's own origin, and from non-browser clients.
    let origin = format!("http://{}", h.addr);
    let r = h
        .client()
        .send(
            "POST",
            "/api/keys",
            &[JSON, ("origin", &origin), ("sec-fetch-site", "same-origin")],
            KEY_BODY,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = h
        .client()
        .send(
            "GET",
            "/api/logs",
            &[
                ("host", "ai.tail1234.ts.net"),
                ("sec-fetch-site", "same-origin"),
            ],
            "",
        )
        .await;
    assert_eq!(r.status, 200, "a MagicDNS name is vouched for: {}", r.body);
    assert_eq!(
        r.headers.get("cache-control").map(|v| v.to_str().unwrap()),
        Some("no-store")
    );
    report(failures);
}

impl CsrfCase {
    fn req_is_api(&self) -> bool {
        matches!(self.req, Req::Http { path, .. } if path.starts_with("/api/"))
    }
}

// ---- 7. SSRF: nothing a non-admin controls makes iris connect elsewhere --------------------

struct SsrfCase {
    name: &'static str,
    req: Req,
    status: u16,
}

static SSRF: &[SsrfCase] = &[
    SsrfCase {
        name: "a URL as the model",
        req: Req::Http {
            from: ALICE,
            method: "POST",
            path: "/v1/chat/completions",
            headers: &[JSON],
            body: r#"{"model": "http://127.0.0.1:{canary}/v1", "messages": []}"#,
        },
        status: 404,
    },
    SsrfCase {
        name: "provider/URL as the model",
        req: Req::Http {
            from: ALICE,
            method: "POST",
            path: "/v1/chat/completions",
            headers: &[JSON],
            body: r#"{"model": "openai/http://127.0.0.1:{canary}", "messages": []}"#,
        },
        status: 404,
    },
    SsrfCase {
        name: "a model with an @authority (gpt-4o-mini@127.0.0.1:port)",
        req: Req::Http {
            from: ALICE,
            method: "POST",
            path: "/v1/chat/completions",
            headers: &[JSON],
            body: r#"{"model": "gpt-4o-mini@127.0.0.1:{canary}", "messages": []}"#,
        },
        status: 404,
    },
    SsrfCase {
        name: "a Host header naming another server",
        req: Req::Http {
            from: ALICE,
            method: "POST",
            path: "/v1/chat/completions",
            headers: &[JSON, ("host", "127.0.0.1:{canary}")],
            body: "{body}",
        },
        status: 200,
    },
    SsrfCase {
        name: "X-Forwarded-Host naming another server",
        req: Req::Http {
            from: ALICE,
            method: "POST",
            path: "/v1/chat/completions",
            headers: &[JSON, ("x-forwarded-host", "127.0.0.1:{canary}")],
            body: "{body}",
        },
        status: 200,
    },
    SsrfCase {
        name: "Forwarded: host= naming another server",
        req: Req::Http {
            from: ALICE,
            method: "POST",
            path: "/v1/chat/completions",
            headers: &[JSON, ("forwarded", "host=127.0.0.1:{canary};proto=http")],
            body: "{body}",
        },
        status: 200,
    },
    SsrfCase {
        name: "an absolute-form request target naming another server (proxy-style request)",
        req: Req::Raw(
            "POST http://127.0.0.1:{canary}/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{canary}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}",
        ),
        status: 200,
    },
    SsrfCase {
        name: "CONNECT to another server",
        req: Req::Raw(
            "CONNECT 127.0.0.1:{canary} HTTP/1.1\r\nHost: 127.0.0.1:{canary}\r\nConnection: close\r\n\r\n",
        ),
        status: 404,
    },
    SsrfCase {
        name: "a query string carrying an authority (?x=@127.0.0.1:port/)",
        req: Req::Http {
            from: ALICE,
            method: "POST",
            path: "/v1/chat/completions?x=@127.0.0.1:{canary}/&y=http://127.0.0.1:{canary}/",
            headers: &[JSON],
            body: "{body}",
        },
        status: 200,
    },
    SsrfCase {
        name: "a path carrying an authority (/v1/chat/completions@127.0.0.1:port)",
        req: Req::Http {
            from: ALICE,
            method: "POST",
            path: "/v1/chat/completions@127.0.0.1:{canary}",
            headers: &[JSON],
            body: "{body}",
        },
        status: 404,
    },
    SsrfCase {
        name: "the model test button with a URL as the model",
        req: Req::Http {
            from: ALICE,
            method: "POST",
            path: "/api/models/test",
            headers: &[JSON],
            body: r#"{"model": "http://127.0.0.1:{canary}/v1/chat/completions"}"#,
        },
        status: 404,
    },
    SsrfCase {
        name: "a user saving a config whose provider points elsewhere (baseurl is admin-only)",
        req: Req::Http {
            from: ALICE,
            method: "PUT",
            path: "/api/config",
            headers: &[JSON],
            body: r#"{"config": "{\"providers\": {\"openai\": {\"baseurl\": \"http://127.0.0.1:{canary}\", \"models\": [\"gpt-4o-mini\"]}}}", "hash": ""}"#,
        },
        status: 403,
    },
    SsrfCase {
        name: "validating a config whose provider points elsewhere never connects to it",
        req: Req::Http {
            from: LOOPBACK,
            method: "POST",
            path: "/api/config/validate",
            headers: &[JSON],
            body: r#"{"config": "{\"providers\": {\"openai\": {\"baseurl\": \"http://127.0.0.1:{canary}\", \"models\": [\"gpt-4o-mini\"]}}}"}"#,
        },
        status: 200,
    },
];

#[tokio::test]
async fn nothing_a_caller_sends_makes_iris_connect_elsewhere() {
    let h = Harness::start().await;
    let canary = canary().await;
    let ctx = ctx(&h, canary.port);
    let mut failures = Vec::new();
    for case in SSRF {
        h.mock.reset();
        let before = canary.hits.load(Ordering::SeqCst);
        let a = run(&h, &ctx, &case.req).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let hits = canary.hits.load(Ordering::SeqCst) - before;
        // What was served went to the configured provider, nowhere else.
        let upstream_ok = h
            .mock
            .requests()
            .iter()
            .all(|r| r.header("host") == Some(h.mock.addr().to_string().as_str()));
        if a.status != case.status || hits > 0 || !upstream_ok {
            failures.push(format!(
                "ATTACK SUCCEEDED: {}: status {} (wanted {}), {hits} connection(s) to the canary, upstream hosts {:?}: {}",
                case.name,
                a.status,
                case.status,
                h.mock.requests().iter().map(|r| r.header("host").map(str::to_owned)).collect::<Vec<_>>(),
                a.body
            ));
        }
    }
    report(failures);
}

// ---- 8. Stale and forged config hashes, and hostile config texts ---------------------------

const CONFIG_CASES: &[&str] = &[
    "PUT with an empty hash",
    "PUT with a forged hash (the SHA-256 of the new text)",
    "PUT with a truncated current hash",
    "PUT with the current hash and extra characters",
    "PUT with the hash from before another admin's save (stale)",
    "PUT without a hash field",
    "PUT with a hash that is not a string",
    "rollback with a forged hash",
    "PUT of an add_headers value carrying CR LF and a second header",
    "PUT of add_headers setting Transfer-Encoding (smuggling towards the provider)",
    "PUT of add_headers setting Host (redirecting the provider request)",
    "PUT of a config nested 100,000 levels deep (stack exhaustion)",
    "validate of a config nested 100,000 levels deep (stack exhaustion)",
];

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[tokio::test]
async fn stale_forged_and_hostile_config_saves_change_nothing() {
    let h = Harness::start_with(Options {
        file: true,
        ..Options::default()
    })
    .await;
    let c = h.client();
    let get = || async {
        let v = c.send("GET", "/api/config", &[], "").await.json();
        (
            v["config"].as_str().unwrap().to_owned(),
            v["hash"].as_str().unwrap().to_owned(),
        )
    };
    let put = |body: Value| {
        let c = &c;
        async move {
            c.send("PUT", "/api/config", &[JSON], &body.to_string())
                .await
        }
    };
    // One legitimate save first, so there is a stale hash and a version to roll back to.
    let (t0, h0) = get().await;
    let t1 = t0.replace("X-Team: platform", "X-Team: saved");
    assert_eq!(put(json!({"config": t1, "hash": h0})).await.status, 200);
    let (text, hash) = get().await;
    let on_disk = std::fs::read_to_string(h.config_path.as_ref().unwrap()).unwrap();
    let evil = text.replace("X-Team: saved", "X-Team: evil");
    let with_header =
        |line: &str| text.replace("\"X-Team: saved\"", &serde_json::to_string(line).unwrap());
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let mut ck = Checks::new(CONFIG_CASES);
    let expect = |r: &Answer, status: u16| {
        (
            r.status == status,
            format!("status {} (wanted {status}): {}", r.status, r.body),
        )
    };
    let r = put(json!({"config": evil, "hash": ""})).await;
    let (ok, d) = expect(&r, 409);
    ck.check("PUT with an empty hash", ok, d);
    let r = put(json!({"config": evil, "hash": sha256_hex(&evil)})).await;
    let (ok, d) = expect(&r, 409);
    ck.check(
        "PUT with a forged hash (the SHA-256 of the new text)",
        ok,
        d,
    );
    let r = put(json!({"config": evil, "hash": &hash[..32]})).await;
    let (ok, d) = expect(&r, 409);
    ck.check("PUT with a truncated current hash", ok, d);
    let r = put(json!({"config": evil, "hash": format!("{hash}00")})).await;
    let (ok, d) = expect(&r, 409);
    ck.check("PUT with the current hash and extra characters", ok, d);
    let r = put(json!({"config": evil, "hash": h0})).await;
    let (ok, d) = expect(&r, 409);
    ck.check(
        "PUT with the hash from before another admin's save (stale)",
        ok,
        d,
    );
    let r = put(json!({"config": evil})).await;
    let (ok, d) = expect(&r, 400);
    ck.check("PUT without a hash field", ok, d);
    let r = put(json!({"config": evil, "hash": 0})).await;
    let (ok, d) = expect(&r, 400);
    ck.check("PUT with a hash that is not a string", ok, d);
    let hist = c.send("GET", "/api/config/history", &[], "").await.json();
    let first_id = hist["versions"].as_array().unwrap().last().unwrap()["id"].clone();
    let r = c
        .send(
            "POST",
            "/api/config/rollback",
            &[JSON],
            &json!({"id": first_id, "hash": sha256_hex(&t0)}).to_string(),
        )
        .await;
    let (ok, d) = expect(&r, 409);
    ck.check("rollback with a forged hash", ok, d);
    let r = put(json!({"config": with_header("X-Team: a\r\nX-Evil: 1"), "hash": hash})).await;
    let (ok, d) = expect(&r, 400);
    ck.check(
        "PUT of an add_headers value carrying CR LF and a second header",
        ok,
        d,
    );
    let r = put(json!({"config": with_header("Transfer-Encoding: chunked"), "hash": hash})).await;
    let (ok, d) = expect(&r, 400);
    ck.check(
        "PUT of add_headers setting Transfer-Encoding (smuggling towards the provider)",
        ok,
        d,
    );
    let r = put(json!({"config": with_header("Host: 127.0.0.1:1"), "hash": hash})).await;
    let (ok, d) = expect(&r, 400);
    ck.check(
        "PUT of add_headers setting Host (redirecting the provider request)",
        ok,
        d,
    );
    let r = put(json!({"config": deep, "hash": hash})).await;
    let (ok, d) = expect(&r, 400);
    ck.check(
        "PUT of a config nested 100,000 levels deep (stack exhaustion)",
        ok && r.json()["error"]["code"] == "invalid_config",
        d,
    );
    let r = c
        .send(
            "POST",
            "/api/config/validate",
            &[JSON],
            &json!({"config": deep}).to_string(),
        )
        .await;
    ck.check(
        "validate of a config nested 100,000 levels deep (stack exhaustion)",
        r.status == 200 && r.json()["valid"] == false,
        format!("{} {}", r.status, r.body),
    );
    // Nothing changed: not the running config, not the file.
    assert_eq!(get().await.1, hash, "the running config changed");
    assert_eq!(
        std::fs::read_to_string(h.config_path.as_ref().unwrap()).unwrap(),
        on_disk,
        "the config file changed"
    );
    ck.finish();
}

// ---- 9. Oversized and deeply nested JSON ---------------------------------------------------

const JSON_CASES: &[&str] = &[
    "an LLM body that is an array nested 100,000 deep",
    "a valid LLM request carrying a value nested 10,000 deep",
    "an admin API body nested 100,000 deep",
    "a 3 MiB admin API body",
    "a 200,000-member object as an LLM body",
];

#[tokio::test]
async fn oversized_and_deeply_nested_json_is_refused_without_harm() {
    let h = Harness::start().await;
    let c = h.client();
    let mut ck = Checks::new(JSON_CASES);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = c.post("/v1/chat/completions", &[], &deep).await;
    ck.check(
        "an LLM body that is an array nested 100,000 deep",
        r.status == 400,
        format!("{} {}", r.status, r.body),
    );
    let nested = format!(
        r#"{{"model":"gpt-4o-mini","messages":[],"metadata":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let r = c.post("/v1/chat/completions", &[], &nested).await;
    ck.check(
        "a valid LLM request carrying a value nested 10,000 deep",
        // iris skips the value without recursing and passes it on; the provider judges it.
        r.status < 500 && h.mock.requests().len() == 1,
        format!("{} {}", r.status, r.body),
    );
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let r = c.send("POST", "/api/keys", &[JSON], &deep_obj).await;
    ck.check(
        "an admin API body nested 100,000 deep",
        r.status == 400,
        format!("{} {}", r.status, r.body),
    );
    let big = json!({"for": "x".repeat(3 << 20)}).to_string();
    let r = c.send("POST", "/api/keys", &[JSON], &big).await;
    ck.check(
        "a 3 MiB admin API body",
        r.status == 413 && r.json()["error"]["code"] == "too_large",
        format!(
            "{} {}",
            r.status,
            r.body.chars().take(200).collect::<String>()
        ),
    );
    let wide: String = (0..200_000).map(|i| format!("\"k{i}\":0,")).collect();
    let wide = format!("{{{wide}\"model\":\"no-such-model\"}}");
    let r = c.post("/v1/chat/completions", &[], &wide).await;
    ck.check(
        "a 200,000-member object as an LLM body",
        r.status == 404,
        format!("{} {}", r.status, r.body),
    );
    // Nothing else reached the provider, and the gateway (and its observer, which saw the bodies
    // of the refused requests) is alive.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.mock.requests().len(), 1);
    let ok = c
        .post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    ck.finish();
}

// ---- 10. Key guessing -----------------------------------------------------------------------

const KEY_CASES: &[&str] = &[
    "a near miss (one character off a real key) gets the same answer as a random guess",
    "malformed iris keys count as failed attempts",
    "once blocked, even the right key is refused (no oracle while blocked)",
    "guesses in x-api-key are limited",
    "guesses in x-goog-api-key are limited",
    "guesses through the admin API share the limit, and its 429 carries Retry-After",
    "a tailnet peer presenting another user's iris key stays itself",
    "keys are stored only as SHA-256 digests",
];

async fn guess(c: &TestClient, path: &str, header: &str, value: &str) -> Answer {
    let v = if header == "authorization" {
        format!("Bearer {value}")
    } else {
        value.to_owned()
    };
    if path.starts_with("/api/") {
        c.send("GET", path, &[(header, &v)], "").await
    } else {
        c.post(path, &[(header, &v)], &chat("gpt-4o-mini", false))
            .await
    }
}

fn random_key() -> String {
    iris_identity::keys::generate().token
}

#[tokio::test]
async fn key_guessing_is_slow_and_learns_nothing() {
    let h = Harness::start_with(Options {
        iris: r#", "limits": {"key_failures_per_minute": 5}"#.into(),
        ..Options::default()
    })
    .await;
    let admin = h.client();
    let created = admin
        .send(
            "POST",
            "/api/keys",
            &[JSON],
            &json!({"for": "carol@example.com"}).to_string(),
        )
        .await
        .json();
    let carol = created["token"].as_str().unwrap().to_owned();
    let mut ck = Checks::new(KEY_CASES);

    let c = h.client_from([127, 0, 0, 30]);
    let last = carol.chars().last().unwrap();
    let near = format!(
        "{}{}",
        &carol[..carol.len() - 1],
        if last == 'A' { 'B' } else { 'A' }
    );
    let a = guess(&c, "/v1/chat/completions", "authorization", &near).await;
    let b = guess(&c, "/v1/chat/completions", "authorization", &random_key()).await;
    let msg = |x: &Answer| x.json()["error"]["message"].clone();
    ck.check(
        "a near miss (one character off a real key) gets the same answer as a random guess",
        a.status == 401 && b.status == 401 && msg(&a) == msg(&b),
        format!("{} {} / {} {}", a.status, a.body, b.status, b.body),
    );

    let blocked_after = |c: TestClient, path: &'static str, header: &'static str, bad: String| async move {
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(guess(&c, path, header, &bad).await.status);
        }
        (c, statuses)
    };
    let (c, s) = blocked_after(
        h.client_from([127, 0, 0, 31]),
        "/v1/chat/completions",
        "authorization",
        "iris_sk_short".into(),
    )
    .await;
    let r = guess(&c, "/v1/chat/completions", "authorization", &random_key()).await;
    ck.check(
        "malformed iris keys count as failed attempts",
        s.iter().all(|&x| x == 401) && r.status == 429,
        format!("{s:?} then {}", r.status),
    );

    let (c, s) = blocked_after(
        h.client_from([127, 0, 0, 32]),
        "/v1/chat/completions",
        "authorization",
        random_key(),
    )
    .await;
    let r = guess(&c, "/v1/chat/completions", "authorization", &carol).await;
    ck.check(
        "once blocked, even the right key is refused (no oracle while blocked)",
        s.iter().all(|&x| x == 401) && r.status == 429,
        format!("{s:?} then {}", r.status),
    );

    for (name, last, path, header) in [
        (
            "guesses in x-api-key are limited",
            33,
            "/v1/messages",
            "x-api-key",
        ),
        (
            "guesses in x-goog-api-key are limited",
            34,
            "/v1/chat/completions",
            "x-goog-api-key",
        ),
    ] {
        let (c, s) =
            blocked_after(h.client_from([127, 0, 0, last]), path, header, random_key()).await;
        let r = guess(&c, path, header, &random_key()).await;
        ck.check(
            name,
            s.iter().all(|&x| x == 401) && r.status == 429,
            format!("{s:?} then {}", r.status),
        );
    }

    let (c, s) = blocked_after(
        h.client_from([127, 0, 0, 35]),
        "/api/whoami",
        "authorization",
        random_key(),
    )
    .await;
    let api = guess(&c, "/api/whoami", "authorization", &random_key()).await;
    let llm = guess(&c, "/v1/chat/completions", "authorization", &random_key()).await;
    ck.check(
        "guesses through the admin API share the limit, and its 429 carries Retry-After",
        s.iter().all(|&x| x == 401)
            && api.status == 429
            && llm.status == 429
            && api.headers.get("retry-after").is_some(),
        format!(
            "{s:?} then {} {:?} / {}",
            api.status, api.headers, llm.status
        ),
    );

    let me = h
        .client_from(ALICE)
        .send(
            "GET",
            "/api/whoami",
            &[("authorization", &format!("Bearer {carol}"))],
            "",
        )
        .await
        .json();
    ck.check(
        "a tailnet peer presenting another user's iris key stays itself",
        me["identity"]["login"] == "alice@example.com" && me["identity"]["source"] == "whois",
        &me,
    );

    let stored = h.store.list_keys().await.unwrap();
    ck.check(
        "keys are stored only as SHA-256 digests",
        stored.len() == 1
            && stored[0].token_hash == iris_identity::keys::hash_token(&carol)
            && stored[0].token_hash != carol
            && !format!("{stored:?}").contains(&carol),
        format!("{stored:?}"),
    );
    // Control: the right key, from an address that did not guess, works.
    let ok = guess(
        &h.client_from([127, 0, 0, 36]),
        "/v1/chat/completions",
        "authorization",
        &carol,
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    ck.finish();
}

// ---- 11. Reading another user's logs, captures, sessions or keys ---------------------------

const CROSS_USER_CASES: &[&str] = &[
    "logs: a cursor taken from another user's records",
    "usage: a login= filter naming another user",
    "sessions: a login= filter naming another user",
    "sessions: another user's session by id",
    "captures: another user's request by id",
    "captures: a key holder asking for a tailnet user's request",
    "tools: another identity's tool calls (a filter naming it is ignored)",
    "adoption CSV as a user",
    "health as a user shows no config, paths or queues",
    "a user minting a key for a tag it does not carry",
    "a tagged node minting a key for a subset of its tags",
    "a key for tag:ci reading the tag:ci+tag:prod node's logs",
    "SQL in a filter value (admin)",
    "SQL in a capture id (user)",
    "SQL in a session id (user)",
];

#[tokio::test]
async fn users_cannot_read_each_others_records() {
    let h = Harness::start().await;
    let admin = h.client();
    let alice = h.client_from(ALICE);
    let ci = h.client_from(CI_NODE);
    let mk = |subject: &str| {
        let admin = &admin;
        let body = json!({"for": subject}).to_string();
        async move {
            admin.send("POST", "/api/keys", &[JSON], &body).await.json()["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let carol = format!("Bearer {}", mk("carol@example.com").await);
    let ci_key = format!("Bearer {}", mk("tag:ci").await);
    let carol_hdr = [("authorization", carol.as_str())];
    // Traffic: alice (a Claude Code session), carol by key (another session), the CI node.
    let session = |sid: &str, model: &str| {
        json!({"model": model, "max_tokens": 8,
            "metadata": {"user_id": json!({"device_id": "d", "account_uuid": "", "session_id": sid}).to_string()},
            "messages": [{"role": "user", "content": "hello"}]})
        .to_string()
    };
    let r = alice
        .post(
            "/v1/messages",
            &[],
            &session("aaaaaaaa-0000-4000-8000-000000000001", "claude-haiku-4-5"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = admin
        .post(
            "/v1/chat/completions",
            &carol_hdr,
            &chat("gpt-4o-mini", false),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut with_tool: Value = serde_json::from_str(&session(
        "cccccccc-0000-4000-8000-000000000003",
        "claude-haiku-4-5",
    ))
    .unwrap();
    with_tool["tools"] =
        json!([{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}]);
    let r = ci.post("/v1/messages", &[], &with_tool.to_string()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let all = admin.send("GET", "/api/logs", &[], "").await.json()["records"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(all.len(), 3, "{all:?}");
    let id_of = |login: &str| {
        all.iter()
            .find(|r| r["login"] == login)
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let (alice_rec, carol_rec) = (id_of("alice@example.com"), id_of("carol@example.com"));
    let sessions = admin.send("GET", "/api/sessions", &[], "").await.json();
    let carol_session = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["login"] == "carol@example.com")
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .unwrap();

    let only_alice = |v: &Value, field: &str, key: &str| {
        v[field]
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x[key] == "alice@example.com"))
    };
    let mut ck = Checks::new(CROSS_USER_CASES);
    let r = alice
        .send("GET", &format!("/api/logs?cursor={carol_rec}"), &[], "")
        .await
        .json();
    ck.check(
        "logs: a cursor taken from another user's records",
        only_alice(&r, "records", "login"),
        &r,
    );
    let r = alice
        .send(
            "GET",
            "/api/usage?login=carol%40example.com&group_by=user",
            &[],
            "",
        )
        .await
        .json();
    ck.check(
        "usage: a login= filter naming another user",
        only_alice(&r, "groups", "key"),
        &r,
    );
    let r = alice
        .send("GET", "/api/sessions?login=carol%40example.com", &[], "")
        .await
        .json();
    ck.check(
        "sessions: a login= filter naming another user",
        only_alice(&r, "sessions", "login"),
        &r,
    );
    let r = alice
        .send(
            "GET",
            &format!("/api/sessions/{}", urlencode(&carol_session)),
            &[],
            "",
        )
        .await;
    ck.check(
        "sessions: another user's session by id",
        r.status == 404,
        format!("{} {}", r.status, r.body),
    );
    let r = alice
        .send("GET", &format!("/api/captures/{carol_rec}"), &[], "")
        .await;
    ck.check(
        "captures: another user's request by id",
        r.status == 404,
        format!("{} {}", r.status, r.body),
    );
    let r = admin
        .send("GET", &format!("/api/captures/{alice_rec}"), &carol_hdr, "")
        .await;
    ck.check(
        "captures: a key holder asking for a tailnet user's request",
        r.status == 404,
        format!("{} {}", r.status, r.body),
    );
    let all_tools = admin.send("GET", "/api/tools", &[], "").await;
    assert!(all_tools.body.contains("get_weather"), "{}", all_tools.body);
    let r = alice
        .send("GET", "/api/tools?login=tag%3Aci%2Ctag%3Aprod", &[], "")
        .await;
    ck.check(
        "tools: another identity's tool calls (a filter naming it is ignored)",
        r.status == 200 && !r.body.contains("get_weather"),
        &r.body,
    );
    let r = alice.send("GET", "/api/adoption.csv", &[], "").await;
    ck.check(
        "adoption CSV as a user",
        r.status == 403 && !r.body.contains("carol"),
        format!("{} {}", r.status, r.body),
    );
    let r = alice.send("GET", "/api/health", &[], "").await.json();
    let keys: Vec<_> = r.as_object().unwrap().keys().cloned().collect();
    ck.check(
        "health as a user shows no config, paths or queues",
        keys.iter().all(|k| k == "status" || k == "version"),
        &r,
    );
    let r = alice
        .send(
            "POST",
            "/api/keys",
            &[JSON],
            &json!({"for": "tag:ci"}).to_string(),
        )
        .await;
    ck.check(
        "a user minting a key for a tag it does not carry",
        r.status == 403,
        format!("{} {}", r.status, r.body),
    );
    let r = ci
        .send(
            "POST",
            "/api/keys",
            &[JSON],
            &json!({"for": "tag:ci"}).to_string(),
        )
        .await;
    ck.check(
        "a tagged node minting a key for a subset of its tags",
        r.status == 403,
        format!("{} {}", r.status, r.body),
    );
    let r = admin
        .send(
            "GET",
            "/api/logs",
            &[("authorization", ci_key.as_str())],
            "",
        )
        .await
        .json();
    ck.check(
        "a key for tag:ci reading the tag:ci+tag:prod node's logs",
        r["records"].as_array().is_some_and(|a| a.is_empty()),
        &r,
    );
    let r = admin
        .send("GET", "/api/logs?login=x%27%20OR%20%271%27%3D%271", &[], "")
        .await;
    ck.check(
        "SQL in a filter value (admin)",
        r.status == 200 && r.json()["records"].as_array().unwrap().is_empty(),
        format!("{} {}", r.status, r.body),
    );
    let r = alice
        .send("GET", "/api/captures/x%27%20OR%20%271%27%3D%271", &[], "")
        .await;
    ck.check(
        "SQL in a capture id (user)",
        r.status == 404,
        format!("{} {}", r.status, r.body),
    );
    let r = alice
        .send("GET", "/api/sessions/x%27%20OR%201%3D1--", &[], "")
        .await;
    ck.check(
        "SQL in a session id (user)",
        r.status == 404,
        format!("{} {}", r.status, r.body),
    );
    ck.finish();
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---- 12. The provider keys never appear anywhere but upstream ------------------------------

const SECRET_CASES: &[&str] = &[
    "error bodies of refused and failed requests",
    "response headers of every answer",
    "/api answers to a non-admin",
    "/api answers to an admin (the config shows the ${VAR} macro, not the key)",
    "a prompt that contains a provider key is redacted in its capture",
    "every capture in the store",
    "every usage record in the store",
    "every log line iris wrote (debug level)",
    "the Debug form of the running config (what a panic message would print)",
    "every file iris wrote in its directory (the config file)",
];

/// Log lines written during the test (the test runs on one thread, so the thread's default
/// subscriber sees every task of the in-process gateway).
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> LogBuf {
        self.clone()
    }
}

fn leaks(text: &str) -> Vec<&'static str> {
    [OPENAI_KEY, ANTHROPIC_KEY]
        .into_iter()
        .filter(|k| text.contains(k))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn provider_keys_appear_nowhere_iris_writes() {
    let logs = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut h = Harness::start_with(Options {
        iris: r#", "limits": {"max_body_bytes": 4096}, "timeouts": {"first_byte": "300ms"}"#.into(),
        file: true,
        ..Options::default()
    })
    .await;
    let admin = h.client();
    let alice = h.client_from(ALICE);
    let bob = h.client_from(BOB);
    let mut answers: Vec<(String, Answer)> = Vec::new();
    // Refusals and failures of every kind.
    let big = format!(
        "{{\"model\":\"gpt-4o-mini\",\"pad\":\"{}\"}}",
        "x".repeat(8000)
    );
    let bad_key = format!("Bearer {}", random_key());
    for (label, c, path, headers, body) in [
        (
            "401 unknown key",
            &admin,
            "/v1/chat/completions",
            vec![("authorization", bad_key.as_str())],
            chat("gpt-4o-mini", false),
        ),
        (
            "403 no role",
            &bob,
            "/v1/chat/completions",
            vec![],
            chat("gpt-4o-mini", false),
        ),
        (
            "404 not granted",
            &alice,
            "/v1/messages",
            vec![],
            messages("claude-sonnet-4-5", false),
        ),
        (
            "404 unknown model",
            &admin,
            "/v1/chat/completions",
            vec![],
            chat("nope", false),
        ),
        (
            "400 bad json",
            &admin,
            "/v1/messages",
            vec![],
            "{\"model\":".to_owned(),
        ),
        ("413 too large", &admin, "/v1/chat/completions", vec![], big),
        (
            "upstream 401",
            &admin,
            "/v1/chat/completions",
            vec![("x-mock-status", "401")],
            chat("gpt-4o-mini", false),
        ),
        (
            "upstream 500",
            &admin,
            "/v1/messages",
            vec![("x-mock-status", "500")],
            messages("claude-haiku-4-5", false),
        ),
        (
            "504 timeout",
            &admin,
            "/v1/messages",
            vec![("x-mock-hang", "1")],
            messages("claude-haiku-4-5", false),
        ),
        (
            "200 stream",
            &admin,
            "/v1/messages",
            vec![],
            messages("claude-haiku-4-5", true),
        ),
        (
            "200 model test",
            &admin,
            "/api/models/test",
            vec![JSON],
            json!({"model": "gpt-4o-mini"}).to_string(),
        ),
    ] {
        answers.push((label.into(), c.post(path, &headers, &body).await));
    }
    // A prompt that carries the key (pasted by mistake, or echoed back).
    let prompt = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("my key is {OPENAI_KEY}")}]}).to_string();
    let r = admin.post("/v1/chat/completions", &[], &prompt).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let prompt_rec = r.headers["x-iris-request-id"].to_str().unwrap().to_owned();
    // An unreachable provider: the 502 path logs the connection error in detail.
    let mut cfg = h.gateway.runtime().config.clone();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for p in &mut cfg.providers {
        if p.id == "openai" {
            p.baseurl = format!("http://127.0.0.1:{closed}");
        }
    }
    h.gateway.replace_config(cfg);
    let r = admin
        .post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
        .await;
    assert_eq!(r.status, 502, "{}", r.body);
    answers.push(("502 unreachable".into(), r));
    tokio::time::sleep(Duration::from_millis(400)).await;

    let mut ck = Checks::new(SECRET_CASES);
    let found: Vec<_> = answers
        .iter()
        .filter(|(_, a)| !leaks(&a.body).is_empty())
        .map(|(l, _)| l.clone())
        .collect();
    ck.check(
        "error bodies of refused and failed requests",
        found.is_empty(),
        format!("{found:?}"),
    );
    let found: Vec<_> = answers
        .iter()
        .filter(|(_, a)| !leaks(&format!("{:?}", a.headers)).is_empty())
        .map(|(l, _)| l.clone())
        .collect();
    ck.check(
        "response headers of every answer",
        found.is_empty(),
        format!("{found:?}"),
    );
    let user_paths = [
        "/api/whoami",
        "/api/health",
        "/api/providers",
        "/api/models",
        "/api/prices",
        "/api/usage",
        "/api/logs",
        "/api/sessions",
        "/api/tools",
        "/api/keys",
        "/api/openapi.json",
        "/api/config",
    ];
    let mut found = Vec::new();
    for p in user_paths {
        let a = alice.send("GET", p, &[], "").await;
        if !leaks(&a.body).is_empty() {
            found.push(p);
        }
    }
    ck.check(
        "/api answers to a non-admin",
        found.is_empty(),
        format!("{found:?}"),
    );
    let mut found = Vec::new();
    let mut config_text = String::new();
    for p in user_paths
        .iter()
        .chain(&["/api/config/history", "/api/adoption"])
    {
        let a = admin.send("GET", p, &[], "").await;
        if *p == "/api/config" {
            config_text = a.body.clone();
        }
        if !leaks(&a.body).is_empty() {
            found.push(*p);
        }
    }
    ck.check(
        "/api answers to an admin (the config shows the ${VAR} macro, not the key)",
        found.is_empty() && config_text.contains("${T_OPENAI_KEY}"),
        format!("{found:?}"),
    );
    let cap = admin
        .send("GET", &format!("/api/captures/{prompt_rec}"), &[], "")
        .await;
    ck.check(
        "a prompt that contains a provider key is redacted in its capture",
        cap.status == 200 && leaks(&cap.body).is_empty() && cap.body.contains("my key is"),
        format!(
            "{} {}",
            cap.status,
            cap.body.chars().take(300).collect::<String>()
        ),
    );
    let records = h
        .store
        .recent_usage(&UsageQuery {
            limit: 1000,
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    let mut captures = 0;
    let mut found = Vec::new();
    for r in &records {
        if let Some(c) = h.store.capture(&r.request_id).await.unwrap() {
            captures += 1;
            // The document and the body texts stored beside it.
            let stored = [
                Some(&c.body),
                c.request_body.as_ref(),
                c.response_body.as_ref(),
            ];
            if stored.into_iter().flatten().any(|t| !leaks(t).is_empty()) {
                found.push(r.request_id.clone());
            }
        }
    }
    ck.check(
        "every capture in the store",
        found.is_empty() && captures >= 5,
        format!("{captures} captures, leaking: {found:?}"),
    );
    let dump = serde_json::to_string(&records).unwrap();
    ck.check(
        "every usage record in the store",
        leaks(&dump).is_empty() && records.len() >= 10,
        format!("{} records", records.len()),
    );
    h.shutdown().await;
    let log_text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    ck.check(
        "every log line iris wrote (debug level)",
        leaks(&log_text).is_empty() && log_text.contains("iris_server"),
        format!(
            "{} bytes of logs; leaks {:?}",
            log_text.len(),
            leaks(&log_text)
        ),
    );
    let debug = format!("{:?}", h.gateway.runtime().config);
    ck.check(
        "the Debug form of the running config (what a panic message would print)",
        leaks(&debug).is_empty() && debug.contains("anthropic"),
        "a key in Debug output",
    );
    let mut files = Vec::new();
    let mut found = Vec::new();
    for e in std::fs::read_dir(h.dir.path()).unwrap() {
        let path = e.unwrap().path();
        if path.is_file() {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            if !leaks(&text).is_empty() {
                found.push(path.display().to_string());
            }
            files.push(path);
        }
    }
    ck.check(
        "every file iris wrote in its directory (the config file)",
        found.is_empty() && !files.is_empty(),
        format!("{files:?}, leaking: {found:?}"),
    );
    // Control: the keys were really planted (the provider got them), so not finding them means
    // something.
    let up: HashMap<_, _> = h
        .mock
        .requests()
        .iter()
        .flat_map(|r| r.headers.clone())
        .collect();
    assert!(
        up.values().any(|v| v.contains(ANTHROPIC_KEY)),
        "the planted key never reached the provider"
    );
    ck.finish();
}

// ---- the count ------------------------------------------------------------------------------

#[test]
fn the_suite_has_at_least_50_cases() {
    let tables: [(&str, Vec<&str>); 12] = [
        ("http framing", FRAMING.iter().map(|c| c.name).collect()),
        ("paths", PATHS.iter().map(|c| c.name).collect()),
        ("identity", IDENTITY.iter().map(|c| c.name).collect()),
        ("model grants", MODELS.iter().map(|c| c.name).collect()),
        ("header injection", HEADERS.iter().map(|c| c.name).collect()),
        ("cross-site", CSRF.iter().map(|c| c.name).collect()),
        ("ssrf", SSRF.iter().map(|c| c.name).collect()),
        ("config hashes", CONFIG_CASES.to_vec()),
        ("json", JSON_CASES.to_vec()),
        ("keys", KEY_CASES.to_vec()),
        ("cross-user", CROSS_USER_CASES.to_vec()),
        ("secrets", SECRET_CASES.to_vec()),
    ];
    let mut all: Vec<&str> = Vec::new();
    for (table, names) in &tables {
        for n in names {
            assert!(!all.contains(n), "{table}: case {n:?} appears twice");
            all.push(n);
        }
    }
    let total = all.len();
    println!("attack cases: {total}");
    for (table, names) in &tables {
        println!("  {table}: {}", names.len());
    }
    assert!(total >= 50, "only {total} attack cases");
}
