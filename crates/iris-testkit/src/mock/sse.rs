//! Server-sent event streams as the providers write them: `event: NAME\ndata: JSON\n\n`
//! (Anthropic, Responses) or `data: JSON\n\n` (Chat Completions).

use std::convert::Infallible;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::server::{self, Body};

/// A stream under construction. Events marked `delayed` wait the chunk delay before they go out.
#[derive(Debug, Default)]
pub(crate) struct Sse {
    events: Vec<(bool, Bytes)>,
}

impl Sse {
    /// Appends `data: {data}` with an optional `event:` line.
    pub fn push(&mut self, delayed: bool, event: Option<&str>, data: &str) {
        let mut buf = String::with_capacity(data.len() + 32);
        if let Some(name) = event {
            buf.push_str("event: ");
            buf.push_str(name);
            buf.push('\n');
        }
        buf.push_str("data: ");
        buf.push_str(data);
        buf.push_str("\n\n");
        self.events.push((delayed, Bytes::from(buf)));
    }

    /// Appends a JSON event.
    pub fn push_json(&mut self, delayed: bool, event: Option<&str>, data: &serde_json::Value) {
        self.push(delayed, event, &data.to_string());
    }

    /// The streaming response. Without a delay the whole stream is written as one buffer;
    /// with one, each event is its own frame and delayed events sleep first.
    pub fn into_response(self, delay: Duration) -> Response<Body> {
        let body = if delay.is_zero() {
            let mut all = BytesMut::with_capacity(self.events.iter().map(|(_, e)| e.len()).sum());
            for (_, e) in &self.events {
                all.extend_from_slice(e);
            }
            server::full(all.freeze())
        } else {
            let stream =
                futures_util::stream::unfold(self.events.into_iter(), move |mut it| async move {
                    let (delayed, bytes) = it.next()?;
                    if delayed {
                        tokio::time::sleep(delay).await;
                    }
                    Some((Ok::<_, Infallible>(Frame::data(bytes)), it))
                });
            StreamBody::new(stream).boxed_unsync()
        };
        with_sse_headers(Response::new(body))
    }

    /// The events, each with whether it waits the chunk delay (a content chunk).
    pub fn into_events(self) -> Vec<(bool, Bytes)> {
        self.events
    }
}

/// `resp` with the headers of an event stream.
pub(crate) fn with_sse_headers(mut resp: Response<Body>) -> Response<Body> {
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    resp
}
