//! Claude on Bedrock, natively: `InvokeModel` and
//! `InvokeModelWithResponseStream` take the Anthropic Messages body with
//! `anthropic_version: bedrock-2023-05-31` and no `model` (it is in the
//! URL); the stream's `chunk` events each carry one Anthropic event as
//! base64 JSON in `bytes`. This is the [`NativeMessages`] capability the
//! native `/v1/messages` passthrough uses.

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::super::ProviderError;
use super::super::claude_native::{NativeCall, NativeMessages, NativeResponse};
use super::super::sse::RawEvent;
use super::super::translate::usage_from_anthropic;
use super::super::upstream;
use super::Bedrock;
use super::eventstream::{self, Frame};

/// The `anthropic_version` Bedrock's Claude models take.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";

/// The body `InvokeModel` takes for an Anthropic Messages request. The
/// error is a message for the client (a 400).
pub(crate) fn request_body(call: &NativeCall) -> Result<Value, String> {
    let mut body = call.body.clone();
    body.remove("model");
    body.remove("stream");
    if !body.get("max_tokens").is_some_and(Value::is_u64) {
        return Err("`max_tokens` must be a non-negative integer".to_owned());
    }
    body.insert("anthropic_version".into(), json!(BEDROCK_ANTHROPIC_VERSION));
    if !call.betas.is_empty() {
        // Bedrock takes the `anthropic-beta` header in the body.
        body.insert("anthropic_beta".into(), json!(call.betas));
    }
    Ok(Value::Object(body))
}

/// One `chunk` frame → the Anthropic event it carries.
pub(crate) fn chunk_event(frame: &Frame) -> Result<Option<RawEvent>, String> {
    if frame.message_type != "event" {
        let message = serde_json::from_slice::<Value>(&frame.payload)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .or_else(|| frame.error_message.clone())
            .unwrap_or_else(|| "no message".to_owned());
        return Err(format!(
            "sent `{}` mid-stream: {}",
            crate::types::clip(&frame.kind),
            crate::types::clip(&message)
        ));
    }
    if frame.kind != "chunk" {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&frame.payload)
        .map_err(|e| format!("a stream chunk is not JSON: {e}"))?;
    let encoded = v
        .get("bytes")
        .and_then(Value::as_str)
        .ok_or("a stream chunk has no `bytes`")?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("a stream chunk's `bytes` is not base64: {e}"))?;
    let event = serde_json::from_slice::<Value>(&data)
        .ok()
        .and_then(|v| v.get("type").and_then(Value::as_str).map(str::to_owned));
    Ok(Some(RawEvent {
        event,
        data: Bytes::from(data),
    }))
}

#[async_trait]
impl NativeMessages for Bedrock {
    async fn messages(&self, call: NativeCall) -> Result<NativeResponse, ProviderError> {
        let body = request_body(&call).map_err(|m| self.ctx.bad_request(&m))?;
        let body = serde_json::to_vec(&body).map_err(|e| {
            self.ctx
                .failed(format!("could not encode the request body: {e}"))
        })?;
        let operation = if call.stream {
            "invoke-with-response-stream"
        } else {
            "invoke"
        };
        let deadline = Instant::now() + call.timeout;
        let request =
            self.signed_post(&call.model, operation, body, call.stream, &call.request_id)?;
        let response = self.send_signed(request, deadline, call.timeout).await?;
        if call.stream {
            let response =
                upstream::expect_event_stream(&self.ctx, response, deadline, call.timeout).await?;
            let ctx = self.ctx.clone();
            let events = eventstream::frames(self.ctx.clone(), response, call.timeout).filter_map(
                move |item| {
                    let out = match item {
                        Ok(frame) => match chunk_event(&frame) {
                            Ok(event) => event.map(Ok),
                            Err(message) => Some(Err(ctx.failed(message))),
                        },
                        Err(e) => Some(Err(e)),
                    };
                    std::future::ready(out)
                },
            );
            let events = upstream::end_after(
                events,
                |item| matches!(item, Ok(e) if e.event.as_deref() == Some("message_stop")),
            );
            return Ok(NativeResponse::Stream(Box::pin(events)));
        }
        let raw = upstream::read_body(&self.ctx, response, deadline, call.timeout).await?;
        let usage = serde_json::from_slice::<Value>(&raw)
            .map_err(|e| {
                self.ctx.lost(format!(
                    "answered with a success status but a body that is not JSON: {e}"
                ))
            })?
            .get("usage")
            .filter(|u| u.is_object())
            .map(usage_from_anthropic);
        Ok(NativeResponse::Complete { body: raw, usage })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_body_is_anthropic_with_bedrocks_version_and_no_model() {
        let call = NativeCall {
            body: json!({"model": "claude", "stream": true, "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}],
                "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]})
            .as_object()
            .unwrap()
            .clone(),
            model: "anthropic.claude-3-5-sonnet-20240620-v1:0".into(),
            stream: true,
            betas: vec!["token-efficient-tools-2025-02-19".into()],
            timeout: Duration::from_secs(1),
            request_id: "r".into(),
        };
        let body = request_body(&call).unwrap();
        assert_eq!(body["anthropic_version"], BEDROCK_ANTHROPIC_VERSION);
        assert!(body.get("model").is_none() && body.get("stream").is_none());
        assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
        assert_eq!(
            body["anthropic_beta"][0],
            "token-efficient-tools-2025-02-19"
        );
        let mut no_cap = call.clone();
        no_cap.body.remove("max_tokens");
        assert!(request_body(&no_cap).is_err());
    }
}
