//! The loom model of `AbsorbSelfWakes`: every interleaving of wake-ups from other threads with
//! the task's polls, and every value the memory model lets each load see. Built and run by
//! `scripts/test`:
//!
//! ```text
//! RUSTFLAGS="--cfg iris_loom" cargo test -p iris-wake --release --test loom
//! ```
//!
//! The property is the one a waker owes its task: once every event is out, a future that is not
//! done has a wake-up pending, and the poll that wake-up brings sees the events. A lost wake-up
//! is a connection that hangs with its request half read.
#![cfg(iris_loom)]
// Test code: a panic is the failure report (clippy.toml only covers #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use iris_wake::AbsorbSelfWakes;

use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;

/// Interleavings with up to this many preemptions (loom's advice: 2 or 3 finds nearly every
/// bug; the models here take half a second at 3, about two minutes without a bound), unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise.
const PREEMPTIONS: usize = 3;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        b.preemption_bound = Some(PREEMPTIONS);
    }
    b.check(f);
}

/// The task as an executor sees it: woken means scheduled to be polled again.
struct Task {
    scheduled: AtomicBool,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.scheduled.store(true, Ordering::Release);
    }
}

/// An executor's run of the future: polls it while it is scheduled, after taking the mark.
struct Run<F: Future> {
    future: Pin<Box<AbsorbSelfWakes<F>>>,
    task: Arc<Task>,
    waker: Waker,
}

impl<F: Future> Run<F> {
    fn new(inner: F) -> Self {
        let task = Arc::new(Task {
            scheduled: AtomicBool::new(false),
        });
        Run {
            future: Box::pin(AbsorbSelfWakes::new(inner)),
            waker: Waker::from(task.clone()),
            task,
        }
    }

    /// One poll, as an executor runs a task: the wake-up that scheduled it is used up first.
    fn poll(&mut self) -> bool {
        self.task.scheduled.swap(false, Ordering::AcqRel);
        let mut cx = Context::from_waker(&self.waker);
        self.future.as_mut().poll(&mut cx).is_ready()
    }

    /// After every event is out: poll while a wake-up is pending; the future must end done.
    fn finish(&mut self, mut done: bool) {
        while !done {
            assert!(
                self.task.scheduled.load(Ordering::Acquire),
                "a wake-up was lost: the future is not done and its task will never run again"
            );
            done = self.poll();
        }
    }
}

/// Ready once every flag is set; reads them with plain acquire loads and registers nothing:
/// its waker (the wrapper's, the same for every poll) is handed to the wakers up front.
fn all_set(flags: Arc<Vec<AtomicBool>>) -> impl Future<Output = ()> {
    std::future::poll_fn(move |_| {
        if flags.iter().all(|f| f.load(Ordering::Acquire)) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

fn flags(n: usize) -> Arc<Vec<AtomicBool>> {
    Arc::new((0..n).map(|_| AtomicBool::new(false)).collect())
}

/// Threads that each set their flag and wake the future, as an I/O driver or another task would.
fn wakers(run: &Run<impl Future>, flags: &Arc<Vec<AtomicBool>>) -> Vec<thread::JoinHandle<()>> {
    (0..flags.len())
        .map(|i| {
            let waker = run.future.inner_waker().clone();
            let flags = flags.clone();
            thread::spawn(move || {
                flags[i].store(true, Ordering::Release);
                waker.wake();
            })
        })
        .collect()
}

/// The race of every model: each flag's thread sets it and wakes the future while the executor
/// polls it once; once they are done, every wake-up owed must be pending, and the future done
/// after the polls they bring.
fn race(run: &mut Run<impl Future>, flags: &Arc<Vec<AtomicBool>>) {
    let threads = wakers(run, flags);
    let done = run.poll();
    for t in threads {
        t.join().unwrap();
    }
    run.finish(done);
}

/// [`race`] with one outside waker, against the future `inner` makes from its flag.
fn one_outside_wake<F: Future>(inner: impl FnOnce(Arc<Vec<AtomicBool>>) -> F) {
    let flags = flags(1);
    let mut run = Run::new(inner(flags.clone()));
    race(&mut run, &flags);
}

#[test]
fn a_wake_racing_a_poll_is_never_lost() {
    model(|| {
        let flags = flags(1);
        let mut run = Run::new(all_set(flags.clone()));
        assert!(!run.poll());
        race(&mut run, &flags);
    });
}

/// Two wakers while the future is being polled: the second finds it already marked. Its event
/// must still be seen by the repoll (the ordering hole fixed in 183e59d: a wake-up that found the
/// mark wrote nothing, and the poll took the mark with a plain store).
#[test]
fn two_wakes_during_one_poll_are_both_seen() {
    model(|| {
        let flags = flags(2);
        let mut run = Run::new(all_set(flags.clone()));
        assert!(!run.poll());
        race(&mut run, &flags);
    });
}

/// A future that wakes itself on its first poll (as hyper's body channel does) while another
/// thread wakes it too: the self-wake becomes a repoll, the other must not be lost.
#[test]
fn a_self_wake_and_an_outside_wake_together() {
    model(|| {
        one_outside_wake(|seen| {
            let mut first = true;
            std::future::poll_fn(move |cx| {
                if std::mem::take(&mut first) {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if seen[0].load(Ordering::Acquire) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
        })
    });
}

/// A future that wakes itself on every poll (more often than the repolls allow, so the poll ends
/// in a yield: the task's own wake-up) while another thread wakes it too.
#[test]
fn a_future_past_its_repolls_yields_and_loses_no_outside_wake() {
    model(|| {
        one_outside_wake(|seen| {
            std::future::poll_fn(move |cx| {
                if seen[0].load(Ordering::Acquire) {
                    return Poll::Ready(());
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            })
        })
    });
}
