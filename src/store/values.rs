//! Value types that several store modules share. They live here, importing nothing of the
//! store, so that the modules using them do not import each other in a circle.

use std::fmt;

/// One metric point.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    pub model_id: Option<String>,
    pub dataset_name: Option<String>,
    pub dataset_digest: Option<String>,
    /// Filled in where MLflow reports it (bulk history).
    pub run_id: Option<String>,
}

impl Metric {
    pub fn new(key: impl Into<String>, value: f64, timestamp: i64, step: i64) -> Self {
        Self {
            key: key.into(),
            value,
            timestamp,
            step,
            model_id: None,
            dataset_name: None,
            dataset_digest: None,
            run_id: None,
        }
    }
}

/// A model a run produced, with the step it was logged at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOutput {
    pub model_id: String,
    pub step: i64,
}

/// The Kubernetes resource that declares a registry row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    /// `namespace/Kind/name`: the resource as the promotion history and the registry's
    /// "who" columns name it.
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{} (uid {})",
            self.kind, self.namespace, self.name, self.uid
        )
    }
}
