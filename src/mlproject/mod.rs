//! MLflow Projects: reading an `MLproject`, turning `-P` parameters into the entry point's
//! command exactly as `mlflow run` does, and `ferroflow run` (the local runner, and the main
//! container of a ProjectRun Pod).

use std::path::PathBuf;

pub mod archive;
pub mod init;
pub mod kubernetes;
pub mod parameters;
pub mod python;
pub mod run;
pub mod spec;
pub mod yaml;

pub use parameters::{Resolved, parse_assignments};
pub use spec::{
    DockerEnvironment, DockerVariable, EntryPoint, Environment, Parameter, ParameterType, Project,
};

/// Why a project cannot be run (before or after its run was created).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid YAML", .path.display())]
    Yaml {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("project configuration (MLproject file) is invalid: {0}")]
    InvalidProject(String),
    #[error(
        "could not find '{name}' among the entry points [{declared}] or run it as a script (.py or .sh)"
    )]
    UnknownEntryPoint { name: String, declared: String },
    #[error("no value given for missing parameters of entry point '{entry_point}': {names}")]
    MissingParameters { entry_point: String, names: String },
    #[error("parameter '{name}' is of type {kind}, but got '{value}'")]
    WrongType {
        name: String,
        kind: String,
        value: String,
    },
    #[error("got value '{value}' for parameter '{name}', but no such file or folder was found")]
    PathNotFound { name: String, value: String },
    #[error(
        "parameter '{name}' is a path at '{value}': ferroflow downloads runs:/, models:/ and mlflow-artifacts: URIs only"
    )]
    UnsupportedDownload { name: String, value: String },
    #[error("the command of entry point '{entry_point}' cannot be filled in: {reason}")]
    Command {
        entry_point: String,
        reason: python::FormatError,
    },
    #[error("'{0}' was not downloaded")]
    NotDownloaded(String),
    #[error("{0}")]
    Usage(String),
}
