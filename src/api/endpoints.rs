//! Every REST endpoint the server serves, and what a caller needs to call it: the one table
//! `--auth kubernetes` authorizes from. [`Routes`] registers routes and remembers their
//! paths, so a test can walk what the router really serves and find endpoints the table
//! lacks (an endpoint without an entry is refused in `kubernetes` mode, never let through).
//!
//! Kubernetes RBAC terms (group `ferroflow.dev`): reads of one object are `get`, searches
//! `list`; runs, metrics, params, tags and run artifacts follow their experiment, model
//! versions and their artifacts their registered model (creating either changes its parent:
//! `update`). Moving an alias or changing a stage also needs `update` on
//! `registeredmodels/promote`, so a Role can let a robot register versions but not promote.

use axum::Router;
use axum::http::Method;
use axum::middleware;
use axum::routing::MethodRouter;

/// An RBAC verb, as Kubernetes spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    List,
    Create,
    Update,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
        }
    }
}

/// A resource (with its subresource) of group `ferroflow.dev` that Roles grant verbs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Experiments,
    RegisteredModels,
    /// `registeredmodels/promote`: moving an alias or changing a stage.
    RegisteredModelsPromote,
    LoggedModels,
}

impl Resource {
    /// The resource's plural name in RBAC rules.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Experiments => "experiments",
            Resource::RegisteredModels | Resource::RegisteredModelsPromote => "registeredmodels",
            Resource::LoggedModels => "loggedmodels",
        }
    }

    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Resource::RegisteredModelsPromote => Some("promote"),
            _ => None,
        }
    }

    /// `registeredmodels/promote` as RBAC rules write it.
    pub fn display(self) -> String {
        match self.subresource() {
            Some(subresource) => format!("{}/{subresource}", self.name()),
            None => self.name().to_owned(),
        }
    }
}

/// One permission a call needs in its workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Permission {
    pub verb: Verb,
    pub resource: Resource,
}

/// What a caller needs to call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Nothing: probes, metrics, the version, the UI bundle and server-info hold no tracking data.
    Public,
    /// An authenticated caller: the answer holds no tracking data (UI settings), or every
    /// piece of it is authorized on its own (GraphQL answers through the REST routes).
    Authenticated,
    /// This permission in the request's workspace.
    Rbac(Permission),
    /// Moving an alias or changing a stage: `update` on `registeredmodels` and on
    /// `registeredmodels/promote`.
    Promote,
}

impl Access {
    /// The permissions a call needs in its workspace (none for public and
    /// authenticated-only endpoints).
    pub fn permissions(self) -> Vec<Permission> {
        match self {
            Access::Public | Access::Authenticated => Vec::new(),
            Access::Rbac(permission) => vec![permission],
            Access::Promote => vec![
                permission(Verb::Update, Resource::RegisteredModels),
                permission(Verb::Update, Resource::RegisteredModelsPromote),
            ],
        }
    }
}

