//! `docs/benchmarks.md`: rendered from the measurements of one run, never typed by hand.
//!
//! Every comparison with the baseline is *paired*: within one repetition the targets ran back
//! to back, so the ratio (or difference) is taken per repetition and the median of those is
//! reported. That cancels most of the drift of a shared, noisy machine.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::micro::MicroResult;
use crate::profile::ProfileResult;
use crate::scenarios::{HoldRecord, Plan, RunRecord, SseRecord, chat_spec};
use crate::stats::{median, median_by};
use crate::store::StoreRecord;

/// Where and how the run happened. Fields added since a run was saved read as their defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    pub date_utc: String,
    pub commit: String,
    pub dirty: bool,
    pub command: String,
    pub nproc: usize,
    pub cpu_model: String,
    pub mem_total: String,
    pub kernel: String,
    pub rustc: String,
    pub nginx: String,
    pub loadgen_threads: usize,
    pub wall_s: f64,
    /// `/proc/loadavg` (1, 5, 15 minutes) when the run started and when it ended: how busy the
    /// shared machine was with other work.
    pub load_before: String,
    pub load_after: String,
    /// Extra environment of iris and the baseline (`--server-env`), empty normally.
    pub server_env: String,
    /// How iris and the baseline were built (`--build-note`).
    pub build: String,
    /// Set when the report was rendered again from the run's saved results (`--from-json`).
    pub rendered_again: Option<String>,
}

/// The build [`RunInfo::build`] names when nothing else is said.
pub const DEFAULT_BUILD_NOTE: &str =
    "`dist` build: release with fat LTO, like every binary of the run";

/// Everything one run measured. Scenarios added since a run was saved read as not run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Results {
    pub chat: Vec<RunRecord>,
    /// The `large` scenario: a coding agent's chat (reported, not judged).
    pub large: Vec<RunRecord>,
    pub rate: Vec<RunRecord>,
    /// The `rate-large` scenario: a coding agent's chat at the fixed rate (reported, not judged).
    pub rate_large: Vec<RunRecord>,
    pub sse: Vec<SseRecord>,
    pub streams: Vec<HoldRecord>,
    pub store: Vec<StoreRecord>,
    pub profile: Option<ProfileResult>,
    pub profile_note: Option<String>,
    pub micro: Vec<MicroResult>,
    pub micro_note: Option<String>,
    /// What each iris instance dropped in each scenario (checked after it).
    pub losses: Vec<crate::losses::LossRecord>,
    /// Scenario failures and other remarks, printed in the report.
    pub notes: Vec<String>,
}

/// What `--json` keeps of a run, and `--from-json` reads back: enough to render its report again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedRun {
    pub info: RunInfo,
    pub plan: Plan,
    pub results: Results,
}

/// One target of the issue, checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub target: String,
    pub threshold: String,
    pub measured: String,
    /// `None`: not measured in this run.
    pub pass: Option<bool>,
}

impl Verdict {
    fn word(&self) -> &'static str {
        match self.pass {
            Some(true) => "**met**",
            Some(false) => "**missed**",
            None => "not measured",
        }
    }
}

pub const BASELINE: &str = "baseline";
pub const IRIS: &str = "iris";
/// iris with `iris.captures.enabled: false`.
pub const IRIS_NOCAP: &str = "iris-nocapture";

/// Target names in first-seen order.
fn names<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for n in items {
        if seen.insert(n.to_owned()) {
            out.push(n.to_owned());
        }
    }
    // The conventional order: direct, baseline, nginx, iris...
    let rank = |n: &str| match n {
        "direct" => 0,
        "baseline" => 1,
        "nginx" => 2,
        "iris" => 3,
        "iris-nocapture" => 4,
        _ => 5,
    };
    out.sort_by_key(|n| rank(n));
    out
}

/// Median over repetitions of `f(target run, baseline run)` for runs of the same repetition.
fn paired<T>(
    recs: &[T],
    target: &str,
    name: impl Fn(&T) -> &str,
    rep: impl Fn(&T) -> usize,
    f: impl Fn(&T, &T) -> f64,
) -> f64 {
    let mut v = Vec::new();
    for t in recs.iter().filter(|r| name(r) == target) {
        if let Some(b) = recs
            .iter()
            .find(|r| name(r) == BASELINE && rep(r) == rep(t))
        {
            v.push(f(t, b));
        }
    }
    median(&v)
}

fn run_paired(recs: &[RunRecord], target: &str, f: impl Fn(&RunRecord, &RunRecord) -> f64) -> f64 {
    paired(recs, target, |r| r.target.as_str(), |r| r.rep, f)
}

fn sse_paired(recs: &[SseRecord], target: &str, f: impl Fn(&SseRecord, &SseRecord) -> f64) -> f64 {
    paired(recs, target, |r| r.target.as_str(), |r| r.rep, f)
}

fn of<'a, T>(recs: &'a [T], target: &str, name: impl Fn(&T) -> &str) -> Vec<&'a T> {
    recs.iter().filter(|r| name(r) == target).collect()
}

/// `12345.6` → `12,346`.
pub fn int(x: f64) -> String {
    if !x.is_finite() {
        return "–".to_owned();
    }
    let neg = x < 0.0;
    let s = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if neg && out != "0" {
        format!("-{out}")
    } else {
        out
    }
}

fn f1(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "–".into()
    }
}

fn f2(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "–".into()
    }
}

fn f3(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.3}")
    } else {
        "–".into()
    }
}

fn signed(x: f64) -> String {
    if !x.is_finite() {
        "–".into()
    } else if x >= 0.0 {
        format!("+{}", int(x))
    } else {
        int(x)
    }
}

fn mb(kib: f64) -> f64 {
    kib * 1024.0 / 1e6
}

