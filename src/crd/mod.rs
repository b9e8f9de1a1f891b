//! What users write: the custom resources of group `ferroflow.dev`, version `v1alpha1`, with
//! their schemas, CEL rules and `kubectl explain` docs. Types and pure helpers only: nothing
//! here talks to a cluster or the store.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod argocd;
pub mod condition;
pub mod experiment;
pub mod model_deployment;
pub mod model_version;
pub mod project_run;
pub mod promotion_policy;
pub mod registered_model;

pub use condition::{LastFailure, Outcome, Progress, Reason, ReconcileState};
pub use experiment::{Experiment, ExperimentSpec, ExperimentStatus};
pub use model_deployment::{
    ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus, TrafficLeg,
};
pub use model_version::{ModelVersion, ModelVersionSpec, ModelVersionStatus, Stage};
pub use project_run::{Phase, ProjectRun, ProjectRunSpec, ProjectRunStatus};
pub use promotion_policy::{PromotionPolicy, PromotionPolicySpec, PromotionPolicyStatus};
pub use registered_model::{RegisteredModel, RegisteredModelSpec, RegisteredModelStatus};

pub const GROUP: &str = "ferroflow.dev";
pub const VERSION: &str = "v1alpha1";
/// `kubectl get ferroflow` lists every kind.
pub const CATEGORY: &str = "ferroflow";

/// What happens in the store when the resource is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the store rows and release them: the REST API may change them again.
    #[default]
    Retain,
    /// Delete the store rows the way MLflow does (experiments are soft-deleted and can be
    /// restored).
    Delete,
}

/// Every CRD, in the order `ferroflow crd` prints them.
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        Experiment::crd(),
        RegisteredModel::crd(),
        ModelVersion::crd(),
        ModelDeployment::crd(),
        ProjectRun::crd(),
        PromotionPolicy::crd(),
    ];
    for version in crds.iter_mut().flat_map(|crd| crd.spec.versions.iter_mut()) {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|schema| schema.open_api_v3_schema.as_mut())
        {
            reflow_descriptions(schema);
        }
    }
    crds
}

/// Doc comments are wrapped at 100 columns and `kubectl explain` wraps again, which leaves
/// ragged breaks: join each paragraph's lines into one (blank lines and list items stay).
fn reflow_descriptions(schema: &mut JSONSchemaProps) {
    if let Some(description) = &mut schema.description {
        *description = reflow(description);
    }
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|properties| properties.values_mut())
        .chain(match &mut schema.items {
            Some(JSONSchemaPropsOrArray::Schema(items)) => std::slice::from_mut(&mut **items),
            Some(JSONSchemaPropsOrArray::Schemas(items)) => items.as_mut_slice(),
            None => &mut [],
        })
        .chain(match &mut schema.additional_properties {
            Some(JSONSchemaPropsOrBool::Schema(values)) => std::slice::from_mut(&mut **values),
            _ => &mut [],
        })
        .chain(schema.all_of.iter_mut().flatten())
        .chain(schema.any_of.iter_mut().flatten())
        .chain(schema.one_of.iter_mut().flatten())
        .chain(schema.not.as_deref_mut());
    for child in children {
        reflow_descriptions(child);
    }
}

fn reflow(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = line.trim_end();
        let starts_block = line.is_empty()
            || line.starts_with("- ")
            || line.starts_with("* ")
            || out.is_empty()
            || out.ends_with('\n');
        if !out.is_empty() {
            out.push(if starts_block { '\n' } else { ' ' });
        }
        out.push_str(line);
    }
    out
}

/// The CRDs as one multi-document YAML stream.
pub fn to_yaml(crds: &[CustomResourceDefinition]) -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(crd)?);
    }
    Ok(out)
}

/// The file name a CRD is written to under `crds/`: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_namespaced_with_status_and_category() {
        for crd in all() {
            let name = crd.metadata.name.clone().unwrap();
            assert_eq!(crd.spec.group, GROUP, "{name}");
            assert_eq!(crd.spec.scope, "Namespaced", "{name}");
            let categories = crd.spec.names.categories.clone().unwrap_or_default();
            assert_eq!(categories, vec![CATEGORY.to_owned()], "{name}");
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, VERSION);
            let subresources = version.subresources.as_ref().unwrap();
            assert!(
                subresources.status.is_some(),
                "{name} has a status subresource"
            );
            let columns = version.additional_printer_columns.as_ref().unwrap();
            assert!(
                columns.iter().any(|c| c.name == "READY"),
                "{name} shows READY"
            );
        }
    }

    #[test]
    fn descriptions_are_one_line_per_paragraph() {
        assert_eq!(
            reflow("Joins these\nlines.\n\nKeeps paragraphs\nand\n- list\n- items"),
            "Joins these lines.\n\nKeeps paragraphs and\n- list\n- items"
        );
        let yaml = to_yaml(&all()).unwrap();
        assert!(yaml.contains("one Deployment per leg with replicas in proportion"));
    }

    #[test]
    fn yaml_holds_one_document_per_kind() {
        let yaml = to_yaml(&all()).unwrap();
        assert_eq!(yaml.matches("\n---\n").count() + 1, all().len());
        assert!(yaml.contains("x-kubernetes-validations"));
    }
}
