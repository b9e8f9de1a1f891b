//! Store conformance: every test runs on SQLite and on Postgres and must behave the same.

// Test helpers panic on unexpected failures: that is how a test fails.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod experiment_owner;
mod group_commit;
mod operator_workspaces;
mod ownership_migration;
mod promotions;
mod registry;
mod run_search;
mod statistics;
mod tagged_runs;
mod workspaces;

use ferroflow::store::experiments::{DEFAULT_EXPERIMENT_ID, ExperimentSearch};
use ferroflow::store::metrics::HistoryChunk;
use ferroflow::store::registry::Actor;
use ferroflow::store::runs::{Dataset, DatasetInput, Metric, NewRun, RunSearch};
use ferroflow::store::{Entity, Error, KeyValue, Store, ViewType};

both_backends!(
    default_experiment_exists,
    experiments_create_get_rename_and_refuse_duplicates,
    deleting_an_experiment_deletes_and_restores_its_runs,
    experiment_search_filters_orders_and_pages,
    run_names_follow_the_run_name_tag,
    params_are_write_once,
    latest_metric_is_greatest_step_timestamp_value,
    log_batch_is_validated_before_anything_is_written,
    repeated_metric_points_are_stored_once,
    large_batches_keep_point_semantics,
    batch_keys_and_order_are_kept_whatever_the_spelling,
    param_and_tag_text_reads_back_exactly,
    large_batches_keep_values_fields_and_repeats,
    concurrent_overlapping_batches_all_succeed,
    metric_history_pages_in_step_order,
    metric_history_pages_split_points_of_one_step,
    metric_history_streams_in_bounded_chunks,
    metric_history_keeps_optional_fields_exactly,
    metric_history_reads_nan_beside_optional_fields,
    metric_history_values_read_back_bit_for_bit,
    metric_history_resumes_between_adjacent_doubles,
    special_float_metrics_round_trip,
    nan_metrics_filter_and_sort_like_mlflow,
    run_search_filters_match_mlflow_semantics,
    run_search_orders_missing_values_last_both_ways,
    run_search_pages_survive_inserts,
    datasets_are_deduplicated_and_searchable,
    writes_to_deleted_runs_are_refused,
    bulk_interval_samples_steps,
    bulk_interval_tiles_match_ntile_at_boundaries,
);

async fn new_experiment(store: &Store, name: &str) -> i64 {
    store
        .create_experiment(name, None, &[], "mlflow-artifacts:")
        .await
        .expect("create experiment")
}

async fn new_run(store: &Store, experiment_id: i64, name: &str, start_time: i64) -> String {
    store
        .create_run(NewRun {
            experiment_id,
            user_id: "tester".into(),
            run_name: Some(name.into()),
            start_time: Some(start_time),
            tags: vec![],
        })
        .await
        .expect("create run")
        .info
        .run_uuid
}

/// The whole history of `key`, read page after page of `page_size` as MlflowClient pages it;
/// no page holds more than it asked for.
async fn history_in_pages(store: &Store, run_id: &str, key: &str, page_size: i64) -> Vec<Metric> {
    let mut read = Vec::new();
    let mut token = String::new();
    loop {
        let page = store
            .get_metric_history(run_id, key, Some(page_size), &token)
            .await
            .unwrap();
        assert!(
            page.items.len() as i64 <= page_size,
            "a page of {page_size}"
        );
        read.extend(page.items);
        match page.next_page_token {
            Some(next) => token = next,
            None => return read,
        }
    }
}

fn search(experiment_id: i64, filter: &str, order_by: &[&str]) -> RunSearch {
    RunSearch {
        experiment_ids: vec![experiment_id],
        filter: filter.into(),
        view_type: ViewType::ActiveOnly,
        max_results: 1000,
        order_by: order_by.iter().map(|s| s.to_string()).collect(),
        page_token: String::new(),
    }
}

async fn run_names(store: &Store, request: &RunSearch) -> Vec<String> {
    let page = store.search_runs(request).await.expect("search runs");
    page.items
        .into_iter()
        .map(|run| run.info.run_name)
        .collect()
}

async fn default_experiment_exists(store: Store) {
    let default = store.get_experiment(DEFAULT_EXPERIMENT_ID).await.unwrap();
    assert_eq!(default.name, "Default");
    assert_eq!(default.artifact_location, "mlflow-artifacts:/0");
    assert_eq!(default.lifecycle_stage, "active");
}

async fn experiments_create_get_rename_and_refuse_duplicates(store: Store) {
    let tags = vec![KeyValue::new("team", "a")];
    let id = store
        .create_experiment("exp-a", None, &tags, "mlflow-artifacts:")
        .await
        .unwrap();
    assert!(id > 0);
    let experiment = store.get_experiment_by_name("exp-a").await.unwrap();
    assert_eq!(experiment.experiment_id, id);
    assert_eq!(
        experiment.artifact_location,
        format!("mlflow-artifacts:/{id}")
    );
    assert_eq!(experiment.tags, tags);
    let duplicate = store
        .create_experiment("exp-a", None, &[], "mlflow-artifacts:")
        .await;
    assert!(
        matches!(duplicate, Err(Error::AlreadyExists(_))),
        "{duplicate:?}"
    );
    store
        .rename_experiment(id, "exp-b", Actor::Api)
        .await
        .unwrap();
    assert_eq!(store.get_experiment(id).await.unwrap().name, "exp-b");
    assert!(matches!(
        store.get_experiment_by_name("exp-a").await,
        Err(Error::NotFound {
            entity: Entity::Experiment,
            ..
        })
    ));
    new_experiment(&store, "exp-c").await;
    assert!(matches!(
        store.rename_experiment(id, "exp-c", Actor::Api).await,
        Err(Error::BadRequest(_))
    ));
    assert!(matches!(
        store.get_experiment(999_999).await,
        Err(Error::NotFound {
            entity: Entity::Experiment,
            ..
        })
    ));
    let custom = store
        .create_experiment("exp-d", Some("s3://bucket/x"), &[], "mlflow-artifacts:")
        .await
        .unwrap();
    assert_eq!(
        store
            .get_experiment(custom)
            .await
            .unwrap()
            .artifact_location,
        "s3://bucket/x"
    );
}

