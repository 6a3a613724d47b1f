//! What iris lost in a scenario: usage records its queues dropped, records passed to the usage
//! writer without enrichment (the observer's queue was full), and captures dropped (the store
//! did not keep up). A throughput bought by falling behind would show here: every loss path of
//! the gateway is counted in `/api/health`'s admin detail, which the harness reads on iris's
//! break-glass admin socket (a unix socket in its data directory; no identity needed) once iris
//! has written what it holds. "Written" is judged by the usage queue alone (`/api/health` does
//! not count the captures the observer still holds): a capture dropped after the check counts
//! against the next scenario, or, after the last one, is not seen.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One iris instance's losses during one scenario.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LossRecord {
    pub scenario: String,
    pub instance: String,
    /// Usage records dropped (queue full, store failing, shutdown).
    pub usage_dropped: u64,
    /// Records written without session, cost and capture (the observer's queue was full).
    pub unenriched: u64,
    pub captures_dropped: u64,
    /// Usage records still queued when the check stopped waiting (0: all written).
    pub queued: u64,
}

impl LossRecord {
    pub fn total(&self) -> u64 {
        self.usage_dropped + self.unenriched + self.captures_dropped + self.queued
    }
}

/// The counters as `/api/health` reports them (cumulative since iris started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub usage_dropped: u64,
    pub unenriched: u64,
    pub captures_dropped: u64,
    pub queued: u64,
}

impl Counters {
    /// The record of what was lost since `before`.
    pub fn since(&self, before: &Counters, scenario: &str, instance: &str) -> LossRecord {
        LossRecord {
            scenario: scenario.to_owned(),
            instance: instance.to_owned(),
            usage_dropped: self.usage_dropped.saturating_sub(before.usage_dropped),
            unenriched: self.unenriched.saturating_sub(before.unenriched),
            captures_dropped: self
                .captures_dropped
                .saturating_sub(before.captures_dropped),
            queued: self.queued,
        }
    }

    /// From a `/api/health` answer with the admin detail.
    pub fn from_health(v: &Value) -> anyhow::Result<Counters> {
        let u = v
            .get("usage")
            .context("`/api/health` has no `usage` detail (not answered as an admin)")?;
        let n = |k: &str| {
            u.get(k)
                .and_then(Value::as_u64)
                .with_context(|| format!("`usage.{k}` is missing in `/api/health`"))
        };
        Ok(Counters {
            usage_dropped: n("dropped")?,
            unenriched: n("unenriched")?,
            captures_dropped: n("captures_dropped")?,
            queued: n("queued")?,
        })
    }
}

/// `GET /api/health` over the admin socket (HTTP/1.1, the connection closed after it).
pub async fn health(socket: &Path) -> anyhow::Result<Value> {
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(socket)
            .await
            .with_context(|| format!("cannot connect to {}", socket.display()))?;
        s.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        parse_response(&buf)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .context("`/api/health` did not answer within 10 s")?
}

/// The JSON body of a complete `200` response with a `Content-Length` (what axum sends for a
/// JSON answer).
fn parse_response(raw: &[u8]) -> anyhow::Result<Value> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the HTTP head")?;
    let head = std::str::from_utf8(&raw[..split]).context("an HTTP head that is not text")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split(' ').nth(1) != Some("200") {
        bail!("`/api/health` answered {status:?}");
    }
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .context("`/api/health` answered without a Content-Length")?;
    if body.len() != length {
        bail!("`/api/health` sent {} body bytes of {length}", body.len());
    }
    serde_json::from_slice(body).context("`/api/health` sent a body that is not JSON")
}

/// iris's counters once it has written what it holds: the usage queue read empty twice, a
/// quarter of a second apart (the observer hands records over in bursts), or `wait` passed.
pub async fn settled(socket: &Path, wait: Duration) -> anyhow::Result<Counters> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut empty_before = false;
    loop {
        let c = Counters::from_health(&health(socket).await?)?;
        let empty = c.queued == 0;
        if (empty && empty_before) || tokio::time::Instant::now() >= deadline {
            return Ok(c);
        }
        empty_before = empty;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_health_answer_is_read_and_checked() {
        let body = r#"{"status":"ok","usage":{"queued":3,"dropped":1,"unenriched":0,"captures_dropped":7}}"#;
        let ok = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let c = Counters::from_health(&parse_response(ok.as_bytes()).unwrap()).unwrap();
        assert_eq!(
            c,
            Counters {
                usage_dropped: 1,
                unenriched: 0,
                captures_dropped: 7,
                queued: 3
            }
        );
        let before = Counters {
            captures_dropped: 5,
            ..Counters::default()
        };
        let r = c.since(&before, "chat", "iris");
        assert_eq!((r.usage_dropped, r.captures_dropped, r.queued), (1, 2, 3));
        assert_eq!(r.total(), 6);

        // A cut body, another status, no length, and a non-admin answer are errors.
        let cut = &ok.as_bytes()[..ok.len() - 1];
        assert!(parse_response(cut).is_err());
        let denied = ok.replace("200 OK", "403 Forbidden");
        assert!(parse_response(denied.as_bytes()).is_err());
        let chunked = ok.replace("Content-Length", "Transfer-Encoding: chunked\r\nX");
        assert!(parse_response(chunked.as_bytes()).is_err());
        let plain = serde_json::json!({"status": "ok"});
        assert!(Counters::from_health(&plain).is_err());
    }
}
