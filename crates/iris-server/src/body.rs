//! Response bodies: small fixed ones, and the metered stream that carries an upstream answer to
//! the client while usage is extracted from the same bytes.
//!
//! The metered body never buffers a stream: each frame is handed on as it arrives (the only
//! exception is the OpenAI include-usage filter, which holds bytes only until the SSE event they
//! belong to is complete). When the stream ends, fails, idles out or is dropped because the client
//! hung up, exactly one usage record is finalized.

use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use iris_providers::api::Dialect;
use iris_providers::errors::{ErrorKind, sse_error_event};
use iris_providers::stream_filter::IncludeUsageFilter;
use iris_providers::usage::UsageExtractor;
use iris_store::UsageRecord;

use crate::observe::{Exchange, Observer};
use tokio::time::Sleep;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every response iris sends.
pub type RespBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> RespBody {
    http_body_util::Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The usage record of one request, waiting for the end of its response.
pub struct Pending {
    pub sink: Observer,
    /// The record, boxed: it is handed from the request path through the observer's queue to
    /// the usage writer, and a pointer moves where 632 bytes would be copied at every hand
    /// (ten times a request). `None` once handed on (see [`Pending::rec`]).
    record: Option<Box<UsageRecord>>,
    pub start: Instant,
    /// The raw parts of the exchange, for sessions, cost and captures.
    pub exchange: Option<Box<Exchange>>,
    /// Most response bytes kept in `exchange`.
    pub keep_cap: usize,
}

impl Pending {
    pub fn new(sink: Observer, record: UsageRecord, start: Instant) -> Pending {
        Pending {
            sink,
            record: Some(Box::new(record)),
            start,
            exchange: None,
            keep_cap: 0,
        }
    }

    /// The record being filled in. It is only taken out by `finish` and `drop`, which end the
    /// `Pending`, so it is always there (were it not, a fresh one would be filled in, never
    /// handed on).
    pub fn rec(&mut self) -> &mut UsageRecord {
        self.rec_and_exchange().0
    }

    /// The record and the exchange, borrowed together.
    pub fn rec_and_exchange(&mut self) -> (&mut UsageRecord, Option<&mut Exchange>) {
        (
            self.record.get_or_insert_with(Box::default),
            self.exchange.as_deref_mut(),
        )
    }

    /// Hand the record on. `ended_at` is the clock as the caller last read it at the end (the
    /// last frame's arrival), so that the end of a response costs no second read; `None` reads
    /// it here.
    fn finish(
        mut self,
        extractor: Option<UsageExtractor>,
        bytes_out: u64,
        error: Option<&str>,
        ended_at: Option<Instant>,
    ) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        let rec = &mut *record;
        let ended_at = ended_at.unwrap_or_else(Instant::now);
        rec.duration_ms = ended_at.saturating_duration_since(self.start).as_millis() as u64;
        rec.bytes_out = bytes_out;
        // The caller's error first: what the extractor finds only fills an empty `error_class`
        // (`apply_extracted`), so either order ends the same.
        if let Some(e) = error {
            rec.error_class = Some(e.to_owned());
        }
        match (extractor, self.exchange.as_mut()) {
            // A whole answer the capture kept is scanned by the observer, not here: this runs
            // before hyper writes the answer's last frame, which would wait for a scan as long
            // as the answer. (An answer the extractor kept a copy of is scanned here, as its
            // copy, outside the capture budget, must not wait in the observer's queue.)
            (Some(ex), Some(x)) if x.usage_in_response && ex.reads_body_at_finish() => {
                x.usage = Some(Box::new(ex));
            }
            (Some(ex), _) => apply_extracted(rec, ex.finish()),
            (None, _) => {}
        }
        // Taken, which tells `drop` the record was handed on.
        self.sink.record(record, self.exchange.take());
    }
}

