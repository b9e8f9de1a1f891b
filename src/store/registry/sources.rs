//! A new version's source: MLflow's checks of `runs:/`, `models:/` and plain URIs, and where
//! its files are. [`parse_models_uri`] reads a `models:/…` URI for any caller (the operator).

use super::{
    IS_PROMPT_TAG, LATEST_ALIAS, MODEL_VERSIONS_TAG, ModelVersion, NewModelVersion, Stage,
};
use crate::store::{Entity, Error, KeyValue, Result, Store};

/// Where a new version's files are, and the lineage that goes with its source.
pub(super) struct ResolvedSource {
    pub(super) source: String,
    pub(super) storage_location: String,
    pub(super) run_id: String,
    pub(super) model_id: Option<String>,
}

impl Store {
    /// MLflow's source checks (`_validate_source_run`, `_validate_source_model`,
    /// `_resolve_registered_model_source_lineage`) and the download location of the version.
    pub(super) async fn resolve_source(&self, new: &NewModelVersion) -> Result<ResolvedSource> {
        let source = new.source.as_str();
        if source.is_empty() {
            return Err(Error::Invalid(
                "Missing value for required parameter 'source'. See the API docs for more information about request parameters.".into(),
            ));
        }
        let run_id = new.run_id.clone().unwrap_or_default();
        let model_id = new.model_id.clone().filter(|id| !id.is_empty());
        let uri = UriParts::split(source);

        if uri.scheme == "models" {
            if uri.authority.is_some() {
                return Err(Error::Invalid(format!(
                    "Invalid model version source: '{source}'. Registered model sources must use the active model registry."
                )));
            }
            let reference = parse_models_path(source, uri.path)?;
            return match reference {
                ModelsUri::LoggedModel(source_model_id) => {
                    if model_id.as_deref() != Some(source_model_id) {
                        return Err(invalid_source(source, "model_id"));
                    }
                    check_relative_paths(source)?;
                    let logged = self.logged_model_location(source_model_id).await?;
                    Ok(ResolvedSource {
                        source: source.to_owned(),
                        storage_location: logged.artifact_uri,
                        run_id: if run_id.is_empty() {
                            logged.source_run_id.unwrap_or_default()
                        } else {
                            run_id
                        },
                        model_id,
                    })
                }
                ModelsUri::Registered(name, selector) => {
                    let referenced = self.resolve_registered_reference(name, selector).await?;
                    let run_matches = new
                        .run_id
                        .as_ref()
                        .is_none_or(|given| *given == referenced.run_id);
                    let model_matches = new.model_id.as_ref().is_none_or(|given| {
                        given.as_str() == referenced.model_id.as_deref().unwrap_or_default()
                    });
                    if !run_matches || !model_matches {
                        return Err(Error::Invalid(format!(
                            "Invalid model version source: '{source}'. The run_id and model_id request \
                             parameters must match the referenced model version."
                        )));
                    }
                    check_relative_paths(source)?;
                    Ok(ResolvedSource {
                        source: format!("models:/{}/{}", referenced.name, referenced.version),
                        storage_location: referenced.storage_location,
                        run_id: new.run_id.clone().unwrap_or(referenced.run_id),
                        model_id: model_id.or(referenced.model_id),
                    })
                }
            };
        }

        if let Some(model_id) = &model_id {
            // A logged model's files: the source must lie inside its artifact location.
            if is_local(&uri) {
                return Err(Error::Invalid(format!(
                    "Invalid model version source: '{source}'. To use a local path as a model version source, \
                     the model_id request parameter has to be specified and the local path has to be contained \
                     within the artifact directory of the run specified by the model_id."
                )));
            }
            check_relative_paths(source)?;
            if uri.scheme == "runs" {
                return Err(invalid_source(source, "model_id"));
            }
            if is_mlflow_artifacts(&uri) {
                let logged = self.logged_model_location(model_id).await?;
                if !is_within_root(source, &logged.artifact_uri) {
                    return Err(invalid_source(source, "model_id"));
                }
                return Ok(ResolvedSource {
                    source: source.to_owned(),
                    storage_location: source.to_owned(),
                    run_id: if run_id.is_empty() {
                        logged.source_run_id.unwrap_or_default()
                    } else {
                        run_id
                    },
                    model_id: Some(model_id.clone()),
                });
            }
            return Ok(ResolvedSource {
                source: source.to_owned(),
                storage_location: source.to_owned(),
                run_id,
                model_id: Some(model_id.clone()),
            });
        }

        if is_local(&uri) {
            if !run_id.is_empty()
                && let Some(run) = self.source_run(&run_id).await?
            {
                let artifact_uri = UriParts::split(&run.artifact_uri);
                if is_local(&artifact_uri)
                    && path_is_within(&local_path(&uri), &local_path(&artifact_uri))
                {
                    return Ok(ResolvedSource {
                        source: source.to_owned(),
                        storage_location: source.to_owned(),
                        run_id,
                        model_id: None,
                    });
                }
            }
            return Err(Error::Invalid(format!(
                "Invalid model version source: '{source}'. To use a local path as a model version source, \
                 the run_id request parameter has to be specified and the local path has to be contained \
                 within the artifact directory of the run specified by the run_id."
            )));
        }
        check_relative_paths(source)?;
        if uri.scheme == "runs" {
            if uri.authority.is_some() {
                return Err(invalid_source(source, "run_id"));
            }
            let path = uri.path.strip_prefix('/').unwrap_or_default();
            let (source_run_id, artifact_path) = path.split_once('/').unwrap_or((path, ""));
            if source_run_id.is_empty() || run_id.is_empty() || source_run_id != run_id {
                return Err(invalid_source(source, "run_id"));
            }
            let run = self
                .source_run(&run_id)
                .await?
                .ok_or_else(|| invalid_source(source, "run_id"))?;
            let root = run.artifact_uri.trim_end_matches('/');
            let artifact_path = artifact_path.trim_matches('/');
            let storage_location = if artifact_path.is_empty() {
                root.to_owned()
            } else {
                format!("{root}/{artifact_path}")
            };
            return Ok(ResolvedSource {
                source: source.to_owned(),
                storage_location,
                run_id,
                model_id: None,
            });
        }
        if is_mlflow_artifacts(&uri) {
            let inside_run = match run_id.is_empty() {
                true => false,
                false => match self.source_run(&run_id).await? {
                    Some(run) => is_within_root(source, &run.artifact_uri),
                    None => false,
                },
            };
            if !inside_run {
                return Err(invalid_source(source, "run_id"));
            }
        }
        Ok(ResolvedSource {
            source: source.to_owned(),
            storage_location: source.to_owned(),
            run_id,
            model_id: None,
        })
    }

