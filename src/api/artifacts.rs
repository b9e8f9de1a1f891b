//! The proxied artifact API (`/api/2.0/mlflow-artifacts/…`), run artifact listing, the
//! UI's download routes and `server-info`. Bytes stream both ways.

use axum::Json;
use axum::body::Body;
use axum::extract::Query;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::endpoints::Routes;
use super::error::{ApiError, ApiResult, ErrorCode, Required};
use super::request::{Mlflow, percent_decode_path};
use super::types::Empty;
use super::{AppState, InWorkspace};
use crate::artifacts::{
    self, ArtifactPath, ArtifactStore, Download, FileInfo, WORKSPACES_FOLDER, path_from_proxy_uri,
};

/// Prefix of the proxied artifact routes; the rest of the URL path is the artifact path.
const PROXY_PREFIX: &str = "/api/2.0/mlflow-artifacts/artifacts";

impl From<artifacts::Error> for ApiError {
    fn from(error: artifacts::Error) -> Self {
        match error {
            artifacts::Error::InvalidPath { .. } => ApiError::invalid(error.to_string()),
            artifacts::Error::NotFound(_) => {
                ApiError::new(ErrorCode::ResourceDoesNotExist, error.to_string())
            }
            artifacts::Error::Body(_) => ApiError::invalid(error.to_string()),
            other => {
                tracing::error!(error = ?other, "artifact store failure");
                ApiError::new(ErrorCode::InternalError, other.to_string())
            }
        }
    }
}

/// Routes outside the `/api/2.0/mlflow` nest (their paths are MLflow's).
pub fn routes() -> Routes {
    Routes::new()
        .route(PROXY_PREFIX, get(list_proxied))
        .route(
            &format!("{PROXY_PREFIX}/{{*path}}"),
            get(proxied_file).put(proxied_file).delete(proxied_file),
        )
        .route("/api/3.0/mlflow/server-info", get(|| server_info(true)))
        .route(
            "/ajax-api/3.0/mlflow/server-info",
            get(|| server_info(false)),
        )
        .route("/get-artifact", get(get_run_artifact))
}

/// Routes nested under `/api/2.0/mlflow` and `/ajax-api/2.0/mlflow`.
pub fn mlflow_routes() -> Routes {
    Routes::new().route("/artifacts/list", get(list_run_artifacts))
}

/// The artifact path in a proxied URL, decoded and checked.
fn proxied_path(uri: &Uri) -> ApiResult<ArtifactPath> {
    let raw = uri.path().strip_prefix(PROXY_PREFIX).unwrap_or_default();
    // Only the one separator after the prefix is dropped: `artifacts//etc` is an absolute path.
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    let decoded = percent_decode_path(raw).ok_or_else(|| {
        ApiError::invalid(format!(
            "Invalid artifact path '{raw}': not UTF-8 once decoded"
        ))
    })?;
    Ok(ArtifactPath::parse(&decoded)?)
}

async fn proxied_file(
    InWorkspace(state): InWorkspace,
    method: Method,
    uri: Uri,
    body: Body,
) -> ApiResult<Response> {
    let sent = proxied_path(&uri)?;
    let path = stored_in_workspace(&state, &sent)?;
    let sent = sent.to_string();
    match method {
        Method::PUT => {
            let stream = body.into_data_stream();
            state
                .artifacts
                .put_stream(&path, stream)
                .await
                .map_err(as_sent(&sent))?;
            Ok(Json(Empty {}).into_response())
        }
        Method::DELETE => {
            state
                .artifacts
                .delete(&path)
                .await
                .map_err(as_sent(&sent))?;
            Ok(Json(Empty {}).into_response())
        }
        _ => {
            let download = state.artifacts.get(&path).await.map_err(as_sent(&sent))?;
            Ok(respond(&path, download))
        }
    }
}

