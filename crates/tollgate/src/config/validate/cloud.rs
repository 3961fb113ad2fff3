//! The provider keys of the cloud kinds: `bedrock`'s region and AWS
//! credentials, `azure`'s `entra` app registration. Each key is checked
//! against the provider's kind (a key another kind takes is an error, not
//! silently ignored), and no message ever quotes a credential's value.

use super::{Validator, line_of, present};
use crate::config::model::{BedrockConfig, EntraConfig, ModelConfig, ProviderConfig, ProviderKind};
use crate::config::prices::builtin_regions;
use crate::config::raw::{RawEntra, RawModel, RawProvider, Text};
use crate::types::Secret;
use serde_saphyr::Spanned;

/// Entra ID's public-cloud authority; sovereign clouds (and tests) set
/// `entra.authority_url`.
pub(crate) const DEFAULT_ENTRA_AUTHORITY: &str = "https://login.microsoftonline.com";

/// What the cloud keys of one provider entry came to.
pub(super) struct Cloud {
    pub bedrock: Option<BedrockConfig>,
    pub entra: Option<EntraConfig>,
}

impl Validator<'_> {
    /// The cloud keys of `raw`, a provider of `kind` at `path` (on `line`).
    /// `None` when any is wrong (each problem reported).
    pub(super) fn cloud(
        &mut self,
        raw: &RawProvider,
        kind: ProviderKind,
        path: &str,
        line: Option<usize>,
    ) -> Option<Cloud> {
        let aws_keys = [
            ("region", &raw.region),
            ("aws_access_key_id", &raw.aws_access_key_id),
            ("aws_secret_access_key", &raw.aws_secret_access_key),
            ("aws_session_token", &raw.aws_session_token),
        ];
        let mut ok = true;
        if kind != ProviderKind::Bedrock {
            for (key, value) in aws_keys {
                // `region` is a `vertex` key too (`google.rs` checks it there).
                if key == "region" && kind == ProviderKind::Vertex {
                    continue;
                }
                if let Some(t) = value {
                    self.error(
                        line_of(t),
                        format!("{path}.{key}: only a `bedrock` provider takes `{key}`"),
                    );
                    ok = false;
                }
            }
        }
        if kind != ProviderKind::Azure
            && let Some(entra) = &raw.entra
        {
            self.error(
                line_of(entra),
                format!("{path}.entra: only an `azure` provider takes `entra`"),
            );
            ok = false;
        }
        let bedrock = match kind {
            ProviderKind::Bedrock => Some(self.bedrock(raw, path, line)),
            _ => None,
        };
        let entra = match (kind, &raw.entra) {
            (ProviderKind::Azure, Some(entra)) => {
                if let Some(key) = &raw.api_key {
                    self.error(
                        line_of(key),
                        format!(
                            "{path}: set either `api_key` or `entra`, not both (`entra` signs in with Entra ID instead of a key)"
                        ),
                    );
                    ok = false;
                }
                Some(self.entra(entra, &format!("{path}.entra")))
            }
            _ => None,
        };
        if !ok {
            return None;
        }
        Some(Cloud {
            bedrock: present(bedrock)?,
            entra: present(entra)?,
        })
    }

    fn bedrock(
        &mut self,
        raw: &RawProvider,
        path: &str,
        line: Option<usize>,
    ) -> Option<BedrockConfig> {
        if raw.api_key.is_some() {
            self.error(
                line,
                format!(
                    "{path}.api_key: a `bedrock` provider signs with `aws_access_key_id` and `aws_secret_access_key`, not an `api_key`"
                ),
            );
            return None;
        }
        let region = self
            .required(&raw.region, line, path, "region")
            .and_then(|t| self.region(t, &format!("{path}.region")));
        let access_key_id =
            self.credential(&raw.aws_access_key_id, line, path, "aws_access_key_id");
        let secret_access_key = self.credential(
            &raw.aws_secret_access_key,
            line,
            path,
            "aws_secret_access_key",
        );
        let session_token = raw
            .aws_session_token
            .as_ref()
            .map(|t| self.text(t, &format!("{path}.aws_session_token")));
        Some(BedrockConfig {
            region: region?,
            access_key_id: Secret::new(access_key_id?),
            secret_access_key: Secret::new(secret_access_key?),
            // An empty token (an unset optional `${AWS_SESSION_TOKEN:-}`) is none.
            session_token: present(session_token)?
                .filter(|t| !t.is_empty())
                .map(Secret::new),
        })
    }

    /// An AWS region name as it goes into a host name and the signing scope.
    fn region(&mut self, text: &Text, path: &str) -> Option<String> {
        let region = self.text(text, path)?;
        let valid = !region.is_empty()
            && region.len() <= 32
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            self.error(
                line_of(text),
                format!(
                    "{path}: `{}` is not an AWS region name (e.g. `us-east-1`)",
                    crate::types::clip(&region)
                ),
            );
            return None;
        }
        Some(region)
    }

    /// A required, non-empty credential; its value is never quoted.
    fn credential(
        &mut self,
        value: &Option<Text>,
        line: Option<usize>,
        path: &str,
        key: &str,
    ) -> Option<String> {
        let text = self.required(value, line, path, key)?;
        let value = self.text(text, &format!("{path}.{key}"))?;
        if value.trim().is_empty() {
            self.error(
                line_of(text),
                format!("{path}.{key}: is empty (an unset variable?)"),
            );
            return None;
        }
        Some(value)
    }

    fn entra(&mut self, item: &Spanned<RawEntra>, path: &str) -> Option<EntraConfig> {
        let raw = &item.value;
        let line = line_of(item);
        let tenant_id = self.credential(&raw.tenant_id, line, path, "tenant_id");
        let client_id = self.credential(&raw.client_id, line, path, "client_id");
        let client_secret = self.credential(&raw.client_secret, line, path, "client_secret");
        let authority_url = raw
            .authority_url
            .as_ref()
            .map(|t| self.http_url(t, &format!("{path}.authority_url")));
        let tenant_id = tenant_id?;
        // The tenant becomes a path segment of the token URL.
        if tenant_id.contains(['/', '?', '#']) || tenant_id.contains(char::is_whitespace) {
            self.error(
                line,
                format!(
                    "{path}.tenant_id: `{}` is not a tenant id (a GUID or a domain like `contoso.onmicrosoft.com`)",
                    crate::types::clip(&tenant_id)
                ),
            );
            return None;
        }
        Some(EntraConfig {
            tenant_id,
            client_id: client_id?,
            client_secret: Secret::new(client_secret?),
            authority_url: present(authority_url)?
                .unwrap_or_else(|| DEFAULT_ENTRA_AUTHORITY.to_owned()),
        })
    }
}