    async fn source_run(&self, run_id: &str) -> Result<Option<crate::store::runs::RunInfo>> {
        match self.get_run(run_id).await {
            Ok(run) => Ok(Some(run.info)),
            Err(Error::NotFound { .. }) | Err(Error::Invalid(_)) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// The concrete version a `models:/name/…` source names.
    async fn resolve_registered_reference(
        &self,
        name: &str,
        selector: ModelsSelector<'_>,
    ) -> Result<ModelVersion> {
        let model = self.get_registered_model(name).await?;
        if model
            .tags
            .iter()
            .any(|tag| tag.key == IS_PROMPT_TAG && tag.value.eq_ignore_ascii_case("true"))
        {
            return Err(Error::Invalid(format!(
                "Invalid model version source: 'models:/{name}'. Prompt versions cannot be used as model version sources."
            )));
        }
        match selector {
            ModelsSelector::Version(version) => self.get_model_version(name, version).await,
            ModelsSelector::Alias(alias) => self.get_model_version_by_alias(name, alias).await,
            ModelsSelector::Latest => self.get_model_version_by_alias(name, LATEST_ALIAS).await,
            ModelsSelector::Stage(stage) => {
                let stage = Stage::parse(stage)?;
                model
                    .latest_versions
                    .into_iter()
                    .find(|version| version.current_stage == stage)
                    .ok_or_else(|| {
                        Error::not_found(
                            Entity::ModelVersion,
                            format!(
                                "No versions of model with name '{name}' and stage '{stage}' found"
                            ),
                        )
                    })
            }
        }
    }

    /// Artifact location and source run of an MLflow 3 logged model (`models:/m-…` sources,
    /// or any source registered with a `model_id`). A missing or deleted model is an invalid
    /// source, as in MLflow's `_get_source_model`.
    async fn logged_model_location(&self, model_id: &str) -> Result<LoggedModelLocation> {
        match self.get_logged_model(model_id, false).await {
            Ok(model) => Ok(LoggedModelLocation {
                artifact_uri: model.artifact_uri,
                source_run_id: model.source_run_id,
            }),
            Err(Error::NotFound { .. }) => {
                Err(invalid_source(&format!("models:/{model_id}"), "model_id"))
            }
            Err(other) => Err(other),
        }
    }

    /// Adds `{"name", "version"}` to the logged model's `mlflow.modelVersions` tag (a JSON list
    /// the UI reads to show where a logged model is registered), as MLflow's server does after
    /// registering a version from a logged model.
    pub(super) async fn record_registration(
        &self,
        model_id: &str,
        name: &str,
        version: i64,
    ) -> Result<()> {
        let model = self.get_logged_model(model_id, false).await?;
        let entry = serde_json::json!({"name": name, "version": version});
        let mut registrations: Vec<serde_json::Value> = model
            .tags
            .iter()
            .find(|tag| tag.key == MODEL_VERSIONS_TAG)
            .and_then(|tag| serde_json::from_str(&tag.value).ok())
            .unwrap_or_default();
        if !registrations.contains(&entry) {
            registrations.push(entry);
        }
        let value = serde_json::Value::Array(registrations).to_string();
        self.set_logged_model_tags(model_id, &[KeyValue::new(MODEL_VERSIONS_TAG, value)])
            .await?;
        Ok(())
    }
}

/// What a version registered from a logged model needs of it.
struct LoggedModelLocation {
    artifact_uri: String,
    source_run_id: Option<String>,
}

fn invalid_source(source: &str, id_field: &str) -> Error {
    Error::Invalid(format!(
        "Invalid model version source: '{source}'. The {id_field} request parameter must identify \
         the resource that contains the source."
    ))
}

/// A `models:/` URI, as MLflow's `_parse_model_uri` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelsUri<'a> {
    /// `models:/<model_id>`: an MLflow 3 logged model.
    LoggedModel(&'a str),
    /// `models:/<name>/…` or `models:/<name>@<alias>`: a registered model's version.
    Registered(&'a str, ModelsSelector<'a>),
}

/// Which version of a registered model a `models:/` URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelsSelector<'a> {
    /// `models:/<name>/<version>`.
    Version(i64),
    /// `models:/<name>/<stage>` (checked against the stages when resolved).
    Stage(&'a str),
    /// `models:/<name>/latest` (any case).
    Latest,
    /// `models:/<name>@<alias>`.
    Alias(&'a str),
}

/// Reads a `models:/…` URI; anything else (another scheme, a malformed path) is
/// INVALID_PARAMETER_VALUE with MLflow's message for an improper model version source.
pub fn parse_models_uri(uri: &str) -> Result<ModelsUri<'_>> {
    let parts = UriParts::split(uri);
    if parts.scheme != "models" {
        return Err(improper_models_uri(uri));
    }
    parse_models_path(uri, parts.path)
}

fn improper_models_uri(source: &str) -> Error {
    Error::Invalid(format!(
        "Invalid model version source: '{source}'. Not a proper models:/ URI: use \
         models:/<name>/<version>, models:/<name>/<stage>, models:/<name>@<alias> or models:/<model_id>."
    ))
}

/// The path of a `models:` URI (`source`, for messages), as MLflow's `_parse_model_uri` reads it.
fn parse_models_path<'a>(source: &str, path: &'a str) -> Result<ModelsUri<'a>> {
    let improper = || improper_models_uri(source);
    let rest = path.strip_prefix('/').ok_or_else(improper)?;
    let parts: Vec<&str> = rest.split('/').collect();
    if rest.is_empty() || parts.len() > 2 || parts[0].trim().is_empty() {
        return Err(improper());
    }
    if let [name, suffix] = parts[..] {
        if suffix.trim().is_empty() {
            return Err(improper());
        }
        if suffix.chars().all(|c| c.is_ascii_digit()) {
            let version = suffix.parse().map_err(|_| improper())?;
            return Ok(ModelsUri::Registered(
                name,
                ModelsSelector::Version(version),
            ));
        }
        if suffix.eq_ignore_ascii_case(LATEST_ALIAS) {
            return Ok(ModelsUri::Registered(name, ModelsSelector::Latest));
        }
        return Ok(ModelsUri::Registered(name, ModelsSelector::Stage(suffix)));
    }
    if let Some((name, alias)) = rest.rsplit_once('@') {
        if alias.trim().is_empty() {
            return Err(improper());
        }
        // MLflow parses `models:/@alias` and then fails on the empty name when it looks it up.
        super::validate_model_name(name)?;
        return Ok(ModelsUri::Registered(name, ModelsSelector::Alias(alias)));
    }
    Ok(ModelsUri::LoggedModel(rest))
}

