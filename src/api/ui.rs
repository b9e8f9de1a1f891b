//! MLflow's own web UI: the static React bundle from the pinned `mlflow` wheel
//! (`mlflow/server/js/build`, fetched by `make ui`, never stored in this repository), served
//! as `mlflow server` serves it: `index.html` at `/`, the files at `/static-files/…` with
//! MLflow's cache lifetime (their names carry content hashes). The bundle routes with `#/…`
//! hashes and loads its files relative to `index.html`, so no route fallback is needed and a
//! static prefix works.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Path as UrlPath, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use tower::ServiceExt as _;

use super::endpoints::Routes;
use super::{AppState, MLFLOW_COMPATIBLE_VERSION};

/// How long browsers may keep a bundle file: MLflow's `max_age` for `/static-files`.
const STATIC_MAX_AGE_SECONDS: u32 = 2_419_200;

/// The folder `make ui` fills when no other is given:
/// `$XDG_CACHE_HOME/ferroflow/ui/mlflow-<version>` (`~/.cache/…` without XDG_CACHE_HOME).
pub fn default_dir() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(
        cache
            .join("ferroflow")
            .join("ui")
            .join(format!("mlflow-{MLFLOW_COMPATIBLE_VERSION}")),
    )
}

/// The UI folder to serve: the one configured, else the default one when it holds a bundle.
pub fn resolve_dir(configured: Option<PathBuf>) -> Option<PathBuf> {
    configured.or_else(|| default_dir().filter(|dir| dir.join("index.html").is_file()))
}

/// `/` and `/static-files/…`.
pub fn routes() -> Routes {
    Routes::new()
        .route("/", get(index))
        .route("/static-files/{*path}", get(static_file))
}

/// Everything under `prefix` (`--static-prefix`), as MLflow prefixes every route; other paths
/// answer 404. (`Router::nest` would not route `/prefix/` to `/`, the UI's own address.)
pub fn with_static_prefix(app: Router, prefix: Option<&str>) -> Router {
    let Some(prefix) = prefix else {
        return app;
    };
    let prefix: Arc<str> = Arc::from(prefix);
    Router::new()
        .fallback(move |request: Request| strip_prefix(app.clone(), prefix.clone(), request))
}

async fn strip_prefix(app: Router, prefix: Arc<str>, mut request: Request) -> Response {
    let rest = request
        .uri()
        .path()
        .strip_prefix(&*prefix)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'));
    let Some(rest) = rest else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let rest = if rest.is_empty() { "/" } else { rest };
    let inner = match request.uri().query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    };
    match inner.parse::<Uri>() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    }
    match app.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

async fn index(State(state): State<AppState>, OriginalUri(uri): OriginalUri) -> Response {
    // Under a prefix, `/mlflow` must become `/mlflow/`: the bundle's files are relative to it.
    if !uri.path().ends_with('/') {
        return Redirect::permanent(&format!("{}/", uri.path())).into_response();
    }
    let Some(dir) = &state.config.ui_dir else {
        return missing_bundle_page();
    };
    match tokio::fs::read(dir.join("index.html")).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "the UI folder has no readable index.html");
            missing_bundle_page()
        }
    }
}

/// What `/` answers without a bundle: how to get one, instead of a bare 404.
fn missing_bundle_page() -> Response {
    let default = default_dir()
        .map(|dir| dir.display().to_string())
        .unwrap_or_else(|| "~/.cache/ferroflow/ui/…".into());
    let text = format!(
        "ferroflow is running; its web UI (MLflow's own UI bundle) is not installed.\n\n\
         Fetch it with `make ui` (downloads the mlflow {MLFLOW_COMPATIBLE_VERSION} wheel from the \
         package index and extracts its UI into {default}),\nor point `--ui-dir` / FERROFLOW_UI_DIR \
         at a folder holding mlflow/server/js/build, then restart the server.\n\
         The container image ships the UI already.\n"
    );
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

async fn static_file(State(state): State<AppState>, UrlPath(path): UrlPath<String>) -> Response {
    let Some(dir) = &state.config.ui_dir else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some(relative) = safe_relative(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let file = dir.join(relative);
    match tokio::fs::read(&file).await {
        Ok(bytes) => {
            let cache = HeaderValue::from_str(&format!("public, max-age={STATIC_MAX_AGE_SECONDS}"))
                .unwrap_or(HeaderValue::from_static("public"));
            (
                [
                    (
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(content_type(&file)),
                    ),
                    (header::CACHE_CONTROL, cache),
                ],
                bytes,
            )
                .into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The path when it stays inside the folder: plain names only, no `..`, no root.
fn safe_relative(path: &str) -> Option<&Path> {
    let relative = Path::new(path);
    let plain = relative
        .components()
        .all(|component| matches!(component, Component::Normal(_)));
    (plain && !path.is_empty() && !path.contains('\\')).then_some(relative)
}

/// The media type browsers need for the bundle's kinds of file (scripts must not be sniffed).
fn content_type(file: &Path) -> &'static str {
    let extension = file
        .extension()
        .and_then(|extension| extension.to_str())
        .unwrap_or("");
    match extension {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/vnd.microsoft.icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_served() {
        assert!(safe_relative("static/js/main.js").is_some());
        for hostile in [
            "../etc/passwd",
            "/etc/passwd",
            "static/../../x",
            "a\\b",
            "",
            "./x",
        ] {
            assert!(safe_relative(hostile).is_none(), "{hostile}");
        }
    }
}
