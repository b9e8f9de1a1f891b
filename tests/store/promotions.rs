//! The promotion history on both backends: what is appended for each kind of move, through
//! renames and deletes, under concurrency, rollbacks, and that nothing can edit it.

use std::collections::BTreeSet;

use ferroflow::store::registry::{
    Actor, NewModelVersion, OwnedField, Owner, Ownership, Promotion, PromotionPath, Stage,
    TargetType,
};
use ferroflow::store::{Entity, Error, Store};
use sqlx::Connection;

crate::both_backends!(
    alias_moves_removals_and_stage_transitions_are_appended_in_order,
    the_history_pages_and_filters_by_target,
    at_answers_what_held_a_target_at_an_instant,
    the_history_follows_renames_and_outlives_deletion,
    rollback_moves_an_alias_back_to_its_previous_holder,
    concurrent_moves_leave_one_entry_each_in_the_order_applied,
    the_operator_is_recorded_as_the_resource_it_acts_for,
    the_recent_entries_of_each_alias_are_bounded_newest_first,
);

async fn the_recent_entries_of_each_alias_are_bounded_newest_first(store: Store) {
    model(&store, "recent", 4).await;
    for version in [1, 2, 3, 4, 1, 2, 3] {
        set_alias(&store, "recent", "champion", version).await;
    }
    set_alias(&store, "recent", "challenger", 4).await;
    set_stage(&store, "recent", 2, Stage::Staging).await;
    store
        .delete_registered_model_alias("recent", "challenger", Actor::Api)
        .await
        .unwrap();
    let recent = store.recent_alias_promotions("recent", 3).await.unwrap();
    // Stages are left out; aliases by name, newest first within each.
    assert_eq!(
        moves(&recent),
        vec![
            ("challenger".into(), Some(4), None),
            ("challenger".into(), None, Some(4)),
            ("champion".into(), Some(2), Some(3)),
            ("champion".into(), Some(1), Some(2)),
            ("champion".into(), Some(4), Some(1)),
        ]
    );
    assert!(
        recent
            .windows(2)
            .all(|pair| pair[0].target != pair[1].target || pair[0].id > pair[1].id)
    );
    assert!(matches!(
        store.recent_alias_promotions("never-registered", 3).await,
        Err(ferroflow::store::Error::NotFound { .. })
    ));
}

async fn model(store: &Store, name: &str, versions: usize) {
    store
        .create_registered_model(name, &[], None, None)
        .await
        .unwrap();
    for i in 0..versions {
        new_version(
            store,
            NewModelVersion {
                name: name.into(),
                source: format!("s3://bucket/{name}/{i}"),
                ..NewModelVersion::default()
            },
        )
        .await;
    }
}

/// Registers `version`; its number.
async fn new_version(store: &Store, version: NewModelVersion) -> i64 {
    store.create_model_version(version).await.unwrap().version
}

/// Points `alias` of model `name` at `version` through the API.
async fn set_alias(store: &Store, name: &str, alias: &str, version: i64) {
    store
        .set_registered_model_alias(name, alias, version, Actor::Api)
        .await
        .unwrap();
}

/// Moves `version` of model `name` to `stage` through the API, archiving nothing.
async fn set_stage(store: &Store, name: &str, version: i64, stage: Stage) {
    store
        .transition_model_version_stage(name, version, stage, false, Actor::Api)
        .await
        .unwrap();
}

async fn history(store: &Store, name: &str) -> Vec<Promotion> {
    store
        .promotions(name, None, 1000, None)
        .await
        .unwrap()
        .items
}

/// (target, from_version, to_version) of each entry.
fn moves(entries: &[Promotion]) -> Vec<(String, Option<i64>, Option<i64>)> {
    entries
        .iter()
        .map(|entry| (entry.target.clone(), entry.from_version, entry.to_version))
        .collect()
}

async fn alias_moves_removals_and_stage_transitions_are_appended_in_order(store: Store) {
    model(&store, "churn", 3).await;
    set_alias(&store, "churn", "champion", 1).await;
    set_alias(&store, "churn", "champion", 2).await;
    // Setting an alias to the version it already has changes nothing and records nothing.
    set_alias(&store, "churn", "champion", 2).await;
    set_alias(&store, "churn", "challenger", 3).await;
    store
        .delete_registered_model_alias("churn", "champion", Actor::Api)
        .await
        .unwrap();
    // Removing an alias that is not set records nothing either.
    store
        .delete_registered_model_alias("churn", "champion", Actor::Api)
        .await
        .unwrap();
    set_stage(&store, "churn", 1, Stage::Production).await;
    store
        .transition_model_version_stage("churn", 2, Stage::Production, true, Actor::Api)
        .await
        .unwrap();
    // Deleting a version removes its aliases: each removal is a history entry.
    store
        .delete_model_version("churn", 3, Actor::Api)
        .await
        .unwrap();

    let entries = history(&store, "churn").await;
    assert_eq!(
        moves(&entries),
        vec![
            ("champion".into(), None, Some(1)),
            ("champion".into(), Some(1), Some(2)),
            ("challenger".into(), None, Some(3)),
            ("champion".into(), Some(2), None),
            ("Production".into(), None, Some(1)),
            // The version moved first, then the one archive_existing_versions archived.
            ("Production".into(), None, Some(2)),
            ("Archived".into(), None, Some(1)),
            ("challenger".into(), Some(3), None),
        ]
    );
    let stages: Vec<_> = entries
        .iter()
        .filter(|entry| entry.target_type == TargetType::Stage)
        .map(|entry| entry.from_stage.as_deref())
        .collect();
    assert_eq!(stages, vec![Some("None"), Some("None"), Some("Production")]);
    assert!(entries.iter().all(|entry| entry.allowed
        && !entry.rollback
        && entry.actor == "anonymous"
        && entry.path == PromotionPath::Api
        && entry.name == "churn"));
    let ids: Vec<i64> = entries.iter().map(|entry| entry.id).collect();
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "{ids:?}");
    let times: Vec<i64> = entries.iter().map(|entry| entry.timestamp).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");

    let unknown = store
        .promotions("nobody", None, 10, None)
        .await
        .unwrap_err();
    assert!(matches!(
        unknown,
        Error::NotFound {
            entity: Entity::RegisteredModel,
            ..
        }
    ));
}

