//! Helpers for the operator's unit tests.
//!
//! Resources are written as YAML snippets, the way users write them, and read with
//! [`from_yaml`]; a test reads like the manifest it is about. Builders are tested against
//! whole expected objects (compare `serde_json::to_value(&built)` with a `json!` of the entire
//! object), not field by field: a field the builder adds or drops by mistake then fails the
//! test instead of slipping past the fields that were checked.

use serde::de::DeserializeOwned;

/// Reads a resource (or any Kubernetes object) from a YAML snippet. Panics with serde's
/// message and path when the snippet does not fit the type: a broken fixture is a test bug.
pub fn from_yaml<K: DeserializeOwned>(yaml: &str) -> K {
    let deserializer = serde_yaml::Deserializer::from_str(yaml);
    match serde_path_to_error::deserialize(deserializer) {
        Ok(object) => object,
        Err(error) => panic!(
            "fixture does not fit {}: {error}",
            std::any::type_name::<K>()
        ),
    }
}
