//! The cache key: a SHA-256 of the team, the ingress, the model and the
//! request body in a normal form, so that key order and insignificant
//! whitespace do not split one question into several entries, while every
//! other difference does (it is an exact-match cache).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Fields that only say how the answer is delivered: a stored answer is
/// served streamed or not, whichever way it was stored.
const DELIVERY_FIELDS: [&str; 2] = ["stream", "stream_options"];

/// A cache key (the digest; never the prompt itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 32]);

impl Key {
    /// `team`: whose answers these are (one team never sees another's);
    /// `ingress`: the API the request came in on; `body`: the canonical
    /// request as it is forwarded, before the gateway adds anything.
    pub fn new(team: &str, ingress: &str, model: &str, body: &Map<String, Value>) -> Key {
        let mut normal = Vec::with_capacity(256);
        write_object(body, &mut normal, true);
        let mut h = Sha256::new();
        // Lengths first, so no two (team, ingress, model) tuples share a prefix.
        for part in [
            b"tollgate-cache-v1".as_slice(),
            team.as_bytes(),
            ingress.as_bytes(),
            model.as_bytes(),
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(&normal);
        Key(h.finalize().into())
    }

    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// JSON with object keys sorted and no whitespace. Strings and numbers are
/// written as serde_json writes them (one spelling per value).
fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => write_object(map, out, false),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        // Scalars cannot fail to serialize into a Vec.
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

fn write_object(map: &Map<String, Value>, out: &mut Vec<u8>, top: bool) {
    let mut keys: Vec<&String> = map
        .keys()
        .filter(|k| !(top && DELIVERY_FIELDS.contains(&k.as_str())))
        .collect();
    keys.sort();
    out.push(b'{');
    for (i, k) in keys.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, k);
        out.push(b':');
        if let Some(v) = map.get(k) {
            write(v, out);
        }
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(team: &str, v: Value) -> Key {
        let Value::Object(m) = v else { unreachable!() };
        Key::new(team, "chat", "m", &m)
    }

    #[test]
    fn key_order_whitespace_and_delivery_do_not_split_the_key() {
        let a: Value = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            "{ \"temperature\" : 0,\n \"messages\": [ {\"content\":\"hi\", \"role\":\"user\"} ],\"model\":\"m\", \"stream\": true, \"stream_options\": {\"include_usage\": true} }",
        )
        .unwrap();
        assert_eq!(key("t", a.clone()), key("t", b));
        // Everything else splits it: values, nested `stream`, the team.
        let c = json!({"model":"m","messages":[{"role":"user","content":"hi!"}],"temperature":0});
        assert_ne!(key("t", a.clone()), key("t", c));
        let d = json!({"model":"m","messages":[{"role":"user","content":"hi","stream":true}],"temperature":0});
        assert_ne!(key("t", a.clone()), key("t", d));
        let e = json!({"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5});
        assert_ne!(key("t", a.clone()), key("t", e));
        assert_ne!(key("t", a.clone()), key("u", a.clone()));
        let Value::Object(m) = a else { unreachable!() };
        assert_ne!(
            Key::new("t", "chat", "m", &m),
            Key::new("t", "messages", "m", &m)
        );
        assert_ne!(
            Key::new("t", "chat", "m", &m),
            Key::new("t", "chat", "n", &m)
        );
        // No ambiguity from where one part ends.
        assert_ne!(Key::new("ab", "c", "m", &m), Key::new("a", "bc", "m", &m));
    }
}
