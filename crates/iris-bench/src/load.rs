//! The load generator: HTTP/1.1 keep-alive connections driven by hyper's low-level client, one
//! task per connection, every loop bounded by a deadline.
//!
//! Four shapes of load:
//! - [`closed_loop`]: N connections, each sends its next request as soon as the previous answer
//!   is complete. Measures the highest throughput at N connections.
//! - [`open_loop`]: a fixed request rate. A pacer thread releases request *tickets* on a fixed
//!   schedule; a worker takes the next ticket when it is free and the latency is measured from
//!   the ticket's **scheduled** time, so a stalled server is charged for the requests it delayed
//!   (no coordinated omission). The pacer's own lateness is reported apart ([`LoadReport::lag`]).
//! - [`sse`]: streaming requests, closed-loop, measuring time to first byte, total time, and how
//!   the events arrived (frames per stream, events per frame, gaps between frames).
//! - [`hold_streams`]: many concurrent slow streams, one connection each, for the memory
//!   scenario.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;
use tokio::sync::{Mutex, Semaphore, mpsc};

use crate::stats::LatencyHist;

/// Longest time one request (head and whole body) may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest time a TCP connect plus handshake may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the load goes.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// Bind client sockets to this loopback address (to look like another tailnet peer).
    pub source_ip: Option<IpAddr>,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            source_ip: None,
        }
    }
}

/// One request, sent again and again.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    pub method: Method,
    /// Path and query.
    pub path: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
    /// For streams: bytes the last event must contain (`message_stop`), or the stream is an
    /// error (cut short).
    pub expect_tail: Option<&'static [u8]>,
}

impl RequestSpec {
    /// A JSON POST.
    pub fn post_json(path: &str, body: impl Into<Bytes>) -> RequestSpec {
        RequestSpec {
            method: Method::POST,
            path: path.to_owned(),
            headers: vec![(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body: body.into(),
            expect_tail: None,
        }
    }

    /// Adds a header (names and values are the harness's own constants or checked input).
    pub fn header(mut self, name: &'static str, value: &str) -> anyhow::Result<RequestSpec> {
        self.headers
            .push((HeaderName::from_static(name), HeaderValue::from_str(value)?));
        Ok(self)
    }

    pub fn expect_tail(mut self, tail: &'static [u8]) -> RequestSpec {
        self.expect_tail = Some(tail);
        self
    }

    fn build(&self, host: &HeaderValue) -> Result<Request<Full<Bytes>>, http::Error> {
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header(http::header::HOST, host.clone());
        for (n, v) in &self.headers {
            b = b.header(n, v);
        }
        b.body(Full::new(self.body.clone()))
    }
}

/// Requests that did not succeed, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Errors {
    /// A non-2xx status.
    pub status: u64,
    /// Connect, protocol or IO failures, and request timeouts.
    pub transport: u64,
    /// A stream without its final event.
    pub incomplete: u64,
    /// Open loop: tickets never sent before the hard deadline.
    pub unsent: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.status + self.transport + self.incomplete + self.unsent
    }

    fn add(&mut self, o: &Errors) {
        self.status += o.status;
        self.transport += o.transport;
        self.incomplete += o.incomplete;
        self.unsent += o.unsent;
    }
}

/// What a closed- or open-loop run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Successful requests.
    pub ok: u64,
    pub errors: Errors,
    /// The first error seen, for the log.
    pub first_error: Option<String>,
    /// Wall time of the measured part.
    pub elapsed: Duration,
    pub latency: LatencyHist,
    /// Open loop: how late requests were sent after their scheduled time (the generator's own
    /// share of the latency).
    pub lag: LatencyHist,
    /// Response body bytes received.
    pub bytes: u64,
}