/// A URI cut as Python's `urlsplit` cuts it (scheme lower-cased; query and fragment dropped).
struct UriParts<'a> {
    scheme: String,
    authority: Option<&'a str>,
    path: &'a str,
}

impl<'a> UriParts<'a> {
    fn split(uri: &'a str) -> UriParts<'a> {
        let (scheme, rest) = match uri.split_once(':') {
            Some((scheme, rest))
                if scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')) =>
            {
                (scheme.to_ascii_lowercase(), rest)
            }
            _ => (String::new(), uri),
        };
        let (authority, rest) = match rest.strip_prefix("//") {
            Some(after) => {
                let end = after.find(['/', '?', '#']).unwrap_or(after.len());
                (Some(&after[..end]), &after[end..])
            }
            None => (None, rest),
        };
        let end = rest.find(['?', '#']).unwrap_or(rest.len());
        UriParts {
            scheme,
            authority,
            path: &rest[..end],
        }
    }
}

/// MLflow's `is_local_uri`: no scheme, or `file:`.
fn is_local(uri: &UriParts<'_>) -> bool {
    uri.scheme.is_empty() || uri.scheme == "file"
}

/// MLflow's `_is_mlflow_artifact_source`: the proxied artifact service, by scheme or HTTP route.
fn is_mlflow_artifacts(uri: &UriParts<'_>) -> bool {
    if uri.scheme == "mlflow-artifacts" {
        return true;
    }
    let route = ["api", "2.0", "mlflow-artifacts", "artifacts"];
    let parts: Vec<String> = path_parts(uri.path);
    (uri.scheme == "http" || uri.scheme == "https")
        && parts.windows(route.len()).any(|window| window == route)
}

/// Non-empty path segments, each fully percent-decoded.
fn path_parts(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|part| !part.is_empty())
        .map(unquote_fully)
        .collect()
}

