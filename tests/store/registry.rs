//! Registry conformance: registered models, versions, stages, aliases, tags, search, ownership
//! and notifications, each test run on SQLite and on Postgres.

use std::collections::BTreeSet;
use std::time::Duration;

use ferroflow::store::logged_models::NewLoggedModel;
use ferroflow::store::notify::{self, ChangeKind, RegistryChange, RegistryEvent};
use ferroflow::store::registry::{
    Actor, ModelVersion, ModelVersionSearch, NewModelVersion, OWNER_TAG, OwnedField, Owner,
    Ownership, RegisteredModelSearch, RegistryRef, Stage,
};
use ferroflow::store::runs::NewRun;
use ferroflow::store::{Backend, Entity, Error, KeyValue, Store};
use futures::StreamExt;

crate::both_backends!(
    concurrent_creates_get_distinct_consecutive_numbers,
    deleted_version_numbers_are_never_reused,
    registered_models_create_read_update_and_refuse_bad_input,
    rename_carries_versions_aliases_and_tags,
    deleting_a_model_deletes_its_versions_and_aliases,
    stages_transition_with_and_without_archiving,
    aliases_move_survive_rename_and_vanish_with_their_version,
    tags_on_models_and_versions_upsert_and_delete,
    registered_model_search_filters_orders_and_pages,
    model_version_search_filters_orders_and_pages,
    sources_are_validated_and_download_uris_resolved,
    logged_model_sources_resolve_to_the_model_location,
    owned_fields_are_refused_and_unowned_fields_accepted,
    ownership_is_exclusive_and_releasable,
    the_owner_tag_names_the_owner_and_only_the_store_writes_it,
    notifications_announce_versions_aliases_and_stages,
);

fn new_version(name: &str, source: &str) -> NewModelVersion {
    NewModelVersion {
        name: name.into(),
        source: source.into(),
        ..NewModelVersion::default()
    }
}

async fn model_with_versions(store: &Store, name: &str, versions: usize) -> Vec<ModelVersion> {
    store
        .create_registered_model(name, &[], None, None)
        .await
        .unwrap();
    let mut created = Vec::new();
    for i in 0..versions {
        created.push(
            store
                .create_model_version(new_version(name, &format!("s3://bucket/{name}/{i}")))
                .await
                .unwrap(),
        );
    }
    created
}

