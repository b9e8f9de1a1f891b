//! Store errors: what went wrong, in domain terms. `api::error` maps them to MLflow codes.

/// The kinds of object a lookup can miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Experiment,
    Run,
    RegisteredModel,
    ModelVersion,
    LoggedModel,
    /// A tag of an experiment, run or logged model (deleting a tag that is not there).
    Tag,
}

/// An error from the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named object does not exist (MLflow: RESOURCE_DOES_NOT_EXIST). `message` is the text
    /// MLflow answers; `entity` says what was missing, for callers that act on it (the operator).
    #[error("{message}")]
    NotFound { entity: Entity, message: String },
    /// A registered model has no alias by that name. MLflow answers INVALID_PARAMETER_VALUE,
    /// not RESOURCE_DOES_NOT_EXIST, so it is a case of its own.
    #[error("Registered model alias {alias} not found.")]
    AliasNotFound { model: String, alias: String },
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
    /// [`crate::store::values::Ownership`]); it must be made in that resource instead.
    /// A promotion policy refuses an alias move or stage change; the message names each
    /// failed rule and what was seen.
    #[error("{0}")]
    PolicyDenied(String),
    #[error("{}", owned_elsewhere_message(.object, .field.as_deref(), .owner))]
    OwnedElsewhere {
        /// What was to be changed, e.g. `registered model 'churn'`.
        object: String,
        /// The owned field (`aliases`, `stage`, …); `None` when the whole object is at stake
        /// (delete).
        field: Option<String>,
        /// Boxed: the owner's four names would make every `Result` of the store large.
        owner: Box<crate::store::values::Owner>,
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
    /// After SQLite's migrations, rows reference rows that are not there (`foreign_key_check`).
    #[error("the migrated SQLite store has {0} broken foreign key references")]
    BrokenReferences(usize),
}

fn owned_elsewhere_message(
    object: &str,
    field: Option<&str>,
    owner: &crate::store::values::Owner,
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
        match &error {
            // Postgres text cannot hold NUL (SQLSTATE 22021). The API refuses NUL before it
            // reaches the store; this keeps any other caller's NUL a client mistake too.
            sqlx::Error::Database(db) if db.code().as_deref() == Some("22021") => Error::Invalid(
                "A value contains a NUL character (\\u0000), which cannot be stored.".into(),
            ),
            _ => Error::Database(error),
        }
    }
}

impl Error {
    /// A missing `entity`, answered with MLflow's `message`.
    pub fn not_found(entity: Entity, message: impl Into<String>) -> Self {
        Error::NotFound {
            entity,
            message: message.into(),
        }
    }

    /// True when the database could not be reached or stayed busy (an outage, a restart, an
    /// exhausted pool): nothing is wrong with the request, and a retry may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Database(error) if is_unavailable(error))
    }
}

fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLITE_BUSY and SQLITE_LOCKED, with their extended codes (low byte).
                let code = db.code().and_then(|code| code.parse::<i32>().ok());
                return matches!(code.map(|code| code & 0xff), Some(5 | 6));
            }
            // Postgres: connection exceptions (class 08), the server shutting down or starting
            // up (57P01-57P03), too many connections (53300).
            db.code().is_some_and(|code| {
                code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
            })
        }
        _ => false,
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