/// MLflow's `_is_uri_within_root`: same scheme and authority, and the root's path segments are
/// a prefix of the source's.
fn is_within_root(source: &str, root: &str) -> bool {
    let source = UriParts::split(source);
    let root = UriParts::split(root);
    let source_parts = path_parts(source.path);
    let root_parts = path_parts(root.path);
    source.scheme == root.scheme
        && source.authority.map(str::to_ascii_lowercase)
            == root.authority.map(str::to_ascii_lowercase)
        && !root_parts.is_empty()
        && source_parts.starts_with(&root_parts)
}

/// MLflow's `_validate_non_local_source_contains_relative_paths`: after decoding, the path must
/// be absolute, without `.`/`..` segments or NUL.
fn check_relative_paths(source: &str) -> Result<()> {
    let decoded = unquote_fully(&source.replace('+', " "));
    let path = UriParts::split(&decoded).path.to_owned();
    let mut collapsed = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    let collapsed = collapsed.trim_end_matches('/');
    let normalized = collapsed.starts_with('/')
        && !collapsed.contains('\0')
        && collapsed
            .split('/')
            .skip(1)
            .all(|segment| segment != "." && segment != "..");
    if !normalized || decoded.split('/').any(|part| part == "..") {
        return Err(Error::Invalid(format!(
            "Invalid model version source: '{source}'. If supplying a source as an http, https, local \
             file path, ftp, objectstore, or mlflow-artifacts uri, an absolute path must be provided \
             without relative path references present. Please provide an absolute path."
        )));
    }
    Ok(())
}

