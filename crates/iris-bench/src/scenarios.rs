//! The scenarios of the issue, each run against every target of the stack in the same run,
//! interleaved (the target order rotates from one repetition to the next), repeated, and
//! recorded per repetition so the report can take medians of paired comparisons.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::load::{
    self, ClosedLoop, Endpoint, Errors, HoldRun, LoadReport, OpenLoop, RequestSpec, SseReport,
    SseRun,
};
use crate::procfs::{ProcSet, SetSample, cpu_between};
use crate::stack::Target;
use crate::stats::{Summary, median};

/// Which scenarios to run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
pub enum Scenario {
    /// Small non-streaming chat, closed loop at N connections (throughput).
    Chat,
    /// Small non-streaming chat at a fixed rate (latency).
    Rate,
    /// Anthropic SSE with many chunks (first byte, total, chunk delivery).
    Sse,
    /// Thousands of concurrent slow streams (memory), two equal rounds.
    Streams,
    /// The usage store's sustained insert rate, request path idle.
    Store,
    /// A coding agent's chat (a 64 KiB prompt of source code), closed loop: reported, not
    /// judged (the targets are the issue's, for the small chat).
    Large,
    /// A coding agent's chat (the `large` scenario's prompt) at the fixed rate: reported, not
    /// judged. iris's deferred work on such requests (keeping, redacting and compressing each
    /// prompt) is tens of times the small chat's, so this is where it would show in the tail.
    RateLarge,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Chat,
        Scenario::Rate,
        Scenario::Sse,
        Scenario::Streams,
        Scenario::Store,
        Scenario::Large,
        Scenario::RateLarge,
    ];
}

/// Sizes and durations of one run. Fields added since a run was saved read as the full run's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Plan {
    pub quick: bool,
    pub reps: usize,
    pub warmup: Duration,
    pub chat_connections: usize,
    pub chat_duration: Duration,
    /// Bytes of prompt text in the chat scenarios' request (0: the small chat). A coding
    /// agent's request is tens to hundreds of kilobytes of code and conversation.
    pub chat_prompt_bytes: usize,
    /// Bytes of answer the mock pads the `chat` scenario's answers to (0: its short answer):
    /// a long completion or a batch of embeddings, whose whole body iris reads for its usage.
    pub chat_answer_bytes: usize,
    /// Bytes of prompt in the `large` scenario's request.
    pub large_prompt_bytes: usize,
    pub rate_rps: f64,
    pub rate_connections: usize,
    /// Each target's share of a repetition of the fixed-rate scenario.
    pub rate_duration: Duration,
    /// The fixed-rate scenario's slots: its targets but `direct` take turns, this long each,
    /// through one repetition (see `load::Slots`); zero (the default) runs them one after
    /// another, each followed by a wait until its processes are idle. Slots put every target
    /// under the same conditions, but what a target defers (iris writes captures every 250 ms
    /// and usage at least every second) then runs in the next targets' slots and is charged to
    /// them: a diagnosis (is iris's tail worse in the same seconds?), not the verdict.
    pub rate_slot: Duration,
    /// The start of each turn (a target's slots in a row) whose latencies are not counted.
    pub rate_slot_warm: Duration,
    pub sse_chunks: u32,
    pub sse_chunk_delay_ms: u64,
    pub sse_concurrency: usize,
    pub sse_duration: Duration,
    /// Repetitions of the SSE scenario. Its first-byte median is judged by a paired difference
    /// of a few hundred microseconds, and one repetition's median moves by more than that on
    /// this shared machine, so it takes more repetitions than the throughput scenarios.
    pub sse_reps: usize,
    pub streams: usize,
    pub streams_chunks: u32,
    pub streams_chunk_delay_ms: u64,
    /// Rounds of the many-streams scenario; the first warms the allocators up, the last two
    /// are compared for growth.
    pub streams_rounds: usize,
    pub store_duration: Duration,
    pub store_rate: u64,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan::full()
    }
}

