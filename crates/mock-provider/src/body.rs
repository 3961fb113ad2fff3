//! The response body: a whole buffer, or a list of events sent one by one
//! with a delay between them, optionally ending in a dropped connection.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::state::InFlight;

/// Ends a connection without an answer: hyper closes the connection when a
/// service or a body fails.
#[derive(Debug)]
pub(crate) struct Abort(pub &'static str);

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Abort {}

/// How long a cut stream's last data has to reach the socket before the cut.
const CUT_GRACE: Duration = Duration::from_millis(20);

pub(crate) struct MockBody {
    kind: Kind,
    /// Keeps the request counted as in flight until the body is done or dropped.
    _in_flight: Option<InFlight>,
}

enum Kind {
    Full(Option<Bytes>),
    Events(Events),
}

struct Events {
    events: std::vec::IntoIter<Bytes>,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    sent_any: bool,
    /// After the last event, fail instead of ending, so the client never sees
    /// the end of the body.
    cut: bool,
}

impl MockBody {
    pub fn full(bytes: Bytes, in_flight: Option<InFlight>) -> MockBody {
        MockBody {
            kind: Kind::Full(Some(bytes)),
            _in_flight: in_flight,
        }
    }

    /// The first event goes out at once, each later one after `delay`.
    /// With no delay all events leave in one write.
    pub fn events(
        events: Vec<Bytes>,
        delay: Duration,
        cut: bool,
        in_flight: Option<InFlight>,
    ) -> MockBody {
        MockBody {
            kind: Kind::Events(Events {
                events: events.into_iter(),
                delay,
                sleep: None,
                sent_any: false,
                cut,
            }),
            _in_flight: in_flight,
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Abort;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Abort>>> {
        match &mut self.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Events(ev) => {
                if ev.events.len() == 0 {
                    if !ev.cut {
                        return Poll::Ready(None);
                    }
                    // hyper drops its unflushed output when a body fails, so
                    // give it time to put what was sent on the wire first.
                    let sleep = ev
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(CUT_GRACE)));
                    ready!(sleep.as_mut().poll(cx));
                    return Poll::Ready(Some(Err(Abort("mock provider: stream cut on purpose"))));
                }
                if ev.delay.is_zero() {
                    let mut all =
                        BytesMut::with_capacity(ev.events.as_slice().iter().map(Bytes::len).sum());
                    for event in ev.events.by_ref() {
                        all.extend_from_slice(&event);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(all.freeze()))));
                }
                if ev.sent_any {
                    let delay = ev.delay;
                    let sleep = ev
                        .sleep
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
                    ready!(sleep.as_mut().poll(cx));
                    ev.sleep = None;
                }
                ev.sent_any = true;
                Poll::Ready(ev.events.next().map(|e| Ok(Frame::data(e))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Events(ev) => ev.events.len() == 0 && !ev.cut,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Events(_) => SizeHint::default(),
        }
    }
}
