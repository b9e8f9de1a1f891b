//! `--auth kubernetes`: who is calling (a TokenReview of the bearer token) and may they do
//! this (a SubjectAccessReview per permission the endpoint table names, in the request's
//! workspace = namespace). Both answers are cached briefly; tokens are kept only as a hash
//! and never logged. When the API server cannot answer, requests are refused (503), never
//! let through.
//!
//! The middleware sits on every route ([`super::endpoints::Routes::route`]); `--auth none`
//! passes every request on.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::body::{Body, to_bytes};
use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures::{StreamExt as _, stream};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use super::endpoints::{self, Access, Permission, Resource, Verb};
use super::error::{ApiError, ErrorCode};
use crate::crd::GROUP;
use crate::store::registry::Actor;

/// The header MLflow's client names the workspace in (`MLFLOW_WORKSPACE`).
pub const WORKSPACE_HEADER: &str = "x-mlflow-workspace";
/// The header an authenticating proxy (oauth2-proxy) passes the caller's token in.
pub const FORWARDED_TOKEN_HEADER: &str = "x-forwarded-access-token";
/// The workspace of a request that names none and whose caller is not a service account.
pub const DEFAULT_WORKSPACE: &str = "default";
/// How long one call to the API server may take before the request is refused (503).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Cached identities or decisions kept at most; beyond it expired ones are dropped first,
/// then everything (the next requests review again).
const CACHE_CAPACITY: usize = 10_000;
/// Largest body read to find the model a promotion names (the JSON body limit).
const MAX_NAMED_BODY: usize = 16 * 1024 * 1024;

/// `--auth`: how the tracking API decides who may call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Anyone who reaches the port may do anything (a laptop).
    None,
    /// Kubernetes tokens and RBAC: TokenReview, then SubjectAccessReview per request.
    Kubernetes,
}

/// Settings of `--auth kubernetes`.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Audiences a token must be valid for (empty: the API server's own).
    pub audiences: Vec<String>,
    /// How long a reviewed token's identity is reused (shortened to the token's expiry).
    pub identity_ttl: Duration,
    /// How long an access decision (allowed or denied) is reused.
    pub decision_ttl: Duration,
}

/// The authentication the router applies.
#[derive(Clone, Default)]
pub enum Auth {
    /// Everything allowed.
    #[default]
    None,
    Kubernetes(Arc<Authorizer>),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => formatter.write_str("Auth::None"),
            Auth::Kubernetes(_) => formatter.write_str("Auth::Kubernetes"),
        }
    }
}

/// The authenticated caller, as the TokenReview named them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    pub user: String,
    pub groups: Vec<String>,
    pub uid: Option<String>,
}

impl Caller {
    /// `<ns>` of a service account's user name `system:serviceaccount:<ns>:<sa>`.
    pub fn service_account_namespace(&self) -> Option<&str> {
        let rest = self.user.strip_prefix("system:serviceaccount:")?;
        let (namespace, account) = rest.split_once(':')?;
        (!namespace.is_empty() && !account.is_empty()).then_some(namespace)
    }
}

/// Who a handler acts for, as the data records it: the authenticated [`Caller`], or nobody
/// known (`--auth none`, where the data keeps what clients send).
#[derive(Debug, Clone, Default)]
pub struct Identity(pub Option<Caller>);

impl Identity {
    /// The store's actor for this request's writes (ownership is enforced either way).
    pub fn actor(&self) -> Actor<'_> {
        match &self.0 {
            Some(caller) => Actor::User(&caller.user),
            None => Actor::Api,
        }
    }

    /// The authenticated user's name.
    pub fn user(&self) -> Option<&str> {
        self.0.as_ref().map(|caller| caller.user.as_str())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The middleware ([`authorize`]) put it there; absent without authentication.
        Ok(Identity(parts.extensions.get::<Caller>().cloned()))
    }
}

/// The workspace (= namespace) a request acts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace(pub String);

