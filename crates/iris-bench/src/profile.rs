//! Instruction profiles with `valgrind --tool=callgrind`: a second iris (and a second baseline
//! proxy) under callgrind, a warm-up, counters zeroed, a fixed number of requests, a dump.
//! Instruction counts do not depend on how busy the machine is, so "instructions per request"
//! compares iris with the baseline exactly where wall-clock numbers are noisy, and the
//! per-function and per-crate shares say what dominates.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::load::{self, ClosedLoop, Endpoint, RequestSpec, SseRun};
use crate::procs::{Server, run_output};
use crate::scenarios::{anthropic_stream_spec, chat_spec, with_answer};
use crate::stack::{Stack, start_iris_slow};

/// Longer than the usage writer's flush interval, with room for callgrind's slowness.
const STORE_SETTLE: Duration = Duration::from_millis(2500);

/// One workload of one profiled process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfilePart {
    pub process: String,
    pub workload: String,
    pub requests: u64,
    pub errors: u64,
    pub total_ir: u64,
    pub ir_per_request: f64,
    /// Functions by their own (exclusive) instructions: (Ir, share %, function).
    pub top_functions: Vec<(u64, f64, String)>,
    /// Exclusive instructions summed by where the code comes from (crate or library).
    pub by_origin: Vec<(String, u64, f64)>,
    /// iris's own functions by inclusive instructions (themselves and what they call).
    pub iris_inclusive: Vec<(u64, f64, String)>,
    /// Where the raw callgrind dump was kept, for `callgrind_annotate` by hand.
    pub dump: Option<PathBuf>,
}

/// All profiles of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileResult {
    pub parts: Vec<ProfilePart>,
    pub command: String,
}

/// Workload sizes.
#[derive(Debug, Clone, Copy)]
pub struct ProfilePlan {
    pub chat_requests: u64,
    pub sse_streams: u64,
    /// The chat workload's prompt, as the chat scenario's (`--chat-prompt-bytes`; 0: small).
    pub chat_prompt_bytes: usize,
    /// The chat workload's answer, as the chat scenario's (`--chat-answer-bytes`; 0: short).
    pub chat_answer_bytes: usize,
}

impl ProfilePlan {
    pub fn new(quick: bool, chat_prompt_bytes: usize, chat_answer_bytes: usize) -> ProfilePlan {
        let (chat_requests, sse_streams) = if quick { (300, 20) } else { (1500, 30) };
        ProfilePlan {
            chat_requests,
            sse_streams,
            chat_prompt_bytes,
            chat_answer_bytes,
        }
    }
}

fn callgrind_cmd(out: &Path) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
    ]
}

/// Whether valgrind's callgrind and its tools are installed. (`callgrind_annotate --version`
/// prints to stderr and exits with 255, so only the output is checked.)
pub fn available() -> bool {
    ["valgrind", "callgrind_control", "callgrind_annotate"]
        .iter()
        .all(|t| {
            Command::new(t).arg("--version").output().is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout).contains(t.trim_end_matches("_control"))
                    || String::from_utf8_lossy(&o.stderr).contains(t)
                    || o.status.success()
            })
        })
}

/// Profile iris and the baseline proxy on the chat and SSE workloads.
/// The dumps are copied to `keep_dir` (when given) for `callgrind_annotate` by hand.
pub async fn run(
    stack: &Stack,
    plan: ProfilePlan,
    keep_dir: Option<&Path>,
) -> anyhow::Result<ProfileResult> {
    if let Some(k) = keep_dir {
        std::fs::create_dir_all(k)?;
    }
    let dir = stack.work.path().join("profile");
    std::fs::create_dir_all(&dir)?;
    let mut parts = Vec::new();

    // iris under callgrind (captures on, as configured by default, then off), each with the
    // run's config and its own data directory.
    for (name, config) in [
        ("iris", &stack.iris_config),
        ("iris-nocapture", &stack.iris_nocapture_config),
    ] {
        let out = dir.join(format!("{name}.callgrind"));
        let data = dir.join(format!("{name}-data"));
        std::fs::create_dir_all(&data)?;
        let wrapper = callgrind_cmd(&out);
        let mut iris = start_iris_slow(
            &stack.opts.bin_dir,
            config,
            &data,
            &stack.tailscaled_socket(),
            &dir,
            &wrapper,
        )?;
        iris.name = format!("{name}-profiled");
        parts.extend(profile_process(name, iris, &out, plan, keep_dir).await?);
    }

    let base_out = dir.join("baseline.callgrind");
    let mut cmd = Command::new("valgrind");
    cmd.args(&callgrind_cmd(&base_out)[1..])
        .arg(stack.opts.bin_dir.join("iris-bench-proxy"))
        .args(["--listen", "127.0.0.1:0", "--upstream"])
        .arg(stack.mock.addr()?.to_string());
    let base =
        Server::spawn_with_timeout("baseline-profiled", cmd, &dir, Duration::from_secs(120))?;
    parts.extend(profile_process("baseline", base, &base_out, plan, keep_dir).await?);

    Ok(ProfileResult {
        parts,
        command: "valgrind --tool=callgrind <binary> ...; callgrind_control --zero after a \
                  warm-up, --dump after each workload; self costs read from the dump (a call's \
                  cost is its callee's), inclusive ones from callgrind_annotate --inclusive=yes"
            .to_owned(),
    })
}

