//! Experiments declared by a Kubernetes resource: the API may not rename, delete or restore
//! them, nor change the tags the resource declares; everything else stays writable.

use std::collections::BTreeSet;

use ferroflow::store::experiments::ExperimentOwnership;
use ferroflow::store::registry::{Actor, Owner};
use ferroflow::store::{Error, KeyValue, Store};

crate::both_backends!(
    declared_experiments_refuse_api_changes_to_what_they_declare,
    a_second_resource_cannot_declare_an_owned_experiment,
);

fn ownership(uid: &str, keys: &[&str]) -> ExperimentOwnership {
    ExperimentOwnership {
        owner: Owner {
            namespace: "team-a".into(),
            kind: "Experiment".into(),
            name: "churn".into(),
            uid: uid.into(),
        },
        tag_keys: keys
            .iter()
            .map(|key| (*key).to_owned())
            .collect::<BTreeSet<_>>(),
    }
}

async fn declared_experiments_refuse_api_changes_to_what_they_declare(store: Store) {
    let id = super::new_experiment(&store, "declared").await;
    store
        .set_experiment_owner(id, &ownership("uid-1", &["team"]))
        .await
        .unwrap();
    let owner = Actor::Owner("uid-1");
    store
        .set_experiment_tag(id, &KeyValue::new("team", "growth"), owner)
        .await
        .unwrap();

    let refused = store
        .set_experiment_tag(id, &KeyValue::new("team", "other"), Actor::Api)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::OwnedElsewhere { .. }),
        "{refused:?}"
    );
    assert_eq!(
        refused.to_string(),
        "experiment 'declared' field 'tags.team' is managed by Experiment team-a/churn (uid uid-1): \
         change it there (in git)"
    );
    for refused in [
        store.delete_experiment_tag(id, "team", Actor::Api).await,
        store.rename_experiment(id, "renamed", Actor::Api).await,
        store.delete_experiment(id, Actor::Api).await,
    ] {
        assert!(
            matches!(refused, Err(Error::OwnedElsewhere { .. })),
            "{refused:?}"
        );
    }
    // Undeclared tags stay writable.
    store
        .set_experiment_tag(id, &KeyValue::new("notes", "free"), Actor::Api)
        .await
        .unwrap();
    let experiment = store.get_experiment(id).await.unwrap();
    assert_eq!(experiment.name, "declared");
    assert_eq!(experiment.lifecycle_stage, "active");
    let tags: Vec<(String, String)> = experiment
        .tags
        .into_iter()
        .map(|t| (t.key, t.value))
        .collect();
    assert_eq!(
        tags,
        vec![
            ("notes".into(), "free".into()),
            ("team".into(), "growth".into())
        ]
    );
    assert_eq!(experiment.ownership.unwrap().owner.uid, "uid-1");

    // Released (deletion policy Retain): the API may change everything again.
    store.clear_experiment_owner(id, "uid-1").await.unwrap();
    assert!(store.get_experiment(id).await.unwrap().ownership.is_none());
    store
        .set_experiment_tag(id, &KeyValue::new("team", "other"), Actor::Api)
        .await
        .unwrap();
    store
        .rename_experiment(id, "renamed", Actor::Api)
        .await
        .unwrap();
    store.delete_experiment(id, Actor::Api).await.unwrap();
}

async fn a_second_resource_cannot_declare_an_owned_experiment(store: Store) {
    let id = super::new_experiment(&store, "contested").await;
    store
        .set_experiment_owner(id, &ownership("uid-1", &[]))
        .await
        .unwrap();
    let refused = store
        .set_experiment_owner(id, &ownership("uid-2", &["team"]))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, Error::OwnedElsewhere { .. }),
        "{refused:?}"
    );
    // Clearing with the wrong uid leaves the owner in place.
    store.clear_experiment_owner(id, "uid-2").await.unwrap();
    let owner = store.get_experiment(id).await.unwrap().ownership.unwrap();
    assert_eq!(owner.owner.uid, "uid-1");
    assert!(owner.tag_keys.is_empty());
}