/// One SubjectAccessReview: may this caller do this in this namespace?
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccessQuestion {
    pub caller: Caller,
    pub namespace: String,
    pub permission: Permission,
    /// The object's name, so Roles can narrow with `resourceNames`.
    pub name: Option<String>,
}

/// Calling the API server failed (unreachable, timed out, refused the review itself).
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("failed to reach the Kubernetes API server")]
    Api(#[source] kube::Error),
    #[error("the Kubernetes API server did not answer within {0:?}")]
    Timeout(Duration),
}

/// The two reviews and the namespace list, against the API server (or a fake in unit tests).
#[async_trait]
pub trait Reviewer: Send + Sync {
    /// The token's user, or `None` when the API server does not accept it.
    async fn review_token(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Option<ReviewedToken>, ReviewError>;

    async fn review_access(&self, question: &AccessQuestion) -> Result<bool, ReviewError>;

    /// The names of the cluster's namespaces (the workspaces there are).
    async fn namespaces(&self) -> Result<Vec<String>, ReviewError>;
}

/// A token the API server accepted.
#[derive(Debug, Clone)]
pub struct ReviewedToken {
    pub caller: Caller,
}

/// Reviews with the server's own credentials (ClusterRole `system:auth-delegator`), and lists
/// namespaces with them (ClusterRole `ferroflow-server` of config/rbac).
pub struct KubeReviewer {
    client: Client,
}

impl KubeReviewer {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

async fn within_timeout<T>(
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ReviewError> {
    tokio::time::timeout(REVIEW_TIMEOUT, call)
        .await
        .map_err(|_| ReviewError::Timeout(REVIEW_TIMEOUT))?
        .map_err(ReviewError::Api)
}

#[async_trait]
impl Reviewer for KubeReviewer {
    async fn review_token(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Option<ReviewedToken>, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: (!audiences.is_empty()).then(|| audiences.to_vec()),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = within_timeout(api.create(&PostParams::default(), &review)).await?;
        let Some(status) = answer.status else {
            return Ok(None);
        };
        let user = status.user.unwrap_or_default();
        match (status.authenticated, user.username) {
            (Some(true), Some(username)) if !username.is_empty() => Ok(Some(ReviewedToken {
                caller: Caller {
                    user: username,
                    groups: user.groups.unwrap_or_default(),
                    uid: user.uid,
                },
            })),
            _ => Ok(None),
        }
    }

    async fn review_access(&self, question: &AccessQuestion) -> Result<bool, ReviewError> {
        let permission = question.permission;
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(question.caller.user.clone()),
                groups: Some(question.caller.groups.clone()),
                uid: question.caller.uid.clone(),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(GROUP.to_owned()),
                    namespace: Some(question.namespace.clone()),
                    resource: Some(permission.resource.name().to_owned()),
                    subresource: permission.resource.subresource().map(str::to_owned),
                    verb: Some(permission.verb.as_str().to_owned()),
                    name: question.name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer = within_timeout(api.create(&PostParams::default(), &review)).await?;
        Ok(answer.status.is_some_and(|status| status.allowed))
    }

    async fn namespaces(&self) -> Result<Vec<String>, ReviewError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let listed = within_timeout(api.list_metadata(&ListParams::default())).await?;
        Ok(listed
            .items
            .into_iter()
            .filter_map(|namespace| namespace.metadata.name)
            .collect())
    }
}

/// A map whose entries expire.
struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &K, now: Instant) -> Option<V> {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match entries.get(key) {
            Some((value, expires)) if *expires > now => Some(value.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&self, key: K, value: V, expires: Instant, now: Instant) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (value, expires));
    }
}

