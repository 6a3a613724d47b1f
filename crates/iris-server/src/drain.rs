//! The listener's connections: their graceful shutdown, and the deadline of a connection's
//! first request. Both are checked on every poll of a connection's task, which runs once or more
//! for every request and every streamed chunk, so each is an atomic load there.
//!
//! hyper-util's `GracefulShutdown` does the same job by polling a `watch` channel's `changed()`
//! future on every poll of the connection (~150 instructions each, ~430 a small chat, ~300 an
//! SSE event), and `tokio::select!` over a `Sleep` polled the timer on every poll too (~370 a
//! small chat) for as long as the connection lived within its first `client_header` seconds.
//! Here a connection registers its task's waker once (again only if the task's waker changes)
//! and afterwards reads one flag; the first-request deadline is dropped as soon as the first
//! request has started.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Sleep;

/// A connection that can be asked to finish what it is doing and close.
pub trait Graceful {
    /// Stop taking new requests; close once the ones in flight are answered (an idle
    /// keep-alive connection closes at once).
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<T: hyper_util::server::graceful::GracefulConnection> Graceful for T {
    fn graceful_shutdown(self: Pin<&mut Self>) {
        hyper_util::server::graceful::GracefulConnection::graceful_shutdown(self);
    }
}

/// The connections being served, and the signal that tells them to close.
#[derive(Default)]
pub struct Drain {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    closing: AtomicBool,
    /// The waker of each connection's task, by connection, woken when shutdown begins.
    wakers: Mutex<HashMap<u64, Waker>>,
    next_id: AtomicU64,
    open: AtomicUsize,
    /// Notified when the last connection ends after shutdown began.
    idle: Notify,
}

impl Shared {
    fn wakers(&self) -> MutexGuard<'_, HashMap<u64, Waker>> {
        // The map holds no invariant a panic elsewhere could break.
        self.wakers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drain {
    pub fn new() -> Drain {
        Drain::default()
    }

    /// `conn`, counted until it ends, closed gracefully once [`shutdown`](Self::shutdown)
    /// begins (at once if it already has).
    pub fn watch<C>(&self, conn: C) -> Watched<C> {
        self.shared.open.fetch_add(1, Ordering::SeqCst);
        Watched {
            conn,
            shared: self.shared.clone(),
            id: self.shared.next_id.fetch_add(1, Ordering::Relaxed),
            registered: None,
            told: false,
        }
    }

    /// Connections not yet ended.
    pub fn count(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Tell every connection to close gracefully, and wait until all have ended.
    pub async fn shutdown(&self) {
        let s = &*self.shared;
        s.closing.store(true, Ordering::SeqCst);
        // A connection registering from now on sees `closing` under the lock (`Watched::poll`).
        let wakers = std::mem::take(&mut *s.wakers());
        for w in wakers.into_values() {
            w.wake();
        }
        loop {
            let ended = s.idle.notified();
            tokio::pin!(ended);
            // Enabled before the count is read: the last connection's notification, sent after
            // its decrement, cannot fall between the two.
            ended.as_mut().enable();
            if s.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            ended.await;
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection under a [`Drain`].
    pub struct Watched<C> {
        #[pin]
        conn: C,
        shared: Arc<Shared>,
        id: u64,
        // The waker registered in `Shared::wakers`, to compare with the next poll's.
        registered: Option<Waker>,
        // Whether the connection was told to shut down.
        told: bool,
    }

    impl<C> PinnedDrop for Watched<C> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.registered.is_some() {
                this.shared.wakers().remove(this.id);
            }
            let before = this.shared.open.fetch_sub(1, Ordering::SeqCst);
            if before == 1 && this.shared.closing.load(Ordering::SeqCst) {
                this.shared.idle.notify_waiters();
            }
        }
    }
}

impl<C: Future + Graceful> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if !*this.told {
            let mut close = this.shared.closing.load(Ordering::SeqCst);
            if !close
                && !this
                    .registered
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
            {
                let mut wakers = this.shared.wakers();
                // Read again under the lock: a shutdown that took the wakers before this
                // registration set `closing` first.
                close = this.shared.closing.load(Ordering::SeqCst);
                if !close {
                    wakers.insert(*this.id, cx.waker().clone());
                    *this.registered = Some(cx.waker().clone());
                }
            }
            if close {
                *this.told = true;
                this.conn.as_mut().graceful_shutdown();
            }
        }
        this.conn.poll(cx)
    }
}

pin_project_lite::pin_project! {
    /// Resolves when a connection's first request has not started within its deadline; once it
    /// has started, never (and its timer is dropped).
    pub struct FirstRequestDeadline {
        sleep: Option<Pin<Box<Sleep>>>,
        started: Arc<AtomicBool>,
    }
}

impl FirstRequestDeadline {
    /// `started` is set by the connection's first request.
    pub fn new(started: Arc<AtomicBool>, within: Duration) -> FirstRequestDeadline {
        FirstRequestDeadline {
            sleep: Some(Box::pin(tokio::time::sleep(within))),
            started,
        }
    }
}

impl Future for FirstRequestDeadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let Some(sleep) = this.sleep.as_mut() else {
            return Poll::Pending;
        };
        if this.started.load(Ordering::Relaxed) {
            *this.sleep = None;
            return Poll::Pending;
        }
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        *this.sleep = None;
        if this.started.load(Ordering::Relaxed) {
            // Started just in time: the connection goes on.
            return Poll::Pending;
        }
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that ends once told to shut down (after `linger` more polls) and counts how
    /// often it was told.
    struct Conn {
        told: Arc<AtomicUsize>,
        linger: usize,
        polls: Arc<AtomicUsize>,
    }

