//! A connection's wake-ups of itself, absorbed.
//!
//! hyper's HTTP/1 body channel holds one chunk: when the receiver takes it, it wakes the sender,
//! which for a request body is the connection's own dispatcher. The gateway reads a request's
//! body inside the service future, which hyper polls in the connection's task, so taking the
//! body wakes the very task that is running. Tokio treats a wake-up of a running task as a yield:
//! it queues the task at the back of the worker's queue and wakes an idle worker to come and steal
//! it (a futex call, two context switches, and often the request continuing on a cold core). At
//! a fixed 2,000 requests/s that was one futex wake-up a request, which the baseline proxy, whose
//! upstream connection reads the body in another task, never pays (docs/performance.md, session 20).
//!
//! [`AbsorbSelfWakes`] polls the connection with a waker of its own. A wake-up that arrives while
//! the connection is being polled only marks it, and the connection is polled again at once,
//! where the scheduler would have queued it behind the worker's other tasks and woken another
//! worker; a wake-up at any other time goes to the task's waker as usual. hyper's own fairness
//! yield (its dispatcher wakes itself after 16 turns of its loop) is repolled the same way. The
//! repolls are bounded and stop when tokio's cooperative budget is spent (tokio's own yields,
//! `yield_now` and a spent budget, defer their wake-up past the poll and are not absorbed), so a
//! connection that keeps waking itself still yields to the others.
//!
//! Written here rather than taken from a crate: no well-kept crate offers it, and it is one small
//! state machine over `std::task::Wake` and `AtomicWaker`. It is a crate of its own so that its
//! [loom](https://docs.rs/loom) model (`tests/loom.rs`, built with `RUSTFLAGS="--cfg iris_loom"`,
//! run by `scripts/test`) explores every interleaving of wake-ups and polls, and every value the
//! memory model lets a load see, without building the gateway under loom.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use sync::{AtomicU8, AtomicWaker, Ordering};

/// The atomics, and the cooperative budget: std's and tokio's, or loom's models of them.
#[cfg(not(iris_loom))]
mod sync {
    pub use futures_util::task::AtomicWaker;
    pub use std::sync::atomic::{AtomicU8, Ordering};

    pub fn budget_left() -> bool {
        tokio::task::coop::has_budget_remaining()
    }
}

#[cfg(iris_loom)]
mod sync {
    pub use loom::sync::atomic::{AtomicU8, Ordering};
    use std::task::Waker;

    /// loom's model of an `AtomicWaker`, under the name and signature of `futures_util`'s.
    #[derive(Default)]
    pub struct AtomicWaker(loom::future::AtomicWaker);

    impl AtomicWaker {
        pub fn register(&self, waker: &Waker) {
            self.0.register_by_ref(waker);
        }
        pub fn wake(&self) {
            self.0.wake();
        }
    }

    /// The model runs outside tokio: there is always budget left.
    pub fn budget_left() -> bool {
        true
    }
}

/// Repolls in one poll of the task, beyond the first: hyper's dispatcher wakes itself about once
/// per request; a future that wakes itself more than this is left to the scheduler.
#[cfg(not(iris_loom))]
pub const MAX_REPOLLS: u32 = 8;
/// Two under loom, so that its models reach the yield after the last repoll in a few steps.
#[cfg(iris_loom)]
pub const MAX_REPOLLS: u32 = 2;

/// Not being polled: wake-ups go to the task.
const IDLE: u8 = 0;
/// Being polled, and not woken since the poll began.
const POLLING: u8 = 1;
/// Being polled, and woken meanwhile: poll again before returning.
const WOKEN: u8 = 2;

pin_project_lite::pin_project! {
    /// A future polled with its own waker: its wake-ups of itself during a poll are turned into an
    /// immediate repoll instead of a yield to the scheduler (see the module's documentation).
    pub struct AbsorbSelfWakes<F> {
        #[pin]
        inner: F,
        shared: Arc<Shared>,
        // Built once, so that the wakers the inner future registers compare equal between polls
        // (`Waker::will_wake`) and are not cloned again.
        waker: Waker,
    }
}

