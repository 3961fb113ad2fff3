//! `teams:`, `defaults:` and `alerts:`.
use super::*;

const DEFAULT_THRESHOLDS: [f64; 3] = [0.5, 0.8, 1.0];

impl Validator<'_> {
    pub(super) fn teams(
        &mut self,
        raw: &[Spanned<RawTeam>],
        policies: &[String],
    ) -> Option<Vec<TeamConfig>> {
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in raw.iter().enumerate() {
            let path = format!("teams[{i}]");
            let team = &item.value;
            let id = self
                .required(&team.id, line_of(item), &path, "id")
                .and_then(|t| {
                    let id = self.text(t, &format!("{path}.id"))?;
                    if id.trim().is_empty() {
                        self.error(line_of(t), format!("{path}.id: a team id cannot be empty"));
                        return None;
                    }
                    self.unique(&mut seen, &id, line_of(t), &format!("{path}.id"));
                    Some(id)
                });
            let refs = self.policy_refs(
                team.policies.as_deref().unwrap_or_default(),
                &format!("{path}.policies"),
                policies,
            );
            let models = team.models.as_ref().map(|globs| {
                let mut out = Vec::new();
                let mut ok = true;
                for (k, glob) in globs.iter().enumerate() {
                    match self.glob(glob, &format!("{path}.models[{k}]")) {
                        Some(g) => out.push(g),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            });
            let cache = team
                .cache
                .as_ref()
                .map(|v| self.boolean(v, &format!("{path}.cache")));
            match (id, refs, present(models), present(cache)) {
                (Some(id), Some(policies), Some(models), Some(cache)) => out.push(TeamConfig {
                    id,
                    policies,
                    models,
                    cache: cache.unwrap_or(true),
                }),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(super) fn defaults(
        &mut self,
        item: &Spanned<RawDefaults>,
        policies: &[String],
    ) -> Option<Defaults> {
        let refs = self.policy_refs(
            item.value.policies.as_deref().unwrap_or_default(),
            "defaults.policies",
            policies,
        )?;
        Some(Defaults { policies: refs })
    }

    pub(super) fn alerts(&mut self, item: &Spanned<RawAlerts>) -> Option<AlertsConfig> {
        let raw = &item.value;
        let url = self
            .required(&raw.webhook_url, line_of(item), "alerts", "webhook_url")
            .and_then(|t| self.http_url(t, "alerts.webhook_url"));
        let thresholds = match &raw.thresholds {
            None => Some(DEFAULT_THRESHOLDS.to_vec()),
            Some(values) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (k, value) in values.iter().enumerate() {
                    let path = format!("alerts.thresholds[{k}]");
                    match self.number(value, &path) {
                        Some(x) if x > 0.0 && x <= 1.0 => out.push(x),
                        Some(x) => {
                            ok = false;
                            self.error(
                                line_of(value),
                                format!("{path}: `{x}` is not a fraction of the limit in (0, 1], e.g. `0.8` for 80%"),
                            );
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
        };
        let format = match &raw.format {
            None => Some(AlertFormat::default()),
            Some(t) => self.one_of(
                t,
                "alerts.format",
                &[("json", AlertFormat::Json), ("slack", AlertFormat::Slack)],
            ),
        };
        Some(AlertsConfig {
            webhook_url: url?,
            thresholds: thresholds?,
            format: format?,
        })
    }
}
