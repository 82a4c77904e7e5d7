//! The key a recorded call is found by: a hash of its whole request.

use plan_core::CallKind;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The SHA-256 (hex) of a call of `kind` with `request`, and the request as JSON. Two
/// requests have the same key when they serialise to the same JSON: the same messages,
/// settings, tools and schema (object keys keep their order, which the code that builds a
/// request fixes).
pub fn request_key<Q: Serialize + ?Sized>(
    kind: CallKind,
    request: &Q,
) -> (String, serde_json::Value) {
    let value = serde_json::to_value(request).unwrap_or(serde_json::Value::Null);
    let mut hasher = Sha256::new();
    hasher.update(kind.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(value.to_string().as_bytes());
    let digest = hasher.finalize();
    let key = digest.iter().map(|b| format!("{b:02x}")).collect();
    (key, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_request_has_the_same_key_and_a_different_one_another() {
        let a = request_key(CallKind::Model, &serde_json::json!({"m": "hi", "t": 0}));
        let b = request_key(CallKind::Model, &serde_json::json!({"m": "hi", "t": 0}));
        let c = request_key(CallKind::Model, &serde_json::json!({"m": "hi!", "t": 0}));
        let d = request_key(CallKind::Tool, &serde_json::json!({"m": "hi", "t": 0}));
        assert_eq!(a.0, b.0);
        assert_ne!(a.0, c.0);
        assert_ne!(a.0, d.0, "the kind is part of the key");
        assert_eq!(a.0.len(), 64);
    }
}
