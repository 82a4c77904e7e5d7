//! OpenAI's strict structured-output dialect: a schema OpenAI guarantees replies to follow
//! only when every object is closed, lists every property in `required` (optional ones
//! made nullable) and uses none of the keywords strict mode refuses.

use serde_json::{Map, Value, json};

/// Keywords strict mode refuses; they are bounds for other servers' constrained decoding
/// (the embedded model keeps them), so they are dropped only here.
const REFUSED: [&str; 3] = ["minLength", "maxLength", "default"];

/// String formats strict mode accepts.
const FORMATS: [&str; 9] = [
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uuid",
];

/// The strict variant of `schema`: objects closed, every property required, the optional
/// ones nullable (a `null` in the reply then stands for an absent field), refused keywords
/// dropped. `None` when the schema cannot be made strict (an open map of any keys).
pub(crate) fn strict_variant(schema: &Value) -> Option<Value> {
    let Value::Object(map) = schema else {
        return Some(schema.clone());
    };
    let mut out = Map::new();
    for (key, value) in map {
        if REFUSED.contains(&key.as_str()) {
            continue;
        }
        if key == "format" && !value.as_str().is_some_and(|f| FORMATS.contains(&f)) {
            continue;
        }
        let value = match key.as_str() {
            "properties" | "$defs" | "definitions" => {
                let Value::Object(children) = value else {
                    return None;
                };
                let mut strict = Map::new();
                for (name, child) in children {
                    strict.insert(name.clone(), strict_variant(child)?);
                }
                Value::Object(strict)
            }
            "items" => strict_variant(value)?,
            "anyOf" | "oneOf" | "allOf" => {
                let Value::Array(options) = value else {
                    return None;
                };
                Value::Array(options.iter().map(strict_variant).collect::<Option<_>>()?)
            }
            _ => value.clone(),
        };
        out.insert(key.clone(), value);
    }
    let is_object = map.get("type") == Some(&json!("object")) || map.contains_key("properties");
    if is_object {
        if map
            .get("additionalProperties")
            .is_some_and(|a| a != &Value::Bool(false))
        {
            return None;
        }
        let Some(Value::Object(props)) = out.get("properties").cloned() else {
            // An object of any keys: strict mode has no way to say it.
            return None;
        };
        let required: Vec<&str> = map
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut strict_props = Map::new();
        for (name, child) in props {
            let child = if required.contains(&name.as_str()) {
                child
            } else {
                nullable(child)
            };
            strict_props.insert(name, child);
        }
        let all: Vec<Value> = strict_props.keys().map(|k| json!(k)).collect();
        out.insert("properties".into(), Value::Object(strict_props));
        out.insert("required".into(), Value::Array(all));
        out.insert("additionalProperties".into(), Value::Bool(false));
    }
    Some(Value::Object(out))
}

/// `schema` admitting `null` as well.
fn nullable(schema: Value) -> Value {
    let Value::Object(mut map) = schema else {
        return schema;
    };
    if let Some(Value::Array(values)) = map.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
    match map.get_mut("type") {
        Some(Value::String(t)) => {
            let t = std::mem::take(t);
            if t != "null" {
                map.insert("type".into(), json!([t, "null"]));
            }
            Value::Object(map)
        }
        Some(Value::Array(types)) => {
            if !types.contains(&json!("null")) {
                types.push(json!("null"));
            }
            Value::Object(map)
        }
        _ => json!({"anyOf": [Value::Object(map), {"type": "null"}]}),
    }
}

/// Whether strict mode accepts this schema as it is: every object closes its properties
/// and requires all of them.
pub(crate) fn strict_compatible(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => {
            if map.get("type") == Some(&json!("object")) || map.contains_key("properties") {
                let props: Vec<&String> = map
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|p| p.keys().collect())
                    .unwrap_or_default();
                let required: Vec<&str> = map
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if map.get("additionalProperties") != Some(&Value::Bool(false))
                    || props.iter().any(|p| !required.contains(&p.as_str()))
                {
                    return false;
                }
            }
            map.values().all(strict_compatible)
        }
        Value::Array(items) => items.iter().all(strict_compatible),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_properties_become_required_and_nullable() {
        let schema = json!({
            "type": "object",
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": 32},
                "kind": {"type": "string", "enum": ["a", "b"]},
                "fallback": {"type": "object", "properties": {"d": {"type": "string"}}, "required": ["d"]},
                "n": {"type": "integer", "format": "uint64", "minimum": 0},
                "tags": {"type": "array", "maxItems": 3, "items": {"type": "string", "maxLength": 9}},
                "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]}
            },
            "required": ["id"]
        });
        let strict = strict_variant(&schema).unwrap();
        assert!(strict_compatible(&strict), "{strict:#}");
        assert_eq!(
            strict["required"],
            json!(["id", "kind", "fallback", "n", "tags", "either"])
        );
        assert_eq!(strict["properties"]["id"], json!({"type": "string"}));
        assert_eq!(
            strict["properties"]["kind"],
            json!({"type": ["string", "null"], "enum": ["a", "b", null]})
        );
        assert_eq!(
            strict["properties"]["fallback"]["type"],
            json!(["object", "null"])
        );
        assert_eq!(
            strict["properties"]["fallback"]["additionalProperties"],
            json!(false)
        );
        assert_eq!(
            strict["properties"]["n"],
            json!({"type": ["integer", "null"], "minimum": 0})
        );
        assert_eq!(strict["properties"]["tags"]["maxItems"], json!(3));
        assert_eq!(
            strict["properties"]["tags"]["items"],
            json!({"type": "string"})
        );
        assert_eq!(
            strict["properties"]["either"]["anyOf"][1],
            json!({"type": "null"})
        );
    }

    #[test]
    fn open_maps_cannot_be_strict() {
        assert!(strict_variant(&json!({"type": "object"})).is_none());
        assert!(
            strict_variant(&json!({"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}))
                .is_none()
        );
    }

    #[test]
    fn strict_mode_only_for_closed_schemas() {
        let closed = json!({"type": "object", "properties": {"a": {"type": "string"}},
            "required": ["a"], "additionalProperties": false});
        assert!(strict_compatible(&closed));
        let open = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        assert!(!strict_compatible(&open));
    }
}