/// The issue's targets, checked against this run.
pub fn verdicts(plan: &Plan, r: &Results) -> Vec<Verdict> {
    let mut v = Vec::new();

    // 1. Throughput at 64 connections.
    let has = |recs: &[RunRecord], n: &str| recs.iter().any(|x| x.target == n);
    if has(&r.chat, IRIS) && has(&r.chat, BASELINE) {
        let ratio = run_paired(&r.chat, IRIS, |t, b| t.throughput / b.throughput);
        let it = median_by(&of(&r.chat, IRIS, |x| &x.target), |x| x.throughput);
        let bt = median_by(&of(&r.chat, BASELINE, |x| &x.target), |x| x.throughput);
        let cpu = run_paired(&r.chat, IRIS, |t, b| t.cpu_per_1k() / b.cpu_per_1k());
        let nocap = has(&r.chat, IRIS_NOCAP).then(|| {
            format!(
                "; captures off: {}×",
                f2(run_paired(&r.chat, IRIS_NOCAP, |t, b| t.throughput / b.throughput))
            )
        });
        v.push(Verdict {
            target: format!("throughput at {} connections", plan.chat_connections),
            threshold: ">= 0.8 × baseline".into(),
            measured: format!(
                "{}× ({} vs {} req/s; CPU per request {}× the baseline's){}",
                f2(ratio),
                int(it),
                int(bt),
                f1(cpu),
                nocap.unwrap_or_default()
            ),
            pass: Some(ratio >= 0.8),
        });
    } else {
        v.push(not_measured(
            "throughput at 64 connections",
            ">= 0.8 × baseline",
        ));
    }

    // 2. p99 added latency at a fixed rate.
    if has(&r.rate, IRIS) && has(&r.rate, BASELINE) {
        let added = run_paired(&r.rate, IRIS, |t, b| t.latency.p99_us - b.latency.p99_us);
        let added50 = run_paired(&r.rate, IRIS, |t, b| t.latency.p50_us - b.latency.p50_us);
        let achieved = median_by(&of(&r.rate, IRIS, |x| &x.target), |x| x.throughput);
        let rate_ok = achieved >= plan.rate_rps * 0.97;
        let nocap = has(&r.rate, IRIS_NOCAP).then(|| {
            format!(
                "; captures off: {} us at p99",
                signed(run_paired(&r.rate, IRIS_NOCAP, |t, b| {
                    t.latency.p99_us - b.latency.p99_us
                }))
            )
        });
        v.push(Verdict {
            target: format!("p99 added latency at {} RPS", int(plan.rate_rps)),
            threshold: "<= 150 us over the baseline".into(),
            measured: format!(
                "{} us at p99 ({} us at p50); iris served {} req/s{}{}",
                signed(added),
                signed(added50),
                int(achieved),
                nocap.unwrap_or_default(),
                if plan.rate_slot.is_zero() {
                    ""
                } else {
                    "; in slots, not judged (see the scenario)"
                }
            ),
            // Slots are a diagnosis: what iris defers is charged to the targets after it.
            pass: plan
                .rate_slot
                .is_zero()
                .then_some(added <= 150.0 && rate_ok),
        });
    } else {
        v.push(not_measured(
            "p99 added latency at 2,000 RPS",
            "<= 150 us over the baseline",
        ));
    }

    // 3. SSE first byte and chunk delivery.
    if r.sse.iter().any(|x| x.target == IRIS) && r.sse.iter().any(|x| x.target == BASELINE) {
        let added = sse_paired(&r.sse, IRIS, |t, b| t.ttfb.p50_us - b.ttfb.p50_us);
        let added99 = sse_paired(&r.sse, IRIS, |t, b| t.ttfb.p99_us - b.ttfb.p99_us);
        v.push(Verdict {
            target: format!("SSE time to first byte added ({} chunks)", plan.sse_chunks),
            threshold: "<= 100 us".into(),
            measured: format!(
                "{} us at p50 ({} us at p99)",
                signed(added),
                signed(added99)
            ),
            pass: Some(added <= 100.0),
        });
        let frames = sse_paired(&r.sse, IRIS, |t, b| t.frames / b.frames);
        let iris_max = of(&r.sse, IRIS, |x| &x.target)
            .iter()
            .map(|x| x.median_max_events_per_frame)
            .fold(0.0, f64::max);
        let base_max = of(&r.sse, BASELINE, |x| &x.target)
            .iter()
            .map(|x| x.median_max_events_per_frame)
            .fold(0.0, f64::max);
        let events_ok = of(&r.sse, IRIS, |x| &x.target)
            .iter()
            .all(|x| x.events >= f64::from(plan.sse_chunks));
        v.push(Verdict {
            target: "no SSE chunk held back".into(),
            threshold: "frames per stream >= 0.95 × baseline's, every event delivered".into(),
            measured: format!(
                "{}× the baseline's frames; most events in one frame (median stream): iris {}, baseline {}",
                f2(frames),
                f1(iris_max),
                f1(base_max)
            ),
            pass: Some(frames >= 0.95 && events_ok),
        });
    } else {
        v.push(not_measured("SSE time to first byte added", "<= 100 us"));
    }

    // 4. Many concurrent streams.
    let iris_rounds = of(&r.streams, IRIS, |x| &x.target);
    if iris_rounds.len() >= 2 {
        let peak = iris_rounds
            .iter()
            .map(|x| mb(x.peak_rss_kib as f64))
            .fold(0.0, f64::max);
        // The first of three or more rounds warms allocators and pools up; the last two are
        // equal rounds on a warm process and must not differ.
        let n = iris_rounds.len();
        let first = mb(iris_rounds[n - 2].peak_rss_kib as f64);
        let last = mb(iris_rounds[n - 1].peak_rss_kib as f64);
        let open = iris_rounds.iter().map(|x| x.peak_open).min().unwrap_or(0);
        let all_ok = iris_rounds.iter().all(|x| x.errors.total() == 0);
        let growth = last - first;
        let flat = growth <= (first * 0.05).max(2.0);
        let nocap_peak = of(&r.streams, IRIS_NOCAP, |x| &x.target)
            .iter()
            .map(|x| mb(x.peak_rss_kib as f64))
            .fold(f64::NAN, f64::max);
        v.push(Verdict {
            target: format!("{} concurrent streams held", int(plan.streams as f64)),
            threshold: "<= 300 MB RSS, flat between two equal rounds".into(),
            measured: format!(
                "peak {} MB; round {} {} MB, round {} {} MB ({} MB); {} streams open at once{}",
                f1(peak),
                n - 1,
                f1(first),
                n,
                f1(last),
                if growth >= 0.0 {
                    format!("+{}", f1(growth))
                } else {
                    f1(growth)
                },
                int(open as f64),
                if nocap_peak.is_finite() {
                    format!("; captures off: peak {} MB", f1(nocap_peak))
                } else {
                    String::new()
                }
            ),
            pass: Some(peak <= 300.0 && flat && all_ok && open * 100 >= plan.streams * 95),
        });
    } else {
        v.push(not_measured(
            "5,000 concurrent streams held",
            "<= 300 MB RSS, flat",
        ));
    }

    // 5. The usage store.
    let judged = || r.store.iter().filter(|s| s.judged);
    let max = judged().find(|s| s.mode.starts_with("max"));
    let fixed = judged().find(|s| s.mode.starts_with("fixed"));
    if let (Some(m), Some(f)) = (max, fixed) {
        let fixed_ok = f.dropped == 0 && f.written == f.offered;
        v.push(Verdict {
            target: "usage store sustained insert rate".into(),
            threshold: ">= 20,000 records/s".into(),
            measured: format!(
                "{} records/s at most; at {} nothing dropped: {} ({} of {} written, queue peak {})",
                int(m.records_per_s),
                f.mode,
                if fixed_ok { "yes" } else { "no" },
                int(f.written as f64),
                int(f.offered as f64),
                int(f.max_queued as f64)
            ),
            pass: Some(m.records_per_s >= 20_000.0 && fixed_ok),
        });
    } else {
        v.push(not_measured(
            "usage store sustained insert rate",
            ">= 20,000 records/s",
        ));
    }

    // 6. Errors everywhere.
    let counts = [
        (
            "chat",
            r.chat.iter().map(|x| x.errors.total()).sum::<u64>(),
            !r.chat.is_empty(),
        ),
        (
            "rate",
            r.rate.iter().map(|x| x.errors.total()).sum(),
            !r.rate.is_empty(),
        ),
        (
            "large",
            r.large.iter().map(|x| x.errors.total()).sum(),
            !r.large.is_empty(),
        ),
        (
            "rate-large",
            r.rate_large.iter().map(|x| x.errors.total()).sum(),
            !r.rate_large.is_empty(),
        ),
        (
            "sse",
            r.sse.iter().map(|x| x.errors.total()).sum(),
            !r.sse.is_empty(),
        ),
        (
            "streams",
            r.streams.iter().map(|x| x.errors.total()).sum(),
            !r.streams.is_empty(),
        ),
        (
            "records lost by iris",
            r.losses.iter().map(crate::losses::LossRecord::total).sum(),
            !r.losses.is_empty(),
        ),
        (
            "store (dropped)",
            r.store.iter().map(|x| x.dropped).sum(),
            !r.store.is_empty(),
        ),
    ];
    let ran: Vec<_> = counts.iter().filter(|c| c.2).collect();
    let total: u64 = ran.iter().map(|c| c.1).sum();
    v.push(Verdict {
        target: "zero errors in every scenario".into(),
        threshold: "0 (every target)".into(),
        measured: if ran.is_empty() {
            "no scenario ran".into()
        } else {
            ran.iter()
                .map(|c| format!("{} {}", c.0, int(c.1 as f64)))
                .collect::<Vec<_>>()
                .join(", ")
        },
        pass: (!ran.is_empty()).then_some(total == 0),
    });
    v
}

