//! `/api/3.0/mlflow/workspaces`: the workspaces a caller may use. A workspace is a Kubernetes
//! namespace, so this server lists them but never creates, changes or deletes one.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Extension, Json};
use serde::Serialize;

use super::AppState;
use super::auth::{Auth, AuthError, Caller};
use super::endpoints::Routes;
use super::error::{ApiError, ApiResult, ErrorCode};

pub fn routes() -> Routes {
    let mut routes = Routes::new();
    for prefix in ["/api/3.0/mlflow", "/ajax-api/3.0/mlflow"] {
        routes = routes
            .route(
                &format!("{prefix}/workspaces"),
                get(list_workspaces).post(refuse_change),
            )
            .route(
                &format!("{prefix}/workspaces/{{name}}"),
                get(get_workspace)
                    .patch(refuse_change)
                    .delete(refuse_change),
            );
    }
    routes
}

#[derive(Serialize)]
struct WorkspaceInfo {
    name: String,
}

#[derive(Serialize)]
struct ListWorkspaces {
    workspaces: Vec<WorkspaceInfo>,
}

#[derive(Serialize)]
struct GetWorkspace {
    workspace: WorkspaceInfo,
}

/// The workspaces the caller may use: with `--auth none` every workspace that holds data and
/// `default`; with `--auth kubernetes` the cluster's namespaces in which it may `list`
/// experiments (data or not).
async fn list_workspaces(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
) -> ApiResult<Json<ListWorkspaces>> {
    let names = usable_workspaces(&state, caller.as_deref()).await?;
    Ok(Json(ListWorkspaces {
        workspaces: names
            .into_iter()
            .map(|name| WorkspaceInfo { name })
            .collect(),
    }))
}

async fn get_workspace(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    Path(name): Path<String>,
) -> ApiResult<Json<GetWorkspace>> {
    let usable = usable_workspaces(&state, caller.as_deref()).await?;
    if !usable.contains(&name) {
        return Err(ApiError::new(
            ErrorCode::ResourceDoesNotExist,
            format!("Workspace '{name}' not found"),
        ));
    }
    Ok(Json(GetWorkspace {
        workspace: WorkspaceInfo { name },
    }))
}

/// Create, update and delete: namespaces are made in Kubernetes.
async fn refuse_change() -> ApiError {
    ApiError::new(
        ErrorCode::NotImplemented,
        "Workspaces are Kubernetes namespaces: create, change and delete them in Kubernetes, \
         not through the tracking API",
    )
}

async fn usable_workspaces(state: &AppState, caller: Option<&Caller>) -> ApiResult<Vec<String>> {
    match (&state.auth, caller) {
        (Auth::Kubernetes(authorizer), Some(caller)) => {
            Ok(authorizer.usable_namespaces(caller).await?)
        }
        (Auth::Kubernetes(_), None) => Err(AuthError::MissingToken.into()),
        (Auth::None, _) => Ok(state.store.workspaces().await?),
    }
}
