//! `iris-bench`: starts every target on loopback, runs the scenarios of the performance issue
//! (interleaved, repeated), optionally profiles iris with callgrind, and writes
//! `docs/benchmarks.md`. `scripts/bench` builds the binaries (`dist` profile) and runs this.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use clap::Parser;
use iris_bench::losses::{self, Counters};
use iris_bench::report::{self, Results, RunInfo, SavedRun};
use iris_bench::scenarios::{self, Plan, Scenario};
use iris_bench::stack::{Stack, StackOptions};
use iris_bench::{micro, profile, store};

#[derive(Debug, Parser)]
#[command(about = "iris load harness: measures iris against a passthrough baseline and nginx")]
struct Args {
    /// A try-out: a few seconds per scenario, 2 repetitions, 1,000 streams.
    #[arg(long)]
    quick: bool,
    /// Repetitions per scenario (default 5, quick 2; the SSE scenario's default is 9).
    #[arg(long)]
    reps: Option<usize>,
    /// Repetitions of the SSE scenario (default 9, quick 2; else `--reps` when given).
    #[arg(long)]
    sse_reps: Option<usize>,
    /// Scenarios to run (comma-separated); default all.
    #[arg(long, value_delimiter = ',', value_enum)]
    scenarios: Vec<Scenario>,
    /// Concurrent streams of the memory scenario (default 5,000, quick 1,000).
    #[arg(long)]
    streams: Option<usize>,
    /// Rounds of the streams scenario (default 3: one warm-up, two compared).
    #[arg(long)]
    rounds: Option<usize>,
    /// Events of each stream in the SSE scenario (default 200). With `--sse-concurrency 1` and
    /// a few chunks the scenario becomes a first-byte probe: many short streams one at a time,
    /// so the first byte is not queued behind other streams' chunks.
    #[arg(long)]
    sse_chunks: Option<u32>,
    /// Streams at a time in the SSE scenario (default 8).
    #[arg(long)]
    sse_concurrency: Option<usize>,
    /// Slots of the fixed-rate scenario in milliseconds (default 0: the targets one after
    /// another): the targets but `direct` take turns this long each through a repetition, so
    /// they meet the same conditions; what a target defers (iris's capture and usage writes)
    /// then lands in the others' slots, so this is for diagnosis, not the verdict.
    #[arg(long)]
    rate_slot_ms: Option<u64>,
    /// Bytes of prompt in the chat scenarios' request (default 0: a small chat); e.g. 65536
    /// for a coding agent's request, whose capture is mostly that prompt.
    #[arg(long)]
    chat_prompt_bytes: Option<usize>,
    /// Bytes of answer in the `chat` scenario (default 0: the mock's short answer); e.g.
    /// 1048576 for a long answer or a batch of embeddings, which iris reads whole for its usage.
    #[arg(long)]
    chat_answer_bytes: Option<usize>,
    /// Only these targets (comma-separated names: direct, baseline, nginx, iris, iris-key,
    /// iris-whois); default all.
    #[arg(long, value_delimiter = ',')]
    targets: Vec<String>,
    /// Extra environment for iris and the baseline proxy, KEY=VALUE (repeatable), e.g.
    /// LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 to compare allocators.
    #[arg(long = "server-env", value_parser = parse_env)]
    server_env: Vec<(String, String)>,
    /// Also profile iris and the baseline with valgrind's callgrind.
    #[arg(long)]
    profile: bool,
    /// Do not use nginx even when it is installed.
    #[arg(long)]
    no_nginx: bool,
    /// Directory of the binaries (scripts/bench builds them with the `dist` profile).
    #[arg(long, default_value = "target/dist")]
    bin_dir: PathBuf,
    /// Repository root.
    #[arg(long, default_value = ".")]
    repo_root: PathBuf,
    /// Where the report goes (default: REPO_ROOT/docs/benchmarks.md).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write every measurement as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    loadgen_threads: usize,
    /// Read criterion results from this directory (e.g. target/criterion) into the report.
    #[arg(long)]
    criterion_dir: Option<PathBuf>,
    /// Only criterion results written at or after this time (unix seconds).
    #[arg(long, default_value_t = 0)]
    micro_since: u64,
    /// The command line to record in the report (scripts/bench passes its own).
    #[arg(long)]
    command_line: Option<String>,
    /// How iris and the baseline were built, for the report (scripts/bench says whether the
    /// profile-guided build was used).
    #[arg(long, default_value = iris_bench::report::DEFAULT_BUILD_NOTE)]
    build_note: String,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    fail_on_miss: bool,
    /// Measure nothing: render the report again from a run's `--json` file (scripts/bench keeps
    /// the last in target/iris-bench/results.json), after a change to the report's text. The
    /// report says that it was rendered again, and at which commit. Only `--out` and
    /// `--repo-root` apply; the other flags are the saved run's.
    #[arg(long)]
    from_json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let nofile = iris_bench::raise_nofile_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.loadgen_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("iris-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, nofile)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("iris-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, nofile: u64) -> anyhow::Result<ExitCode> {
    if let Some(path) = &args.from_json {
        return render_again(&args, path);
    }
    let started = Instant::now();
    let load_before = loadavg();
    let mut plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(r) = args.reps {
        plan.reps = r.max(1);
        plan.sse_reps = plan.reps;
    }
    if let Some(r) = args.sse_reps {
        plan.sse_reps = r.max(1);
    }
    if let Some(s) = args.streams {
        plan.streams = s.max(1);
    }
    if let Some(r) = args.rounds {
        plan.streams_rounds = r.max(2);
    }
    if let Some(c) = args.sse_chunks {
        plan.sse_chunks = c.max(1);
    }
    if let Some(c) = args.sse_concurrency {
        plan.sse_concurrency = c.max(1);
    }
    if let Some(b) = args.chat_prompt_bytes {
        plan.chat_prompt_bytes = b;
    }
    if let Some(b) = args.chat_answer_bytes {
        plan.chat_answer_bytes = b;
    }
    if let Some(ms) = args.rate_slot_ms {
        plan.rate_slot = Duration::from_millis(ms);
        if ms > 0 && plan.rate_slot <= plan.rate_slot_warm {
            anyhow::bail!(
                "--rate-slot-ms {ms}: a slot must be longer than the {} ms at the start of a turn \
                 that are not counted",
                plan.rate_slot_warm.as_millis()
            );
        }
    }
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    // Each stream needs a socket here, two in a proxy and one in the mock.
    let needed = plan.streams as u64 * 2 + 256;
    if scenarios.contains(&Scenario::Streams) && nofile < needed {
        eprintln!(
            "iris-bench: open-file limit {nofile} is below {needed}: the streams scenario may fail (raise `ulimit -n`)"
        );
    }

    let repo_root = args
        .repo_root
        .canonicalize()
        .unwrap_or(args.repo_root.clone());
    let bin_dir = if args.bin_dir.is_absolute() {
        args.bin_dir.clone()
    } else {
        repo_root.join(&args.bin_dir)
    };
    let opts = StackOptions {
        bin_dir,
        repo_root: repo_root.clone(),
        nginx: !args.no_nginx,
        server_env: args.server_env.clone(),
    };
    eprintln!("iris-bench: starting mock, fake tailscaled, baseline, nginx and iris");
    let mut stack = Stack::start(&opts)?;
    eprintln!(
        "iris-bench: mock {}, baseline {}, {}, iris {}",
        stack.mock.listening,
        stack.baseline.listening,
        stack
            .nginx
            .as_ref()
            .map_or(stack.nginx_note.clone(), |n| format!(
                "nginx {}",
                n.listening
            )),
        stack.iris.listening
    );

    let mut results = Results::default();
    let mock = stack.mock.procs.clone();
    // Each iris's loss counters after the previous scenario (they count from its start): read
    // once before the first, so start-up is nobody's loss. A read that fails leaves the previous
    // counters, and the next scenario's record then holds both scenarios' losses.
    let mut counters: HashMap<String, Counters> =
        read_losses(&stack, &mut results.notes, "at the start")
            .await
            .into_iter()
            .collect();
    for sc in &scenarios {
        let outcome: anyhow::Result<()> = match sc {
            Scenario::Chat => {
                let targets = select(stack.targets(true)?, &args.targets);
                let spec = scenarios::with_answer(
                    scenarios::chat_spec(plan.chat_prompt_bytes),
                    plan.chat_answer_bytes,
                )?;
                results.chat = scenarios::chat(&plan, &targets, &mock, spec, "chat").await;
                Ok(())
            }
            Scenario::Large => {
                let mut targets = select(stack.targets(true)?, &args.targets);
                // The identity variants cost what `iris` does per byte: their difference is
                // per request, and the small chat measures it.
                targets.retain(|t| t.name != "iris-whois" && t.name != "iris-key");
                let spec = scenarios::chat_spec(plan.large_prompt_bytes);
                results.large = scenarios::chat(&plan, &targets, &mock, spec, "large").await;
                Ok(())
            }
            Scenario::Rate => {
                let mut targets = select(stack.targets(true)?, &args.targets);
                // The WhoIs identity is resolved once per connection: at a fixed rate over
                // keep-alive connections it costs what the loopback one does.
                targets.retain(|t| t.name != "iris-whois");
                let spec = scenarios::chat_spec(plan.chat_prompt_bytes);
                results.rate = scenarios::rate(&plan, &targets, &mock, spec, "rate").await;
                Ok(())
            }
            Scenario::RateLarge => {
                let mut targets = select(stack.targets(true)?, &args.targets);
                // As in `large`: the identity variants differ from `iris` per request, not per
                // byte, and the small chat's fixed rate measures that.
                targets.retain(|t| t.name != "iris-whois" && t.name != "iris-key");
                let spec = scenarios::chat_spec(plan.large_prompt_bytes);
                results.rate_large =
                    scenarios::rate(&plan, &targets, &mock, spec, "rate-large").await;
                Ok(())
            }
            Scenario::Sse => {
                let targets = select(stack.targets(false)?, &args.targets);
                scenarios::sse(&plan, &targets, &mock)
                    .await
                    .map(|r| results.sse = r)
            }
            Scenario::Streams => {
                let targets = select(stack.targets(false)?, &args.targets);
                scenarios::streams(&plan, &targets)
                    .await
                    .map(|r| results.streams = r)
            }
            Scenario::Store => run_store(&plan, stack.work.path(), &mut results).await,
        };
        if let Err(e) = outcome {
            eprintln!("iris-bench: scenario {sc:?} failed: {e:#}");
            results.notes.push(format!("scenario {sc:?} failed: {e:#}"));
        }
        if *sc != Scenario::Store {
            let when = format!("after {sc:?}");
            for (name, now) in read_losses(&stack, &mut results.notes, &when).await {
                let before = counters.insert(name.clone(), now).unwrap_or_default();
                let label = clap::ValueEnum::to_possible_value(sc)
                    .map_or_else(|| format!("{sc:?}"), |v| v.get_name().to_owned());
                let lost = now.since(&before, &label, &name);
                if lost.total() > 0 {
                    eprintln!("iris-bench: {name} lost records in {sc:?}: {lost:?}");
                }
                results.losses.push(lost);
            }
        }
        for s in stack.servers_mut() {
            if !s.running() {
                let log = std::fs::read_to_string(&s.stderr_log).unwrap_or_default();
                results.notes.push(format!(
                    "{} exited during the {sc:?} scenario; its last stderr: {}",
                    s.name,
                    iris_bench::procs::tail(&log, 500).replace('\n', " ")
                ));
            }
        }
    }

    if args.profile {
        if profile::available() {
            eprintln!("iris-bench: profiling iris and the baseline under callgrind");
            let keep = repo_root.join("target/iris-bench/callgrind");
            match profile::run(
                &stack,
                profile::ProfilePlan::new(
                    plan.quick,
                    plan.chat_prompt_bytes,
                    plan.chat_answer_bytes,
                ),
                Some(&keep),
            )
            .await
            {
                Ok(p) => results.profile = Some(p),
                Err(e) => {
                    eprintln!("iris-bench: profile failed: {e:#}");
                    results.profile_note = Some(format!("failed: {e:#}"));
                }
            }
        } else {
            results.profile_note = Some("valgrind is not installed".into());
        }
    } else {
        results.profile_note = Some("`--profile` not given".into());
    }

    if let Some(dir) = &args.criterion_dir {
        let dir = if dir.is_absolute() {
            dir.clone()
        } else {
            repo_root.join(dir)
        };
        let since = SystemTime::UNIX_EPOCH + Duration::from_secs(args.micro_since);
        results.micro = micro::read(&dir, since);
        if results.micro.is_empty() {
            results.micro_note = Some(format!("no fresh results in {}", dir.display()));
        }
    } else {
        results.micro_note = Some("not run by this command".into());
    }

    let mut info = run_info(&args, &repo_root, &stack, started.elapsed());
    info.load_before = load_before;
    info.load_after = loadavg();
    info.server_env = args
        .server_env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let kept_logs = repo_root.join("target/iris-bench/logs");
    match iris_bench::procs::keep_logs(stack.work.path(), &kept_logs) {
        Ok(n) => eprintln!(
            "iris-bench: {n} server logs kept in {}",
            kept_logs.display()
        ),
        Err(e) => eprintln!("iris-bench: the server logs were not kept: {e:#}"),
    }
    drop(stack);
    let saved = SavedRun {
        info,
        plan,
        results,
    };
    let out = write_report(&args, &repo_root, &saved)?;
    if let Some(j) = &args.json {
        std::fs::write(j, serde_json::to_vec_pretty(&saved)?)?;
    }
    print_verdicts(&args, &out, &saved.plan, &saved.results)
}

/// `--from-json`: the report of a saved run, rendered by this build of the harness.
fn render_again(args: &Args, path: &Path) -> anyhow::Result<ExitCode> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut saved: SavedRun = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a run's --json file", path.display()))?;
    let repo_root = args
        .repo_root
        .canonicalize()
        .unwrap_or(args.repo_root.clone());
    let (now, dirty) = repo_state(&repo_root);
    saved.info.rendered_again = Some(format!(
        "by `iris-bench --from-json` with the repository at `{now}`{}, {}: every number is \
         the run's",
        if dirty {
            " plus uncommitted changes"
        } else {
            ""
        },
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    ));
    let out = write_report(args, &repo_root, &saved)?;
    print_verdicts(args, &out, &saved.plan, &saved.results)
}

