//! The agent ingresses, `/v1/messages` and `/v1/responses`, made ready for
//! the one pipeline: the client's body checked for the fields the budget
//! relies on, kept as it came for targets that serve the API natively
//! (Anthropic Messages to `anthropic`, Responses to `openai`/`azure`), and
//! made canonical (OpenAI chat) for every other target. Which targets may
//! take the request, how its input is counted for each, and the output cap
//! a native body carries are decided here too.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use super::body::{self, kind_of, snippet};
use super::forward::OutputCap;
use super::pipeline::Ingress;
use crate::config::{ModelConfig, Target};
use crate::error::ApiError;
use crate::policy::{estimate, estimate_native};
use crate::providers::translate::{self, responses};
use crate::providers::{Endpoint, NativeApi, NativeCall, Provider};
use crate::state::Runtime;

/// Client headers a native Anthropic call forwards: they select the API
/// version and opt into beta features (`prompt-caching-…`,
/// `interleaved-thinking-…`, `files-api-…`), which change what the body
/// means. Credentials are never among them.
const FORWARDED_ANTHROPIC_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];

/// The client's own body, for targets that serve its API natively.
#[derive(Debug, Clone)]
pub(crate) struct NativeRequest {
    pub api: NativeApi,
    pub body: Map<String, Value>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `previous_response_id` / `store: true`: the state lives at one
    /// provider, so the request goes to one native target, never elsewhere.
    pub pinned: Option<&'static str>,
    /// Why the body cannot be made canonical, if it cannot: then only
    /// native targets may take it.
    pub untranslatable: Option<String>,
}

/// A request of an agent ingress: the canonical body (validated, counted
/// and sent to non-native targets like any chat request) and the native one.
pub(super) struct Prepared {
    pub canonical: Map<String, Value>,
    pub native: NativeRequest,
}

/// Reads an agent ingress's body. Ill-typed fields the budget relies on
/// (`max_tokens`, `max_output_tokens`, `stream`) are a 400 here, before
/// anything is reserved or forwarded.
pub(super) fn prepare(
    rt: &Runtime,
    ingress: Ingress,
    bytes: &[u8],
    headers: &HeaderMap,
) -> Result<Prepared, ApiError> {
    let raw = body::json_object(bytes)?;
    check_stream(&raw)?;
    check_no_multiplier(&raw)?;
    let (api, headers, pinned) = match ingress {
        Ingress::Anthropic => {
            check_max_tokens(&raw)?;
            (NativeApi::Messages, anthropic_headers(headers), None)
        }
        _ => {
            check_output_cap(&raw)?;
            if raw.get("input").is_none_or(Value::is_null) {
                return Err(ApiError::invalid_param("input", "`input` is required"));
            }
            (
                NativeApi::Responses,
                Vec::new(),
                responses::stateful_feature(&raw),
            )
        }
    };
    // A model every target serves natively never needs the translation (of
    // an agent's whole conversation, on every turn): its canonical body is
    // only what validation and admission read.
    let all_native = raw
        .get("model")
        .and_then(Value::as_str)
        .and_then(|m| rt.config.model(m))
        .is_some_and(|m| !m.targets.is_empty() && m.targets.iter().all(|t| serves(rt, t, api)));
    let (canonical, untranslatable) = if all_native {
        (stand_in(&raw, api), None)
    } else {
        let translated = match api {
            NativeApi::Responses => responses::to_chat(&raw),
            _ => translate::messages_to_openai(&Value::Object(raw.clone())),
        };
        match translated {
            Ok(c) => (c, None),
            // Validated as far as the gateway needs; only a native target
            // can take the rest, which `targets` checks.
            Err(why) => (stand_in(&raw, api), Some(why)),
        }
    };
    Ok(Prepared {
        canonical,
        native: NativeRequest {
            api,
            body: raw,
            headers,
            pinned,
            untranslatable,
        },
    })
}