/// Where the path a client names in the request's workspace is stored
/// ([`ArtifactPath::in_workspace`]). A path into another workspace's folder answers as a
/// missing file does, whatever that folder holds: the request never touches it, and its
/// answer cannot tell whether anything is there.
fn stored_in_workspace(state: &AppState, sent: &ArtifactPath) -> ApiResult<ArtifactPath> {
    sent.in_workspace(state.store.workspace())
        .ok_or_else(|| artifacts::Error::NotFound(sent.to_string()).into())
}

/// Lists the stored folder `dir`. The root's `workspaces/` folder holds the other workspaces'
/// artifacts (only `default` can list the root), so it is left out.
async fn list_stored(
    store: &ArtifactStore,
    dir: &ArtifactPath,
) -> artifacts::Result<Vec<FileInfo>> {
    let mut files = store.list(dir).await?;
    if dir.is_root() {
        files.retain(|info| info.path.to_string() != WORKSPACES_FOLDER);
    }
    Ok(files)
}

/// The response carrying `download` of the file at `path`.
fn respond(path: &ArtifactPath, download: Download) -> Response {
    let body = Body::from_stream(download.stream.map_err(std::io::Error::other));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(download.size));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path.file_name().unwrap_or(""))),
    );
    response
}

fn content_type(name: &str) -> &'static str {
    match name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .as_deref()
    {
        Some("json") => "application/json",
        Some("txt" | "log" | "yaml" | "yml" | "py" | "md" | "csv") => "text/plain; charset=utf-8",
        Some("html" | "htm") => "text/plain; charset=utf-8", // never rendered as a page from our origin
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("svg") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[derive(Serialize)]
pub struct FileInfoJson {
    pub path: String,
    pub is_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
}

#[derive(Deserialize)]
struct ListProxiedRequest {
    path: Option<String>,
}

#[derive(Serialize)]
struct ListProxiedResponse {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<FileInfoJson>,
}

/// Lists a directory; entries carry basenames only, as MLflow's client joins them itself.
async fn list_proxied(
    InWorkspace(state): InWorkspace,
    Query(request): Query<ListProxiedRequest>,
) -> ApiResult<Json<ListProxiedResponse>> {
    let sent = ArtifactPath::parse(request.path.as_deref().unwrap_or(""))?;
    let dir = stored_in_workspace(&state, &sent)?;
    let files = list_stored(&state.artifacts, &dir)
        .await
        .map_err(as_sent(&sent.to_string()))?
        .into_iter()
        .map(|info| FileInfoJson {
            path: info.path.to_string(),
            is_dir: info.is_dir,
            file_size: info.file_size,
        })
        .collect();
    Ok(Json(ListProxiedResponse { files }))
}

#[derive(Deserialize)]
struct ListRunArtifactsRequest {
    run_id: Option<String>,
    run_uuid: Option<String>,
    path: Option<String>,
}

#[derive(Serialize)]
pub struct ListUnderRootResponse {
    pub root_uri: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileInfoJson>,
}

/// The storage path of an artifact root URI this server serves, for `relative` under it asked
/// in the store's workspace: a root in another workspace's folder answers as a missing
/// `relative` does (a run or model of this workspace whose location names it reaches nothing).
fn served_root(state: &AppState, root_uri: &str, relative: &str) -> ApiResult<ArtifactPath> {
    let root = path_from_proxy_uri(root_uri).ok_or_else(|| {
        ApiError::invalid(format!("Artifacts at '{root_uri}' are not served by this server; read them from that location directly"))
    })?;
    root.in_workspace(state.store.workspace())
        .ok_or_else(|| artifacts::Error::NotFound(relative.to_owned()).into())
}

/// Rewrites a failure to name the path as the client sent it (`relative`), not the storage
/// path behind it (an artifact root joined to it, a workspace's folder).
fn as_sent(relative: &str) -> impl Fn(artifacts::Error) -> artifacts::Error + '_ {
    move |error| match error {
        artifacts::Error::NotFound(_) => artifacts::Error::NotFound(relative.to_owned()),
        artifacts::Error::InvalidPath { reason, .. } => artifacts::Error::InvalidPath {
            path: relative.to_owned(),
            reason,
        },
        other => other,
    }
}