async fn the_history_pages_and_filters_by_target(store: Store) {
    model(&store, "paged", 4).await;
    for version in [1, 2, 3, 4, 1] {
        set_alias(&store, "paged", "champion", version).await;
    }
    set_alias(&store, "paged", "challenger", 4).await;
    set_stage(&store, "paged", 2, Stage::Staging).await;

    let mut pages = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = store
            .promotions(
                "paged",
                Some((TargetType::Alias, "champion")),
                2,
                token.as_deref(),
            )
            .await
            .unwrap();
        pages.push(moves(&page.items));
        match page.next_page_token {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(pages.len(), 3, "{pages:?}");
    let champion: Vec<_> = pages.into_iter().flatten().collect();
    let expected: Vec<_> = [
        (None, 1),
        (Some(1), 2),
        (Some(2), 3),
        (Some(3), 4),
        (Some(4), 1),
    ]
    .into_iter()
    .map(|(from, to)| ("champion".to_owned(), from, Some(to)))
    .collect();
    assert_eq!(champion, expected);

    let staging = store
        .promotions("paged", Some((TargetType::Stage, "Staging")), 10, None)
        .await
        .unwrap();
    assert_eq!(
        moves(&staging.items),
        vec![("Staging".into(), None, Some(2))]
    );
    assert!(matches!(
        store.promotions("paged", None, 0, None).await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        store.promotions("paged", None, 10, Some("abc")).await,
        Err(Error::Invalid(_))
    ));
}

async fn at_answers_what_held_a_target_at_an_instant(store: Store) {
    model(&store, "timed", 3).await;
    for version in [1, 2, 3] {
        set_alias(&store, "timed", "champion", version).await;
    }
    store
        .delete_registered_model_alias("timed", "champion", Actor::Api)
        .await
        .unwrap();
    set_stage(&store, "timed", 1, Stage::Production).await;
    set_stage(&store, "timed", 2, Stage::Production).await;
    let entries = history(&store, "timed").await;

    let first = entries[0].timestamp;
    let before = store
        .promotion_at("timed", TargetType::Alias, "champion", first - 1)
        .await
        .unwrap();
    assert_eq!((before.versions, before.promotion_id), (vec![], None));
    // At each entry's own instant, the target is where the last entry of that instant left it.
    for entry in entries.iter().filter(|entry| entry.target == "champion") {
        let expected = entries
            .iter()
            .rfind(|other| other.target == "champion" && other.timestamp <= entry.timestamp)
            .unwrap();
        let held = store
            .promotion_at("timed", TargetType::Alias, "champion", entry.timestamp)
            .await
            .unwrap();
        assert_eq!(held.promotion_id, Some(expected.id));
        assert_eq!(
            held.versions,
            expected.to_version.into_iter().collect::<Vec<_>>()
        );
    }
    let now = ferroflow::store::now_millis();
    let production = store
        .promotion_at("timed", TargetType::Stage, "production", now)
        .await
        .unwrap();
    assert_eq!(production.versions, vec![1, 2]);
    let unset = store
        .promotion_at("timed", TargetType::Alias, "champion", now)
        .await
        .unwrap();
    assert_eq!(unset.versions, Vec::<i64>::new());
    assert!(unset.promotion_id.is_some());
}

async fn the_history_follows_renames_and_outlives_deletion(store: Store) {
    model(&store, "old-name", 2).await;
    set_alias(&store, "old-name", "champion", 1).await;
    store
        .rename_registered_model("old-name", "new-name", Actor::Api)
        .await
        .unwrap();
    set_alias(&store, "new-name", "champion", 2).await;
    let renamed = history(&store, "new-name").await;
    assert_eq!(
        renamed
            .iter()
            .map(|entry| (entry.name.as_str(), entry.to_version))
            .collect::<Vec<_>>(),
        vec![("old-name", Some(1)), ("new-name", Some(2))]
    );
    // The old name is free again: a new model of that name has a history of its own.
    model(&store, "old-name", 1).await;
    assert!(history(&store, "old-name").await.is_empty());

    store
        .delete_registered_model("new-name", Actor::Api)
        .await
        .unwrap();
    let kept = history(&store, "new-name").await;
    assert_eq!(
        kept.iter().map(|entry| entry.id).collect::<Vec<_>>(),
        renamed.iter().map(|entry| entry.id).collect::<Vec<_>>()
    );
}

async fn rollback_moves_an_alias_back_to_its_previous_holder(store: Store) {
    model(&store, "rolled", 3).await;
    assert!(matches!(
        store.rollback_alias("rolled", "champion", Actor::Api).await,
        Err(Error::AliasNotFound { .. })
    ));
    set_alias(&store, "rolled", "champion", 1).await;
    // Set once and never moved: nothing held it before.
    assert!(matches!(
        store.rollback_alias("rolled", "champion", Actor::Api).await,
        Err(Error::BadRequest(_))
    ));
    for version in [2, 3] {
        set_alias(&store, "rolled", "champion", version).await;
    }
    let rollback = store
        .rollback_alias("rolled", "champion", Actor::Api)
        .await
        .unwrap();
    assert_eq!(
        (rollback.from_version, rollback.to_version),
        (Some(3), Some(2))
    );
    assert!(rollback.rollback && rollback.allowed);
    let champion = store
        .get_model_version_by_alias("rolled", "champion")
        .await
        .unwrap();
    assert_eq!(champion.version, 2);
    // Rolling back again goes back to where the rollback came from (3); once that version is
    // deleted, it is refused and nothing moves.
    store
        .delete_model_version("rolled", 3, Actor::Api)
        .await
        .unwrap();
    let before = history(&store, "rolled").await.len();
    let error = store
        .rollback_alias("rolled", "champion", Actor::Api)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::BadRequest(message) if message.contains("version 3") && message.contains("deleted")),
        "{error}"
    );
    assert_eq!(history(&store, "rolled").await.len(), before);
    assert_eq!(
        store
            .get_model_version_by_alias("rolled", "champion")
            .await
            .unwrap()
            .version,
        2
    );
}

