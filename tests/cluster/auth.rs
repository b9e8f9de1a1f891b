//! `--auth kubernetes` against the real API server: ServiceAccount tokens from the
//! TokenRequest API, Roles and RoleBindings in a test namespace, the tracking server on a
//! loopback port reviewing them with TokenReview and SubjectAccessReview.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, ensure};
use ferroflow::api::auth::{Auth, AuthSettings, Authorizer, KubeReviewer, WORKSPACE_HEADER};
use ferroflow::api::{self, AppState, ServerConfig};
use ferroflow::artifacts::ArtifactStore;
use ferroflow::server::{self, ConnectionLimits};
use ferroflow::store::Store;
use ferroflow::store::registry::{PolicySpec, Rule, TagRule};
use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, Config};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::harness::{self, TestNamespace};

/// A tracking server on a loopback port, stopped when dropped.
struct AuthServer {
    base: String,
    http: reqwest::Client,
    authorizer: Arc<Authorizer>,
    /// The server's store, for what the operator would copy into it (promotion policies).
    store: Store,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

impl AuthServer {
    async fn start(client: Client) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let uri = format!("sqlite:///{}", dir.path().join("auth.db").display());
        let authorizer = Arc::new(Authorizer::new(
            Box::new(KubeReviewer::new(client)),
            AuthSettings {
                audiences: Vec::new(),
                identity_ttl: Duration::from_secs(60),
                decision_ttl: Duration::from_secs(30),
            },
        ));
        let store = Store::open_migrated(&uri).await?;
        let state = AppState {
            store: store.clone(),
            artifacts: ArtifactStore::open(&dir.path().join("artifacts").display().to_string())?,
            config: Arc::new(ServerConfig {
                default_artifact_root: "mlflow-artifacts:".into(),
                ui_dir: None,
            }),
            auth: Auth::Kubernetes(Arc::clone(&authorizer)),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server::serve(
            listener,
            api::router(state),
            ConnectionLimits::default(),
            async {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            base,
            http: reqwest::Client::new(),
            authorizer,
            store,
            _stop: stop,
            _dir: dir,
        })
    }