async fn profile_process(
    name: &str,
    mut server: Server,
    out: &Path,
    plan: ProfilePlan,
    keep_dir: Option<&Path>,
) -> anyhow::Result<Vec<ProfilePart>> {
    let ep = Endpoint::new(server.addr()?);
    let pid = server.pid;
    let chat = with_answer(chat_spec(plan.chat_prompt_bytes), plan.chat_answer_bytes)?;
    let sse = anthropic_stream_spec(200, 1)?;
    let mut parts = Vec::new();

    // Warm-up: connections, pools, lazily built state.
    let warm = ClosedLoop {
        connections: 4,
        duration: Duration::from_secs(60),
        max_requests: 100,
    };
    let _ = load::closed_loop(&ep, &chat, &warm).await;

    let chat_label = match (plan.chat_prompt_bytes, plan.chat_answer_bytes) {
        (0, 0) => "chat (small, non-streaming)".to_owned(),
        (n, 0) => format!("chat ({n}-byte prompt, non-streaming)"),
        (0, a) => format!("chat ({a}-byte answer, non-streaming)"),
        (n, a) => format!("chat ({n}-byte prompt, {a}-byte answer, non-streaming)"),
    };
    let workloads: [(&str, Workload); 2] = [
        (&chat_label, Workload::Chat(chat, plan.chat_requests)),
        (
            "anthropic SSE, 200 chunks 1 ms apart",
            Workload::Sse(sse, plan.sse_streams),
        ),
    ];
    for (i, (label, w)) in workloads.into_iter().enumerate() {
        // Usage records are written in batches at most `flush_interval` (1 s) after the request:
        // wait for the earlier requests' writes before zeroing and for this workload's before the
        // dump, so each workload is charged its own store writes, whole.
        tokio::time::sleep(STORE_SETTLE).await;
        control(&["--zero"], pid)?;
        let (ok, errors) = match &w {
            Workload::Chat(spec, n) => {
                let r = load::closed_loop(
                    &ep,
                    spec,
                    &ClosedLoop {
                        connections: 4,
                        duration: Duration::from_secs(240),
                        max_requests: *n,
                    },
                )
                .await;
                (r.ok, r.errors.total())
            }
            Workload::Sse(spec, n) => {
                let r = load::sse(
                    &ep,
                    spec,
                    &SseRun {
                        concurrency: 2,
                        duration: Duration::from_secs(240),
                        max_streams: *n,
                    },
                )
                .await;
                (r.ok, r.errors.total())
            }
        };
        tokio::time::sleep(STORE_SETTLE).await;
        control(&["--dump=workload"], pid)?;
        let dump = dump_file(out, i + 1)?;
        let annotate = |inclusive: &str| {
            let mut c = Command::new("callgrind_annotate");
            c.args([inclusive, "--threshold=100", "--auto=no"])
                .arg(&dump);
            run_output(c, Duration::from_secs(120))
        };
        let parsed = parse_dump(&std::fs::read_to_string(&dump)?);
        let inclusive = parse_annotate(&annotate("--inclusive=yes")?);
        let kept = keep_dir.map(|d| {
            let slug = if label.starts_with("chat") {
                "chat"
            } else {
                "sse"
            };
            d.join(format!("{name}-{slug}.callgrind"))
        });
        if let Some(k) = &kept {
            let _ = std::fs::copy(&dump, k);
        }
        let total = parsed.total;
        parts.push(ProfilePart {
            process: name.to_owned(),
            workload: label.to_owned(),
            requests: ok,
            errors,
            total_ir: total,
            ir_per_request: if ok == 0 {
                0.0
            } else {
                total as f64 / ok as f64
            },
            top_functions: parsed
                .functions
                .iter()
                .take(25)
                .map(|f| (f.ir, pct(f.ir, total), f.function.clone()))
                .collect(),
            by_origin: by_origin(&parsed.by_file, total),
            iris_inclusive: inclusive
                .functions
                .iter()
                .filter(|f| f.function.contains("iris_"))
                .take(30)
                .map(|f| (f.ir, pct(f.ir, total), f.function.clone()))
                .collect(),
            dump: kept.filter(|k| k.is_file()),
        });
        eprintln!(
            "iris-bench: profile {name}: {label}: {ok} requests, {:.0} instructions each",
            parts.last().map_or(0.0, |p| p.ir_per_request)
        );
    }
    server.stop();
    Ok(parts)
}

