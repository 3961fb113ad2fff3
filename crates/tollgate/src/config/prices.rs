//! The built-in price table: `crates/tollgate/prices.json`, embedded at
//! build time, USD per 1M tokens for current OpenAI, Anthropic and Google
//! models. A configured model without `price:` takes its price from here; a
//! model found in neither place is a config error, so nothing is billed at
//! $0 by accident.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::Deserialize;

use crate::types::{NanoUsd, Price};

const TABLE_JSON: &str = include_str!("../../prices.json");

/// A model's price and its longest possible completion, from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinPrice {
    pub price: Price,
    /// The provider's cap on completion tokens; the worst case a request
    /// without `max_tokens` is reserved for.
    pub max_output_tokens: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    source: String,
    as_of: String,
    #[serde(rename = "unit")]
    _unit: String,
    models: Vec<RawEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    id: String,
    provider: String,
    #[serde(default)]
    aliases: Vec<String>,
    input: f64,
    output: f64,
    cached_input: Option<f64>,
    /// 5-minute cache writes, where the provider charges them apart.
    cache_write: Option<f64>,
    /// 1-hour cache writes.
    cache_write_1h: Option<f64>,
    max_output_tokens: u64,
    /// The provider regions the price holds in (Bedrock); absent: everywhere.
    #[serde(default)]
    regions: Option<Vec<String>>,
    /// The provider's pricing page this entry was read from; required for
    /// the cloud providers (`CLOUD_PROVIDERS`), whose prices change per
    /// region and per model generation and so must be traceable one by one.
    #[serde(default)]
    source: Option<String>,
    /// The day (`YYYY-MM-DD`) the figures were checked against `source`.
    #[serde(default)]
    checked: Option<String>,
    /// Whether every figure was confirmed on `checked`; `false` says so
    /// plainly rather than passing a remembered figure off as checked.
    #[serde(default)]
    verified: Option<bool>,
    /// For people reading the file (tiered prices and the like).
    #[serde(default, rename = "note")]
    _note: Option<String>,
}

struct Entry {
    price: BuiltinPrice,
    regions: Option<Vec<String>>,
}

/// The providers of the cloud kinds (`gemini`, `vertex`, `bedrock`): every
/// entry of theirs names its pricing page and the day it was checked.
const CLOUD_PROVIDERS: [&str; 3] = ["google", "vertex", "bedrock"];

/// Refuses a cloud entry without its pricing page, day checked and mark.
fn check_cloud_source(entry: &RawEntry) -> Result<(), String> {
    let id = &entry.id;
    if !CLOUD_PROVIDERS.contains(&entry.provider.as_str()) {
        return Ok(());
    }
    let source = entry.source.as_deref().unwrap_or("");
    if !source.starts_with("https://") {
        return Err(format!(
            "`{id}`: a `{}` price needs `source`, the https URL of the provider's pricing page",
            entry.provider
        ));
    }
    let checked = entry.checked.as_deref().unwrap_or("");
    let is_date = checked.len() == 10
        && checked.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !is_date {
        return Err(format!(
            "`{id}`: a `{}` price needs `checked`, the day (YYYY-MM-DD) it was read from `source`",
            entry.provider
        ));
    }
    if entry.verified.is_none() {
        return Err(format!(
            "`{id}`: a `{}` price needs `verified` (false when a figure could not be confirmed)",
            entry.provider
        ));
    }
    Ok(())
}

pub(crate) struct Table {
    pub(crate) source: String,
    pub(crate) as_of: String,
    /// Every id and alias, in file order, with its provider.
    names: Vec<(String, String)>,
    by_name: HashMap<String, usize>,
    entries: Vec<Entry>,
}

/// Built once on first use. A malformed file yields an empty table (the
/// crate cannot panic), under which every model needs an explicit `price:`;
/// the test `embedded_table_parses` keeps that from ever shipping.
static TABLE: LazyLock<Table> =
    LazyLock::new(|| parse_table(TABLE_JSON).unwrap_or_else(|_| empty()));

