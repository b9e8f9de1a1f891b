//! Migration 0007 turns the two old encodings of ownership (registry rows: fields
//! comma-separated; experiments: bare tag keys in `owned_tag_keys`) into the one of
//! `store::ownership`. A database written in the old encodings reads back the same owners,
//! and what they own stays refused to the API.

use std::collections::BTreeSet;
use std::path::Path;

use ferroflow::store::registry::{Actor, OwnedField};
use ferroflow::store::{Error, KeyValue, Store};
use sqlx::Executor;

/// Rows owned in the old encodings, written with raw SQL on a schema migrated up to 0006.
const OLD_ENCODING_ROWS: &[&str] = &[
    "UPDATE experiments SET owner_namespace = 'team-a', owner_kind = 'Experiment', \
     owner_name = 'default', owner_uid = 'u-exp', owned_tag_keys = 'stage' || char(10) || 'team' \
     WHERE experiment_id = 0",
    "INSERT INTO registered_models (registered_model_id, name, creation_time, last_updated_time, \
     last_version, owner_namespace, owner_kind, owner_name, owner_uid, owned_fields) \
     VALUES (1, 'churn', 1, 1, 1, 'team-a', 'RegisteredModel', 'churn', 'u-model', 'aliases,description,tags')",
    "INSERT INTO model_versions (registered_model_id, version, creation_time, last_updated_time, \
     source, storage_location, owner_namespace, owner_kind, owner_name, owner_uid, owned_fields) \
     VALUES (1, 1, 1, 1, 's3://b/m', 's3://b/m', 'team-a', 'ModelVersion', 'churn-1', 'u-version', 'stage,tags')",
];

/// The migrations numbered below `first_left_out`, as a directory sqlx can run: a database as
/// an older release left it, for the migration tests.
pub fn migrations_before(backend: &str, first_left_out: &str) -> tempfile::TempDir {
    let old = tempfile::tempdir().unwrap();
    let all = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend);
    for entry in std::fs::read_dir(all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < first_left_out {
            std::fs::copy(&path, old.path().join(name)).unwrap();
        }
    }
    old
}

async fn owners_read_back_after_the_migration(store: Store) {
    let experiment = store.get_experiment(0).await.unwrap();
    let ownership = experiment.ownership.expect("experiment still owned");
    assert_eq!(ownership.owner.uid, "u-exp");
    assert_eq!(
        ownership.tag_keys,
        BTreeSet::from(["stage".to_owned(), "team".to_owned()])
    );
    assert!(matches!(
        store
            .set_experiment_tag(0, &KeyValue::new("team", "b"), Actor::Api)
            .await,
        Err(Error::OwnedElsewhere { .. })
    ));
    store
        .set_experiment_tag(0, &KeyValue::new("free", "b"), Actor::Api)
        .await
        .unwrap();

    let model = store.list_owned("u-model").await.unwrap();
    assert_eq!(model.len(), 1);
    assert_eq!(
        model[0].ownership.fields,
        BTreeSet::from([
            OwnedField::Aliases,
            OwnedField::Description,
            OwnedField::Tags
        ])
    );
    let version = store.list_owned("u-version").await.unwrap();
    assert_eq!(
        (version.len(), version[0].version),
        (1, Some(1)),
        "{version:?}"
    );
    assert_eq!(
        version[0].ownership.fields,
        BTreeSet::from([OwnedField::Stage, OwnedField::Tags])
    );
    store
        .update_model_version("churn", 1, Some("new"), Actor::Api)
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_registered_model_alias("churn", "champion", 1, Actor::Api)
            .await,
        Err(Error::OwnedElsewhere { .. })
    ));
}

#[tokio::test]
async fn sqlite_old_ownership_encodings_are_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    let old = migrations_before("sqlite", "0007");
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
        migrator.run(&pool).await.unwrap();
        for statement in OLD_ENCODING_ROWS {
            pool.execute(*statement).await.unwrap();
        }
        pool.close().await;
    }
    let store = Store::open_migrated(&format!("sqlite:///{}", path.display()))
        .await
        .unwrap();
    owners_read_back_after_the_migration(store).await;
}

#[tokio::test]
async fn postgres_old_ownership_encodings_are_migrated() {
    let Some(database) = crate::common::TestDatabase::create().await else {
        return;
    };
    let old = migrations_before("postgres", "0007");
    {
        let pool = sqlx::PgPool::connect(&database.uri).await.unwrap();
        let migrator = sqlx::migrate::Migrator::new(old.path()).await.unwrap();
        migrator.run(&pool).await.unwrap();
        for statement in OLD_ENCODING_ROWS {
            pool.execute(statement.replace("char(10)", "chr(10)").as_str())
                .await
                .unwrap();
        }
        pool.close().await;
    }
    let store = Store::open_migrated(&database.uri).await.unwrap();
    owners_read_back_after_the_migration(store).await;
}