/// Why a request is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "Authentication required: send 'Authorization: Bearer <token>' with a Kubernetes token (MLFLOW_TRACKING_TOKEN)"
    )]
    MissingToken,
    #[error("The Authorization header must be 'Bearer <token>'")]
    MalformedAuthorization,
    #[error("The bearer token was not accepted by the Kubernetes API server")]
    InvalidToken,
    #[error("Permission denied: '{user}' may not {verb} {resource} in namespace '{namespace}'")]
    Denied {
        user: String,
        verb: &'static str,
        resource: String,
        namespace: String,
    },
    #[error("Invalid workspace '{0}': a workspace is a Kubernetes namespace name")]
    InvalidWorkspace(String),
    #[error("Cannot authorize the request: {0}")]
    Unavailable(#[source] ReviewError),
    #[error("Endpoint '{0}' has no authorization rule; refused")]
    NoRule(String),
    #[error("Cannot read the request body: {0}")]
    Body(String),
}

impl From<AuthError> for ApiError {
    fn from(error: AuthError) -> Self {
        let code = match &error {
            AuthError::MissingToken
            | AuthError::MalformedAuthorization
            | AuthError::InvalidToken => ErrorCode::Unauthenticated,
            AuthError::Denied { .. } => ErrorCode::PermissionDenied,
            AuthError::InvalidWorkspace(_) | AuthError::Body(_) => ErrorCode::InvalidParameterValue,
            AuthError::Unavailable(_) => ErrorCode::TemporarilyUnavailable,
            AuthError::NoRule(_) => ErrorCode::InternalError,
        };
        // The source (the API server's error) is told too, so an operator sees why.
        let message = match &error {
            AuthError::Unavailable(source) => {
                let detail = std::error::Error::source(source)
                    .map(|cause| format!(" ({cause})"))
                    .unwrap_or_default();
                format!("{error}{detail}")
            }
            _ => error.to_string(),
        };
        ApiError::new(code, message)
    }
}

/// How many reviews (and namespace lists) the API server was asked for (to check the caches
/// do their job).
#[derive(Debug, Default)]
pub struct ReviewCounts {
    pub token_reviews: AtomicU64,
    pub access_reviews: AtomicU64,
    pub namespace_lists: AtomicU64,
}

/// How many namespaces' SubjectAccessReviews a workspace list asks for at once.
const NAMESPACE_CHECKS_IN_FLIGHT: usize = 8;

/// TokenReview and SubjectAccessReview with their caches.
pub struct Authorizer {
    reviewer: Box<dyn Reviewer>,
    settings: AuthSettings,
    /// By SHA-256 of the token: the token itself is never kept.
    identities: TtlCache<[u8; 32], Caller>,
    decisions: TtlCache<AccessQuestion, bool>,
    /// The cluster's namespaces, listed again after the decision TTL.
    namespaces: TtlCache<(), Vec<String>>,
    pub counts: ReviewCounts,
}

impl Authorizer {
    pub fn new(reviewer: Box<dyn Reviewer>, settings: AuthSettings) -> Self {
        Self {
            reviewer,
            settings,
            identities: TtlCache::new(),
            decisions: TtlCache::new(),
            namespaces: TtlCache::new(),
            counts: ReviewCounts::default(),
        }
    }