fn empty() -> Table {
    Table {
        source: String::new(),
        as_of: String::new(),
        names: Vec::new(),
        by_name: HashMap::new(),
        entries: Vec::new(),
    }
}

fn usd(value: f64, what: &str, id: &str) -> Result<NanoUsd, String> {
    NanoUsd::from_usd(value).ok_or_else(|| format!("`{id}`: {what} `{value}` is not a USD amount"))
}

fn parse_table(json: &str) -> Result<Table, String> {
    let raw: RawTable = serde_json::from_str(json).map_err(|err| err.to_string())?;
    let mut table = Table {
        source: raw.source,
        as_of: raw.as_of,
        ..empty()
    };
    for entry in raw.models {
        let optional =
            |value: Option<f64>, what: &str| value.map(|v| usd(v, what, &entry.id)).transpose();
        let price = Price {
            input_per_mtok: usd(entry.input, "input", &entry.id)?,
            output_per_mtok: usd(entry.output, "output", &entry.id)?,
            cached_input_per_mtok: optional(entry.cached_input, "cached_input")?,
            cache_write_per_mtok: optional(entry.cache_write, "cache_write")?,
            cache_write_1h_per_mtok: optional(entry.cache_write_1h, "cache_write_1h")?,
        };
        check_cloud_source(&entry)?;
        let index = table.entries.len();
        table.entries.push(Entry {
            price: BuiltinPrice {
                price,
                max_output_tokens: entry.max_output_tokens,
            },
            regions: entry.regions,
        });
        for name in std::iter::once(entry.id).chain(entry.aliases) {
            if table.by_name.insert(name.clone(), index).is_some() {
                return Err(format!("`{name}` appears twice"));
            }
            table.names.push((name, entry.provider.clone()));
        }
    }
    Ok(table)
}

/// The built-in price of a provider model name (exact id or alias). Dated
/// ids are listed one by one because a snapshot may be priced differently
/// from the alias (`gpt-4o-2024-05-13` costs twice what `gpt-4o` does).
pub fn builtin_price(model: &str) -> Option<BuiltinPrice> {
    let table = &*TABLE;
    table.by_name.get(model).map(|&i| table.entries[i].price)
}

/// The regions the built-in price of `model` holds in; `None` when it
/// is not region-specific (or not in the table).
pub(crate) fn builtin_regions(model: &str) -> Option<&'static [String]> {
    let table = &*TABLE;
    let i = *table.by_name.get(model)?;
    table.entries[i].regions.as_deref()
}

/// Every id and alias the table lists for `provider` (`openai`,
/// `anthropic`, `google`), in file order.
pub(crate) fn builtin_models(provider: &str) -> impl Iterator<Item = &'static str> {
    TABLE
        .names
        .iter()
        .filter(move |(_, p)| p == provider)
        .map(|(name, _)| name.as_str())
}

