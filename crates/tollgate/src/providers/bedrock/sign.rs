//! SigV4 for Bedrock, by the `aws-sigv4` crate: the signing inputs (region,
//! service `bedrock`, the static or temporary credentials) held once per
//! provider, and one call that turns a request's method, URL, content
//! headers and body into the headers AWS checks.
//!
//! The URL's path must already be percent-encoded the way the AWS SDKs
//! encode a model id (`:` → `%3A`, `/` → `%2F`, see
//! [`super::super::upstream::path_segment`]). The signer then encodes it a
//! second time for the canonical request, which is what every AWS service
//! but S3 expects ([`PercentEncodingMode::Double`], the crate's default for
//! that reason); the test `model_ids_are_signed_double_encoded` pins it.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use http::HeaderValue;

use crate::config::BedrockConfig;

/// The signing name of Bedrock's runtime endpoints (`bedrock-runtime.*`).
pub(crate) const SERVICE: &str = "bedrock";

/// What signs every request of one `bedrock` provider.
pub(crate) struct Signer {
    region: String,
    identity: Identity,
}

impl Signer {
    pub fn new(config: &BedrockConfig) -> Signer {
        let credentials = Credentials::new(
            config.access_key_id.expose(),
            config.secret_access_key.expose(),
            config.session_token.as_ref().map(|t| t.expose().clone()),
            None,
            "tollgate-config",
        );
        Signer {
            region: config.region.clone(),
            identity: credentials.into(),
        }
    }

    /// The headers that sign a `POST` of `body` to `url` with `headers`
    /// (which are signed too): `authorization`, `x-amz-date` and, with
    /// temporary credentials, `x-amz-security-token`; values that hold a
    /// credential are marked sensitive. The error says what could not be
    /// signed, never with a credential in it.
    pub fn sign(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        time: SystemTime,
    ) -> Result<Vec<(&'static str, HeaderValue)>, String> {
        let mut settings = SigningSettings::default();
        settings.percent_encoding_mode = PercentEncodingMode::Double;
        let params = v4::SigningParams::builder()
            .identity(&self.identity)
            .region(&self.region)
            .name(SERVICE)
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| format!("could not set up SigV4 signing: {e}"))?
            .into();
        let request = SignableRequest::new(
            "POST",
            url,
            headers.iter().copied(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| format!("could not sign the request to `{url}`: {e}"))?;
        let (instructions, _) = sign(request, &params)
            .map_err(|e| format!("could not sign the request to `{url}`: {e}"))?
            .into_parts();
        let (signed, _) = instructions.into_parts();
        signed
            .into_iter()
            .map(|header| {
                let mut value = HeaderValue::from_str(header.value())
                    .map_err(|_| "a SigV4 header is not a valid header value".to_owned())?;
                value.set_sensitive(header.sensitive() || header.name() == "authorization");
                Ok((header.name(), value))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Secret;

    fn signer(token: Option<&str>) -> Signer {
        Signer::new(&BedrockConfig {
            region: "us-east-1".into(),
            access_key_id: Secret::new("AKIDEXAMPLE".into()),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            session_token: token.map(|t| Secret::new(t.to_owned())),
        })
    }

    fn header<'a>(signed: &'a [(&str, HeaderValue)], name: &str) -> Option<&'a str> {
        signed
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn signs_with_the_session_token_when_set() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_765_000_000);
        let url = "https://bedrock-runtime.us-east-1.amazonaws.com/model/amazon.nova-lite-v1%3A0/converse";
        let plain = signer(None)
            .sign(url, &[("content-type", "application/json")], b"{}", time)
            .unwrap();
        let auth = header(&plain, "authorization").unwrap();
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20251206/us-east-1/bedrock/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, Signature="
            ),
            "{auth}"
        );
        assert_eq!(header(&plain, "x-amz-date"), Some("20251206T054640Z"));
        assert!(header(&plain, "x-amz-security-token").is_none());
        assert!(
            plain
                .iter()
                .all(|(n, v)| *n != "authorization" || v.is_sensitive())
        );

        let temp = signer(Some("FQoGZXIvYXdzEXAMPLE"))
            .sign(url, &[("content-type", "application/json")], b"{}", time)
            .unwrap();
        assert_eq!(
            header(&temp, "x-amz-security-token"),
            Some("FQoGZXIvYXdzEXAMPLE")
        );
        assert!(
            header(&temp, "authorization")
                .unwrap()
                .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,")
        );
        // Nothing that prints leaks the secret.
        let shown = format!("{plain:?}{temp:?}");
        assert!(!shown.contains("EXAMPLEKEY") && !shown.contains("FQoGZXIvYXdz"));
    }

    /// The canonical request of a non-S3 service double-encodes the path:
    /// the signature over `/model/m%3A0/converse` is the one computed for
    /// the canonical path `/model/m%253A0/converse`, which is what AWS
    /// recomputes on its side. Signing the once-encoded path (S3's rule)
    /// gives another signature, which AWS would refuse.
    #[test]
    fn model_ids_are_signed_double_encoded() {
        let time = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_765_000_000);
        let url = "https://bedrock-runtime.us-east-1.amazonaws.com/model/m%3A0/converse";
        let ours = signer(None).sign(url, &[], b"{}", time).unwrap();
        let sign_with = |mode| {
            let s = signer(None);
            let mut settings = SigningSettings::default();
            settings.percent_encoding_mode = mode;
            let params = v4::SigningParams::builder()
                .identity(&s.identity)
                .region("us-east-1")
                .name(SERVICE)
                .time(time)
                .settings(settings)
                .build()
                .unwrap()
                .into();
            let request =
                SignableRequest::new("POST", url, std::iter::empty(), SignableBody::Bytes(b"{}"))
                    .unwrap();
            let (instructions, signature) = sign(request, &params).unwrap().into_parts();
            drop(instructions);
            signature
        };
        let auth = header(&ours, "authorization").unwrap();
        assert!(auth.ends_with(&sign_with(PercentEncodingMode::Double)));
        assert!(!auth.ends_with(&sign_with(PercentEncodingMode::Single)));
    }
}