impl LoadReport {
    pub fn throughput(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.ok as f64 / s } else { 0.0 }
    }

    fn merge(&mut self, o: LoadReport) {
        self.ok += o.ok;
        self.errors.add(&o.errors);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.latency.merge(&o.latency);
        self.lag.merge(&o.lag);
        self.bytes += o.bytes;
    }

    fn error(&mut self, kind: ErrorKind, detail: impl FnOnce() -> String) {
        match kind {
            ErrorKind::Status => self.errors.status += 1,
            ErrorKind::Transport => self.errors.transport += 1,
            ErrorKind::Incomplete => self.errors.incomplete += 1,
        }
        if self.first_error.is_none() {
            self.first_error = Some(detail());
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum ErrorKind {
    Status,
    Transport,
    Incomplete,
}

type Sender = SendRequest<Full<Bytes>>;

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    sender: Sender,
    host: HeaderValue,
}

/// Open a connection (TCP_NODELAY, optionally from `source_ip`) and do the HTTP/1.1 handshake.
pub async fn connect(ep: &Endpoint) -> anyhow::Result<Conn> {
    let fut = async {
        let sock = match ep.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(ip) = ep.source_ip {
            sock.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = sock.connect(ep.addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the server closes the connection.
            let _ = conn.await;
        });
        anyhow::Ok(sender)
    };
    let sender = tokio::time::timeout(CONNECT_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow::anyhow!("connect to {} timed out", ep.addr))??;
    Ok(Conn {
        sender,
        host: HeaderValue::from_str(&ep.addr.to_string())?,
    })
}

/// How one request ended.
struct Done {
    /// Response head received (after the request started).
    head: Duration,
    /// Whole body received.
    total: Duration,
    bytes: u64,
}

/// Send one request and read the whole answer. `Err` carries the error kind and whether the
/// connection is still usable.
async fn one_request(
    conn: &mut Conn,
    spec: &RequestSpec,
    mut on_frame: impl FnMut(Instant, &Bytes),
) -> Result<Done, (ErrorKind, String, bool)> {
    let req = spec
        .build(&conn.host)
        .map_err(|e| (ErrorKind::Transport, format!("bad request spec: {e}"), true))?;
    let fut = async {
        conn.sender.ready().await.map_err(|e| {
            (
                ErrorKind::Transport,
                format!("connection not ready: {e}"),
                false,
            )
        })?;
        let start = Instant::now();
        let resp = conn
            .sender
            .send_request(req)
            .await
            .map_err(|e| (ErrorKind::Transport, format!("request failed: {e}"), false))?;
        let head = start.elapsed();
        let status = resp.status();
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        let mut tail: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| (ErrorKind::Transport, format!("body failed: {e}"), false))?;
            if let Ok(data) = frame.into_data() {
                let now = Instant::now();
                bytes += data.len() as u64;
                on_frame(now, &data);
                if spec.expect_tail.is_some() {
                    tail.extend_from_slice(&data);
                    if tail.len() > 512 {
                        tail.drain(..tail.len() - 256);
                    }
                }
            }
        }
        let total = start.elapsed();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&tail).into_owned();
            return Err((
                ErrorKind::Status,
                format!(
                    "status {status} {}",
                    text.chars().take(200).collect::<String>()
                ),
                true,
            ));
        }
        if let Some(want) = spec.expect_tail
            && memchr::memmem::find(&tail, want).is_none()
        {
            return Err((
                ErrorKind::Incomplete,
                format!(
                    "stream ended without {:?}",
                    String::from_utf8_lossy(want).into_owned()
                ),
                true,
            ));
        }
        Ok(Done { head, total, bytes })
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err((ErrorKind::Transport, "request timed out".into(), false)),
    }
}

/// Closed-loop settings.
#[derive(Debug, Clone)]
pub struct ClosedLoop {
    pub connections: usize,
    pub duration: Duration,
    /// Stop after this many requests in total (a bound for very fast targets).
    pub max_requests: u64,
}

/// `connections` workers, each sending back to back until `duration` has passed.
pub async fn closed_loop(ep: &Endpoint, spec: &RequestSpec, cfg: &ClosedLoop) -> LoadReport {
    let budget = Arc::new(AtomicU64::new(cfg.max_requests));
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut tasks = Vec::with_capacity(cfg.connections);
    for _ in 0..cfg.connections.max(1) {
        let ep = ep.clone();
        let spec = spec.clone();
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            closed_worker(&ep, &spec, deadline, &budget).await
        }));
    }
    let mut report = LoadReport::default();
    for t in tasks {
        match t.await {
            Ok(r) => report.merge(r),
            Err(e) => report.error(ErrorKind::Transport, || format!("worker failed: {e}")),
        }
    }
    // Requests still in flight at the deadline finish and count, so the window is the real
    // time from the first start to the last answer.
    report.elapsed = start.elapsed();
    report
}

