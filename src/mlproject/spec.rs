//! Reading a project folder the way MLflow's `mlflow/projects/_project_spec.py` does: the
//! `MLproject` file (any capitalisation), its entry points with typed parameters, and the one
//! environment it names (`docker_env`, `python_env` or `conda_env`, else a `python_env.yaml` or
//! `conda.yaml` beside it).

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::Error;
use super::python::{shell_quote, yaml_scalar_str};
use super::yaml::{self, RawDefaults, pyyaml_plain_scalar_str};

/// The file MLflow looks for, compared case-insensitively.
const MLPROJECT_FILE_NAME: &str = "mlproject";
const DEFAULT_PYTHON_ENV_FILE: &str = "python_env.yaml";
const DEFAULT_CONDA_FILE: &str = "conda.yaml";
const ENVIRONMENT_FIELDS: [&str; 3] = ["conda_env", "docker_env", "python_env"];

/// A loaded project.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub name: Option<String>,
    /// In the file's order.
    pub entry_points: Vec<EntryPoint>,
    pub environment: Environment,
}

/// Where MLflow would run the project's commands.
#[derive(Debug, Clone, PartialEq)]
pub enum Environment {
    /// Nothing named: the current Python.
    Current,
    /// A `python_env` file (MLflow builds a virtualenv from it).
    Python(PathBuf),
    /// A conda environment file.
    Conda(PathBuf),
    /// A Docker image, with extra mounts and variables.
    Docker(DockerEnvironment),
}

/// `docker_env` of an MLproject.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerEnvironment {
    pub image: String,
    /// `host:container[:mode]` entries, as `docker run -v` takes them.
    pub volumes: Vec<String>,
    pub environment: Vec<DockerVariable>,
}

/// One `docker_env.environment` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerVariable {
    /// `NAME`: copied from the environment `mlflow run` runs in.
    Copy(String),
    /// `[NAME, value]`: set to this value.
    Set(String, String),
}

/// One entry point: a shell command template and the parameters it declares.
#[derive(Debug, Clone, PartialEq)]
pub struct EntryPoint {
    pub name: String,
    /// In the file's order (MLflow downloads `path` parameter number *i* into `param_i`).
    pub parameters: Vec<Parameter>,
    pub command: String,
}

/// A declared parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub kind: ParameterType,
    /// `str()` of the YAML default; `None` makes the parameter required.
    pub default: Option<String>,
}

/// A parameter's `type`. MLflow itself only interprets `path` and `uri`; ferroflow also refuses
/// values `float` and `int` cannot hold. Other names pass values through, as in MLflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParameterType {
    String,
    Float,
    Int,
    Path,
    Uri,
    Other(String),
}

impl ParameterType {
    fn parse(name: &str) -> Self {
        match name {
            "string" => Self::String,
            "float" => Self::Float,
            "int" => Self::Int,
            "path" => Self::Path,
            "uri" => Self::Uri,
            other => Self::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::String => "string",
            Self::Float => "float",
            Self::Int => "int",
            Self::Path => "path",
            Self::Uri => "uri",
            Self::Other(name) => name,
        }
    }
}

