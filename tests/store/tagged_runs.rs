//! Runs the operator keys by a tag and ends only while still running (ProjectRun, issue #15).

use ferroflow::store::runs::NewRun;
use ferroflow::store::{KeyValue, Store};

crate::both_backends!(
    a_run_is_found_again_by_its_tag_in_its_experiment,
    ending_a_run_never_replaces_a_terminal_status,
);

const UID_TAG: &str = "ferroflow.dev/project-run-uid";

async fn tagged_run(store: &Store, experiment_id: i64, uid: &str) -> String {
    store
        .create_run(NewRun {
            experiment_id,
            user_id: "ferroflow-operator".into(),
            run_name: Some("train".into()),
            start_time: None,
            tags: vec![KeyValue::new(UID_TAG, uid)],
        })
        .await
        .unwrap()
        .info
        .run_uuid
}

async fn a_run_is_found_again_by_its_tag_in_its_experiment(store: Store) {
    let experiment = crate::new_experiment(&store, "tagged-runs").await;
    let other = crate::new_experiment(&store, "tagged-runs-other").await;
    assert!(
        store
            .find_run_by_tag(experiment, UID_TAG, "uid-1")
            .await
            .unwrap()
            .is_none()
    );
    let run = tagged_run(&store, experiment, "uid-1").await;
    tagged_run(&store, experiment, "uid-2").await;
    tagged_run(&store, other, "uid-1").await;
    let found = store
        .find_run_by_tag(experiment, UID_TAG, "uid-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.run_uuid, run);
    assert_eq!(found.experiment_id, experiment);
}

async fn ending_a_run_never_replaces_a_terminal_status(store: Store) {
    let experiment = crate::new_experiment(&store, "ended-runs").await;
    let run = tagged_run(&store, experiment, "uid-1").await;
    assert!(
        store
            .end_run_if_unfinished(&run, "FAILED", 1_000)
            .await
            .unwrap()
    );
    // The runner (or an earlier write) ended it: a later write changes nothing.
    assert!(
        !store
            .end_run_if_unfinished(&run, "KILLED", 2_000)
            .await
            .unwrap()
    );
    let info = store.get_run_info(&run).await.unwrap();
    assert_eq!(
        (info.status.as_str(), info.end_time),
        ("FAILED", Some(1_000))
    );
    assert!(
        !store
            .end_run_if_unfinished("0123456789abcdef0123456789abcdef", "KILLED", 1)
            .await
            .unwrap()
    );
}