struct Shared {
    state: AtomicU8,
    task: AtomicWaker,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Always a read-modify-write, also when the state is already WOKEN: the poll consumes
        // WOKEN with one too, so it acquires what every waker wrote before waking (an event the
        // inner future reads with a plain load on its repoll, as tokio's oneshot does).
        let marked = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s != IDLE).then_some(WOKEN)
            });
        if marked.is_err() {
            // Not being polled: the task must run again. (A wake-up just as a poll begins, before
            // its state leaves IDLE, wakes the running task: the yield this module avoids, but
            // only in that rare window.)
            self.task.wake();
        }
    }
}

/// Puts the state back to IDLE if the inner future panics during a poll, so that wake-ups after
/// it reach the task instead of marking a poll that is no longer running (a future polled again
/// after a caught panic, as `catch_unwind` allows); a wake-up that came during the panicking
/// poll, and was only marked, is passed on to the task. Forgotten on every normal return.
struct IdleOnUnwind<'a>(&'a Shared);

impl Drop for IdleOnUnwind<'_> {
    fn drop(&mut self) {
        if self.0.state.swap(IDLE, Ordering::AcqRel) == WOKEN {
            self.0.task.wake();
        }
    }
}

impl<F> AbsorbSelfWakes<F> {
    pub fn new(inner: F) -> Self {
        let shared = Arc::new(Shared {
            state: AtomicU8::new(IDLE),
            task: AtomicWaker::default(),
        });
        let waker = Waker::from(shared.clone());
        AbsorbSelfWakes {
            inner,
            shared,
            waker,
        }
    }

    /// The waker the inner future is polled with (the same for every poll).
    pub fn inner_waker(&self) -> &Waker {
        &self.waker
    }
}

impl<F: Future> Future for AbsorbSelfWakes<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let shared = &**this.shared;
        // Registered before the state leaves IDLE: a wake-up from elsewhere that sees IDLE finds
        // this task's waker to wake, or, if an earlier wake-up took it, is seen by the poll that
        // follows (`AtomicWaker`'s protocol).
        shared.task.register(cx.waker());
        shared.state.store(POLLING, Ordering::Release);
        let unwinding = IdleOnUnwind(shared);
        let mut repolls = 0;
        let out = loop {
            let mut inner_cx = Context::from_waker(this.waker);
            if let Poll::Ready(out) = this.inner.as_mut().poll(&mut inner_cx) {
                shared.state.store(IDLE, Ordering::Release);
                break Poll::Ready(out);
            }
            if shared
                .state
                .compare_exchange(POLLING, IDLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // Not woken during the poll: a later wake-up reaches the task through `task`.
                break Poll::Pending;
            }
            // Woken during the poll (the state is WOKEN; only this poll moves it back, and with a
            // read-modify-write, which acquires every waker's writes: see `wake_by_ref`).
            if repolls < MAX_REPOLLS && sync::budget_left() {
                repolls += 1;
                shared.state.swap(POLLING, Ordering::AcqRel);
                continue;
            }
            shared.state.swap(IDLE, Ordering::AcqRel);
            cx.waker().wake_by_ref();
            break Poll::Pending;
        };
        std::mem::forget(unwinding);
        out
    }
}

