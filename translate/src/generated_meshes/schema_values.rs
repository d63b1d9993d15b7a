//! Objects generated from the CRD schemas: the structure, types, enums and
//! bounds come from the schema Pilotfish serves to the API server (which is
//! checked against Istio's own), the leaf values from [`super::value_pools`],
//! chosen by field name so that most objects are plausible and some are not.

use serde_json::{Map, Value, json};

use super::value_pools::{Pools, map_key};
use crate::test_support::Rng;

/// How far an object strays from ordinary values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Temper {
    /// Plausible values, including extreme but valid ones.
    Plain,
    /// Also values validation should refuse, at most a few per object.
    Edgy,
}

pub struct Generator<'s> {
    pub rng: Rng,
    pub temper: Temper,
    pub pools: &'s Pools,
}

impl Generator<'_> {
    fn chance(&mut self, percent: usize) -> bool {
        self.rng.below(100) < percent
    }

    fn edge(&mut self) -> bool {
        self.temper == Temper::Edgy && self.chance(15)
    }

    /// A value for `schema`, found at property `field`, `depth` levels down.
    pub fn value(&mut self, schema: &Value, field: &str, depth: usize) -> Value {
        if let Some(Value::Array(choices)) = schema.get("enum") {
            return if self.edge() || choices.is_empty() {
                json!("NOT_A_VALUE")
            } else {
                self.rng.pick(choices).clone()
            };
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("object") => self.object(schema, field, depth),
            Some("array") => self.array(schema, field, depth),
            Some("string") => {
                let edge = self.edge();
                Value::String(self.pools.string(field, edge, &mut self.rng))
            }
            Some("integer") => {
                let edge = self.edge();
                self.pools.integer(field, schema, edge, &mut self.rng)
            }
            Some("number") => {
                let edge = self.edge();
                self.pools.number(field, edge, &mut self.rng)
            }
            Some("boolean") => Value::Bool(self.chance(50)),
            _ => Value::Null,
        }
    }

    fn array(&mut self, schema: &Value, field: &str, depth: usize) -> Value {
        let Some(items) = schema.get("items") else {
            return json!([]);
        };
        // Mostly short lists; now and then a long one (many destinations,
        // many matches) to stress sizes.
        let len = match self.rng.below(100) {
            0..=2 => 8 + self.rng.below(24),
            3..=20 => 0,
            _ => 1 + self.rng.below(3),
        };
        Value::Array(
            (0..len)
                .map(|_| self.value(items, field, depth + 1))
                .collect(),
        )
    }

    fn object(&mut self, schema: &Value, field: &str, depth: usize) -> Value {
        let mut out = Map::new();
        if let Some(Value::Object(props)) = schema.get("properties") {
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            // Shallow fields are likelier, so objects stay readable while
            // deep corners still get visited across a run.
            let percent = [60, 45, 35, 28, 22, 18][depth.min(5)];
            let exclusive = exclusive_groups(schema);
            for (name, prop) in props {
                if required.contains(&name.as_str()) || self.chance(percent) {
                    out.insert(name.clone(), self.value(prop, name, depth + 1));
                }
            }
            self.shape(props, &mut out, depth);
            // Istio's oneOf groups: keep one field of each group, unless
            // this object is meant to break rules.
            for group in exclusive.into_iter().chain(
                EXCLUSIVE
                    .iter()
                    .map(|g| g.iter().map(|f| f.to_string()).collect()),
            ) {
                let set: Vec<String> = group
                    .into_iter()
                    .filter(|f| out.contains_key(f.as_str()))
                    .collect();
                if set.len() > 1 && !self.edge() {
                    let keep = self.rng.below(set.len());
                    for (i, f) in set.iter().enumerate() {
                        if i != keep {
                            out.remove(f.as_str());
                        }
                    }
                }
            }
        }
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            for _ in 0..self.rng.below(4) {
                let edge = self.edge();
                let key = map_key(field, edge, &mut self.rng);
                let value = self.value(values, field, depth + 1);
                out.insert(key, value);
            }
        }
        Value::Object(out)
    }
}

