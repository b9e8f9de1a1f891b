//! `/mlflow/registered-models/*` and `/mlflow/model-versions/*`: MLflow's model registry
//! (`model_registry.proto`), same methods, shapes and error codes. Every mutation here acts as
//! the request's [`Identity`] (the authenticated user, recorded as who made the change, or
//! anonymous), so fields owned by a Kubernetes resource are refused with 403
//! PERMISSION_DENIED naming that resource (see [`crate::store::registry`]).

use axum::Json;
use axum::routing::{get, patch, post};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::auth::Identity;
use super::endpoints::Routes;
use super::error::{ApiError, ApiResult, Required, non_empty};
use super::request::{Mlflow, lenient};
use super::types::{Empty, KeyValueJson};
use super::{AppState, InWorkspace};
use crate::artifacts::{self, ArtifactPath, path_from_proxy_uri};
use crate::store::KeyValue;
use crate::store::registry::{
    self as store_registry, DEFAULT_REGISTERED_MODELS_PAGE, MAX_MLMODEL_BYTES,
    MAX_MODEL_VERSIONS_PAGE, ModelFiles, ModelVersion, ModelVersionSearch, NewModelVersion,
    RegisteredModelSearch, Stage,
};

pub fn routes() -> Routes {
    Routes::new()
        .route("/registered-models/create", post(create_registered_model))
        .route("/registered-models/get", get(get_registered_model))
        .route("/registered-models/rename", post(rename_registered_model))
        .route("/registered-models/update", patch(update_registered_model))
        .route(
            "/registered-models/delete",
            axum::routing::delete(delete_registered_model),
        )
        .route("/registered-models/search", get(search_registered_models))
        .route(
            "/registered-models/get-latest-versions",
            post(get_latest_versions).get(get_latest_versions),
        )
        .route("/registered-models/set-tag", post(set_registered_model_tag))
        .route(
            "/registered-models/delete-tag",
            axum::routing::delete(delete_registered_model_tag),
        )
        .route(
            "/registered-models/alias",
            post(set_alias)
                .delete(delete_alias)
                .get(get_model_version_by_alias),
        )
        .route("/model-versions/create", post(create_model_version))
        .route("/model-versions/get", get(get_model_version))
        .route("/model-versions/update", patch(update_model_version))
        .route(
            "/model-versions/delete",
            axum::routing::delete(delete_model_version),
        )
        .route("/model-versions/transition-stage", post(transition_stage))
        .route("/model-versions/search", get(search_model_versions))
        .route("/model-versions/get-download-uri", get(get_download_uri))
        .route("/model-versions/set-tag", post(set_model_version_tag))
        .route(
            "/model-versions/delete-tag",
            axum::routing::delete(delete_model_version_tag),
        )
}

// ---- wire shapes ---------------------------------------------------------------------------

/// MLflow's `ModelVersion` message as protobuf JSON: `description`, `run_id`, `run_link` are
/// present even when empty (MLflow sets them), absent optionals and empty lists are omitted.
#[derive(Debug, Serialize)]
pub struct ModelVersionJson {
    pub name: String,
    pub version: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub current_stage: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub source: String,
    pub run_id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValueJson>,
    pub run_link: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
}