impl Project {
    /// Loads the project in `directory`; without an MLproject file it has no entry points and
    /// runs `.py`/`.sh` files by name.
    pub fn load(directory: &Path) -> Result<Self, Error> {
        let entries = std::fs::read_dir(directory).map_err(|source| Error::Io {
            path: directory.to_owned(),
            source,
        })?;
        let mut mlproject = None;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                path: directory.to_owned(),
                source,
            })?;
            if entry.file_name().to_string_lossy().to_lowercase() == MLPROJECT_FILE_NAME {
                mlproject = Some(entry.path());
                break;
            }
        }
        let mut raw_defaults = RawDefaults::new();
        let document = match &mlproject {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                let value: Value = serde_yaml::from_str(&text).map_err(|source| Error::Yaml {
                    path: path.clone(),
                    source,
                })?;
                if only_scalar_defaults(&value) {
                    raw_defaults = yaml::raw_defaults(&text);
                }
                match value {
                    Value::Mapping(mapping) => mapping,
                    Value::Null => Mapping::new(),
                    _ => return Err(invalid("the file must be a mapping")),
                }
            }
            None => Mapping::new(),
        };
        Self::from_mapping(directory, &document, &raw_defaults)
    }

    fn from_mapping(
        directory: &Path,
        document: &Mapping,
        raw_defaults: &RawDefaults,
    ) -> Result<Self, Error> {
        let named: Vec<&str> = ENVIRONMENT_FIELDS
            .into_iter()
            .filter(|field| document.contains_key(*field))
            .collect();
        if named.len() > 1 {
            return Err(invalid(&format!(
                "a project cannot name more than one environment, found {}",
                named.join(", ")
            )));
        }
        let name = match document.get("name") {
            None | Some(Value::Null) => None,
            Some(value) => Some(scalar(value, "name")?),
        };
        let mut entry_points = Vec::new();
        match document.get("entry_points") {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(mapping)) => {
                for (key, value) in mapping {
                    let name = scalar(key, "entry point name")?;
                    entry_points.push(EntryPoint::from_yaml(name, value, raw_defaults)?);
                }
            }
            Some(_) => return Err(invalid("entry_points must be a mapping")),
        }
        let environment = Environment::from_mapping(directory, document)?;
        Ok(Self {
            name,
            entry_points,
            environment,
        })
    }

    /// The named entry point, or a script file run by name (`python train.py`,
    /// `$SHELL run.sh`), as MLflow does.
    pub fn entry_point(&self, name: &str) -> Result<EntryPoint, Error> {
        if let Some(found) = self.entry_points.iter().find(|entry| entry.name == name) {
            return Ok(found.clone());
        }
        let interpreter = match Path::new(name).extension().and_then(|e| e.to_str()) {
            Some("py") => "python".to_owned(),
            Some("sh") => std::env::var("SHELL").unwrap_or_else(|_| "bash".to_owned()),
            _ => {
                let declared: Vec<&str> =
                    self.entry_points.iter().map(|e| e.name.as_str()).collect();
                return Err(Error::UnknownEntryPoint {
                    name: name.to_owned(),
                    declared: declared.join(", "),
                });
            }
        };
        Ok(EntryPoint {
            name: name.to_owned(),
            parameters: Vec::new(),
            command: format!("{interpreter} {}", shell_quote(name)),
        })
    }
}

impl Environment {
    fn from_mapping(directory: &Path, document: &Mapping) -> Result<Self, Error> {
        if let Some(docker) = document.get("docker_env").filter(|v| !is_empty(v)) {
            return DockerEnvironment::from_yaml(docker).map(Self::Docker);
        }
        for (field, make) in [
            ("python_env", Self::Python as fn(PathBuf) -> Self),
            ("conda_env", Self::Conda),
        ] {
            if let Some(value) = document.get(field).filter(|v| !is_empty(v)) {
                let path = directory.join(scalar(value, field)?);
                if !path.exists() {
                    return Err(invalid(&format!(
                        "{field} names {}, but no such file was found",
                        path.display()
                    )));
                }
                return Ok(make(path));
            }
        }
        for (file, make) in [
            (DEFAULT_PYTHON_ENV_FILE, Self::Python as fn(PathBuf) -> Self),
            (DEFAULT_CONDA_FILE, Self::Conda),
        ] {
            let path = directory.join(file);
            if path.exists() {
                return Ok(make(path));
            }
        }
        Ok(Self::Current)
    }
}

impl DockerEnvironment {
    fn from_yaml(value: &Value) -> Result<Self, Error> {
        let image = match value.get("image") {
            Some(image) if !is_empty(image) => scalar(image, "docker_env.image")?,
            _ => return Err(invalid("docker_env is given but names no image")),
        };
        let volumes = match value.get("volumes").filter(|v| !is_empty(v)) {
            None => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text.clone()),
                    _ => Err(()),
                })
                .collect::<Result<_, ()>>()
                .map_err(|()| {
                    invalid(
                        r#"docker_env.volumes must be a list of strings, e.g. ["/path1/:/path1"]"#,
                    )
                })?,
            Some(_) => {
                return Err(invalid(
                    r#"docker_env.volumes must be a list of strings, e.g. ["/path1/:/path1"]"#,
                ));
            }
        };
        let environment_error = || {
            invalid(
                r#"docker_env.environment must be a list of names to copy from the host and [NAME, value] pairs, e.g. [["NEW_VAR", "new_value"], "VAR_TO_COPY"]"#,
            )
        };
        let environment = match value.get("environment").filter(|v| !is_empty(v)) {
            None => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(name) => Ok(DockerVariable::Copy(name.clone())),
                    Value::Sequence(pair) => match pair.as_slice() {
                        [name, value] => Ok(DockerVariable::Set(
                            scalar(name, "docker_env.environment")?,
                            scalar(value, "docker_env.environment")?,
                        )),
                        _ => Err(environment_error()),
                    },
                    _ => Err(environment_error()),
                })
                .collect::<Result<_, Error>>()?,
            Some(_) => return Err(environment_error()),
        };
        Ok(Self {
            image,
            volumes,
            environment,
        })
    }
}