fn take_ticket(budget: &AtomicU64) -> bool {
    budget
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

async fn closed_worker(
    ep: &Endpoint,
    spec: &RequestSpec,
    deadline: Instant,
    budget: &AtomicU64,
) -> LoadReport {
    let mut r = LoadReport::default();
    let mut conn: Option<Conn> = None;
    while Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(ep).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    r.error(ErrorKind::Transport, || format!("connect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if !take_ticket(budget) {
            break;
        }
        match one_request(c, spec, |_, _| {}).await {
            Ok(done) => {
                r.ok += 1;
                r.bytes += done.bytes;
                r.latency.record(done.total);
            }
            Err((kind, msg, reusable)) => {
                r.error(kind, || msg);
                if !reusable {
                    conn = None;
                }
            }
        }
    }
    r
}

/// Open-loop settings.
#[derive(Debug, Clone)]
pub struct OpenLoop {
    /// Requests per second.
    pub rate: f64,
    pub duration: Duration,
    /// Connections (= workers). Enough that they are rarely all busy.
    pub connections: usize,
}

/// Requests at a fixed rate; latency from each request's scheduled time.
pub async fn open_loop(ep: &Endpoint, spec: &RequestSpec, cfg: &OpenLoop) -> LoadReport {
    let slots = Slots {
        len: cfg.duration,
        warm: Duration::ZERO,
    };
    open_loop_slots(&[(ep, spec)], cfg, slots)
        .await
        .pop()
        .unwrap_or_default()
}

/// How an open-loop run over several targets shares its time: one request stream at the run's
/// rate, handed to one target at a time, slot by slot (see [`slot_owner`]), so that whatever
/// else the machine does in a stretch of seconds falls on every target alike. A request
/// scheduled in the first `warm` of a turn (a slot whose owner differs from the slot before's,
/// or the first) is sent and answered but its latency not counted: the target's threads have
/// been idle since its last turn. `warm` must be shorter than `len`.
#[derive(Debug, Clone, Copy)]
pub struct Slots {
    pub len: Duration,
    pub warm: Duration,
}

/// The target (of `n`) that slot `k` goes to: cycle `k / n` gives each target one slot, starting
/// one target later than the cycle before, so each target has every place in the order in turn.
/// (With two targets the last of a cycle is the first of the next: after the first slot, each
/// turn is two slots long.)
pub fn slot_owner(k: u64, n: usize) -> usize {
    let n = n.max(1) as u64;
    ((k % n + k / n) % n) as usize
}

/// One scheduled request: when, and whether its latency counts (see [`Slots::warm`]).
#[derive(Debug, Clone, Copy)]
struct Ticket {
    at: Instant,
    counted: bool,
}

/// Where ticket `i` of a run starting at `t0` falls: its time, its slot's owner, and whether it
/// is counted.
fn ticket(i: u64, t0: Instant, interval: Duration, slots: Slots, n: usize) -> (usize, Ticket) {
    let offset = interval.mul_f64(i as f64);
    let len = slots.len.as_nanos().max(1);
    let k = (offset.as_nanos() / len) as u64;
    let into_slot = offset.as_nanos() % len;
    let owner = slot_owner(k, n);
    let turn_starts = k == 0 || slot_owner(k - 1, n) != owner;
    (
        owner,
        Ticket {
            at: t0 + offset,
            counted: !turn_starts || into_slot >= slots.warm.as_nanos(),
        },
    )
}

/// The time of a run of `duration` that slot owner `target` (of `n`) has.
fn owned_time(duration: Duration, slots: Slots, n: usize, target: usize) -> Duration {
    let (len, total) = (slots.len.as_nanos().max(1), duration.as_nanos());
    // Every full cycle of `n` slots gives each target one; the slots after the last full cycle
    // (the very last one perhaps partial) are counted one by one.
    let n = n.max(1) as u128;
    let full_cycles = total / (len * n);
    let mut own = full_cycles * len;
    let mut k = full_cycles * n;
    while k * len < total {
        if slot_owner(k as u64, n as usize) == target {
            own += (total - k * len).min(len);
        }
        k += 1;
    }
    Duration::from_nanos(u64::try_from(own).unwrap_or(u64::MAX))
}

/// [`open_loop`] over `targets` in turn, slot by slot: one report per target, each over the
/// time its slots had.
pub async fn open_loop_slots(
    targets: &[(&Endpoint, &RequestSpec)],
    cfg: &OpenLoop,
    slots: Slots,
) -> Vec<LoadReport> {
    let n = targets.len();
    let mut reports: Vec<LoadReport> = (0..n).map(|_| LoadReport::default()).collect();
    if n == 0 {
        return reports;
    }
    let total = (cfg.rate * cfg.duration.as_secs_f64()).round().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(0.001));

    // Connect every worker first, so connection setup is not measured.
    let mut conns: Vec<Vec<Conn>> = Vec::with_capacity(n);
    for (t, (ep, _)) in targets.iter().enumerate() {
        let mut own = Vec::with_capacity(cfg.connections);
        for _ in 0..cfg.connections.max(1) {
            match connect(ep).await {
                Ok(c) => own.push(c),
                Err(e) => reports[t].error(ErrorKind::Transport, || format!("connect: {e:#}")),
            }
        }
        conns.push(own);
    }
    let assigned: Vec<u64> = {
        let now = Instant::now();
        let mut a = vec![0u64; n];
        for i in 0..total {
            a[ticket(i, now, interval, slots, n).0] += 1;
        }
        a
    };
    for (t, r) in reports.iter_mut().enumerate() {
        r.elapsed = owned_time(cfg.duration, slots, n, t);
    }
    if let Some(down) = conns.iter().position(Vec::is_empty) {
        // The slots are one schedule: without one target, the others' would not be the same.
        let name = targets[down].0.addr;
        for (r, a) in reports.iter_mut().zip(&assigned) {
            r.errors.unsent = *a;
            if r.first_error.is_none() {
                r.first_error = Some(format!(
                    "not run: the target at {name} could not be reached"
                ));
            }
        }
        return reports;
    }
    let t0 = Instant::now() + Duration::from_millis(20);

    let (txs, rxs): (Vec<_>, Vec<_>) = (0..n).map(|_| mpsc::unbounded_channel::<Ticket>()).unzip();
    // Nothing may run past this, however slow the target.
    let hard_deadline = t0 + cfg.duration + Duration::from_secs(15);
    let pacer = std::thread::Builder::new()
        .name("iris-bench-pacer".into())
        .spawn(move || pace(txs, t0, interval, total, slots, hard_deadline));
    let pacer = match pacer {
        Ok(p) => p,
        Err(e) => {
            for (r, a) in reports.iter_mut().zip(&assigned) {
                r.error(ErrorKind::Transport, || {
                    format!("cannot start the pacer: {e}")
                });
                r.errors.unsent = *a;
            }
            return reports;
        }
    };

    let mut tasks = Vec::new();
    let mut sent = Vec::with_capacity(n);
    for ((own, rx), (ep, spec)) in conns.into_iter().zip(rxs).zip(targets) {
        let rx = Arc::new(Mutex::new(rx));
        let count = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::with_capacity(own.len());
        for conn in own {
            let (spec, ep, rx, count) = ((*spec).clone(), (*ep).clone(), rx.clone(), count.clone());
            handles.push(tokio::spawn(async move {
                open_worker(conn, &ep, &spec, &rx, hard_deadline, &count).await
            }));
        }
        tasks.push(handles);
        sent.push(count);
    }
    for ((handles, r), (count, a)) in tasks
        .into_iter()
        .zip(&mut reports)
        .zip(sent.iter().zip(&assigned))
    {
        for h in handles {
            match h.await {
                Ok(w) => r.merge(w),
                Err(e) => r.error(ErrorKind::Transport, || format!("worker failed: {e}")),
            }
        }
        r.errors.unsent = a.saturating_sub(count.load(Ordering::Acquire));
    }
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    reports
}

