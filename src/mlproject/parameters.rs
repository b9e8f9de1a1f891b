//! From `-P key=value` to the command line, as MLflow's `EntryPoint.compute_parameters` and
//! `compute_command` do it: defaults filled in, required ones checked, each value shell-quoted
//! into the `{name}` fields, undeclared ones appended as `--key value`, `path` values made
//! absolute (or downloaded) and `uri` values checked for a scheme.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use super::Error;
use super::python::{format_named, is_python_float, is_python_int, shell_quote, url_scheme};
use super::spec::{EntryPoint, ParameterType};

/// URI schemes a `path` parameter may be downloaded from (through the tracking server).
pub const DOWNLOADABLE_SCHEMES: [&str; 3] = ["runs", "models", "mlflow-artifacts"];

/// The parameters of one run of an entry point, checked, before anything is downloaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    command_template: String,
    entry_point: String,
    declared: Vec<ResolvedParameter>,
    /// Parameters the entry point does not declare, in the order given.
    extra: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
struct ResolvedParameter {
    name: String,
    /// The value as given (or the default): what MLflow logs.
    given: String,
    /// What goes into the command, unless it must be downloaded first.
    value: Value,
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Ready(String),
    /// A `path` to download; `folder` is `param_<position>`, as MLflow names it.
    Remote {
        uri: String,
        folder: String,
    },
}

/// A `path` parameter whose files must be fetched before the command can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePath {
    pub parameter: String,
    pub uri: String,
    /// The folder (relative to the run's download folder) to download into.
    pub folder: String,
}

/// Parses `-P` arguments: `name=value`, split at the first `=`, each name once (as
/// `mlflow run` does).
pub fn parse_assignments(arguments: &[String]) -> Result<Vec<(String, String)>, Error> {
    let mut parsed: Vec<(String, String)> = Vec::with_capacity(arguments.len());
    for argument in arguments {
        let Some((name, value)) = argument.split_once('=') else {
            return Err(Error::Usage(format!(
                "invalid format for -P parameter: '{argument}'. Use -P name=value."
            )));
        };
        if parsed.iter().any(|(seen, _)| seen == name) {
            return Err(Error::Usage(format!("repeated parameter: '{name}'")));
        }
        parsed.push((name.to_owned(), value.to_owned()));
    }
    Ok(parsed)
}

impl Resolved {
    /// Checks `given` against the entry point: every required parameter present, numbers where
    /// `float`/`int` are declared, a scheme on `uri`s, an existing file or folder for local
    /// `path`s (made absolute against `working_dir`), a downloadable scheme for remote ones.
    pub fn new(
        entry_point: &EntryPoint,
        given: &[(String, String)],
        working_dir: &Path,
    ) -> Result<Self, Error> {
        let lookup = |name: &str| given.iter().find(|(key, _)| key == name).map(|(_, v)| v);
        let missing: Vec<String> = entry_point
            .parameters
            .iter()
            .filter(|p| p.default.is_none() && lookup(&p.name).is_none())
            .map(|p| format!("'{}'", p.name))
            .collect();
        if !missing.is_empty() {
            return Err(Error::MissingParameters {
                entry_point: entry_point.name.clone(),
                names: missing.join(", "),
            });
        }
        let mut declared = Vec::with_capacity(entry_point.parameters.len());
        for (position, parameter) in entry_point.parameters.iter().enumerate() {
            let value = lookup(&parameter.name)
                .or(parameter.default.as_ref())
                .cloned()
                .unwrap_or_default();
            let wrong_type = || Error::WrongType {
                name: parameter.name.clone(),
                kind: parameter.kind.as_str().to_owned(),
                value: value.clone(),
            };
            let resolved = match parameter.kind {
                ParameterType::Float if !is_python_float(&value) => return Err(wrong_type()),
                ParameterType::Int if !is_python_int(&value) => return Err(wrong_type()),
                ParameterType::Uri if url_scheme(&value).is_empty() => return Err(wrong_type()),
                ParameterType::Path => path_value(&parameter.name, &value, position, working_dir)?,
                _ => Value::Ready(value.clone()),
            };
            declared.push(ResolvedParameter {
                name: parameter.name.clone(),
                given: value,
                value: resolved,
            });
        }
        let extra = given
            .iter()
            .filter(|(name, _)| !entry_point.parameters.iter().any(|p| &p.name == name))
            .cloned()
            .collect();
        let resolved = Self {
            command_template: entry_point.command.clone(),
            entry_point: entry_point.name.clone(),
            declared,
            extra,
        };
        // Fill the template once now, so a field naming no parameter fails before the run exists.
        let placeholders: HashMap<String, PathBuf> = resolved
            .remote_paths()
            .map(|remote| (remote.parameter, PathBuf::new()))
            .collect();
        resolved.command(&placeholders)?;
        Ok(resolved)
    }

