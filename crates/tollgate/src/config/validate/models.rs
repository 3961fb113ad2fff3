//! `models:`: targets, prices and strategies; the prices a model bills at.
use super::*;

impl Validator<'_> {
    pub(super) fn models(
        &mut self,
        raw: &[Spanned<RawModel>],
        providers: &[String],
    ) -> Option<Vec<ModelConfig>> {
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in raw.iter().enumerate() {
            match self.model(item, &format!("models[{i}]"), providers, &mut seen) {
                Some(model) => out.push(model),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn model(
        &mut self,
        item: &Spanned<RawModel>,
        path: &str,
        providers: &[String],
        seen: &mut HashMap<String, (String, Option<usize>)>,
    ) -> Option<ModelConfig> {
        let raw = &item.value;
        let line = line_of(item);
        let name = self.required(&raw.name, line, path, "name").and_then(|t| {
            let name = self.text(t, &format!("{path}.name"))?;
            self.unique(seen, &name, line_of(t), &format!("{path}.name"));
            Some(name)
        });
        let targets = match raw.targets.as_deref() {
            None | Some([]) => {
                self.error(
                    line,
                    format!("{path}: needs at least one entry in `targets` (`- provider: NAME` with `model: PROVIDER_MODEL`)"),
                );
                None
            }
            Some(targets) => self.targets(targets, path, name.as_deref(), providers),
        };
        let price = raw
            .price
            .as_ref()
            .map(|p| self.price(p, &format!("{path}.price")));
        let max_output_tokens = raw
            .max_output_tokens
            .as_ref()
            .map(|v| self.whole(v, &format!("{path}.max_output_tokens"), 1));

        let name = name?;
        let targets = targets?;
        let strategy = self.strategy(raw.strategy.as_ref(), path, &targets)?;
        let builtin: Vec<_> = targets
            .iter()
            .map(|t| (t, builtin_price(&t.model)))
            .collect();
        let price = match price {
            Some(price) => price?,
            None => {
                let unpriced: Vec<String> = builtin
                    .iter()
                    .filter(|(_, price)| price.is_none())
                    .map(|(t, _)| format!("`{}` of provider `{}`", t.model, t.provider))
                    .collect();
                if !unpriced.is_empty() {
                    self.error(
                        line,
                        format!(
                            "{path}: no price for model `{name}`: the built-in price table has no {}; add `price: {{ input_per_mtok: …, output_per_mtok: … }}` (USD per 1M tokens; write 0 for a free model) so nothing is billed at $0 by accident",
                            unpriced.join(", ")
                        ),
                    );
                    return None;
                }
                worst_price(builtin.iter().filter_map(|(_, p)| p.map(|p| p.price)))
            }
        };
        let table_max = builtin
            .iter()
            .filter_map(|(_, p)| p.map(|p| p.max_output_tokens))
            .max();
        let max_output_tokens = present(max_output_tokens)?
            .or(table_max)
            .unwrap_or(FALLBACK_MAX_OUTPUT_TOKENS);
        Some(ModelConfig {
            name,
            targets,
            price,
            max_output_tokens,
            strategy,
        })
    }

    fn targets(
        &mut self,
        raw: &[Spanned<RawTarget>],
        model_path: &str,
        model_name: Option<&str>,
        providers: &[String],
    ) -> Option<Vec<Target>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (j, item) in raw.iter().enumerate() {
            let path = format!("{model_path}.targets[{j}]");
            let line = line_of(item);
            let provider = self.required(&item.value.provider, line, &path, "provider").and_then(|t| {
                let provider = self.text(t, &format!("{path}.provider"))?;
                if providers.contains(&provider) {
                    Some(provider)
                } else {
                    let known = names_of(providers.iter());
                    self.error(
                        line_of(t),
                        format!("{path}.provider: `{provider}` is not a provider in `providers` ({known})"),
                    );
                    None
                }
            });
            let model = match &item.value.model {
                Some(t) => self.text(t, &format!("{path}.model")),
                // The provider's name for the model defaults to the client's.
                None => model_name.map(str::to_owned),
            };
            let weight = item
                .value
                .weight
                .as_ref()
                .map(|v| self.whole_u32(v, &format!("{path}.weight"), 1));
            match (provider, model, present(weight)) {
                (Some(provider), Some(model), Some(weight)) => out.push(Target {
                    provider,
                    model,
                    weight,
                }),
                _ => ok = false,
            }
        }
        let weighted = raw.iter().filter(|t| t.value.weight.is_some()).count();
        if weighted != 0 && weighted != raw.len() {
            let line = raw.first().and_then(line_of);
            self.error(
                line,
                format!("{model_path}.targets: set `weight` on every target (split by weight) or on none (fallback in order)"),
            );
            return None;
        }
        ok.then_some(out)
    }

    fn price(&mut self, item: &Spanned<RawPrice>, path: &str) -> Option<Price> {
        let raw = &item.value;
        let line = line_of(item);
        let input = self
            .required(&raw.input_per_mtok, line, path, "input_per_mtok")
            .and_then(|v| self.usd(v, &format!("{path}.input_per_mtok"), "a price"));
        let output = self
            .required(&raw.output_per_mtok, line, path, "output_per_mtok")
            .and_then(|v| self.usd(v, &format!("{path}.output_per_mtok"), "a price"));
        let mut optional = |value: &Option<Value>, key: &str| {
            value
                .as_ref()
                .map(|v| self.usd(v, &format!("{path}.{key}"), "a price"))
        };
        let cached = optional(&raw.cached_input_per_mtok, "cached_input_per_mtok");
        let write = optional(&raw.cache_write_per_mtok, "cache_write_per_mtok");
        let write_1h = optional(&raw.cache_write_1h_per_mtok, "cache_write_1h_per_mtok");
        Some(Price {
            input_per_mtok: input?,
            output_per_mtok: output?,
            cached_input_per_mtok: present(cached)?,
            cache_write_per_mtok: present(write)?,
            cache_write_1h_per_mtok: present(write_1h)?,
        })
    }
}

/// The highest of each price over a model's targets, so a reservation made
/// before the target is chosen covers whichever one serves the request.
/// The cached-input price is kept only when every target has one; a
/// cache-write price is the highest any target bills a write at (its own
/// rate, or its input rate), set when some target has one.
fn worst_price(prices: impl Iterator<Item = Price>) -> Price {
    let mut worst = Price::default();
    let mut cached = Some(NanoUsd::ZERO);
    let (mut write, mut write_1h) = (None, None);
    for p in prices {
        worst.input_per_mtok = worst.input_per_mtok.max(p.input_per_mtok);
        worst.output_per_mtok = worst.output_per_mtok.max(p.output_per_mtok);
        cached = match (cached, p.cached_input_per_mtok) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        write = write.max(Some(p.cache_write_rate()));
        write_1h = write_1h.max(Some(p.cache_write_1h_rate()));
    }
    worst.cached_input_per_mtok = cached;
    // A rate equal to the input rate needs no entry of its own.
    let own = |rate: Option<NanoUsd>| rate.filter(|&r| r > worst.input_per_mtok);
    worst.cache_write_per_mtok = own(write);
    worst.cache_write_1h_per_mtok = own(write_1h);
    worst
}

/// Gives the models Anthropic serves the cache-write rates Anthropic bills
/// (1.25× input for 5-minute writes, 2× for 1-hour ones) where their price
/// sets none: an Anthropic answer reports its writes, and a price written
/// with only `input_per_mtok` must not bill them below the provider. A
/// model is Anthropic's when a target goes to an `anthropic` provider or
/// names a Claude model (as Bedrock, Vertex and OpenAI-compatible routers
/// do). Any other model bills a write at its input rate unless its price
/// says otherwise.
pub(super) fn anthropic_cache_writes(models: &mut [ModelConfig], providers: &[ProviderConfig]) {
    let anthropic = |t: &Target| {
        t.model.to_ascii_lowercase().contains("claude")
            || providers
                .iter()
                .any(|p| p.name == t.provider && p.kind == ProviderKind::Anthropic)
    };
    for model in models {
        if model.targets.iter().any(anthropic) {
            model.price = model.price.with_anthropic_cache_writes();
        }
    }
}
