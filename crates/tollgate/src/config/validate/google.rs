//! Validation of the keys only the Google kinds take: `project`, `region`
//! and `credentials_file` (`vertex`), and the `api_key` a `gemini`
//! provider cannot do without.

use std::path::Path;
use std::sync::Arc;

use super::super::google::{ServiceAccount, VertexConfig, valid_project, valid_region};
use super::super::model::ProviderKind;
use super::super::raw::RawProvider;
use super::{Validator, line_of};

/// Google AI Studio's Gemini API.
pub(crate) const DEFAULT_GEMINI_BASE_URL: &str = "https://generativelanguage.googleapis.com/v1beta";

/// Vertex AI's regional endpoint; `global` has no region prefix.
pub(crate) fn default_vertex_base_url(region: &str) -> String {
    if region == "global" {
        "https://aiplatform.googleapis.com/v1".to_owned()
    } else {
        format!("https://{region}-aiplatform.googleapis.com/v1")
    }
}

impl Validator<'_> {
    /// The `vertex` part of a provider: `Some(None)` for other kinds (which
    /// must not set the Vertex keys), `None` when something is wrong.
    pub(super) fn google_keys(
        &mut self,
        raw: &RawProvider,
        kind: ProviderKind,
        line: Option<usize>,
        path: &str,
    ) -> Option<Option<VertexConfig>> {
        if kind == ProviderKind::Gemini && raw.api_key.is_none() {
            self.error(
                line,
                format!("{path}: a `gemini` provider needs `api_key` (an AI Studio key, e.g. `${{GEMINI_API_KEY}}`)"),
            );
            return None;
        }
        if kind != ProviderKind::Vertex {
            let mut ok = true;
            // `region` is a `bedrock` key too (`cloud.rs` checks it there).
            let region = (kind != ProviderKind::Bedrock).then_some(&raw.region);
            for (key, value) in [
                ("project", &raw.project),
                ("region", region.unwrap_or(&None)),
                ("credentials_file", &raw.credentials_file),
            ] {
                if let Some(text) = value {
                    self.error(
                        line_of(text),
                        format!("{path}.{key}: only a `vertex` provider takes `{key}`"),
                    );
                    ok = false;
                }
            }
            return ok.then_some(None);
        }
        if let Some(key) = &raw.api_key {
            self.error(
                line_of(key),
                format!("{path}.api_key: a `vertex` provider signs in with `credentials_file` (a service-account key), not an `api_key`"),
            );
            return None;
        }
        let project = self
            .required(&raw.project, line, path, "project")
            .and_then(|t| {
                let p = self.text(t, &format!("{path}.project"))?;
                if valid_project(&p) {
                    Some(p)
                } else {
                    self.error(
                        line_of(t),
                        format!(
                            "{path}.project: `{}` is not a Google Cloud project id",
                            crate::types::clip(&p)
                        ),
                    );
                    None
                }
            });
        let region = self.required(&raw.region, line, path, "region").and_then(|t| {
            let r = self.text(t, &format!("{path}.region"))?;
            if valid_region(&r) {
                Some(r)
            } else {
                self.error(line_of(t), format!("{path}.region: `{}` is not a Google Cloud region like `us-east5` or `global`", crate::types::clip(&r)));
                None
            }
        });
        let credentials = self
            .required(&raw.credentials_file, line, path, "credentials_file")
            .and_then(|t| {
                let file = self.text(t, &format!("{path}.credentials_file"))?;
                match ServiceAccount::load(Path::new(&file)) {
                    Ok(sa) => Some(Arc::new(sa)),
                    Err(e) => {
                        self.error(line_of(t), format!("{path}.credentials_file: {e}"));
                        None
                    }
                }
            });
        Some(Some(VertexConfig {
            project: project?,
            region: region?,
            credentials: credentials?,
        }))
    }
}