    /// `ferroflow_auth_reviews_total{kind}` in Prometheus' text format, for `/metrics`: how
    /// often the API server was asked (the caches keep it to a handful per TTL).
    pub fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let _infallible = write!(
            out,
            "# HELP ferroflow_auth_reviews_total Reviews asked of the Kubernetes API server: token (TokenReview), access (SubjectAccessReview).\n\
             # TYPE ferroflow_auth_reviews_total counter\n\
             ferroflow_auth_reviews_total{{kind=\"token\"}} {}\n\
             ferroflow_auth_reviews_total{{kind=\"access\"}} {}\n\
             # HELP ferroflow_auth_namespace_lists_total Namespace lists asked of the Kubernetes API server (workspace lists).\n\
             # TYPE ferroflow_auth_namespace_lists_total counter\n\
             ferroflow_auth_namespace_lists_total {}\n",
            self.counts.token_reviews.load(Ordering::Relaxed),
            self.counts.access_reviews.load(Ordering::Relaxed),
            self.counts.namespace_lists.load(Ordering::Relaxed),
        );
    }

    /// The caller a token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some(caller) = self.identities.get(&key, now) {
            return Ok(caller);
        }
        self.counts.token_reviews.fetch_add(1, Ordering::Relaxed);
        let reviewed = self
            .reviewer
            .review_token(token, &self.settings.audiences)
            .await
            .map_err(AuthError::Unavailable)?
            .ok_or(AuthError::InvalidToken)?;
        let mut lifetime = self.settings.identity_ttl;
        if let Some(left) = token_lifetime_left(token) {
            lifetime = lifetime.min(left);
        }
        self.identities
            .insert(key, reviewed.caller.clone(), now + lifetime, now);
        Ok(reviewed.caller)
    }

    /// Refuses unless the caller has `question`'s permission.
    pub async fn check(&self, question: AccessQuestion) -> Result<(), AuthError> {
        let now = Instant::now();
        let allowed = match self.decisions.get(&question, now) {
            Some(allowed) => allowed,
            None => {
                self.counts.access_reviews.fetch_add(1, Ordering::Relaxed);
                let allowed = self
                    .reviewer
                    .review_access(&question)
                    .await
                    .map_err(AuthError::Unavailable)?;
                self.decisions.insert(
                    question.clone(),
                    allowed,
                    now + self.settings.decision_ttl,
                    now,
                );
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Denied {
                user: question.caller.user,
                verb: question.permission.verb.as_str(),
                resource: question.permission.resource.display(),
                namespace: question.namespace,
            })
        }
    }
}

impl Authorizer {
    /// The cluster's namespaces in which `caller` may `list` experiments: the workspaces it may
    /// use, sorted. The namespace list and each decision are cached like every other decision.
    pub async fn usable_namespaces(&self, caller: &Caller) -> Result<Vec<String>, AuthError> {
        let now = Instant::now();
        let mut names = match self.namespaces.get(&(), now) {
            Some(names) => names,
            None => {
                self.counts.namespace_lists.fetch_add(1, Ordering::Relaxed);
                let names = self
                    .reviewer
                    .namespaces()
                    .await
                    .map_err(AuthError::Unavailable)?;
                self.namespaces
                    .insert((), names.clone(), now + self.settings.decision_ttl, now);
                names
            }
        };
        names.sort();
        names.retain(|name| is_namespace_name(name));
        let decisions: Vec<_> = stream::iter(names.into_iter().map(|name| async move {
            let question = AccessQuestion {
                caller: caller.clone(),
                namespace: name.clone(),
                permission: endpoints::permission(Verb::List, Resource::Experiments),
                name: None,
            };
            (name, self.check(question).await)
        }))
        .buffered(NAMESPACE_CHECKS_IN_FLIGHT)
        .collect()
        .await;
        let mut usable = Vec::new();
        for (name, decision) in decisions {
            match decision {
                Ok(()) => usable.push(name),
                Err(AuthError::Denied { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(usable)
    }
}

/// Time until the token's `exp` claim, when it is a JWT (it was reviewed, so trusting the
/// claim only shortens caching; `None` leaves the TTL alone).
fn token_lifetime_left(token: &str) -> Option<Duration> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let expires = claims.get("exp")?.as_i64()?;
    let now = chrono::Utc::now().timestamp();
    Some(Duration::from_secs(
        u64::try_from(expires - now).unwrap_or(0),
    ))
}

/// The bearer token of a request: `Authorization: Bearer …`, else `X-Forwarded-Access-Token`.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let authorization = headers.get(header::AUTHORIZATION).map(|value| {
        value
            .to_str()
            .map_err(|_| AuthError::MalformedAuthorization)
    });
    if let Some(authorization) = authorization {
        let authorization = authorization?.trim();
        let (scheme, token) = authorization
            .split_once(' ')
            .ok_or(AuthError::MalformedAuthorization)?;
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(AuthError::MalformedAuthorization);
        }
        return Ok(token);
    }
    let forwarded = headers
        .get(FORWARDED_TOKEN_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or(AuthError::MissingToken)?;
    Ok(forwarded
        .strip_prefix("Bearer ")
        .map(str::trim)
        .unwrap_or(forwarded))
}