/// Streams the file `relative` under an artifact root URI (the UI's downloads).
pub async fn download_under_root(
    state: &AppState,
    root_uri: &str,
    relative: &str,
) -> ApiResult<Response> {
    let file = ArtifactPath::parse(relative).map_err(as_sent(relative))?;
    let file = served_root(state, root_uri, relative)?.join(&file);
    let download = state
        .artifacts
        .get(&file)
        .await
        .map_err(as_sent(relative))?;
    Ok(respond(&file, download))
}

/// Lists `relative` under an artifact root URI; paths in the answer are relative to the root.
pub async fn list_under_root(
    state: &AppState,
    root_uri: &str,
    relative: &str,
) -> ApiResult<ListUnderRootResponse> {
    let listed_relative = ArtifactPath::parse(relative).map_err(as_sent(relative))?;
    let listed = served_root(state, root_uri, relative)?.join(&listed_relative);
    let store = &state.artifacts;
    // Listing a file answers nothing, as MLflow's artifact repositories do.
    if store
        .file_size(&listed)
        .await
        .map_err(as_sent(relative))?
        .is_some()
    {
        return Ok(ListUnderRootResponse {
            root_uri: root_uri.to_owned(),
            files: Vec::new(),
        });
    }
    let files = list_stored(store, &listed)
        .await
        .map_err(as_sent(relative))?
        .into_iter()
        .map(|info| FileInfoJson {
            path: listed_relative.join(&info.path).to_string(),
            is_dir: info.is_dir,
            file_size: info.file_size,
        })
        .collect();
    Ok(ListUnderRootResponse {
        root_uri: root_uri.to_owned(),
        files,
    })
}

async fn list_run_artifacts(
    InWorkspace(state): InWorkspace,
    Mlflow(request): Mlflow<ListRunArtifactsRequest>,
) -> ApiResult<Json<ListUnderRootResponse>> {
    let run_id = request
        .run_id
        .or(request.run_uuid)
        .filter(|id| !id.is_empty())
        .required("run_id")?;
    let info = state.store.get_run_info(&run_id).await?;
    Ok(Json(
        list_under_root(
            &state,
            &info.artifact_uri,
            request.path.as_deref().unwrap_or(""),
        )
        .await?,
    ))
}

#[derive(Deserialize)]
struct GetRunArtifactRequest {
    run_id: Option<String>,
    run_uuid: Option<String>,
    path: Option<String>,
}

/// The UI's download of one run artifact.
async fn get_run_artifact(
    InWorkspace(state): InWorkspace,
    Query(request): Query<GetRunArtifactRequest>,
) -> ApiResult<Response> {
    let run_id = request.run_id.or(request.run_uuid).required("run_id")?;
    let path = request.path.required("path")?;
    let info = state.store.get_run_info(&run_id).await?;
    download_under_root(&state, &info.artifact_uri, &path).await
}

#[derive(Serialize)]
struct ServerInfo {
    store_type: &'static str,
    workspaces_enabled: bool,
    trace_archival_enabled: bool,
    multipart_uploads_enabled: bool,
    multipart_downloads_enabled: bool,
    presigned_upload_run_id_supported: bool,
    presigned_upload_model_id_supported: bool,
}

/// Capabilities the client checks before large transfers: uploads and downloads stream
/// through this server, so no presigned or client-side multipart transfers are offered.
///
/// Workspaces are on for API clients (the mlflow client refuses to send MLFLOW_WORKSPACE to a
/// server that says they are off). The web UI (`/ajax-api`) is told they are off: MLflow
/// 3.17.2's UI switches on `true` to a workspace-selection mode this server does not serve yet,
/// so the UI works in `default`.
async fn server_info(workspaces_enabled: bool) -> Json<ServerInfo> {
    Json(ServerInfo {
        store_type: "SqlStore",
        workspaces_enabled,
        trace_archival_enabled: false,
        multipart_uploads_enabled: false,
        multipart_downloads_enabled: false,
        presigned_upload_run_id_supported: false,
        presigned_upload_model_id_supported: false,
    })
}