async fn run_in_new_experiment(store: &Store, name: &str) -> (String, String) {
    let experiment_id = store
        .create_experiment(name, None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    let run = store
        .create_run(NewRun {
            experiment_id,
            user_id: "tester".into(),
            run_name: Some("train".into()),
            start_time: Some(1_700_000_000_000),
            tags: vec![],
        })
        .await
        .unwrap();
    (run.info.run_uuid, run.info.artifact_uri)
}

fn owner(kind: &str, name: &str, uid: &str) -> Owner {
    Owner {
        namespace: "team-a".into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
    }
}

fn owning(owner: Owner, fields: &[OwnedField]) -> Ownership {
    Ownership {
        owner,
        fields: fields.iter().copied().collect(),
    }
}

fn numbers(versions: &[ModelVersion]) -> Vec<i64> {
    versions.iter().map(|version| version.version).collect()
}

async fn concurrent_creates_get_distinct_consecutive_numbers(store: Store) {
    store
        .create_registered_model("busy", &[], None, None)
        .await
        .unwrap();
    let creates = (0..16).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .create_model_version(new_version("busy", &format!("s3://bucket/busy/{i}")))
                .await
        })
    });
    let mut got: Vec<i64> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(|joined| joined.unwrap().unwrap().version)
        .collect();
    got.sort_unstable();
    assert_eq!(got, (1..=16).collect::<Vec<i64>>());
    // Every source landed on exactly one number.
    let page = store
        .search_model_versions(&ModelVersionSearch {
            filter: "name = 'busy'".into(),
            max_results: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let sources: BTreeSet<String> = page.items.into_iter().map(|v| v.source).collect();
    assert_eq!(sources.len(), 16);
}

async fn deleted_version_numbers_are_never_reused(store: Store) {
    let versions = model_with_versions(&store, "m", 3).await;
    assert_eq!(numbers(&versions), [1, 2, 3]);
    store
        .delete_model_version("m", 3, Actor::Api)
        .await
        .unwrap();
    assert!(matches!(
        store.get_model_version("m", 3).await,
        Err(Error::NotFound {
            entity: Entity::ModelVersion,
            ..
        })
    ));
    assert!(matches!(
        store.delete_model_version("m", 3, Actor::Api).await,
        Err(Error::NotFound {
            entity: Entity::ModelVersion,
            ..
        })
    ));
    let next = store
        .create_model_version(new_version("m", "s3://bucket/m/again"))
        .await
        .unwrap();
    assert_eq!(next.version, 4);
    let model = store.get_registered_model("m").await.unwrap();
    assert_eq!(numbers(&model.latest_versions), [4]);
}

async fn registered_models_create_read_update_and_refuse_bad_input(store: Store) {
    let tags = vec![KeyValue::new("team", "a"), KeyValue::new("team", "b")];
    let created = store
        .create_registered_model("churn", &tags, Some("first"), None)
        .await
        .unwrap();
    assert_eq!(created.name, "churn");
    // A key given twice keeps its last value, as MLflow's dict does.
    assert_eq!(created.tags, vec![KeyValue::new("team", "b")]);
    assert_eq!(created.description.as_deref(), Some("first"));
    assert_eq!(created.creation_timestamp, created.last_updated_timestamp);
    assert!(created.latest_versions.is_empty());

    let duplicate = store
        .create_registered_model("churn", &[], None, None)
        .await;
    assert!(
        matches!(&duplicate, Err(Error::AlreadyExists(m)) if m == "Registered Model (name=churn) already exists."),
        "{duplicate:?}"
    );
    let updated = store
        .update_registered_model("churn", Some("second"), Actor::Api)
        .await
        .unwrap();
    assert_eq!(updated.description.as_deref(), Some("second"));
    let cleared = store
        .update_registered_model("churn", None, Actor::Api)
        .await
        .unwrap();
    assert_eq!(cleared.description, None);

    assert!(matches!(
        store.get_registered_model("nope").await,
        Err(Error::NotFound { entity: Entity::RegisteredModel, message })
            if message == "Registered Model with name=nope not found"
    ));
    for bad in ["", "a/b", "a:b", ".."] {
        assert!(
            matches!(
                store.create_registered_model(bad, &[], None, None).await,
                Err(Error::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        store
            .create_model_version(new_version("nope", "s3://b/x"))
            .await,
        Err(Error::NotFound {
            entity: Entity::RegisteredModel,
            ..
        })
    ));
    assert!(matches!(
        store
            .create_registered_model("t", &[KeyValue::new("", "v")], None, None)
            .await,
        Err(Error::Invalid(_))
    ));
}

async fn rename_carries_versions_aliases_and_tags(store: Store) {
    model_with_versions(&store, "old", 2).await;
    store
        .set_registered_model_alias("old", "champion", 2, Actor::Api)
        .await
        .unwrap();
    store
        .set_model_version_tag("old", 1, &KeyValue::new("k", "v"), Actor::Api)
        .await
        .unwrap();
    store
        .set_registered_model_tag("old", &KeyValue::new("team", "a"), Actor::Api)
        .await
        .unwrap();
    let renamed = store
        .rename_registered_model("old", "new", Actor::Api)
        .await
        .unwrap();
    assert_eq!(renamed.name, "new");
    assert_eq!(renamed.aliases, vec![("champion".to_owned(), 2)]);
    assert_eq!(renamed.tags, vec![KeyValue::new("team", "a")]);
    assert!(matches!(
        store.get_registered_model("old").await,
        Err(Error::NotFound {
            entity: Entity::RegisteredModel,
            ..
        })
    ));
    let champion = store
        .get_model_version_by_alias("new", "champion")
        .await
        .unwrap();
    assert_eq!((champion.name.as_str(), champion.version), ("new", 2));
    let first = store.get_model_version("new", 1).await.unwrap();
    assert_eq!(first.tags, vec![KeyValue::new("k", "v")]);
    // New versions continue the numbering.
    let third = store
        .create_model_version(new_version("new", "s3://b/3"))
        .await
        .unwrap();
    assert_eq!(third.version, 3);

    model_with_versions(&store, "other", 0).await;
    assert!(matches!(
        store
            .rename_registered_model("new", "other", Actor::Api)
            .await,
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        store
            .rename_registered_model("missing", "x", Actor::Api)
            .await,
        Err(Error::NotFound {
            entity: Entity::RegisteredModel,
            ..
        })
    ));
    assert!(matches!(
        store.rename_registered_model("new", "", Actor::Api).await,
        Err(Error::Invalid(_))
    ));
}

async fn deleting_a_model_deletes_its_versions_and_aliases(store: Store) {
    model_with_versions(&store, "gone", 2).await;
    store
        .set_registered_model_alias("gone", "champion", 1, Actor::Api)
        .await
        .unwrap();
    store
        .delete_registered_model("gone", Actor::Api)
        .await
        .unwrap();
    assert!(matches!(
        store.get_registered_model("gone").await,
        Err(Error::NotFound {
            entity: Entity::RegisteredModel,
            ..
        })
    ));
    assert!(matches!(
        store.get_model_version("gone", 1).await,
        Err(Error::NotFound {
            entity: Entity::ModelVersion,
            ..
        })
    ));
    assert!(matches!(
        store.delete_registered_model("gone", Actor::Api).await,
        Err(Error::NotFound {
            entity: Entity::RegisteredModel,
            ..
        })
    ));
    // The name is free again; numbering starts over as in MLflow (the model is gone).
    let versions = model_with_versions(&store, "gone", 1).await;
    assert_eq!(numbers(&versions), [1]);
}

async fn stages_transition_with_and_without_archiving(store: Store) {
    model_with_versions(&store, "staged", 3).await;
    let moved = store
        .transition_model_version_stage("staged", 1, Stage::Production, false, Actor::Api)
        .await
        .unwrap();
    assert_eq!(moved.current_stage, Stage::Production);
    store
        .transition_model_version_stage("staged", 2, Stage::Production, false, Actor::Api)
        .await
        .unwrap();
    // Without archiving both stay in Production; the latest per stage is the highest.
    let latest = store
        .get_latest_versions("staged", &[Stage::Production])
        .await
        .unwrap();
    assert_eq!(numbers(&latest), [2]);
    assert_eq!(
        store
            .get_model_version("staged", 1)
            .await
            .unwrap()
            .current_stage,
        Stage::Production
    );
    // With archiving only the other Production versions move to Archived.
    store
        .transition_model_version_stage("staged", 3, Stage::Production, true, Actor::Api)
        .await
        .unwrap();
    let stages: Vec<Stage> = futures::future::join_all((1..=3).map(|v| {
        let store = store.clone();
        async move {
            store
                .get_model_version("staged", v)
                .await
                .unwrap()
                .current_stage
        }
    }))
    .await;
    assert_eq!(
        stages,
        [Stage::Archived, Stage::Archived, Stage::Production]
    );
    let all = store.get_latest_versions("staged", &[]).await.unwrap();
    assert_eq!(
        all.iter()
            .map(|v| (v.version, v.current_stage))
            .collect::<Vec<_>>(),
        [(2, Stage::Archived), (3, Stage::Production)]
    );
    assert!(matches!(
        store
            .transition_model_version_stage("staged", 1, Stage::Archived, true, Actor::Api)
            .await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        store
            .transition_model_version_stage("staged", 9, Stage::Staging, false, Actor::Api)
            .await,
        Err(Error::NotFound {
            entity: Entity::ModelVersion,
            ..
        })
    ));
    assert!(Stage::parse("bogus").is_err());
}

async fn aliases_move_survive_rename_and_vanish_with_their_version(store: Store) {
    model_with_versions(&store, "aliased", 3).await;
    store
        .set_registered_model_alias("aliased", "champion", 1, Actor::Api)
        .await
        .unwrap();
    store
        .set_registered_model_alias("aliased", "challenger", 2, Actor::Api)
        .await
        .unwrap();
    let v1 = store.get_model_version("aliased", 1).await.unwrap();
    assert_eq!(v1.aliases, ["champion"]);
    // Moving is one upsert: the alias now names version 2 only.
    store
        .set_registered_model_alias("aliased", "champion", 2, Actor::Api)
        .await
        .unwrap();
    let v2 = store.get_model_version("aliased", 2).await.unwrap();
    assert_eq!(v2.aliases, ["challenger", "champion"]);
    assert!(
        store
            .get_model_version("aliased", 1)
            .await
            .unwrap()
            .aliases
            .is_empty()
    );
    let model = store.get_registered_model("aliased").await.unwrap();
    assert_eq!(
        model.aliases,
        [("challenger".to_owned(), 2), ("champion".to_owned(), 2)]
    );
    // `latest` resolves to the highest live version without being stored.
    let latest = store
        .get_model_version_by_alias("aliased", "LaTeSt")
        .await
        .unwrap();
    assert_eq!(latest.version, 3);
    for reserved in ["latest", "Latest", "v1", "V12"] {
        assert!(matches!(
            store
                .set_registered_model_alias("aliased", reserved, 1, Actor::Api)
                .await,
            Err(Error::Invalid(_))
        ));
    }
    assert!(matches!(
        store
            .set_registered_model_alias("aliased", "bad alias", 1, Actor::Api)
            .await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        store
            .set_registered_model_alias("aliased", "x", 99, Actor::Api)
            .await,
        Err(Error::NotFound {
            entity: Entity::ModelVersion,
            ..
        })
    ));
    assert!(matches!(
        store.get_model_version_by_alias("aliased", "nope").await,
        Err(Error::AliasNotFound { model, alias }) if model == "aliased" && alias == "nope"
    ));
    // Deleting a version drops its aliases; deleting an absent alias is fine.
    store
        .delete_model_version("aliased", 2, Actor::Api)
        .await
        .unwrap();
    assert!(
        store
            .get_registered_model("aliased")
            .await
            .unwrap()
            .aliases
            .is_empty()
    );
    store
        .delete_registered_model_alias("aliased", "champion", Actor::Api)
        .await
        .unwrap();
    assert!(matches!(
        store
            .delete_registered_model_alias("missing", "champion", Actor::Api)
            .await,
        Err(Error::NotFound {
            entity: Entity::RegisteredModel,
            ..
        })
    ));
}

async fn tags_on_models_and_versions_upsert_and_delete(store: Store) {
    model_with_versions(&store, "tagged", 1).await;
    for value in ["1", "2"] {
        store
            .set_registered_model_tag("tagged", &KeyValue::new("k", value), Actor::Api)
            .await
            .unwrap();
        store
            .set_model_version_tag("tagged", 1, &KeyValue::new("k", value), Actor::Api)
            .await
            .unwrap();
    }
    assert_eq!(
        store.get_registered_model("tagged").await.unwrap().tags,
        [KeyValue::new("k", "2")]
    );
    assert_eq!(
        store.get_model_version("tagged", 1).await.unwrap().tags,
        [KeyValue::new("k", "2")]
    );
    store
        .delete_registered_model_tag("tagged", "k", Actor::Api)
        .await
        .unwrap();
    store
        .delete_model_version_tag("tagged", 1, "k", Actor::Api)
        .await
        .unwrap();
    // MLflow answers {} for an absent tag.
    store
        .delete_registered_model_tag("tagged", "k", Actor::Api)
        .await
        .unwrap();
    store
        .delete_model_version_tag("tagged", 1, "k", Actor::Api)
        .await
        .unwrap();
    assert!(
        store
            .get_registered_model("tagged")
            .await
            .unwrap()
            .tags
            .is_empty()
    );
    assert!(matches!(
        store
            .set_model_version_tag("tagged", 7, &KeyValue::new("k", "v"), Actor::Api)
            .await,
        Err(Error::NotFound {
            entity: Entity::ModelVersion,
            ..
        })
    ));
    assert!(matches!(
        store
            .set_registered_model_tag("tagged", &KeyValue::new("../x", "v"), Actor::Api)
            .await,
        Err(Error::Invalid(_))
    ));
}

async fn registered_model_search_filters_orders_and_pages(store: Store) {
    // Lower-case names only: Postgres orders text by its collation, SQLite by bytes.
    for (name, team) in [("alpha", "a"), ("beta", "b"), ("gamma", "a"), ("delta", "")] {
        let tags = if team.is_empty() {
            vec![]
        } else {
            vec![KeyValue::new("team", team)]
        };
        store
            .create_registered_model(name, &tags, None, None)
            .await
            .unwrap();
    }
    store
        .create_registered_model(
            "a-prompt",
            &[KeyValue::new("mlflow.prompt.is_prompt", "true")],
            None,
            None,
        )
        .await
        .unwrap();
    let names = |filter: &str, order_by: &[&str]| {
        let store = store.clone();
        let request = RegisteredModelSearch {
            filter: filter.into(),
            order_by: order_by.iter().map(|s| s.to_string()).collect(),
            max_results: 100,
            page_token: String::new(),
        };
        async move {
            store
                .search_registered_models(&request)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|m| m.name)
                .collect::<Vec<_>>()
        }
    };
    // Default order is name ASC; prompts are left out.
    assert_eq!(names("", &[]).await, ["alpha", "beta", "delta", "gamma"]);
    // The clause every client search carries matches models without the tag.
    let prompt_clause = "tag.`mlflow.prompt.is_prompt` != 'true'";
    assert_eq!(
        names(prompt_clause, &[]).await,
        ["alpha", "beta", "delta", "gamma"]
    );
    assert_eq!(
        names("tags.`mlflow.prompt.is_prompt` = 'true'", &[]).await,
        ["a-prompt"]
    );
    assert_eq!(
        names(&format!("tags.team = 'a' AND {prompt_clause}"), &[]).await,
        ["alpha", "gamma"]
    );
    // A model lacking the tag never satisfies an ordinary `!=`.
    assert_eq!(names("tags.team != 'a'", &[]).await, ["beta"]);
    assert_eq!(names("name LIKE '%ta'", &[]).await, ["beta", "delta"]);
    assert_eq!(names("name LIKE 'G%'", &[]).await, Vec::<String>::new());
    assert_eq!(names("name ILIKE 'G%'", &[]).await, ["gamma"]);
    assert_eq!(
        names("name IN ('beta', 'delta')", &[]).await,
        ["beta", "delta"]
    );
    assert_eq!(
        names("", &["name DESC"]).await,
        ["gamma", "delta", "beta", "alpha"]
    );
    assert!(
        store
            .search_registered_models(&RegisteredModelSearch {
                filter: "params.x = 'y'".into(),
                max_results: 10,
                ..Default::default()
            })
            .await
            .is_err()
    );
    assert!(
        store
            .search_registered_models(&RegisteredModelSearch {
                max_results: 1001,
                ..Default::default()
            })
            .await
            .is_err()
    );
    // Paging: a token exactly when more rows exist, none on an exactly full last page.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = store
            .search_registered_models(&RegisteredModelSearch {
                max_results: 2,
                order_by: vec!["timestamp DESC".into()],
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.items.into_iter().map(|m| m.name));
        match page.next_page_token {
            Some(next) => token = next,
            None => break,
        }
    }
    assert_eq!(pages, 2);
    assert_eq!(seen.len(), 4);
    assert_eq!(
        seen.iter().collect::<BTreeSet<_>>().len(),
        4,
        "no model twice: {seen:?}"
    );
}

async fn model_version_search_filters_orders_and_pages(store: Store) {
    let (run_id, _) = run_in_new_experiment(&store, "search-exp").await;
    model_with_versions(&store, "m1", 3).await;
    model_with_versions(&store, "m2", 2).await;
    store
        .create_model_version(NewModelVersion {
            run_id: Some(run_id.clone()),
            ..new_version("m2", &format!("runs:/{run_id}/model"))
        })
        .await
        .unwrap();
    store
        .set_model_version_tag("m1", 2, &KeyValue::new("stage", "qa"), Actor::Api)
        .await
        .unwrap();
    let found = |filter: &str, order_by: &[&str]| {
        let store = store.clone();
        let request = ModelVersionSearch {
            filter: filter.into(),
            order_by: order_by.iter().map(|s| s.to_string()).collect(),
            max_results: 1000,
            page_token: String::new(),
        };
        async move {
            store
                .search_model_versions(&request)
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|v| (v.name, v.version))
                .collect::<Vec<_>>()
        }
    };
    let pairs = |items: &[(&str, i64)]| {
        items
            .iter()
            .map(|(n, v)| (n.to_string(), *v))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        found("name = 'm1'", &["version_number ASC"]).await,
        pairs(&[("m1", 1), ("m1", 2), ("m1", 3)])
    );
    assert_eq!(
        found(&format!("run_id = '{run_id}'"), &[]).await,
        pairs(&[("m2", 3)])
    );
    assert_eq!(
        found("name IN ('m1', 'm2') AND version_number >= 3", &["name"]).await,
        pairs(&[("m1", 3), ("m2", 3)])
    );
    assert_eq!(found("tags.stage = 'qa'", &[]).await, pairs(&[("m1", 2)]));
    assert_eq!(
        found(
            "source_path LIKE 's3://bucket/m2/%'",
            &["version_number DESC"]
        )
        .await,
        pairs(&[("m2", 2), ("m2", 1)])
    );
    assert_eq!(
        found(
            "name = 'm1' AND tag.`mlflow.prompt.is_prompt` != 'true'",
            &["name ASC", "version_number DESC"]
        )
        .await,
        pairs(&[("m1", 3), ("m1", 2), ("m1", 1)])
    );
    // Deleted versions are not found.
    store
        .delete_model_version("m1", 3, Actor::Api)
        .await
        .unwrap();
    assert_eq!(found("name = 'm1'", &[]).await.len(), 2);
    // The default order puts the most recently updated first (the pause keeps its
    // millisecond timestamp apart from the others').
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .transition_model_version_stage("m1", 1, Stage::Staging, false, Actor::Api)
        .await
        .unwrap();
    assert_eq!(found("", &[]).await[0], ("m1".to_string(), 1));
    // Pages of 2 over 5 versions: 3 pages, every version once.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = store
            .search_model_versions(&ModelVersionSearch {
                max_results: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap();
        seen.extend(page.items.into_iter().map(|v| (v.name, v.version)));
        match page.next_page_token {
            Some(next) => token = next,
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 5);
    assert!(
        store
            .search_model_versions(&ModelVersionSearch {
                max_results: 10,
                page_token: "garbage".into(),
                ..Default::default()
            })
            .await
            .is_err()
    );
    assert!(
        store
            .search_model_versions(&ModelVersionSearch {
                max_results: 10,
                order_by: vec!["name".into(), "name DESC".into()],
                ..Default::default()
            })
            .await
            .is_err()
    );
}

async fn sources_are_validated_and_download_uris_resolved(store: Store) {
    let (run_id, artifact_uri) = run_in_new_experiment(&store, "sources-exp").await;
    model_with_versions(&store, "src", 0).await;
    let create = |source: &str, run_id: Option<&str>| {
        let store = store.clone();
        let new = NewModelVersion {
            run_id: run_id.map(str::to_owned),
            ..new_version("src", source)
        };
        async move { store.create_model_version(new).await }
    };
    let from_run = create(&format!("runs:/{run_id}/model"), Some(&run_id))
        .await
        .unwrap();
    assert_eq!(from_run.run_id, run_id);
    assert_eq!(from_run.source, format!("runs:/{run_id}/model"));
    assert_eq!(
        store
            .get_model_version_download_uri("src", from_run.version)
            .await
            .unwrap(),
        format!("{artifact_uri}/model")
    );
    let inside = create(&format!("{artifact_uri}/model"), Some(&run_id))
        .await
        .unwrap();
    assert_eq!(inside.storage_location, format!("{artifact_uri}/model"));
    let plain = create("s3://bucket/model", None).await.unwrap();
    assert_eq!(plain.storage_location, "s3://bucket/model");
    assert_eq!(plain.run_id, "");
    // A registry source resolves to the concrete version and inherits its lineage.
    let copied = create(&format!("models:/src/{}", from_run.version), None)
        .await
        .unwrap();
    assert_eq!(copied.run_id, run_id);
    assert_eq!(copied.storage_location, format!("{artifact_uri}/model"));
    store
        .set_registered_model_alias("src", "champion", plain.version, Actor::Api)
        .await
        .unwrap();
    let by_alias = create("models:/src@champion", None).await.unwrap();
    assert_eq!(by_alias.source, format!("models:/src/{}", plain.version));
    assert_eq!(by_alias.storage_location, "s3://bucket/model");

    for (source, given_run) in [
        (format!("runs:/{run_id}/model"), None),
        (
            format!("runs:/{run_id}/model"),
            Some("0123456789abcdef0123456789abcdef"),
        ),
        (
            "runs:/ffffffffffffffffffffffffffffffff/model".to_owned(),
            Some("ffffffffffffffffffffffffffffffff"),
        ),
        (
            "mlflow-artifacts:/999/elsewhere/artifacts/model".to_owned(),
            Some(run_id.as_str()),
        ),
        ("mlflow-artifacts:/1/x".to_owned(), None),
        ("/tmp/model".to_owned(), None),
        ("s3://bucket/../model".to_owned(), None),
        (
            "models:/m-0123456789abcdef0123456789abcdef".to_owned(),
            None,
        ),
        ("models://other/src/1".to_owned(), None),
    ] {
        let refused = create(&source, given_run).await;
        assert!(
            matches!(refused, Err(Error::Invalid(_))),
            "{source} with {given_run:?}: {refused:?}"
        );
    }
}

async fn logged_model_sources_resolve_to_the_model_location(store: Store) {
    let (run_id, _) = run_in_new_experiment(&store, "logged-exp").await;
    let experiment_id = store.get_run(&run_id).await.unwrap().info.experiment_id;
    let logged = store
        .create_logged_model(NewLoggedModel {
            experiment_id,
            name: Some("model".into()),
            model_type: None,
            source_run_id: Some(run_id.clone()),
            params: vec![],
            tags: vec![],
        })
        .await
        .unwrap();
    model_with_versions(&store, "from-logged", 0).await;
    let create = |source: String, model_id: Option<&str>| {
        let store = store.clone();
        let new = NewModelVersion {
            model_id: model_id.map(str::to_owned),
            ..new_version("from-logged", &source)
        };
        async move { store.create_model_version(new).await }
    };
    // What `log_model(registered_model_name=…)` sends: the models:/ URI and the model id.
    let version = create(
        format!("models:/{}", logged.model_id),
        Some(&logged.model_id),
    )
    .await
    .unwrap();
    assert_eq!(version.source, format!("models:/{}", logged.model_id));
    assert_eq!(version.storage_location, logged.artifact_uri);
    assert_eq!(version.run_id, run_id, "filled in from the logged model");
    assert_eq!(version.model_id.as_deref(), Some(logged.model_id.as_str()));
    // A file inside the logged model's location is a valid source too.
    let inside = create(
        format!("{}/MLmodel", logged.artifact_uri),
        Some(&logged.model_id),
    )
    .await
    .unwrap();
    assert_eq!(inside.version, 2);
    // The logged model lists where it is registered, once per version.
    let tags = store
        .get_logged_model(&logged.model_id, false)
        .await
        .unwrap()
        .tags;
    let registrations = tags
        .iter()
        .find(|tag| tag.key == "mlflow.modelVersions")
        .map(|tag| serde_json::from_str::<serde_json::Value>(&tag.value).unwrap());
    assert_eq!(
        registrations,
        Some(serde_json::json!([
            {"name": "from-logged", "version": 1},
            {"name": "from-logged", "version": 2}
        ]))
    );
    for (source, model_id) in [
        (format!("models:/{}", logged.model_id), None),
        (
            format!("models:/{}", logged.model_id),
            Some("m-00000000000000000000000000000000"),
        ),
        (
            "models:/m-00000000000000000000000000000000".to_owned(),
            Some("m-00000000000000000000000000000000"),
        ),
        (
            format!("runs:/{run_id}/model"),
            Some(logged.model_id.as_str()),
        ),
        (
            "mlflow-artifacts:/0/elsewhere".to_owned(),
            Some(logged.model_id.as_str()),
        ),
    ] {
        let refused = create(source.clone(), model_id).await;
        assert!(
            matches!(refused, Err(Error::Invalid(_))),
            "{source} with {model_id:?}: {refused:?}"
        );
    }
}

async fn owned_fields_are_refused_and_unowned_fields_accepted(store: Store) {
    model_with_versions(&store, "churn", 2).await;
    let model_owner = owner("RegisteredModel", "churn", "uid-model");
    store
        .set_owner(
            RegistryRef::Model("churn"),
            &owning(model_owner.clone(), &[OwnedField::Aliases]),
        )
        .await
        .unwrap();
    let refused = store
        .set_registered_model_alias("churn", "champion", 1, Actor::Api)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::OwnedElsewhere { .. }),
        "{refused:?}"
    );
    assert_eq!(
        refused.to_string(),
        "registered model 'churn' field 'aliases' is managed by RegisteredModel team-a/churn \
         (uid uid-model): change it there (in git)"
    );
    // Unowned fields stay writable through the API.
    store
        .set_registered_model_tag("churn", &KeyValue::new("team", "a"), Actor::Api)
        .await
        .unwrap();
    store
        .update_registered_model("churn", Some("free text"), Actor::Api)
        .await
        .unwrap();
    // The owner itself may write its fields.
    store
        .set_registered_model_alias("churn", "champion", 1, Actor::Owner("uid-model"))
        .await
        .unwrap();
    // Deleting a version an owned alias points at would change the aliases: refused.
    assert!(matches!(
        store.delete_model_version("churn", 1, Actor::Api).await,
        Err(Error::OwnedElsewhere { .. })
    ));
    // So are renaming and deleting an owned model.
    assert!(matches!(
        store.rename_registered_model("churn", "x", Actor::Api).await,
        Err(Error::OwnedElsewhere { field: Some(f), .. }) if f == "name"
    ));
    assert!(matches!(
        store.delete_registered_model("churn", Actor::Api).await,
        Err(Error::OwnedElsewhere { field: None, .. })
    ));
    // A version whose stage is owned: its stage, and archiving it, are refused.
    let version_owner = owner("ModelVersion", "churn-2", "uid-v2");
    store
        .set_owner(
            RegistryRef::Version("churn", 2),
            &owning(version_owner, &[OwnedField::Stage, OwnedField::Description]),
        )
        .await
        .unwrap();
    let refused = store
        .transition_model_version_stage("churn", 2, Stage::Production, false, Actor::Api)
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("ModelVersion team-a/churn-2 (uid uid-v2)"),
        "{refused}"
    );
    store
        .transition_model_version_stage(
            "churn",
            2,
            Stage::Production,
            false,
            Actor::Owner("uid-v2"),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .transition_model_version_stage("churn", 1, Stage::Production, true, Actor::Api)
            .await,
        Err(Error::OwnedElsewhere { .. })
    ));
    assert_eq!(
        store
            .get_model_version("churn", 1)
            .await
            .unwrap()
            .current_stage,
        Stage::None,
        "a refused transition changes nothing"
    );
    store
        .transition_model_version_stage("churn", 1, Stage::Staging, false, Actor::Api)
        .await
        .unwrap();
    store
        .set_model_version_tag("churn", 2, &KeyValue::new("k", "v"), Actor::Api)
        .await
        .unwrap();
    assert!(matches!(
        store
            .update_model_version("churn", 2, Some("x"), Actor::Api)
            .await,
        Err(Error::OwnedElsewhere { .. })
    ));
    assert!(matches!(
        store.delete_model_version("churn", 2, Actor::Api).await,
        Err(Error::OwnedElsewhere { field: None, .. })
    ));
    // Reads report the ownership.
    let read = store.get_registered_model("churn").await.unwrap();
    assert_eq!(read.ownership.unwrap().owner, model_owner);
}