/// What a finished extractor found, into the record: the usage, the model that answered, and an
/// error class for a stream that ended in an error event or a success whose body is not its
/// API's answer, when the record has no error class yet.
pub(crate) fn apply_extracted(rec: &mut UsageRecord, got: iris_providers::Extracted) {
    if let Some(u) = got.usage {
        rec.usage_known = true;
        rec.input_tokens = u.input_tokens;
        rec.output_tokens = u.output_tokens;
        rec.cache_read_tokens = u.cache_read_tokens;
        rec.cache_write_tokens = u.cache_write_tokens;
        rec.reasoning_tokens = u.reasoning_tokens;
    }
    if let Some(m) = got.response_model {
        rec.upstream_model = Some(m);
    }
    if rec.error_class.is_none() {
        if let Some(e) = got.stream_error {
            rec.error_class = Some(format!("upstream_stream_error:{e}"));
        } else if got.malformed_body && (200..300).contains(&rec.status) {
            // Passed on as it came (iris does not repair answers), but a "success" that no
            // client can read is an upstream fault, and the log should say so.
            rec.error_class = Some("upstream_malformed_body".to_owned());
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        // Dropped unfinished: the client went away before its answer began (the server drops
        // the request's future, and with it the upstream request, e.g. while iris waited for
        // the provider). The request still leaves its record: 499, as nginx logs it.
        record.duration_ms = self.start.elapsed().as_millis() as u64;
        if record.status == 0 {
            record.status = 499;
        }
        record.error_class = Some("client_closed".to_owned());
        self.sink.record(record, self.exchange.take());
    }
}

/// A body's idle deadline. Made the first time the upstream makes the body wait: an answer that
/// arrives whole with its head (most non-streaming ones) never needs one.
#[derive(Default)]
struct IdleTimer {
    sleep: Option<Pin<Box<Sleep>>>,
    /// The waker the timer was last armed with (`None` when its last poll could not arm it).
    /// While the body waits with the same waker and the timer has not fired, the timer is not
    /// polled again: a poll re-registers the waker, ~200 instructions each time a stream waits
    /// for its next chunk.
    armed_with: Option<Waker>,
}

impl IdleTimer {
    /// Ready once `deadline` has passed. The timer may be armed for an earlier deadline (frames
    /// only move the deadline); it is then re-armed when it fires.
    fn poll_expired(&mut self, cx: &mut Context<'_>, deadline: tokio::time::Instant) -> Poll<()> {
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !sleep.is_elapsed()
            && (self.armed_with.as_ref()).is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        loop {
            // A timer polled when the task's coop budget is spent is not armed (tokio only
            // reschedules the task): its waker is then not taken as registered, and the next
            // poll polls the timer again.
            let arms = tokio::task::coop::has_budget_remaining();
            if sleep.as_mut().poll(cx).is_pending() {
                self.armed_with = arms.then(|| cx.waker().clone());
                return Poll::Pending;
            }
            if deadline <= tokio::time::Instant::now() {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(deadline);
        }
    }
}

pub struct MeteredBody {
    inner: Incoming,
    pending: Option<Pending>,
    extractor: Option<UsageExtractor>,
    filter: Option<IncludeUsageFilter>,
    idle_after: Duration,
    /// Fires at the idle deadline as it was when it was last armed. Frames only move
    /// `last_frame`; the timer is re-armed lazily when it fires early (resetting a timer on every
    /// frame of a 200-chunk stream costs more than the rest of the metering).
    idle: IdleTimer,
    /// When the last frame arrived; `None` before the first. The idle period before the first
    /// frame runs from the first time the body had to wait for it (read then, rather than when
    /// the body is made: an answer that arrives whole never needs the reading).
    last_frame: Option<tokio::time::Instant>,
    /// SSE answers get an in-band error event when the upstream dies mid-stream.
    sse_dialect: Option<Dialect>,
    bytes_out: u64,
    done: bool,
}

impl MeteredBody {
    pub fn new(
        inner: Incoming,
        pending: Pending,
        extractor: UsageExtractor,
        filter: Option<IncludeUsageFilter>,
        idle_after: Duration,
        sse_dialect: Option<Dialect>,
    ) -> MeteredBody {
        let mut pending = pending;
        // A whole answer the capture keeps (all of it, unless it outgrows the capture's cap or
        // budget) is not copied a second time for the extractor: the observer has it read from
        // the capture's copy.
        if extractor.reads_body_at_finish()
            && pending.keep_cap > 0
            && let Some(x) = pending.exchange.as_mut()
        {
            x.usage_in_response = x.response_complete && x.response.is_empty();
        }
        MeteredBody {
            inner,
            pending: Some(pending),
            extractor: Some(extractor),
            filter,
            idle_after,
            idle: IdleTimer::default(),
            last_frame: None,
            sse_dialect,
            bytes_out: 0,
            done: false,
        }
    }

    fn finalize(&mut self, error: Option<&str>, ended_at: Option<Instant>) {
        if let Some(p) = self.pending.take() {
            p.finish(self.extractor.take(), self.bytes_out, error, ended_at);
        }
    }

    /// End the stream because of an upstream failure: an in-band SSE error event when the client
    /// is reading a stream, otherwise an error that aborts the connection.
    fn fail(
        &mut self,
        class: &str,
        kind: ErrorKind,
        message: &str,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let event = self
            .sse_dialect
            .map(|d| Bytes::from(sse_error_event(d, kind, message)));
        // The event is part of what the client got.
        self.bytes_out += event.as_ref().map_or(0, |e| e.len() as u64);
        self.finalize(Some(class), None);
        self.done = true;
        match event {
            Some(e) => Poll::Ready(Some(Ok(Frame::data(e)))),
            None => Poll::Ready(Some(Err(message.to_owned().into()))),
        }
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let now = tokio::time::Instant::now();
                    this.last_frame = Some(now);
                    let frame = match frame.into_data() {
                        Ok(data) => {
                            if let Some(p) = this.pending.as_mut()
                                && p.rec().ttfb_ms.is_none()
                            {
                                // The clock read once per frame (each read is a vDSO call).
                                let ttfb = now.into_std().saturating_duration_since(p.start);
                                p.rec().ttfb_ms = Some(ttfb.as_millis() as u64);
                            }
                            let mut fed_elsewhere = false;
                            if let Some(p) = this.pending.as_mut() {
                                let cap = p.keep_cap;
                                if let Some(x) = p.exchange.as_mut() {
                                    let before = x.response.len();
                                    x.keep(&data, cap);
                                    if x.usage_in_response && !x.response_complete {
                                        // The capture stopped short: the extractor keeps a
                                        // copy of its own from here, beginning with what the
                                        // capture kept before this frame.
                                        x.usage_in_response = false;
                                        if let Some(ex) = this.extractor.as_mut() {
                                            ex.feed(&x.response[..before]);
                                        }
                                    }
                                    fed_elsewhere = x.usage_in_response;
                                }
                            }
                            if !fed_elsewhere && let Some(ex) = this.extractor.as_mut() {
                                ex.feed(&data);
                            }
                            let out = match this.filter.as_mut() {
                                Some(f) => Bytes::from(f.push(&data)),
                                None => data,
                            };
                            // hyper stops polling a body whose declared length is complete,
                            // so the end is detected here rather than by a final `None`.
                            let ended = this.inner.is_end_stream();
                            let out = match (ended, this.filter.as_mut()) {
                                (true, Some(f)) => {
                                    let tail = f.finish();
                                    if tail.is_empty() {
                                        out
                                    } else {
                                        let mut v = out.to_vec();
                                        v.extend_from_slice(&tail);
                                        Bytes::from(v)
                                    }
                                }
                                _ => out,
                            };
                            this.bytes_out += out.len() as u64;
                            if ended {
                                this.finalize(None, Some(now.into_std()));
                                this.done = true;
                            }
                            if out.is_empty() {
                                if ended {
                                    return Poll::Ready(None);
                                }
                                continue;
                            }
                            Frame::data(out)
                        }
                        Err(other) => other,
                    };
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "upstream stream failed");
                    return this.fail(
                        "upstream_stream_failed",
                        ErrorKind::UpstreamUnavailable,
                        "the upstream provider's stream ended with an error",
                    );
                }
                Poll::Ready(None) => {
                    let tail = this.filter.as_mut().map(|f| f.finish()).unwrap_or_default();
                    this.bytes_out += tail.len() as u64;
                    this.finalize(None, None);
                    this.done = true;
                    if tail.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(tail)))));
                }
                Poll::Pending => {
                    let last = *this
                        .last_frame
                        .get_or_insert_with(tokio::time::Instant::now);
                    ready!(this.idle.poll_expired(cx, last + this.idle_after));
                    return this.fail(
                        "upstream_idle_timeout",
                        ErrorKind::UpstreamTimeout,
                        "the upstream provider sent nothing within the idle timeout",
                    );
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        if self.filter.is_some() || self.done {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        // Still pending: the client went away before the end. Dropping `inner` cancels the
        // upstream request.
        self.finalize(Some("client_closed"), None);
    }
}