/// Fields validation requires together with their parent, though the
/// schema leaves them optional.
const ALWAYS: &[&str] = &[
    "number", "address", "host", "name", "sniHosts", "match", "hosts", "servers", "port",
];

/// Groups of which validation wants exactly one field (the first is the
/// likeliest pick: a route rather than a delegate).
const EXACTLY_ONE: &[&[&str]] = &[
    &["route", "redirect", "directResponse", "delegate"],
    &["exact", "prefix", "regex"],
];

/// Groups of which validation wants at least one field.
const AT_LEAST_ONE: &[&[&str]] = &[&["http", "tls", "tcp"]];

/// Groups validation refuses to combine, beyond the schema's oneOf rules.
const EXCLUSIVE: &[&[&str]] = &[
    &["endpoints", "workloadSelector"],
    &["uri", "uriRegexRewrite"],
];

/// Lists validation wants non-empty.
const NON_EMPTY: &[&str] = &["match", "sniHosts", "hosts", "servers", "route"];

impl Generator<'_> {
    /// Bends an object towards what validation accepts, so that most
    /// generated objects reach translation and Envoy.
    fn shape(&mut self, props: &Map<String, Value>, out: &mut Map<String, Value>, depth: usize) {
        for field in ALWAYS {
            // `port` is an object (a port selector) or a bare match number;
            // only the selector is required.
            if let Some(prop) = props.get(*field)
                && !out.contains_key(*field)
                && (*field != "port" || prop.get("type") == Some(&Value::from("object")))
            {
                let v = self.value(prop, field, depth + 1);
                out.insert(field.to_string(), v);
            }
        }
        for group in EXACTLY_ONE {
            if !group.iter().all(|f| props.contains_key(*f)) {
                continue;
            }
            let present: Vec<&str> = group
                .iter()
                .copied()
                .filter(|f| out.contains_key(*f))
                .collect();
            let keep = match present.as_slice() {
                [] => {
                    group[if self.chance(70) {
                        0
                    } else {
                        self.rng.below(group.len())
                    }]
                }
                [one] => one,
                many => many[self.rng.below(many.len())],
            };
            for f in group.iter().filter(|f| **f != keep) {
                out.remove(*f);
            }
            if !out.contains_key(keep) {
                let v = self.value(&props[keep], keep, depth + 1);
                out.insert(keep.to_string(), v);
            }
        }
        for group in AT_LEAST_ONE {
            if group.iter().all(|f| props.contains_key(*f))
                && !group.iter().any(|f| out.contains_key(*f))
            {
                let pick = group[self.rng.below(group.len())];
                let v = self.value(&props[pick], pick, depth + 1);
                out.insert(pick.to_string(), v);
            }
        }
        for field in NON_EMPTY {
            if let Some(Value::Array(items)) = out.get_mut(*field)
                && items.is_empty()
                && let Some(item) = props[*field].get("items")
            {
                let item = item.clone();
                let v = self.value(&item, field, depth + 2);
                if let Some(Value::Array(items)) = out.get_mut(*field) {
                    items.push(v);
                }
            }
        }
    }
}

/// The field sets of the schema's "at most one of" rules (`oneOf` branches
/// that each require one field, alone or under `allOf`).
fn exclusive_groups(schema: &Value) -> Vec<Vec<String>> {
    let mut groups = Vec::new();
    let mut collect = |one_of: &Value| {
        let fields: Vec<String> = one_of
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|branch| branch.get("required")?.as_array()?.first()?.as_str())
            .map(str::to_string)
            .collect();
        if fields.len() > 1 {
            groups.push(fields);
        }
    };
    if let Some(one_of) = schema.get("oneOf") {
        collect(one_of);
    }
    for part in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(one_of) = part.get("oneOf") {
            collect(one_of);
        }
    }
    groups
}
