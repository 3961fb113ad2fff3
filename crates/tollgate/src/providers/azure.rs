//! Kind `azure`: Azure OpenAI. The same wire format as OpenAI, so the
//! provider itself is [`super::openai::OpenAiCompatible`]; this module owns
//! what differs: the deployment URL with its `api-version`.

use super::openai::{Dialect, OpenAiCompatible};
use super::upstream::{Ctx, path_segment};
use super::{Endpoint, ProviderError, UpstreamCall};
use crate::config::ProviderConfig;

/// Used when a config leaves `api_version` out: the newest generally
/// available Azure OpenAI data-plane version.
pub const DEFAULT_API_VERSION: &str = "2024-10-21";

pub(crate) fn provider(config: &ProviderConfig, http: super::Http) -> OpenAiCompatible {
    let api_version = config
        .api_version
        .clone()
        .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
    OpenAiCompatible::new(config, Dialect::Azure { api_version }, http)
}

/// `{base_url}/openai/deployments/{model}/{endpoint}?api-version=…`; on
/// Azure the body's `model` names the deployment.
pub(crate) fn url(
    ctx: &Ctx,
    base_url: &str,
    api_version: &str,
    call: &UpstreamCall,
) -> Result<String, ProviderError> {
    let Some(deployment) = call
        .body
        .get("model")
        .and_then(|m| m.as_str())
        .filter(|m| !m.is_empty())
    else {
        return Err(
            ctx.bad_request("the request has no `model`; Azure needs it to pick the deployment")
        );
    };
    let endpoint = match call.endpoint {
        Endpoint::ChatCompletions => "chat/completions",
        Endpoint::Completions => "completions",
        Endpoint::Embeddings => "embeddings",
    };
    Ok(format!(
        "{base_url}/openai/deployments/{}/{endpoint}?api-version={}",
        path_segment(deployment),
        path_segment(api_version)
    ))
}