async fn ownership_is_exclusive_and_releasable(store: Store) {
    model_with_versions(&store, "shared", 1).await;
    let first = owning(
        owner("RegisteredModel", "shared", "uid-1"),
        &[OwnedField::Tags],
    );
    store
        .set_owner(RegistryRef::Model("shared"), &first)
        .await
        .unwrap();
    // Re-applying (e.g. after a crash) is fine and may change the owned fields.
    let wider = owning(
        first.owner.clone(),
        &[OwnedField::Tags, OwnedField::Description],
    );
    store
        .set_owner(RegistryRef::Model("shared"), &wider)
        .await
        .unwrap();
    let second = owning(
        owner("RegisteredModel", "shared-again", "uid-2"),
        &[OwnedField::Tags],
    );
    assert!(matches!(
        store.set_owner(RegistryRef::Model("shared"), &second).await,
        Err(Error::OwnedElsewhere { .. })
    ));
    assert!(matches!(
        store
            .set_owner(
                RegistryRef::Model("shared"),
                &owning(first.owner.clone(), &[OwnedField::Stage])
            )
            .await,
        Err(Error::Invalid(_))
    ));
    // Another uid cannot release it; the owner can, and then the API may write.
    store
        .clear_owner(RegistryRef::Model("shared"), "uid-2")
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_registered_model_tag("shared", &KeyValue::new("k", "v"), Actor::Api)
            .await,
        Err(Error::OwnedElsewhere { .. })
    ));
    assert_eq!(store.list_owned("uid-1").await.unwrap().len(), 1);
    store
        .clear_owner(RegistryRef::Model("shared"), "uid-1")
        .await
        .unwrap();
    store
        .set_registered_model_tag("shared", &KeyValue::new("k", "v"), Actor::Api)
        .await
        .unwrap();
    assert!(store.list_owned("uid-1").await.unwrap().is_empty());

    // A version created with an owner is found again instead of duplicated.
    let version_owner = owning(
        owner("ModelVersion", "shared-v", "uid-v"),
        &[OwnedField::Stage],
    );
    let create = || NewModelVersion {
        ownership: Some(version_owner.clone()),
        ..new_version("shared", "s3://bucket/shared/owned")
    };
    let first_create = store.create_model_version(create()).await.unwrap();
    let again = store.create_model_version(create()).await.unwrap();
    assert_eq!(first_create.version, again.version);
    assert_eq!(first_create.version, 2);
    assert_eq!(store.list_owned("uid-v").await.unwrap()[0].version, Some(2));
}

