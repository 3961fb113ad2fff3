//! `GET /admin/openapi.json`: the document in `openapi.json`, with the
//! parts only the running config knows filled in, so that what it calls
//! valid is exactly what this gateway accepts. Today that is the policy
//! names a team or key may reference: schemas mark such lists with
//! `x-tollgate-policy-name` and get the configured names as an `enum`.

use std::sync::LazyLock;

use axum::Json;
use serde_json::Value;

use super::extract::Admin;

/// The OpenAPI 3.1 description of every admin route.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

const POLICY_NAME_MARK: &str = "x-tollgate-policy-name";

/// Parsed once; a test holds it to be valid JSON.
static DOCUMENT: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(OPENAPI_JSON).unwrap_or(Value::Null));

pub(super) async fn serve(Admin(state): Admin) -> Json<Value> {
    let config = state.runtime.load().config.clone();
    let names: Vec<&str> = config.policies.iter().map(|p| p.name.as_str()).collect();
    Json(document(&names))
}

/// The document for a config defining the policies `names`.
pub(super) fn document(names: &[&str]) -> Value {
    let mut doc = DOCUMENT.clone();
    pin_policy_names(&mut doc, names);
    doc
}

fn pin_policy_names(v: &mut Value, names: &[&str]) {
    match v {
        Value::Object(map) => {
            let marked = map
                .get("items")
                .and_then(|i| i.get(POLICY_NAME_MARK))
                .is_some();
            if marked {
                let mut items = serde_json::Map::new();
                items.insert("type".into(), "string".into());
                if names.is_empty() {
                    // No policy exists, so no name is valid: only `[]` is.
                    map.insert("maxItems".into(), 0.into());
                } else {
                    items.insert("enum".into(), names.iter().copied().collect());
                }
                map.insert("items".into(), Value::Object(items));
            }
            map.values_mut().for_each(|c| pin_policy_names(c, names));
        }
        Value::Array(items) => items.iter_mut().for_each(|c| pin_policy_names(c, names)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_items(doc: &Value, schema: &str) -> Value {
        doc["components"]["schemas"][schema]["properties"]["policies"].clone()
    }

    #[test]
    fn policy_lists_take_the_configured_names_and_only_them() {
        let doc = document(&["cap", "rate"]);
        for schema in ["TeamCreate", "TeamPatch", "KeyCreate"] {
            let p = policy_items(&doc, schema);
            assert_eq!(
                p["items"]["enum"],
                serde_json::json!(["cap", "rate"]),
                "{schema}"
            );
            assert!(p["items"].get(POLICY_NAME_MARK).is_none());
        }
        let none = document(&[]);
        assert_eq!(policy_items(&none, "KeyCreate")["maxItems"], 0);
        assert!(!none.to_string().contains(POLICY_NAME_MARK));
    }
}