/// The report of `saved`, written to `--out` (default REPO_ROOT/docs/benchmarks.md).
fn write_report(args: &Args, repo_root: &Path, saved: &SavedRun) -> anyhow::Result<PathBuf> {
    let doc = report::render(&saved.info, &saved.plan, &saved.results);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| repo_root.join("docs/benchmarks.md"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, &doc).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(out)
}

fn print_verdicts(
    args: &Args,
    out: &Path,
    plan: &Plan,
    results: &Results,
) -> anyhow::Result<ExitCode> {
    println!("\nTargets ({}):", out.display());
    let verdicts = report::verdicts(plan, results);
    for v in &verdicts {
        let word = match v.pass {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "not measured",
        };
        println!(
            "  [{word:>12}] {} ({}): {}",
            v.target, v.threshold, v.measured
        );
    }
    for n in &results.notes {
        println!("  note: {n}");
    }
    let missed = verdicts.iter().any(|v| v.pass == Some(false));
    Ok(if args.fail_on_miss && missed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Each iris instance's loss counters once it has written what it holds; an instance whose
/// counters cannot be read gets a note (`when`: "at the start", "after Chat") and no entry.
async fn read_losses(
    stack: &Stack,
    notes: &mut Vec<String>,
    when: &str,
) -> Vec<(String, Counters)> {
    let mut out = Vec::new();
    for (name, socket) in stack.iris_admin_sockets() {
        match losses::settled(&socket, Duration::from_secs(10)).await {
            Ok(now) => out.push((name, now)),
            Err(e) => notes.push(format!(
                "{name}'s loss counters were not read {when}: {e:#}"
            )),
        }
    }
    out
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The targets named in `only` (all when empty).
fn select(
    targets: Vec<iris_bench::stack::Target>,
    only: &[String],
) -> Vec<iris_bench::stack::Target> {
    if only.is_empty() {
        targets
    } else {
        targets
            .into_iter()
            .filter(|t| only.iter().any(|o| o == &t.name))
            .collect()
    }
}

async fn run_store(plan: &Plan, dir: &Path, results: &mut Results) -> anyhow::Result<()> {
    let cfg = store::iris_default_writer();
    let max = store::run(
        dir,
        store::Offer::Max,
        store::Sessions::Team,
        plan.store_duration,
        cfg.clone(),
    )
    .await?;
    eprintln!(
        "iris-bench: store max: {:.0} records/s ({} written, {} dropped)",
        max.records_per_s, max.written, max.dropped
    );
    results.store.push(max);
    let fixed = store::run(
        dir,
        store::Offer::Rate(plan.store_rate),
        store::Sessions::Team,
        plan.store_duration,
        cfg.clone(),
    )
    .await?;
    eprintln!(
        "iris-bench: store at {}/s: {} of {} written, {} dropped, queue peak {}",
        plan.store_rate, fixed.written, fixed.offered, fixed.dropped, fixed.max_queued
    );
    results.store.push(fixed);
    let worst = store::run(
        dir,
        store::Offer::Max,
        store::Sessions::EachNew,
        plan.store_duration,
        cfg,
    )
    .await?;
    eprintln!(
        "iris-bench: store max, a new session per record: {:.0} records/s ({} written, {} dropped)",
        worst.records_per_s, worst.written, worst.dropped
    );
    results.store.push(worst);
    Ok(())
}

/// The three load averages of `/proc/loadavg`.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn first_line(mut cmd: Command) -> Option<String> {
    let out = cmd.output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_owned())
}

/// The repository's commit, and whether it has uncommitted changes.
fn repo_state(repo: &Path) -> (String, bool) {
    let git = |a: &[&str]| {
        let mut c = Command::new("git");
        c.arg("-C").arg(repo).args(a);
        c
    };
    let commit = first_line(git(&["rev-parse", "HEAD"])).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    (commit, dirty)
}

fn run_info(args: &Args, repo: &Path, stack: &Stack, wall: Duration) -> RunInfo {
    let (commit, dirty) = repo_state(repo);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".into(), |(_, m)| m.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_total = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or("unknown".into(), |kib| {
            format!("{:.1} GiB", kib / 1024.0 / 1024.0)
        });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let rustc = first_line({
        let mut c = Command::new("rustc");
        c.arg("--version");
        c
    })
    .unwrap_or_else(|| "unknown".into());
    let command = args.command_line.clone().unwrap_or_else(|| {
        std::env::args()
            .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
            .collect::<Vec<_>>()
            .join(" ")
    });
    RunInfo {
        date_utc: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        commit,
        dirty,
        command,
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model,
        mem_total,
        kernel,
        rustc,
        nginx: stack
            .nginx
            .as_ref()
            .map_or(stack.nginx_note.clone(), |_| stack.nginx_note.clone()),
        loadgen_threads: args.loadgen_threads,
        build: args.build_note.clone(),
        wall_s: wall.as_secs_f64(),
        load_before: String::new(),
        load_after: String::new(),
        server_env: String::new(),
        rendered_again: None,
    }
}