/// The pacer: releases ticket `i` at `t0 + i * interval`, to the target whose slot it falls in.
/// A thread of its own with a 1 ns timer slack, because the runtime's timer has a 1 ms
/// resolution and 2,000 RPS is one request every 500 us.
fn pace(
    txs: Vec<mpsc::UnboundedSender<Ticket>>,
    t0: Instant,
    interval: Duration,
    total: u64,
    slots: Slots,
    hard_deadline: Instant,
) {
    let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1));
    // A target whose workers all ended takes no more tickets (they count as unsent); the
    // others' go on.
    let mut open = vec![true; txs.len()];
    for i in 0..total {
        let (target, t) = ticket(i, t0, interval, slots, txs.len());
        let now = Instant::now();
        if now >= hard_deadline || !open.contains(&true) {
            break;
        }
        if !open[target] {
            continue;
        }
        if t.at > now {
            std::thread::sleep(t.at - now);
        }
        if txs[target].send(t).is_err() {
            open[target] = false;
        }
    }
}

async fn open_worker(
    mut conn: Conn,
    ep: &Endpoint,
    spec: &RequestSpec,
    rx: &Mutex<mpsc::UnboundedReceiver<Ticket>>,
    hard_deadline: Instant,
    sent: &AtomicU64,
) -> LoadReport {
    let mut r = LoadReport::default();
    let mut conn_ok = true;
    loop {
        let ticket = {
            let mut guard = rx.lock().await;
            match tokio::time::timeout_at(hard_deadline.into(), guard.recv()).await {
                Ok(Some(t)) => t,
                Ok(None) | Err(_) => break,
            }
        };
        sent.fetch_add(1, Ordering::AcqRel);
        if !conn_ok {
            match connect(ep).await {
                Ok(c) => {
                    conn = c;
                    conn_ok = true;
                }
                Err(e) => {
                    r.error(ErrorKind::Transport, || format!("reconnect: {e:#}"));
                    continue;
                }
            }
        }
        if ticket.counted {
            r.lag
                .record(Instant::now().saturating_duration_since(ticket.at));
        }
        match one_request(&mut conn, spec, |_, _| {}).await {
            Ok(done) => {
                r.ok += 1;
                r.bytes += done.bytes;
                if ticket.counted {
                    r.latency
                        .record(Instant::now().saturating_duration_since(ticket.at));
                }
            }
            Err((kind, msg, reusable)) => {
                r.error(kind, || msg);
                conn_ok = reusable;
            }
        }
    }
    r
}