impl Plan {
    /// The full run: about 9 minutes on 2 cores.
    pub fn full() -> Plan {
        Plan {
            quick: false,
            reps: 5,
            warmup: Duration::from_millis(500),
            chat_connections: 64,
            chat_duration: Duration::from_secs(2),
            chat_prompt_bytes: 0,
            chat_answer_bytes: 0,
            large_prompt_bytes: 64 << 10,
            rate_rps: 2000.0,
            rate_connections: 32,
            rate_duration: Duration::from_millis(2500),
            rate_slot: Duration::ZERO,
            rate_slot_warm: Duration::from_millis(20),
            sse_chunks: 200,
            sse_chunk_delay_ms: 1,
            sse_concurrency: 8,
            // ~90 streams a repetition: with half that, one repetition's first-byte median moved
            // by +-120 us between repetitions of the same build.
            sse_duration: Duration::from_secs(5),
            // Five gave +145 us at p50 in one full run and -16 us in the run before, on the
            // same request path; nine of the same binaries gave +23 us.
            sse_reps: 9,
            streams: 5000,
            streams_chunks: 5,
            streams_chunk_delay_ms: 1000,
            streams_rounds: 3,
            store_duration: Duration::from_secs(5),
            store_rate: 20_000,
        }
    }

    /// A try-out: a few seconds per scenario, smaller stream count.
    pub fn quick() -> Plan {
        Plan {
            quick: true,
            reps: 2,
            warmup: Duration::from_millis(300),
            chat_duration: Duration::from_secs(1),
            rate_duration: Duration::from_secs(1),
            sse_duration: Duration::from_secs(1),
            sse_reps: 2,
            streams: 1000,
            streams_chunks: 3,
            streams_chunk_delay_ms: 1000,
            store_duration: Duration::from_secs(2),
            ..Plan::full()
        }
    }
}

/// The request of the chat scenarios: an OpenAI chat completion, small unless `prompt_bytes`
/// asks for a user message of about that many bytes of source code (quotes, backslashes and
/// newlines included, as a coding agent sends).
pub fn chat_spec(prompt_bytes: usize) -> RequestSpec {
    if prompt_bytes == 0 {
        return RequestSpec::post_json(
            "/v1/chat/completions",
            r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64}"#,
        );
    }
    const CODE: &str = "fn greet(name: &str) -> String {\n    // Say \"hello\" politely.\n    \
                        format!(\"hello, {name}\\n\")\n}\n\n";
    let mut prompt = String::from("Review this code:\n");
    while prompt.len() < prompt_bytes {
        prompt.push_str(CODE);
    }
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a careful code reviewer."},
            {"role": "user", "content": prompt},
        ],
        "max_tokens": 64,
    });
    RequestSpec::post_json("/v1/chat/completions", body.to_string())
}

/// The mock's chunk of padded answer text (`x-mock-chunk-size`) for [`with_answer`].
const ANSWER_CHUNK: usize = 4096;

/// `spec` asking the mock for an answer of about `bytes` bytes of text (0: its short answer).
pub fn with_answer(spec: RequestSpec, bytes: usize) -> anyhow::Result<RequestSpec> {
    if bytes == 0 {
        return Ok(spec);
    }
    let size = bytes.min(ANSWER_CHUNK);
    let chunks = bytes.div_ceil(size);
    spec.header("x-mock-chunks", &chunks.to_string())?
        .header("x-mock-chunk-size", &size.to_string())
}

/// An Anthropic streaming request with `chunks` content chunks `delay_ms` apart.
pub fn anthropic_stream_spec(chunks: u32, delay_ms: u64) -> anyhow::Result<RequestSpec> {
    Ok(RequestSpec::post_json(
        "/v1/messages",
        r#"{"model":"claude-sonnet-4-5","max_tokens":4096,"stream":true,"messages":[{"role":"user","content":"Write a long poem about gateways."}]}"#,
    )
    .header("anthropic-version", "2023-06-01")?
    .header("x-mock-chunks", &chunks.to_string())?
    .header("x-mock-chunk-delay-ms", &delay_ms.to_string())?
    .expect_tail(b"message_stop"))
}

fn with_target(spec: &RequestSpec, t: &Target) -> RequestSpec {
    let mut s = spec.clone();
    s.headers.extend(t.extra_headers.iter().cloned());
    s
}

/// CPU and memory of the target (and the mock) over one measured window.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Window {
    /// CPU seconds of the target's processes.
    pub cpu_s: f64,
    /// CPU seconds of the mock provider (the same as `cpu_s` for the direct target).
    pub mock_cpu_s: f64,
    /// Peak RSS of the target's processes in the window (KiB).
    pub peak_rss_kib: u64,
    /// Whether the peak was reset at the start (else it is the lifetime peak).
    pub peak_reset: bool,
}

