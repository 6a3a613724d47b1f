//! What happened, worked out off the request path: each finished request's usage record and the
//! raw parts of its exchange go through a bounded queue to one worker, which works out the
//! session, the cost and the tool calls, builds the (redacted, decompressed, reassembled)
//! capture, hands the record to the usage writer and keeps the capture in the store.
//!
//! Back-pressure: when the queue is full, the record skips enrichment and goes straight to the
//! usage writer (counted as `unenriched`): a usage record is never lost to a slow capture.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use iris_capture::{
    Accounting, CaptureLimits, CostBasis, ModelCostRule, RawExchange, Redactor, TokenUsage,
};
use iris_store::{CaptureRow, Store, UsageRecord, UsageSink};
use tokio::sync::mpsc;

/// Cost settings of one provider, resolved when the config is loaded.
#[derive(Debug, Clone)]
pub struct ProviderCost {
    pub basis: CostBasis,
    pub rules: Vec<ModelCostRule>,
}

/// Bytes of response bodies all requests in flight may hold for their captures together. A stream
/// whose capture would go beyond it is captured truncated, so memory stays bounded however many
/// streams are open (5,000 slow streams must not each hold megabytes).
pub const IN_FLIGHT_CAPTURE_BYTES: usize = 256 << 20;

/// The shared budget for [`IN_FLIGHT_CAPTURE_BYTES`].
#[derive(Debug)]
pub struct CaptureBudget {
    left: AtomicU64,
}

impl Default for CaptureBudget {
    fn default() -> Self {
        CaptureBudget {
            left: AtomicU64::new(IN_FLIGHT_CAPTURE_BYTES as u64),
        }
    }
}

impl CaptureBudget {
    fn take(&self, n: usize) -> bool {
        let n = n as u64;
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |l| l.checked_sub(n))
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.left.fetch_add(n as u64, Ordering::AcqRel);
    }

    pub fn left(&self) -> u64 {
        self.left.load(Ordering::Acquire)
    }
}

/// The raw parts of one exchange, kept by the request path (cheap: `Bytes` are shared).
pub struct Exchange {
    /// Where the kept response bytes are accounted; given back when the exchange is dropped.
    pub budget: Option<Arc<CaptureBudget>>,
    pub request_headers: Vec<(String, String)>,
    pub request_body: Bytes,
    pub response_headers: Vec<(String, String)>,
    pub response_chunks: Vec<Bytes>,
    pub response_bytes: usize,
    pub response_complete: bool,
    pub response_is_sse: bool,
    pub cost: Option<ProviderCost>,
    /// `Some` when captures are on: the limits and the redactor of the request's config.
    pub capture: Option<(CaptureLimits, Arc<Redactor>)>,
}

impl Exchange {
    /// Keep a response chunk, up to `cap` bytes in all and within the shared budget.
    pub fn keep(&mut self, chunk: &Bytes, cap: usize) {
        if self.response_bytes >= cap {
            self.response_complete = false;
            return;
        }
        let take = chunk.len().min(cap - self.response_bytes);
        if let Some(b) = &self.budget
            && !b.take(take)
        {
            self.response_complete = false;
            return;
        }
        self.response_chunks.push(chunk.slice(..take));
        self.response_bytes += take;
        if take < chunk.len() {
            self.response_complete = false;
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give(self.response_bytes);
        }
    }
}

pub fn header_pairs(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

struct Item {
    record: UsageRecord,
    exchange: Option<Box<Exchange>>,
}

/// Hands finished requests to the worker. Cheap to clone.
#[derive(Clone)]
pub struct Observer {
    tx: mpsc::Sender<Item>,
    sink: UsageSink,
    closed: Arc<AtomicBool>,
    unenriched: Arc<AtomicU64>,
}

impl Observer {
    /// Never blocks.
    pub fn record(&self, record: UsageRecord, exchange: Option<Box<Exchange>>) {
        if self.closed.load(Ordering::Acquire) {
            self.sink.record(record);
            return;
        }
        if let Err(e) = self.tx.try_send(Item { record, exchange }) {
            let item = match e {
                mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i) => i,
            };
            self.unenriched.fetch_add(1, Ordering::Relaxed);
            self.sink.record(item.record);
        }
    }

    pub fn sink(&self) -> &UsageSink {
        &self.sink
    }

    pub fn unenriched(&self) -> u64 {
        self.unenriched.load(Ordering::Relaxed)
    }
}