/// SSE run settings (closed loop over streams).
#[derive(Debug, Clone)]
pub struct SseRun {
    pub concurrency: usize,
    pub duration: Duration,
    pub max_streams: u64,
}

/// How the streams arrived.
#[derive(Debug, Clone, Default)]
pub struct SseReport {
    pub ok: u64,
    pub errors: Errors,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Request start to the first body byte.
    pub ttfb: LatencyHist,
    /// Request start to the last body byte.
    pub total: LatencyHist,
    /// Gaps between consecutive body frames of a stream (after the first).
    pub gaps: LatencyHist,
    /// Per successful stream: body frames received.
    pub frames: Vec<u32>,
    /// Per successful stream: complete SSE events received.
    pub events: Vec<u32>,
    /// Per successful stream: the most events that arrived in one frame, not counting the
    /// first and the last frame (which carry the events the provider sends without delay).
    pub max_events_per_frame: Vec<u32>,
}

impl SseReport {
    fn merge(&mut self, o: SseReport) {
        self.ok += o.ok;
        self.errors.add(&o.errors);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
        self.ttfb.merge(&o.ttfb);
        self.total.merge(&o.total);
        self.gaps.merge(&o.gaps);
        self.frames.extend(o.frames);
        self.events.extend(o.events);
        self.max_events_per_frame.extend(o.max_events_per_frame);
    }

