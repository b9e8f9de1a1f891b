//! Model registry (work in progress, issue #4).

/// The Kubernetes resource that owns a registry row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}/{} (uid {})",
            self.kind, self.namespace, self.name, self.uid
        )
    }
}
