//! Per-request misbehaviour, written into the request's own text as
//! `[[mock:WORD]]`, so that a test driving hundreds of concurrent requests
//! can give each its own fate (the settings of [`crate::MockHandle`] apply
//! to every request at once). Words, any number of them:
//!
//! - `hang`: accept and never answer (until the mock shuts down).
//! - `status=N`: answer with status `N` and an error body.
//! - `latency=MS`: wait `MS` milliseconds before answering.
//! - `cut=N`: stream `N` content chunks, then drop the connection (a
//!   non-streaming answer gets half its body, then the drop).
//! - `tokens=N`: generate `N` tokens when the request's cap allows as many.
//! - `usage=P,C`: report `P` prompt and `C` completion tokens, whatever
//!   was generated (absurd numbers included).
//! - `ignore_cap`: generate as if the request carried no `max_tokens`.
//! - `tool_use`: on `/v1/messages` and `/v1/responses`, also call the
//!   request's first tool (unless the turn is already a tool result).
//!
//! Finding none costs one scan of the body for `[[mock:`.

use std::time::Duration;

const OPEN: &[u8] = b"[[mock:";
const CLOSE: &[u8] = b"]]";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Directives {
    pub hang: bool,
    pub status: Option<u16>,
    pub latency: Option<Duration>,
    pub cut: Option<u32>,
    pub tokens: Option<u32>,
    pub usage: Option<(u64, u64)>,
    pub ignore_cap: bool,
    pub tool_use: bool,
}

impl Directives {
    /// The directives in `body`; unknown words are ignored.
    pub fn parse(body: &[u8]) -> Directives {
        let mut d = Directives::default();
        let mut rest = body;
        while let Some(start) = find(rest, OPEN) {
            rest = &rest[start + OPEN.len()..];
            let Some(end) = find(rest, CLOSE) else {
                break;
            };
            if let Ok(word) = std::str::from_utf8(&rest[..end]) {
                d.apply(word);
            }
            rest = &rest[end + CLOSE.len()..];
        }
        d
    }

    fn apply(&mut self, word: &str) {
        let (name, value) = word.split_once('=').unwrap_or((word, ""));
        match name {
            "hang" => self.hang = true,
            "ignore_cap" => self.ignore_cap = true,
            "tool_use" => self.tool_use = true,
            "status" => self.status = value.parse().ok(),
            "latency" => self.latency = value.parse().ok().map(Duration::from_millis),
            "cut" => self.cut = value.parse().ok(),
            "tokens" => self.tokens = value.parse().ok(),
            "usage" => {
                self.usage = value
                    .split_once(',')
                    .and_then(|(p, c)| Some((p.parse().ok()?, c.parse().ok()?)));
            }
            _ => {}
        }
    }
}

impl Directives {
    /// Folds the directives that change a request's settings into them.
    pub fn apply_to(&self, settings: &mut crate::state::Settings) {
        if let Some(latency) = self.latency {
            settings.latency = latency;
        }
        if self.hang {
            settings.failure = crate::FailureMode::Hang;
        }
        if let Some(after_chunks) = self.cut {
            settings.failure = crate::FailureMode::StreamCut { after_chunks };
        }
        if let Some(tokens) = self.tokens {
            settings.completion_tokens = tokens;
            settings.content = crate::state::content_for(tokens);
        }
        if let Some((prompt_tokens, completion_tokens)) = self.usage {
            settings.usage = Some(crate::UsageOverride {
                prompt_tokens,
                completion_tokens,
            });
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_directive_and_ignores_the_rest() {
        let body = br#"{"messages":[{"role":"user","content":"hi [[mock:latency=20]] [[mock:usage=5,99999999999]][[mock:ignore_cap]] [[mock:what]] [[mock:cut=3"}]}"#;
        let d = Directives::parse(body);
        assert_eq!(d.latency, Some(Duration::from_millis(20)));
        assert_eq!(d.usage, Some((5, 99_999_999_999)));
        assert!(d.ignore_cap);
        assert_eq!(d.cut, None, "an unclosed directive is not one");
        assert_eq!(Directives::parse(b"{}"), Directives::default());
        let d = Directives::parse(b"[[mock:hang]][[mock:status=503]][[mock:tokens=7]]");
        assert!(d.hang);
        assert_eq!((d.status, d.tokens), (Some(503), Some(7)));
    }
}