/// Wrap a small error body so that the request still leaves its usage record.
pub fn record_now(p: Pending, error: Option<&str>, bytes_out: u64) {
    p.finish(None, bytes_out, error, None);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `idle` once after spending all of the task's coop budget in the same task poll,
    /// then yields so that the next poll of the task has a fresh budget: whether it was pending.
    async fn poll_after_spending(idle: &mut IdleTimer, deadline: tokio::time::Instant) -> bool {
        let pending = std::future::poll_fn(|cx| {
            loop {
                let spend = std::pin::pin!(tokio::task::consume_budget());
                if spend.poll(cx).is_pending() {
                    break;
                }
            }
            assert!(!tokio::task::coop::has_budget_remaining());
            Poll::Ready(idle.poll_expired(cx, deadline).is_pending())
        })
        .await;
        tokio::task::yield_now().await;
        pending
    }

    /// A timer armed (with budget) for `ms` from now, and that long and 30 ms more later: fired.
    async fn armed_then_fired(ms: u64) -> (IdleTimer, tokio::time::Instant) {
        let mut idle = IdleTimer::default();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        std::future::poll_fn(|cx| {
            assert!(idle.poll_expired(cx, deadline).is_pending());
            Poll::Ready(())
        })
        .await;
        assert!(idle.armed_with.is_some());
        tokio::time::sleep(Duration::from_millis(ms + 30)).await;
        (idle, deadline)
    }

    /// `idle` polled (with a fresh budget each poll) until it fires, within 5 s.
    async fn fires(idle: &mut IdleTimer, deadline: tokio::time::Instant, what: &str) {
        let fired = std::future::poll_fn(|cx| idle.poll_expired(cx, deadline));
        tokio::time::timeout(Duration::from_secs(5), fired)
            .await
            .unwrap_or_else(|_| panic!("{what}"));
    }

    #[tokio::test]
    async fn an_idle_timer_polled_without_budget_still_fires() {
        // The first poll, and a poll after the timer fired early and must be re-armed, each
        // made with the budget spent: the timer is not armed then, and must be polled again.
        let start = tokio::time::Instant::now();
        let mut idle = IdleTimer::default();
        let deadline = start + Duration::from_millis(100);
        assert!(poll_after_spending(&mut idle, deadline).await);
        assert!(idle.armed_with.is_none());
        fires(&mut idle, deadline, "the idle timer fired").await;
        assert!(start.elapsed() >= Duration::from_millis(100));

        let (mut idle, early) = armed_then_fired(50).await;
        // Fired at 50 ms; the deadline has since moved to 150 ms.
        let later = early + Duration::from_millis(100);
        assert!(poll_after_spending(&mut idle, later).await);
        fires(&mut idle, later, "the re-armed idle timer fired").await;
        assert!(tokio::time::Instant::now() >= later);
    }

    #[tokio::test]
    async fn an_idle_timer_re_armed_with_the_last_unit_of_budget_still_fires() {
        let (mut idle, early) = armed_then_fired(30).await;
        let later = early + Duration::from_millis(100);
        // tokio gives a task 128 units a poll: 127 spent here, the last by the fired timer's
        // poll, so the poll after its re-arming finds none.
        let pending = std::future::poll_fn(|cx| {
            for _ in 0..127 {
                let spend = std::pin::pin!(tokio::task::consume_budget());
                assert!(spend.poll(cx).is_ready());
            }
            let pending = idle.poll_expired(cx, later).is_pending();
            assert!(!tokio::task::coop::has_budget_remaining());
            Poll::Ready(pending)
        })
        .await;
        tokio::task::yield_now().await;
        assert!(pending);
        assert!(idle.armed_with.is_none());
        fires(&mut idle, later, "the idle timer fired").await;
    }
}
