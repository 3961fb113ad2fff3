//! `policies:`: cost limits, rate limits, loop guards and model access,
//! and the references to them from teams, keys and `defaults`.
use super::*;

const COST_LIMIT_KEYS: &[&str] = &["limit_usd", "period", "action", "on_insufficient"];
const RATE_LIMIT_KEYS: &[&str] = &["requests_per_minute", "tokens_per_minute", "max_parallel"];
const LOOP_GUARD_KEYS: &[&str] = &["max_identical", "window_seconds", "on_trip"];
const MODEL_ACCESS_KEYS: &[&str] = &["allow"];

impl Validator<'_> {
    pub(super) fn policies(&mut self, raw: &[Spanned<RawPolicy>]) -> Option<Vec<Policy>> {
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in raw.iter().enumerate() {
            match self.policy(item, &format!("policies[{i}]"), &mut seen) {
                Some(policy) => out.push(policy),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn policy(
        &mut self,
        item: &Spanned<RawPolicy>,
        path: &str,
        seen: &mut HashMap<String, (String, Option<usize>)>,
    ) -> Option<Policy> {
        let raw = &item.value;
        let line = line_of(item);
        let name = self.required(&raw.name, line, path, "name").and_then(|t| {
            let name = self.text(t, &format!("{path}.name"))?;
            self.unique(seen, &name, line_of(t), &format!("{path}.name"));
            if RESERVED_POLICY_NAMES.contains(&name.as_str()) {
                self.error(
                    line_of(t),
                    format!(
                        "{path}.name: `{name}` is reserved for a policy the gateway makes itself (reserved: {}); \
                         choose another name",
                        RESERVED_POLICY_NAMES.join(", ")
                    ),
                );
                return None;
            }
            Some(name)
        });
        let mode = match &raw.mode {
            Some(t) => self.one_of(
                t,
                &format!("{path}.mode"),
                &[
                    ("enforce", PolicyMode::Enforce),
                    ("shadow", PolicyMode::Shadow),
                ],
            ),
            None => Some(PolicyMode::Enforce),
        };
        #[derive(Clone, Copy)]
        enum Type {
            Cost,
            Rate,
            Loop,
            Access,
        }
        let kind = self.required(&raw.kind, line, path, "type").and_then(|t| {
            self.one_of(
                t,
                &format!("{path}.type"),
                &[
                    ("cost-limit", Type::Cost),
                    ("rate-limit", Type::Rate),
                    ("loop-guard", Type::Loop),
                    ("model-access", Type::Access),
                ],
            )
        });
        let config = self.required(&raw.config, line, path, "config");
        let (kind, config) = (kind?, config?);
        let config_path = format!("{path}.config");
        let (type_name, allowed) = match kind {
            Type::Cost => ("cost-limit", COST_LIMIT_KEYS),
            Type::Rate => ("rate-limit", RATE_LIMIT_KEYS),
            Type::Loop => ("loop-guard", LOOP_GUARD_KEYS),
            Type::Access => ("model-access", MODEL_ACCESS_KEYS),
        };
        let mut foreign = false;
        for (key, key_line) in set_keys(&config.value) {
            if !allowed.contains(&key) {
                foreign = true;
                self.error(
                    key_line.or(line_of(config)),
                    format!(
                        "{config_path}.{key}: not a setting of a `{type_name}` policy (its settings: {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
        let kind = match kind {
            Type::Cost => self
                .cost_limit(config, &config_path)
                .map(PolicyKind::CostLimit),
            Type::Rate => self
                .rate_limit(config, &config_path)
                .map(PolicyKind::RateLimit),
            Type::Loop => self
                .loop_guard(config, &config_path)
                .map(PolicyKind::LoopGuard),
            Type::Access => self
                .model_access(config, &config_path)
                .map(PolicyKind::ModelAccess),
        };
        if foreign {
            return None;
        }
        Some(Policy {
            name: name?,
            mode: mode?,
            kind: kind?,
        })
    }

    fn cost_limit(&mut self, item: &Spanned<RawPolicyConfig>, path: &str) -> Option<CostLimit> {
        let raw = &item.value;
        let line = line_of(item);
        let limit = self
            .required(&raw.limit_usd, line, path, "limit_usd")
            .and_then(|v| self.usd(v, &format!("{path}.limit_usd"), "a cost limit"));
        let period = self
            .required(&raw.period, line, path, "period")
            .and_then(|t| {
                let value = self.text(t, &format!("{path}.period"))?;
                let period = Period::parse(&value);
                if period.is_none() {
                    self.error(
                        line_of(t),
                        format!("{path}.period: `{value}` is not one of {}", Period::NAMES),
                    );
                }
                period
            });
        let action = match &raw.action {
            Some(t) => self.one_of(
                t,
                &format!("{path}.action"),
                &[("reject", CostAction::Reject), ("alert", CostAction::Alert)],
            ),
            None => Some(CostAction::default()),
        };
        let on_insufficient = match &raw.on_insufficient {
            Some(t) => self.one_of(
                t,
                &format!("{path}.on_insufficient"),
                &[
                    ("reject", OnInsufficient::Reject),
                    ("clamp", OnInsufficient::Clamp),
                ],
            ),
            None => Some(OnInsufficient::default()),
        };
        Some(CostLimit {
            limit: limit?,
            period: period?,
            action: action?,
            on_insufficient: on_insufficient?,
        })
    }

    fn rate_limit(&mut self, item: &Spanned<RawPolicyConfig>, path: &str) -> Option<RateLimit> {
        let raw = &item.value;
        let mut field = |value: &Option<Value>, key: &str| -> Option<Option<u64>> {
            match value {
                Some(v) => self.whole(v, &format!("{path}.{key}"), 1).map(Some),
                None => Some(None),
            }
        };
        let rpm = field(&raw.requests_per_minute, "requests_per_minute");
        let tpm = field(&raw.tokens_per_minute, "tokens_per_minute");
        let parallel = field(&raw.max_parallel, "max_parallel");
        if raw.requests_per_minute.is_none()
            && raw.tokens_per_minute.is_none()
            && raw.max_parallel.is_none()
        {
            self.error(
                line_of(item),
                format!(
                    "{path}: a `rate-limit` policy needs at least one of {}",
                    RATE_LIMIT_KEYS.join(", ")
                ),
            );
            return None;
        }
        Some(RateLimit {
            requests_per_minute: rpm?,
            tokens_per_minute: tpm?,
            max_parallel: parallel?,
        })
    }

    fn loop_guard(&mut self, item: &Spanned<RawPolicyConfig>, path: &str) -> Option<LoopGuard> {
        let raw = &item.value;
        let line = line_of(item);
        let max_identical = self
            .required(&raw.max_identical, line, path, "max_identical")
            .and_then(|v| self.whole_u32(v, &format!("{path}.max_identical"), 1));
        let window = match &raw.window_seconds {
            Some(v) => self
                .whole(v, &format!("{path}.window_seconds"), 1)
                .map(Duration::from_secs),
            None => Some(Duration::from_secs(60)),
        };
        let on_trip = match &raw.on_trip {
            Some(t) => self.one_of(
                t,
                &format!("{path}.on_trip"),
                &[("throttle", OnTrip::Throttle), ("suspend", OnTrip::Suspend)],
            ),
            None => Some(OnTrip::default()),
        };
        Some(LoopGuard {
            max_identical: max_identical?,
            window: window?,
            on_trip: on_trip?,
        })
    }

    fn model_access(&mut self, item: &Spanned<RawPolicyConfig>, path: &str) -> Option<ModelAccess> {
        let allow = self.required(&item.value.allow, line_of(item), path, "allow")?;
        let mut out = Vec::new();
        let mut ok = true;
        for (k, pattern) in allow.value.iter().enumerate() {
            match self.glob(pattern, &format!("{path}.allow[{k}]")) {
                Some(p) => out.push(p),
                None => ok = false,
            }
        }
        ok.then_some(ModelAccess { allow: out })
    }

    pub(super) fn glob(&mut self, text: &Text, path: &str) -> Option<String> {
        let pattern = self.text(text, path)?;
        if pattern.trim().is_empty() {
            self.error(
                line_of(text),
                format!("{path}: an empty pattern matches no model"),
            );
            return None;
        }
        Some(pattern)
    }

    pub(super) fn policy_refs(
        &mut self,
        raw: &[Text],
        path: &str,
        known: &[String],
    ) -> Option<Vec<String>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (k, name) in raw.iter().enumerate() {
            let item_path = format!("{path}[{k}]");
            let Some(value) = self.text(name, &item_path) else {
                ok = false;
                continue;
            };
            if known.contains(&value) {
                out.push(value);
            } else {
                ok = false;
                let names = names_of(known.iter());
                self.error(
                    line_of(name),
                    format!("{item_path}: `{value}` is not a policy in `policies` ({names})"),
                );
            }
        }
        ok.then_some(out)
    }
}

/// The keys set in a policy's `config`, with their lines.
fn set_keys(config: &RawPolicyConfig) -> Vec<(&'static str, Option<usize>)> {
    let mut keys = Vec::new();
    let mut value = |key: &'static str, v: &Option<Value>| {
        if let Some(v) = v {
            keys.push((key, line_of(v)));
        }
    };
    value("limit_usd", &config.limit_usd);
    value("requests_per_minute", &config.requests_per_minute);
    value("tokens_per_minute", &config.tokens_per_minute);
    value("max_parallel", &config.max_parallel);
    value("max_identical", &config.max_identical);
    value("window_seconds", &config.window_seconds);
    let mut text = |key: &'static str, t: &Option<Text>| {
        if let Some(t) = t {
            keys.push((key, line_of(t)));
        }
    };
    text("period", &config.period);
    text("action", &config.action);
    text("on_insufficient", &config.on_insufficient);
    text("on_trip", &config.on_trip);
    if let Some(allow) = &config.allow {
        keys.push(("allow", line_of(allow)));
    }
    keys.sort_by_key(|(_, line)| *line);
    keys
}