/// A Kubernetes namespace name (RFC 1123 label), as MLflow checks workspace names.
pub fn is_namespace_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// The request's workspace: `X-MLFLOW-WORKSPACE`, else the caller's service-account
/// namespace, else `default`.
pub fn workspace(headers: &HeaderMap, caller: Option<&Caller>) -> Result<Workspace, AuthError> {
    if let Some(value) = headers.get(WORKSPACE_HEADER) {
        let name = value
            .to_str()
            .map_err(|_| {
                AuthError::InvalidWorkspace(String::from_utf8_lossy(value.as_bytes()).into())
            })?
            .trim();
        if !name.is_empty() {
            if !is_namespace_name(name) {
                return Err(AuthError::InvalidWorkspace(name.to_owned()));
            }
            return Ok(Workspace(name.to_owned()));
        }
    }
    let namespace = caller
        .and_then(Caller::service_account_namespace)
        .unwrap_or(DEFAULT_WORKSPACE);
    Ok(Workspace(namespace.to_owned()))
}

/// The model a promotion names: `name` in the query, else in the JSON body (read and put
/// back).
async fn promoted_model(request: Request) -> Result<(Request, Option<String>), AuthError> {
    let from_query = request.uri().query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "name")
            .map(|(_, value)| value.into_owned())
    });
    if from_query.is_some() {
        return Ok((request, from_query));
    }
    let (parts, body) = request.into_parts();
    let bytes = to_bytes(body, MAX_NAMED_BODY)
        .await
        .map_err(|error| AuthError::Body(error.to_string()))?;
    let name = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|body| body.get("name")?.as_str().map(str::to_owned));
    Ok((Request::from_parts(parts, Body::from(bytes)), name))
}

/// The middleware on every route: authenticates and authorizes the call as the endpoint
/// table says, and records the caller and workspace in the request's extensions.
pub async fn authorize(request: Request, next: Next) -> Response {
    match authorized(request).await {
        Ok(request) => next.run(request).await,
        Err(error) => ApiError::from(error).into_response(),
    }
}