async fn concurrent_moves_leave_one_entry_each_in_the_order_applied(store: Store) {
    model(&store, "contended", 16).await;
    let moves = (1..=16).map(|version| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .set_registered_model_alias("contended", "champion", version, Actor::Api)
                .await
        })
    });
    for outcome in futures::future::join_all(moves).await {
        outcome.unwrap().unwrap();
    }
    let entries = history(&store, "contended").await;
    // Every move changed the alias (distinct versions), so each left exactly one entry, and
    // each entry starts where the one before it ended.
    assert_eq!(entries.len(), 16);
    assert_eq!(entries[0].from_version, None);
    for pair in entries.windows(2) {
        assert_eq!(pair[1].from_version, pair[0].to_version);
    }
    let versions: BTreeSet<i64> = entries
        .iter()
        .filter_map(|entry| entry.to_version)
        .collect();
    assert_eq!(versions, (1..=16).collect());
    let last = entries.last().unwrap().to_version.unwrap();
    let champion = store
        .get_model_version_by_alias("contended", "champion")
        .await
        .unwrap();
    assert_eq!(champion.version, last);
}

async fn the_operator_is_recorded_as_the_resource_it_acts_for(store: Store) {
    let resource = Owner {
        namespace: "team-a".into(),
        kind: "RegisteredModel".into(),
        name: "churn-model".into(),
        uid: "uid-1".into(),
    };
    store
        .create_registered_model(
            "declared",
            &[],
            None,
            Some(&Ownership {
                owner: resource.clone(),
                fields: [OwnedField::Aliases].into_iter().collect(),
            }),
        )
        .await
        .unwrap();
    new_version(
        &store,
        NewModelVersion {
            name: "declared".into(),
            source: "s3://bucket/declared/1".into(),
            ..NewModelVersion::default()
        },
    )
    .await;
    store
        .set_registered_model_alias("declared", "champion", 1, Actor::Owner("uid-1"))
        .await
        .unwrap();
    // The API cannot roll back an alias that git owns.
    assert!(matches!(
        store
            .rollback_alias("declared", "champion", Actor::Api)
            .await,
        Err(Error::OwnedElsewhere { .. })
    ));
    let entries = history(&store, "declared").await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor, "team-a/RegisteredModel/churn-model");
    assert_eq!(entries[0].path, PromotionPath::Operator);
}

/// Nobody edits or deletes the history, not even with SQL on the database.
#[tokio::test]
async fn sqlite_refuses_updates_and_deletes_of_the_history() {
    let test_store = crate::common::sqlite_store().await;
    seed_one_entry(&test_store.store).await;
    let path = test_store.uri.trim_start_matches("sqlite:///");
    let mut connection = sqlx::SqliteConnection::connect(&format!("sqlite://{path}"))
        .await
        .unwrap();
    for statement in [
        "UPDATE promotions SET to_version = 99",
        "DELETE FROM promotions",
    ] {
        let error = sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("append-only"), "{error}");
    }
    assert_eq!(history(&test_store.store, "audited").await.len(), 1);
}

