//! Server-sent events: an incremental framing parser that turns bytes, split
//! anywhere, into events as they complete, and the usage extractor for
//! OpenAI chunks. Framing follows the WHATWG EventSource rules (`\n`, `\r\n`
//! or `\r` line ends, multi-line `data`, `:` comments, `event:` names).

use bytes::Bytes;
use serde::Deserialize;

use super::Usage;

/// An event larger than this is a broken or hostile upstream, not a
/// completion chunk; refusing it bounds the memory one stream can take.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One complete event as framed on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// The `event:` field, if the event had one.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server-sent event larger than {MAX_EVENT_BYTES} bytes")]
pub struct EventTooLarge;

/// Incremental SSE parser. Feed it bytes as they arrive; it returns only the
/// events completed so far and keeps the partial rest.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, not yet terminated line.
    line: Vec<u8>,
    /// The previous chunk ended in `\r`: a leading `\n` belongs to that line end.
    skip_lf: bool,
    /// Still deciding whether the stream opens with a byte-order mark.
    bom_done: bool,
    data: Vec<u8>,
    has_data: bool,
    event: Option<String>,
    /// Bytes buffered for the current event, for the size bound.
    pending: usize,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `chunk`, appending every event it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<RawEvent>) -> Result<(), EventTooLarge> {
        if !self.bom_done {
            // The mark can itself arrive split, so hold bytes until it is
            // either complete or ruled out.
            self.line.extend_from_slice(chunk);
            let have = self.line.len().min(BOM.len());
            if self.line[..have] != BOM[..have] {
                self.bom_done = true;
            } else if self.line.len() >= BOM.len() {
                self.bom_done = true;
                self.line.drain(..BOM.len());
            } else {
                return Ok(());
            }
            let held = std::mem::take(&mut self.line);
            return self.feed_lines(&held, out);
        }
        self.feed_lines(chunk, out)
    }

    fn feed_lines(
        &mut self,
        mut chunk: &[u8],
        out: &mut Vec<RawEvent>,
    ) -> Result<(), EventTooLarge> {
        if self.skip_lf && !chunk.is_empty() {
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
            self.skip_lf = false;
        }
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, rest) = chunk.split_at(pos);
            let terminator = rest[0];
            let mut rest = &rest[1..];
            if terminator == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            if self.line.is_empty() {
                self.process_line(head, out)?;
            } else {
                self.line.extend_from_slice(head);
                let line = std::mem::take(&mut self.line);
                self.process_line(&line, out)?;
            }
            chunk = rest;
        }
        if !chunk.is_empty() {
            self.line.extend_from_slice(chunk);
            if self.line.len() + self.pending > MAX_EVENT_BYTES {
                return Err(EventTooLarge);
            }
        }
        Ok(())
    }

    /// End of input. An event whose closing blank line never came is still
    /// delivered: a provider that closes the connection right after its last
    /// `data:` line should not lose that chunk (it often carries the usage).
    pub fn finish(&mut self, out: &mut Vec<RawEvent>) -> Result<(), EventTooLarge> {
        if !self.bom_done {
            self.bom_done = true;
            let held = std::mem::take(&mut self.line);
            if held.as_slice() != BOM {
                self.feed_lines(&held, out)?;
            }
        }
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out)?;
        }
        self.dispatch(out);
        self.skip_lf = false;
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<RawEvent>) -> Result<(), EventTooLarge> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
                self.pending = self.data.len();
                if self.pending > MAX_EVENT_BYTES {
                    return Err(EventTooLarge);
                }
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // `id` and `retry` steer browser reconnects; a proxy has no use for them.
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<RawEvent>) {
        let event = self.event.take();
        self.pending = 0;
        if !std::mem::take(&mut self.has_data) {
            // The spec drops events without data, `event:` name included.
            self.data.clear();
            return;
        }
        out.push(RawEvent {
            event,
            data: Bytes::from(std::mem::take(&mut self.data)),
        });
    }
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// OpenAI's `usage` object (chat, completions and embeddings alike), with
/// the cache writes a translated Anthropic answer adds to it
/// ([`super::translate::usage_to_openai`]). Shared with the proxy's stream
/// reader, so every path reads usage the same way.
#[derive(Deserialize, Default)]
pub(crate) struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
}

#[derive(Deserialize, Default)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

impl WireUsage {
    pub(crate) fn into_usage(self) -> Usage {
        let details = self.prompt_tokens_details.unwrap_or_default();
        let creation = details.cache_creation.unwrap_or_default();
        Usage {
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
            completion_tokens: self.completion_tokens.unwrap_or(0),
            cached_tokens: details.cached_tokens.unwrap_or(0),
            ..Usage::default()
        }
        .with_cache_writes(
            details.cache_write_tokens.unwrap_or(0),
            creation.ephemeral_5m_input_tokens.unwrap_or(0),
            creation.ephemeral_1h_input_tokens.unwrap_or(0),
        )
    }
}

/// The usage a canonical OpenAI stream chunk carries, if any. Chunks
/// without the `"usage"` key (nearly all of them) are skipped without
/// being parsed; `"usage": null` counts as none.
pub fn usage_from_chunk(data: &[u8]) -> Option<Usage> {
    if !contains(data, b"\"usage\"") {
        return None;
    }
    serde_json::from_slice::<WithUsage>(data)
        .ok()?
        .usage
        .map(WireUsage::into_usage)
}

