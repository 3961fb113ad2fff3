//! `providers:`: each provider's kind, URL, key and cloud settings.
use super::*;

impl Validator<'_> {
    pub(super) fn providers(
        &mut self,
        raw: &[Spanned<RawProvider>],
    ) -> Option<Vec<ProviderConfig>> {
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in raw.iter().enumerate() {
            let path = format!("providers[{i}]");
            match self.provider(item, &path, &mut seen) {
                Some(provider) => out.push(provider),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn provider(
        &mut self,
        item: &Spanned<RawProvider>,
        path: &str,
        seen: &mut HashMap<String, (String, Option<usize>)>,
    ) -> Option<ProviderConfig> {
        let raw = &item.value;
        let line = line_of(item);
        let name = self.required(&raw.name, line, path, "name").and_then(|t| {
            let name = self.text(t, &format!("{path}.name"))?;
            self.unique(seen, &name, line_of(t), &format!("{path}.name"));
            Some(name)
        });
        let kind = self.required(&raw.kind, line, path, "kind").and_then(|t| {
            self.one_of(
                t,
                &format!("{path}.kind"),
                &[
                    ("openai", ProviderKind::OpenAi),
                    ("azure", ProviderKind::Azure),
                    ("anthropic", ProviderKind::Anthropic),
                    ("gemini", ProviderKind::Gemini),
                    ("vertex", ProviderKind::Vertex),
                    ("mock", ProviderKind::Mock),
                    ("bedrock", ProviderKind::Bedrock),
                ],
            )
        });
        let base_url = raw
            .base_url
            .as_ref()
            .map(|t| (self.http_url(t, &format!("{path}.base_url")), line_of(t)));
        let api_key = raw
            .api_key
            .as_ref()
            .map(|t| self.text(t, &format!("{path}.api_key")));
        let timeout = raw
            .timeout_s
            .as_ref()
            .map(|v| self.seconds(v, &format!("{path}.timeout_s"), false));
        let api_version = raw
            .api_version
            .as_ref()
            .map(|t| (self.text(t, &format!("{path}.api_version")), line_of(t)));

        let kind = kind?;
        let vertex = self.google_keys(raw, kind, line, path);
        let cloud = self.cloud(raw, kind, path, line);
        let base_url = match (kind, base_url) {
            (_, Some((url, _))) if kind != ProviderKind::Mock => url?,
            (ProviderKind::Mock, Some((_, url_line))) => {
                self.error(
                    url_line,
                    format!("{path}.base_url: a `mock` provider is built in and has no URL (to call a mock server over HTTP, use kind `openai`)"),
                );
                return None;
            }
            (ProviderKind::OpenAi, _) => DEFAULT_OPENAI_BASE_URL.to_owned(),
            (ProviderKind::Anthropic, _) => DEFAULT_ANTHROPIC_BASE_URL.to_owned(),
            (ProviderKind::Gemini, _) => google::DEFAULT_GEMINI_BASE_URL.to_owned(),
            (ProviderKind::Vertex, _) => match &vertex {
                Some(Some(v)) => google::default_vertex_base_url(&v.region),
                _ => return None,
            },
            (ProviderKind::Azure, _) => {
                self.error(
                    line,
                    format!("{path}: an `azure` provider needs `base_url` (e.g. `https://RESOURCE.openai.azure.com/openai`)"),
                );
                return None;
            }
            (ProviderKind::Mock, None) => String::new(),
            (ProviderKind::Bedrock, Some((url, _))) => url?,
            (ProviderKind::Bedrock, None) => {
                match cloud.as_ref().and_then(|c| c.bedrock.as_ref()) {
                    Some(b) => format!("https://bedrock-runtime.{}.amazonaws.com", b.region),
                    None => return None,
                }
            }
        };
        let cloud = cloud?;
        let api_version = match (kind, api_version) {
            (ProviderKind::Azure, Some((version, _))) => Some(version?),
            (ProviderKind::Azure, None) => Some(DEFAULT_AZURE_API_VERSION.to_owned()),
            (_, Some((_, version_line))) => {
                self.error(
                    version_line,
                    format!("{path}.api_version: only an `azure` provider takes an `api_version`"),
                );
                return None;
            }
            (_, None) => None,
        };
        Some(ProviderConfig {
            name: name?,
            kind,
            base_url,
            api_key: present(api_key)?.filter(|k| !k.is_empty()).map(Secret::new),
            timeout: present(timeout)?.unwrap_or(DEFAULT_PROVIDER_TIMEOUT),
            api_version,
            vertex: vertex?,
            bedrock: cloud.bedrock,
            entra: cloud.entra,
        })
    }
}