async fn deleting_an_experiment_deletes_and_restores_its_runs(store: Store) {
    let id = new_experiment(&store, "doomed").await;
    let run = new_run(&store, id, "r", 1).await;
    store.delete_experiment(id, Actor::Api).await.unwrap();
    assert_eq!(
        store.get_experiment(id).await.unwrap().lifecycle_stage,
        "deleted"
    );
    assert_eq!(
        store.get_run_info(&run).await.unwrap().lifecycle_stage,
        "deleted"
    );
    assert!(matches!(
        store.delete_experiment(id, Actor::Api).await,
        Err(Error::NotFound {
            entity: Entity::Experiment,
            ..
        })
    ));
    // A deleted experiment still holds its name.
    assert!(matches!(
        store
            .create_experiment("doomed", None, &[], "mlflow-artifacts:")
            .await,
        Err(Error::AlreadyExists(_))
    ));
    store.restore_experiment(id, Actor::Api).await.unwrap();
    assert_eq!(
        store.get_run_info(&run).await.unwrap().lifecycle_stage,
        "active"
    );
}

async fn experiment_search_filters_orders_and_pages(store: Store) {
    for i in 0..7 {
        let id = new_experiment(&store, &format!("search-{i}")).await;
        if i % 2 == 0 {
            store
                .set_experiment_tag(id, &KeyValue::new("even", "yes"), Actor::Api)
                .await
                .unwrap();
        }
    }
    let request = |filter: &str, order: &[&str], max: i64, token: &str| ExperimentSearch {
        view_type: ViewType::ActiveOnly,
        filter: filter.into(),
        order_by: order.iter().map(|s| s.to_string()).collect(),
        max_results: max,
        page_token: token.into(),
    };
    let names = |page: &ferroflow::store::Page<ferroflow::store::experiments::Experiment>| {
        page.items
            .iter()
            .map(|e| e.name.clone())
            .collect::<Vec<_>>()
    };
    let evens = store
        .search_experiments(&request("tags.even = 'yes'", &["name DESC"], 100, ""))
        .await
        .unwrap();
    assert_eq!(
        names(&evens),
        ["search-6", "search-4", "search-2", "search-0"]
    );
    let like = store
        .search_experiments(&request("name LIKE 'search-%'", &["name"], 3, ""))
        .await
        .unwrap();
    assert_eq!(names(&like), ["search-0", "search-1", "search-2"]);
    let token = like.next_page_token.expect("more pages");
    let second = store
        .search_experiments(&request("name LIKE 'search-%'", &["name"], 3, &token))
        .await
        .unwrap();
    assert_eq!(names(&second), ["search-3", "search-4", "search-5"]);
    let last = store
        .search_experiments(&request(
            "name LIKE 'search-%'",
            &["name"],
            3,
            &second.next_page_token.unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(names(&last), ["search-6"]);
    assert!(last.next_page_token.is_none());
    let exact = store
        .search_experiments(&request("name LIKE 'search-%'", &[], 7, ""))
        .await
        .unwrap();
    assert_eq!(exact.items.len(), 7);
    assert!(
        exact.next_page_token.is_none(),
        "an exactly full last page has no token"
    );
    assert!(matches!(
        store
            .search_experiments(&request("name ~ 'x'", &[], 10, ""))
            .await,
        Err(Error::Invalid(_))
    ));
}

async fn run_names_follow_the_run_name_tag(store: Store) {
    let id = new_experiment(&store, "names").await;
    let generated = store
        .create_run(NewRun {
            experiment_id: id,
            ..NewRun::default()
        })
        .await
        .unwrap();
    assert!(!generated.info.run_name.is_empty());
    assert!(generated.tags.contains(&KeyValue::new(
        "mlflow.runName",
        generated.info.run_name.clone()
    )));
    let run_id = generated.info.run_uuid;
    store
        .update_run(&run_id, Some("FINISHED"), Some(42), Some("renamed"))
        .await
        .unwrap();
    let run = store.get_run(&run_id).await.unwrap();
    assert_eq!(
        (
            run.info.run_name.as_str(),
            run.info.status.as_str(),
            run.info.end_time
        ),
        ("renamed", "FINISHED", Some(42))
    );
    assert!(
        run.tags
            .contains(&KeyValue::new("mlflow.runName", "renamed"))
    );
    store
        .log_batch(
            &run_id,
            &[],
            &[],
            &[KeyValue::new("mlflow.runName", "by-tag")],
        )
        .await
        .unwrap();
    assert_eq!(
        store.get_run(&run_id).await.unwrap().info.run_name,
        "by-tag"
    );
    let conflicting = store
        .create_run(NewRun {
            experiment_id: id,
            run_name: Some("a".into()),
            tags: vec![KeyValue::new("mlflow.runName", "b")],
            ..NewRun::default()
        })
        .await;
    assert!(matches!(conflicting, Err(Error::Invalid(_))));
}

async fn params_are_write_once(store: Store) {
    let id = new_experiment(&store, "params").await;
    let run = new_run(&store, id, "p", 1).await;
    store
        .log_batch(&run, &[], &[KeyValue::new("lr", "0.1")], &[])
        .await
        .unwrap();
    store
        .log_batch(&run, &[], &[KeyValue::new("lr", "0.1")], &[])
        .await
        .unwrap();
    let changed = store
        .log_batch(&run, &[], &[KeyValue::new("lr", "0.2")], &[])
        .await;
    assert!(
        matches!(changed, Err(Error::Invalid(ref m)) if m.contains("lr")),
        "{changed:?}"
    );
    let long = "v".repeat(7000);
    store
        .log_batch(&run, &[], &[KeyValue::new("long", long)], &[])
        .await
        .unwrap();
    let params = store.get_run(&run).await.unwrap().params;
    assert_eq!(params.iter().find(|p| p.key == "lr").unwrap().value, "0.1");
    assert_eq!(
        params.iter().find(|p| p.key == "long").unwrap().value.len(),
        6000
    );
}

async fn latest_metric_is_greatest_step_timestamp_value(store: Store) {
    let id = new_experiment(&store, "latest").await;
    let run = new_run(&store, id, "m", 1).await;
    let points = [
        Metric::new("loss", 0.5, 100, 3),
        Metric::new("loss", 0.9, 200, 1),
        Metric::new("loss", 0.7, 100, 3),
    ];
    store.log_batch(&run, &points, &[], &[]).await.unwrap();
    // A later write with a smaller step does not become the latest value.
    store
        .log_batch(&run, &[Metric::new("loss", 0.1, 999, 2)], &[], &[])
        .await
        .unwrap();
    let metrics = store.get_run(&run).await.unwrap().metrics;
    assert_eq!(metrics.len(), 1);
    assert_eq!(
        (metrics[0].value, metrics[0].step, metrics[0].timestamp),
        (0.7, 3, 100)
    );
    let thousand: Vec<Metric> = (0..1000)
        .map(|i| Metric::new(format!("m{i}"), f64::from(i), 5, 0))
        .collect();
    store.log_batch(&run, &thousand, &[], &[]).await.unwrap();
    let run = store.get_run(&run).await.unwrap();
    assert_eq!(run.metrics.len(), 1001);
    assert_eq!(
        run.metrics.iter().find(|m| m.key == "m999").unwrap().value,
        999.0
    );
}

async fn log_batch_is_validated_before_anything_is_written(store: Store) {
    let id = new_experiment(&store, "atomic").await;
    let run = new_run(&store, id, "a", 1).await;
    let bad_key = "k".repeat(251);
    let result = store
        .log_batch(
            &run,
            &[Metric::new("ok", 1.0, 1, 0)],
            &[KeyValue::new(bad_key, "v")],
            &[],
        )
        .await;
    assert!(matches!(result, Err(Error::Invalid(_))));
    let conflict_setup = store
        .log_batch(&run, &[], &[KeyValue::new("p", "1")], &[])
        .await;
    assert!(conflict_setup.is_ok());
    let conflicted = store
        .log_batch(
            &run,
            &[Metric::new("after", 1.0, 1, 0)],
            &[KeyValue::new("p", "2")],
            &[KeyValue::new("t", "x")],
        )
        .await;
    assert!(matches!(conflicted, Err(Error::Invalid(_))));
    let stored = store.get_run(&run).await.unwrap();
    assert!(
        stored.metrics.is_empty(),
        "nothing written: {:?}",
        stored.metrics
    );
    assert!(!stored.tags.iter().any(|t| t.key == "t"));
}

/// A retried request repeats points: MLflow answers success and stores each point once.
async fn repeated_metric_points_are_stored_once(store: Store) {
    let id = new_experiment(&store, "repeats").await;
    let run = new_run(&store, id, "r", 1).await;
    let history = |store: Store, run: String| async move {
        let page = store
            .get_metric_history(&run, "loss", None, "")
            .await
            .unwrap();
        page.items
            .iter()
            .map(|m| (m.step, m.value))
            .collect::<Vec<_>>()
    };
    let first: Vec<Metric> = (0..3)
        .map(|step| Metric::new("loss", f64::from(step as i32), 100 + step, step))
        .collect();
    store.log_batch(&run, &first, &[], &[]).await.unwrap();
    // The same request again, then the same points with a new one, then a repeat inside one
    // request, then repeats beside a param (the transactional path).
    store.log_batch(&run, &first, &[], &[]).await.unwrap();
    let mut with_new = first.clone();
    with_new.push(Metric::new("loss", 3.0, 103, 3));
    store.log_batch(&run, &with_new, &[], &[]).await.unwrap();
    let doubled = vec![
        Metric::new("loss", 4.0, 104, 4),
        Metric::new("loss", 4.0, 104, 4),
    ];
    store.log_batch(&run, &doubled, &[], &[]).await.unwrap();
    store
        .log_batch(&run, &doubled, &[KeyValue::new("p", "1")], &[])
        .await
        .unwrap();
    assert_eq!(
        history(store.clone(), run.clone()).await,
        vec![(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    );
    assert_eq!(latest_points(&store, &run).await, [("loss".into(), 4, 4.0)]);
}

/// The run's latest point per key as (key, step, value).
async fn latest_points(store: &Store, run: &str) -> Vec<(String, i64, f64)> {
    let metrics = store.get_run(run).await.unwrap().metrics;
    metrics
        .into_iter()
        .map(|m| (m.key, m.step, m.value))
        .collect()
}

/// Batches large enough for Postgres's COPY path: special values, the optional fields, a whole
/// repeated batch and a half-repeated one (both answered success, each point stored once).
async fn large_batches_keep_values_fields_and_repeats(store: Store) {
    let id = new_experiment(&store, "large-batches").await;
    let run = new_run(&store, id, "l", 1).await;
    let special = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5];
    let point = |key: &str, step: i64| {
        let mut metric = Metric::new(key, special[(step % 4) as usize], 1000 + step, step);
        if step % 2 == 0 {
            metric.model_id = Some(format!("m-{step}"));
            metric.dataset_name = Some("train".into());
            metric.dataset_digest = Some("d1".into());
        }
        metric
    };
    let batch = |steps: std::ops::Range<i64>| -> Vec<Metric> {
        steps
            .flat_map(|step| ["b", "a", "c"].map(|key| point(key, step)))
            .collect()
    };
    store
        .log_batch(&run, &batch(0..200), &[], &[])
        .await
        .unwrap();
    store
        .log_batch(&run, &batch(0..200), &[], &[])
        .await
        .unwrap();
    store
        .log_batch(&run, &batch(100..300), &[], &[])
        .await
        .unwrap();
    for key in ["a", "b", "c"] {
        let history = store
            .get_metric_history(&run, key, None, "")
            .await
            .unwrap()
            .items;
        assert_eq!(history.len(), 300, "{key}: each point once");
        for (step, metric) in (0_i64..).zip(&history) {
            let expected = point(key, step);
            assert_eq!(
                (metric.step, metric.timestamp),
                (step, 1000 + step),
                "{key}"
            );
            match step % 4 {
                0 => assert!(metric.value.is_nan(), "{key} {step}"),
                1 => assert_eq!(metric.value, f64::MAX),
                2 => assert_eq!(metric.value, f64::MIN),
                _ => assert_eq!(metric.value, -0.5),
            }
            assert_eq!(metric.model_id, expected.model_id);
            assert_eq!(metric.dataset_name, expected.dataset_name);
            assert_eq!(metric.dataset_digest, expected.dataset_digest);
        }
    }
    assert_eq!(
        latest_points(&store, &run).await,
        ["a", "b", "c"].map(|key| (key.to_owned(), 299, -0.5))
    );
}

/// The optional fields of history points come back as written, alone or together, empty or
/// holding JSON's special characters, while the points around them have none.
async fn metric_history_keeps_optional_fields_exactly(store: Store) {
    let id = new_experiment(&store, "history-fields").await;
    let run = new_run(&store, id, "h", 1).await;
    let odd = "q\"uote \\ back\nline \u{1} ünï 🚀 ,[]";
    let fields: [(Option<&str>, Option<&str>, Option<&str>); 6] = [
        (None, None, None),
        (Some("m-1"), None, None),
        (None, Some("train"), None),
        (None, None, Some("d1")),
        (Some(""), Some(odd), Some("null")),
        (None, None, None),
    ];
    let points: Vec<Metric> = (0_i64..)
        .zip(fields)
        .map(|(step, (model_id, dataset_name, dataset_digest))| {
            let mut metric = Metric::new("acc", step as f64 / 4.0, 1000 + step, step);
            metric.model_id = model_id.map(str::to_owned);
            metric.dataset_name = dataset_name.map(str::to_owned);
            metric.dataset_digest = dataset_digest.map(str::to_owned);
            metric
        })
        .collect();
    store.log_batch(&run, &points, &[], &[]).await.unwrap();
    for page_size in [6, 4] {
        let page = store
            .get_metric_history(&run, "acc", Some(page_size), "")
            .await
            .unwrap();
        let mut history = page.items;
        if let Some(token) = page.next_page_token {
            let rest = store
                .get_metric_history(&run, "acc", Some(page_size), &token)
                .await
                .unwrap();
            assert!(rest.next_page_token.is_none());
            history.extend(rest.items);
        }
        assert_eq!(history, points, "pages of {page_size}");
    }
}

/// is_nan is read in the same column as the optional fields (NULL when a point has neither):
/// a NaN point with or without them, and a point with them but a value, read back as written,
/// whole and one point per page (each token then ends on one of them).
async fn metric_history_reads_nan_beside_optional_fields(store: Store) {
    let id = new_experiment(&store, "history-nan-fields").await;
    let run = new_run(&store, id, "h", 1).await;
    let mut points = vec![
        Metric::new("m", f64::NAN, 5, 0),
        Metric::new("m", f64::NAN, 5, 1),
        Metric::new("m", 0.0, 5, 1),
        Metric::new("m", f64::NAN, 6, 1),
        Metric::new("m", 7.5, 5, 2),
    ];
    points[1].model_id = Some("m-1".into());
    points[2].dataset_name = Some("train".into());
    points[3].dataset_digest = Some("d".into());
    store.log_batch(&run, &points, &[], &[]).await.unwrap();
    let show = |m: &Metric| {
        format!(
            "{}/{}/{}/{:?}/{:?}/{:?}",
            m.step, m.timestamp, m.value, m.model_id, m.dataset_name, m.dataset_digest
        )
    };
    // (1, 5, 0.0) before (1, 5, NaN): NaN is stored as 0 with is_nan
    let expected: Vec<String> = [0, 2, 1, 3, 4].iter().map(|&i| show(&points[i])).collect();
    let whole = store.get_metric_history(&run, "m", None, "").await.unwrap();
    assert_eq!(whole.items.iter().map(show).collect::<Vec<_>>(), expected);
    let paged = history_in_pages(&store, &run, "m", 1).await;
    assert_eq!(paged.iter().map(show).collect::<Vec<_>>(), expected);
}

/// A batch larger than one insert statement (SQLite writes it in chunks): repeats within and
/// across chunks are stored once, the latest point may sit in any chunk, and a batch beside a
/// param takes the transactional path alike.
async fn large_batches_keep_point_semantics(store: Store) {
    let id = new_experiment(&store, "large-batches").await;
    for with_param in [false, true] {
        let run = new_run(&store, id, &format!("large-{with_param}"), 1).await;
        // 150 distinct points, then the same 150 again, then the greatest point first: 301
        // points, so every chunk boundary has repeats on both sides.
        let distinct: Vec<Metric> = (0..150)
            .map(|i| Metric::new("loss", f64::from(i) / 10.0, 1000 + i64::from(i), 1))
            .collect();
        let mut batch = vec![Metric::new("loss", 0.25, 5, 7)];
        batch.extend(distinct.iter().cloned());
        batch.extend(distinct.iter().cloned());
        batch.push(Metric::new("acc", f64::NAN, 9, 3));
        let params = if with_param {
            vec![KeyValue::new("p", "1")]
        } else {
            Vec::new()
        };
        store.log_batch(&run, &batch, &params, &[]).await.unwrap();
        store.log_batch(&run, &batch, &params, &[]).await.unwrap();
        let history = store
            .get_metric_history(&run, "loss", None, "")
            .await
            .unwrap()
            .items;
        assert_eq!(
            history.len(),
            151,
            "each point once (with_param {with_param})"
        );
        let latest = store.get_run(&run).await.unwrap().metrics;
        let loss = latest.iter().find(|m| m.key == "loss").unwrap();
        assert_eq!((loss.step, loss.timestamp, loss.value), (7, 5, 0.25));
        assert!(
            latest
                .iter()
                .find(|m| m.key == "acc")
                .unwrap()
                .value
                .is_nan()
        );
    }
}

/// A batch over many keys, each spelled with characters a name may hold, sent in no particular
/// order and larger than SQLite's largest insert: each key's history is exactly its points, and
/// of two points alike but for their dataset, the one sent first is stored (as MLflow, which
/// skips the repeat).
async fn batch_keys_and_order_are_kept_whatever_the_spelling(store: Store) {
    let id = new_experiment(&store, "key-spelling").await;
    let run = new_run(&store, id, "k", 1).await;
    let keys = [
        "loss",
        "eval/acc top-1",
        "a.b_c:d",
        "ünïcødé/日本",
        "z",
        "l",
        "Loss",
    ];
    let point = |key: &str, step: i64| {
        Metric::new(
            key,
            (step as f64) / 7.0 - 3.0,
            1_700_000_000_000 + step,
            step,
        )
    };
    // 7 keys x 140 steps, keys interleaved and steps descending: 980 points, and a repeat
    let mut batch: Vec<Metric> = (0..140)
        .rev()
        .flat_map(|step| keys.map(|key| point(key, step)))
        .collect();
    let mut first = point("z", 139);
    first.dataset_name = Some("first".into());
    let mut second = first.clone();
    second.dataset_name = Some("second".into());
    batch.retain(|m| !(m.key == "z" && m.step == 139));
    batch.insert(3, first);
    batch.push(second);
    store.log_batch(&run, &batch, &[], &[]).await.unwrap();
    for key in keys {
        let history = store
            .get_metric_history(&run, key, None, "")
            .await
            .unwrap()
            .items;
        let mut expected: Vec<Metric> = (0..140).map(|step| point(key, step)).collect();
        if key == "z" {
            expected[139].dataset_name = Some("first".into());
        }
        assert_eq!(history, expected, "{key}");
    }
    let mut latest = latest_points(&store, &run).await;
    latest.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected: Vec<(String, i64, f64)> = keys
        .iter()
        .map(|key| ((*key).to_owned(), 139, 139.0 / 7.0 - 3.0))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(latest, expected);
}

/// Params and tags read back byte for byte, whatever characters they hold (on SQLite they are
/// read as one JSON document).
async fn param_and_tag_text_reads_back_exactly(store: Store) {
    let id = new_experiment(&store, "text").await;
    let run = new_run(&store, id, "text", 1).await;
    let awkward = "quote \" backslash \\ newline \n tab \t nul-free \u{1} é 🚀 </script> [1, 2]";
    let params = [
        KeyValue::new("b", awkward),
        KeyValue::new("a", "{\"json\": true}"),
    ];
    let tags = [KeyValue::new("t", awkward), KeyValue::new("empty", "")];
    store.log_batch(&run, &[], &params, &tags).await.unwrap();
    let page = store
        .search_runs(&search(id, "params.a = '{\"json\": true}'", &[]))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let found = page.items.first().unwrap();
    let read: Vec<(&str, &str)> = found
        .params
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(read, [("a", "{\"json\": true}"), ("b", awkward)]);
    let tag = |key: &str| {
        found
            .tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    };
    assert_eq!(tag("t"), Some(awkward));
    assert_eq!(tag("empty"), Some(""));
}

/// Concurrent requests for one run that share points, each in its own order: all answered
/// success (none aborted as a deadlock victim), each point stored once.
async fn concurrent_overlapping_batches_all_succeed(store: Store) {
    let id = new_experiment(&store, "overlapping").await;
    let run = new_run(&store, id, "o", 1).await;
    let writes = (0..6_i64).map(|writer| {
        let store = store.clone();
        let run = run.clone();
        let mut points: Vec<Metric> = (0..400_i64)
            .flat_map(|step| ["x", "y"].map(|key| Metric::new(key, step as f64, step, step)))
            .collect();
        if writer % 2 == 1 {
            points.reverse();
        }
        tokio::spawn(async move { store.log_batch(&run, &points, &[], &[]).await })
    });
    for outcome in futures::future::join_all(writes).await {
        outcome.unwrap().unwrap();
    }
    for key in ["x", "y"] {
        let steps: Vec<i64> = store
            .get_metric_history(&run, key, None, "")
            .await
            .unwrap()
            .items
            .iter()
            .map(|m| m.step)
            .collect();
        assert_eq!(steps, (0..400).collect::<Vec<_>>(), "{key}");
    }
}

async fn metric_history_pages_in_step_order(store: Store) {
    let id = new_experiment(&store, "history").await;
    let run = new_run(&store, id, "h", 1).await;
    let points: Vec<Metric> = (0..25)
        .rev()
        .map(|step| Metric::new("acc", f64::from(step as i32) / 10.0, 1000 + step, step))
        .collect();
    store.log_batch(&run, &points, &[], &[]).await.unwrap();
    let steps: Vec<i64> = history_in_pages(&store, &run, "acc", 10)
        .await
        .iter()
        .map(|m| m.step)
        .collect();
    assert_eq!(steps, (0..25).collect::<Vec<_>>());
    assert!(
        store
            .get_metric_history(&run, "missing", None, "")
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(matches!(
        store.get_metric_history("nope", "acc", None, "").await,
        Err(Error::NotFound {
            entity: Entity::Run,
            ..
        })
    ));
}

/// Points that share a step (and a timestamp, and even the stored value: NaN is kept as 0)
/// page in the full (step, timestamp, value, is_nan) order, whatever the page size.
async fn metric_history_pages_split_points_of_one_step(store: Store) {
    let id = new_experiment(&store, "history-ties").await;
    let run = new_run(&store, id, "ties", 1).await;
    let points = vec![
        Metric::new("m", 2.0, 5, 1),
        Metric::new("m", f64::NAN, 5, 1),
        Metric::new("m", 0.0, 5, 1),
        Metric::new("m", -1.0, 5, 1),
        Metric::new("m", f64::INFINITY, 5, 1),
        Metric::new("m", 0.0, 6, 1),
        Metric::new("m", 3.0, 9, 0),
        Metric::new("m", 1.0, 1, 2),
    ];
    store.log_batch(&run, &points, &[], &[]).await.unwrap();
    let show = |m: &Metric| format!("{}/{}/{}", m.step, m.timestamp, m.value);
    let whole: Vec<String> = store
        .get_metric_history(&run, "m", None, "")
        .await
        .unwrap()
        .items
        .iter()
        .map(show)
        .collect();
    assert_eq!(
        whole,
        [
            "0/9/3",
            "1/5/-1",
            "1/5/0",
            "1/5/NaN",
            "1/5/2",
            &format!("1/5/{}", f64::MAX),
            "1/6/0",
            "2/1/1"
        ]
    );
    for size in 1..=3 {
        let paged: Vec<String> = history_in_pages(&store, &run, "m", size)
            .await
            .iter()
            .map(show)
            .collect();
        assert_eq!(paged, whole, "pages of {size}");
    }
}

/// Every value reads back as the double that was logged, bit for bit (SQLite hands a chunk's
/// values over as decimal text): doubles of every exponent from random bit patterns,
/// subnormals, the extremes, and values of the bench's shape, whole and across pages and
/// chunks. -0.0 is left out: SQLite stores it as 0.
async fn metric_history_values_read_back_bit_for_bit(store: Store) {
    let id = new_experiment(&store, "history-bits").await;
    let run = new_run(&store, id, "bits", 1).await;
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut values = vec![
        f64::MAX,
        f64::MIN,
        f64::MIN_POSITIVE,
        -f64::MIN_POSITIVE,
        f64::from_bits(1),
        f64::from_bits(0x000f_ffff_ffff_ffff),
        0.1,
        1.0 / 3.0,
        1e23,
        9_007_199_254_740_993.0,
        0.0,
    ];
    while values.len() < 2400 {
        let candidate = match values.len() % 3 {
            0 => f64::from_bits(next()),
            1 => (next() % 100_003) as f64 / 1000.0,
            _ => -((next() >> 11) as f64) * 2f64.powi((next() % 80) as i32 - 40),
        };
        if candidate.is_finite() && candidate != 0.0 {
            values.push(candidate);
        }
    }
    let points: Vec<Metric> = (0_i64..)
        .zip(&values)
        .map(|(step, &value)| Metric::new("v", value, 5, step))
        .collect();
    for batch in points.chunks(1000) {
        store.log_batch(&run, batch, &[], &[]).await.unwrap();
    }
    let bits = |metrics: &[Metric]| {
        metrics
            .iter()
            .map(|m| m.value.to_bits())
            .collect::<Vec<_>>()
    };
    let logged = bits(&points);
    for page_size in [25_000, 1000, 999, 7] {
        let read = history_in_pages(&store, &run, "v", page_size).await;
        assert_eq!(bits(&read), logged, "pages of {page_size}");
    }
}

/// Points of one step and timestamp whose values are neighbouring doubles: a page or chunk
/// that ends on one of them goes on with the next, none read twice or skipped (where the next
/// chunk starts is the last value read, which must be the stored one exactly).
async fn metric_history_resumes_between_adjacent_doubles(store: Store) {
    let id = new_experiment(&store, "history-neighbours").await;
    let run = new_run(&store, id, "n", 1).await;
    let first = 1.0e-5_f64.to_bits();
    let points: Vec<Metric> = (0..2100)
        .map(|i| Metric::new("n", f64::from_bits(first + i), 3, 4))
        .collect();
    for batch in points.chunks(1000) {
        store.log_batch(&run, batch, &[], &[]).await.unwrap();
    }
    for page_size in [25_000, 1000, 1001, 700] {
        let read: Vec<u64> = history_in_pages(&store, &run, "n", page_size)
            .await
            .iter()
            .map(|m| m.value.to_bits() - first)
            .collect();
        assert_eq!(
            read,
            (0..2100).collect::<Vec<u64>>(),
            "pages of {page_size}"
        );
    }
}

/// A history is handed over in chunks of at most 1000 points as it is read, the next page's
/// token last: the server holds a few chunks of a long page, never the whole page.
async fn metric_history_streams_in_bounded_chunks(store: Store) {
    use futures::StreamExt;
    let id = new_experiment(&store, "history-stream").await;
    let run = new_run(&store, id, "long", 1).await;
    let points: Vec<Metric> = (0..2500)
        .map(|step| Metric::new("m", f64::from(step), 7, i64::from(step)))
        .collect();
    for batch in points.chunks(1000) {
        store.log_batch(&run, batch, &[], &[]).await.unwrap();
    }
    let read = |max_results: Option<i64>| {
        let (store, run) = (store.clone(), run.clone());
        async move {
            let mut chunks = store
                .stream_metric_history(&run, "m", max_results, "")
                .await
                .unwrap();
            let mut shape = Vec::new();
            let mut next_step = 0;
            while let Some(chunk) = chunks.next().await {
                match chunk.unwrap() {
                    HistoryChunk::Points(points) => {
                        for point in &points {
                            assert_eq!(point.step, next_step);
                            next_step += 1;
                        }
                        shape.push(points.len().to_string());
                    }
                    HistoryChunk::NextPageToken(_) => shape.push("token".into()),
                }
            }
            shape
        }
    };
    assert_eq!(read(None).await, ["1000", "1000", "500"]);
    assert_eq!(read(Some(2000)).await, ["1000", "1000", "token"]);
    assert_eq!(read(Some(1500)).await, ["1000", "500", "token"]);
}

async fn special_float_metrics_round_trip(store: Store) {
    let id = new_experiment(&store, "floats").await;
    let run = new_run(&store, id, "f", 1).await;
    let points = [
        Metric::new("nan", f64::NAN, 1, 0),
        Metric::new("inf", f64::INFINITY, 1, 0),
        Metric::new("ninf", f64::NEG_INFINITY, 1, 0),
    ];
    store.log_batch(&run, &points, &[], &[]).await.unwrap();
    let metrics = store.get_run(&run).await.unwrap().metrics;
    let value = |key: &str| metrics.iter().find(|m| m.key == key).unwrap().value;
    assert!(value("nan").is_nan());
    assert_eq!(value("inf"), f64::MAX);
    assert_eq!(value("ninf"), f64::MIN);
}

async fn nan_metrics_filter_and_sort_like_mlflow(store: Store) {
    let id = new_experiment(&store, "nan-semantics").await;
    for (i, value) in [Some(-1.0), Some(f64::NAN), Some(1.0), None]
        .into_iter()
        .enumerate()
    {
        let run = new_run(&store, id, &format!("v{i}"), i as i64).await;
        if let Some(value) = value {
            store
                .log_batch(&run, &[Metric::new("v", value, 1, 0)], &[], &[])
                .await
                .unwrap();
        }
    }
    let mut below = run_names(&store, &search(id, "metrics.v < 100", &[])).await;
    below.sort();
    assert_eq!(below, ["v0", "v2"], "NaN satisfies no comparison but !=");
    let mut unequal = run_names(&store, &search(id, "metrics.v != 0", &[])).await;
    unequal.sort();
    assert_eq!(unequal, ["v0", "v1", "v2"], "NaN satisfies !=");
    assert_eq!(
        run_names(&store, &search(id, "", &["metrics.v ASC"])).await,
        ["v0", "v2", "v1", "v3"]
    );
    assert_eq!(
        run_names(&store, &search(id, "", &["metrics.v DESC"])).await,
        ["v2", "v0", "v1", "v3"]
    );
    let mut paged = search(id, "", &["metrics.v DESC"]);
    paged.max_results = 1;
    let mut seen = Vec::new();
    loop {
        let page = store.search_runs(&paged).await.unwrap();
        seen.extend(page.items.into_iter().map(|run| run.info.run_name));
        match page.next_page_token {
            Some(token) => paged.page_token = token,
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["v2", "v0", "v1", "v3"],
        "page tokens carry the NaN rank"
    );
}

/// Four runs with a spread of params, tags and metrics for the filter tests.
async fn seeded_experiment(store: &Store) -> (i64, Vec<String>) {
    let id = new_experiment(store, "seeded").await;
    let mut ids = Vec::new();
    for (i, (model, acc, tag)) in [
        ("rf", 0.91, Some("Blue")),
        ("svm", 0.85, Some("blue")),
        ("rf", 0.75, None),
        ("xgb", 0.95, Some("red")),
    ]
    .into_iter()
    .enumerate()
    {
        let run = new_run(store, id, &format!("run-{i}"), 100 + i as i64).await;
        let tags: Vec<KeyValue> = tag.map(|t| KeyValue::new("color", t)).into_iter().collect();
        let params = if i == 3 {
            vec![]
        } else {
            vec![KeyValue::new("model", model)]
        };
        store
            .log_batch(&run, &[Metric::new("acc", acc, 1, 0)], &params, &tags)
            .await
            .unwrap();
        ids.push(run);
    }
    store
        .update_run(&ids[0], Some("FINISHED"), Some(500), None)
        .await
        .unwrap();
    (id, ids)
}

async fn run_search_filters_match_mlflow_semantics(store: Store) {
    let (id, ids) = seeded_experiment(&store).await;
    let names = |filter: &'static str| {
        let store = store.clone();
        async move {
            let mut names = run_names(&store, &search(id, filter, &["attributes.run_name"])).await;
            names.sort();
            names
        }
    };
    assert_eq!(names("metrics.acc > 0.9").await, ["run-0", "run-3"]);
    assert_eq!(names("metrics.acc <= 0.85").await, ["run-1", "run-2"]);
    assert_eq!(names("params.model = 'rf'").await, ["run-0", "run-2"]);
    assert_eq!(
        names("params.model != 'rf'").await,
        ["run-1"],
        "!= skips runs without the param"
    );
    assert_eq!(names("params.model IS NULL").await, ["run-3"]);
    assert_eq!(
        names("tags.color LIKE 'b%'").await,
        ["run-1"],
        "LIKE is case-sensitive"
    );
    assert_eq!(names("tags.color ILIKE 'b%'").await, ["run-0", "run-1"]);
    assert_eq!(names("attributes.status = 'FINISHED'").await, ["run-0"]);
    assert_eq!(
        names("params.model = 'rf' and metrics.acc < 0.8").await,
        ["run-2"]
    );
    assert_eq!(
        names("attributes.start_time >= 102").await,
        ["run-2", "run-3"]
    );
    assert_eq!(names("tags.`mlflow.runName` = 'run-1'").await, ["run-1"]);
    let in_filter = format!("attributes.run_id IN ('{}', '{}')", ids[1], ids[2]);
    let mut in_names = run_names(&store, &search(id, &in_filter, &[])).await;
    in_names.sort();
    assert_eq!(in_names, ["run-1", "run-2"]);
    let not_in = format!("attributes.run_id NOT IN ('{}')", ids[0]);
    assert_eq!(run_names(&store, &search(id, &not_in, &[])).await.len(), 3);
    assert!(matches!(
        store
            .search_runs(&search(id, "metrics.acc > 'x'", &[]))
            .await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        store.search_runs(&search(id, "bogus.acc > 1", &[])).await,
        Err(Error::Invalid(_))
    ));
}

async fn run_search_orders_missing_values_last_both_ways(store: Store) {
    let (id, _) = seeded_experiment(&store).await;
    // Ties fall back to start_time DESC, as MLflow appends it.
    assert_eq!(
        run_names(&store, &search(id, "", &["params.model ASC"])).await,
        ["run-2", "run-0", "run-1", "run-3"]
    );
    assert_eq!(
        run_names(&store, &search(id, "", &["params.model DESC"])).await,
        ["run-1", "run-2", "run-0", "run-3"]
    );
    assert_eq!(
        run_names(&store, &search(id, "", &["metrics.acc DESC"])).await,
        ["run-3", "run-0", "run-1", "run-2"]
    );
    assert_eq!(
        run_names(&store, &search(id, "", &[])).await,
        ["run-3", "run-2", "run-1", "run-0"],
        "default: start_time DESC"
    );
    assert_eq!(
        run_names(
            &store,
            &search(id, "", &["tags.color ASC", "metrics.acc ASC"])
        )
        .await,
        ["run-0", "run-1", "run-3", "run-2"]
    );
}

async fn run_search_pages_survive_inserts(store: Store) {
    let id = new_experiment(&store, "paging").await;
    for i in 0..150 {
        new_run(&store, id, &format!("p{i:03}"), 1000 + i).await;
    }
    let mut request = search(id, "", &[]);
    request.max_results = 40;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.search_runs(&request).await.unwrap();
        pages += 1;
        seen.extend(page.items.into_iter().map(|run| run.info.run_name));
        if pages == 1 {
            // Newer runs inserted between pages do not shift the next page.
            new_run(&store, id, "late", 5000).await;
        }
        match page.next_page_token {
            Some(token) => request.page_token = token,
            None => break,
        }
    }
    let expected: Vec<String> = (0..150).rev().map(|i| format!("p{i:03}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(pages, 4);
}

async fn datasets_are_deduplicated_and_searchable(store: Store) {
    let id = new_experiment(&store, "data").await;
    let run = new_run(&store, id, "d", 1).await;
    let input = DatasetInput {
        tags: vec![KeyValue::new("mlflow.data.context", "training")],
        dataset: Dataset {
            name: "iris".into(),
            digest: "abc123".into(),
            source_type: "local".into(),
            source: "{\"uri\": \"/data/iris.csv\"}".into(),
            schema: None,
            profile: Some("{\"num_rows\": 150}".into()),
        },
    };
    store
        .log_inputs(&run, std::slice::from_ref(&input))
        .await
        .unwrap();
    store
        .log_inputs(&run, std::slice::from_ref(&input))
        .await
        .unwrap();
    let stored = store.get_run(&run).await.unwrap();
    assert_eq!(stored.inputs, vec![input]);
    assert_eq!(
        run_names(&store, &search(id, "datasets.name = 'iris'", &[])).await,
        ["d"]
    );
    assert_eq!(
        run_names(&store, &search(id, "dataset.context = 'training'", &[])).await,
        ["d"]
    );
    assert!(
        run_names(&store, &search(id, "datasets.digest = 'nope'", &[]))
            .await
            .is_empty()
    );
}

async fn writes_to_deleted_runs_are_refused(store: Store) {
    let id = new_experiment(&store, "deleted-runs").await;
    let run = new_run(&store, id, "x", 1).await;
    store.delete_run(&run).await.unwrap();
    // Metrics alone are written by one statement that finds the run itself: it must refuse,
    // and write nothing, exactly as a lookup first did.
    let write = store
        .log_batch(&run, &[Metric::new("m", 5.0, 1, 7)], &[], &[])
        .await;
    assert!(
        matches!(write, Err(Error::Invalid(ref m)) if m.contains("active")),
        "{write:?}"
    );
    let unknown = store
        .log_batch("no-such-run", &[Metric::new("m", 1.0, 1, 0)], &[], &[])
        .await;
    assert!(
        matches!(
            unknown,
            Err(Error::NotFound {
                entity: Entity::Run,
                ..
            })
        ),
        "{unknown:?}"
    );
    assert_eq!(
        store.get_run(&run).await.unwrap().info.lifecycle_stage,
        "deleted"
    );
    let mut deleted_view = search(id, "", &[]);
    deleted_view.view_type = ViewType::DeletedOnly;
    assert_eq!(run_names(&store, &deleted_view).await, ["x"]);
    assert!(run_names(&store, &search(id, "", &[])).await.is_empty());
    store.restore_run(&run).await.unwrap();
    store
        .log_batch(&run, &[Metric::new("m", 1.0, 1, 0)], &[], &[])
        .await
        .unwrap();
    let history = store.get_metric_history(&run, "m", None, "").await.unwrap();
    let steps: Vec<i64> = history.items.iter().map(|m| m.step).collect();
    assert_eq!(steps, [0], "the refused point was not written");
    let latest = store.get_run(&run).await.unwrap().metrics;
    assert_eq!(
        latest.iter().map(|m| (m.step, m.value)).collect::<Vec<_>>(),
        [(0, 1.0)]
    );
}

async fn bulk_interval_samples_steps(store: Store) {
    let id = new_experiment(&store, "bulk").await;
    let run = new_run(&store, id, "b", 1).await;
    let points: Vec<Metric> = (0..100)
        .map(|step| Metric::new("loss", 1.0 / f64::from(step as i32 + 1), 10, step))
        .collect();
    store.log_batch(&run, &points, &[], &[]).await.unwrap();
    let sampled = store
        .sample_metric_history(std::slice::from_ref(&run), "loss", Some(10), Some(50), 5)
        .await
        .unwrap();
    let steps: Vec<i64> = sampled.iter().map(|m| m.step).collect();
    assert_eq!(steps.len(), 5);
    assert_eq!((steps[0], steps[4]), (10, 50));
    assert!(
        sampled
            .iter()
            .all(|m| m.run_id.as_deref() == Some(run.as_str()))
    );
    assert!(
        store
            .sample_metric_history(&[run], "loss", Some(10), None, 5)
            .await
            .is_err()
    );
}

/// MLflow's sampling computed directly: `n` ordered points cut into `tiles` NTILE tiles (the
/// first `n % tiles` one point larger), each tile's first point, then the last point appended,
/// or in place of the final sample when the answer is full.
fn ntile_sample(n: usize, tiles: usize) -> Vec<usize> {
    let (size, larger) = (n / tiles, n % tiles);
    let mut starts = Vec::new();
    let mut start = 0;
    for tile in 0..tiles {
        if start >= n {
            break;
        }
        starts.push(start);
        start += size + usize::from(tile < larger);
    }
    if starts.last() != Some(&(n - 1)) {
        if starts.len() >= tiles {
            starts.pop();
        }
        starts.push(n - 1);
    }
    starts
}

/// Runs of n points sampled into max_results tiles around every tile-size boundary (n below, at
/// and above max_results and 2 x max_results), several runs per request, repeats and a NaN.
async fn bulk_interval_tiles_match_ntile_at_boundaries(store: Store) {
    let id = new_experiment(&store, "bulk-tiles").await;
    // Two points per step (timestamps 1000 and 1001): the sampling is by point, not by step.
    let point = |i: usize| ((i / 2) as i64, 1000 + (i % 2) as i64);
    let sizes = [
        1usize, 2, 3, 4, 5, 7, 8, 9, 10, 11, 15, 16, 17, 31, 32, 33, 64,
    ];
    let mut runs = Vec::new();
    for n in sizes {
        let run = new_run(&store, id, &format!("n{n}"), 1).await;
        let points: Vec<Metric> = (0..n)
            .map(|i| {
                let (step, timestamp) = point(i);
                let value = if i == 3 { f64::NAN } else { i as f64 };
                Metric::new("loss", value, timestamp, step)
            })
            .collect();
        store.log_batch(&run, &points, &[], &[]).await.unwrap();
        store
            .log_batch(&run, &[Metric::new("other", 1.0, 1, 0)], &[], &[])
            .await
            .unwrap();
        runs.push((run, n));
    }
    let empty = new_run(&store, id, "empty", 1).await;
    let mut asked: Vec<String> = runs.iter().rev().map(|(run, _)| run.clone()).collect();
    asked.push(empty);
    asked.push(runs[4].0.clone());
    for max_results in [1i64, 2, 3, 4, 5, 8, 16, 17, 32, 2500] {
        let sampled = store
            .sample_metric_history(&asked, "loss", None, None, max_results)
            .await
            .unwrap();
        let got: Vec<(String, i64, i64)> = sampled
            .iter()
            .map(|m| (m.run_id.clone().unwrap(), m.step, m.timestamp))
            .collect();
        let expected: Vec<(String, i64, i64)> = asked
            .iter()
            .filter_map(|run| runs.iter().find(|(id, _)| id == run))
            .flat_map(|(run, n)| {
                ntile_sample(*n, max_results as usize)
                    .into_iter()
                    .map(move |i| (run.clone(), point(i).0, point(i).1))
            })
            .collect();
        assert_eq!(got, expected, "max_results={max_results}");
        assert!(
            sampled
                .iter()
                .filter(|m| (m.step, m.timestamp) == point(3))
                .all(|m| m.value.is_nan()),
            "max_results={max_results}"
        );
    }
    // A step range samples only the points inside it: steps 3..=10 of 64 points are 16 points.
    let (run, _) = runs.last().unwrap();
    let sampled = store
        .sample_metric_history(std::slice::from_ref(run), "loss", Some(3), Some(10), 5)
        .await
        .unwrap();
    let got: Vec<(i64, i64)> = sampled.iter().map(|m| (m.step, m.timestamp)).collect();
    let expected: Vec<(i64, i64)> = ntile_sample(16, 5)
        .into_iter()
        .map(|i| point(i + 6))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn migrations_are_mirrored_on_both_backends() {
    let list = |dir: &str| {
        let mut names: Vec<String> =
            std::fs::read_dir(format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR")))
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
        names.sort();
        names
    };
    assert_eq!(list("postgres"), list("sqlite"));
}