fn not_measured(target: &str, threshold: &str) -> Verdict {
    Verdict {
        target: target.into(),
        threshold: threshold.into(),
        measured: "–".into(),
        pass: None,
    }
}

/// The whole markdown document.
pub fn render(info: &RunInfo, plan: &Plan, r: &Results) -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "# iris benchmarks\n");
    let _ = writeln!(
        w,
        "> Generated by `scripts/bench` (crate `iris-bench`) from the run described below. Do not \
         edit by hand: run `scripts/bench` (about 30 minutes on 2 cores with its profile-guided \
         builds, 10 with `--no-pgo`; `--quick` for a try-out) to regenerate it.\n"
    );
    let _ = writeln!(
        w,
        "What dominated the profiles below, and what was changed because of it, session by \
         session: [performance.md](performance.md) (its last section, \"What is left\", lists \
         the next gains in order).\n"
    );

    let _ = writeln!(w, "## The run\n");
    let _ = writeln!(w, "| | |\n|---|---|");
    let _ = writeln!(w, "| date | {} |", info.date_utc);
    let _ = writeln!(
        w,
        "| commit | `{}`{} |",
        info.commit,
        if info.dirty {
            " plus uncommitted changes"
        } else {
            ""
        }
    );
    let _ = writeln!(w, "| command | `{}` |", info.command);
    if let Some(again) = &info.rendered_again {
        let _ = writeln!(w, "| rendered again | {again} |");
    }
    if !info.build.is_empty() {
        let _ = writeln!(w, "| build of iris and the baseline | {} |", info.build);
    }
    let _ = writeln!(
        w,
        "| machine | {} × {}, {} memory, Linux {} |",
        info.nproc, info.cpu_model, info.mem_total, info.kernel
    );
    let _ = writeln!(w, "| toolchain | {} |", info.rustc);
    if !info.server_env.is_empty() {
        let _ = writeln!(
            w,
            "| environment of iris and the baseline | `{}` |",
            info.server_env
        );
    }
    let _ = writeln!(w, "| nginx | {} |", info.nginx);
    let _ = writeln!(
        w,
        "| method | {}: {} repetition(s) per scenario ({} of the SSE scenario), medians; targets interleaved, their order rotated each repetition, each window begun once the previous target's processes were idle (at most 2 s); comparisons with the baseline paired per repetition |",
        if plan.quick {
            "**quick** (numbers are rough)"
        } else {
            "full"
        },
        plan.reps,
        plan.sse_reps
    );
    let _ = writeln!(
        w,
        "| load generator | iris-bench's own (hyper HTTP/1.1 keep-alive, {} runtime thread(s)), on the same machine |",
        info.loadgen_threads
    );
    let _ = writeln!(w, "| run time | {} s |", int(info.wall_s));
    let _ = writeln!(
        w,
        "| machine load (1/5/15 min) | {} at the start, {} at the end |\n",
        info.load_before, info.load_after
    );

    let _ = writeln!(w, "## Targets\n");
    let _ = writeln!(
        w,
        "| target | threshold | measured | verdict |\n|---|---|---|---|"
    );
    for v in verdicts(plan, r) {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} |",
            v.target,
            v.threshold,
            v.measured,
            v.word()
        );
    }
    let _ = writeln!(w);
    for n in &r.notes {
        let _ = writeln!(w, "- **note:** {n}");
    }
    if !r.notes.is_empty() {
        let _ = writeln!(w);
    }

    let _ = writeln!(w, "## What is measured\n");
    let _ = writeln!(
        w,
        "- **direct**: load generator → mock provider (`iris-mock-provider --no-record`).\n\
         - **baseline**: → `iris-bench-proxy` → mock. A minimal passthrough on iris's own stack \
         (hyper 1, hyper-util auto HTTP/1.1+h2c server, pooled hyper-util client, TCP_NODELAY): no \
         identity, no policy, no parsing. The physical limit iris is measured against.\n\
         - **nginx**: → nginx (Debian package, `worker_processes auto`, keep-alive upstream, no \
         buffering) → mock.\n\
         - **iris**: → `iris serve` ({}) → mock, identity resolution on (WhoIs through the fake tailscaled, which does \
         not know 127.0.0.1, so the caller is `(loopback)`), grants, usage logging to SQLite with \
         the default writer settings, captures on (the default). The targets are judged on this \
         one.\n\
         - **iris-nocapture**: a second iris, the same but with `iris.captures.enabled: false`.\n\
         - **iris-key**: the same, with `Authorization: Bearer iris_sk_…` (an iris key looked up \
         in the store).\n\
         - **iris-whois**: the same, from 127.0.0.2, which the fake tailscaled answers as \
         alice@example.com (a tailnet identity with CapMap grants).\n\
         - CPU is user + system time of the target's processes from `/proc/<pid>/stat` over the \
         measured window, per 1,000 successful requests; the mock's CPU is shown apart. Peak RSS \
         is `VmHWM` after resetting it (`/proc/<pid>/clear_refs`) at the start of the window.\n\
         - The machine is shared by load generator, target and mock: on {} cores a target's \
         throughput also depends on what the others cost. \"CPU s / 1k req\" and the \
         instruction counts of the profile are the cleaner cost comparison.\n",
        if info.build.is_empty() {
            DEFAULT_BUILD_NOTE
        } else {
            &info.build
        },
        info.nproc
    );

    render_chat(w, plan, &r.chat);
    render_large(w, plan, &r.large);
    render_rate(w, plan, &r.rate);
    render_rate_large(w, plan, &r.rate_large);
    render_sse(w, plan, &r.sse);
    render_streams(w, plan, &r.streams);
    render_store(w, plan, &r.store);
    render_losses(w, &r.losses);
    render_profile(w, r);
    render_micro(w, r);
    render_raw(w, r);
    s
}