impl Validator<'_> {
    /// The built-in Bedrock prices hold only in the regions the table lists
    /// for them (AWS prices some regions higher): a model priced from the
    /// table with a target on a `bedrock` provider elsewhere must write its
    /// `price:`, so it is never billed below what AWS charges there.
    pub(super) fn bedrock_region_prices(
        &mut self,
        raw: &[Spanned<RawModel>],
        models: &[ModelConfig],
        providers: &[ProviderConfig],
    ) {
        for (i, (raw, model)) in raw.iter().zip(models).enumerate() {
            if raw.value.price.is_some() {
                continue;
            }
            for target in &model.targets {
                let Some(region) = providers
                    .iter()
                    .find(|p| p.name == target.provider)
                    .and_then(|p| p.bedrock.as_ref())
                    .map(|b| b.region.as_str())
                else {
                    continue;
                };
                let Some(regions) = builtin_regions(&target.model) else {
                    continue;
                };
                if !regions.iter().any(|r| r == region) {
                    self.error(
                        line_of(raw),
                        format!(
                            "models[{i}]: the built-in price of `{}` is AWS's for {}, not for `{region}` (provider `{}`); add `price: {{ input_per_mtok: …, output_per_mtok: … }}` with the price AWS lists for that region",
                            target.model,
                            regions.join(", "),
                            target.provider
                        ),
                    );
                }
            }
        }
    }
}