impl EntryPoint {
    fn from_yaml(name: String, value: &Value, raw_defaults: &RawDefaults) -> Result<Self, Error> {
        let Value::Mapping(body) = value else {
            return Err(invalid(&format!("entry point '{name}' must be a mapping")));
        };
        let command = match body.get("command") {
            Some(command) if !is_empty(command) => {
                scalar(command, &format!("entry point '{name}' command"))?
            }
            _ => return Err(invalid(&format!("entry point '{name}' has no command"))),
        };
        let mut parameters = Vec::new();
        match body.get("parameters") {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(mapping)) => {
                for (key, declaration) in mapping {
                    let parameter_name = scalar(key, "parameter name")?;
                    let raw = raw_defaults.get(&(name.clone(), parameter_name.clone()));
                    parameters.push(Parameter::from_yaml(
                        &name,
                        parameter_name,
                        declaration,
                        raw.map(String::as_str),
                    )?);
                }
            }
            Some(_) => {
                return Err(invalid(&format!(
                    "parameters of entry point '{name}' must be a mapping"
                )));
            }
        }
        Ok(Self {
            name,
            parameters,
            command,
        })
    }
}

impl Parameter {
    /// `alpha: float` (a type, required) or `alpha: {type: float, default: 0.5}`; `raw_default`
    /// is the default's text, for numbers and booleans PyYAML reads differently.
    fn from_yaml(
        entry_point: &str,
        name: String,
        value: &Value,
        raw_default: Option<&str>,
    ) -> Result<Self, Error> {
        let context = || format!("parameter '{name}' of entry point '{entry_point}'");
        match value {
            Value::String(kind) => Ok(Self {
                kind: ParameterType::parse(kind),
                default: None,
                name,
            }),
            Value::Mapping(body) => {
                let kind = match body.get("type") {
                    None | Some(Value::Null) => ParameterType::String,
                    Some(kind) => {
                        ParameterType::parse(&scalar(kind, &format!("{} type", context()))?)
                    }
                };
                let default = match body.get("default") {
                    Some(Value::Number(_) | Value::Bool(_)) if raw_default.is_some() => {
                        raw_default.map(pyyaml_plain_scalar_str)
                    }
                    other => match other.map(yaml_scalar_str) {
                        None | Some(None) => None,
                        Some(Some(Ok(text))) => Some(text),
                        Some(Some(Err(what))) => {
                            return Err(invalid(&format!("{}: the default is {what}", context())));
                        }
                    },
                };
                Ok(Self {
                    name,
                    kind,
                    default,
                })
            }
            _ => Err(invalid(&format!(
                "{} must be a type name or a mapping with type and default",
                context()
            ))),
        }
    }
}

/// Whether every parameter default is a scalar, so that its text can be read again (a list
/// or mapping is refused by the structural reading anyway).
fn only_scalar_defaults(document: &Value) -> bool {
    let Some(Value::Mapping(entry_points)) = document.get("entry_points") else {
        return true;
    };
    entry_points
        .values()
        .filter_map(|entry| entry.get("parameters")?.as_mapping())
        .flat_map(Mapping::values)
        .filter_map(|parameter| parameter.get("default"))
        .all(|default| !matches!(default, Value::Sequence(_) | Value::Mapping(_)))
}

fn invalid(message: &str) -> Error {
    Error::InvalidProject(message.to_owned())
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(text) => text.is_empty(),
        Value::Sequence(items) => items.is_empty(),
        Value::Mapping(mapping) => mapping.is_empty(),
        _ => false,
    }
}