#[tokio::test]
async fn postgres_refuses_updates_deletes_and_truncation_of_the_history() {
    let Some(test_store) = crate::common::postgres_store().await else {
        return;
    };
    seed_one_entry(&test_store.store).await;
    let mut connection = sqlx::PgConnection::connect(&test_store.uri).await.unwrap();
    for statement in [
        "UPDATE promotions SET to_version = 99",
        "DELETE FROM promotions",
        "TRUNCATE promotions",
    ] {
        let error = sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("append-only"), "{error}");
    }
    assert_eq!(history(&test_store.store, "audited").await.len(), 1);
}

async fn seed_one_entry(store: &Store) {
    model(store, "audited", 1).await;
    set_alias(store, "audited", "champion", 1).await;
}

mod policies {
    use std::time::{Duration, Instant};

    use super::{new_version, set_alias, set_stage};

    use ferroflow::store::registry::{
        Actor, MetricRule, ModelFiles, ModelMetadata, ModelMetadataRule, NewModelVersion,
        OwnedField, Owner, Ownership, PolicySpec, PredecessorRule, Rule, Stage, TagRule, Target,
    };
    use ferroflow::store::runs::NewRun;
    use ferroflow::store::values::Metric;
    use ferroflow::store::{Error, KeyValue, Store};

    crate::both_backends!(
        a_failed_rule_refuses_the_move_and_the_refusal_is_recorded,
        relative_rules_compare_with_the_version_holding_the_target,
        stage_transitions_and_rollbacks_pass_the_same_gate,
        a_dwell_rule_refuses_until_the_predecessor_was_held_long_enough,
        a_dry_run_judges_without_moving_or_recording,
        four_eyes_needs_the_tag_set_by_someone_other_than_the_creator,
        versions_and_their_tags_record_who_wrote_them,
        a_model_metadata_rule_reads_what_the_tracking_server_recorded,
        the_operator_retrying_a_refused_move_records_it_once,
    );

    /// A version of `model` registered from a new run that logged `val_auc`.
    async fn version_with_auc(store: &Store, model: &str, auc: Option<f64>) -> i64 {
        let experiment = format!("{model}-runs");
        let experiment_id = match store.get_experiment_by_name(&experiment).await {
            Ok(found) => found.experiment_id,
            Err(_) => store
                .create_experiment(&experiment, None, &[], "mlflow-artifacts:")
                .await
                .unwrap(),
        };
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
        let run_id = run.info.run_uuid;
        if let Some(auc) = auc {
            let metric = Metric {
                key: "val_auc".into(),
                value: auc,
                timestamp: 1_700_000_000_000,
                step: 0,
                model_id: None,
                dataset_name: None,
                dataset_digest: None,
                run_id: None,
            };
            store.log_batch(&run_id, &[metric], &[], &[]).await.unwrap();
        }
        new_version(
            store,
            NewModelVersion {
                name: model.into(),
                source: format!("runs:/{run_id}/model"),
                run_id: Some(run_id),
                ..NewModelVersion::default()
            },
        )
        .await
    }

    fn gate(rules: Vec<Rule>) -> PolicySpec {
        PolicySpec {
            models: vec!["gated-*".into()],
            aliases: vec!["champion".into()],
            stages: vec!["Production".into()],
            rules,
        }
    }

    fn auc_at_least(min: f64) -> Rule {
        Rule::Metric(MetricRule {
            name: "val_auc".into(),
            min: Some(min),
            max: None,
            max_regression: None,
            lower_is_better: false,
        })
    }

    fn approved() -> Rule {
        Rule::Tag(TagRule {
            key: "approved".into(),
            value: Some("true".into()),
            four_eyes: false,
        })
    }

    /// A version of `model` registered by `creator` (`None`: unknown) with `tags`.
    async fn version_by(
        store: &Store,
        model: &str,
        creator: Option<&str>,
        tags: Vec<KeyValue>,
    ) -> i64 {
        new_version(
            store,
            NewModelVersion {
                name: model.into(),
                source: format!("s3://bucket/{model}"),
                tags,
                user_id: creator.map(Into::into),
                ..NewModelVersion::default()
            },
        )
        .await
    }