async fn authorized(mut request: Request) -> Result<Request, AuthError> {
    let authorizer = match request.extensions().get::<Auth>() {
        Some(Auth::Kubernetes(authorizer)) => Arc::clone(authorizer),
        Some(Auth::None) => {
            // No identity, but the header still selects the workspace (a laptop mimicking a
            // cluster).
            let workspace = workspace(request.headers(), None)?;
            request.extensions_mut().insert(workspace);
            return Ok(request);
        }
        // Routes are served only by `api::served_routes`, which always adds the setting.
        None => return Err(AuthError::NoRule("(no auth setting)".into())),
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_owned())
        .unwrap_or_default();
    let access = endpoints::access(request.method(), &route)
        .ok_or_else(|| AuthError::NoRule(format!("{} {route}", request.method())))?;
    if access == Access::Public {
        return Ok(request);
    }
    // GraphQL's fields are dispatched with its caller already authenticated.
    let caller = match request.extensions().get::<Caller>() {
        Some(caller) => caller.clone(),
        None => {
            let token = bearer_token(request.headers())?;
            authorizer.authenticate(token).await?
        }
    };
    let workspace = workspace(request.headers(), Some(&caller))?;
    let permissions = access.permissions();
    let name = if access == Access::Promote {
        let (read, name) = promoted_model(request).await?;
        request = read;
        name
    } else {
        None
    };
    for permission in permissions {
        authorizer
            .check(AccessQuestion {
                caller: caller.clone(),
                namespace: workspace.0.clone(),
                permission,
                name: name.clone(),
            })
            .await?;
    }
    request.extensions_mut().insert(caller);
    request.extensions_mut().insert(workspace);
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::endpoints::{Resource, Verb, permission};

    /// Answers from a fixed list of (token → caller) and allowed questions, counting calls.
    struct FakeReviewer {
        tokens: HashMap<String, Caller>,
        allowed: Vec<(String, Permission, Option<String>)>,
        namespaces: Vec<String>,
        unreachable: bool,
    }

    #[async_trait]
    impl Reviewer for FakeReviewer {
        async fn review_token(
            &self,
            token: &str,
            _audiences: &[String],
        ) -> Result<Option<ReviewedToken>, ReviewError> {
            if self.unreachable {
                return Err(ReviewError::Timeout(REVIEW_TIMEOUT));
            }
            Ok(self.tokens.get(token).map(|caller| ReviewedToken {
                caller: caller.clone(),
            }))
        }

        async fn review_access(&self, question: &AccessQuestion) -> Result<bool, ReviewError> {
            if self.unreachable {
                return Err(ReviewError::Timeout(REVIEW_TIMEOUT));
            }
            Ok(self.allowed.iter().any(|(namespace, permission, name)| {
                *namespace == question.namespace
                    && *permission == question.permission
                    && (name.is_none() || *name == question.name)
            }))
        }

        async fn namespaces(&self) -> Result<Vec<String>, ReviewError> {
            if self.unreachable {
                return Err(ReviewError::Timeout(REVIEW_TIMEOUT));
            }
            Ok(self.namespaces.clone())
        }
    }

    fn alice() -> Caller {
        Caller {
            user: "system:serviceaccount:team-a:alice".into(),
            groups: vec!["system:serviceaccounts".into()],
            uid: None,
        }
    }

    fn authorizer(unreachable: bool) -> Authorizer {
        Authorizer::new(
            Box::new(FakeReviewer {
                tokens: HashMap::from([("alice-token".to_owned(), alice())]),
                allowed: vec![
                    (
                        "team-a".into(),
                        permission(Verb::Get, Resource::Experiments),
                        None,
                    ),
                    (
                        "team-a".into(),
                        permission(Verb::Update, Resource::RegisteredModelsPromote),
                        Some("churn".into()),
                    ),
                    (
                        "team-c".into(),
                        permission(Verb::List, Resource::Experiments),
                        None,
                    ),
                    (
                        "team-a".into(),
                        permission(Verb::List, Resource::Experiments),
                        None,
                    ),
                ],
                namespaces: ["team-c", "kube-system", "default", "team-a", "team-b"]
                    .map(String::from)
                    .to_vec(),
                unreachable,
            }),
            AuthSettings {
                audiences: Vec::new(),
                identity_ttl: Duration::from_secs(60),
                decision_ttl: Duration::from_secs(30),
            },
        )
    }

    fn question(
        verb: Verb,
        resource: Resource,
        namespace: &str,
        name: Option<&str>,
    ) -> AccessQuestion {
        AccessQuestion {
            caller: alice(),
            namespace: namespace.into(),
            permission: permission(verb, resource),
            name: name.map(Into::into),
        }
    }

    #[tokio::test]
    async fn a_token_is_reviewed_once_while_cached() {
        let authorizer = authorizer(false);
        for _ in 0..100 {
            assert_eq!(
                authorizer.authenticate("alice-token").await.unwrap(),
                alice()
            );
        }
        assert_eq!(authorizer.counts.token_reviews.load(Ordering::Relaxed), 1);
        assert!(matches!(
            authorizer.authenticate("forged").await,
            Err(AuthError::InvalidToken)
        ));
    }

    #[tokio::test]
    async fn decisions_are_cached_allowed_and_denied() {
        let authorizer = authorizer(false);
        for _ in 0..50 {
            authorizer
                .check(question(Verb::Get, Resource::Experiments, "team-a", None))
                .await
                .unwrap();
            let denied = authorizer
                .check(question(Verb::Get, Resource::Experiments, "team-b", None))
                .await
                .unwrap_err();
            assert_eq!(
                denied.to_string(),
                "Permission denied: 'system:serviceaccount:team-a:alice' may not get experiments in namespace 'team-b'"
            );
        }
        assert_eq!(authorizer.counts.access_reviews.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn promote_is_checked_per_model_name() {
        let authorizer = authorizer(false);
        let promote = |name| {
            question(
                Verb::Update,
                Resource::RegisteredModelsPromote,
                "team-a",
                Some(name),
            )
        };
        authorizer.check(promote("churn")).await.unwrap();
        let denied = authorizer.check(promote("fraud")).await.unwrap_err();
        assert!(
            denied
                .to_string()
                .contains("update registeredmodels/promote in namespace 'team-a'")
        );
    }

    #[tokio::test]
    async fn workspaces_are_the_namespaces_the_caller_may_list_experiments_in() {
        let reachable = authorizer(false);
        for _ in 0..3 {
            assert_eq!(
                reachable.usable_namespaces(&alice()).await.unwrap(),
                ["team-a", "team-c"]
            );
        }
        // One list and one review per namespace, then the caches answer.
        assert_eq!(reachable.counts.namespace_lists.load(Ordering::Relaxed), 1);
        assert_eq!(reachable.counts.access_reviews.load(Ordering::Relaxed), 5);
        let error = authorizer(true)
            .usable_namespaces(&alice())
            .await
            .unwrap_err();
        assert_eq!(ApiError::from(error).error_code.status().as_u16(), 503);
    }

    #[tokio::test]
    async fn an_unreachable_api_server_refuses_with_503() {
        let authorizer = authorizer(true);
        let error = ApiError::from(authorizer.authenticate("alice-token").await.unwrap_err());
        assert_eq!(error.error_code, ErrorCode::TemporarilyUnavailable);
        let error = ApiError::from(
            authorizer
                .check(question(Verb::Get, Resource::Experiments, "team-a", None))
                .await
                .unwrap_err(),
        );
        assert_eq!(error.error_code.status().as_u16(), 503);
    }

    #[test]
    fn token_expiry_bounds_the_identity_cache() {
        let claims = |exp: i64| {
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(serde_json::json!({"exp": exp}).to_string());
            format!("header.{payload}.signature")
        };
        let now = chrono::Utc::now().timestamp();
        let left = token_lifetime_left(&claims(now + 30)).unwrap();
        assert!(left <= Duration::from_secs(30) && left >= Duration::from_secs(28));
        assert_eq!(token_lifetime_left(&claims(now - 10)), Some(Duration::ZERO));
        assert_eq!(token_lifetime_left("opaque-token"), None);
    }

    #[test]
    fn tokens_come_from_authorization_or_the_forwarded_header() {
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            map
        };
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer abc")])).unwrap(),
            "abc"
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "bearer  abc ")])).unwrap(),
            "abc"
        );
        assert_eq!(
            bearer_token(&headers(&[(FORWARDED_TOKEN_HEADER, "xyz")])).unwrap(),
            "xyz"
        );
        assert!(matches!(
            bearer_token(&headers(&[("authorization", "Basic dTpw")])),
            Err(AuthError::MalformedAuthorization)
        ));
        assert!(matches!(
            bearer_token(&headers(&[])),
            Err(AuthError::MissingToken)
        ));
    }

    #[test]
    fn workspace_is_the_header_else_the_service_account_namespace_else_default() {
        let mut headers = HeaderMap::new();
        assert_eq!(workspace(&headers, Some(&alice())).unwrap().0, "team-a");
        assert_eq!(workspace(&headers, None).unwrap().0, DEFAULT_WORKSPACE);
        let human = Caller {
            user: "jane@example.com".into(),
            groups: Vec::new(),
            uid: None,
        };
        assert_eq!(
            workspace(&headers, Some(&human)).unwrap().0,
            DEFAULT_WORKSPACE
        );
        headers.insert(WORKSPACE_HEADER, "team-b".parse().unwrap());
        assert_eq!(workspace(&headers, Some(&alice())).unwrap().0, "team-b");
        headers.insert(WORKSPACE_HEADER, "Team_B".parse().unwrap());
        assert!(matches!(
            workspace(&headers, Some(&alice())),
            Err(AuthError::InvalidWorkspace(_))
        ));
    }
}