    impl Graceful for Conn {
        fn graceful_shutdown(self: Pin<&mut Self>) {
            self.told.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Future for Conn {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.told.load(Ordering::SeqCst) == 0 {
                return Poll::Pending;
            }
            if self.linger == 0 {
                return Poll::Ready(());
            }
            self.linger -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn conn(linger: usize) -> (Conn, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (told, polls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let c = Conn {
            told: told.clone(),
            linger,
            polls: polls.clone(),
        };
        (c, told, polls)
    }

    #[tokio::test]
    async fn shutdown_tells_every_connection_once_and_waits_for_them_all() {
        let drain = Drain::new();
        let mut tolds = Vec::new();
        let mut tasks = Vec::new();
        for linger in [0, 3, 10] {
            let (c, told, _) = conn(linger);
            tolds.push(told);
            tasks.push(tokio::spawn(drain.watch(c)));
        }
        // Each has been polled (and registered) before the shutdown.
        tokio::task::yield_now().await;
        assert_eq!(drain.count(), 3);
        tokio::time::timeout(Duration::from_secs(5), drain.shutdown())
            .await
            .expect("every connection ended");
        assert_eq!(drain.count(), 0);
        for t in tasks {
            t.await.unwrap();
        }
        for told in tolds {
            assert_eq!(told.load(Ordering::SeqCst), 1);
        }
        assert!(drain.shared.wakers().is_empty());
    }

    #[tokio::test]
    async fn a_connection_begun_after_the_shutdown_is_told_at_its_first_poll() {
        let drain = Drain::new();
        drain.shutdown().await;
        let (c, told, polls) = conn(0);
        tokio::time::timeout(Duration::from_secs(5), drain.watch(c))
            .await
            .expect("the connection was told to close");
        assert_eq!(told.load(Ordering::SeqCst), 1);
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        assert_eq!(drain.count(), 0);
    }

    #[test]
    fn a_connection_is_polled_without_the_lock_once_registered() {
        let drain = Drain::new();
        let (c, told, polls) = conn(0);
        // A task's waker, as the runtime gives one: the same each poll (a no-op waker's clones
        // need not compare equal).
        struct Task;
        impl std::task::Wake for Task {
            fn wake(self: Arc<Self>) {}
        }
        let waker = Waker::from(Arc::new(Task));
        let mut cx = Context::from_waker(&waker);
        let mut w = Box::pin(drain.watch(c));
        for _ in 0..3 {
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        assert_eq!(drain.shared.wakers().len(), 1);
        // With the lock held here, a poll that took it would never return.
        let held = drain.shared.wakers();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut cx = Context::from_waker(&waker);
            let pending = w.as_mut().poll(&mut cx).is_pending();
            let _ = tx.send((pending, w));
        });
        let (pending, w) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the poll did not take the lock");
        drop(held);
        assert!(pending);
        assert_eq!(told.load(Ordering::SeqCst), 0);
        drop(w);
        assert!(drain.shared.wakers().is_empty());
        assert_eq!(drain.count(), 0);
    }

    #[tokio::test]
    async fn the_first_request_deadline_fires_only_for_a_connection_that_never_started() {
        let started = Arc::new(AtomicBool::new(false));
        let deadline = FirstRequestDeadline::new(started.clone(), Duration::from_millis(200));
        tokio::time::timeout(Duration::from_secs(5), deadline)
            .await
            .expect("fired");

        let started = Arc::new(AtomicBool::new(false));
        let mut deadline = Box::pin(FirstRequestDeadline::new(
            started.clone(),
            Duration::from_millis(200),
        ));
        assert!(
            tokio::time::timeout(Duration::from_millis(50), deadline.as_mut())
                .await
                .is_err()
        );
        started.store(true, Ordering::Relaxed);
        // Well past the deadline.
        assert!(
            tokio::time::timeout(Duration::from_millis(600), deadline.as_mut())
                .await
                .is_err()
        );
        assert!(deadline.sleep.is_none(), "the timer was dropped");
    }
}
