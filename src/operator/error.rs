//! The operator's errors. Each variant names the step that failed; its name is the metric
//! label and the Warning event reason. Store failures that a human must fix are not errors
//! here: they become a condition (see `reconcile::Failure`).

use kube::runtime::finalizer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed in a way worth retrying (connection, timeout, database error).
    #[error("failed to reach the metadata store for {object}")]
    StoreUnavailable {
        object: String,
        #[source]
        source: crate::store::Error,
    },
    /// Reading another resource (e.g. the RegisteredModel a ModelVersion names) failed.
    #[error("failed to read {object}")]
    ReadResource {
        object: String,
        #[source]
        source: kube::Error,
    },
    /// Server-side applying an object the resource owns failed.
    #[error("failed to apply {object} owned by {owner}")]
    ApplyOwned {
        object: String,
        owner: String,
        #[source]
        source: kube::Error,
    },
    /// Listing or deleting owned objects that are no longer desired failed.
    #[error("failed to prune {object} owned by {owner}")]
    PruneOwned {
        object: String,
        owner: String,
        #[source]
        source: kube::Error,
    },
    /// The owner has no uid (it was not read from the API server), so nothing can name it as
    /// owner.
    #[error("{owner} has no uid: cannot own objects")]
    OwnerWithoutUid { owner: String },
    /// Releasing a finalizer the kind no longer needs failed.
    #[error("failed to remove the finalizer from {object}")]
    RemoveFinalizer {
        object: String,
        #[source]
        source: kube::Error,
    },
    /// Writing the status subresource failed.
    #[error("failed to patch the status of {object}")]
    PatchStatus {
        object: String,
        #[source]
        source: kube::Error,
    },
    /// The store refuses to apply the deletion policy until something else changes (e.g. the
    /// version is the target of an alias a RegisteredModel declares): the finalizer stays.
    #[error("cannot apply the deletion policy of {object} yet: {message}")]
    CleanupBlocked { object: String, message: String },
    /// Reading the `MLmodel` of a version the operator registered, through the tracking
    /// server, failed in a way worth retrying (unreachable, an error answer).
    #[error("failed to read {mlmodel} through the tracking server at {url}")]
    ReadModelFiles {
        mlmodel: String,
        url: String,
        #[source]
        source: Box<crate::client::download::DownloadError>,
    },
    /// Adding or removing the finalizer failed, or the wrapped reconcile failed.
    #[error("failed to reconcile {object} through its finalizer")]
    Finalizer {
        object: String,
        #[source]
        source: Box<finalizer::Error<Error>>,
    },
}

impl Error {
    /// Whether a human (or another resource) must act before a retry can succeed.
    pub fn waits_on_others(&self) -> bool {
        match self {
            Error::CleanupBlocked { .. } => true,
            Error::Finalizer { source, .. } => matches!(
                source.as_ref(),
                finalizer::Error::CleanupFailed(inner) if inner.waits_on_others()
            ),
            _ => false,
        }
    }

    /// The variant's name: metric label and event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::StoreUnavailable { .. } => "StoreUnavailable",
            Error::ReadResource { .. } => "ReadResource",
            Error::ApplyOwned { .. } => "ApplyOwned",
            Error::PruneOwned { .. } => "PruneOwned",
            Error::OwnerWithoutUid { .. } => "OwnerWithoutUid",
            Error::RemoveFinalizer { .. } => "RemoveFinalizer",
            Error::PatchStatus { .. } => "PatchStatus",
            Error::CleanupBlocked { .. } => "CleanupBlocked",
            Error::ReadModelFiles { .. } => "ReadModelFiles",
            Error::Finalizer { source, .. } => match source.as_ref() {
                finalizer::Error::ApplyFailed(inner) | finalizer::Error::CleanupFailed(inner) => {
                    inner.reason()
                }
                _ => "Finalizer",
            },
        }
    }
}
