//! Small HTTP client helpers shared by the integration tests.
#![allow(dead_code)]
// each test binary uses a different subset
// Test helpers: a failed request is a failed test, so panicking with context is the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;

pub struct Reply {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// Time from sending to the response head.
    pub ttfb: Duration,
    /// Time from sending to the last body byte.
    pub total: Duration,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// SSE events as (event name, data) pairs.
    pub fn sse(&self) -> Vec<(Option<String>, String)> {
        let text = self.text();
        text.split("\n\n")
            .filter(|block| !block.trim().is_empty())
            .map(|block| {
                let mut event = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event = Some(name.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    } else {
                        panic!("unexpected SSE line {line:?} in {text}");
                    }
                }
                (event, data)
            })
            .collect()
    }
}

/// Sends `method url` with `headers` and `body` over TCP.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let start = Instant::now();
    let resp = client.request(req).await.expect("send");
    let ttfb = start.elapsed();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
        ttfb,
        total: start.elapsed(),
    }
}

pub async fn post_json(url: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    send("POST", url, &all, &body.to_string()).await
}

/// Sends a request over a unix socket on a fresh connection. `host: None` sends no Host header.
pub async fn unix_get(socket: &Path, path_and_query: &str, headers: &[(&str, &str)]) -> Reply {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect unix socket");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::builder().method("GET").uri(path_and_query);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let start = Instant::now();
    let resp = sender.send_request(req).await.expect("send");
    let ttfb = start.elapsed();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
        ttfb,
        total: start.elapsed(),
    }
}

/// Runs `cmd`, waits (bounded) for its first stdout line and returns it with the child.
pub fn spawn_with_first_line(cmd: &mut std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead as _;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("no listening line within 10 s");
    (child, line.trim_end().to_owned())
}

/// Sends SIGTERM and waits (bounded) for the exit status.
pub fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
