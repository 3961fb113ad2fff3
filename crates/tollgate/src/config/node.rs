//! A schema-free, position-marked reading of the YAML document, used only
//! after serde has rejected it: to name the key path (`policies[2].config`)
//! of the error serde reported by line and column, and to list every
//! unknown key rather than serde's first.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use super::raw::{Scalar, keys};

#[derive(Debug)]
pub(crate) enum Node {
    Map(Vec<(Spanned<Scalar>, Spanned<Node>)>),
    Seq(Vec<Spanned<Node>>),
    Leaf,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_i128<E: de::Error>(self, _: i128) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_u128<E: de::Error>(self, _: u128) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Node::Map(entries))
    }
}

type Pos = (u64, u64);

fn pos_of<T>(spanned: &Spanned<T>) -> Pos {
    (spanned.referenced.line(), spanned.referenced.column())
}

/// The key path of the deepest node at or before `pos`, e.g.
/// `providers[0].kind`; empty at the top level.
pub(crate) fn path_at(root: &Spanned<Node>, pos: Pos) -> String {
    let mut path = String::new();
    let mut node = root;
    loop {
        match &node.value {
            Node::Map(entries) => {
                let Some((key, value)) = entries.iter().rev().find(|(key, _)| pos_of(key) <= pos)
                else {
                    return path;
                };
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key.value.to_string());
                if pos_of(value) > pos {
                    return path;
                }
                node = value;
            }
            Node::Seq(items) => {
                let Some((i, item)) = items
                    .iter()
                    .enumerate()
                    .rev()
                    .find(|(_, item)| pos_of(item) <= pos)
                else {
                    return path;
                };
                path.push_str(&format!("[{i}]"));
                node = item;
            }
            Node::Leaf => return path,
        }
    }
}

#[derive(Clone, Copy)]
enum Shape {
    Top,
    Provider,
    Model,
    Target,
    Price,
    Policy,
    PolicyConfig,
    Team,
    Defaults,
    Alerts,
    Routing,
    Telemetry,
    Cache,
    Entra,
}

impl Shape {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Shape::Top => keys::TOP,
            Shape::Provider => keys::PROVIDER,
            Shape::Model => keys::MODEL,
            Shape::Target => keys::TARGET,
            Shape::Price => keys::PRICE,
            Shape::Policy => keys::POLICY,
            Shape::PolicyConfig => keys::POLICY_CONFIG,
            Shape::Team => keys::TEAM,
            Shape::Defaults => keys::DEFAULTS,
            Shape::Alerts => keys::ALERTS,
            Shape::Routing => keys::ROUTING,
            Shape::Telemetry => keys::TELEMETRY,
            Shape::Cache => keys::CACHE,
            Shape::Entra => keys::ENTRA,
        }
    }

    /// What the value under `key` is: a mapping of some shape, or a list of them.
    fn child(self, key: &str) -> Option<(Shape, bool)> {
        Some(match (self, key) {
            (Shape::Top, "providers") => (Shape::Provider, true),
            (Shape::Top, "models") => (Shape::Model, true),
            (Shape::Top, "policies") => (Shape::Policy, true),
            (Shape::Top, "teams") => (Shape::Team, true),
            (Shape::Top, "defaults") => (Shape::Defaults, false),
            (Shape::Top, "alerts") => (Shape::Alerts, false),
            (Shape::Top, "routing") => (Shape::Routing, false),
            (Shape::Top, "telemetry") => (Shape::Telemetry, false),
            (Shape::Top, "cache") => (Shape::Cache, false),
            (Shape::Model, "targets") => (Shape::Target, true),
            (Shape::Model, "price") => (Shape::Price, false),
            (Shape::Policy, "config") => (Shape::PolicyConfig, false),
            (Shape::Provider, "entra") => (Shape::Entra, false),
            _ => return None,
        })
    }
}

fn line_of<T>(spanned: &Spanned<T>) -> Option<usize> {
    usize::try_from(spanned.referenced.line())
        .ok()
        .filter(|&line| line > 0)
}

/// Every key the config schema does not know, as `(line, message)` in file
/// order, e.g. ``providers[0]: unknown key `knd`; expected one of …``.
pub(crate) fn unknown_keys(root: &Spanned<Node>) -> Vec<(Option<usize>, String)> {
    let mut found = Vec::new();
    walk(root, Shape::Top, "", &mut found);
    found.sort_by_key(|(line, _)| *line);
    found
}

fn walk(node: &Spanned<Node>, shape: Shape, path: &str, found: &mut Vec<(Option<usize>, String)>) {
    let Node::Map(entries) = &node.value else {
        return;
    };
    for (key, value) in entries {
        let name = key.value.to_string();
        if !shape.keys().contains(&name.as_str()) {
            let message = match path {
                "" => format!(
                    "unknown top-level key `{name}`; expected one of {}",
                    shape.keys().join(", ")
                ),
                _ => format!(
                    "{path}: unknown key `{name}`; expected one of {}",
                    shape.keys().join(", ")
                ),
            };
            found.push((line_of(key), message));
            continue;
        }
        let child_path = match path {
            "" => name.clone(),
            _ => format!("{path}.{name}"),
        };
        match (shape.child(&name), &value.value) {
            (Some((child, true)), Node::Seq(items)) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, child, &format!("{child_path}[{i}]"), found);
                }
            }
            (Some((child, false)), Node::Map(_)) => walk(value, child, &child_path, found),
            _ => {}
        }
    }
}

/// Reads `text` as a position-marked tree; `None` when it is not even
/// well-formed YAML.
pub(crate) fn parse(text: &str) -> Option<Spanned<Node>> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<Spanned<Node>>(text, options).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str, line: u64, column: u64) -> String {
        path_at(&parse(text).unwrap(), (line, column))
    }

    #[test]
    fn finds_block_and_flow_paths() {
        let text = "listen: x\nproviders:\n  - name: a\n    kind: b\n  - name: c\n    extra: { k: 1, z: [1, 2] }\n";
        assert_eq!(path(text, 1, 1), "listen");
        assert_eq!(path(text, 1, 9), "listen");
        assert_eq!(path(text, 4, 5), "providers[0].kind");
        assert_eq!(path(text, 4, 11), "providers[0].kind");
        assert_eq!(path(text, 6, 5), "providers[1].extra");
        assert_eq!(path(text, 6, 17), "providers[1].extra.k");
        assert_eq!(path(text, 6, 20), "providers[1].extra.z");
        assert_eq!(path(text, 6, 27), "providers[1].extra.z[1]");
    }
}
