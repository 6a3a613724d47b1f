//! Instruction profiles with `valgrind --tool=callgrind`: a second iris (and a second baseline
//! proxy) under callgrind, a warm-up, counters zeroed, a fixed number of requests, a dump.
//! Instruction counts do not depend on how busy the machine is, so "instructions per request"
//! compares iris with the baseline exactly where wall-clock numbers are noisy, and the
//! per-function and per-crate shares say what dominates.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use crate::load::{self, ClosedLoop, Endpoint, RequestSpec, SseRun};
use crate::procs::{Server, run_output};
use crate::scenarios::{anthropic_stream_spec, chat_spec};
use crate::stack::{Stack, start_iris_slow};

/// Longer than the usage writer's flush interval, with room for callgrind's slowness.
const STORE_SETTLE: Duration = Duration::from_millis(2500);

/// One workload of one profiled process.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct ProfileResult {
    pub parts: Vec<ProfilePart>,
    pub command: String,
}

/// Workload sizes.
#[derive(Debug, Clone, Copy)]
pub struct ProfilePlan {
    pub chat_requests: u64,
    pub sse_streams: u64,
}

impl ProfilePlan {
    pub fn new(quick: bool) -> ProfilePlan {
        if quick {
            ProfilePlan {
                chat_requests: 300,
                sse_streams: 20,
            }
        } else {
            ProfilePlan {
                chat_requests: 1500,
                sse_streams: 30,
            }
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
                  warm-up, --dump after each workload; callgrind_annotate --inclusive=no \
                  --threshold=100"
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
    let chat = chat_spec();
    let sse = anthropic_stream_spec(200, 1)?;
    let mut parts = Vec::new();

    // Warm-up: connections, pools, lazily built state.
    let warm = ClosedLoop {
        connections: 4,
        duration: Duration::from_secs(60),
        max_requests: 100,
    };
    let _ = load::closed_loop(&ep, &chat, &warm).await;

    let workloads: [(&str, Workload); 2] = [
        (
            "chat (small, non-streaming)",
            Workload::Chat(chat, plan.chat_requests),
        ),
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
        let parsed = parse_annotate(&annotate("--inclusive=no")?, true);
        let inclusive = parse_annotate(&annotate("--inclusive=yes")?, false);
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
            by_origin: by_origin(&parsed.functions, total),
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

/// One line of `callgrind_annotate --inclusive=no`.
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

/// Parse `callgrind_annotate` output: the `PROGRAM TOTALS` line and the `Ir (pct) file:function
/// [object]` lines. With `exclusive`, lines at 50 % or more are skipped: they are the runtime's
/// outer frames that were on the stack when the counters were zeroed, to which callgrind books
/// their callees' cost (no function of a proxy really spends half its instructions in itself).
pub fn parse_annotate(text: &str, exclusive: bool) -> Annotated {
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
        let Some((share, rest)) = rest.split_once(')') else {
            continue;
        };
        let share: f64 = share.trim().trim_end_matches('%').parse().unwrap_or(0.0);
        let rest = rest.trim();
        if rest == "PROGRAM TOTALS" {
            a.total = ir;
            continue;
        }
        if exclusive && share >= 50.0 {
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
        let a = parse_annotate(SAMPLE, true);
        assert_eq!(a.total, 4_780_541);
        assert_eq!(a.functions.len(), 4, "the 100 % stack frame is skipped");
        assert_eq!(parse_annotate(SAMPLE, false).functions.len(), 5);
        assert_eq!(a.functions[0].ir, 642_619);
        assert_eq!(a.functions[0].function, "_int_malloc");
        assert_eq!(
            a.functions[1].function,
            "serde_json::ser::format_escaped_str"
        );
        assert_eq!(
            a.functions[2].function,
            "alloc::collections::btree::map::BTreeMap<K,V,A>::insert"
        );
        let origins: Vec<String> = a.functions.iter().map(|f| origin(&f.file)).collect();
        assert_eq!(origins, ["libc malloc", "serde_json", "std", "iris-server"]);
        let b = by_origin(&a.functions, a.total);
        assert_eq!(b[0].0, "libc malloc");
        assert!((b[0].2 - 13.44).abs() < 0.01);
    }

    #[test]
    fn splits_file_and_function() {
        assert_eq!(split_file_function("a.rs:x::y"), ("a.rs", "x::y"));
        assert_eq!(split_file_function("???:foo"), ("???", "foo"));
        assert_eq!(split_file_function("x::y"), ("", "x::y"));
    }
}