/// A scalar as text (`str()` in Python), for names and other fields that must be one.
fn scalar(value: &Value, what: &str) -> Result<String, Error> {
    match yaml_scalar_str(value) {
        Some(Ok(text)) => Ok(text),
        _ => Err(invalid(&format!("{what} must be a single value"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(yaml: &str) -> Result<Project, Error> {
        let io = |source| Error::Io {
            path: PathBuf::from("MLproject"),
            source,
        };
        let dir = tempfile::tempdir().map_err(io)?;
        std::fs::write(dir.path().join("MLproject"), yaml).map_err(io)?;
        Project::load(dir.path())
    }

    #[test]
    fn reads_entry_points_parameters_and_defaults_in_order() {
        let project = project(
            "name: demo\n\
             entry_points:\n  \
               main:\n    \
                 parameters:\n      \
                   alpha: {type: float, default: 0.50}\n      \
                   l1_ratio: {type: float, default: 1}\n      \
                   data: path\n      \
                   label: {default: 'yes'}\n      \
                   epochs: {type: int, default: ~}\n      \
                   lr: {type: float, default: 1e-3}\n      \
                   batch: {type: int, default: 0x10}\n    \
                 command: python train.py {alpha} {l1_ratio} {data}\n  \
               other:\n    \
                 command: echo hi\n",
        )
        .unwrap();
        assert_eq!(project.name.as_deref(), Some("demo"));
        assert_eq!(project.environment, Environment::Current);
        let main = project.entry_point("main").unwrap();
        assert_eq!(main.command, "python train.py {alpha} {l1_ratio} {data}");
        let declared: Vec<(&str, &str, Option<&str>)> = main
            .parameters
            .iter()
            .map(|p| (p.name.as_str(), p.kind.as_str(), p.default.as_deref()))
            .collect();
        assert_eq!(
            declared,
            vec![
                ("alpha", "float", Some("0.5")),
                ("l1_ratio", "float", Some("1")),
                ("data", "path", None),
                ("label", "string", Some("yes")),
                ("epochs", "int", None),
                ("lr", "float", Some("1e-3")),
                ("batch", "int", Some("16")),
            ]
        );
        assert_eq!(project.entry_points[1].name, "other");
    }

    #[test]
    fn scripts_run_by_name_when_no_entry_point_is_declared() {
        let dir = tempfile::tempdir().unwrap();
        let project = Project::load(dir.path()).unwrap();
        assert_eq!(
            project.entry_point("my train.py").unwrap().command,
            "python 'my train.py'"
        );
        assert!(
            project
                .entry_point("run.sh")
                .unwrap()
                .command
                .ends_with(" run.sh")
        );
        let error = project.entry_point("main").unwrap_err().to_string();
        assert!(error.contains("'main'"), "{error}");
    }

    #[test]
    fn finds_the_file_in_any_case_and_the_default_environment_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mlProject"), "name: x\n").unwrap();
        std::fs::write(dir.path().join("conda.yaml"), "name: x\n").unwrap();
        let project = Project::load(dir.path()).unwrap();
        assert_eq!(project.name.as_deref(), Some("x"));
        assert_eq!(
            project.environment,
            Environment::Conda(dir.path().join("conda.yaml"))
        );
    }

    #[test]
    fn reads_docker_env() {
        let project = project(
            "docker_env:\n  image: python:3.12\n  volumes: ['/data:/data']\n  \
             environment: [[A, '1'], B]\n",
        )
        .unwrap();
        assert_eq!(
            project.environment,
            Environment::Docker(DockerEnvironment {
                image: "python:3.12".into(),
                volumes: vec!["/data:/data".into()],
                environment: vec![
                    DockerVariable::Set("A".into(), "1".into()),
                    DockerVariable::Copy("B".into()),
                ],
            })
        );
    }

    #[test]
    fn refuses_what_mlflow_refuses() {
        let cases = [
            (
                "docker_env: {image: x}\npython_env: p.yaml\n",
                "more than one environment",
            ),
            ("docker_env: {volumes: ['/a:/a']}\n", "no image"),
            ("docker_env: {image: x, volumes: /a}\n", "list of strings"),
            (
                "docker_env: {image: x, environment: [[A]]}\n",
                "environment must be",
            ),
            ("python_env: missing.yaml\n", "no such file"),
            (
                "entry_points:\n  main: {parameters: {a: 1}, command: x}\n",
                "parameter 'a'",
            ),
            (
                "entry_points:\n  main: {parameters: {a: {default: [1]}}, command: x}\n",
                "list or mapping",
            ),
            ("entry_points:\n  main: {parameters: {}}\n", "no command"),
            ("- a\n", "mapping"),
        ];
        for (yaml, expected) in cases {
            let error = project(yaml).unwrap_err().to_string();
            assert!(error.contains(expected), "{yaml:?}: {error}");
        }
    }
}