pub struct ObserverHandle {
    task: tokio::task::JoinHandle<()>,
    stop: tokio_util::sync::CancellationToken,
    closed: Arc<AtomicBool>,
}

impl ObserverHandle {
    /// Stop taking new work, finish what is queued, write the last captures.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if self.task.await.is_err() {
            tracing::error!("the capture worker ended abnormally");
        }
        self.closed.store(true, Ordering::Release);
    }
}

pub fn spawn_observer(
    store: Arc<dyn Store>,
    sink: UsageSink,
    capacity: usize,
) -> (Observer, ObserverHandle) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let closed = Arc::new(AtomicBool::new(false));
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(worker(rx, store, sink.clone(), stop.clone()));
    (
        Observer {
            tx,
            sink,
            closed: closed.clone(),
            unenriched: Arc::new(AtomicU64::new(0)),
        },
        ObserverHandle { task, stop, closed },
    )
}

async fn worker(
    mut rx: mpsc::Receiver<Item>,
    store: Arc<dyn Store>,
    sink: UsageSink,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut captures: Vec<CaptureRow> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            biased;
            item = rx.recv() => match item {
                Some(item) => {
                    let (record, capture) = enrich(item);
                    if let Some(c) = capture {
                        captures.push(c);
                    }
                    sink.record(record);
                    if captures.len() >= 64 {
                        flush(&store, &mut captures).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => flush(&store, &mut captures).await,
            _ = stop.cancelled() => {
                rx.close();
                while let Some(item) = rx.recv().await {
                    let (record, capture) = enrich(item);
                    captures.extend(capture);
                    sink.record(record);
                }
                break;
            }
        }
    }
    flush(&store, &mut captures).await;
}

async fn flush(store: &Arc<dyn Store>, captures: &mut Vec<CaptureRow>) {
    if captures.is_empty() {
        return;
    }
    if let Err(e) = store.insert_captures(captures).await {
        tracing::warn!(error = %e, dropped = captures.len(), "could not store captures");
    }
    captures.clear();
}

fn identity_of(r: &UsageRecord) -> String {
    r.login.clone().unwrap_or_else(|| {
        if r.tags.is_empty() {
            r.identity_source.clone()
        } else {
            r.tags.join(",")
        }
    })
}

/// Session, cost, tool calls and the capture of one finished request. Pure but for the clock-free
/// work it does on its inputs.
fn enrich(item: Item) -> (UsageRecord, Option<CaptureRow>) {
    let Item {
        mut record,
        exchange,
    } = item;
    let Some(ex) = exchange else {
        record.session_kind = Some("single".into());
        record.session_id = Some(format!("rq_{}", record.id));
        return (record, None);
    };
    let body_json: serde_json::Value =
        serde_json::from_slice(&ex.request_body).unwrap_or(serde_json::Value::Null);
    let key = iris_capture::session_key(
        &record.api_family,
        &ex.request_headers,
        &body_json,
        &identity_of(&record),
        &record.id,
    );
    record.session_id = Some(key.id);
    record.session_kind = Some(key.kind.as_str().to_owned());
    if let (Some(cost), true) = (&ex.cost, record.usage_known) {
        let model = record
            .upstream_model
            .clone()
            .or_else(|| record.requested_model.clone())
            .unwrap_or_default();
        let usage = TokenUsage {
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            cache_read_tokens: record.cache_read_tokens,
            cache_write_tokens: record.cache_write_tokens,
            reasoning_tokens: record.reasoning_tokens,
        };
        let est = iris_capture::cost::estimate(
            cost.basis,
            &model,
            &usage,
            Accounting::for_family(&record.api_family),
            &cost.rules,
        );
        record.cost_usd = est.usd;
        record.priced_as = est.priced_as;
    }
    let mut capture_row = None;
    if let Some((limits, redactor)) = &ex.capture {
        let response: Vec<u8> = ex
            .response_chunks
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect();
        let raw = RawExchange {
            method: &record.method,
            path: &record.path,
            api_family: &record.api_family,
            request_headers: &ex.request_headers,
            request_body: &ex.request_body,
            request_body_complete: true,
            response_headers: &ex.response_headers,
            response_body: &response,
            response_body_complete: ex.response_complete,
            response_is_sse: ex.response_is_sse,
        };
        let capture = iris_capture::build_capture(&raw, limits, redactor);
        record.tool_names = capture
            .tool_calls()
            .iter()
            .map(|t| t.name.clone())
            .collect();
        let mut doc = serde_json::to_value(&capture).unwrap_or(serde_json::Value::Null);
        if let Some(o) = doc.as_object_mut() {
            o.insert("request_id".into(), serde_json::json!(record.id));
            o.insert("status".into(), serde_json::json!(record.status));
        }
        capture_row = Some(CaptureRow {
            request_id: record.id.clone(),
            ts_ms: record.ts_ms,
            body: doc.to_string(),
        });
    }
    (record, capture_row)
}

/// The cost settings of a provider: its `cost_basis`, else (with `auto_cost_basis`) inferred from
/// its compatibility flags, else OpenAI's; and its `model_cost_map`.
pub fn provider_cost(p: &iris_config::Provider, auto: bool) -> ProviderCost {
    let c = &p.compatibility;
    let flags: Vec<&str> = [
        ("openai_chat", c.openai_chat),
        ("openai_responses", c.openai_responses),
        ("anthropic_messages", c.anthropic_messages),
        ("gemini_generate_content", c.gemini_generate_content),
        ("google_generate_content", c.google_generate_content),
        ("google_raw_predict", c.google_raw_predict),
        ("bedrock_model_invoke", c.bedrock_model_invoke),
        ("bedrock_converse", c.bedrock_converse),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(n, _)| n)
    .collect();
    let basis = p
        .cost_basis
        .as_deref()
        .and_then(|b| b.parse::<CostBasis>().ok())
        .unwrap_or_else(|| {
            if auto {
                CostBasis::infer(flags)
            } else {
                CostBasis::OpenAi
            }
        });
    let rules = p
        .model_cost_map
        .iter()
        .map(|r| ModelCostRule {
            pattern: r.pattern.clone(),
            as_model: r.as_model.clone(),
            adjustment: r.adjustment,
        })
        .collect();
    ProviderCost { basis, rules }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(budget: &Arc<CaptureBudget>) -> Exchange {
        Exchange {
            budget: Some(budget.clone()),
            request_headers: Vec::new(),
            request_body: Bytes::new(),
            response_headers: Vec::new(),
            response_chunks: Vec::new(),
            response_bytes: 0,
            response_complete: true,
            response_is_sse: true,
            cost: None,
            capture: None,
        }
    }

    #[test]
    fn in_flight_capture_bytes_are_bounded_and_given_back() {
        let budget = Arc::new(CaptureBudget::default());
        let chunk = Bytes::from(vec![b'x'; 1 << 20]);
        let mut held = Vec::new();
        // Many streams each wanting 4 MiB: together they never exceed the budget.
        for _ in 0..200 {
            let mut ex = exchange(&budget);
            for _ in 0..4 {
                ex.keep(&chunk, 4 << 20);
            }
            held.push(ex);
        }
        let kept: usize = held.iter().map(|e| e.response_bytes).sum();
        assert!(kept <= IN_FLIGHT_CAPTURE_BYTES, "{kept}");
        assert!(
            held.iter().any(|e| !e.response_complete),
            "later streams are captured truncated"
        );
        drop(held);
        assert_eq!(budget.left(), IN_FLIGHT_CAPTURE_BYTES as u64);
    }

    #[test]
    fn a_single_capture_stops_at_its_cap() {
        let budget = Arc::new(CaptureBudget::default());
        let mut ex = exchange(&budget);
        ex.keep(&Bytes::from_static(b"0123456789"), 4);
        assert_eq!(ex.response_bytes, 4);
        assert!(!ex.response_complete);
        drop(ex);
        assert_eq!(budget.left(), IN_FLIGHT_CAPTURE_BYTES as u64);
    }
}