fn owner_tag(tags: &[KeyValue]) -> Option<&str> {
    tags.iter()
        .find(|tag| tag.key == OWNER_TAG)
        .map(|tag| tag.value.as_str())
}

/// MLflow's UI shows tags, not owner columns: the owner is also a tag, kept with the columns
/// in one transaction, which no other write may set, overwrite or delete.
async fn the_owner_tag_names_the_owner_and_only_the_store_writes_it(store: Store) {
    // Owned from creation: the model (no owned tags) and a version.
    let model_owner = owning(
        owner("RegisteredModel", "churn", "uid-m"),
        &[OwnedField::Description],
    );
    let model = store
        .create_registered_model("churn", &[], None, Some(&model_owner))
        .await
        .unwrap();
    assert_eq!(owner_tag(&model.tags), Some("team-a/RegisteredModel/churn"));
    let version_owner = owning(owner("ModelVersion", "churn-1", "uid-v"), &[]);
    let version = store
        .create_model_version(NewModelVersion {
            ownership: Some(version_owner.clone()),
            ..new_version("churn", "s3://bucket/churn/1")
        })
        .await
        .unwrap();
    assert_eq!(
        owner_tag(&version.tags),
        Some("team-a/ModelVersion/churn-1")
    );

    // Nobody else writes it, whichever fields the owner declares; other tags stay open.
    let forged = KeyValue::new(OWNER_TAG, "team-b/RegisteredModel/mine");
    for actor in [Actor::Api, Actor::User("alice")] {
        assert!(matches!(
            store.set_registered_model_tag("churn", &forged, actor).await,
            Err(Error::OwnedElsewhere { field: Some(field), .. }) if field == "tags.ferroflow.owner"
        ));
        assert!(matches!(
            store
                .delete_model_version_tag("churn", 1, OWNER_TAG, actor)
                .await,
            Err(Error::OwnedElsewhere { .. })
        ));
    }
    // Not the owner either through the tag calls: the store keeps it with the columns.
    assert!(matches!(
        store
            .set_model_version_tag("churn", 1, &forged, Actor::Owner("uid-v"))
            .await,
        Err(Error::Invalid(_))
    ));
    store
        .set_registered_model_tag("churn", &KeyValue::new("team", "growth"), Actor::Api)
        .await
        .unwrap();

    // Released (Retain): the tag goes with the owner, and an unowned row cannot claim one.
    store
        .clear_owner(RegistryRef::Version("churn", 1), "uid-v")
        .await
        .unwrap();
    let released = store.get_model_version("churn", 1).await.unwrap();
    assert_eq!(owner_tag(&released.tags), None);
    assert!(matches!(
        store
            .set_model_version_tag("churn", 1, &forged, Actor::Api)
            .await,
        Err(Error::Invalid(_))
    ));
    let unowned = || NewModelVersion {
        tags: vec![forged.clone()],
        ..new_version("churn", "s3://bucket/churn/2")
    };
    assert!(matches!(
        store.create_model_version(unowned()).await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        store
            .create_registered_model("other", std::slice::from_ref(&forged), None, None)
            .await,
        Err(Error::Invalid(_))
    ));

    // Adopted (set_owner on an existing row): the tag appears, and follows a change of owner
    // name after a release.
    store
        .set_owner(RegistryRef::Version("churn", 1), &version_owner)
        .await
        .unwrap();
    let adopted = store.get_model_version("churn", 1).await.unwrap();
    assert_eq!(
        owner_tag(&adopted.tags),
        Some("team-a/ModelVersion/churn-1")
    );
    store
        .clear_owner(RegistryRef::Model("churn"), "uid-m")
        .await
        .unwrap();
    let renamed = owning(owner("RegisteredModel", "churn-model", "uid-m2"), &[]);
    store
        .set_owner(RegistryRef::Model("churn"), &renamed)
        .await
        .unwrap();
    let model = store.get_registered_model("churn").await.unwrap();
    assert_eq!(
        owner_tag(&model.tags),
        Some("team-a/RegisteredModel/churn-model")
    );
    assert_eq!(
        model
            .tags
            .iter()
            .filter(|tag| tag.key != OWNER_TAG)
            .collect::<Vec<_>>(),
        [&KeyValue::new("team", "growth")]
    );
}