/// One row of the table: a method on a path as the router spells it, with the API prefix
/// removed (see [`mlflow_path`]).
#[derive(Debug)]
pub struct Endpoint {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

pub const fn permission(verb: Verb, resource: Resource) -> Permission {
    Permission { verb, resource }
}

const fn entry(method: Method, path: &'static str, access: Access) -> Endpoint {
    Endpoint {
        method,
        path,
        access,
    }
}

const fn experiments(method: Method, path: &'static str, verb: Verb) -> Endpoint {
    entry(
        method,
        path,
        Access::Rbac(permission(verb, Resource::Experiments)),
    )
}

const fn models(method: Method, path: &'static str, verb: Verb) -> Endpoint {
    entry(
        method,
        path,
        Access::Rbac(permission(verb, Resource::RegisteredModels)),
    )
}

const fn logged(method: Method, path: &'static str, verb: Verb) -> Endpoint {
    entry(
        method,
        path,
        Access::Rbac(permission(verb, Resource::LoggedModels)),
    )
}

const fn promote(method: Method, path: &'static str) -> Endpoint {
    entry(method, path, Access::Promote)
}

const GET: Method = Method::GET;
const POST: Method = Method::POST;
const PUT: Method = Method::PUT;
const PATCH: Method = Method::PATCH;
const DELETE: Method = Method::DELETE;

use Verb::{Create, Delete, Get, List, Update};

/// The table. Paths under the API prefixes are written without them ([`mlflow_path`]).
pub static ENDPOINTS: &[Endpoint] = &[
    // Probes, metrics, the UI bundle: no data.
    entry(GET, "/health", Access::Public),
    entry(GET, "/ready", Access::Public),
    entry(GET, "/metrics", Access::Public),
    entry(GET, "/version", Access::Public),
    entry(GET, "/", Access::Public),
    entry(GET, "/static-files/{*path}", Access::Public),
    entry(GET, "/server-info", Access::Public),
    // Workspaces: the list is filtered by `list` on experiments in each namespace; changes are
    // refused (namespaces are made in Kubernetes).
    entry(GET, "/workspaces", Access::Authenticated),
    entry(POST, "/workspaces", Access::Authenticated),
    entry(GET, "/workspaces/{name}", Access::Authenticated),
    entry(PATCH, "/workspaces/{name}", Access::Authenticated),
    entry(DELETE, "/workspaces/{name}", Access::Authenticated),
    // The UI's settings: no tracking data.
    entry(GET, "/ui-telemetry", Access::Authenticated),
    entry(POST, "/ui-telemetry", Access::Authenticated),
    entry(GET, "/assistant/config", Access::Authenticated),
    entry(GET, "/assistant/providers", Access::Authenticated),
    entry(GET, "/gateway-proxy", Access::Authenticated),
    // Each field is answered by a REST route, which authorizes it.
    entry(GET, "/graphql", Access::Authenticated),
    entry(POST, "/graphql", Access::Authenticated),
    // Experiments.
    experiments(POST, "/experiments/create", Create),
    experiments(GET, "/experiments/get", Get),
    experiments(GET, "/experiments/get-by-name", Get),
    experiments(GET, "/experiments/search", List),
    experiments(POST, "/experiments/search", List),
    experiments(POST, "/experiments/update", Update),
    experiments(POST, "/experiments/delete", Delete),
    experiments(POST, "/experiments/restore", Update),
    experiments(POST, "/experiments/set-experiment-tag", Update),
    experiments(POST, "/experiments/delete-experiment-tag", Update),
    experiments(POST, "/experiments/search-datasets", List),
    experiments(POST, "/traces/metrics", List),
    // Runs and what they hold follow their experiment.
    experiments(POST, "/runs/create", Update),
    experiments(GET, "/runs/get", Get),
    experiments(POST, "/runs/update", Update),
    experiments(POST, "/runs/delete", Delete),
    experiments(POST, "/runs/restore", Update),
    experiments(POST, "/runs/log-parameter", Update),
    experiments(POST, "/runs/log-metric", Update),
    experiments(POST, "/runs/set-tag", Update),
    experiments(POST, "/runs/delete-tag", Update),
    experiments(POST, "/runs/log-batch", Update),
    experiments(POST, "/runs/log-inputs", Update),
    experiments(POST, "/runs/log-model", Update),
    experiments(POST, "/runs/outputs", Update),
    experiments(GET, "/runs/search", List),
    experiments(POST, "/runs/search", List),
    experiments(GET, "/metrics/get-history", Get),
    experiments(GET, "/metrics/get-history-bulk-interval", Get),
    experiments(GET, "/artifacts/list", Get),
    experiments(GET, "/get-artifact", Get),
    // Proxied artifacts (`mlflow-artifacts:`): run artifacts, so their experiment's.
    experiments(GET, "/api/2.0/mlflow-artifacts/artifacts", List),
    experiments(GET, "/api/2.0/mlflow-artifacts/artifacts/{*path}", Get),
    experiments(PUT, "/api/2.0/mlflow-artifacts/artifacts/{*path}", Update),
    experiments(
        DELETE,
        "/api/2.0/mlflow-artifacts/artifacts/{*path}",
        Delete,
    ),
    // Logged models.
    logged(POST, "/logged-models", Create),
    logged(POST, "/logged-models/search", List),
    logged(GET, "/logged-models/{model_id}", Get),
    logged(PATCH, "/logged-models/{model_id}", Update),
    logged(DELETE, "/logged-models/{model_id}", Delete),
    logged(PATCH, "/logged-models/{model_id}/tags", Update),
    logged(DELETE, "/logged-models/{model_id}/tags/{tag_key}", Update),
    logged(POST, "/logged-models/{model_id}/params", Update),
    logged(GET, "/logged-models/{model_id}/artifacts/directories", Get),
    logged(GET, "/logged-models/{model_id}/artifacts/files", Get),
    // Registered models and their versions.
    models(POST, "/registered-models/create", Create),
    models(GET, "/registered-models/get", Get),
    models(POST, "/registered-models/rename", Update),
    models(PATCH, "/registered-models/update", Update),
    models(DELETE, "/registered-models/delete", Delete),
    models(GET, "/registered-models/search", List),
    models(GET, "/registered-models/get-latest-versions", Get),
    models(POST, "/registered-models/get-latest-versions", Get),
    models(POST, "/registered-models/set-tag", Update),
    models(DELETE, "/registered-models/delete-tag", Update),
    promote(POST, "/registered-models/alias"),
    promote(DELETE, "/registered-models/alias"),
    models(GET, "/registered-models/alias", Get),
    models(POST, "/model-versions/create", Update),
    models(GET, "/model-versions/get", Get),
    models(PATCH, "/model-versions/update", Update),
    models(DELETE, "/model-versions/delete", Delete),
    promote(POST, "/model-versions/transition-stage"),
    models(GET, "/model-versions/search", List),
    models(GET, "/model-versions/get-download-uri", Get),
    models(POST, "/model-versions/set-tag", Update),
    models(DELETE, "/model-versions/delete-tag", Update),
    models(GET, "/model-versions/get-artifact", Get),
    // ferroflow's promotion history: reading it is reading the model; a rollback promotes.
    models(GET, "/api/2.0/ferroflow/promotions", Get),
    models(GET, "/api/2.0/ferroflow/promotions/at", Get),
    models(POST, "/api/2.0/ferroflow/promotions/check", Get),
    promote(POST, "/api/2.0/ferroflow/promotions/rollback"),
];

/// Prefixes under which the same endpoint is served: the REST API and the UI's copy of it.
const API_PREFIXES: &[&str] = &[
    "/api/2.0/mlflow",
    "/ajax-api/2.0/mlflow",
    "/api/3.0/mlflow",
    "/ajax-api/3.0/mlflow",
];

/// A route's path as the table writes it: without its API prefix.
pub fn mlflow_path(route: &str) -> &str {
    API_PREFIXES
        .iter()
        .find_map(|prefix| {
            route
                .strip_prefix(prefix)
                .filter(|rest| rest.starts_with('/'))
        })
        .unwrap_or(route)
}

/// What `method` on the route `route` (as axum's `MatchedPath` spells it) needs; `None`: the
/// table has no entry, which `kubernetes` mode refuses.
pub fn access(method: &Method, route: &str) -> Option<Access> {
    let path = mlflow_path(route);
    ENDPOINTS
        .iter()
        .find(|endpoint| endpoint.method == method && endpoint.path == path)
        .map(|endpoint| endpoint.access)
}

/// The table as JSON objects `{"method", "path", "access": "public"|"authenticated"|"rbac",
/// "permissions": [{"verb", "resource", "subresource"}]}` (`ferroflow endpoints`, for the e2e
/// isolation test and for writing Roles).
pub fn json_lines() -> Vec<String> {
    ENDPOINTS
        .iter()
        .map(|endpoint| {
            let access = match endpoint.access {
                Access::Public => "public",
                Access::Authenticated => "authenticated",
                Access::Rbac(_) | Access::Promote => "rbac",
            };
            let permissions: Vec<serde_json::Value> = endpoint
                .access
                .permissions()
                .into_iter()
                .map(|permission| {
                    serde_json::json!({
                        "verb": permission.verb.as_str(),
                        "resource": permission.resource.name(),
                        "subresource": permission.resource.subresource(),
                    })
                })
                .collect();
            serde_json::json!({
                "method": endpoint.method.as_str(),
                "path": endpoint.path,
                "access": access,
                "permissions": permissions,
            })
            .to_string()
        })
        .collect()
}

/// A router that remembers the paths it registers, so what is served can be listed.
pub struct Routes<S = super::AppState> {
    router: Router<S>,
    paths: Vec<String>,
}

impl<S> Clone for Routes<S> {
    fn clone(&self) -> Self {
        Self {
            router: self.router.clone(),
            paths: self.paths.clone(),
        }
    }
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            paths: Vec::new(),
        }
    }

    /// [`Router::route`], remembering `path`, behind [`super::auth::authorize`]: no route is
    /// served without it. (On the method router, so a method the route does not serve
    /// still answers 405.)
    pub fn route(mut self, path: &str, method_router: MethodRouter<S>) -> Self {
        let method_router = method_router.route_layer(middleware::from_fn(super::auth::authorize));
        self.router = self.router.route(path, method_router);
        self.paths.push(path.to_owned());
        self
    }

    /// [`Router::merge`], remembering `other`'s paths.
    pub fn merge(mut self, other: Routes<S>) -> Self {
        self.router = self.router.merge(other.router);
        self.paths.extend(other.paths);
        self
    }

    /// [`Router::nest`], remembering `other`'s paths under `prefix`.
    pub fn nest(mut self, prefix: &str, other: Routes<S>) -> Self {
        self.router = self.router.nest(prefix, other.router);
        self.paths
            .extend(other.paths.iter().map(|path| format!("{prefix}{path}")));
        self
    }

    /// Changes the router (adds a `route_layer`), keeping the paths.
    pub fn map_router(mut self, change: impl FnOnce(Router<S>) -> Router<S>) -> Self {
        self.router = change(self.router);
        self
    }

    /// [`Router::with_state`], keeping the paths.
    pub fn with_state<S2>(self, state: S) -> Routes<S2> {
        Routes {
            router: self.router.with_state(state),
            paths: self.paths,
        }
    }

    /// Every path registered, as axum matches it (`{param}`, `{*rest}`).
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    pub fn router(&self) -> &Router<S> {
        &self.router
    }

    pub fn into_router(self) -> Router<S> {
        self.router
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use axum::body::Body;
    use axum::extract::{MatchedPath, Request};
    use axum::http::StatusCode;
    use axum::middleware::Next;
    use axum::response::{IntoResponse, Response};
    use tower::ServiceExt as _;

    use super::*;

    /// Answers whether the table knows the matched route. axum's `route_layer` also wraps a
    /// route's "method not allowed" answer, so the route is called first to tell a method
    /// the route does not serve (405) from one it does (the handlers run on a scratch store).
    async fn table_lookup(request: Request, next: Next) -> Response {
        let method = request.method().clone();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(|matched| matched.as_str().to_owned())
            .unwrap_or_default();
        let served = next.run(request).await;
        if served.status() == StatusCode::METHOD_NOT_ALLOWED {
            return served;
        }
        match access(&method, &route) {
            Some(_) => (StatusCode::OK, format!("{method} {route}")).into_response(),
            None => (StatusCode::IM_A_TEAPOT, route).into_response(),
        }
    }

    /// A concrete request path for a route: parameters filled in.
    fn concrete(route: &str) -> String {
        route
            .split('/')
            .map(|segment| {
                if segment.starts_with('{') {
                    "x"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    #[tokio::test]
    async fn every_served_endpoint_has_exactly_one_table_entry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = crate::api::tests::state(dir.path()).await;
        let served = crate::api::served_routes(state);
        let paths = served.paths().to_vec();
        let router = served
            .into_router()
            .route_layer(middleware::from_fn(table_lookup));
        let methods = [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ];
        let mut missing = Vec::new();
        let mut covered = HashSet::new();
        for path in &paths {
            for method in &methods {
                let request = Request::builder()
                    .method(method.clone())
                    .uri(concrete(path))
                    .body(Body::empty())
                    .expect("request");
                let response = router.clone().oneshot(request).await.expect("response");
                match response.status() {
                    // axum answers a method the route does not serve with 405.
                    StatusCode::METHOD_NOT_ALLOWED => {}
                    StatusCode::OK => {
                        covered.insert((method.clone(), mlflow_path(path).to_owned()));
                    }
                    _ => missing.push(format!("{method} {path}")),
                }
            }
        }
        assert!(
            missing.is_empty(),
            "endpoints without an entry in api::endpoints::ENDPOINTS: {missing:#?}"
        );
        let stale: Vec<_> = ENDPOINTS
            .iter()
            .filter(|endpoint| !covered.contains(&(endpoint.method.clone(), endpoint.path.into())))
            .map(|endpoint| format!("{} {}", endpoint.method, endpoint.path))
            .collect();
        assert!(
            stale.is_empty(),
            "entries for endpoints not served: {stale:#?}"
        );
        let distinct: HashSet<_> = ENDPOINTS
            .iter()
            .map(|endpoint| (endpoint.method.clone(), endpoint.path))
            .collect();
        assert_eq!(
            distinct.len(),
            ENDPOINTS.len(),
            "an endpoint is listed twice"
        );
        assert!(
            covered.len() > 80,
            "only {} endpoints probed",
            covered.len()
        );
    }

    #[test]
    fn api_prefixes_name_the_same_endpoint() {
        for route in ["/api/2.0/mlflow/runs/get", "/ajax-api/2.0/mlflow/runs/get"] {
            assert_eq!(
                access(&Method::GET, route),
                Some(Access::Rbac(permission(Get, Resource::Experiments)))
            );
        }
        assert_eq!(
            access(&Method::GET, "/api/2.0/mlflow-artifacts/artifacts"),
            Some(Access::Rbac(permission(List, Resource::Experiments)))
        );
        assert_eq!(access(&Method::POST, "/health"), None);
    }

    #[test]
    fn alias_moves_and_stage_changes_need_promote() {
        for (method, route) in [
            (Method::POST, "/api/2.0/mlflow/registered-models/alias"),
            (Method::DELETE, "/api/2.0/mlflow/registered-models/alias"),
            (
                Method::POST,
                "/api/2.0/mlflow/model-versions/transition-stage",
            ),
        ] {
            let needed = access(&method, route).map(Access::permissions);
            assert_eq!(
                needed,
                Some(vec![
                    permission(Update, Resource::RegisteredModels),
                    permission(Update, Resource::RegisteredModelsPromote),
                ]),
                "{method} {route}"
            );
        }
        assert_eq!(
            access(&Method::POST, "/api/2.0/mlflow/model-versions/create"),
            Some(Access::Rbac(permission(Update, Resource::RegisteredModels)))
        );
    }
}
