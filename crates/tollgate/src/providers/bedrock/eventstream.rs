//! AWS event-stream framing (`application/vnd.amazon.eventstream`), the
//! body of `ConverseStream` and `InvokeModelWithResponseStream`: binary
//! messages, each a prelude (total and header lengths, its CRC32), headers,
//! a payload and a message CRC32. Decoding, CRC checks included, is the
//! `aws-smithy-eventstream` crate's; this module feeds it the body as it
//! arrives under the idle timeout and names each message by its `:`
//! headers. A corrupt frame ends the stream with a clean `Failed`: after
//! a bad CRC nothing later in the body can be trusted.

use std::pin::Pin;
use std::time::Duration;

use aws_smithy_eventstream::frame::read_message_from;
use aws_smithy_types::event_stream::{HeaderValue, Message};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::super::ProviderError;
use super::super::upstream::Ctx;

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    /// `:message-type`: `event`, `exception` or `error`.
    pub message_type: String,
    /// `:event-type` of an event (`messageStart`, `chunk`…), else
    /// `:exception-type` of an exception, else `:error-code`.
    pub kind: String,
    pub payload: Bytes,
    /// `:error-message` of an `error` message.
    pub error_message: Option<String>,
}

impl Frame {
    fn of(message: &Message) -> Frame {
        let header = |name: &str| {
            message
                .headers()
                .iter()
                .find(|h| h.name().as_str() == name)
                .and_then(|h| match h.value() {
                    HeaderValue::String(s) => Some(s.as_str().to_owned()),
                    _ => None,
                })
        };
        let message_type = header(":message-type").unwrap_or_else(|| "event".to_owned());
        let kind = match message_type.as_str() {
            "exception" => header(":exception-type"),
            "error" => header(":error-code"),
            _ => header(":event-type"),
        }
        .unwrap_or_default();
        Frame {
            message_type,
            kind,
            payload: message.payload().clone(),
            error_message: header(":error-message"),
        }
    }
}

/// The largest message the AWS event-stream format allows (its spec: 16 MiB).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Total length, headers length and prelude CRC, 4 bytes each, plus the
/// message CRC: the smallest possible message.
const MIN_MESSAGE_BYTES: usize = 16;

/// Splits a byte stream into frames; bytes may arrive in any cut. Where a
/// message ends is read from its prelude here; decoding it, both CRCs
/// checked, is [`read_message_from`]'s.
#[derive(Default)]
pub(crate) struct Decoder {
    buffer: BytesMut,
}

impl Decoder {
    /// Every frame `bytes` completes. `Err` on a corrupt frame (bad CRC,
    /// impossible length); the decoder is then unusable.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Frame>, String> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        while self.buffer.len() >= 4 {
            let total = u32::from_be_bytes([
                self.buffer[0],
                self.buffer[1],
                self.buffer[2],
                self.buffer[3],
            ]) as usize;
            if !(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&total) {
                return Err(format!(
                    "sent a corrupt event-stream frame: a message length of {total} bytes"
                ));
            }
            if self.buffer.len() < total {
                break;
            }
            let mut message = self.buffer.split_to(total).freeze();
            match read_message_from(&mut message) {
                Ok(message) => out.push(Frame::of(&message)),
                Err(e) => return Err(format!("sent a corrupt event-stream frame: {e}")),
            }
            if message.has_remaining() {
                return Err("sent a corrupt event-stream frame: its lengths disagree".to_owned());
            }
        }
        Ok(out)
    }

    /// Whether a frame was cut off by the end of the body.
    pub fn is_mid_frame(&self) -> bool {
        !self.buffer.is_empty()
    }
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

struct Reading {
    body: ByteStream,
    decoder: Decoder,
    ready: std::collections::VecDeque<Frame>,
    idle: Duration,
    ended: bool,
    ctx: Ctx,
}

