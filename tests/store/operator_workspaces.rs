//! The operator's side of workspaces: what a resource declared in `default` before namespaces
//! were workspaces moves into its namespace's workspace (with its runs, versions, aliases and
//! history, ownership kept), never over another object of the same name; promotion policies
//! govern their own workspace only; registry notifications name the workspace.

use std::time::Duration;

use ferroflow::store::experiments::ExperimentOwnership;
use ferroflow::store::notify::{self, ChangeKind, RegistryEvent};
use ferroflow::store::ownership::Moved;
use ferroflow::store::registry::{
    Actor, NewModelVersion, OwnedField, Owner, Ownership, PolicySpec, Rule, TagRule, TargetType,
};
use ferroflow::store::runs::NewRun;
use ferroflow::store::{Backend, Entity, Error, Store};
use futures::StreamExt;

crate::both_backends!(
    owned_objects_move_from_default_into_the_owners_workspace,
    a_name_taken_in_the_workspace_moves_nothing_and_says_why,
    policies_govern_only_the_models_of_their_workspace,
    notifications_name_the_workspace_of_the_change,
);

fn owner(kind: &str, uid: &str) -> Owner {
    Owner {
        namespace: "team-a".into(),
        kind: kind.into(),
        name: "churn".into(),
        uid: uid.into(),
    }
}

fn model_ownership(uid: &str) -> Ownership {
    Ownership {
        owner: owner("RegisteredModel", uid),
        fields: [OwnedField::Aliases].into(),
    }
}

async fn model_with_versions(store: &Store, name: &str, ownership: Option<&Ownership>) {
    store
        .create_registered_model(name, &[], None, ownership)
        .await
        .unwrap();
    for source in ["s3://b/1", "s3://b/2"] {
        store
            .create_model_version(NewModelVersion {
                name: name.into(),
                source: source.into(),
                ..NewModelVersion::default()
            })
            .await
            .unwrap();
    }
}

