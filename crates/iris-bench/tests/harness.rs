//! The load generator and the baseline proxy against the testkit's mock provider, in process,
//! on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use iris_bench::load::{self, ClosedLoop, Endpoint, HoldRun, OpenLoop, RequestSpec, SseRun};
use iris_bench::scenarios::{anthropic_stream_spec, chat_spec};
use iris_testkit::{MockOptions, MockProvider};

async fn mock() -> MockProvider {
    let opts = MockOptions {
        record: false,
        ..MockOptions::default()
    };
    MockProvider::try_start(opts, ([127, 0, 0, 1], 0).into())
        .await
        .unwrap()
}

/// The baseline proxy in front of `upstream`, on its own task; dropped with the runtime.
async fn proxy(upstream: SocketAddr) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        iris_bench::proxy::serve(listener, upstream, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (addr, tx)
}

/// `max_requests` requests over `connections` connections, closed loop (5 s at most).
async fn requests(
    ep: &Endpoint,
    spec: &RequestSpec,
    connections: usize,
    max_requests: u64,
) -> load::LoadReport {
    let cfg = ClosedLoop {
        connections,
        duration: Duration::from_secs(5),
        max_requests,
    };
    load::closed_loop(ep, spec, &cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_counts_requests_and_latency() {
    let m = mock().await;
    let r = requests(&Endpoint::new(m.addr()), &chat_spec(0), 4, 200).await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.first_error);
    assert_eq!(r.ok, 200, "the request budget bounds the run");
    assert_eq!(r.latency.count(), 200);
    assert!(r.bytes > 200 * 100, "chat answers carry a body");
    assert!(r.throughput() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_prompt_chat_is_one_valid_request_of_about_that_size() {
    let spec = chat_spec(64 * 1024);
    let body: serde_json::Value = serde_json::from_slice(&spec.body).unwrap();
    let prompt = body["messages"][1]["content"].as_str().unwrap();
    assert!(
        (64 * 1024..66 * 1024).contains(&prompt.len()),
        "{}",
        prompt.len()
    );
    assert!(prompt.contains('"') && prompt.contains('\n') && prompt.contains('\\'));
    let m = mock().await;
    let r = requests(&Endpoint::new(m.addr()), &spec, 2, 20).await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.first_error);
    assert_eq!(r.ok, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_counted_by_kind() {
    let m = mock().await;
    let spec = chat_spec(0).header("x-mock-status", "429").unwrap();
    let r = requests(&Endpoint::new(m.addr()), &spec, 2, 10).await;
    assert_eq!(r.ok, 0);
    assert_eq!(r.errors.status, 10);
    assert!(r.first_error.unwrap().contains("429"));

    // Nothing listens on a just-released port: connect errors, bounded by the deadline.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t0 = Instant::now();
    let r = load::closed_loop(
        &Endpoint::new(dead),
        &chat_spec(0),
        &ClosedLoop {
            connections: 2,
            duration: Duration::from_millis(300),
            max_requests: 10,
        },
    )
    .await;
    assert_eq!(r.ok, 0);
    assert!(r.errors.transport > 0);
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_holds_the_rate_and_measures_from_the_schedule() {
    let m = mock().await;
    let r = load::open_loop(
        &Endpoint::new(m.addr()),
        &chat_spec(0),
        &OpenLoop {
            rate: 500.0,
            duration: Duration::from_secs(1),
            connections: 8,
        },
    )
    .await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.first_error);
    assert_eq!(r.ok, 500);
    assert_eq!(r.lag.count(), 500);

    // A server that takes 50 ms per answer, one connection, 100 requests/s: the queue grows,
    // and latency measured from the schedule shows it (a closed-loop view would say 50 ms).
    let slow = chat_spec(0).header("x-mock-latency-ms", "50").unwrap();
    let r = load::open_loop(
        &Endpoint::new(m.addr()),
        &slow,
        &OpenLoop {
            rate: 100.0,
            duration: Duration::from_millis(500),
            connections: 1,
        },
    )
    .await;
    assert_eq!(r.ok, 50, "{:?}", r.first_error);
    assert!(
        r.latency.quantile_us(0.99) > 1_000_000.0,
        "coordinated omission: p99 {} us",
        r.latency.quantile_us(0.99)
    );
}

/// Two targets sharing one fixed-rate run in slots: each gets the requests of its own slots,
/// its own time, and no latency from the warm-up at the start of a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_slots_hand_each_target_the_requests_of_its_slots() {
    let m = mock().await;
    let ep = Endpoint::new(m.addr());
    let quick = chat_spec(0);
    let slow = chat_spec(0).header("x-mock-latency-ms", "15").unwrap();
    let reports = load::open_loop_slots(
        &[(&ep, &quick), (&ep, &slow)],
        &OpenLoop {
            rate: 400.0,
            duration: Duration::from_secs(1),
            connections: 8,
        },
        load::Slots {
            len: Duration::from_millis(100),
            warm: Duration::from_millis(10),
        },
    )
    .await;
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert_eq!(r.errors.total(), 0, "{:?}", r.first_error);
        // 10 slots of 100 ms, 5 each, in turns of 1, 2, 2 slots (owners 0,1,1,0,0,1,1,0,0,1);
        // 40 requests a slot, the first 4 of each turn not counted.
        assert_eq!(r.ok, 200);
        assert_eq!(r.elapsed, Duration::from_millis(500));
        assert_eq!(r.latency.count(), 188);
        assert_eq!(r.lag.count(), 188);
        assert!((r.throughput() - 400.0).abs() < 1.0, "{}", r.throughput());
    }
    // The slow target's requests went to it: its median is its 15 ms, the other's far below.
    let (quick_p50, slow_p50) = (
        reports[0].latency.quantile_us(0.5),
        reports[1].latency.quantile_us(0.5),
    );
    assert!(slow_p50 >= 15_000.0, "{slow_p50}");
    assert!(quick_p50 < 10_000.0, "{quick_p50}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_sees_every_chunk_as_its_own_frame() {
    let m = mock().await;
    let spec = anthropic_stream_spec(20, 2).unwrap();
    let r = load::sse(
        &Endpoint::new(m.addr()),
        &spec,
        &SseRun {
            concurrency: 2,
            duration: Duration::from_secs(10),
            max_streams: 4,
        },
    )
    .await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.first_error);
    assert_eq!(r.ok, 4);
    // message_start, content_block_start, ping, 20 deltas, block stop, message_delta, stop.
    assert!(r.events.iter().all(|&e| e == 26), "{:?}", r.events);
    assert!(r.frames.iter().all(|&f| f >= 20), "{:?}", r.frames);
    assert_eq!(r.ttfb.count(), 4);
    assert!(r.total.quantile_us(0.5) >= 40_000.0, "20 chunks 2 ms apart");

    // Without a delay the mock writes the whole stream at once: few frames, same events.
    let burst = anthropic_stream_spec(20, 0).unwrap();
    let r = load::sse(
        &Endpoint::new(m.addr()),
        &burst,
        &SseRun {
            concurrency: 1,
            duration: Duration::from_secs(10),
            max_streams: 2,
        },
    )
    .await;
    assert_eq!(r.ok, 2);
    assert!(r.events.iter().all(|&e| e == 26));
    assert!(r.frames.iter().all(|&f| f < 20), "{:?}", r.frames);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_short_is_an_error() {
    let m = mock().await;
    let spec = anthropic_stream_spec(3, 0)
        .unwrap()
        .expect_tail(b"this never appears");
    let r = load::sse(
        &Endpoint::new(m.addr()),
        &spec,
        &SseRun {
            concurrency: 1,
            duration: Duration::from_secs(10),
            max_streams: 1,
        },
    )
    .await;
    assert_eq!(r.ok, 0);
    assert_eq!(r.errors.incomplete, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_many_streams_at_once() {
    let m = mock().await;
    let spec = anthropic_stream_spec(2, 300).unwrap();
    let r = load::hold_streams(
        &Endpoint::new(m.addr()),
        &spec,
        &HoldRun {
            streams: 100,
            connect_parallelism: 32,
            timeout: Duration::from_secs(30),
        },
    )
    .await;
    assert_eq!(r.errors.total(), 0, "{:?}", r.first_error);
    assert_eq!(r.ok, 100);
    assert_eq!(r.peak_open, 100, "every stream was open at the same time");
    assert!(r.ramp < r.elapsed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_baseline_proxy_passes_answers_and_streams_through() {
    let m = mock().await;
    let (addr, _stop) = proxy(m.addr()).await;

    async fn body_of(ep: &Endpoint, spec: &RequestSpec) -> String {
        // The SSE runner with one stream collects the same numbers both ways.
        let r = load::sse(
            ep,
            spec,
            &SseRun {
                concurrency: 1,
                duration: Duration::from_secs(10),
                max_streams: 1,
            },
        )
        .await;
        format!(
            "ok={} events={:?} errors={}",
            r.ok,
            r.events,
            r.errors.total()
        )
    }
    let spec = anthropic_stream_spec(10, 1).unwrap();
    let direct = body_of(&Endpoint::new(m.addr()), &spec).await;
    let proxied = body_of(&Endpoint::new(addr), &spec).await;
    assert_eq!(direct, "ok=1 events=[16] errors=0");
    assert_eq!(proxied, direct);

    let r = requests(&Endpoint::new(addr), &chat_spec(0), 4, 100).await;
    assert_eq!((r.ok, r.errors.total()), (100, 0), "{:?}", r.first_error);
    let direct = requests(&Endpoint::new(m.addr()), &chat_spec(0), 1, 10).await;
    // Same answers, up to the request counter in their ids.
    assert!(
        (r.bytes / 100).abs_diff(direct.bytes / 10) <= 8,
        "the proxy returns the body unchanged: {} vs {}",
        r.bytes / 100,
        direct.bytes / 10
    );

    // An upstream status passes through as it is.
    let r = requests(
        &Endpoint::new(addr),
        &chat_spec(0).header("x-mock-status", "503").unwrap(),
        1,
        3,
    )
    .await;
    assert_eq!(r.errors.status, 3);
    assert!(r.first_error.unwrap().starts_with("status 503"));
}

#[test]
fn the_generated_iris_config_is_valid() {
    for captures in [true, false] {
        let text = iris_bench::stack::iris_config_text(
            "http://127.0.0.1:9",
            std::path::Path::new("/tmp/iris-bench-test.sock"),
            captures,
        );
        let env: std::collections::HashMap<String, String> = Default::default();
        let loaded = match iris_config::load(&text, &env) {
            Ok(l) => l,
            Err(d) => panic!("generated config invalid: {d:#?}"),
        };
        assert_eq!(loaded.config.providers.len(), 2);
        assert!(loaded.config.grants.len() >= 5);
        assert_eq!(loaded.config.iris.captures.enabled, captures);
    }
}

#[test]
fn the_generated_nginx_config_is_accepted_by_nginx() {
    let Some(nginx) = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
    else {
        eprintln!("SKIPPED: nginx is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        iris_bench::stack::nginx_config_text(
            "127.0.0.1:18081".parse().unwrap(),
            "127.0.0.1:18082".parse().unwrap(),
            dir.path(),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(nginx)
        .arg("-t")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
