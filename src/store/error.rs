//! Store errors: what went wrong, in domain terms. `api::error` maps them to MLflow codes.

/// An error from the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named object does not exist (MLflow: RESOURCE_DOES_NOT_EXIST).
    #[error("{0}")]
    NotFound(String),
    /// An object with that identity exists already (MLflow: RESOURCE_ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is not valid for the object in its current state (MLflow: INVALID_PARAMETER_VALUE).
    #[error("{0}")]
    Invalid(String),
    /// A request MLflow answers with BAD_REQUEST (e.g. renaming onto a taken name).
    #[error("{0}")]
    BadRequest(String),
    /// The object is in a state that forbids the operation (MLflow: INVALID_STATE).
    #[error("{0}")]
    InvalidState(String),
    /// The change touches a registry field that a Kubernetes resource owns (see
    /// [`crate::store::registry::Ownership`]); it must be made in that resource instead.
    #[error("{}", owned_elsewhere_message(.object, .field.as_deref(), .owner))]
    OwnedElsewhere {
        /// What was to be changed, e.g. `registered model 'churn'`.
        object: String,
        /// The owned field (`aliases`, `stage`, …); `None` when the whole object is at stake
        /// (delete).
        field: Option<String>,
        /// Boxed: the owner's four names would make every `Result` of the store large.
        owner: Box<crate::store::registry::Owner>,
    },
    /// The backend store URI is not one we support.
    #[error(
        "unsupported backend store URI '{0}': use sqlite:///path/to/file.db or postgresql://user@host/db"
    )]
    UnsupportedUri(String),
    /// The database failed; the source carries the detail.
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// Migrations could not be applied.
    #[error("failed to apply migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

fn owned_elsewhere_message(
    object: &str,
    field: Option<&str>,
    owner: &crate::store::registry::Owner,
) -> String {
    match field {
        Some(field) => {
            format!("{object} field '{field}' is managed by {owner}: change it there (in git)")
        }
        None => format!("{object} is managed by {owner}: delete it there (in git)"),
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Error::Database(error)
    }
}

impl From<crate::store::filter::FilterError> for Error {
    fn from(error: crate::store::filter::FilterError) -> Self {
        Error::Invalid(error.to_string())
    }
}

/// Shorthand for store results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True when a database error is a unique-constraint violation (both backends).
pub fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.is_unique_violation())
}