/// The chat scenarios' request, as the report describes it.
fn chat_request(plan: &Plan) -> String {
    if plan.chat_prompt_bytes == 0 {
        "about 180 bytes".into()
    } else {
        format!(
            "**a user message of {} bytes of source code** (`--chat-prompt-bytes`), not the \
             small chat",
            plan.chat_prompt_bytes
        )
    }
}

fn render_chat(w: &mut String, plan: &Plan, recs: &[RunRecord]) {
    let _ = writeln!(
        w,
        "## Small chat, closed loop at {} connections\n\n`POST /v1/chat/completions` ({}, \
         non-streaming; the mock answers with usage{}), {} s per repetition after a {} ms \
         warm-up per target. Latency from send to the last body byte.\n",
        plan.chat_connections,
        chat_request(plan),
        match plan.chat_answer_bytes {
            0 => String::new(),
            n => format!(
                ", **an answer of about {n} bytes** (`--chat-answer-bytes`), not the small \
                 chat's"
            ),
        },
        plan.chat_duration.as_secs_f64(),
        plan.warmup.as_millis()
    );
    chat_table(w, recs);
}

/// The `large` scenario: reported, not judged.
fn render_large(w: &mut String, plan: &Plan, recs: &[RunRecord]) {
    if recs.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "## A coding agent's chat, closed loop at {} connections (reported, not judged)\n\n\
         The small chat's scenario with a user message of {} bytes of source code (quotes, \
         backslashes and newlines, as a coding agent sends; ~{} KB a request on the wire): \
         iris's per-byte costs, which the small chat hides. iris reads the whole body before \
         routing it (the duplicate-key check needs every top-level key), and with captures on \
         keeps, redacts and compresses it. Not one of the issue's targets (its errors and lost \
         records do count in \"zero errors in every scenario\"). It runs after the others but \
         `rate-large`: its peak RSS includes what earlier scenarios left in each process (glibc \
         keeps the streams' memory in the baseline and the mock), so that column is not the \
         prompt's cost.\n",
        plan.chat_connections,
        plan.large_prompt_bytes,
        chat_spec(plan.large_prompt_bytes).body.len() / 1000,
    );
    chat_table(w, recs);
}

fn chat_table(w: &mut String, recs: &[RunRecord]) {
    if recs.is_empty() {
        let _ = writeln!(w, "Not run.\n");
        return;
    }
    let _ = writeln!(
        w,
        "| target | req/s | × baseline | p50 us | p90 us | p99 us | max us | p50 vs baseline | p99 vs baseline | CPU s / 1k req | × baseline CPU | mock CPU s / 1k | peak RSS MB | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for n in names(recs.iter().map(|r| r.target.as_str())) {
        let rs = of(recs, &n, |x| &x.target);
        let _ = writeln!(
            w,
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            int(median_by(&rs, |x| x.throughput)),
            f2(run_paired(recs, &n, |t, b| t.throughput / b.throughput)),
            int(median_by(&rs, |x| x.latency.p50_us)),
            int(median_by(&rs, |x| x.latency.p90_us)),
            int(median_by(&rs, |x| x.latency.p99_us)),
            int(median_by(&rs, |x| x.latency.max_us)),
            signed(run_paired(recs, &n, |t, b| t.latency.p50_us - b.latency.p50_us)),
            signed(run_paired(recs, &n, |t, b| t.latency.p99_us - b.latency.p99_us)),
            f3(median_by(&rs, |x| x.cpu_per_1k())),
            f2(run_paired(recs, &n, |t, b| t.cpu_per_1k() / b.cpu_per_1k())),
            f3(median_by(&rs, |x| x.mock_cpu_per_1k())),
            f1(median_by(&rs, |x| mb(x.window.peak_rss_kib as f64))),
            int(rs.iter().map(|x| x.errors.total()).sum::<u64>() as f64),
        );
    }
    let _ = writeln!(w);
}