/// The frames of a 2xx streaming `response`, each as soon as its bytes are
/// in. Waiting longer than `idle` for bytes ends it with `Timeout`; a
/// broken connection, a corrupt frame or a body that stops mid-frame with
/// `Failed`.
pub(crate) fn frames(
    ctx: Ctx,
    response: reqwest::Response,
    idle: Duration,
) -> impl Stream<Item = Result<Frame, ProviderError>> + Send + 'static {
    let state = Reading {
        body: Box::pin(response.bytes_stream()),
        decoder: Decoder::default(),
        ready: std::collections::VecDeque::new(),
        idle,
        ended: false,
        ctx,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(frame) = st.ready.pop_front() {
                return Some((Ok(frame), st));
            }
            if st.ended {
                return None;
            }
            match tokio::time::timeout(st.idle, st.body.next()).await {
                Err(_) => {
                    st.ended = true;
                    return Some((Err(st.ctx.timeout(st.idle)), st));
                }
                Ok(Some(Err(e))) => {
                    st.ended = true;
                    let message = format!(
                        "the stream broke off: {}",
                        super::super::upstream::error_chain(&e)
                    );
                    return Some((Err(st.ctx.failed(message)), st));
                }
                Ok(Some(Ok(bytes))) => match st.decoder.feed(&bytes) {
                    Ok(frames) => st.ready.extend(frames),
                    Err(message) => {
                        st.ended = true;
                        return Some((Err(st.ctx.failed(message)), st));
                    }
                },
                Ok(None) => {
                    st.ended = true;
                    if st.decoder.is_mid_frame() {
                        let err = st
                            .ctx
                            .failed("the stream ended in the middle of an event-stream frame");
                        return Some((Err(err), st));
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames_of(bytes: &[u8]) -> Result<Vec<Frame>, String> {
        let mut d = Decoder::default();
        d.feed(bytes)
    }

    #[test]
    fn frames_split_anywhere_decode_the_same() {
        let mut wire = Vec::new();
        wire.extend_from_slice(&mock_provider::event_frame(
            "messageStart",
            br#"{"role":"assistant"}"#,
        ));
        wire.extend_from_slice(&mock_provider::event_frame(
            "contentBlockDelta",
            br#"{"contentBlockIndex":0,"delta":{"text":"hi"}}"#,
        ));
        wire.extend_from_slice(&mock_provider::exception_frame(
            "throttlingException",
            "slow down",
        ));
        let whole = frames_of(&wire).unwrap();
        assert_eq!(whole.len(), 3);
        assert_eq!(
            (whole[0].message_type.as_str(), whole[0].kind.as_str()),
            ("event", "messageStart")
        );
        assert_eq!(
            &whole[1].payload[..],
            br#"{"contentBlockIndex":0,"delta":{"text":"hi"}}"#
        );
        assert_eq!(
            (whole[2].message_type.as_str(), whole[2].kind.as_str()),
            ("exception", "throttlingException")
        );
        let mut d = Decoder::default();
        let mut one_by_one = Vec::new();
        for b in &wire {
            one_by_one.extend(d.feed(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(one_by_one, whole);
        assert!(!d.is_mid_frame());
        let mut cut = Decoder::default();
        cut.feed(&wire[..wire.len() - 3]).unwrap();
        assert!(cut.is_mid_frame());
    }

    #[test]
    fn corruption_is_an_error_never_a_panic() {
        let frame = mock_provider::event_frame("messageStart", br#"{"role":"assistant"}"#);
        // Every single-byte corruption is caught by a CRC or a length check.
        for i in 0..frame.len() {
            let mut bad = frame.to_vec();
            bad[i] ^= 0x5A;
            let mut d = Decoder::default();
            match d.feed(&bad) {
                Err(e) => assert!(e.contains("corrupt"), "{e}"),
                // A larger length makes the frame look incomplete.
                Ok(frames) => assert!(frames.is_empty() && d.is_mid_frame(), "byte {i}"),
            }
        }
        // Hostile lengths: nothing is buffered waiting for 4 GiB.
        assert!(frames_of(&[0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]).is_err());
        assert!(frames_of(&[0, 0, 0, 3]).is_err());
    }
}