async fn notifications_announce_versions_aliases_and_stages(store: Store) {
    if store.backend() == Backend::Sqlite {
        eprintln!(
            "skipping: SQLite has no LISTEN/NOTIFY; registry notifications are a Postgres feature"
        );
        return;
    }
    let mut events = notify::listen(&store).await.unwrap();
    model_with_versions(&store, "watched", 2).await;
    store
        .set_registered_model_alias("watched", "champion", 1, Actor::Api)
        .await
        .unwrap();
    // Setting an alias to where it already points is not a change.
    store
        .set_registered_model_alias("watched", "champion", 1, Actor::Api)
        .await
        .unwrap();
    store
        .set_registered_model_alias("watched", "champion", 2, Actor::Api)
        .await
        .unwrap();
    store
        .transition_model_version_stage("watched", 1, Stage::Production, false, Actor::Api)
        .await
        .unwrap();
    store
        .transition_model_version_stage("watched", 2, Stage::Production, true, Actor::Api)
        .await
        .unwrap();
    store
        .delete_registered_model_alias("watched", "champion", Actor::Api)
        .await
        .unwrap();
    // Untracked changes (tags) send nothing.
    store
        .set_registered_model_tag("watched", &KeyValue::new("k", "v"), Actor::Api)
        .await
        .unwrap();
    let change =
        |kind, version: Option<i64>, alias: Option<&str>, stage: Option<&str>| RegistryChange {
            version,
            alias: alias.map(str::to_owned),
            stage: stage.map(str::to_owned),
            ..RegistryChange::new(kind, "default", "watched")
        };
    let expected = vec![
        change(ChangeKind::VersionCreated, Some(1), None, Some("None")),
        change(ChangeKind::VersionCreated, Some(2), None, Some("None")),
        change(ChangeKind::AliasSet, Some(1), Some("champion"), None),
        change(ChangeKind::AliasSet, Some(2), Some("champion"), None),
        change(ChangeKind::StageChanged, Some(1), None, Some("Production")),
        change(ChangeKind::StageChanged, Some(1), None, Some("Archived")),
        change(ChangeKind::StageChanged, Some(2), None, Some("Production")),
        change(ChangeKind::AliasDeleted, None, Some("champion"), None),
    ];
    let mut received = Vec::new();
    while received.len() < expected.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a notification within 10 s")
            .expect("the stream goes on")
            .unwrap();
        match event {
            RegistryEvent::Change(change) => received.push(change),
            RegistryEvent::Resync => {}
        }
    }
    assert_eq!(received, expected);
    // Nothing more arrives (the tag change and the no-op alias were silent).
    assert!(
        tokio::time::timeout(Duration::from_millis(300), events.next())
            .await
            .is_err()
    );
}