    async fn four_eyes_needs_the_tag_set_by_someone_other_than_the_creator(store: Store) {
        // A policy governs the models of its namespace's workspace.
        let store = store.in_workspace("team-a");
        let four_eyes = Rule::Tag(TagRule {
            key: "approved".into(),
            value: Some("true".into()),
            four_eyes: true,
        });
        store
            .put_promotion_policy("uid-4e", "team-a", "four-eyes", &gate(vec![four_eyes]))
            .await
            .unwrap();
        store
            .create_registered_model("gated-4e", &[], None, None)
            .await
            .unwrap();
        let approved = || KeyValue::new("approved", "true");
        let rule = "tag approved = true, set by someone other than the version's creator";

        // alice registers a version already tagged approved: she set the tag herself.
        let own = version_by(&store, "gated-4e", Some("alice"), vec![approved()]).await;
        assert_eq!(
            store
                .get_model_version("gated-4e", own)
                .await
                .unwrap()
                .user_id
                .as_deref(),
            Some("alice")
        );
        let refused = store
            .set_registered_model_alias("gated-4e", "champion", own, Actor::User("alice"))
            .await
            .unwrap_err();
        assert!(matches!(refused, Error::PolicyDenied(_)), "{refused:?}");
        assert!(
            refused.to_string().contains(&format!(
                "[team-a/four-eyes] {rule} failed: tag approved = true, set by alice, the version's creator"
            )),
            "{refused}"
        );
        // bob approves it: allowed, whoever moves the alias.
        store
            .set_model_version_tag("gated-4e", own, &approved(), Actor::User("bob"))
            .await
            .unwrap();
        store
            .set_registered_model_alias("gated-4e", "champion", own, Actor::User("alice"))
            .await
            .unwrap();
        // Setting the tag again records the new setter: alice re-approving her own version
        // replaces bob's approval.
        store
            .set_model_version_tag("gated-4e", own, &approved(), Actor::User("alice"))
            .await
            .unwrap();
        let results = store
            .check_promotion("gated-4e", Target::Alias("champion"), own)
            .await
            .unwrap();
        assert!(!results[0].passed, "{results:?}");

        // Unknown setter (an unauthenticated call) or unknown creator: refused.
        let anonymous_approval = version_by(&store, "gated-4e", Some("alice"), vec![]).await;
        store
            .set_model_version_tag("gated-4e", anonymous_approval, &approved(), Actor::Api)
            .await
            .unwrap();
        let refused = store
            .set_registered_model_alias(
                "gated-4e",
                "champion",
                anonymous_approval,
                Actor::User("bob"),
            )
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("set by an unknown user"),
            "{refused}"
        );
        let unknown_creator = version_by(&store, "gated-4e", None, vec![]).await;
        store
            .set_model_version_tag("gated-4e", unknown_creator, &approved(), Actor::User("bob"))
            .await
            .unwrap();
        let refused = store
            .set_registered_model_alias("gated-4e", "champion", unknown_creator, Actor::User("bob"))
            .await
            .unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("set by bob; the version's creator is unknown"),
            "{refused}"
        );
        // Missing tag: refused too.
        let untagged = version_by(&store, "gated-4e", Some("alice"), vec![]).await;
        let results = store
            .check_promotion("gated-4e", Target::Alias("champion"), untagged)
            .await
            .unwrap();
        assert_eq!(
            (results[0].passed, results[0].observed.as_str()),
            (false, "tag approved is not set")
        );

        // The history names the authenticated actor of each move, refused or allowed.
        let history = super::history(&store, "gated-4e").await;
        let moves: Vec<_> = history
            .iter()
            .map(|entry| (entry.actor.as_str(), entry.allowed, entry.to_version))
            .collect();
        assert_eq!(
            moves,
            vec![
                ("alice", false, Some(own)),
                ("alice", true, Some(own)),
                ("bob", false, Some(anonymous_approval)),
                ("bob", false, Some(unknown_creator)),
            ]
        );
        assert!(
            history
                .iter()
                .all(|entry| entry.path == super::PromotionPath::Api)
        );
    }

    async fn versions_and_their_tags_record_who_wrote_them(store: Store) {
        // A policy governs the models of its namespace's workspace.
        let store = store.in_workspace("team-a");
        let resource = Owner {
            namespace: "team-a".into(),
            kind: "ModelVersion".into(),
            name: "churn-v1".into(),
            uid: "uid-mv".into(),
        };
        store
            .create_registered_model("who-churn", &[], None, None)
            .await
            .unwrap();
        // The operator registers a version for its resource: the resource is its creator.
        let declared = store
            .create_model_version(NewModelVersion {
                name: "who-churn".into(),
                source: "s3://bucket/who-churn/1".into(),
                ownership: Some(Ownership {
                    owner: resource.clone(),
                    fields: [OwnedField::Tags].into_iter().collect(),
                }),
                ..NewModelVersion::default()
            })
            .await
            .unwrap();
        assert_eq!(
            declared.user_id.as_deref(),
            Some("team-a/ModelVersion/churn-v1")
        );
        // Unauthenticated registration: no creator, as MLflow leaves user_id empty.
        let anonymous = version_by(&store, "who-churn", None, vec![]).await;
        assert_eq!(
            store
                .get_model_version("who-churn", anonymous)
                .await
                .unwrap()
                .user_id,
            None
        );
        // The resource sets its own version's tag: it is recorded as the setter, so the
        // resource approving its own version is the creator approving (four eyes refuse).
        store
            .set_model_version_tag(
                "who-churn",
                declared.version,
                &KeyValue::new("approved", "true"),
                Actor::Owner("uid-mv"),
            )
            .await
            .unwrap();
        store
            .put_promotion_policy(
                "uid-who",
                "team-a",
                "who",
                &PolicySpec {
                    models: vec!["who-*".into()],
                    aliases: vec!["champion".into()],
                    stages: vec![],
                    rules: vec![Rule::Tag(TagRule {
                        key: "approved".into(),
                        value: None,
                        four_eyes: true,
                    })],
                },
            )
            .await
            .unwrap();
        let results = store
            .check_promotion("who-churn", Target::Alias("champion"), declared.version)
            .await
            .unwrap();
        assert_eq!(
            results[0].observed,
            "tag approved = true, set by team-a/ModelVersion/churn-v1, the version's creator"
        );
    }

    async fn a_failed_rule_refuses_the_move_and_the_refusal_is_recorded(store: Store) {
        // A policy governs the models of its namespace's workspace.
        let store = store.in_workspace("team-a");
        store
            .put_promotion_policy(
                "uid-gate",
                "team-a",
                "gate",
                &gate(vec![auc_at_least(0.9), approved()]),
            )
            .await
            .unwrap();
        store
            .create_registered_model("gated-churn", &[], None, None)
            .await
            .unwrap();
        let weak = version_with_auc(&store, "gated-churn", Some(0.85)).await;
        let strong = version_with_auc(&store, "gated-churn", Some(0.93)).await;

        let error = store
            .set_registered_model_alias("gated-churn", "champion", weak, Actor::Api)
            .await
            .unwrap_err();
        assert!(matches!(error, Error::PolicyDenied(_)), "{error:?}");
        let message = error.to_string();
        assert!(
            message.contains("val_auc >= 0.9 failed: val_auc = 0.85"),
            "{message}"
        );
        assert!(
            message.contains("tag approved = true failed: tag approved is not set"),
            "{message}"
        );
        assert!(message.contains("[team-a/gate]"), "{message}");
        assert!(
            store
                .get_model_version_by_alias("gated-churn", "champion")
                .await
                .is_err()
        );

        // Other aliases and other models are not guarded.
        set_alias(&store, "gated-churn", "challenger", weak).await;
        store
            .create_registered_model("free-churn", &[], None, None)
            .await
            .unwrap();
        let free = version_with_auc(&store, "free-churn", Some(0.1)).await;
        set_alias(&store, "free-churn", "champion", free).await;

        store
            .set_model_version_tag(
                "gated-churn",
                strong,
                &KeyValue::new("approved", "true"),
                Actor::Api,
            )
            .await
            .unwrap();
        set_alias(&store, "gated-churn", "champion", strong).await;
        let history = super::history(&store, "gated-churn").await;
        let champion: Vec<_> = history
            .iter()
            .filter(|entry| entry.target == "champion")
            .collect();
        assert_eq!(champion.len(), 2);
        assert!(!champion[0].allowed && champion[0].to_version == Some(weak));
        assert_eq!(
            champion[0]
                .results
                .iter()
                .filter(|result| !result.passed)
                .count(),
            2
        );
        assert!(champion[1].allowed && champion[1].results.iter().all(|result| result.passed));
        assert_eq!(champion[1].results.len(), 2);
        // A refused move is history, not state: `at` and rollback ignore it.
        assert_eq!(champion[1].from_version, None);
        // The policy's resource is deleted: nothing guards the alias any more.
        store.delete_promotion_policy("uid-gate").await.unwrap();
        set_alias(&store, "gated-churn", "champion", weak).await;
    }

    async fn relative_rules_compare_with_the_version_holding_the_target(store: Store) {
        // A policy governs the models of its namespace's workspace.
        let store = store.in_workspace("team-a");
        let relative = Rule::Metric(MetricRule {
            name: "val_auc".into(),
            min: None,
            max: None,
            max_regression: Some(0.005),
            lower_is_better: false,
        });
        store
            .put_promotion_policy("uid-rel", "team-a", "relative", &gate(vec![relative]))
            .await
            .unwrap();
        store
            .create_registered_model("gated-rel", &[], None, None)
            .await
            .unwrap();
        let first = version_with_auc(&store, "gated-rel", Some(0.92)).await;
        let worse = version_with_auc(&store, "gated-rel", Some(0.90)).await;
        let close = version_with_auc(&store, "gated-rel", Some(0.917)).await;
        let unmeasured = version_with_auc(&store, "gated-rel", None).await;
        // Nothing holds champion yet: nothing to be worse than.
        set_alias(&store, "gated-rel", "champion", first).await;
        let error = store
            .set_registered_model_alias("gated-rel", "champion", worse, Actor::Api)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("val_auc = 0.9; incumbent version 1: val_auc = 0.92"),
            "{error}"
        );
        assert!(matches!(
            store
                .set_registered_model_alias("gated-rel", "champion", unmeasured, Actor::Api)
                .await,
            Err(Error::PolicyDenied(_))
        ));
        set_alias(&store, "gated-rel", "champion", close).await;
    }

    async fn stage_transitions_and_rollbacks_pass_the_same_gate(store: Store) {
        // A policy governs the models of its namespace's workspace.
        let store = store.in_workspace("team-a");
        store
            .create_registered_model("gated-stage", &[], None, None)
            .await
            .unwrap();
        let weak = version_with_auc(&store, "gated-stage", Some(0.5)).await;
        let strong = version_with_auc(&store, "gated-stage", Some(0.95)).await;
        // Moves made before the policy existed.
        set_alias(&store, "gated-stage", "champion", weak).await;
        set_alias(&store, "gated-stage", "champion", strong).await;
        store
            .put_promotion_policy(
                "uid-stage",
                "team-a",
                "gate",
                &gate(vec![auc_at_least(0.9)]),
            )
            .await
            .unwrap();
        let error = store
            .transition_model_version_stage(
                "gated-stage",
                weak,
                Stage::Production,
                false,
                Actor::Api,
            )
            .await
            .unwrap_err();
        assert!(error.to_string().contains("stage 'Production'"), "{error}");
        assert_eq!(
            store
                .get_model_version("gated-stage", weak)
                .await
                .unwrap()
                .current_stage,
            Stage::None
        );
        // Staging is not guarded; Production for the strong one is allowed, archiving nothing.
        set_stage(&store, "gated-stage", weak, Stage::Staging).await;
        store
            .transition_model_version_stage(
                "gated-stage",
                strong,
                Stage::Production,
                true,
                Actor::Api,
            )
            .await
            .unwrap();
        // Rolling champion back to the weak version is a promotion like any other.
        assert!(matches!(
            store
                .rollback_alias("gated-stage", "champion", Actor::Api)
                .await,
            Err(Error::PolicyDenied(_))
        ));
        assert_eq!(
            store
                .get_model_version_by_alias("gated-stage", "champion")
                .await
                .unwrap()
                .version,
            strong
        );
        let history = super::history(&store, "gated-stage").await;
        let last = history.last().unwrap();
        assert!(last.rollback && !last.allowed, "{last:?}");
    }

    async fn a_dwell_rule_refuses_until_the_predecessor_was_held_long_enough(store: Store) {
        // A policy governs the models of its namespace's workspace.
        let store = store.in_workspace("team-a");
        let dwell = Rule::Predecessor(PredecessorRule {
            alias: Some("challenger".into()),
            stage: None,
            min_seconds: 1,
        });
        store
            .put_promotion_policy("uid-dwell", "team-a", "dwell", &gate(vec![dwell]))
            .await
            .unwrap();
        store
            .create_registered_model("gated-dwell", &[], None, None)
            .await
            .unwrap();
        let candidate = version_with_auc(&store, "gated-dwell", Some(0.9)).await;
        let error = store
            .set_registered_model_alias("gated-dwell", "champion", candidate, Actor::Api)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("does not hold alias 'challenger'"),
            "{error}"
        );
        set_alias(&store, "gated-dwell", "challenger", candidate).await;
        let held_from = Instant::now();
        let first = store
            .set_registered_model_alias("gated-dwell", "champion", candidate, Actor::Api)
            .await;
        if held_from.elapsed() < Duration::from_millis(900) {
            let error = first.unwrap_err();
            assert!(error.to_string().contains("for at least 1s"), "{error}");
        }
        // Allowed once it has held challenger for a second: retried until then, with a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match store
                .set_registered_model_alias("gated-dwell", "champion", candidate, Actor::Api)
                .await
            {
                Ok(()) => break,
                Err(Error::PolicyDenied(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => unreachable!("the dwell rule should pass in time: {error}"),
            }
        }
        assert!(held_from.elapsed() >= Duration::from_millis(900));
    }

    async fn a_dry_run_judges_without_moving_or_recording(store: Store) {
        // A policy governs the models of its namespace's workspace.
        let store = store.in_workspace("team-a");
        store
            .put_promotion_policy("uid-dry", "team-a", "gate", &gate(vec![auc_at_least(0.9)]))
            .await
            .unwrap();
        store
            .create_registered_model("gated-dry", &[], None, None)
            .await
            .unwrap();
        let weak = version_with_auc(&store, "gated-dry", Some(0.85)).await;
        let results = store
            .check_promotion("gated-dry", Target::Alias("champion"), weak)
            .await
            .unwrap();
        assert_eq!(results.len(), 1);
        assert!(!results[0].passed && results[0].observed == "val_auc = 0.85");
        let unguarded = store
            .check_promotion("gated-dry", Target::Alias("challenger"), weak)
            .await
            .unwrap();
        assert!(unguarded.is_empty());
        assert!(matches!(
            store
                .check_promotion("gated-dry", Target::Alias("champion"), 99)
                .await,
            Err(Error::NotFound { .. })
        ));
        assert!(matches!(
            store.promotions("gated-dry", None, 10, None).await,
            Ok(page) if page.items.is_empty()
        ));
    }

    async fn a_model_metadata_rule_reads_what_the_tracking_server_recorded(store: Store) {
        // A policy governs the models of its namespace's workspace.
        let store = store.in_workspace("team-a");
        let documented = Rule::ModelMetadata(ModelMetadataRule {
            any_of: vec![ModelMetadata::Signature, ModelMetadata::InputExample],
        });
        store
            .put_promotion_policy("uid-meta", "team-a", "documented", &gate(vec![documented]))
            .await
            .unwrap();
        store
            .create_registered_model("gated-meta", &[], None, None)
            .await
            .unwrap();
        let unread = version_with_auc(&store, "gated-meta", None).await;
        let bare = version_with_auc(&store, "gated-meta", None).await;
        let signed = version_with_auc(&store, "gated-meta", None).await;
        store
            .record_model_files(
                "gated-meta",
                bare,
                &ModelFiles::from_mlmodel("flavors: {}\nsignature: null\n"),
            )
            .await
            .unwrap();
        store
            .record_model_files(
                "gated-meta",
                signed,
                &ModelFiles::from_mlmodel("flavors: {}\nsignature:\n  inputs: '[]'\n"),
            )
            .await
            .unwrap();
        for (version, seen) in [
            (unread, "was not read"),
            (bare, "MLmodel has neither a signature nor an input example"),
        ] {
            let error = store
                .set_registered_model_alias("gated-meta", "champion", version, Actor::Api)
                .await
                .unwrap_err();
            assert!(
                matches!(&error, Error::PolicyDenied(message)
                    if message.contains("model has a signature or an input example failed") && message.contains(seen)),
                "{error}"
            );
        }
        set_alias(&store, "gated-meta", "champion", signed).await;
        let results = store
            .check_promotion("gated-meta", Target::Alias("champion"), signed)
            .await
            .unwrap();
        assert_eq!(results[0].observed, "MLmodel has a signature");
        let history = super::history(&store, "gated-meta").await;
        assert_eq!(
            history
                .iter()
                .map(|entry| entry.allowed)
                .collect::<Vec<_>>(),
            vec![false, false, true]
        );
        // A version that is gone has no files to record.
        assert!(matches!(
            store
                .record_model_files("gated-meta", 99, &ModelFiles::NO_MLMODEL)
                .await,
            Err(Error::NotFound { .. })
        ));
    }

    async fn the_operator_retrying_a_refused_move_records_it_once(store: Store) {
        let store = store.in_workspace("team-a");
        store
            .put_promotion_policy(
                "uid-retry",
                "team-a",
                "gate",
                &gate(vec![auc_at_least(0.9), approved()]),
            )
            .await
            .unwrap();
        let resource = Owner {
            namespace: "team-a".into(),
            kind: "RegisteredModel".into(),
            name: "retried".into(),
            uid: "uid-rm".into(),
        };
        store
            .create_registered_model(
                "gated-retry",
                &[],
                None,
                Some(&Ownership {
                    owner: resource,
                    fields: [OwnedField::Aliases].into_iter().collect(),
                }),
            )
            .await
            .unwrap();
        let operator = Actor::Owner("uid-rm");
        let weak = version_with_auc(&store, "gated-retry", Some(0.85)).await;
        let weaker = version_with_auc(&store, "gated-retry", Some(0.8)).await;
        let strong = version_with_auc(&store, "gated-retry", Some(0.95)).await;
        store
            .set_model_version_tag(
                "gated-retry",
                strong,
                &KeyValue::new("approved", "true"),
                operator,
            )
            .await
            .unwrap();
        store
            .set_registered_model_alias("gated-retry", "champion", strong, operator)
            .await
            .unwrap();
        let refuse = |version: i64| {
            let store = store.clone();
            async move {
                let error = store
                    .set_registered_model_alias("gated-retry", "champion", version, operator)
                    .await
                    .unwrap_err();
                assert!(matches!(error, Error::PolicyDenied(_)), "{error:?}");
                error.to_string()
            }
        };
        let champion = |store: Store| async move {
            super::history(&store, "gated-retry")
                .await
                .into_iter()
                .filter(|entry| entry.target == "champion")
                .map(|entry| {
                    (
                        entry.allowed,
                        entry.to_version,
                        entry.results.iter().filter(|r| !r.passed).count(),
                    )
                })
                .collect::<Vec<_>>()
        };

        // Every retry of the same refused move is refused with the same message; recorded once.
        let first = refuse(weak).await;
        for _ in 0..6 {
            assert_eq!(refuse(weak).await, first);
        }
        assert_eq!(
            champion(store.clone()).await,
            vec![(true, Some(strong), 0), (false, Some(weak), 2)]
        );
        // Another reason (the tag is set now, only the metric fails): a new entry, once.
        store
            .set_model_version_tag(
                "gated-retry",
                weak,
                &KeyValue::new("approved", "true"),
                operator,
            )
            .await
            .unwrap();
        for _ in 0..3 {
            refuse(weak).await;
        }
        // Another version: a new entry, once.
        for _ in 0..3 {
            refuse(weaker).await;
        }
        assert_eq!(
            champion(store.clone()).await,
            vec![
                (true, Some(strong), 0),
                (false, Some(weak), 2),
                (false, Some(weak), 1),
                (false, Some(weaker), 2),
            ]
        );
        // The bounded recent entries keep the allowed move.
        let recent = store
            .recent_alias_promotions("gated-retry", 5)
            .await
            .unwrap();
        assert_eq!(recent.len(), 4);
        assert_eq!(recent.last().unwrap().to_version, Some(strong));
        // Back to a refusal recorded before, but not the newest: recorded again.
        refuse(weak).await;
        assert_eq!(champion(store.clone()).await.len(), 5);

        // Each REST call is a request of its own: every refusal is recorded.
        store
            .create_registered_model("gated-api", &[], None, None)
            .await
            .unwrap();
        let api_weak = version_with_auc(&store, "gated-api", Some(0.85)).await;
        for _ in 0..2 {
            assert!(matches!(
                store
                    .set_registered_model_alias("gated-api", "champion", api_weak, Actor::Api)
                    .await,
                Err(Error::PolicyDenied(_))
            ));
        }
        assert_eq!(super::history(&store, "gated-api").await.len(), 2);
    }
}