/// The usage of a complete OpenAI JSON body. `Err` when the body is not a
/// JSON object; the body is validated but never rebuilt.
pub fn usage_from_body(body: &[u8]) -> Result<Option<Usage>, serde_json::Error> {
    Ok(serde_json::from_slice::<WithUsage>(body)?
        .usage
        .map(WireUsage::into_usage))
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_whole(input: &[u8]) -> Vec<RawEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(input, &mut out).unwrap();
        p.finish(&mut out).unwrap();
        out
    }

    fn parse_split(input: &[u8], cuts: &[usize]) -> Vec<RawEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, input.len());
            p.feed(&input[start..cut], &mut out).unwrap();
            start = cut;
        }
        p.feed(&input[start..], &mut out).unwrap();
        p.finish(&mut out).unwrap();
        out
    }

    fn ev(event: Option<&str>, data: &str) -> RawEvent {
        RawEvent {
            event: event.map(str::to_owned),
            data: Bytes::from(data.to_owned()),
        }
    }

    #[test]
    fn frames_openai_stream() {
        let input = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        assert_eq!(
            parse_whole(input),
            vec![
                ev(None, "{\"a\":1}"),
                ev(None, "{\"b\":2}"),
                ev(None, "[DONE]")
            ]
        );
    }

    #[test]
    fn handles_crlf_cr_multiline_comments_and_names() {
        let input =
            b"\xEF\xBB\xBF: keep-alive\r\nevent: message_start\r\ndata: one\r\ndata:two\r\n\r\n\
                      event: ping\rdata: x\r\r:comment\n\ndata\n\n";
        assert_eq!(
            parse_whole(input),
            vec![
                ev(Some("message_start"), "one\ntwo"),
                ev(Some("ping"), "x"),
                ev(None, "")
            ]
        );
    }

    #[test]
    fn events_without_data_are_dropped_and_names_reset() {
        let input = b"event: a\n\ndata: b\n\n";
        assert_eq!(parse_whole(input), vec![ev(None, "b")]);
    }

    #[test]
    fn last_event_without_blank_line_is_kept() {
        assert_eq!(
            parse_whole(b"data: a\n\ndata: b"),
            vec![ev(None, "a"), ev(None, "b")]
        );
    }

    #[test]
    fn cr_split_from_lf_is_one_line_end() {
        assert_eq!(
            parse_split(b"data: a\r\n\r\ndata: b\r\n\r\n", &[8, 10]),
            vec![ev(None, "a"), ev(None, "b")]
        );
    }

    #[test]
    fn events_arrive_as_soon_as_complete() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(b"data: a\n", &mut out).unwrap();
        assert!(out.is_empty());
        p.feed(b"\nda", &mut out).unwrap();
        assert_eq!(out, vec![ev(None, "a")]);
    }

    #[test]
    fn oversized_event_is_refused() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_EVENT_BYTES / 4];
        p.feed(b"data: ", &mut out).unwrap();
        let mut failed = false;
        for _ in 0..5 {
            if p.feed(&big, &mut out).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed);
    }

    #[test]
    fn usage_fast_path_and_fields() {
        assert_eq!(
            usage_from_chunk(br#"{"choices":[{"delta":{"content":"hi"}}]}"#),
            None
        );
        assert_eq!(usage_from_chunk(br#"{"choices":[],"usage":null}"#), None);
        let chunk =
            br#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17,
            "prompt_tokens_details":{"cached_tokens":4}}}"#;
        assert_eq!(
            usage_from_chunk(chunk),
            Some(Usage {
                prompt_tokens: 12,
                completion_tokens: 5,
                cached_tokens: 4,
                ..Usage::default()
            })
        );
        let embeddings = br#"{"data":[],"usage":{"prompt_tokens":3,"total_tokens":3}}"#;
        assert_eq!(
            usage_from_body(embeddings).unwrap(),
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 0,
                ..Usage::default()
            })
        );
        assert!(usage_from_body(b"not json").is_err());
        assert_eq!(usage_from_body(b"{}").unwrap(), None);
    }

    proptest! {
        #[test]
        fn any_bytes_any_splits_same_events(
            input in proptest::collection::vec(
                prop_oneof![
                    Just(b'\n'), Just(b'\r'), Just(b':'), Just(b' '), Just(b'd'),
                    Just(0xEF), Just(0xBB), Just(0xBF), any::<u8>()
                ], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..12),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(parse_whole(&input), parse_split(&input, &cuts));
        }

        #[test]
        fn sse_shaped_input_any_splits_same_events(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("data: x".to_owned()), Just("data".to_owned()), Just("event: e".to_owned()),
                    Just(": c".to_owned()), Just(String::new()), "[a-z:]{0,6}".prop_map(|s| s),
                ], 0..40),
            ends in proptest::collection::vec(prop_oneof![Just("\n"), Just("\r"), Just("\r\n")], 40),
            bom in any::<bool>(),
            cuts in proptest::collection::vec(0usize..400, 0..20),
        ) {
            let mut input = if bom { BOM.to_vec() } else { Vec::new() };
            for (line, end) in lines.iter().zip(ends.iter()) {
                input.extend_from_slice(line.as_bytes());
                input.extend_from_slice(end.as_bytes());
            }
            let mut cuts = cuts;
            cuts.sort_unstable();
            let whole = parse_whole(&input);
            // Byte by byte is the harshest split of all.
            let every: Vec<usize> = (0..input.len()).collect();
            prop_assert_eq!(&whole, &parse_split(&input, &cuts));
            prop_assert_eq!(&whole, &parse_split(&input, &every));
        }
    }
}
