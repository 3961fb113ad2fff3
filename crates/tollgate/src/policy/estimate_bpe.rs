//! A count-only byte-pair encoder for OpenAI's `cl100k_base` and
//! `o200k_base`, with the same counts as tiktoken (issue 16: tiktoken-rs
//! keeps each vocabulary three times, as an encoder map, a decoder map and
//! a sorted list, each token its own heap allocation, plus 128 clones of
//! the pre-tokenizer regex: ~70 MiB resident for the two families). Here a
//! vocabulary is one byte arena and one hash table of slices into it, and
//! one regex; counting needs nothing else.
//!
//! The vocabularies in `assets/` are OpenAI's published tiktoken files
//! (MIT, as shipped in tiktoken-rs); the pre-tokenizer patterns and the
//! merge loop follow tiktoken's own (`_byte_pair_merge`), so a count is
//! tiktoken's `encode_ordinary(text).len()`. `estimate_bpe_tests.rs`
//! checks that against tiktoken-rs on a corpus.

use base64::Engine as _;
use fancy_regex::Regex;
use rustc_hash::FxHashMap;

/// tiktoken's `cl100k_base` pre-tokenizer.
const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// tiktoken's `o200k_base` pre-tokenizer.
const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"\p{N}{1,3}",
    "|",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    "|",
    r"\s*[\r\n]+",
    "|",
    r"\s+(?!\S)",
    "|",
    r"\s+"
);

pub(crate) struct Bpe {
    /// Token bytes -> rank; the keys borrow from an arena leaked at load,
    /// which lives as long as the process like the `OnceLock` holding this.
    ranks: FxHashMap<&'static [u8], u32>,
    pattern: Regex,
}

impl Bpe {
    pub(crate) fn cl100k() -> Result<Bpe, String> {
        Bpe::load(
            include_str!("../../assets/cl100k_base.tiktoken"),
            CL100K_PATTERN,
        )
    }

    pub(crate) fn o200k() -> Result<Bpe, String> {
        Bpe::load(
            include_str!("../../assets/o200k_base.tiktoken"),
            O200K_PATTERN,
        )
    }

    /// Parses a tiktoken file: one `base64(token) rank` per line.
    fn load(file: &str, pattern: &str) -> Result<Bpe, String> {
        let mut arena = Vec::with_capacity(file.len() / 2);
        let mut spans = Vec::new();
        let mut token = Vec::new();
        for (n, line) in file.lines().enumerate() {
            let bad = || format!("vocabulary line {}: not `base64 rank`", n + 1);
            let (text, rank) = line.split_once(' ').ok_or_else(bad)?;
            let rank: u32 = rank.parse().map_err(|_| bad())?;
            token.clear();
            base64::engine::general_purpose::STANDARD
                .decode_vec(text, &mut token)
                .map_err(|_| bad())?;
            spans.push((arena.len(), token.len(), rank));
            arena.extend_from_slice(&token);
        }
        let arena: &'static [u8] = Box::leak(arena.into_boxed_slice());
        let mut ranks = FxHashMap::with_capacity_and_hasher(spans.len(), Default::default());
        for (start, len, rank) in spans {
            ranks.insert(&arena[start..start + len], rank);
        }
        let pattern = Regex::new(pattern).map_err(|e| format!("pre-tokenizer pattern: {e}"))?;
        Ok(Bpe { ranks, pattern })
    }

    /// tiktoken's `encode_ordinary(text).len()`; `None` if the
    /// pre-tokenizer gives up (its backtracking limit), so the caller can
    /// fall back to a safe bound.
    pub(crate) fn count(&self, text: &str) -> Option<u64> {
        let mut n = 0;
        for piece in self.pattern.find_iter(text) {
            let piece = piece.ok()?.as_str().as_bytes();
            n += if self.ranks.contains_key(piece) {
                1
            } else {
                self.merged_len(piece)
            };
        }
        Some(n)
    }

    fn rank(&self, bytes: &[u8]) -> u32 {
        self.ranks.get(bytes).copied().unwrap_or(u32::MAX)
    }

    /// How many tokens tiktoken's `_byte_pair_merge` leaves of `piece`:
    /// repeatedly merge the adjacent pair of lowest rank.
    fn merged_len(&self, piece: &[u8]) -> u64 {
        if piece.len() < 2 {
            return piece.len() as u64;
        }
        // (start, rank of the pair starting here).
        let mut parts: Vec<(usize, u32)> = Vec::with_capacity(piece.len() + 1);
        let mut min = (u32::MAX, usize::MAX);
        for i in 0..piece.len() - 1 {
            let rank = self.rank(&piece[i..i + 2]);
            if rank < min.0 {
                min = (rank, i);
            }
            parts.push((i, rank));
        }
        parts.push((piece.len() - 1, u32::MAX));
        parts.push((piece.len(), u32::MAX));
        let pair_rank = |parts: &[(usize, u32)], i: usize| {
            if i + 3 < parts.len() {
                self.rank(&piece[parts[i].0..parts[i + 3].0])
            } else {
                u32::MAX
            }
        };
        while min.0 != u32::MAX {
            let i = min.1;
            if i > 0 {
                parts[i - 1].1 = pair_rank(&parts, i - 1);
            }
            parts[i].1 = pair_rank(&parts, i);
            parts.remove(i + 1);
            min = (u32::MAX, usize::MAX);
            for (i, &(_, rank)) in parts[..parts.len() - 1].iter().enumerate() {
                if rank < min.0 {
                    min = (rank, i);
                }
            }
        }
        (parts.len() - 1) as u64
    }
}

#[cfg(test)]
#[path = "estimate_bpe_tests.rs"]
mod tests;
