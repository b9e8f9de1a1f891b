//! Workspaces: experiments and registered models belong to one, names are unique per workspace,
//! and an id or name from another workspace is not found (never data). Migration 0009 puts
//! existing rows in `default` on both backends and keeps ids, references and counters.

use ferroflow::store::experiments::ExperimentSearch;
use ferroflow::store::logged_models::{LoggedModelSearch, NewLoggedModel};
use ferroflow::store::registry::{
    Actor, ModelVersionSearch, NewModelVersion, RegisteredModelSearch,
};
use ferroflow::store::runs::{Metric, NewRun, RunSearch};
use ferroflow::store::{Entity, Error, KeyValue, Store};
use sqlx::Executor;

use crate::ownership_migration::migrations_before;

crate::both_backends!(
    same_names_in_two_workspaces_are_distinct_objects,
    ids_from_another_workspace_are_not_found,
    searches_stay_in_their_workspace,
    experiments_outside_default_keep_artifacts_under_their_workspace,
);

fn is_not_found(result: Result<impl std::fmt::Debug, Error>, entity: Entity) -> bool {
    matches!(result, Err(Error::NotFound { entity: found, .. }) if found == entity)
}

async fn run_in(store: &Store, experiment_id: i64) -> String {
    store
        .create_run(NewRun {
            experiment_id,
            user_id: "tester".into(),
            run_name: Some("r".into()),
            start_time: Some(1),
            tags: vec![],
        })
        .await
        .unwrap()
        .info
        .run_uuid
}