fn render_rate(w: &mut String, plan: &Plan, recs: &[RunRecord]) {
    let slots = if plan.rate_slot.is_zero() {
        "The targets run one after another in each repetition.".to_owned()
    } else {
        format!(
            "In each repetition the targets but `direct` take turns in slots of {} ms (one \
             stream of requests, handed to one target at a time; each target starts a cycle of \
             slots in turn; each target's share of a repetition is its slots', so the time per \
             target above holds to within a slot), so the machine's other load, which here \
             changes from second to second, falls on each of them alike; the first {} ms of each \
             turn (a target's slots in a row) are sent but not counted (the target was idle \
             before it). What a target defers (iris's capture and usage writes) runs in the next \
             targets' slots and is charged to them, so the p99 verdict is not judged from slots. \
             Targets served by one process share its CPU by requests. `direct` runs on its own.",
            plan.rate_slot.as_millis(),
            plan.rate_slot_warm.as_millis()
        )
    };
    let _ = writeln!(
        w,
        "## Small chat at a fixed {} requests/s\n\nOpen loop over {} connections, {} s per \
         target and repetition: a pacer thread schedules every request; latency runs from the \
         **scheduled** send time to the last body byte, so a stall is charged for every request \
         it delayed (no coordinated omission). {slots} \"generator lag\" is how late the \
         generator itself sent (the floor under every target's numbers). The request: {}.\n",
        int(plan.rate_rps),
        plan.rate_connections,
        plan.rate_duration.as_secs_f64(),
        chat_request(plan)
    );
    rate_table(w, recs);
}

/// The `rate-large` scenario: reported, not judged.
fn render_rate_large(w: &mut String, plan: &Plan, recs: &[RunRecord]) {
    if recs.is_empty() {
        return;
    }
    let _ = writeln!(
        w,
        "## A coding agent's chat at a fixed {} requests/s (reported, not judged)\n\n\
         The fixed-rate scenario with the `large` scenario's request (a user message of {} \
         bytes of source code, ~{} KB on the wire). With captures on, iris keeps, redacts and \
         compresses every prompt off the request path: tens of times the small chat's deferred \
         work, competing with the request path for the same cores, so this is where it would \
         show in the tail (docs/performance.md, session 25). Its errors and lost records count \
         in \"zero errors in every scenario\". It runs last: its peak RSS includes what earlier \
         scenarios left in each process.\n",
        int(plan.rate_rps),
        plan.large_prompt_bytes,
        chat_spec(plan.large_prompt_bytes).body.len() / 1000,
    );
    rate_table(w, recs);
}

fn rate_table(w: &mut String, recs: &[RunRecord]) {
    if recs.is_empty() {
        let _ = writeln!(w, "Not run.\n");
        return;
    }
    let _ = writeln!(
        w,
        "| target | req/s served | p50 us | p90 us | p99 us | max us | p50 vs baseline | p90 vs baseline | p99 vs baseline | generator lag p99 us | CPU s / 1k req | peak RSS MB | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for n in names(recs.iter().map(|r| r.target.as_str())) {
        let rs = of(recs, &n, |x| &x.target);
        let _ = writeln!(
            w,
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            int(median_by(&rs, |x| x.throughput)),
            int(median_by(&rs, |x| x.latency.p50_us)),
            int(median_by(&rs, |x| x.latency.p90_us)),
            int(median_by(&rs, |x| x.latency.p99_us)),
            int(median_by(&rs, |x| x.latency.max_us)),
            signed(run_paired(recs, &n, |t, b| t.latency.p50_us - b.latency.p50_us)),
            signed(run_paired(recs, &n, |t, b| t.latency.p90_us - b.latency.p90_us)),
            signed(run_paired(recs, &n, |t, b| t.latency.p99_us - b.latency.p99_us)),
            int(median_by(&rs, |x| x.lag.p99_us)),
            f3(median_by(&rs, |x| x.cpu_per_1k())),
            f1(median_by(&rs, |x| mb(x.window.peak_rss_kib as f64))),
            int(rs.iter().map(|x| x.errors.total()).sum::<u64>() as f64),
        );
    }
    let _ = writeln!(w);
}

fn render_sse(w: &mut String, plan: &Plan, recs: &[SseRecord]) {
    let _ = writeln!(
        w,
        "## Anthropic SSE, {} chunks\n\n`POST /v1/messages` with `stream: true`; the mock sends \
         `message_start`, `content_block_start` and `ping` at once, then {} `content_block_delta` \
         events {} ms apart, then the closing events. {} streams at a time, {} s per repetition, \
         {} repetitions. \
         First byte = first body byte. \"frames\" = body reads that delivered data; a proxy that \
         held chunks back would deliver fewer, fuller frames.\n",
        plan.sse_chunks,
        plan.sse_chunks,
        plan.sse_chunk_delay_ms,
        plan.sse_concurrency,
        plan.sse_duration.as_secs_f64(),
        plan.sse_reps
    );
    if recs.is_empty() {
        let _ = writeln!(w, "Not run.\n");
        return;
    }
    let _ = writeln!(
        w,
        "| target | streams/s | first byte p50 us | first byte p99 us | p50 vs baseline | p99 vs baseline | total p50 ms | total p99 ms | frames / stream | events / stream | most events in a frame | gap p99 us | CPU s / 1k streams | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for n in names(recs.iter().map(|r| r.target.as_str())) {
        let rs = of(recs, &n, |x| &x.target);
        let _ = writeln!(
            w,
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            f1(median_by(&rs, |x| x.streams_per_s)),
            int(median_by(&rs, |x| x.ttfb.p50_us)),
            int(median_by(&rs, |x| x.ttfb.p99_us)),
            signed(sse_paired(recs, &n, |t, b| t.ttfb.p50_us - b.ttfb.p50_us)),
            signed(sse_paired(recs, &n, |t, b| t.ttfb.p99_us - b.ttfb.p99_us)),
            f1(median_by(&rs, |x| x.total.p50_us / 1000.0)),
            f1(median_by(&rs, |x| x.total.p99_us / 1000.0)),
            int(median_by(&rs, |x| x.frames)),
            int(median_by(&rs, |x| x.events)),
            int(rs.iter().map(|x| x.max_events_per_frame).max().unwrap_or(0) as f64),
            int(median_by(&rs, |x| x.gaps.p99_us)),
            f3(median_by(&rs, |x| x.cpu_per_1k())),
            int(rs.iter().map(|x| x.errors.total()).sum::<u64>() as f64),
        );
    }
    let _ = writeln!(w);
}