/// Where the table's figures come from and when they were taken.
pub fn price_table_source() -> (&'static str, &'static str) {
    (TABLE.source.as_str(), TABLE.as_of.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_table_parses() {
        let table = parse_table(TABLE_JSON).unwrap();
        for (name, _) in &table.names {
            let entry = builtin_price(name).unwrap();
            // Completions are never cheaper than prompts, and a cache read
            // never costs more than a fresh prompt token.
            assert!(
                entry.price.output_per_mtok >= entry.price.input_per_mtok
                    || entry.max_output_tokens == 0,
                "{name}"
            );
            if let Some(cached) = entry.price.cached_input_per_mtok {
                assert!(cached <= entry.price.input_per_mtok, "{name}");
            }
        }
        // Every Claude model lists Anthropic's cache rates, and they are
        // Anthropic's multiples of its input rate (0.1×, 1.25×, 2×), but
        // for Claude 3 Haiku, which the price page lists rounded ($0.03
        // reads, $0.30 writes for $0.25 input): the page is what is billed.
        for name in builtin_models("anthropic") {
            let p = builtin_price(name).unwrap().price;
            let derived = Price {
                cache_write_per_mtok: None,
                cache_write_1h_per_mtok: None,
                ..p
            }
            .with_anthropic_cache_writes();
            let read = p.cached_input_per_mtok.unwrap();
            if name == "claude-3-haiku-20240307" {
                assert_eq!(p.cache_write_1h_per_mtok, derived.cache_write_1h_per_mtok);
                continue;
            }
            assert_eq!(p, derived, "{name}");
            assert_eq!(read.0, p.input_per_mtok.0 / 10, "{name}");
        }
        // Nobody else charges for writes: the table lists none for them.
        for provider in ["openai", "google"] {
            for name in builtin_models(provider) {
                let p = builtin_price(name).unwrap().price;
                assert_eq!(p.cache_write_per_mtok, None, "{name}");
                assert_eq!(p.cache_write_1h_per_mtok, None, "{name}");
            }
        }
        assert!(table.entries.len() > 30, "{} entries", table.entries.len());
        // Claude on Bedrock: AWS bills cache writes at 1.25x and reads at
        // 0.1x input, and every Bedrock price names the regions it holds in.
        for name in builtin_models("bedrock") {
            let p = builtin_price(name).unwrap().price;
            assert!(
                builtin_regions(name).is_some_and(|r| r.iter().any(|r| r == "us-east-1")),
                "{name}"
            );
            if name.contains("claude") {
                let write = p.cache_write_per_mtok.unwrap();
                assert_eq!(write.0, p.input_per_mtok.0 * 5 / 4, "{name}");
                assert_eq!(
                    p.cached_input_per_mtok.unwrap().0,
                    p.input_per_mtok.0 / 10,
                    "{name}"
                );
            }
        }
        assert_eq!(
            builtin_price("us.anthropic.claude-3-5-sonnet-20240620-v1:0"),
            builtin_price("anthropic.claude-3-5-sonnet-20240620-v1:0")
        );
        assert!(!table.source.is_empty());
        assert!(!table.as_of.is_empty());
        for (name, provider) in &table.names {
            assert!(
                // `vertex`: Claude under Vertex AI's names, priced by Google.
                ["openai", "anthropic", "google", "vertex", "bedrock"].contains(&provider.as_str()),
                "{name}: {provider}"
            );
        }
    }

    #[test]
    fn lookup_by_id_and_alias() {
        let mini = builtin_price("gpt-4o-mini").unwrap();
        assert_eq!(mini.price.input_per_mtok, NanoUsd::from_usd(0.15).unwrap());
        assert_eq!(mini.price.output_per_mtok, NanoUsd::from_usd(0.60).unwrap());
        assert_eq!(mini.max_output_tokens, 16_384);
        assert!(builtin_price("claude-3-5-haiku-latest").is_some());
        assert_eq!(
            builtin_price("claude-3-5-haiku-latest"),
            builtin_price("claude-3-5-haiku-20241022")
        );
        assert!(builtin_price("no-such-model").is_none());
        assert!(builtin_models("openai").any(|m| m == "gpt-4o"));
        assert!(builtin_models("google").any(|m| m == "gemini-2.5-pro"));
        // A dated snapshot priced differently from its alias keeps its own price.
        let first_4o = builtin_price("gpt-4o-2024-05-13").unwrap();
        assert_eq!(
            first_4o.price.input_per_mtok,
            NanoUsd::from_usd(5.0).unwrap()
        );
        assert_eq!(
            builtin_price("gpt-4o").unwrap().price.input_per_mtok,
            NanoUsd::from_usd(2.5).unwrap()
        );
        let sonnet = builtin_price("claude-sonnet-4-0").unwrap();
        assert_eq!(Some(sonnet), builtin_price("claude-sonnet-4-20250514"));
        assert_eq!(sonnet.price.cached_input_per_mtok, NanoUsd::from_usd(0.30));
        assert_eq!(sonnet.price.cache_write_per_mtok, NanoUsd::from_usd(3.75));
        assert_eq!(sonnet.price.cache_write_1h_per_mtok, NanoUsd::from_usd(6.0));
        let haiku3 = builtin_price("claude-3-haiku-20240307").unwrap().price;
        assert_eq!(haiku3.cache_write_per_mtok, NanoUsd::from_usd(0.30));
        assert_eq!(haiku3.cache_write_1h_per_mtok, NanoUsd::from_usd(0.50));
        assert_eq!(haiku3.cached_input_per_mtok, NanoUsd::from_usd(0.03));
        assert!(builtin_models("anthropic").all(|m| m.starts_with("claude")));
    }

    #[test]
    fn every_cloud_price_names_its_source() {
        let raw: RawTable = serde_json::from_str(TABLE_JSON).unwrap();
        let mut cloud = 0;
        let mut verified = Vec::new();
        let mut unverified = Vec::new();
        for entry in &raw.models {
            if !CLOUD_PROVIDERS.contains(&entry.provider.as_str()) {
                continue;
            }
            cloud += 1;
            let name = &entry.id;
            let url = entry.source.as_deref().unwrap();
            let day = entry.checked.as_deref().unwrap();
            match entry.verified.unwrap() {
                true => verified.push(name.as_str()),
                false => unverified.push(name.as_str()),
            }
            let page = match entry.provider.as_str() {
                "google" => "https://ai.google.dev/gemini-api/docs/pricing",
                "vertex" => "https://cloud.google.com/vertex-ai/generative-ai/pricing",
                _ => "https://aws.amazon.com/bedrock/pricing/",
            };
            assert_eq!(url, page, "{name}");
            assert!(day.starts_with("2026-"), "{name}: {day}");
        }
        assert!(cloud > 40, "{cloud} cloud entries");
        // Both kinds of mark are in use: the file does not claim more than
        // was checked, and what was checked says so.
        assert!(verified.contains(&"gemini-2.5-flash"));
        assert!(unverified.contains(&"amazon.titan-embed-text-v2:0"));

        // The loader refuses a cloud entry without its source, date or mark.
        let entry = |extra: &str| {
            format!(
                r#"{{"source":"s","as_of":"d","unit":"u","models":[
                {{"id":"m","provider":"bedrock","input":1,"output":1,"max_output_tokens":1{extra}}}]}}"#
            )
        };
        let ok = r#","source":"https://aws.amazon.com/bedrock/pricing/","checked":"2026-12-08","verified":false"#;
        assert!(parse_table(&entry(ok)).is_ok());
        let no_source = parse_table(&entry(r#","checked":"2026-12-08","verified":true"#));
        assert!(no_source.err().unwrap().contains("needs `source`"));
        let not_a_url = parse_table(&entry(
            r#","source":"from memory","checked":"2026-12-08","verified":true"#,
        ));
        assert!(not_a_url.err().unwrap().contains("needs `source`"));
        let no_date = parse_table(&entry(
            r#","source":"https://aws.amazon.com/bedrock/pricing/","checked":"lately","verified":true"#,
        ));
        assert!(no_date.err().unwrap().contains("needs `checked`"));
        let no_mark = parse_table(&entry(
            r#","source":"https://aws.amazon.com/bedrock/pricing/","checked":"2026-12-08""#,
        ));
        assert!(no_mark.err().unwrap().contains("needs `verified`"));
        // The other providers' entries need none of it.
        let openai = r#"{"source":"s","as_of":"d","unit":"u","models":[
            {"id":"m","provider":"openai","input":1,"output":1,"max_output_tokens":1}]}"#;
        assert!(parse_table(openai).is_ok());
    }

    #[test]
    fn bad_tables_are_rejected() {
        let dup = r#"{"source":"s","as_of":"d","unit":"u","models":[
            {"id":"a","provider":"openai","input":1,"output":1,"max_output_tokens":1},
            {"id":"b","provider":"openai","aliases":["a"],"input":1,"output":1,"max_output_tokens":1}]}"#;
        assert!(
            parse_table(dup)
                .err()
                .unwrap()
                .contains("`a` appears twice")
        );
        let negative = r#"{"source":"s","as_of":"d","unit":"u","models":[
            {"id":"a","provider":"openai","input":-1,"output":1,"max_output_tokens":1}]}"#;
        assert!(parse_table(negative).is_err());
    }
}