struct Meter<'a> {
    target: &'a ProcSet,
    mock: &'a ProcSet,
    t0: SetSample,
    m0: SetSample,
    reset: bool,
}

impl<'a> Meter<'a> {
    fn start(target: &'a ProcSet, mock: &'a ProcSet) -> Meter<'a> {
        let reset = target.reset_peak();
        Meter {
            target,
            mock,
            t0: target.sample(),
            m0: mock.sample(),
            reset,
        }
    }

    fn stop(self) -> Window {
        let t1 = self.target.sample();
        let m1 = self.mock.sample();
        Window {
            cpu_s: cpu_between(&self.t0, &t1).as_secs_f64(),
            mock_cpu_s: cpu_between(&self.m0, &m1).as_secs_f64(),
            peak_rss_kib: t1.hwm_kib,
            peak_reset: self.reset,
        }
    }
}

/// One target in one repetition of a request/response scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub target: String,
    pub rep: usize,
    pub ok: u64,
    pub errors: Errors,
    pub first_error: Option<String>,
    pub elapsed_s: f64,
    pub throughput: f64,
    pub latency: Summary,
    /// Open loop only: the generator's lateness.
    pub lag: Summary,
    pub window: Window,
}

impl RunRecord {
    fn new(target: &str, rep: usize, r: &LoadReport, window: Window) -> RunRecord {
        RunRecord {
            target: target.to_owned(),
            rep,
            ok: r.ok,
            errors: r.errors,
            first_error: r.first_error.clone(),
            elapsed_s: r.elapsed.as_secs_f64(),
            throughput: r.throughput(),
            latency: r.latency.summary(),
            lag: r.lag.summary(),
            window,
        }
    }

    /// CPU seconds of the target per 1,000 successful requests.
    pub fn cpu_per_1k(&self) -> f64 {
        per_1k(self.window.cpu_s, self.ok)
    }

    pub fn mock_cpu_per_1k(&self) -> f64 {
        per_1k(self.window.mock_cpu_s, self.ok)
    }
}

pub fn per_1k(cpu_s: f64, n: u64) -> f64 {
    if n == 0 {
        f64::NAN
    } else {
        cpu_s * 1000.0 / n as f64
    }
}

/// After a target's window, wait until its processes are idle (at most one clock tick of CPU in
/// a 100 ms sample, for at most 2 s) before the next target's window begins. iris finishes work
/// after its last answer (the usage writer's last batch, held captures, a WAL checkpoint); run
/// straight on, that work landed in the next target's window and slowed it, and which target
/// came next was fixed by the rotation (iris-nocapture always followed iris).
async fn settle(procs: &ProcSet) {
    const SAMPLE: Duration = Duration::from_millis(100);
    const MAX_WAIT: Duration = Duration::from_secs(2);
    let start = std::time::Instant::now();
    let mut last = procs.sample().cpu_ticks;
    while start.elapsed() < MAX_WAIT {
        tokio::time::sleep(SAMPLE).await;
        let now = procs.sample().cpu_ticks;
        if now.saturating_sub(last) <= 1 {
            return;
        }
        last = now;
    }
}

/// The order of the targets in repetition `rep`: rotated, so none is always first or last.
pub fn rotation<T: Clone>(items: &[T], rep: usize) -> Vec<T> {
    if items.is_empty() {
        return Vec::new();
    }
    let k = rep % items.len();
    items[k..].iter().chain(&items[..k]).cloned().collect()
}

/// Progress lines go to stderr.
fn progress(line: &str) {
    eprintln!("iris-bench: {line}");
}

