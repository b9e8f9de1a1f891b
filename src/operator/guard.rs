//! [`Guarded`]: kube's `DeserializeGuard`, with an error that names the field. kube's guard
//! decodes through `serde_value`, whose messages ("Unknown variant Prod. Expected one of …")
//! lose where in the object the bad value sits; an `InvalidSpec` event must say
//! `spec.stage`, or the user has to guess which field of the manifest to fix.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::PartialObjectMeta;
use kube::core::error_boundary::InvalidObject;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A watched `K`, or the metadata of an object our types cannot read and why: one unreadable
/// object is reported on itself instead of failing the watch of its whole kind.
#[derive(Debug, Clone)]
pub struct Guarded<K>(pub Result<K, InvalidObject>);

impl<'de, K: DeserializeOwned + Resource> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        // The path-tracking decode runs only for the rare object that fails the plain one.
        if let Ok(obj) = K::deserialize(&value) {
            return Ok(Guarded(Ok(obj)));
        }
        let error = match serde_path_to_error::deserialize::<_, K>(&value) {
            Err(error) => format!("{}: {}", error.path(), error.inner()),
            Ok(_) => "the object does not match its schema".to_owned(),
        };
        let PartialObjectMeta { metadata, .. } =
            PartialObjectMeta::<K>::deserialize(&value).map_err(serde::de::Error::custom)?;
        Ok(Guarded(Err(InvalidObject { error, metadata })))
    }
}

impl<K: Resource> Resource for Guarded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        self.0
            .as_ref()
            .map_or_else(|invalid| &invalid.metadata, K::meta)
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0
            .as_mut()
            .map_or_else(|invalid| &mut invalid.metadata, K::meta_mut)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::Guarded;
    use crate::crd::ModelVersion;

    fn decode(spec: serde_json::Value) -> Guarded<ModelVersion> {
        serde_json::from_value(json!({
            "apiVersion": "ferroflow.dev/v1alpha1",
            "kind": "ModelVersion",
            "metadata": {"name": "churn-v2", "namespace": "ml"},
            "spec": spec,
        }))
        .expect("a guard decodes any object with metadata")
    }

    #[test]
    fn an_unreadable_object_names_the_field_and_keeps_its_metadata() {
        let guarded = decode(json!({"modelRef": {"name": "churn"}, "version": 2, "stage": "Prod"}));
        let invalid = guarded.0.expect_err("Prod is no stage");
        assert!(
            invalid
                .error
                .starts_with("spec.stage: unknown variant `Prod`"),
            "{}",
            invalid.error
        );
        assert_eq!(invalid.metadata.name.as_deref(), Some("churn-v2"));

        let guarded = decode(json!({"modelRef": {"name": "churn"}, "version": "two"}));
        let error = guarded.0.expect_err("a string is no version").error;
        assert!(
            error.starts_with("spec.version: invalid type: string \"two\""),
            "{error}"
        );
    }

    #[test]
    fn a_readable_object_decodes() {
        let guarded = decode(json!({"modelRef": {"name": "churn"}, "version": 2}));
        assert_eq!(guarded.0.expect("valid").spec.version, Some(2));
    }
}