async fn same_names_in_two_workspaces_are_distinct_objects(store: Store) {
    let team_a = store.in_workspace("team-a");
    let team_b = store.in_workspace("team-b");
    let a = team_a
        .create_experiment("churn", None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    let b = team_b
        .create_experiment("churn", None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    assert_ne!(a, b);
    assert!(matches!(
        team_a
            .create_experiment("churn", None, &[], "mlflow-artifacts:")
            .await,
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(
        team_a
            .get_experiment_by_name("churn")
            .await
            .unwrap()
            .experiment_id,
        a
    );
    assert_eq!(
        team_b
            .get_experiment_by_name("churn")
            .await
            .unwrap()
            .experiment_id,
        b
    );
    assert!(is_not_found(
        store.get_experiment_by_name("churn").await,
        Entity::Experiment
    ));

    for (workspace, source) in [(&team_a, "s3://a/1"), (&team_b, "s3://b/1")] {
        workspace
            .create_registered_model("churn", &[], Some(source), None)
            .await
            .unwrap();
        workspace
            .create_model_version(NewModelVersion {
                name: "churn".into(),
                source: source.into(),
                ..NewModelVersion::default()
            })
            .await
            .unwrap();
        workspace
            .set_registered_model_alias("churn", "champion", 1, Actor::Api)
            .await
            .unwrap();
    }
    assert!(matches!(
        team_a
            .create_registered_model("churn", &[], None, None)
            .await,
        Err(Error::AlreadyExists(_))
    ));
    let version_a = team_a
        .get_model_version_by_alias("churn", "champion")
        .await
        .unwrap();
    let version_b = team_b
        .get_model_version_by_alias("churn", "champion")
        .await
        .unwrap();
    assert_eq!(
        (version_a.source.as_str(), version_b.source.as_str()),
        ("s3://a/1", "s3://b/1")
    );
    // Renaming onto a name another workspace uses is allowed; one this workspace uses is not.
    team_a
        .create_registered_model("fraud", &[], None, None)
        .await
        .unwrap();
    team_b
        .rename_registered_model("churn", "fraud", Actor::Api)
        .await
        .unwrap();
    assert!(
        team_a
            .rename_registered_model("churn", "fraud", Actor::Api)
            .await
            .is_err()
    );
    // Each workspace's history is its own.
    let history_a = team_a.promotions("churn", None, 100, None).await.unwrap();
    assert_eq!(history_a.items.len(), 1);
    assert_eq!(history_a.items[0].to_version, Some(1));
    assert!(is_not_found(
        team_b.promotions("churn", None, 100, None).await,
        Entity::RegisteredModel
    ));
    assert_eq!(
        team_b
            .promotions("fraud", None, 100, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

async fn ids_from_another_workspace_are_not_found(store: Store) {
    let team_a = store.in_workspace("team-a");
    let team_b = store.in_workspace("team-b");
    let experiment = team_a
        .create_experiment("exp", None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    let run = run_in(&team_a, experiment).await;
    let model = team_a
        .create_logged_model(NewLoggedModel {
            experiment_id: experiment,
            name: Some("m".into()),
            model_type: None,
            source_run_id: Some(run.clone()),
            params: vec![],
            tags: vec![],
        })
        .await
        .unwrap();
    team_a
        .create_registered_model("reg", &[], None, None)
        .await
        .unwrap();

    // Experiments: read, write, delete by id.
    assert!(is_not_found(
        team_b.get_experiment(experiment).await,
        Entity::Experiment
    ));
    assert!(is_not_found(
        team_b
            .rename_experiment(experiment, "taken", Actor::Api)
            .await,
        Entity::Experiment
    ));
    assert!(is_not_found(
        team_b
            .set_experiment_tag(experiment, &KeyValue::new("k", "v"), Actor::Api)
            .await,
        Entity::Experiment
    ));
    assert!(is_not_found(
        team_b.delete_experiment(experiment, Actor::Api).await,
        Entity::Experiment
    ));
    assert!(is_not_found(
        team_b
            .create_run(NewRun {
                experiment_id: experiment,
                user_id: "bob".into(),
                run_name: None,
                start_time: None,
                tags: vec![],
            })
            .await,
        Entity::Experiment
    ));
    // Runs: read, log, delete.
    assert!(is_not_found(team_b.get_run(&run).await, Entity::Run));
    assert!(is_not_found(
        team_b
            .log_batch(&run, &[Metric::new("loss", 1.0, 1, 0)], &[], &[])
            .await,
        Entity::Run
    ));
    assert!(is_not_found(
        team_b.update_run(&run, Some("FAILED"), None, None).await,
        Entity::Run
    ));
    assert!(is_not_found(team_b.delete_run(&run).await, Entity::Run));
    assert!(is_not_found(
        team_b.get_metric_history(&run, "loss", None, "").await,
        Entity::Run
    ));
    // Logged models and registered models.
    assert!(is_not_found(
        team_b.get_logged_model(&model.model_id, true).await,
        Entity::LoggedModel
    ));
    assert!(is_not_found(
        team_b.delete_logged_model(&model.model_id).await,
        Entity::LoggedModel
    ));
    assert!(is_not_found(
        team_b.get_registered_model("reg").await,
        Entity::RegisteredModel
    ));
    assert!(is_not_found(
        team_b.delete_registered_model("reg", Actor::Api).await,
        Entity::RegisteredModel
    ));
    assert!(is_not_found(
        team_b
            .create_model_version(NewModelVersion {
                name: "reg".into(),
                source: "s3://b/x".into(),
                ..NewModelVersion::default()
            })
            .await,
        Entity::RegisteredModel
    ));
    // Nothing of the above touched workspace a's objects.
    assert_eq!(
        team_a.get_run(&run).await.unwrap().info.lifecycle_stage,
        "active"
    );
    assert!(team_a.get_run(&run).await.unwrap().metrics.is_empty());
    assert_eq!(team_a.get_experiment(experiment).await.unwrap().name, "exp");
    team_a
        .get_logged_model(&model.model_id, false)
        .await
        .unwrap();
    team_a.get_registered_model("reg").await.unwrap();
}

async fn searches_stay_in_their_workspace(store: Store) {
    let team_a = store.in_workspace("team-a");
    let team_b = store.in_workspace("team-b");
    let experiment_a = team_a
        .create_experiment("a", None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    run_in(&team_a, experiment_a).await;
    team_a
        .create_logged_model(NewLoggedModel {
            experiment_id: experiment_a,
            name: Some("m".into()),
            model_type: None,
            source_run_id: None,
            params: vec![],
            tags: vec![],
        })
        .await
        .unwrap();
    team_a
        .create_registered_model("reg", &[], None, None)
        .await
        .unwrap();
    team_a
        .create_model_version(NewModelVersion {
            name: "reg".into(),
            source: "s3://a/1".into(),
            ..NewModelVersion::default()
        })
        .await
        .unwrap();

    let experiments = |workspace: &Store| {
        let workspace = workspace.clone();
        async move {
            workspace
                .search_experiments(&ExperimentSearch {
                    max_results: 100,
                    ..ExperimentSearch::default()
                })
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|experiment| experiment.name)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(experiments(&team_a).await, vec!["a"]);
    assert!(experiments(&team_b).await.is_empty());
    assert_eq!(experiments(&store).await, vec!["Default"]);

    // Asking for workspace a's experiment id by number finds nothing from workspace b.
    let runs = RunSearch {
        experiment_ids: vec![experiment_a],
        max_results: 100,
        ..RunSearch::default()
    };
    assert_eq!(team_a.search_runs(&runs).await.unwrap().items.len(), 1);
    assert!(team_b.search_runs(&runs).await.unwrap().items.is_empty());
    let logged = LoggedModelSearch {
        experiment_ids: vec![experiment_a],
        max_results: 100,
        ..LoggedModelSearch::default()
    };
    assert_eq!(
        team_a
            .search_logged_models(&logged)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(
        team_b
            .search_logged_models(&logged)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let models = RegisteredModelSearch {
        max_results: 100,
        ..RegisteredModelSearch::default()
    };
    assert_eq!(
        team_a
            .search_registered_models(&models)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(
        team_b
            .search_registered_models(&models)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let versions = ModelVersionSearch {
        max_results: 100,
        ..ModelVersionSearch::default()
    };
    assert_eq!(
        team_a
            .search_model_versions(&versions)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(
        team_b
            .search_model_versions(&versions)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        store.workspaces().await.unwrap(),
        vec!["default".to_owned(), "team-a".to_owned()]
    );
}

async fn experiments_outside_default_keep_artifacts_under_their_workspace(store: Store) {
    let team_a = store.in_workspace("team-a");
    let id = team_a
        .create_experiment("exp", None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    assert_eq!(
        team_a.get_experiment(id).await.unwrap().artifact_location,
        format!("mlflow-artifacts:/workspaces/team-a/{id}")
    );
    let id = store
        .create_experiment("exp", None, &[], "s3://bucket/root/")
        .await
        .unwrap();
    assert_eq!(
        store.get_experiment(id).await.unwrap().artifact_location,
        format!("s3://bucket/root/{id}")
    );
}

/// Rows written before workspaces existed: an experiment with a tag, a run, a logged model, a
/// registered model with a version, an alias and its history. The counters have handed out
/// higher ids than remain (experiment 9, model 4 were deleted).
const ROWS_BEFORE_WORKSPACES: &[&str] = &[
    "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time) \
     VALUES (5, 'churn', 'mlflow-artifacts:/5', 'active', 1, 1), (9, 'gone', 'mlflow-artifacts:/9', 'active', 1, 1)",
    "DELETE FROM experiments WHERE experiment_id = 9",
    "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (5, 'team', 'a')",
    "INSERT INTO runs (run_uuid, name, experiment_id, status, start_time, artifact_uri) \
     VALUES ('r1', 'first', 5, 'FINISHED', 1, 'mlflow-artifacts:/5/r1/artifacts')",
    "INSERT INTO logged_models (model_id, experiment_id, name, artifact_location, creation_timestamp_ms, \
     last_updated_timestamp_ms, status) VALUES ('m-1', 5, 'model', 'mlflow-artifacts:/5/models/m-1', 1, 1, 'READY')",
    "INSERT INTO registered_models (registered_model_id, name, creation_time, last_updated_time, last_version) \
     VALUES (3, 'churn', 1, 1, 1), (4, 'gone', 1, 1, 0)",
    "DELETE FROM registered_models WHERE registered_model_id = 4",
    "INSERT INTO model_versions (registered_model_id, version, creation_time, last_updated_time, source, storage_location) \
     VALUES (3, 1, 1, 1, 's3://b/m', 's3://b/m')",
    "INSERT INTO registered_model_aliases (registered_model_id, alias, version) VALUES (3, 'champion', 1)",
    "INSERT INTO promotions (time, registered_model_id, model_name, target_type, target, to_version, actor, path, allowed) \
     VALUES (1, 3, 'churn', 'alias', 'champion', 1, 'anonymous', 'api', TRUE)",
];

async fn rows_land_in_default(store: Store) {
    let experiment = store.get_experiment_by_name("churn").await.unwrap();
    assert_eq!(experiment.experiment_id, 5);
    assert_eq!(experiment.tags, vec![KeyValue::new("team", "a")]);
    assert_eq!(store.get_run("r1").await.unwrap().info.experiment_id, 5);
    store.get_logged_model("m-1", false).await.unwrap();
    let version = store
        .get_model_version_by_alias("churn", "champion")
        .await
        .unwrap();
    assert_eq!(version.source, "s3://b/m");
    assert_eq!(
        store
            .promotions("churn", None, 10, None)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    // Another workspace sees none of it, and may use the same names.
    let team_a = store.in_workspace("team-a");
    assert!(is_not_found(
        team_a.get_experiment(5).await,
        Entity::Experiment
    ));
    assert!(is_not_found(team_a.get_run("r1").await, Entity::Run));
    assert!(is_not_found(
        team_a.get_registered_model("churn").await,
        Entity::RegisteredModel
    ));
    team_a
        .create_experiment("churn", None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    team_a
        .create_registered_model("churn", &[], None, None)
        .await
        .unwrap();
    // Ids handed out before are not handed out again.
    let next = store
        .create_experiment("next", None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    assert!(next > 10, "experiment id {next} reuses a deleted one");
    // References still hold after the rebuild: deleting the model cascades to its versions and
    // aliases, and an experiment tag cannot name a missing experiment.
    store
        .delete_registered_model("churn", Actor::Api)
        .await
        .unwrap();
    assert!(is_not_found(
        store.get_model_version("churn", 1).await,
        Entity::ModelVersion
    ));
    assert!(
        store
            .set_experiment_tag(12345, &KeyValue::new("k", "v"), Actor::Api)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn sqlite_rows_before_workspaces_land_in_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let old = migrations_before("sqlite", "0009");
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
        migrator.run(&pool).await.unwrap();
        for statement in ROWS_BEFORE_WORKSPACES {
            pool.execute(*statement).await.unwrap();
        }
        pool.close().await;
    }
    let uri = format!("sqlite:///{}", path.display());
    let store = Store::open_migrated(&uri).await.unwrap();
    rows_land_in_default(store.clone()).await;
    // The rebuilt tables' references resolve, their indexes and the history's triggers are
    // there, and foreign keys are on again for the store's connections.
    let pool = sqlx::SqlitePool::connect(&uri).await.unwrap();
    let broken: Vec<(String,)> = sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert!(broken.is_empty(), "{broken:?}");
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT name FROM sqlite_master WHERE name IN ('experiments_owner_uid', \
         'registered_models_owner_uid', 'promotions_no_update', 'promotions_no_delete') ORDER BY name",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(names.len(), 4, "{names:?}");
    let orphan = sqlx::query(
        "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (12345, 'k', 'v')",
    )
    .execute(&pool)
    .await;
    assert!(orphan.is_err(), "a tag of a missing experiment was stored");
}

#[tokio::test]
async fn postgres_rows_before_workspaces_land_in_default() {
    let Some(database) = crate::common::TestDatabase::create().await else {
        return;
    };
    let old = migrations_before("postgres", "0009");
    {
        let pool = sqlx::PgPool::connect(&database.uri).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
        migrator.run(&pool).await.unwrap();
        for statement in ROWS_BEFORE_WORKSPACES {
            pool.execute(*statement).await.unwrap();
        }
        // The identity counters as the server would have left them after ids 9 and 4.
        pool.execute(
            "SELECT setval(pg_get_serial_sequence('experiments', 'experiment_id'), 9), \
             setval(pg_get_serial_sequence('registered_models', 'registered_model_id'), 4)",
        )
        .await
        .unwrap();
        pool.close().await;
    }
    let store = Store::open_migrated(&database.uri).await.unwrap();
    rows_land_in_default(store).await;
}