/// A canonical body carrying only what validation and admission read, for
/// a request only native targets can serve.
fn stand_in(raw: &Map<String, Value>, api: NativeApi) -> Map<String, Value> {
    let cap = match api {
        NativeApi::Responses => "max_output_tokens",
        _ => "max_tokens",
    };
    let mut c = Map::new();
    c.insert(
        "model".into(),
        raw.get("model").cloned().unwrap_or(Value::Null),
    );
    c.insert("messages".into(), json!([{"role": "user", "content": ""}]));
    if let Some(v) = raw.get(cap).filter(|v| !v.is_null()) {
        c.insert("max_tokens".into(), v.clone());
    }
    if raw.get("stream") == Some(&Value::Bool(true)) {
        c.insert("stream".into(), Value::Bool(true));
    }
    c
}

/// Neither API has `n` or `best_of`; passed through, a lenient server
/// could generate several answers on one reservation, so any value but 1
/// is refused.
fn check_no_multiplier(raw: &Map<String, Value>) -> Result<(), ApiError> {
    for field in ["n", "best_of"] {
        match raw.get(field) {
            None | Some(Value::Null) => {}
            Some(v) if v.as_u64() == Some(1) => {}
            Some(v) => {
                return Err(ApiError::invalid_param(
                    field,
                    format!(
                        "`{field}` is not a field of this API (one answer per request), got `{}`",
                        snippet(v)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_stream(raw: &Map<String, Value>) -> Result<(), ApiError> {
    match raw.get("stream") {
        None | Some(Value::Null | Value::Bool(_)) => Ok(()),
        Some(other) => Err(ApiError::invalid_param(
            "stream",
            format!("`stream` must be a boolean, not {}", kind_of(other)),
        )),
    }
}

/// Anthropic requires `max_tokens`, and it is the cap the reservation is
/// made for: absent, null or not a positive integer is a 400.
fn check_max_tokens(raw: &Map<String, Value>) -> Result<(), ApiError> {
    match raw.get("max_tokens") {
        Some(v) if v.as_u64().is_some_and(|n| n >= 1) => Ok(()),
        None | Some(Value::Null) => Err(ApiError::invalid_param(
            "max_tokens",
            "`max_tokens` is required by the Messages API: the most tokens the answer may have",
        )),
        Some(v) => Err(ApiError::invalid_param(
            "max_tokens",
            format!(
                "`max_tokens` must be a positive integer, got `{}`",
                snippet(v)
            ),
        )),
    }
}

fn check_output_cap(raw: &Map<String, Value>) -> Result<(), ApiError> {
    match raw.get("max_output_tokens") {
        None | Some(Value::Null) => Ok(()),
        Some(v) if v.as_u64().is_some_and(|n| n >= 1) => Ok(()),
        Some(v) => Err(ApiError::invalid_param(
            "max_output_tokens",
            format!(
                "`max_output_tokens` must be a positive integer, got `{}`",
                snippet(v)
            ),
        )),
    }
}

pub(super) fn anthropic_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for name in FORWARDED_ANTHROPIC_HEADERS {
        for value in headers.get_all(name) {
            out.push((HeaderName::from_static(name), value.clone()));
        }
    }
    out
}

fn serves(rt: &Runtime, target: &Target, api: NativeApi) -> bool {
    rt.providers
        .get(&target.provider)
        .is_some_and(|p| p.serves_natively(api, &target.model))
}

/// The targets that may take the request, in the order given: all of them,
/// unless the body cannot be made canonical (then only native ones) or
/// needs one provider's stored state (then only the first native one: no
/// fallback, the state is not elsewhere).
pub(super) fn targets<'a>(
    rt: &Runtime,
    native: &NativeRequest,
    model: &str,
    targets: Vec<&'a Target>,
) -> Result<Vec<&'a Target>, ApiError> {
    let native_only = native.pinned.is_some() || native.untranslatable.is_some();
    if !native_only {
        return Ok(targets);
    }
    let mut kept: Vec<&Target> = targets
        .into_iter()
        .filter(|t| serves(rt, t, native.api))
        .collect();
    let kinds = match native.api {
        NativeApi::Responses => "`openai` or `azure`",
        _ => "`anthropic`",
    };
    if let Some(field) = native.pinned {
        kept.truncate(1);
        if kept.is_empty() {
            return Err(ApiError::invalid_param(
                field,
                format!(
                    "`{field}` needs the provider's stored state, and model `{model}` has no {kinds} target to keep it; \
                     leave it out (and send the whole conversation in `input`) for this model"
                ),
            ));
        }
    }
    if kept.is_empty() {
        let why = native.untranslatable.as_deref().unwrap_or_default();
        return Err(ApiError::invalid(format!(
            "{why}; model `{model}` has no {kinds} target that takes this request as it is"
        )));
    }
    Ok(kept)
}

/// Input tokens for the worst of `targets`: the native estimate (Claude's
/// tokenizer for Messages, the target's for Responses) where the target
/// serves it natively, the canonical estimate where it is translated.
pub(super) fn input_tokens(
    rt: &Runtime,
    native: &NativeRequest,
    canonical: &Map<String, Value>,
    model: &ModelConfig,
    targets: &[&Target],
) -> u64 {
    let native_count = || match native.api {
        NativeApi::Responses => estimate_native::responses_input_tokens(&native.body, model),
        _ => estimate_native::messages_input_tokens(&native.body),
    };
    let mut worst = 0;
    let mut native_done = false;
    for t in targets {
        let n = if serves(rt, t, native.api) {
            if native_done {
                continue;
            }
            native_done = true;
            native_count()
        } else {
            estimate::input_tokens(Endpoint::ChatCompletions, canonical, model, &t.model)
        };
        worst = worst.max(n);
    }
    if targets.is_empty() {
        worst = native_count();
    }
    worst
}

/// The native call for one target: the client's body with the target's
/// model and the cap the reservation requires. A Messages body always has
/// `max_tokens` (validated), lowered to what was reserved; a Responses body
/// under an enforced reservation gets `max_output_tokens`, inserted or
/// lowered, as `max_tokens` is on chat.
pub(super) fn call(
    native: &NativeRequest,
    target: &Target,
    cap: OutputCap,
    stream: bool,
    timeout: std::time::Duration,
    request_id: &str,
) -> NativeCall {
    let mut body = native.body.clone();
    body.insert("model".into(), Value::String(target.model.clone()));
    let per_choice = cap.per_choice.max(1);
    let field = match native.api {
        NativeApi::Responses => "max_output_tokens",
        _ => "max_tokens",
    };
    let lower = match native.api {
        NativeApi::Responses => cap.enforced,
        _ => true,
    };
    if lower {
        let current = body.get(field).and_then(Value::as_u64);
        if current.is_none_or(|n| n > per_choice) {
            body.insert(field.into(), Value::from(per_choice));
        }
    }
    NativeCall {
        api: native.api,
        body,
        headers: native.headers.clone(),
        stream,
        timeout,
        request_id: request_id.to_owned(),
    }
}

/// Sends to `provider` natively when it serves the ingress's API, else the
/// canonical call; says which it was.
pub(super) async fn send(
    provider: &dyn Provider,
    native: Option<&NativeRequest>,
    target: &Target,
    cap: OutputCap,
    call: crate::providers::UpstreamCall,
) -> (
    Result<crate::providers::UpstreamResponse, crate::providers::ProviderError>,
    bool,
) {
    match native.filter(|n| provider.serves_natively(n.api, &target.model)) {
        Some(n) => {
            let native_call =
                self::call(n, target, cap, call.stream, call.timeout, &call.request_id);
            (provider.send_native(native_call).await, true)
        }
        None => (provider.send(call).await, false),
    }
}