enum Workload {
    Chat(RequestSpec, u64),
    Sse(RequestSpec, u64),
}

fn control(args: &[&str], pid: u32) -> anyhow::Result<()> {
    let mut c = Command::new("callgrind_control");
    c.args(args).arg(pid.to_string());
    run_output(c, Duration::from_secs(60)).map(|_| ())
}

/// The file of dump number `n` (`OUT.n`), waiting briefly until callgrind has written it.
fn dump_file(out: &Path, n: usize) -> anyhow::Result<PathBuf> {
    let p = PathBuf::from(format!("{}.{n}", out.display()));
    for _ in 0..100 {
        if std::fs::metadata(&p).is_ok_and(|m| m.len() > 0) {
            // Give callgrind a moment to finish the file.
            std::thread::sleep(Duration::from_millis(200));
            return Ok(p);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("callgrind wrote no dump {}", p.display())
}

fn pct(part: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        part as f64 * 100.0 / total as f64
    }
}

/// Instructions of one function (self or inclusive, by where it came from).
#[derive(Debug, Clone, PartialEq)]
pub struct FnCost {
    pub ir: u64,
    /// The source file callgrind attributes the function to.
    pub file: String,
    pub function: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Annotated {
    pub total: u64,
    pub functions: Vec<FnCost>,
}

/// Parse `callgrind_annotate --inclusive=yes` output: the `PROGRAM TOTALS` line and the
/// `Ir (pct) file:function [object]` lines. (Self costs come from [`parse_dump`].)
pub fn parse_annotate(text: &str) -> Annotated {
    let mut a = Annotated::default();
    for line in text.lines() {
        let t = line.trim_start();
        let Some((num, rest)) = t.split_once(' ') else {
            continue;
        };
        let Ok(ir) = num.replace(',', "").parse::<u64>() else {
            continue;
        };
        let rest = rest.trim_start();
        let Some(rest) = rest.strip_prefix('(') else {
            continue;
        };
        let Some((_, rest)) = rest.split_once(')') else {
            continue;
        };
        let rest = rest.trim();
        if rest == "PROGRAM TOTALS" {
            a.total = ir;
            continue;
        }
        let without_object = match rest.rfind(" [") {
            Some(i) if rest.ends_with(']') => &rest[..i],
            _ => rest,
        };
        let (file, function) = split_file_function(without_object);
        a.functions.push(FnCost {
            ir,
            file: file.to_owned(),
            function: function.to_owned(),
        });
    }
    a.functions.sort_by_key(|f| std::cmp::Reverse(f.ir));
    a
}

/// Exclusive (self) instructions per function, read from a callgrind dump itself.
///
/// `callgrind_annotate --inclusive=no` books to a frame that was on the stack when the counters
/// were zeroed the whole cost of the calls it made afterwards (a worker thread's outer frames
/// showed as 47 % "self" each, and the shares summed to over 400 %). Here a cost line right after
/// a `calls=` line is the inclusive cost of that call and is not the caller's own, so the self
/// costs add up to the total. `functions` is keyed by function (file: the function's own);
/// `by_file` by the file each cost line belongs to (code inlined from a crate counts for that
/// crate), for the origin table. Name compression (`(id) name`) and relative positions are
/// handled; only the first event (Ir) is read.
pub fn parse_dump(text: &str) -> DumpCosts {
    let mut names: [HashMap<String, String>; 2] = Default::default(); // files, functions
    let mut self_by_fn: HashMap<(String, String), u64> = HashMap::new();
    let mut self_by_file: HashMap<(String, String), u64> = HashMap::new();
    let (mut fl, mut cur_file, mut func) = (String::new(), String::new(), String::new());
    let mut after_calls = false;
    let mut total = 0u64;
    fn resolve(table: &mut HashMap<String, String>, v: &str) -> String {
        let v = v.trim();
        if let Some(rest) = v.strip_prefix('(')
            && let Some((id, name)) = rest.split_once(')')
        {
            let name = name.trim();
            if name.is_empty() {
                return table.get(id).cloned().unwrap_or_default();
            }
            table.insert(id.to_owned(), name.to_owned());
            return name.to_owned();
        }
        v.to_owned()
    }
    for line in text.lines() {
        let first = line.as_bytes().first().copied().unwrap_or(b' ');
        if first.is_ascii_digit() || matches!(first, b'+' | b'-' | b'*') {
            let mut cols = line.split_ascii_whitespace();
            let ir = cols.nth(1).and_then(|c| c.parse::<u64>().ok()).unwrap_or(0);
            if after_calls {
                after_calls = false;
            } else if ir > 0 {
                *self_by_fn.entry((fl.clone(), func.clone())).or_default() += ir;
                *self_by_file
                    .entry((cur_file.clone(), func.clone()))
                    .or_default() += ir;
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            // `summary:` (what callgrind_annotate calls PROGRAM TOTALS) wins over `totals:`.
            let summary = line.strip_prefix("summary:");
            if let Some(t) = summary.or(line.strip_prefix("totals:").filter(|_| total == 0)) {
                total = t
                    .split_ascii_whitespace()
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(total);
            }
            continue;
        };
        match key {
            "fl" => {
                fl = resolve(&mut names[0], value);
                cur_file = fl.clone();
            }
            "fi" | "fe" => cur_file = resolve(&mut names[0], value),
            "fn" => {
                func = resolve(&mut names[1], value);
                cur_file = fl.clone();
            }
            "cfi" | "cfl" => {
                resolve(&mut names[0], value);
            }
            "cfn" => {
                resolve(&mut names[1], value);
            }
            "calls" => after_calls = true,
            _ => {}
        }
    }
    let collect = |m: HashMap<(String, String), u64>| {
        let mut v: Vec<FnCost> = m
            .into_iter()
            .map(|((file, function), ir)| FnCost { ir, file, function })
            .collect();
        v.sort_by(|a, b| b.ir.cmp(&a.ir).then_with(|| a.function.cmp(&b.function)));
        v
    };
    DumpCosts {
        total,
        functions: collect(self_by_fn),
        by_file: collect(self_by_file),
    }
}

/// Self costs from [`parse_dump`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DumpCosts {
    pub total: u64,
    pub functions: Vec<FnCost>,
    pub by_file: Vec<FnCost>,
}

/// `file:function` where the function may contain `::`: split at the first lone `:`.
fn split_file_function(s: &str) -> (&str, &str) {
    let b = s.as_bytes();
    for i in 0..b.len() {
        if b[i] == b':' && b.get(i + 1) != Some(&b':') && (i == 0 || b[i - 1] != b':') {
            return (&s[..i], &s[i + 1..]);
        }
    }
    ("", s)
}

/// Where a function's code comes from, from its source path: a crate name (with the version
/// dropped), `std`, `libc` (malloc, memcpy, ...), an iris crate, or `other`.
pub fn origin(file: &str) -> String {
    if let Some(i) = file.find("/crates/iris") {
        let rest = &file[i + "/crates/".len()..];
        return rest.split('/').next().unwrap_or("iris").to_owned();
    }
    if let Some(i) = file.find("/registry/src/") {
        let rest = &file[i + "/registry/src/".len()..];
        // index.crates.io-XXXX/NAME-VERSION/...
        if let Some(krate) = rest.split('/').nth(1) {
            let name = match krate.rfind('-') {
                Some(j) if krate[j + 1..].starts_with(|c: char| c.is_ascii_digit()) => &krate[..j],
                _ => krate,
            };
            return name.to_owned();
        }
    }
    if file.contains("/library/") || file.starts_with("/rustc/") {
        return "std".to_owned();
    }
    // Before the C library's: the build directory of tikv-jemalloc-sys holds "malloc" too.
    if file.contains("jemalloc") {
        return "jemalloc".to_owned();
    }
    if file.contains("malloc") {
        return "libc malloc".to_owned();
    }
    if file.starts_with("./") || file.contains("sysdeps") || file.contains("glibc") {
        return "libc".to_owned();
    }
    if file.contains("sqlite3") {
        return "sqlite".to_owned();
    }
    if file.is_empty() || file == "???" {
        return "unknown (no debug info)".to_owned();
    }
    "other".to_owned()
}

fn by_origin(functions: &[FnCost], total: u64) -> Vec<(String, u64, f64)> {
    let mut m: BTreeMap<String, u64> = BTreeMap::new();
    for f in functions {
        *m.entry(origin(&f.file)).or_default() += f.ir;
    }
    let mut v: Vec<(String, u64, f64)> = m
        .into_iter()
        .map(|(k, ir)| (k, ir, pct(ir, total)))
        .collect();
    v.sort_by_key(|o| std::cmp::Reverse(o.1));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
4,780,541 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                  file:function
--------------------------------------------------------------------------------
4,780,541 (100.0%)  ./misc/../sysdeps/unix/sysv/linux/x86_64/clone.S:clone [/usr/lib/x86_64-linux-gnu/libc.so.6]
  642,619 (13.44%)  ./malloc/./malloc/malloc.c:_int_malloc [/usr/lib/x86_64-linux-gnu/libc.so.6]
  163,500 ( 3.42%)  /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/serde_json-1.0.154/src/ser.rs:serde_json::ser::format_escaped_str [/work/main/target/release/iris]
   88,300 ( 1.85%)  /rustc/5980/library/alloc/src/collections/btree/map.rs:alloc::collections::btree::map::BTreeMap<K,V,A>::insert [/work/main/target/release/iris]
   50,000 ( 1.05%)  /work/main/crates/iris-server/src/proxy.rs:iris_server::proxy::llm::{{closure}} [/work/main/target/release/iris]
";

    #[test]
    fn parses_callgrind_annotate() {
        let a = parse_annotate(SAMPLE);
        assert_eq!(a.total, 4_780_541);
        assert_eq!(a.functions.len(), 5);
        assert_eq!(a.functions[0].ir, 4_780_541);
        assert_eq!(a.functions[1].function, "_int_malloc");
        assert_eq!(
            a.functions[2].function,
            "serde_json::ser::format_escaped_str"
        );
        assert_eq!(
            a.functions[3].function,
            "alloc::collections::btree::map::BTreeMap<K,V,A>::insert"
        );
        let origins: Vec<String> = a.functions[1..].iter().map(|f| origin(&f.file)).collect();
        assert_eq!(origins, ["libc malloc", "serde_json", "std", "iris-server"]);
        let b = by_origin(&a.functions[1..], a.total);
        assert_eq!(b[0].0, "libc malloc");
        assert!((b[0].2 - 13.44).abs() < 0.01);
    }

    /// A dump with name compression, an inlined file, relative positions and a call whose
    /// inclusive cost must not count as the caller's own.
    const DUMP: &str = "\
version: 1
positions: line
events: Ir
summary: 1000

ob=(1) /x/iris
fl=(1) /work/main/crates/iris-server/src/proxy.rs
fn=(1) iris_server::proxy::llm
10 100
fi=(2) /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/serde_json-1.0.154/src/de.rs
+2 50
fe=(1)
cfl=(3) ./malloc/malloc.c
cfn=(2) malloc
calls=3 40
* 600
-1 10

fl=(3)
fn=(2)
40 240
+1 0

fl=(1)
fn=(1)
12 0

totals: 1000
";

    #[test]
    fn self_costs_come_from_the_dump_and_add_up() {
        let d = parse_dump(DUMP);
        assert_eq!(d.total, 1000);
        let own: u64 = d.functions.iter().map(|f| f.ir).sum();
        assert_eq!(
            own, 400,
            "the 600 of the call is malloc's, not llm's: {d:?}"
        );
        assert_eq!(d.functions[0].function, "malloc");
        assert_eq!(d.functions[0].ir, 240);
        assert_eq!(d.functions[1].function, "iris_server::proxy::llm");
        assert_eq!(d.functions[1].ir, 160);
        let origins = by_origin(&d.by_file, d.total);
        let share = |o: &str| origins.iter().find(|x| x.0 == o).map(|x| x.1);
        assert_eq!(share("libc malloc"), Some(240));
        assert_eq!(share("iris-server"), Some(110));
        assert_eq!(
            share("serde_json"),
            Some(50),
            "inlined code counts for its crate"
        );
    }

    #[test]
    fn splits_file_and_function() {
        assert_eq!(split_file_function("a.rs:x::y"), ("a.rs", "x::y"));
        assert_eq!(split_file_function("???:foo"), ("???", "foo"));
        assert_eq!(split_file_function("x::y"), ("", "x::y"));
    }

    #[test]
    fn the_allocators_are_told_apart() {
        assert_eq!(origin("./malloc/./malloc/malloc.c"), "libc malloc");
        assert_eq!(
            origin(
                "/w/target/dist/build/tikv-jemalloc-sys-4c64/out/build/include/jemalloc/internal/cache_bin.h"
            ),
            "jemalloc"
        );
        assert_eq!(
            origin("./string/../sysdeps/x86_64/multiarch/memmove-vec-unaligned-erms.S"),
            "libc"
        );
    }
}