/// A chat request (`chat_spec`, `with_answer`), closed loop at `chat_connections`; `label`
/// names the scenario in progress lines.
pub async fn chat(
    plan: &Plan,
    targets: &[Target],
    mock: &ProcSet,
    spec: RequestSpec,
    label: &str,
) -> Vec<RunRecord> {
    let warm = ClosedLoop {
        connections: plan.chat_connections,
        duration: plan.warmup,
        max_requests: u64::MAX,
    };
    for t in targets {
        let _ = load::closed_loop(&t.endpoint, &with_target(&spec, t), &warm).await;
    }
    let cfg = ClosedLoop {
        connections: plan.chat_connections,
        duration: plan.chat_duration,
        max_requests: 50_000_000,
    };
    let mut out = Vec::new();
    for rep in 0..plan.reps {
        for t in rotation(targets, rep) {
            let spec = with_target(&spec, &t);
            let meter = Meter::start(&t.procs, mock);
            let r = load::closed_loop(&t.endpoint, &spec, &cfg).await;
            let rec = RunRecord::new(&t.name, rep, &r, meter.stop());
            settle(&t.procs).await;
            progress(&format!(
                "{label} rep {rep} {:<10} {:>8.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  errors {}",
                t.name,
                rec.throughput,
                rec.latency.p50_us,
                rec.latency.p99_us,
                rec.errors.total()
            ));
            out.push(rec);
        }
    }
    out
}

/// `spec` at a fixed rate, latency from the scheduled send times (`label` names the scenario in
/// the progress lines). With `plan.rate_slot`,
/// the targets other than `direct` share each repetition in slots (`load::open_loop_slots`):
/// the machine's other load, which here varies from second to second, then falls on all of
/// them alike (and what a target defers falls on the next: see `Plan::rate_slot`). `direct`
/// (the mock itself, whose CPU would count every target's requests) runs on its own.
pub async fn rate(
    plan: &Plan,
    targets: &[Target],
    mock: &ProcSet,
    spec: RequestSpec,
    label: &str,
) -> Vec<RunRecord> {
    let warm = OpenLoop {
        rate: plan.rate_rps,
        duration: plan.warmup,
        connections: plan.rate_connections,
    };
    for t in targets {
        let _ = load::open_loop(&t.endpoint, &with_target(&spec, t), &warm).await;
    }
    let cfg = OpenLoop {
        rate: plan.rate_rps,
        duration: plan.rate_duration,
        connections: plan.rate_connections,
    };
    let (alone, shared): (Vec<Target>, Vec<Target>) = if plan.rate_slot.is_zero() {
        (targets.to_vec(), Vec::new())
    } else {
        targets.iter().cloned().partition(|t| t.name == "direct")
    };
    let mut out = Vec::new();
    for rep in 0..plan.reps {
        for t in rotation(&alone, rep) {
            let spec = with_target(&spec, &t);
            let meter = Meter::start(&t.procs, mock);
            let r = load::open_loop(&t.endpoint, &spec, &cfg).await;
            let rec = RunRecord::new(&t.name, rep, &r, meter.stop());
            settle(&t.procs).await;
            rate_progress(label, &rec);
            out.push(rec);
        }
        if shared.is_empty() {
            continue;
        }
        let order = rotation(&shared, rep);
        let specs: Vec<RequestSpec> = order.iter().map(|t| with_target(&spec, t)).collect();
        let pairs: Vec<(&Endpoint, &RequestSpec)> =
            order.iter().map(|t| &t.endpoint).zip(&specs).collect();
        let all = OpenLoop {
            duration: cfg.duration.saturating_mul(order.len() as u32),
            ..cfg.clone()
        };
        let slots = load::Slots {
            len: plan.rate_slot,
            warm: plan.rate_slot_warm,
        };
        let meters: Vec<Meter<'_>> = order.iter().map(|t| Meter::start(&t.procs, mock)).collect();
        let reports = load::open_loop_slots(&pairs, &all, slots).await;
        for ((t, r), meter) in order.iter().zip(&reports).zip(meters) {
            let mut window = meter.stop();
            // Targets served by one process (iris as `(loopback)`, with a key, by WhoIs) each
            // measured that process over the whole run: each is charged its share by requests.
            let served: u64 = order
                .iter()
                .zip(&reports)
                .filter(|(o, _)| o.procs.root == t.procs.root)
                .map(|(_, o)| o.ok)
                .sum();
            if served > 0 {
                window.cpu_s *= r.ok as f64 / served as f64;
            }
            let rec = RunRecord::new(&t.name, rep, r, window);
            rate_progress(label, &rec);
            out.push(rec);
        }
        for t in &order {
            settle(&t.procs).await;
        }
    }
    out
}

fn rate_progress(label: &str, rec: &RunRecord) {
    progress(&format!(
        "{label} rep {} {:<10} {:>6.0} req/s  p50 {:>6.0} us  p99 {:>7.0} us  max {:>7.0} us  lag p99 {:>5.0} us  errors {}",
        rec.rep,
        rec.target,
        rec.throughput,
        rec.latency.p50_us,
        rec.latency.p99_us,
        rec.latency.max_us,
        rec.lag.p99_us,
        rec.errors.total()
    ));
}