    /// `method path` with `body` (JSON, or the query of a GET) as the holder of `token`, in
    /// `workspace` when given; the status and the JSON answer. `path` is under MLflow's
    /// `/api/2.0/mlflow` unless it starts with `/api/` (ferroflow's own endpoints).
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
        token: Option<&str>,
        workspace: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = if path.starts_with("/api/") {
            format!("{}{path}", self.base)
        } else {
            format!("{}/api/2.0/mlflow{path}", self.base)
        };
        let mut request = if method == reqwest::Method::GET {
            let mut url = url::Url::parse(&url)?;
            for (key, value) in body.as_object().into_iter().flatten() {
                let value = value
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or(value.to_string());
                url.query_pairs_mut().append_pair(key, &value);
            }
            self.http.get(url)
        } else {
            self.http.request(method, url).json(&body)
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(workspace) = workspace {
            request = request.header(WORKSPACE_HEADER, workspace);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }
}

fn role(name: &str, rules: Vec<PolicyRule>) -> Role {
    let mut role = Role {
        rules: Some(rules),
        ..Default::default()
    };
    role.metadata.name = Some(name.into());
    role
}

fn rule(resources: &[&str], verbs: &[&str]) -> PolicyRule {
    PolicyRule {
        api_groups: Some(vec!["ferroflow.dev".into()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..Default::default()
    }
}

fn binding(role: &str, namespace: &str, accounts: &[&str]) -> RoleBinding {
    let mut binding = RoleBinding {
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: role.into(),
        },
        subjects: Some(
            accounts
                .iter()
                .map(|account| Subject {
                    kind: "ServiceAccount".into(),
                    name: (*account).into(),
                    namespace: Some(namespace.into()),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    };
    binding.metadata.name = Some(role.into());
    binding
}

/// A token of ServiceAccount `name` from the TokenRequest API, optionally bound to a Secret.
async fn token(
    accounts: &Api<ServiceAccount>,
    name: &str,
    bound_to: Option<&Secret>,
) -> anyhow::Result<String> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(600),
            bound_object_ref: bound_to.map(|secret| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: secret.metadata.name.clone(),
                uid: secret.metadata.uid.clone(),
            }),
        }),
        ..Default::default()
    };
    let answer = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for {name}"))?;
    answer
        .status
        .and_then(|status| status.token)
        .context("TokenRequest answered without a token")
}

/// Waits until the API server's TokenReview no longer authenticates `token`, polling with a
/// deadline (how soon it notices a deleted bound object is internal to it).
async fn api_server_refuses(client: Client, token: &str, deadline: Duration) -> anyhow::Result<()> {
    let reviews: Api<TokenReview> = Api::all(client);
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            ..Default::default()
        },
        ..Default::default()
    };
    let started = tokio::time::Instant::now();
    loop {
        let answer = reviews.create(&PostParams::default(), &review).await?;
        let authenticated = answer
            .status
            .and_then(|status| status.authenticated)
            .unwrap_or(false);
        if !authenticated {
            return Ok(());
        }
        ensure!(
            started.elapsed() < deadline,
            "the API server still accepts the token after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// ServiceAccounts `editors`, bound to an editor Role; `promoters` among them also to a
/// promoter Role.
async fn set_up_accounts(
    namespace: &TestNamespace,
    editors: &[&str],
    promoters: &[&str],
) -> anyhow::Result<()> {
    let accounts = namespace.api::<ServiceAccount>();
    for name in editors {
        let mut account = ServiceAccount::default();
        account.metadata.name = Some((*name).into());
        accounts.create(&PostParams::default(), &account).await?;
    }
    let all = ["get", "list", "create", "update", "delete"];
    let roles = namespace.api::<Role>();
    roles
        .create(
            &PostParams::default(),
            &role(
                "ferroflow-editor",
                vec![rule(
                    &["experiments", "registeredmodels", "loggedmodels"],
                    &all,
                )],
            ),
        )
        .await?;
    roles
        .create(
            &PostParams::default(),
            &role(
                "ferroflow-promoter",
                vec![rule(&["registeredmodels/promote"], &["update"])],
            ),
        )
        .await?;
    let bindings = namespace.api::<RoleBinding>();
    for binding in [
        binding("ferroflow-editor", &namespace.name, editors),
        binding("ferroflow-promoter", &namespace.name, promoters),
    ] {
        bindings.create(&PostParams::default(), &binding).await?;
    }
    Ok(())
}

#[tokio::test]
async fn tokens_and_rbac_decide_who_may_call() -> anyhow::Result<()> {
    let Some(cluster) = harness::connect("tokens_and_rbac_decide_who_may_call").await? else {
        return Ok(());
    };
    cluster
        .in_namespace("ff-auth", |namespace: TestNamespace| async move {
            set_up_accounts(&namespace, &["editor", "robot"], &["editor"]).await?;
            let accounts = namespace.api::<ServiceAccount>();
            let editor = token(&accounts, "editor", None).await?;
            let robot = token(&accounts, "robot", None).await?;
            let server = AuthServer::start(namespace.client.clone()).await?;
            let ns = Some(namespace.name.as_str());
            use reqwest::Method;

            // Probes need nothing; the API needs a token the API server accepts.
            let health = server
                .http
                .get(format!("{}/health", server.base))
                .send()
                .await?;
            ensure!(health.status() == 200, "health: {}", health.status());
            let create = json!({"name": "exp"});
            let (status, body) = server
                .call(
                    Method::POST,
                    "/experiments/create",
                    create.clone(),
                    None,
                    ns,
                )
                .await?;
            ensure!(
                status == 401 && body["error_code"] == "UNAUTHENTICATED",
                "no token: {status} {body}"
            );
            let forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";
            let (status, body) = server
                .call(
                    Method::POST,
                    "/experiments/create",
                    create.clone(),
                    Some(forged),
                    ns,
                )
                .await?;
            ensure!(status == 401, "forged token: {status} {body}");

            // The editor works in its namespace: the header names it, or the token does.
            let (status, body) = server
                .call(
                    Method::POST,
                    "/experiments/create",
                    create.clone(),
                    Some(&editor),
                    ns,
                )
                .await?;
            ensure!(status == 200, "editor creates: {status} {body}");
            let experiment_id = body["experiment_id"].clone();
            let (status, body) = server
                .call(
                    Method::GET,
                    "/experiments/get",
                    json!({"experiment_id": experiment_id}),
                    Some(&editor),
                    None,
                )
                .await?;
            ensure!(
                status == 200 && body["experiment"]["name"] == "exp",
                "editor reads in its service account's namespace: {status} {body}"
            );
            // Another namespace: refused, naming verb, resource and namespace.
            let (status, body) = server
                .call(
                    Method::POST,
                    "/experiments/create",
                    json!({"name": "x"}),
                    Some(&editor),
                    Some("default"),
                )
                .await?;
            ensure!(
                status == 403
                    && body["error_code"] == "PERMISSION_DENIED"
                    && body["message"].as_str().is_some_and(
                        |m| m.contains("may not create experiments in namespace 'default'")
                    ),
                "editor in default: {status} {body}"
            );

            // The robot registers a version but may not move an alias; the editor may.
            let (status, body) = server
                .call(
                    Method::POST,
                    "/registered-models/create",
                    json!({"name": "churn"}),
                    Some(&robot),
                    ns,
                )
                .await?;
            ensure!(status == 200, "robot registers: {status} {body}");
            let version = json!({"name": "churn", "source": "s3://models/churn/1"});
            let (status, body) = server
                .call(
                    Method::POST,
                    "/model-versions/create",
                    version,
                    Some(&robot),
                    ns,
                )
                .await?;
            ensure!(status == 200, "robot creates a version: {status} {body}");
            let alias = json!({"name": "churn", "alias": "champion", "version": "1"});
            let (status, body) = server
                .call(
                    Method::POST,
                    "/registered-models/alias",
                    alias.clone(),
                    Some(&robot),
                    ns,
                )
                .await?;
            ensure!(
                status == 403
                    && body["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("update registeredmodels/promote")),
                "robot promotes: {status} {body}"
            );
            let (status, body) = server
                .call(
                    Method::POST,
                    "/registered-models/alias",
                    alias,
                    Some(&editor),
                    ns,
                )
                .await?;
            ensure!(status == 200, "editor promotes: {status} {body}");
            let (status, body) = server
                .call(
                    Method::GET,
                    "/registered-models/alias",
                    json!({"name": "churn", "alias": "champion"}),
                    Some(&robot),
                    ns,
                )
                .await?;
            ensure!(
                status == 200 && body["model_version"]["version"] == "1",
                "the alias moved: {status} {body}"
            );

            // GraphQL's fields are authorized as its caller in its workspace.
            let query = json!({"query": format!(
                "query {{ mlflowGetExperiment(input: {{experimentId: \"{}\"}}) {{ experiment {{ name }} }} }}",
                experiment_id.as_str().unwrap_or_default()
            )});
            for (token, workspace, expected) in [
                (editor.as_str(), ns, json!({"experiment": {"name": "exp"}})),
                (editor.as_str(), Some("default"), Value::Null),
            ] {
                let mut request = server
                    .http
                    .post(format!("{}/graphql", server.base))
                    .bearer_auth(token)
                    .json(&query);
                if let Some(workspace) = workspace {
                    request = request.header(WORKSPACE_HEADER, workspace);
                }
                let answer: Value = request.send().await?.json().await?;
                ensure!(
                    answer["data"]["mlflowGetExperiment"] == expected,
                    "graphql in {workspace:?}: {answer}"
                );
            }

            // Warm caches: many calls, no more reviews.
            let before = (
                server
                    .authorizer
                    .counts
                    .token_reviews
                    .load(Ordering::Relaxed),
                server
                    .authorizer
                    .counts
                    .access_reviews
                    .load(Ordering::Relaxed),
            );
            for _ in 0..200 {
                let (status, _) = server
                    .call(
                        Method::GET,
                        "/experiments/get",
                        json!({"experiment_id": experiment_id}),
                        Some(&editor),
                        ns,
                    )
                    .await?;
                ensure!(status == 200);
            }
            let after = (
                server
                    .authorizer
                    .counts
                    .token_reviews
                    .load(Ordering::Relaxed),
                server
                    .authorizer
                    .counts
                    .access_reviews
                    .load(Ordering::Relaxed),
            );
            ensure!(
                before == after,
                "reviews with warm caches: {before:?} -> {after:?}"
            );

            // A token bound to a Secret stops working when the Secret is deleted.
            let secrets = namespace.api::<Secret>();
            let mut secret = Secret::default();
            secret.metadata.name = Some("session".into());
            let secret = secrets.create(&PostParams::default(), &secret).await?;
            let bound = token(&accounts, "editor", Some(&secret)).await?;
            secrets.delete("session", &DeleteParams::default()).await?;
            // The API server checks the bound Secret in its informer cache first, so it may
            // accept the token for a moment after the delete. Ask it directly (not through our
            // server, whose cache would keep the first answer) until it refuses the token.
            api_server_refuses(namespace.client.clone(), &bound, Duration::from_secs(20)).await?;
            let (status, body) = server
                .call(
                    Method::POST,
                    "/experiments/search",
                    json!({}),
                    Some(&bound),
                    ns,
                )
                .await?;
            ensure!(status == 401, "token of a deleted Secret: {status} {body}");
            Ok(())
        })
        .await
}

#[tokio::test]
async fn an_unreachable_api_server_refuses_every_call_with_503() -> anyhow::Result<()> {
    let Some(cluster) =
        harness::connect("an_unreachable_api_server_refuses_every_call_with_503").await?
    else {
        return Ok(());
    };
    // The cluster's own configuration, pointed at a port nobody listens on.
    let mut config = Config::new("https://127.0.0.1:9".parse()?);
    config.connect_timeout = Some(Duration::from_secs(2));
    drop(cluster);
    let server = AuthServer::start(Client::try_from(config)?).await?;
    for (method, path, body) in [
        (reqwest::Method::POST, "/experiments/search", json!({})),
        (
            reqwest::Method::POST,
            "/experiments/create",
            json!({"name": "x"}),
        ),
        (reqwest::Method::GET, "/registered-models/search", json!({})),
    ] {
        let (status, answer) = server
            .call(method, path, body, Some("any-token"), Some("team-a"))
            .await?;
        ensure!(
            status == 503 && answer["error_code"] == "TEMPORARILY_UNAVAILABLE",
            "{path}: {status} {answer}"
        );
    }
    let health = server
        .http
        .get(format!("{}/health", server.base))
        .send()
        .await?;
    ensure!(health.status() == 200);
    Ok(())
}

/// Identity in data (issues #17 and #19): runs and versions name the authenticated caller,
/// whatever the body says; a four-eyes rule refuses the creator's own approval and accepts
/// another account's; the history names who moved the alias.
#[tokio::test]
async fn the_authenticated_caller_is_recorded_and_four_eyes_hold() -> anyhow::Result<()> {
    let Some(cluster) =
        harness::connect("the_authenticated_caller_is_recorded_and_four_eyes_hold").await?
    else {
        return Ok(());
    };
    cluster
        .in_namespace("ff-ident", |namespace: TestNamespace| async move {
            set_up_accounts(&namespace, &["alice", "bob"], &["alice", "bob"]).await?;
            let accounts = namespace.api::<ServiceAccount>();
            let alice = token(&accounts, "alice", None).await?;
            let bob = token(&accounts, "bob", None).await?;
            let alice_user = format!("system:serviceaccount:{}:alice", namespace.name);
            let bob_user = format!("system:serviceaccount:{}:bob", namespace.name);
            let server = AuthServer::start(namespace.client.clone()).await?;
            let ns = Some(namespace.name.as_str());
            use reqwest::Method;

            // A run names its creator, not the user the body claims.
            let (status, body) = server
                .call(
                    Method::POST,
                    "/experiments/create",
                    json!({"name": "ident"}),
                    Some(&alice),
                    ns,
                )
                .await?;
            ensure!(status == 200, "create experiment: {status} {body}");
            let (status, body) = server
                .call(
                    Method::POST,
                    "/runs/create",
                    json!({
                        "experiment_id": body["experiment_id"],
                        "user_id": "mallory",
                        "tags": [{"key": "mlflow.user", "value": "mallory"}],
                    }),
                    Some(&alice),
                    ns,
                )
                .await?;
            ensure!(status == 200, "create run: {status} {body}");
            let run_id = body["run"]["info"]["run_id"].clone();
            // Nobody re-attributes it later, not even its creator (checked below).
            for (path, request) in [
                (
                    "/runs/set-tag",
                    json!({"run_id": run_id, "key": "mlflow.user", "value": "mallory"}),
                ),
                (
                    "/runs/log-batch",
                    json!({"run_id": run_id, "tags": [{"key": "mlflow.user", "value": "mallory"}]}),
                ),
                (
                    "/runs/delete-tag",
                    json!({"run_id": run_id, "key": "mlflow.user"}),
                ),
            ] {
                let (status, body) = server
                    .call(Method::POST, path, request, Some(&alice), ns)
                    .await?;
                ensure!(
                    status == 400 && body["error_code"] == "INVALID_PARAMETER_VALUE",
                    "{path} of mlflow.user: {status} {body}"
                );
            }

            let (status, body) = server
                .call(
                    Method::GET,
                    "/runs/get",
                    json!({"run_id": run_id}),
                    Some(&bob),
                    ns,
                )
                .await?;
            let user_tags: Vec<&Value> = body["run"]["data"]["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|tag| tag["key"] == "mlflow.user")
                .collect();
            ensure!(
                status == 200
                    && body["run"]["info"]["user_id"] == alice_user.as_str()
                    && user_tags.len() == 1
                    && user_tags[0]["value"] == alice_user.as_str(),
                "the run's user is the caller: {status} {body}"
            );
            // alice registers a version; a four-eyes policy guards champion.
            for (path, request) in [
                ("/registered-models/create", json!({"name": "churn"})),
                (
                    "/model-versions/create",
                    json!({"name": "churn", "source": "s3://models/churn/1"}),
                ),
            ] {
                let (status, body) = server
                    .call(Method::POST, path, request, Some(&alice), ns)
                    .await?;
                ensure!(status == 200, "{path}: {status} {body}");
            }
            let (status, body) = server
                .call(
                    Method::GET,
                    "/model-versions/get",
                    json!({"name": "churn", "version": "1"}),
                    Some(&bob),
                    ns,
                )
                .await?;
            ensure!(
                status == 200 && body["model_version"]["user_id"] == alice_user.as_str(),
                "the version's creator: {status} {body}"
            );
            // What the operator copies from a PromotionPolicy resource.
            server
                .store
                .put_promotion_policy(
                    "uid-four-eyes",
                    &namespace.name,
                    "four-eyes",
                    &PolicySpec {
                        models: vec!["churn".into()],
                        aliases: vec!["champion".into()],
                        stages: vec![],
                        rules: vec![Rule::Tag(TagRule {
                            key: "approved".into(),
                            value: Some("true".into()),
                            four_eyes: true,
                        })],
                    },
                )
                .await?;
            let approve = json!({"name": "churn", "version": "1", "key": "approved", "value": "true"});
            let champion = json!({"name": "churn", "alias": "champion", "version": "1"});

            // The creator approving her own version: refused, naming rule, tag and setter.
            let (status, body) = server
                .call(
                    Method::POST,
                    "/model-versions/set-tag",
                    approve.clone(),
                    Some(&alice),
                    ns,
                )
                .await?;
            ensure!(status == 200, "alice approves: {status} {body}");
            let (status, body) = server
                .call(
                    Method::POST,
                    "/registered-models/alias",
                    champion.clone(),
                    Some(&alice),
                    ns,
                )
                .await?;
            let expected = format!(
                "[{}/four-eyes] tag approved = true, set by someone other than the version's creator failed: \
                 tag approved = true, set by {alice_user}, the version's creator",
                namespace.name
            );
            ensure!(
                status == 403
                    && body["error_code"] == "PERMISSION_DENIED"
                    && body["message"]
                        .as_str()
                        .is_some_and(|message| message.contains(&expected)),
                "own approval: {status} {body}"
            );

            // Another account approving: allowed.
            let (status, body) = server
                .call(
                    Method::POST,
                    "/model-versions/set-tag",
                    approve,
                    Some(&bob),
                    ns,
                )
                .await?;
            ensure!(status == 200, "bob approves: {status} {body}");
            let (status, body) = server
                .call(
                    Method::POST,
                    "/registered-models/alias",
                    champion,
                    Some(&alice),
                    ns,
                )
                .await?;
            ensure!(status == 200, "after bob's approval: {status} {body}");

            // The history names the authenticated actor of the refusal and of the move.
            let (status, body) = server
                .call(
                    Method::GET,
                    "/api/2.0/ferroflow/promotions",
                    json!({"name": "churn", "target": "champion"}),
                    Some(&bob),
                    ns,
                )
                .await?;
            ensure!(status == 200, "history: {status} {body}");
            let entries: Vec<(Value, Value, Value)> = body["promotions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|entry| {
                    (
                        entry["actor"].clone(),
                        entry["path"].clone(),
                        entry["allowed"].clone(),
                    )
                })
                .collect();
            ensure!(
                entries
                    == vec![
                        (json!(alice_user), json!("api"), json!(false)),
                        (json!(alice_user), json!("api"), json!(true)),
                    ],
                "history: {body}"
            );
            ensure!(
                body["promotions"][1]["results"][0]["observed"]
                    .as_str()
                    .is_some_and(|seen| seen.contains(&format!("set by {bob_user}"))),
                "the allowed move's verdict names bob: {body}"
            );
            Ok(())
        })
        .await
}

/// `GET /api/3.0/mlflow/workspaces` with `--auth kubernetes` (issue #17): the cluster's
/// namespaces in which the caller may list experiments, whether they hold data or not, and no
/// other (not `default`, not `kube-system`); the list and the decisions are cached.
#[tokio::test]
async fn the_workspace_list_is_the_namespaces_the_caller_may_use() -> anyhow::Result<()> {
    let Some(cluster) =
        harness::connect("the_workspace_list_is_the_namespaces_the_caller_may_use").await?
    else {
        return Ok(());
    };
    let cluster = &cluster;
    cluster
        .in_namespace("ff-wslist", |home: TestNamespace| async move {
            set_up_accounts(&home, &["editor"], &[]).await?;
            let editor = token(&home.api::<ServiceAccount>(), "editor", None).await?;
            cluster
                .in_namespace("ff-wslist-shared", |shared: TestNamespace| async move {
                    // The editor may read experiments in a second namespace, which holds no data.
                    shared
                        .api::<Role>()
                        .create(
                            &PostParams::default(),
                            &role("reader", vec![rule(&["experiments"], &["get", "list"])]),
                        )
                        .await?;
                    let mut reader = binding("reader", &home.name, &["editor"]);
                    reader.metadata.namespace = Some(shared.name.clone());
                    shared
                        .api::<RoleBinding>()
                        .create(&PostParams::default(), &reader)
                        .await?;
                    // RBAC takes effect once the API server's informers saw the binding: wait
                    // for it, asking the API server directly (our server would cache a denial).
                    let editor_user = format!("system:serviceaccount:{}:editor", home.name);
                    rbac_allows(
                        &home.client,
                        &editor_user,
                        &shared.name,
                        Duration::from_secs(20),
                    )
                    .await?;
                    let server = AuthServer::start(home.client.clone()).await?;
                    let mut expected = vec![home.name.clone(), shared.name.clone()];
                    expected.sort();
                    let list = || async {
                        let response = server
                            .http
                            .get(format!("{}/api/3.0/mlflow/workspaces", server.base))
                            .bearer_auth(&editor)
                            .send()
                            .await?;
                        let status = response.status().as_u16();
                        let body: Value = response.json().await?;
                        anyhow::Ok((status, body))
                    };
                    let (status, body) = list().await?;
                    ensure!(status == 200, "workspaces: {status} {body}");
                    let names: Vec<String> = body["workspaces"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|workspace| workspace["name"].as_str().map(str::to_owned))
                        .collect();
                    ensure!(names == expected, "listed {names:?}, expected {expected:?}");
                    let counts = |server: &AuthServer| {
                        (
                            server
                                .authorizer
                                .counts
                                .namespace_lists
                                .load(Ordering::Relaxed),
                            server
                                .authorizer
                                .counts
                                .access_reviews
                                .load(Ordering::Relaxed),
                        )
                    };
                    let before = counts(&server);
                    for _ in 0..5 {
                        let (status, body) = list().await?;
                        ensure!(
                            status == 200 && body["workspaces"].as_array().map(Vec::len) == Some(2)
                        );
                    }
                    ensure!(
                        counts(&server) == before,
                        "warm caches asked the API server again"
                    );
                    for (name, status) in [(shared.name.as_str(), 200), ("kube-system", 404)] {
                        let answer = server
                            .http
                            .get(format!("{}/api/3.0/mlflow/workspaces/{name}", server.base))
                            .bearer_auth(&editor)
                            .send()
                            .await?;
                        ensure!(
                            answer.status().as_u16() == status,
                            "workspace {name}: {}",
                            answer.status()
                        );
                    }
                    Ok(())
                })
                .await
        })
        .await
}

/// Waits until a SubjectAccessReview lets `user` list experiments in `namespace`.
async fn rbac_allows(
    client: &Client,
    user: &str,
    namespace: &str,
    deadline: Duration,
) -> anyhow::Result<()> {
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            resource_attributes: Some(ResourceAttributes {
                group: Some("ferroflow.dev".into()),
                namespace: Some(namespace.to_owned()),
                resource: Some("experiments".into()),
                verb: Some("list".into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let started = tokio::time::Instant::now();
    loop {
        let answer = reviews.create(&PostParams::default(), &review).await?;
        if answer.status.is_some_and(|status| status.allowed) {
            return Ok(());
        }
        ensure!(
            started.elapsed() < deadline,
            "{user} still may not list experiments in {namespace} after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
