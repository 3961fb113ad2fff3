//! The Google side of provider config: a `vertex` provider's project,
//! region and service-account credentials file, read and checked when the
//! config is loaded, so `config check` catches a missing file or a broken
//! key before the first request does. The private key never leaves the
//! [`ServiceAccount`]: its `Debug` prints `*****`, and no error quotes it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::signature::RsaKeyPair;
use base64::Engine as _;
use serde::Deserialize;

/// What a `vertex` provider needs besides its URL.
#[derive(Debug, Clone)]
pub struct VertexConfig {
    pub project: String,
    pub region: String,
    pub credentials: Arc<ServiceAccount>,
}

/// A Google service account, from its JSON key file.
pub struct ServiceAccount {
    pub client_email: String,
    /// Where the signed JWT is exchanged for an access token.
    pub token_uri: String,
    /// Sent as the JWT's `kid`, so Google picks the right public key.
    pub private_key_id: Option<String>,
    key: RsaKeyPair,
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("key", &"*****")
            .finish()
    }
}

#[derive(Deserialize)]
struct RawServiceAccount {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key: Option<String>,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

impl ServiceAccount {
    /// Reads and parses `path`. The error is a message for `config check`;
    /// it names the file and the field, never the key.
    pub fn load(path: &Path) -> Result<ServiceAccount, String> {
        let text = std::fs::read(path)
            .map_err(|e| format!("cannot read the credentials file `{}`: {e}", path.display()))?;
        ServiceAccount::parse(&text)
            .map_err(|e| format!("the credentials file `{}` {e}", path.display()))
    }

    /// A service-account key file's JSON.
    pub fn parse(json: &[u8]) -> Result<ServiceAccount, String> {
        // serde's message could quote a value, and one of them is the key.
        let raw: RawServiceAccount = serde_json::from_slice(json).map_err(|_| {
            "is not a service-account JSON key file (download one under IAM > Service accounts > Keys)"
                .to_owned()
        })?;
        if let Some(kind) = raw.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(format!(
                "has `type` `{}`; only `service_account` keys can sign their own tokens",
                crate::types::clip(kind)
            ));
        }
        let missing = |field: &str| format!("has no `{field}`");
        let client_email = raw
            .client_email
            .filter(|e| !e.is_empty())
            .ok_or_else(|| missing("client_email"))?;
        let token_uri = raw
            .token_uri
            .filter(|u| !u.is_empty())
            .ok_or_else(|| missing("token_uri"))?;
        if !(token_uri.starts_with("https://") || token_uri.starts_with("http://")) {
            return Err("has a `token_uri` that is not an `https://` URL".to_owned());
        }
        let pem = raw.private_key.ok_or_else(|| missing("private_key"))?;
        let der = pkcs8_der(&pem)?;
        let key = RsaKeyPair::from_pkcs8(&der).map_err(|_| {
            "has a `private_key` that is not an RSA private key in PKCS#8 PEM".to_owned()
        })?;
        Ok(ServiceAccount {
            client_email,
            token_uri,
            private_key_id: raw.private_key_id.filter(|k| !k.is_empty()),
            key,
        })
    }

    /// The key that signs the JWT grant.
    pub fn key(&self) -> &RsaKeyPair {
        &self.key
    }
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` PEM block.
fn pkcs8_der(pem: &str) -> Result<Vec<u8>, String> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let bad = || {
        "has a `private_key` that is not a PKCS#8 PEM block (`-----BEGIN PRIVATE KEY-----`)"
            .to_owned()
    };
    let start = pem.find(BEGIN).ok_or_else(bad)? + BEGIN.len();
    let end = pem[start..].find(END).ok_or_else(bad)? + start;
    let body: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| bad())
}

/// A Google Cloud region as it appears in host names (`us-east5`,
/// `europe-west4`) or `global`.
pub(crate) fn valid_region(region: &str) -> bool {
    !region.is_empty()
        && region.len() <= 40
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A Google Cloud project id: lowercase letters, digits and hyphens (and
/// the `domain:` prefix of old ones).
pub(crate) fn valid_project(project: &str) -> bool {
    !project.is_empty()
        && project.len() <= 100
        && project
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_file_is_named_without_its_key() {
        let secret =
            "-----BEGIN PRIVATE KEY-----\nTOPSECRETbutnotbase64!!\n-----END PRIVATE KEY-----\n";
        let json = serde_json::json!({"type": "service_account", "client_email": "a@b.iam.gserviceaccount.com",
            "private_key": secret, "token_uri": "https://oauth2.googleapis.com/token"});
        let err = ServiceAccount::parse(json.to_string().as_bytes()).unwrap_err();
        assert!(err.contains("private_key"), "{err}");
        assert!(!err.contains("TOPSECRET"), "{err}");
        let err = ServiceAccount::parse(b"{\"private_key\": 12").unwrap_err();
        assert!(err.contains("service-account"), "{err}");
        let no_email = serde_json::json!({"private_key": secret, "token_uri": "https://x"});
        assert!(
            ServiceAccount::parse(no_email.to_string().as_bytes())
                .unwrap_err()
                .contains("client_email")
        );
        assert!(valid_region("us-east5") && valid_region("global"));
        assert!(!valid_region("us east") && !valid_region("evil.com/x"));
    }
}