/// One target in one repetition of the SSE scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SseRecord {
    pub target: String,
    pub rep: usize,
    pub ok: u64,
    pub errors: Errors,
    pub first_error: Option<String>,
    pub streams_per_s: f64,
    pub ttfb: Summary,
    pub total: Summary,
    pub gaps: Summary,
    /// Median over streams.
    pub frames: f64,
    pub events: f64,
    /// The largest "events in one frame" over all streams (inner frames only).
    pub max_events_per_frame: u32,
    /// Median over streams of their largest inner frame.
    pub median_max_events_per_frame: f64,
    pub window: Window,
}

impl SseRecord {
    fn new(target: &str, rep: usize, r: &SseReport, window: Window) -> SseRecord {
        let f = |v: &[u32]| median(&v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
        SseRecord {
            target: target.to_owned(),
            rep,
            ok: r.ok,
            errors: r.errors,
            first_error: r.first_error.clone(),
            streams_per_s: if r.elapsed.is_zero() {
                0.0
            } else {
                r.ok as f64 / r.elapsed.as_secs_f64()
            },
            ttfb: r.ttfb.summary(),
            total: r.total.summary(),
            gaps: r.gaps.summary(),
            frames: f(&r.frames),
            events: f(&r.events),
            max_events_per_frame: r.max_events_per_frame.iter().copied().max().unwrap_or(0),
            median_max_events_per_frame: f(&r.max_events_per_frame),
            window,
        }
    }

    pub fn cpu_per_1k(&self) -> f64 {
        per_1k(self.window.cpu_s, self.ok)
    }
}

/// Anthropic SSE streams with many chunks, closed loop at `sse_concurrency`.
pub async fn sse(
    plan: &Plan,
    targets: &[Target],
    mock: &ProcSet,
) -> anyhow::Result<Vec<SseRecord>> {
    let spec = anthropic_stream_spec(plan.sse_chunks, plan.sse_chunk_delay_ms)?;
    let warm = SseRun {
        concurrency: plan.sse_concurrency,
        duration: plan.warmup,
        max_streams: u64::MAX,
    };
    for t in targets {
        let _ = load::sse(&t.endpoint, &with_target(&spec, t), &warm).await;
    }
    let cfg = SseRun {
        concurrency: plan.sse_concurrency,
        duration: plan.sse_duration,
        max_streams: 10_000_000,
    };
    let mut out = Vec::new();
    for rep in 0..plan.sse_reps {
        for t in rotation(targets, rep) {
            let spec = with_target(&spec, &t);
            let meter = Meter::start(&t.procs, mock);
            let r = load::sse(&t.endpoint, &spec, &cfg).await;
            let rec = SseRecord::new(&t.name, rep, &r, meter.stop());
            settle(&t.procs).await;
            progress(&format!(
                "sse rep {rep} {:<10} {:>5.0} streams/s  ttfb p50 {:>6.0} us  total p50 {:>7.1} ms  frames {:>5.0}  max ev/frame {}  errors {}",
                t.name,
                rec.streams_per_s,
                rec.ttfb.p50_us,
                rec.total.p50_us / 1000.0,
                rec.frames,
                rec.max_events_per_frame,
                rec.errors.total()
            ));
            out.push(rec);
        }
    }
    Ok(out)
}

/// One target in one round of the many-streams scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HoldRecord {
    pub target: String,
    pub round: usize,
    pub streams: usize,
    pub ok: u64,
    pub errors: Errors,
    pub first_error: Option<String>,
    pub peak_open: usize,
    pub ramp_s: f64,
    pub elapsed_s: f64,
    /// Highest RSS sampled during the round (KiB).
    pub peak_rss_kib: u64,
    /// VmHWM at the end of the round (reset at its start when possible).
    pub hwm_kib: u64,
    /// RSS one second after the round ended.
    pub rss_after_kib: u64,
    pub cpu_s: f64,
}