fn render_streams(w: &mut String, plan: &Plan, recs: &[HoldRecord]) {
    let _ = writeln!(
        w,
        "## {} concurrent slow streams\n\nEach stream has its own connection and lasts about {} s \
         ({} chunks {} ms apart). {} equal rounds per target, the targets interleaved round by \
         round; the first round warms allocators and connection pools up, the last two are \
         compared for growth. RSS of the target's processes sampled every 100 ms. \"peak open\" \
         = streams whose head had arrived and whose body had not ended, at the same moment. The \
         mock serves every target, so its own RSS (the direct rows) grows with the others' \
         rounds too.\n",
        int(plan.streams as f64),
        int((plan.streams_chunks as u64 * plan.streams_chunk_delay_ms) as f64 / 1000.0),
        plan.streams_chunks,
        plan.streams_chunk_delay_ms,
        plan.streams_rounds
    );
    if recs.is_empty() {
        let _ = writeln!(w, "Not run.\n");
        return;
    }
    let _ = writeln!(
        w,
        "| target | round | streams ok | peak open | ramp s | peak RSS MB | RSS 1 s after MB | CPU s | errors |\n|---|---|---|---|---|---|---|---|---|"
    );
    for n in names(recs.iter().map(|r| r.target.as_str())) {
        for x in of(recs, &n, |x| &x.target) {
            let _ = writeln!(
                w,
                "| {n} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
                x.round + 1,
                int(x.ok as f64),
                int(x.peak_open as f64),
                f1(x.ramp_s),
                f1(mb(x.peak_rss_kib as f64)),
                f1(mb(x.rss_after_kib as f64)),
                f2(x.cpu_s),
                int(x.errors.total() as f64),
                x.first_error
                    .as_deref()
                    .map(|e| format!(" ({})", e.chars().take(80).collect::<String>()))
                    .unwrap_or_default()
            );
        }
    }
    let _ = writeln!(w);
}

fn render_store(w: &mut String, plan: &Plan, recs: &[StoreRecord]) {
    let _ = writeln!(
        w,
        "## Usage store, request path idle\n\niris's `SqliteStore` (a file in WAL mode) and its \
         batched writer with iris's default settings (queue 65,536, batches of 1,000, flush every \
         second), driven directly: records shaped like a Claude Code request's (256 sessions a batch: a \
         block has a key row per distinct session), offered for {} s; then, reported and not \
         judged, the worst case for those key rows: a new session per record, its id random. \
         The rate counts records written until the writer has drained. CPU is this process's \
         (producer and writer).\n",
        plan.store_duration.as_secs_f64()
    );
    if recs.is_empty() {
        let _ = writeln!(w, "Not run.\n");
        return;
    }
    let _ = writeln!(
        w,
        "| offered | records offered | written | dropped | failed batches | records/s | queue peak | CPU s / 1k records |\n|---|---|---|---|---|---|---|---|"
    );
    for x in recs {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            x.mode,
            int(x.offered as f64),
            int(x.written as f64),
            int(x.dropped as f64),
            int(x.failed_batches as f64),
            int(x.records_per_s),
            int(x.max_queued as f64),
            f3(x.cpu_per_1k)
        );
    }
    let _ = writeln!(w);
}

fn render_losses(w: &mut String, recs: &[crate::losses::LossRecord]) {
    let _ = writeln!(
        w,
        "## Records iris lost

After each scenario, once iris has written what it holds, its \
         `/api/health` (admin detail, read on the break-glass admin socket): usage records \
         dropped, records written without enrichment (session, cost, capture) because the \
         observer's queue was full, captures dropped because the store did not keep up, and usage \
         records still queued when the check stopped waiting (10 s). A throughput bought by \
         falling behind would show here.\n"
    );
    if recs.is_empty() {
        let _ = writeln!(w, "Not checked.\n");
        return;
    }
    let _ = writeln!(
        w,
        "| scenario | instance | usage records dropped | not enriched | captures dropped | still queued |\n|---|---|---|---|---|---|"
    );
    for x in recs {
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} | {} |",
            x.scenario,
            x.instance,
            int(x.usage_dropped as f64),
            int(x.unenriched as f64),
            int(x.captures_dropped as f64),
            int(x.queued as f64)
        );
    }
    let _ = writeln!(w);
}