    /// The parameters as MLflow logs them: declared ones with their given (not downloaded)
    /// value, then the others, all shell-quoted (keys of undeclared ones too).
    pub fn logged_params(&self) -> Vec<(String, String)> {
        let declared = self
            .declared
            .iter()
            .map(|p| (p.name.clone(), shell_quote(&p.given)));
        let extra = self
            .extra
            .iter()
            .map(|(key, value)| (shell_quote(key), shell_quote(value)));
        declared.chain(extra).collect()
    }

    /// The `path` parameters to download before [`Resolved::command`].
    pub fn remote_paths(&self) -> impl Iterator<Item = RemotePath> + '_ {
        self.declared.iter().filter_map(|p| match &p.value {
            Value::Remote { uri, folder } => Some(RemotePath {
                parameter: p.name.clone(),
                uri: uri.clone(),
                folder: folder.clone(),
            }),
            Value::Ready(_) => None,
        })
    }

    /// The shell command, given where each remote path was downloaded to.
    pub fn command(&self, downloaded: &HashMap<String, PathBuf>) -> Result<String, Error> {
        let mut fields: HashMap<&str, String> = HashMap::new();
        for parameter in &self.declared {
            let value = match &parameter.value {
                Value::Ready(value) => value.clone(),
                Value::Remote { uri, .. } => downloaded
                    .get(&parameter.name)
                    .map(|path| path.to_string_lossy().into_owned())
                    .ok_or_else(|| Error::NotDownloaded(uri.clone()))?,
            };
            fields.insert(&parameter.name, shell_quote(&value));
        }
        let mut command =
            format_named(&self.command_template, &fields).map_err(|reason| Error::Command {
                entry_point: self.entry_point.clone(),
                reason,
            })?;
        for (key, value) in &self.extra {
            command.push_str(&format!(" --{} {}", shell_quote(key), shell_quote(value)));
        }
        Ok(command)
    }
}