    fn error(&mut self, kind: ErrorKind, detail: impl FnOnce() -> String) {
        match kind {
            ErrorKind::Status => self.errors.status += 1,
            ErrorKind::Transport => self.errors.transport += 1,
            ErrorKind::Incomplete => self.errors.incomplete += 1,
        }
        if self.first_error.is_none() {
            self.first_error = Some(detail());
        }
    }
}

/// Counts complete SSE events (`\n\n` terminators) across arbitrary frame splits.
#[derive(Debug, Default)]
pub struct EventCounter {
    last_was_newline: bool,
}

impl EventCounter {
    /// Events completed by `data`.
    pub fn feed(&mut self, data: &[u8]) -> u32 {
        let mut n = 0;
        for &b in data {
            if b == b'\n' {
                if self.last_was_newline {
                    n += 1;
                    self.last_was_newline = false;
                } else {
                    self.last_was_newline = true;
                }
            } else if b != b'\r' {
                self.last_was_newline = false;
            }
        }
        n
    }
}

/// Streams, `concurrency` at a time, back to back, until `duration` has passed.
pub async fn sse(ep: &Endpoint, spec: &RequestSpec, cfg: &SseRun) -> SseReport {
    let budget = Arc::new(AtomicU64::new(cfg.max_streams));
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut tasks = Vec::new();
    for _ in 0..cfg.concurrency.max(1) {
        let ep = ep.clone();
        let spec = spec.clone();
        let budget = budget.clone();
        tasks.push(tokio::spawn(async move {
            sse_worker(&ep, &spec, deadline, &budget).await
        }));
    }
    let mut report = SseReport::default();
    for t in tasks {
        match t.await {
            Ok(r) => report.merge(r),
            Err(e) => report.error(ErrorKind::Transport, || format!("worker failed: {e}")),
        }
    }
    report.elapsed = start.elapsed();
    report
}

async fn sse_worker(
    ep: &Endpoint,
    spec: &RequestSpec,
    deadline: Instant,
    budget: &AtomicU64,
) -> SseReport {
    let mut r = SseReport::default();
    let mut conn: Option<Conn> = None;
    while Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match connect(ep).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    r.error(ErrorKind::Transport, || format!("connect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        if !take_ticket(budget) {
            break;
        }
        let start = Instant::now();
        let mut counter = EventCounter::default();
        let mut arrivals: Vec<(Instant, u32)> = Vec::with_capacity(256);
        let result = one_request(c, spec, |at, data| {
            arrivals.push((at, counter.feed(data)));
        })
        .await;
        match result {
            Ok(done) => {
                r.ok += 1;
                r.total.record(done.total);
                if let Some((first, _)) = arrivals.first() {
                    r.ttfb.record(first.saturating_duration_since(start));
                } else {
                    r.ttfb.record(done.head);
                }
                for w in arrivals.windows(2) {
                    r.gaps.record(w[1].0.saturating_duration_since(w[0].0));
                }
                r.frames.push(arrivals.len() as u32);
                r.events.push(arrivals.iter().map(|(_, n)| n).sum());
                let inner = if arrivals.len() > 2 {
                    &arrivals[1..arrivals.len() - 1]
                } else {
                    &arrivals[..0]
                };
                r.max_events_per_frame
                    .push(inner.iter().map(|(_, n)| *n).max().unwrap_or(0));
            }
            Err((kind, msg, reusable)) => {
                r.error(kind, || msg);
                if !reusable {
                    conn = None;
                }
            }
        }
    }
    r
}

/// Settings of the many-slow-streams run.
#[derive(Debug, Clone)]
pub struct HoldRun {
    pub streams: usize,
    /// Connections being opened at once.
    pub connect_parallelism: usize,
    /// Bound on the whole run.
    pub timeout: Duration,
}

/// What the many-slow-streams run saw.
#[derive(Debug, Clone, Default)]
pub struct HoldReport {
    pub ok: u64,
    pub errors: Errors,
    pub first_error: Option<String>,
    /// Most streams open (head received, body not finished) at one time.
    pub peak_open: usize,
    /// Start until every stream had its response head (or failed).
    pub ramp: Duration,
    pub elapsed: Duration,
}