#[cfg(all(test, not(iris_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counter() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count::default());
        let w = Waker::from(c.clone());
        (c, w)
    }

    /// Wakes itself `times` times (once per poll), then completes with the number of polls.
    struct SelfWaking {
        times: usize,
        polls: usize,
    }

    impl Future for SelfWaking {
        type Output = usize;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
            self.polls += 1;
            if self.polls > self.times {
                return Poll::Ready(self.polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[test]
    fn a_wake_during_the_poll_becomes_a_repoll_not_a_wake_of_the_task() {
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(AbsorbSelfWakes::new(SelfWaking { times: 3, polls: 0 }));
        assert_eq!(f.as_mut().poll(&mut cx), Poll::Ready(4));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_future_that_keeps_waking_itself_is_yielded_to_the_scheduler() {
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let times = MAX_REPOLLS as usize + 5;
        let mut f = std::pin::pin!(AbsorbSelfWakes::new(SelfWaking { times, polls: 0 }));
        assert_eq!(f.as_mut().poll(&mut cx), Poll::Pending);
        // One poll and MAX_REPOLLS repolls, then a yield: the task was woken once.
        assert_eq!(f.inner.polls, MAX_REPOLLS as usize + 1);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(f.as_mut().poll(&mut cx), Poll::Ready(times + 1));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_wake_after_the_poll_reaches_the_task() {
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let (rx, tx) = futures_util::future::abortable(std::future::pending::<()>());
        let mut f = std::pin::pin!(AbsorbSelfWakes::new(rx));
        assert!(f.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        // From another thread, as the I/O driver or another task would.
        std::thread::spawn(move || tx.abort()).join().unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(
            f.as_mut().poll(&mut cx),
            Poll::Ready(Err(futures_util::future::Aborted))
        );
    }

    #[test]
    fn the_inner_future_sees_one_waker_for_all_its_polls() {
        struct Wakers(Vec<Waker>);
        impl Future for Wakers {
            type Output = ();
            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                self.0.push(cx.waker().clone());
                if self.0.len() == 3 {
                    return Poll::Ready(());
                }
                Poll::Pending
            }
        }
        let (_count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut f = std::pin::pin!(AbsorbSelfWakes::new(Wakers(Vec::new())));
        while f.as_mut().poll(&mut cx).is_pending() {}
        let w = &f.inner.0;
        assert!(w[0].will_wake(&w[1]) && w[1].will_wake(&w[2]));
        assert!(!w[0].will_wake(&waker));
    }

    #[test]
    fn after_a_panic_in_the_poll_a_wake_reaches_the_task() {
        struct PanicsOnce(bool);
        impl Future for PanicsOnce {
            type Output = ();
            fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
                if !self.0 {
                    self.0 = true;
                    panic!("the inner future panics");
                }
                Poll::Pending
            }
        }
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut f = Box::pin(AbsorbSelfWakes::new(PanicsOnce(false)));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = f.as_mut().poll(&mut cx);
        }));
        assert!(caught.is_err());
        // No poll is running: the wake-up is the task's, not a mark for a repoll.
        f.inner_waker().wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(f.as_mut().poll(&mut cx).is_pending());
    }

    #[test]
    fn a_wake_during_a_poll_that_panics_reaches_the_task() {
        struct WakesThenPanics;
        impl Future for WakesThenPanics {
            type Output = ();
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                cx.waker().wake_by_ref();
                panic!("the inner future panics after waking itself");
            }
        }
        let (count, waker) = counter();
        let mut cx = Context::from_waker(&waker);
        let mut f = Box::pin(AbsorbSelfWakes::new(WakesThenPanics));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = f.as_mut().poll(&mut cx);
        }));
        assert!(caught.is_err());
        // Marked for a repoll that never came: passed on to the task instead of lost.
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn wakes_racing_with_polls_are_never_lost() {
        // Another thread wakes the future while it is being polled or just after; every wake
        // must end in the future being polled again (by a repoll or through the task's waker).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            for _ in 0..200 {
                // A channel of one: each side waits for the other in turn, from two workers.
                let (tx, mut rx) = tokio::sync::mpsc::channel::<u32>(1);
                let waiter = tokio::spawn(AbsorbSelfWakes::new(async move {
                    let mut sum = 0;
                    while let Some(i) = rx.recv().await {
                        sum += i;
                    }
                    sum
                }));
                let sender = tokio::spawn(async move {
                    for i in 0..50 {
                        tx.send(i).await.unwrap();
                    }
                });
                let sum = tokio::time::timeout(std::time::Duration::from_secs(10), async {
                    sender.await.unwrap();
                    waiter.await.unwrap()
                })
                .await
                .expect("a wake-up was lost");
                assert_eq!(sum, (0..50).sum::<u32>());
            }
        });
    }

    #[test]
    fn the_repolls_stop_when_the_cooperative_budget_is_spent() {
        /// Spends the task's whole budget, then wakes itself: a repoll could do nothing.
        struct Spender {
            polls: usize,
        }
        impl Future for Spender {
            type Output = ();
            fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
                self.polls += 1;
                if self.polls > 1 {
                    return Poll::Ready(());
                }
                while let Poll::Ready(restore) = tokio::task::coop::poll_proceed(cx) {
                    restore.made_progress();
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut f = Box::pin(AbsorbSelfWakes::new(Spender { polls: 0 }));
            let mut first = true;
            std::future::poll_fn(|cx| {
                let r = f.as_mut().poll(cx);
                if first {
                    // Out of budget: yielded after the one poll instead of repolling.
                    assert!(r.is_pending());
                    assert_eq!(f.inner.polls, 1);
                    first = false;
                }
                r
            })
            .await;
            assert_eq!(f.inner.polls, 2);
        });
    }
}