/// A `path` value: a local one (no scheme, or `file:` without a host) must exist and becomes
/// absolute; a remote one is downloaded later.
fn path_value(
    name: &str,
    value: &str,
    position: usize,
    working_dir: &Path,
) -> Result<Value, Error> {
    let scheme = url_scheme(value);
    let local = match scheme.as_str() {
        "" => Some(value.to_owned()),
        "file" => file_uri_path(value),
        _ => None,
    };
    if let Some(local) = local {
        let absolute = lexical_absolute(working_dir, Path::new(&local));
        if !absolute.exists() {
            return Err(Error::PathNotFound {
                name: name.to_owned(),
                value: value.to_owned(),
            });
        }
        return Ok(Value::Ready(absolute.to_string_lossy().into_owned()));
    }
    if !DOWNLOADABLE_SCHEMES.contains(&scheme.as_str()) {
        return Err(Error::UnsupportedDownload {
            name: name.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(Value::Remote {
        uri: value.to_owned(),
        folder: format!("param_{position}"),
    })
}

/// The path of a `file:` URI without a host (`file:///x`, `file:/x`); `None` for
/// `file://host/x`, which MLflow treats as remote.
fn file_uri_path(value: &str) -> Option<String> {
    let url = url::Url::parse(value).ok()?;
    if url.host_str().is_some_and(|host| !host.is_empty()) {
        return None;
    }
    url.to_file_path()
        .ok()
        .map(|path| path.to_string_lossy().into_owned())
}

/// Python's `os.path.abspath`: joined to the working folder, `.` and `..` removed without
/// looking at the file system.
fn lexical_absolute(working_dir: &Path, path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in working_dir.join(path).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlproject::spec::Parameter;

    fn entry_point(
        command: &str,
        parameters: &[(&str, ParameterType, Option<&str>)],
    ) -> EntryPoint {
        EntryPoint {
            name: "main".into(),
            command: command.into(),
            parameters: parameters
                .iter()
                .map(|(name, kind, default)| Parameter {
                    name: (*name).into(),
                    kind: kind.clone(),
                    default: default.map(str::to_owned),
                })
                .collect(),
        }
    }

    fn given(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn quotes_values_fills_defaults_and_appends_extras() {
        let entry = entry_point(
            "python train.py --alpha {alpha} --name {name}",
            &[
                ("alpha", ParameterType::Float, Some("0.5")),
                ("name", ParameterType::String, None),
            ],
        );
        let resolved = Resolved::new(
            &entry,
            &given(&[("name", "it's $HOME"), ("extra key", ""), ("n", "3")]),
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(
            resolved.command(&HashMap::new()).unwrap(),
            r#"python train.py --alpha 0.5 --name 'it'"'"'s $HOME' --'extra key' '' --n 3"#
        );
        assert_eq!(
            resolved.logged_params(),
            given(&[
                ("alpha", "0.5"),
                ("name", r#"'it'"'"'s $HOME'"#),
                ("'extra key'", "''"),
                ("n", "3"),
            ])
        );
    }

    #[test]
    fn names_every_missing_parameter() {
        let entry = entry_point(
            "x {a} {b} {c}",
            &[
                ("a", ParameterType::String, None),
                ("b", ParameterType::String, Some("1")),
                ("c", ParameterType::Int, None),
            ],
        );
        let error = Resolved::new(&entry, &[], Path::new("/")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no value given for missing parameters of entry point 'main': 'a', 'c'"
        );
    }

    #[test]
    fn refuses_values_of_the_wrong_type() {
        let entry = entry_point(
            "x {f} {i} {u}",
            &[
                ("f", ParameterType::Float, Some("1.5")),
                ("i", ParameterType::Int, Some("2")),
                ("u", ParameterType::Uri, Some("s3://b/k")),
            ],
        );
        for (name, value) in [("f", "abc"), ("i", "1.5"), ("u", "relative/path")] {
            let error = Resolved::new(&entry, &given(&[(name, value)]), Path::new("/"))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("'{name}'")) && error.contains(value),
                "{error}"
            );
        }
        assert!(
            Resolved::new(
                &entry,
                &given(&[("f", "1e-3"), ("i", "-7")]),
                Path::new("/")
            )
            .is_ok()
        );
    }

    #[test]
    fn paths_become_absolute_or_are_downloaded_later() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data.csv"), "x").unwrap();
        let entry = entry_point(
            "x {local} {remote}",
            &[
                ("local", ParameterType::Path, None),
                ("remote", ParameterType::Path, None),
            ],
        );
        let resolved = Resolved::new(
            &entry,
            &given(&[("local", "sub/../data.csv"), ("remote", "runs:/abc/model")]),
            dir.path(),
        )
        .unwrap();
        let remote: Vec<RemotePath> = resolved.remote_paths().collect();
        assert_eq!(
            remote,
            vec![RemotePath {
                parameter: "remote".into(),
                uri: "runs:/abc/model".into(),
                folder: "param_1".into(),
            }]
        );
        let downloaded =
            HashMap::from([("remote".to_owned(), PathBuf::from("/tmp/d/param_1/model"))]);
        assert_eq!(
            resolved.command(&downloaded).unwrap(),
            format!("x {}/data.csv /tmp/d/param_1/model", dir.path().display())
        );
        // Logged as given, like MLflow (which logs before downloading).
        assert_eq!(resolved.logged_params()[1].1, "runs:/abc/model");

        for value in ["missing.csv", "file:///no/such/file"] {
            let error = Resolved::new(
                &entry,
                &given(&[("local", value), ("remote", "x")]),
                dir.path(),
            );
            assert!(matches!(error, Err(Error::PathNotFound { .. })), "{value}");
        }
        let error = Resolved::new(
            &entry,
            &given(&[("local", "data.csv"), ("remote", "s3://bucket/key")]),
            dir.path(),
        );
        assert!(matches!(error, Err(Error::UnsupportedDownload { .. })));
    }

    #[test]
    fn a_field_naming_no_parameter_fails_before_the_run() {
        let entry = entry_point("x {nope}", &[]);
        let error = Resolved::new(&entry, &[], Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("{nope}"), "{error}");
    }

    #[test]
    fn assignments_split_at_the_first_equals_sign_once_per_name() {
        assert_eq!(
            parse_assignments(&["a=b=c".into(), "d=".into()]).unwrap(),
            given(&[("a", "b=c"), ("d", "")])
        );
        assert!(parse_assignments(&["a".into()]).is_err());
        assert!(parse_assignments(&["a=1".into(), "a=2".into()]).is_err());
    }
}
