//! Helpers shared by the integration tests.

use std::path::PathBuf;

use serde_json::Value;

pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value with every object's keys sorted, so snapshots do not depend on whether
/// serde_json's `preserve_order` feature is on in this build.
pub fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<_> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// Pretty JSON of anything serializable, keys sorted.
pub fn pretty<T: serde::Serialize>(t: &T) -> String {
    serde_json::to_string_pretty(&sorted(serde_json::to_value(t).expect("serializable")))
        .expect("serializable")
}