/// `streams` concurrent slow streams per target, `streams_rounds` equal rounds each (targets
/// interleaved round by round), while the target's RSS is sampled every 100 ms.
pub async fn streams(plan: &Plan, targets: &[Target]) -> anyhow::Result<Vec<HoldRecord>> {
    let rounds = plan.streams_rounds.max(2);
    let spec = anthropic_stream_spec(plan.streams_chunks, plan.streams_chunk_delay_ms)?;
    let stream_time = Duration::from_millis(plan.streams_chunk_delay_ms) * plan.streams_chunks;
    let cfg = HoldRun {
        streams: plan.streams,
        connect_parallelism: 256,
        timeout: stream_time + Duration::from_secs(90),
    };
    let mut out = Vec::new();
    for round in 0..rounds {
        for t in rotation(targets, 0) {
            let spec = with_target(&spec, &t);
            let procs = t.procs.clone();
            let reset = procs.reset_peak();
            let before = procs.sample();
            let stop = Arc::new(AtomicBool::new(false));
            let peak = Arc::new(AtomicU64::new(before.rss_kib));
            let sampler = {
                let stop = stop.clone();
                let peak = peak.clone();
                let procs = procs.clone();
                let bound = Instant::now() + cfg.timeout + Duration::from_secs(5);
                tokio::spawn(async move {
                    while !stop.load(Ordering::Acquire) && Instant::now() < bound {
                        let s = procs.sample();
                        peak.fetch_max(s.rss_kib, Ordering::AcqRel);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
            };
            let r = load::hold_streams(&t.endpoint, &spec, &cfg).await;
            stop.store(true, Ordering::Release);
            let _ = sampler.await;
            let end = procs.sample();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = procs.sample();
            let rec = HoldRecord {
                target: t.name.clone(),
                round,
                streams: plan.streams,
                ok: r.ok,
                errors: r.errors,
                first_error: r.first_error.clone(),
                peak_open: r.peak_open,
                ramp_s: r.ramp.as_secs_f64(),
                elapsed_s: r.elapsed.as_secs_f64(),
                peak_rss_kib: peak
                    .load(Ordering::Acquire)
                    .max(if reset { end.hwm_kib } else { 0 }),
                hwm_kib: end.hwm_kib,
                rss_after_kib: after.rss_kib,
                cpu_s: cpu_between(&before, &end).as_secs_f64(),
            };
            progress(&format!(
                "streams round {round} {:<10} {} ok, peak open {}, ramp {:.1} s, peak RSS {:.1} MB, after {:.1} MB, errors {}{}",
                t.name,
                rec.ok,
                rec.peak_open,
                rec.ramp_s,
                rec.peak_rss_kib as f64 * 1024.0 / 1e6,
                rec.rss_after_kib as f64 * 1024.0 / 1e6,
                rec.errors.total(),
                rec.first_error
                    .as_deref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            ));
            out.push(rec);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_asked_of_the_mock_in_chunks_of_its_padding() {
        let asked = |bytes| {
            let spec = with_answer(chat_spec(0), bytes).unwrap();
            let get = |name: &str| {
                spec.headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.to_str().unwrap().to_owned())
            };
            (get("x-mock-chunks"), get("x-mock-chunk-size"))
        };
        assert_eq!(asked(0), (None, None));
        assert_eq!(asked(100), (Some("1".into()), Some("100".into())));
        assert_eq!(asked(1 << 20), (Some("256".into()), Some("4096".into())));
        assert_eq!(asked(4097), (Some("2".into()), Some("4096".into())));
    }

    #[test]
    fn rotations() {
        let v = [1, 2, 3];
        assert_eq!(rotation(&v, 0), vec![1, 2, 3]);
        assert_eq!(rotation(&v, 1), vec![2, 3, 1]);
        assert_eq!(rotation(&v, 5), vec![3, 1, 2]);
        assert!(rotation::<u8>(&[], 3).is_empty());
    }

    #[test]
    fn cpu_per_thousand() {
        assert_eq!(per_1k(2.0, 4000), 0.5);
        assert!(per_1k(1.0, 0).is_nan());
    }

    #[test]
    fn plans_are_bounded() {
        for p in [Plan::full(), Plan::quick()] {
            assert!(p.reps >= 1 && p.sse_reps >= p.reps);
            assert!(p.sse_chunks >= 1 && p.streams >= 1);
            assert!(p.chat_duration <= Duration::from_secs(10));
        }
        assert!(Plan::quick().streams < Plan::full().streams);
    }
}