/// Decodes `%XX` escapes until nothing changes, as MLflow does before checking paths.
fn unquote_fully(text: &str) -> String {
    let mut current = text.to_owned();
    loop {
        let decoded = crate::percent::decode(&current);
        if decoded == current {
            return current;
        }
        current = decoded;
    }
}

/// The filesystem path of a local URI, made absolute and normalized lexically.
fn local_path(uri: &UriParts<'_>) -> std::path::PathBuf {
    let decoded = crate::percent::decode(uri.path);
    let path = std::path::Path::new(&decoded);
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut normalized = std::path::PathBuf::new();
    for component in absolute.components() {
        match component {
            std::path::Component::ParentDir => {
                normalized.pop();
            }
            std::path::Component::CurDir => {}
            other => normalized.push(other),
        }
    }
    normalized
}

fn path_is_within(path: &std::path::Path, root: &std::path::Path) -> bool {
    path.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_uris_parse_like_mlflow() {
        assert!(matches!(
            parse_models_uri("models:/m/3").unwrap(),
            ModelsUri::Registered("m", ModelsSelector::Version(3))
        ));
        assert!(matches!(
            parse_models_uri("models:/m/Production").unwrap(),
            ModelsUri::Registered("m", ModelsSelector::Stage("Production"))
        ));
        assert!(matches!(
            parse_models_uri("models:/m/LATEST").unwrap(),
            ModelsUri::Registered("m", ModelsSelector::Latest)
        ));
        assert!(matches!(
            parse_models_uri("models:/m@champion").unwrap(),
            ModelsUri::Registered("m", ModelsSelector::Alias("champion"))
        ));
        assert!(matches!(
            parse_models_uri("models:/m-abc").unwrap(),
            ModelsUri::LoggedModel("m-abc")
        ));
        for bad in [
            "models:",
            "models:/",
            "models:/a/b/c",
            "models:/m/",
            "models:/m@",
            "runs:/m/1",
        ] {
            assert!(parse_models_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_alias_without_a_model_name_is_refused_as_mlflow_refuses_it() {
        for uri in ["models:/@champion", "models:/ @champion"] {
            match parse_models_uri(uri) {
                Err(Error::Invalid(message)) => assert!(
                    message.starts_with("Missing value for required parameter 'name'."),
                    "{uri}: {message}"
                ),
                other => panic!("{uri}: {other:?}"),
            }
        }
    }

    #[test]
    fn relative_paths_in_sources_are_refused() {
        check_relative_paths("s3://bucket/models/x").unwrap();
        check_relative_paths("mlflow-artifacts:/1/abc/artifacts/model").unwrap();
        for bad in [
            "s3://b/../x",
            "s3://b/%2E%2E/x",
            "s3://b/%252E%252E/x",
            "s3://bucket",
            "http://h/a/./b",
            "s3://b/x%00",
        ] {
            assert!(check_relative_paths(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sources_inside_a_root_match_by_scheme_authority_and_segments() {
        let root = "mlflow-artifacts:/1/abc/artifacts";
        assert!(is_within_root(
            "mlflow-artifacts:/1/abc/artifacts/model",
            root
        ));
        assert!(!is_within_root("mlflow-artifacts:/1/abcd/artifacts", root));
        assert!(!is_within_root("s3:/1/abc/artifacts/model", root));
        assert!(is_mlflow_artifacts(&UriParts::split(
            "http://host:5000/api/2.0/mlflow-artifacts/artifacts/1/x"
        )));
        assert!(!is_mlflow_artifacts(&UriParts::split("s3://b/x")));
    }
}