fn render_profile(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## Where iris spends its instructions (callgrind)\n");
    let Some(p) = &r.profile else {
        let _ = writeln!(
            w,
            "Not run{}.\n",
            r.profile_note
                .as_deref()
                .map(|n| format!(": {n}"))
                .unwrap_or_default()
        );
        return;
    };
    let _ = writeln!(
        w,
        "iris and the baseline proxy each ran under `valgrind --tool=callgrind` in front of the \
         same mock; counters zeroed after a warm-up, dumped after each workload. Instruction \
         counts do not depend on machine load, so the ratio is the most stable cost comparison \
         here. ({})\n",
        p.command
    );
    let _ = writeln!(
        w,
        "| process | workload | requests | instructions / request | × baseline |\n|---|---|---|---|---|"
    );
    for part in &p.parts {
        let base = p
            .parts
            .iter()
            .find(|b| b.process == BASELINE && b.workload == part.workload)
            .map(|b| b.ir_per_request);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            part.process,
            part.workload,
            int(part.requests as f64),
            int(part.ir_per_request),
            base.map_or("–".into(), |b| f2(part.ir_per_request / b))
        );
    }
    let _ = writeln!(w);
    for part in p.parts.iter().filter(|x| x.process != BASELINE) {
        let _ = writeln!(
            w,
            "### {}, {}: by origin (exclusive instructions)\n\n| origin | share |\n|---|---|",
            part.process, part.workload
        );
        for (o, _, pct) in part.by_origin.iter().take(14) {
            let _ = writeln!(w, "| {o} | {}% |", f1(*pct));
        }
        let _ = writeln!(
            w,
            "\n<details><summary>top functions (exclusive)</summary>\n\n| share | function |\n|---|---|"
        );
        for (_, pct, f) in part.top_functions.iter().take(25) {
            let f: String = f.chars().take(140).collect();
            let _ = writeln!(w, "| {}% | `{}` |", f1(*pct), f.replace('|', "\\|"));
        }
        let _ = writeln!(
            w,
            "\n</details>\n\n<details><summary>iris functions (inclusive: themselves and what they call)</summary>\n\n| share | function |\n|---|---|"
        );
        for (_, pct, f) in part.iris_inclusive.iter().take(30) {
            let f: String = f.chars().take(140).collect();
            let _ = writeln!(w, "| {}% | `{}` |", f1(*pct), f.replace('|', "\\|"));
        }
        let _ = writeln!(w, "\n</details>\n");
    }
    let kept: Vec<String> = p
        .parts
        .iter()
        .filter_map(|x| {
            x.dump
                .as_ref()?
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .collect();
    if !kept.is_empty() {
        let _ = writeln!(
            w,
            "The raw dumps of this run were kept for `callgrind_annotate` (not committed): {}.\n",
            kept.iter()
                .map(|k| format!("`target/iris-bench/callgrind/{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

fn render_micro(w: &mut String, r: &Results) {
    let _ = writeln!(w, "## Micro-benchmarks (criterion)\n");
    if r.micro.is_empty() {
        let _ = writeln!(
            w,
            "Not run{}. They live in `crates/iris-providers/benches`, \
             `crates/iris-policy/benches` and `crates/iris-capture/benches` \
             (`cargo bench -p iris-providers -p iris-policy -p iris-capture`).\n",
            r.micro_note
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
        return;
    }
    let _ = writeln!(
        w,
        "`cargo bench -p iris-providers -p iris-policy -p iris-capture` (short measurement times), median per \
         iteration.\n\n| benchmark | time | throughput |\n|---|---|---|"
    );
    for m in &r.micro {
        let time = if m.median_ns >= 1e6 {
            format!("{} ms", f2(m.median_ns / 1e6))
        } else if m.median_ns >= 1e3 {
            format!("{} us", f2(m.median_ns / 1e3))
        } else {
            format!("{} ns", f1(m.median_ns))
        };
        let tp = match (m.mb_per_s(), m.elements) {
            (Some(x), _) => format!("{} MB/s", int(x)),
            (None, Some(n)) if m.median_ns > 0.0 => {
                format!("{} M elements/s", f1(n as f64 / m.median_ns * 1e3))
            }
            _ => String::new(),
        };
        let _ = writeln!(w, "| `{}` | {} | {} |", m.id, time, tp);
    }
    let _ = writeln!(w);
}

fn render_raw(w: &mut String, r: &Results) {
    let _ = writeln!(
        w,
        "## Every repetition\n\n<details><summary>raw numbers</summary>\n"
    );
    let _ = writeln!(w, "```");
    for (label, x) in r
        .chat
        .iter()
        .map(|x| ("chat ", x))
        .chain(r.large.iter().map(|x| ("large", x)))
    {
        let _ = writeln!(
            w,
            "{label} rep {} {:<10} {:>9.0} req/s p50 {:>7.0} p99 {:>7.0} max {:>8.0} us cpu {:.3} s/1k errors {}",
            x.rep,
            x.target,
            x.throughput,
            x.latency.p50_us,
            x.latency.p99_us,
            x.latency.max_us,
            x.cpu_per_1k(),
            x.errors.total()
        );
    }
    for (label, x) in r
        .rate
        .iter()
        .map(|x| ("rate ", x))
        .chain(r.rate_large.iter().map(|x| ("rate-large", x)))
    {
        let _ = writeln!(
            w,
            "{label} rep {} {:<10} {:>9.0} req/s p50 {:>7.0} p99 {:>7.0} max {:>8.0} us lag p99 {:>6.0} us errors {}",
            x.rep,
            x.target,
            x.throughput,
            x.latency.p50_us,
            x.latency.p99_us,
            x.latency.max_us,
            x.lag.p99_us,
            x.errors.total()
        );
    }
    for x in &r.sse {
        let _ = writeln!(
            w,
            "sse   rep {} {:<10} {:>6.1} streams/s ttfb p50 {:>6.0} p99 {:>7.0} us total p50 {:>7.1} ms frames {:>4.0} errors {}",
            x.rep,
            x.target,
            x.streams_per_s,
            x.ttfb.p50_us,
            x.ttfb.p99_us,
            x.total.p50_us / 1000.0,
            x.frames,
            x.errors.total()
        );
    }
    let _ = writeln!(w, "```\n\n</details>\n");
    let errs: Vec<String> = [
        ("chat", &r.chat),
        ("rate", &r.rate),
        ("large", &r.large),
        ("rate-large", &r.rate_large),
    ]
    .into_iter()
    .flat_map(|(scenario, recs)| recs.iter().map(move |x| (scenario, x)))
    .filter_map(|(scenario, x)| {
        x.first_error
            .as_ref()
            .map(|e| format!("{scenario} {} rep {}: {e}", x.target, x.rep))
    })
    .chain(r.sse.iter().filter_map(|x| {
        x.first_error
            .as_ref()
            .map(|e| format!("sse {} rep {}: {e}", x.target, x.rep))
    }))
    .collect();
    if !errs.is_empty() {
        let _ = writeln!(w, "First error of each run that had one:\n\n```");
        for e in errs.iter().take(30) {
            let _ = writeln!(w, "{e}");
        }
        let _ = writeln!(w, "```\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Errors;
    use crate::scenarios::Window;
    use crate::stats::Summary;
    use std::time::Duration;

    fn rec(target: &str, rep: usize, rps: f64, p99: f64) -> RunRecord {
        RunRecord {
            target: target.into(),
            rep,
            ok: (rps * 3.0) as u64,
            errors: Errors::default(),
            first_error: None,
            elapsed_s: 3.0,
            throughput: rps,
            latency: Summary {
                count: 1,
                p50_us: p99 / 2.0,
                p90_us: p99 * 0.8,
                p99_us: p99,
                max_us: p99 * 2.0,
                mean_us: p99 / 2.0,
            },
            lag: Summary::default(),
            window: Window {
                cpu_s: rps * 3.0 / 10_000.0,
                ..Window::default()
            },
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(int(1234567.4), "1,234,567");
        assert_eq!(int(999.6), "1,000");
        assert_eq!(int(-1234.0), "-1,234");
        assert_eq!(int(0.2), "0");
        assert_eq!(int(f64::NAN), "–");
        assert_eq!(signed(12.0), "+12");
        assert_eq!(signed(-3.0), "-3");
    }

    #[test]
    fn paired_ratios_use_the_same_repetition() {
        // Repetition 1 ran on a slower machine moment: the paired ratio stays 0.5.
        let recs = vec![
            rec("baseline", 0, 10_000.0, 100.0),
            rec("iris", 0, 5_000.0, 300.0),
            rec("baseline", 1, 4_000.0, 100.0),
            rec("iris", 1, 2_000.0, 250.0),
            rec("baseline", 2, 8_000.0, 100.0),
            rec("iris", 2, 4_000.0, 200.0),
        ];
        assert_eq!(
            run_paired(&recs, "iris", |t, b| t.throughput / b.throughput),
            0.5
        );
        assert_eq!(
            run_paired(&recs, "iris", |t, b| t.latency.p99_us - b.latency.p99_us),
            150.0
        );
    }

    /// A run saved as JSON (`--json`) renders the same report again (`--from-json`).
    #[test]
    fn a_saved_run_renders_the_same_report() {
        let plan = Plan::full();
        let results = Results {
            chat: vec![
                rec("baseline", 0, 10_000.0, 100.0),
                rec("iris", 0, 8_500.0, 120.0),
            ],
            large: vec![
                rec("baseline", 0, 900.0, 900.0),
                rec("iris", 0, 500.0, 2_000.0),
            ],
            rate_large: vec![
                rec("baseline", 0, 2_000.0, 500.0),
                rec("iris", 0, 2_000.0, 800.0),
            ],
            notes: vec!["a note".into()],
            ..Results::default()
        };
        let info = RunInfo {
            commit: "abc".into(),
            ..RunInfo::default()
        };
        let saved = SavedRun {
            info,
            plan,
            results,
        };
        let json = serde_json::to_value(&saved).unwrap();
        let back: SavedRun = serde_json::from_value(json.clone()).unwrap();
        let first = render(&saved.info, &saved.plan, &saved.results);
        assert_eq!(render(&back.info, &back.plan, &back.results), first);
        assert!(first.contains("## A coding agent's chat"));
        assert!(first.contains("large 0"));
        assert!(first.contains("## A coding agent's chat at a fixed 2,000 requests/s"));
        assert!(first.contains("rate-large rep 0 iris"));

        // A run saved before fields were added (here the `large` scenario, its prompt size and
        // `rendered_again`) still loads: they read as their defaults.
        let mut old = json;
        old["results"].as_object_mut().unwrap().remove("large");
        old["results"].as_object_mut().unwrap().remove("rate_large");
        old["plan"]
            .as_object_mut()
            .unwrap()
            .remove("large_prompt_bytes");
        old["plan"]
            .as_object_mut()
            .unwrap()
            .remove("chat_prompt_bytes");
        old["info"]
            .as_object_mut()
            .unwrap()
            .remove("rendered_again");
        // Before slots: the targets one after another, and the full run's warm-up.
        for field in ["rate_slot", "rate_slot_warm"] {
            old["plan"].as_object_mut().unwrap().remove(field);
        }
        let back: SavedRun = serde_json::from_value(old).unwrap();
        assert_eq!(back.plan.rate_slot, Duration::ZERO);
        assert_eq!(back.plan.rate_slot_warm, Plan::full().rate_slot_warm);
        assert!(back.results.large.is_empty() && back.results.rate_large.is_empty());
        assert_eq!(
            back.plan.large_prompt_bytes,
            Plan::full().large_prompt_bytes
        );
        assert!(!render(&back.info, &back.plan, &back.results).contains("A coding agent's chat"));
    }

    #[test]
    fn verdicts_follow_the_thresholds() {
        let plan = Plan::full();
        let r = Results {
            chat: vec![
                rec("baseline", 0, 10_000.0, 100.0),
                rec("iris", 0, 8_500.0, 120.0),
            ],
            rate: vec![
                rec("baseline", 0, 2000.0, 100.0),
                rec("iris", 0, 2000.0, 400.0),
            ],
            ..Results::default()
        };
        let v = verdicts(&plan, &r);
        assert_eq!(v[0].pass, Some(true), "{:?}", v[0]);
        assert_eq!(v[1].pass, Some(false), "300 us added at p99: {:?}", v[1]);
        assert_eq!(v[2].pass, None, "SSE not measured");
        let errors = v.last().unwrap();
        assert_eq!(errors.pass, Some(true));
        let doc = render(&RunInfo::default(), &plan, &r);
        assert!(
            doc.contains("| throughput at 64 connections | >= 0.8 × baseline | 0.85×"),
            "{doc}"
        );
        assert!(doc.contains("**missed**"));
        assert!(doc.contains("| iris | 8,500 | 0.85 |"), "{doc}");

        // Measured in slots, the fixed-rate p99 is shown but not judged.
        let slots = Plan {
            rate_slot: Duration::from_millis(500),
            ..Plan::full()
        };
        let v = verdicts(&slots, &r);
        assert_eq!(v[1].pass, None, "{:?}", v[1]);
        assert!(v[1].measured.contains("+300 us at p99"), "{:?}", v[1]);
        assert!(v[1].measured.contains("not judged"), "{:?}", v[1]);
        let doc = render(&RunInfo::default(), &slots, &r);
        assert!(doc.contains("take turns in slots of 500 ms"), "{doc}");
    }
}