async fn owned_experiment(store: &Store, name: &str, uid: &str) -> i64 {
    let experiment_id = store
        .create_experiment(name, None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    store
        .set_experiment_owner(
            experiment_id,
            &ExperimentOwnership {
                owner: owner("Experiment", uid),
                tag_keys: Default::default(),
            },
        )
        .await
        .unwrap();
    experiment_id
}

fn is_not_found(result: Result<impl std::fmt::Debug, Error>, entity: Entity) -> bool {
    matches!(result, Err(Error::NotFound { entity: found, .. }) if found == entity)
}

async fn owned_objects_move_from_default_into_the_owners_workspace(store: Store) {
    // Declared by resources of namespace team-a while the operator wrote into `default`.
    let experiment_id = owned_experiment(&store, "churn-training", "uid-exp").await;
    let run = store
        .create_run(NewRun {
            experiment_id,
            user_id: "trainer".into(),
            run_name: Some("first".into()),
            start_time: Some(1),
            tags: vec![],
        })
        .await
        .unwrap()
        .info
        .run_uuid;
    model_with_versions(&store, "churn", Some(&model_ownership("uid-model"))).await;
    store
        .set_registered_model_alias("churn", "champion", 1, Actor::Owner("uid-model"))
        .await
        .unwrap();
    // Someone else's objects in `default` stay there.
    model_with_versions(&store, "fraud", None).await;

    let team_a = store.in_workspace("team-a");
    // Nothing of this resource is in `default`, and `default` itself never moves anything.
    assert_eq!(
        team_a.move_owned_into_workspace("uid-other").await.unwrap(),
        Moved::default()
    );
    assert_eq!(
        store.move_owned_into_workspace("uid-model").await.unwrap(),
        Moved::default()
    );

    let moved = team_a.move_owned_into_workspace("uid-exp").await.unwrap();
    assert_eq!(moved.experiments, ["churn-training"]);
    assert!(moved.registered_models.is_empty());
    let experiment = team_a
        .get_experiment_by_name("churn-training")
        .await
        .unwrap();
    assert_eq!(experiment.experiment_id, experiment_id);
    assert_eq!(team_a.get_run_info(&run).await.unwrap().run_uuid, run);
    assert!(is_not_found(
        store.get_experiment_by_name("churn-training").await,
        Entity::Experiment
    ));
    assert!(is_not_found(store.get_run_info(&run).await, Entity::Run));

    let moved = team_a.move_owned_into_workspace("uid-model").await.unwrap();
    assert_eq!(moved.registered_models, ["churn"]);
    let model = team_a.get_registered_model("churn").await.unwrap();
    assert_eq!(
        team_a.get_model_version("churn", 2).await.unwrap().version,
        2
    );
    assert_eq!(
        team_a
            .get_model_version_by_alias("churn", "champion")
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        model.ownership.as_ref().map(|o| o.owner.uid.as_str()),
        Some("uid-model")
    );
    // Still owned: the API may not move the alias in its new workspace.
    assert!(matches!(
        team_a
            .set_registered_model_alias("churn", "champion", 2, Actor::Api)
            .await,
        Err(Error::OwnedElsewhere { .. })
    ));
    // Its history came along.
    let history = team_a
        .promotions("churn", Some((TargetType::Alias, "champion")), 10, None)
        .await
        .unwrap();
    assert_eq!(history.items.len(), 1);
    assert!(is_not_found(
        store.get_registered_model("churn").await,
        Entity::RegisteredModel
    ));
    assert!(store.get_registered_model("fraud").await.is_ok());

    // Done once: the next reconcile finds nothing left to move.
    assert!(
        team_a
            .move_owned_into_workspace("uid-model")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_name_taken_in_the_workspace_moves_nothing_and_says_why(store: Store) {
    let team_a = store.in_workspace("team-a");
    let experiment_id = owned_experiment(&store, "fraud-training", "uid-exp").await;
    model_with_versions(&store, "fraud", Some(&model_ownership("uid-model"))).await;
    // Meanwhile someone made objects of those names in team-a through the API.
    team_a
        .create_experiment("fraud-training", None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    team_a
        .create_registered_model("fraud", &[], None, None)
        .await
        .unwrap();

    for (uid, what) in [
        ("uid-exp", "experiment 'fraud-training'"),
        ("uid-model", "registered model 'fraud'"),
    ] {
        let error = team_a.move_owned_into_workspace(uid).await.unwrap_err();
        assert!(matches!(error, Error::InvalidState(_)), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains(what) && message.contains("workspace 'team-a'"),
            "{message}"
        );
    }
    // Nothing moved, nothing lost: the declared objects are still in `default`, owned.
    let kept = store.get_registered_model("fraud").await.unwrap();
    assert_eq!(
        store.get_model_version("fraud", 2).await.unwrap().version,
        2
    );
    assert_eq!(
        kept.ownership.map(|o| o.owner.uid),
        Some("uid-model".to_owned())
    );
    assert_eq!(
        store
            .get_experiment_by_name("fraud-training")
            .await
            .unwrap()
            .experiment_id,
        experiment_id
    );
    assert!(
        team_a
            .get_registered_model("fraud")
            .await
            .unwrap()
            .ownership
            .is_none()
    );
    // Once the other one is gone, it moves.
    team_a
        .delete_registered_model("fraud", Actor::Api)
        .await
        .unwrap();
    assert_eq!(
        team_a
            .move_owned_into_workspace("uid-model")
            .await
            .unwrap()
            .registered_models,
        ["fraud"]
    );
}

async fn policies_govern_only_the_models_of_their_workspace(store: Store) {
    let gate = PolicySpec {
        models: vec!["churn".into()],
        aliases: vec!["champion".into()],
        stages: vec![],
        rules: vec![Rule::Tag(TagRule {
            key: "approved".into(),
            value: Some("true".into()),
            four_eyes: false,
        })],
    };
    store
        .in_workspace("team-a")
        .put_promotion_policy("uid-gate", "team-a", "gate", &gate)
        .await
        .unwrap();
    for workspace in ["team-a", "team-b", "default"] {
        let scoped = store.in_workspace(workspace);
        model_with_versions(&scoped, "churn", None).await;
        let moved = scoped
            .set_registered_model_alias("churn", "champion", 1, Actor::Api)
            .await;
        if workspace == "team-a" {
            let error = moved.unwrap_err();
            assert!(matches!(error, Error::PolicyDenied(_)), "{error:?}");
            assert!(error.to_string().contains("[team-a/gate]"), "{error}");
            assert!(
                scoped
                    .get_model_version_by_alias("churn", "champion")
                    .await
                    .is_err()
            );
        } else {
            moved.unwrap();
            assert_eq!(
                scoped
                    .get_model_version_by_alias("churn", "champion")
                    .await
                    .unwrap()
                    .version,
                1,
                "{workspace}"
            );
            // Nothing was judged: the history entry carries no rule results.
            let history = scoped
                .promotions("churn", Some((TargetType::Alias, "champion")), 10, None)
                .await
                .unwrap();
            assert!(history.items[0].results.is_empty(), "{workspace}");
        }
    }
}

async fn notifications_name_the_workspace_of_the_change(store: Store) {
    if store.backend() == Backend::Sqlite {
        eprintln!("skipping: SQLite has no LISTEN/NOTIFY");
        return;
    }
    let mut events = notify::listen(&store).await.unwrap();
    let team_a = store.in_workspace("team-a");
    let team_b = store.in_workspace("team-b");
    model_with_versions(&team_a, "churn", None).await;
    model_with_versions(&team_b, "churn", None).await;
    team_a
        .set_registered_model_alias("churn", "champion", 2, Actor::Api)
        .await
        .unwrap();
    model_with_versions(&store, "moved", Some(&model_ownership("uid-moved"))).await;
    team_b.move_owned_into_workspace("uid-moved").await.unwrap();

    let mut received = Vec::new();
    while received.len() < 8 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("a notification within 10 s")
            .expect("the stream goes on")
            .unwrap();
        if let RegistryEvent::Change(change) = event {
            received.push((
                change.kind,
                change.workspace.unwrap_or_default(),
                change.name,
            ));
        }
    }
    let seen = |kind, workspace: &str, name: &str| (kind, workspace.to_owned(), name.to_owned());
    assert_eq!(
        received,
        [
            seen(ChangeKind::VersionCreated, "team-a", "churn"),
            seen(ChangeKind::VersionCreated, "team-a", "churn"),
            seen(ChangeKind::VersionCreated, "team-b", "churn"),
            seen(ChangeKind::VersionCreated, "team-b", "churn"),
            seen(ChangeKind::AliasSet, "team-a", "churn"),
            seen(ChangeKind::VersionCreated, "default", "moved"),
            seen(ChangeKind::VersionCreated, "default", "moved"),
            // The move tells team-b's followers of `moved` that it is theirs now.
            seen(ChangeKind::ModelRenamed, "team-b", "moved"),
        ]
    );
}