impl From<store_registry::ModelVersion> for ModelVersionJson {
    fn from(version: store_registry::ModelVersion) -> Self {
        Self {
            name: version.name,
            version: version.version.to_string(),
            creation_timestamp: version.creation_timestamp,
            last_updated_timestamp: version.last_updated_timestamp,
            user_id: version.user_id,
            current_stage: version.current_stage.as_str().to_owned(),
            description: version.description,
            source: version.source,
            run_id: version.run_id,
            status: version.status,
            status_message: version.status_message.filter(|message| !message.is_empty()),
            tags: version.tags.into_iter().map(Into::into).collect(),
            run_link: version.run_link,
            aliases: version.aliases,
            model_id: version.model_id,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AliasJson {
    pub alias: String,
    pub version: String,
}

/// MLflow's `RegisteredModel` message; an empty description is omitted, as MLflow does.
#[derive(Debug, Serialize)]
pub struct RegisteredModelJson {
    pub name: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latest_versions: Vec<ModelVersionJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValueJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<AliasJson>,
}

impl From<store_registry::RegisteredModel> for RegisteredModelJson {
    fn from(model: store_registry::RegisteredModel) -> Self {
        Self {
            name: model.name,
            creation_timestamp: model.creation_timestamp,
            last_updated_timestamp: model.last_updated_timestamp,
            description: model.description.filter(|text| !text.is_empty()),
            latest_versions: model.latest_versions.into_iter().map(Into::into).collect(),
            tags: model.tags.into_iter().map(Into::into).collect(),
            aliases: model
                .aliases
                .into_iter()
                .map(|(alias, version)| AliasJson {
                    alias,
                    version: version.to_string(),
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct RegisteredModelResponse {
    registered_model: RegisteredModelJson,
}

#[derive(Serialize)]
struct ModelVersionResponse {
    model_version: ModelVersionJson,
}

#[derive(Serialize)]
struct ModelVersionsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    model_versions: Vec<ModelVersionJson>,
}

// ---- request fields ------------------------------------------------------------------------

/// A version number as MLflow's `_validate_model_version` reads it (`int(version)`).
pub(super) fn parse_version(version: Option<String>) -> ApiResult<i64> {
    let version = non_empty(version).required("version")?;
    version.trim().parse().map_err(|_| {
        ApiError::invalid(format!(
            "Parameter 'version' must be an integer, got '{version}'."
        ))
    })
}

fn to_store_tags(tags: Vec<KeyValueJson>) -> Vec<KeyValue> {
    tags.into_iter().map(Into::into).collect()
}

/// `name` alone (get, delete).
#[derive(Deserialize)]
struct NameRequest {
    name: Option<String>,
}

/// `name` and `version` (get, delete, download URI).
#[derive(Deserialize)]
struct VersionRequest {
    name: Option<String>,
    version: Option<String>,
}

// ---- registered models ---------------------------------------------------------------------

#[derive(Deserialize)]
struct CreateRegisteredModelRequest {
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValueJson>,
    description: Option<String>,
}

async fn create_registered_model(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<CreateRegisteredModelRequest>,
) -> ApiResult<Json<RegisteredModelResponse>> {
    let name = non_empty(request.name).required("name")?;
    let model = state
        .store
        .create_registered_model(
            &name,
            &to_store_tags(request.tags),
            request.description.as_deref(),
            None,
        )
        .await?;
    Ok(Json(RegisteredModelResponse {
        registered_model: model.into(),
    }))
}

async fn get_registered_model(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<NameRequest>,
) -> ApiResult<Json<RegisteredModelResponse>> {
    let name = non_empty(request.name).required("name")?;
    let model = state.store.get_registered_model(&name).await?;
    Ok(Json(RegisteredModelResponse {
        registered_model: model.into(),
    }))
}

#[derive(Deserialize)]
struct RenameRequest {
    name: Option<String>,
    new_name: Option<String>,
}

async fn rename_registered_model(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<RenameRequest>,
) -> ApiResult<Json<RegisteredModelResponse>> {
    let name = non_empty(request.name).required("name")?;
    let new_name = non_empty(request.new_name).required("new_name")?;
    let model = state
        .store
        .rename_registered_model(&name, &new_name, identity.actor())
        .await?;
    Ok(Json(RegisteredModelResponse {
        registered_model: model.into(),
    }))
}

#[derive(Deserialize)]
struct UpdateRegisteredModelRequest {
    name: Option<String>,
    description: Option<String>,
}

async fn update_registered_model(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<UpdateRegisteredModelRequest>,
) -> ApiResult<Json<RegisteredModelResponse>> {
    let name = non_empty(request.name).required("name")?;
    let model = state
        .store
        .update_registered_model(&name, request.description.as_deref(), identity.actor())
        .await?;
    Ok(Json(RegisteredModelResponse {
        registered_model: model.into(),
    }))
}

async fn delete_registered_model(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<NameRequest>,
) -> ApiResult<Json<Empty>> {
    let name = non_empty(request.name).required("name")?;
    state
        .store
        .delete_registered_model(&name, identity.actor())
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct SearchRequest {
    filter: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    max_results: Option<i64>,
    #[serde(default, deserialize_with = "lenient::list")]
    order_by: Vec<String>,
    page_token: Option<String>,
}

#[derive(Serialize)]
struct SearchRegisteredModelsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    registered_models: Vec<RegisteredModelJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

async fn search_registered_models(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<SearchRequest>,
) -> ApiResult<Json<SearchRegisteredModelsResponse>> {
    let page = state
        .store
        .search_registered_models(&RegisteredModelSearch {
            filter: request.filter.unwrap_or_default(),
            order_by: request.order_by,
            max_results: request
                .max_results
                .unwrap_or(DEFAULT_REGISTERED_MODELS_PAGE),
            page_token: request.page_token.unwrap_or_default(),
        })
        .await?;
    Ok(Json(SearchRegisteredModelsResponse {
        registered_models: page.items.into_iter().map(Into::into).collect(),
        next_page_token: page.next_page_token,
    }))
}

#[derive(Deserialize)]
struct LatestVersionsRequest {
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    stages: Vec<String>,
}

async fn get_latest_versions(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<LatestVersionsRequest>,
) -> ApiResult<Json<ModelVersionsResponse>> {
    let name = non_empty(request.name).required("name")?;
    let stages = request
        .stages
        .iter()
        .map(|stage| Stage::parse(stage))
        .collect::<Result<Vec<_>, _>>()?;
    let versions = state.store.get_latest_versions(&name, &stages).await?;
    Ok(Json(ModelVersionsResponse {
        model_versions: versions.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Deserialize)]
struct ModelTagRequest {
    name: Option<String>,
    key: Option<String>,
    value: Option<String>,
}

async fn set_registered_model_tag(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<ModelTagRequest>,
) -> ApiResult<Json<Empty>> {
    let name = non_empty(request.name).required("name")?;
    let key = non_empty(request.key).required("key")?;
    let tag = KeyValue::new(key, request.value.unwrap_or_default());
    state
        .store
        .set_registered_model_tag(&name, &tag, identity.actor())
        .await?;
    Ok(Json(Empty {}))
}

async fn delete_registered_model_tag(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<ModelTagRequest>,
) -> ApiResult<Json<Empty>> {
    let name = non_empty(request.name).required("name")?;
    let key = non_empty(request.key).required("key")?;
    state
        .store
        .delete_registered_model_tag(&name, &key, identity.actor())
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct AliasRequest {
    name: Option<String>,
    alias: Option<String>,
    version: Option<String>,
}

async fn set_alias(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<AliasRequest>,
) -> ApiResult<Json<Empty>> {
    let name = non_empty(request.name).required("name")?;
    let alias = non_empty(request.alias).required("alias")?;
    let version = parse_version(request.version)?;
    state
        .store
        .set_registered_model_alias(&name, &alias, version, identity.actor())
        .await?;
    Ok(Json(Empty {}))
}

async fn delete_alias(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<AliasRequest>,
) -> ApiResult<Json<Empty>> {
    let name = non_empty(request.name).required("name")?;
    let alias = non_empty(request.alias).required("alias")?;
    state
        .store
        .delete_registered_model_alias(&name, &alias, identity.actor())
        .await?;
    Ok(Json(Empty {}))
}

async fn get_model_version_by_alias(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<AliasRequest>,
) -> ApiResult<Json<ModelVersionResponse>> {
    let name = non_empty(request.name).required("name")?;
    let alias = non_empty(request.alias).required("alias")?;
    let version = state
        .store
        .get_model_version_by_alias(&name, &alias)
        .await?;
    Ok(Json(ModelVersionResponse {
        model_version: version.into(),
    }))
}

// ---- model versions ------------------------------------------------------------------------

#[derive(Deserialize)]
struct CreateModelVersionRequest {
    name: Option<String>,
    source: Option<String>,
    run_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::list")]
    tags: Vec<KeyValueJson>,
    run_link: Option<String>,
    description: Option<String>,
    model_id: Option<String>,
}

async fn create_model_version(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<CreateModelVersionRequest>,
) -> ApiResult<Json<ModelVersionResponse>> {
    let name = non_empty(request.name).required("name")?;
    let source = non_empty(request.source).required("source")?;
    let version = state
        .store
        .create_model_version(NewModelVersion {
            name,
            source,
            run_id: request.run_id,
            tags: to_store_tags(request.tags),
            run_link: request.run_link,
            description: request.description,
            model_id: request.model_id,
            user_id: identity.user().map(str::to_owned),
            ownership: None,
        })
        .await?;
    record_model_files(&state, &version).await;
    Ok(Json(ModelVersionResponse {
        model_version: version.into(),
    }))
}

/// Reads the new version's `MLmodel` (when its files are in this server's artifact store) and
/// records what it declares, for the promotion policies' `modelMetadata` rule. The version is
/// created either way: a failure here only leaves the files unread, which that rule refuses.
async fn record_model_files(state: &AppState, version: &ModelVersion) {
    let Some(files) = model_files(state, &version.storage_location).await else {
        return;
    };
    if let Err(error) = state
        .store
        .record_model_files(&version.name, version.version, &files)
        .await
    {
        tracing::warn!(%error, name = %version.name, version = version.version, "could not record what the version's MLmodel declares");
    }
}

/// What the `MLmodel` under `storage_location` declares; `None` when this server does not
/// serve that location in the version's workspace (it names another workspace's folder) or
/// could not read it.
async fn model_files(state: &AppState, storage_location: &str) -> Option<ModelFiles> {
    let mlmodel = path_from_proxy_uri(storage_location)?
        .in_workspace(state.store.workspace())?
        .join(&ArtifactPath::from_trusted(&["MLmodel"]).ok()?);
    let artifacts = &state.artifacts;
    let read = async {
        let download = artifacts.get(&mlmodel).await?;
        if download.size > MAX_MLMODEL_BYTES {
            return Ok(None);
        }
        let bytes: Vec<u8> = download
            .stream
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk);
                Ok(all)
            })
            .await?;
        Ok::<_, artifacts::Error>(Some(bytes))
    };
    match read.await {
        Ok(Some(bytes)) => Some(ModelFiles::from_mlmodel(&String::from_utf8_lossy(&bytes))),
        Ok(None) => None,
        Err(artifacts::Error::NotFound(_)) => Some(ModelFiles::NO_MLMODEL),
        Err(error) => {
            tracing::warn!(%error, %mlmodel, "could not read the version's MLmodel");
            None
        }
    }
}

async fn get_model_version(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<VersionRequest>,
) -> ApiResult<Json<ModelVersionResponse>> {
    let name = non_empty(request.name).required("name")?;
    let version = parse_version(request.version)?;
    let version = state.store.get_model_version(&name, version).await?;
    Ok(Json(ModelVersionResponse {
        model_version: version.into(),
    }))
}

#[derive(Deserialize)]
struct UpdateModelVersionRequest {
    name: Option<String>,
    version: Option<String>,
    description: Option<String>,
}

async fn update_model_version(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<UpdateModelVersionRequest>,
) -> ApiResult<Json<ModelVersionResponse>> {
    let name = non_empty(request.name).required("name")?;
    let version = parse_version(request.version)?;
    let version = state
        .store
        .update_model_version(
            &name,
            version,
            request.description.as_deref(),
            identity.actor(),
        )
        .await?;
    Ok(Json(ModelVersionResponse {
        model_version: version.into(),
    }))
}

async fn delete_model_version(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<VersionRequest>,
) -> ApiResult<Json<Empty>> {
    let name = non_empty(request.name).required("name")?;
    let version = parse_version(request.version)?;
    state
        .store
        .delete_model_version(&name, version, identity.actor())
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
struct TransitionRequest {
    name: Option<String>,
    version: Option<String>,
    stage: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_bool")]
    archive_existing_versions: Option<bool>,
}

async fn transition_stage(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<TransitionRequest>,
) -> ApiResult<Json<ModelVersionResponse>> {
    let name = non_empty(request.name).required("name")?;
    let version = parse_version(request.version)?;
    let stage = Stage::parse(&non_empty(request.stage).required("stage")?)?;
    let version = state
        .store
        .transition_model_version_stage(
            &name,
            version,
            stage,
            request.archive_existing_versions.unwrap_or(false),
            identity.actor(),
        )
        .await?;
    Ok(Json(ModelVersionResponse {
        model_version: version.into(),
    }))
}

#[derive(Serialize)]
struct SearchModelVersionsResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    model_versions: Vec<ModelVersionJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
}

async fn search_model_versions(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<SearchRequest>,
) -> ApiResult<Json<SearchModelVersionsResponse>> {
    let page = state
        .store
        .search_model_versions(&ModelVersionSearch {
            filter: request.filter.unwrap_or_default(),
            order_by: request.order_by,
            max_results: request.max_results.unwrap_or(MAX_MODEL_VERSIONS_PAGE),
            page_token: request.page_token.unwrap_or_default(),
        })
        .await?;
    Ok(Json(SearchModelVersionsResponse {
        model_versions: page.items.into_iter().map(Into::into).collect(),
        next_page_token: page.next_page_token,
    }))
}

#[derive(Serialize)]
struct DownloadUriResponse {
    artifact_uri: String,
}

async fn get_download_uri(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<VersionRequest>,
) -> ApiResult<Json<DownloadUriResponse>> {
    let name = non_empty(request.name).required("name")?;
    let version = parse_version(request.version)?;
    let artifact_uri = state
        .store
        .get_model_version_download_uri(&name, version)
        .await?;
    Ok(Json(DownloadUriResponse { artifact_uri }))
}

#[derive(Deserialize)]
struct VersionTagRequest {
    name: Option<String>,
    version: Option<String>,
    key: Option<String>,
    value: Option<String>,
}

async fn set_model_version_tag(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<VersionTagRequest>,
) -> ApiResult<Json<Empty>> {
    let name = non_empty(request.name).required("name")?;
    let version = parse_version(request.version)?;
    let key = non_empty(request.key).required("key")?;
    let tag = KeyValue::new(key, request.value.unwrap_or_default());
    state
        .store
        .set_model_version_tag(&name, version, &tag, identity.actor())
        .await?;
    Ok(Json(Empty {}))
}

async fn delete_model_version_tag(
    InWorkspace(state): InWorkspace,
    identity: Identity,
    Mlflow(request): Mlflow<VersionTagRequest>,
) -> ApiResult<Json<Empty>> {
    let name = non_empty(request.name).required("name")?;
    let version = parse_version(request.version)?;
    let key = non_empty(request.key).required("key")?;
    state
        .store
        .delete_model_version_tag(&name, version, &key, identity.actor())
        .await?;
    Ok(Json(Empty {}))
}