/// Open `streams` connections, one streaming request each, and read them all to the end.
pub async fn hold_streams(ep: &Endpoint, spec: &RequestSpec, cfg: &HoldRun) -> HoldReport {
    let start = Instant::now();
    let deadline = start + cfg.timeout;
    let gate = Arc::new(Semaphore::new(cfg.connect_parallelism.max(1)));
    let open = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(AtomicUsize::new(0));
    let ramp_done = Arc::new(std::sync::Mutex::new(None::<Duration>));
    let mut tasks = Vec::with_capacity(cfg.streams);
    for _ in 0..cfg.streams {
        let ep = ep.clone();
        let spec = spec.clone();
        let gate = gate.clone();
        let open = open.clone();
        let peak = peak.clone();
        let heads = heads.clone();
        let ramp_done = ramp_done.clone();
        let n = cfg.streams;
        tasks.push(tokio::spawn(async move {
            let note_head = || {
                if heads.fetch_add(1, Ordering::AcqRel) + 1 == n
                    && let Ok(mut g) = ramp_done.lock()
                {
                    *g = Some(start.elapsed());
                }
            };
            let run = async {
                let permit = gate.acquire().await;
                let mut conn = connect(&ep).await?;
                let req = spec.build(&conn.host)?;
                conn.sender.ready().await?;
                let resp = conn.sender.send_request(req).await?;
                drop(permit);
                note_head();
                let status = resp.status();
                let now_open = open.fetch_add(1, Ordering::AcqRel) + 1;
                peak.fetch_max(now_open, Ordering::AcqRel);
                let mut body = resp.into_body();
                let mut tail = Vec::new();
                let read = async {
                    while let Some(frame) = body.frame().await {
                        if let Ok(d) = frame?.into_data() {
                            tail.extend_from_slice(&d);
                            if tail.len() > 512 {
                                tail.drain(..tail.len() - 256);
                            }
                        }
                    }
                    anyhow::Ok(())
                };
                let res = read.await;
                open.fetch_sub(1, Ordering::AcqRel);
                res?;
                anyhow::ensure!(status.is_success(), "status {status}");
                if let Some(want) = spec.expect_tail {
                    anyhow::ensure!(
                        memchr::memmem::find(&tail, want).is_some(),
                        "stream ended early"
                    );
                }
                anyhow::Ok(())
            };
            match tokio::time::timeout_at(deadline.into(), run).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("stream did not finish before the run's deadline".to_owned()),
            }
        }));
    }
    let mut report = HoldReport::default();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => report.ok += 1,
            Ok(Err(e)) => {
                report.errors.transport += 1;
                report.first_error.get_or_insert(e);
            }
            Err(e) => {
                report.errors.transport += 1;
                report
                    .first_error
                    .get_or_insert(format!("task failed: {e}"));
            }
        }
    }
    report.elapsed = start.elapsed();
    report.peak_open = peak.load(Ordering::Acquire);
    report.ramp = ramp_done
        .lock()
        .ok()
        .and_then(|g| *g)
        .unwrap_or(report.elapsed);
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_events_across_splits() {
        let stream = b"event: a\ndata: {}\n\nevent: b\ndata: {}\n\ndata: x\r\n\r\n";
        for split in 0..stream.len() {
            let mut c = EventCounter::default();
            let n = c.feed(&stream[..split]) + c.feed(&stream[split..]);
            assert_eq!(n, 3, "split at {split}");
        }
        let mut c = EventCounter::default();
        assert_eq!(c.feed(b"data: 1\n"), 0);
        assert_eq!(c.feed(b"\n"), 1);
        assert_eq!(c.feed(b"data: 2\r\n\r\ndata: 3\n\n"), 2);
    }

    #[test]
    fn slots_go_to_every_target_in_turn_and_in_every_place() {
        for n in 1..=5usize {
            // Each cycle of n slots gives each target exactly one.
            for cycle in 0..(3 * n as u64) {
                let mut owners: Vec<usize> = (0..n as u64)
                    .map(|j| slot_owner(cycle * n as u64 + j, n))
                    .collect();
                owners.sort_unstable();
                assert_eq!(owners, (0..n).collect::<Vec<_>>(), "n {n}, cycle {cycle}");
            }
            // Over n cycles, each target holds each place (first, second, ...) once.
            for place in 0..n as u64 {
                let mut holders: Vec<usize> = (0..n as u64)
                    .map(|cycle| slot_owner(cycle * n as u64 + place, n))
                    .collect();
                holders.sort_unstable();
                assert_eq!(holders, (0..n).collect::<Vec<_>>(), "n {n}, place {place}");
            }
        }
        assert_eq!(slot_owner(7, 0), 0);
    }

    #[test]
    fn tickets_fall_in_their_slots_and_the_warm_up_is_not_counted() {
        let t0 = Instant::now();
        let slots = Slots {
            len: Duration::from_millis(500),
            warm: Duration::from_millis(20),
        };
        let interval = Duration::from_micros(500); // 2,000 RPS
        let (mut per, mut counted) = ([0u64; 3], [0u64; 3]);
        for i in 0..(2000 * 6) {
            let (owner, t) = ticket(i, t0, interval, slots, 3);
            assert_eq!(t.at, t0 + interval * i as u32);
            let ms = i / 2;
            assert_eq!(owner, slot_owner(ms / 500, 3), "ticket {i}");
            assert_eq!(t.counted, ms % 500 >= 20, "ticket {i}");
            per[owner] += 1;
            counted[owner] += u64::from(t.counted);
        }
        // 6 s in 500 ms slots: 4 slots each, 1,000 tickets a slot, 40 of them warming up.
        assert_eq!(per, [4000; 3]);
        assert_eq!(counted, [3840; 3]);
        // One slot covering the run (a single target): every ticket counts.
        let whole = Slots {
            len: Duration::from_secs(6),
            warm: Duration::ZERO,
        };
        assert!(
            (0..12_000).all(|i| matches!(ticket(i, t0, interval, whole, 1), (0, t) if t.counted))
        );
        // Two targets: owners 0,1 | 1,0 | 0,1 | 1,0, so after the first slot each turn is two
        // slots, and only a turn's start warms up.
        let two = [0usize, 1, 1, 0, 0, 1, 1, 0];
        let starts = [true, true, false, true, false, true, false, true];
        for i in 0..(2000 * 4) {
            let (owner, t) = ticket(i, t0, interval, slots, 2);
            let (k, ms) = ((i / 1000) as usize, i / 2 % 500);
            assert_eq!(owner, two[k], "ticket {i}");
            assert_eq!(t.counted, !starts[k] || ms >= 20, "ticket {i}");
        }
    }

    #[test]
    fn each_target_owns_the_time_of_its_slots() {
        let slots = Slots {
            len: Duration::from_millis(500),
            warm: Duration::ZERO,
        };
        let d = Duration::from_millis(7250);
        let own: Vec<Duration> = (0..3).map(|t| owned_time(d, slots, 3, t)).collect();
        assert_eq!(own.iter().sum::<Duration>(), d);
        // Slots 0..14 (the last one 250 ms): owners 0,1,2 | 1,2,0 | 2,0,1 | 0,1,2 | 1,2,0.
        assert_eq!(
            own,
            [
                Duration::from_millis(2250),
                Duration::from_millis(2500),
                Duration::from_millis(2500)
            ]
        );
        assert_eq!(owned_time(d, slots, 1, 0), d);
        // Against counting slot by slot, for many shapes.
        for n in 1..=5 {
            for ms in [0u64, 1, 499, 500, 501, 1000, 7250, 12_345] {
                let d = Duration::from_millis(ms);
                for t in 0..n {
                    let mut want = Duration::ZERO;
                    let mut k = 0u64;
                    while Duration::from_millis(500 * k) < d {
                        if slot_owner(k, n) == t {
                            want += (d - Duration::from_millis(500 * k)).min(slots.len);
                        }
                        k += 1;
                    }
                    assert_eq!(
                        owned_time(d, slots, n, t),
                        want,
                        "n {n}, {ms} ms, target {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn tickets_run_out() {
        let b = AtomicU64::new(2);
        assert!(take_ticket(&b));
        assert!(take_ticket(&b));
        assert!(!take_ticket(&b));
        assert!(!take_ticket(&b));
    }
}
