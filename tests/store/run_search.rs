//! Run search where the query plan matters: the first order_by key on a metric, param or tag
//! (a page among the runs that have it is asked of those runs alone), the partial (key, value)
//! indexes of params and tags on Postgres, and the batched loading of a page's runs. Each test
//! runs on SQLite and on Postgres.

use std::cmp::Ordering;

use ferroflow::store::logged_models::ModelOutput;
use ferroflow::store::runs::{Metric, NewRun, Run, RunSearch};
use ferroflow::store::{KeyValue, Store, ViewType};

crate::both_backends!(
    pages_of_every_size_agree_with_one_page,
    metric_order_follows_mlflow_across_page_boundaries,
    param_and_tag_filters_find_short_and_long_values,
    searched_runs_carry_all_their_data,
    key_orders_ignore_other_experiments_having_the_key,
    key_order_pages_are_complete_when_matches_lie_past_a_walk,
);

/// The value of metric `m` of run `i`: NaN, missing (None) or a number with many ties.
fn metric_of(i: usize) -> Option<f64> {
    match i % 5 {
        0 => None,
        1 => Some(f64::NAN),
        _ => Some(((i * 7) % 4) as f64 - 1.0),
    }
}

/// Param `p` of run `i`: missing, longer than the Postgres index holds, or one of two short ones.
fn param_of(i: usize) -> Option<String> {
    match i % 4 {
        0 => None,
        1 => Some(format!("{}{}", "x".repeat(700), i % 3)),
        _ => Some(["a", "b", "c"][i % 3].to_owned()),
    }
}

/// Tag `t` of run `i`.
fn tag_of(i: usize) -> Option<&'static str> {
    match i % 3 {
        0 => None,
        _ => Some(["red", "blue"][i % 2]),
    }
}

/// An experiment of 23 runs named `r00`… with the values above; start times repeat (every 7),
/// so ties go down to the run id.
async fn mixed_experiment(store: &Store) -> i64 {
    let id = store
        .create_experiment("mixed", None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    for i in 0..23 {
        let tags: Vec<KeyValue> = tag_of(i)
            .map(|t| KeyValue::new("t", t))
            .into_iter()
            .collect();
        let run = store
            .create_run(NewRun {
                experiment_id: id,
                user_id: "tester".into(),
                run_name: Some(format!("r{i:02}")),
                start_time: Some(1000 + (i % 7) as i64),
                tags,
            })
            .await
            .unwrap()
            .info
            .run_uuid;
        let metrics: Vec<Metric> = metric_of(i)
            .map(|v| Metric::new("m", v, 5, 1))
            .into_iter()
            .collect();
        let params: Vec<KeyValue> = param_of(i)
            .map(|p| KeyValue::new("p", p))
            .into_iter()
            .collect();
        store.log_batch(&run, &metrics, &params, &[]).await.unwrap();
    }
    id
}

fn request(experiment_id: i64, filter: &str, order_by: &[&str], max_results: i64) -> RunSearch {
    RunSearch {
        experiment_ids: vec![experiment_id],
        filter: filter.into(),
        view_type: ViewType::ActiveOnly,
        max_results,
        order_by: order_by.iter().map(|s| s.to_string()).collect(),
        page_token: String::new(),
    }
}

/// Every run of the search, page after page.
async fn all_pages(store: &Store, mut request: RunSearch) -> Vec<Run> {
    let mut runs = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert!(pages <= 100, "more than 100 pages");
        let page = store.search_runs(&request).await.unwrap();
        assert!(page.items.len() as i64 <= request.max_results);
        runs.extend(page.items);
        match page.next_page_token {
            Some(token) => request.page_token = token,
            None => return runs,
        }
    }
}

fn names(runs: &[Run]) -> Vec<String> {
    runs.iter().map(|run| run.info.run_name.clone()).collect()
}

async fn pages_of_every_size_agree_with_one_page(store: Store) {
    let id = mixed_experiment(&store).await;
    let orders: [&[&str]; 7] = [
        &["metrics.m ASC"],
        &["metrics.m DESC"],
        &["params.p ASC"],
        &["params.p DESC"],
        &["tags.t DESC", "metrics.m ASC"],
        &["metrics.m ASC", "params.p DESC"],
        &["metrics.m DESC", "attributes.start_time ASC"],
    ];
    let filters = [
        "",
        "metrics.m >= 0",
        "metrics.m != 1",
        "params.p = 'a'",
        "params.p = 'b' and tags.t = 'blue'",
        "tags.t = 'blue'",
    ];
    for order in orders {
        for filter in filters {
            let whole = store
                .search_runs(&request(id, filter, order, 1000))
                .await
                .unwrap();
            assert!(whole.next_page_token.is_none());
            let whole = names(&whole.items);
            for size in [1, 2, 3, 5, 8] {
                let paged = names(&all_pages(&store, request(id, filter, order, size)).await);
                assert_eq!(
                    paged, whole,
                    "filter {filter:?}, order {order:?}, pages of {size}"
                );
            }
        }
    }
}

/// MLflow's order for a metric: numbers (ascending or descending), then NaN, then runs without
/// it; ties by start_time DESC, then run id.
async fn metric_order_follows_mlflow_across_page_boundaries(store: Store) {
    let id = mixed_experiment(&store).await;
    let everything = store
        .search_runs(&request(id, "", &[], 1000))
        .await
        .unwrap()
        .items;
    assert_eq!(everything.len(), 23);
    for descending in [false, true] {
        let mut expected: Vec<&Run> = everything.iter().collect();
        let rank = |run: &Run| match run.metrics.first() {
            None => (2, 0.0),
            Some(metric) if metric.value.is_nan() => (1, 0.0),
            Some(metric) => (0, metric.value),
        };
        expected.sort_by(|a, b| {
            let ((rank_a, value_a), (rank_b, value_b)) = (rank(a), rank(b));
            let by_value = value_a.partial_cmp(&value_b).unwrap_or(Ordering::Equal);
            rank_a
                .cmp(&rank_b)
                .then(if descending {
                    by_value.reverse()
                } else {
                    by_value
                })
                .then(b.info.start_time.cmp(&a.info.start_time))
                .then(a.info.run_uuid.cmp(&b.info.run_uuid))
        });
        let expected: Vec<String> = expected
            .iter()
            .map(|run| run.info.run_name.clone())
            .collect();
        let order = if descending {
            "metrics.m DESC"
        } else {
            "metrics.m ASC"
        };
        for size in [4, 1000] {
            assert_eq!(
                names(&all_pages(&store, request(id, "", &[order], size)).await),
                expected,
                "{order}, pages of {size}"
            );
        }
    }
}

/// Runs of another experiment with the same metric, param and tag keys, values among the
/// mixed experiment's (on SQLite a page ordered by a key is read off the key's index, at most
/// eight entries per row of the page, when the searched experiments hold enough runs, and
/// driven by the runs otherwise; a walk that finds too few of the searched runs among the
/// other's gives way to the general query: all must answer alike, without the other
/// experiment's runs).
async fn add_other_runs(store: &Store, experiment_id: i64, count: usize) {
    for i in 0..count {
        let run = store
            .create_run(NewRun {
                experiment_id,
                user_id: "tester".into(),
                run_name: Some(format!("other{i:03}")),
                start_time: Some(1000 + (i % 5) as i64),
                tags: vec![KeyValue::new("t", ["red", "blue", "amber"][i % 3])],
            })
            .await
            .unwrap()
            .info
            .run_uuid;
        let value = if i % 7 == 0 {
            f64::NAN
        } else {
            (i % 9) as f64 / 2.0 - 1.5
        };
        store
            .log_batch(
                &run,
                &[Metric::new("m", value, 5, 1)],
                &[KeyValue::new("p", ["a", "b", "c", "bb"][i % 4])],
                &[],
            )
            .await
            .unwrap();
    }
}

async fn key_orders_ignore_other_experiments_having_the_key(store: Store) {
    let id = mixed_experiment(&store).await;
    let other = store
        .create_experiment("other", None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    let orders: [&[&str]; 5] = [
        &["metrics.m ASC"],
        &["metrics.m DESC"],
        &["params.p ASC"],
        &["tags.t DESC", "metrics.m ASC"],
        &["metrics.m DESC", "params.p ASC"],
    ];
    let filters = ["", "metrics.m >= 0", "params.p = 'b' and tags.t = 'blue'"];
    let search_all = |store: Store| async move {
        let mut answers = Vec::new();
        for order in orders {
            for filter in filters {
                for size in [3, 1000] {
                    let runs = all_pages(&store, request(id, filter, order, size)).await;
                    answers.push(names(&runs));
                }
            }
        }
        answers
    };
    let alone = search_all(store.clone()).await;
    assert!(alone.iter().all(|answer| !answer.is_empty()));
    // a few rows elsewhere (the mixed runs still hold most of each key), then many
    add_other_runs(&store, other, 10).await;
    assert_eq!(
        search_all(store.clone()).await,
        alone,
        "beside 10 other runs"
    );
    add_other_runs(&store, other, 120).await;
    assert_eq!(
        search_all(store.clone()).await,
        alone,
        "beside 130 other runs"
    );
}

async fn param_and_tag_filters_find_short_and_long_values(store: Store) {
    let id = mixed_experiment(&store).await;
    let long_key = "k".repeat(250);
    let run = store
        .create_run(NewRun {
            experiment_id: id,
            user_id: "tester".into(),
            run_name: Some("long".into()),
            start_time: Some(1),
            tags: vec![
                KeyValue::new("note", "n".repeat(5000)),
                KeyValue::new(long_key.clone(), "v".repeat(400)),
            ],
        })
        .await
        .unwrap()
        .info
        .run_uuid;
    store
        .log_batch(&run, &[], &[KeyValue::new("p", "y".repeat(6000))], &[])
        .await
        .unwrap();
    let found = |filter: String| {
        let store = store.clone();
        async move {
            let mut names = names(
                &store
                    .search_runs(&request(id, &filter, &[], 1000))
                    .await
                    .unwrap()
                    .items,
            );
            names.sort();
            names
        }
    };
    let long_x1 = format!("{}1", "x".repeat(700));
    assert_eq!(
        found(format!("params.p = '{long_x1}'")).await,
        ["r01", "r13"]
    );
    assert_eq!(
        found(format!("params.p = '{}'", "y".repeat(6000))).await,
        ["long"]
    );
    assert_eq!(
        found("params.p = 'a'".into()).await,
        ["r03", "r06", "r15", "r18"]
    );
    assert_eq!(found("params.p != 'a'".into()).await.len(), 14);
    assert_eq!(
        found(format!("tags.note = '{}'", "n".repeat(5000))).await,
        ["long"]
    );
    assert_eq!(
        found(format!("tags.`{long_key}` = '{}'", "v".repeat(400))).await,
        ["long"]
    );
    assert_eq!(
        found("tags.t = 'red' and params.p = 'c'".into()).await,
        ["r02", "r14"]
    );
    assert!(found("tags.t = 'green'".into()).await.is_empty());
}

async fn searched_runs_carry_all_their_data(store: Store) {
    let id = mixed_experiment(&store).await;
    let run = store
        .create_run(NewRun {
            experiment_id: id,
            user_id: "tester".into(),
            run_name: Some("full".into()),
            start_time: Some(99_999),
            tags: vec![KeyValue::new("z", "last"), KeyValue::new("a", "first")],
        })
        .await
        .unwrap()
        .info
        .run_uuid;
    store
        .log_batch(
            &run,
            &[Metric::new("b", 2.0, 1, 0), Metric::new("a", 1.0, 1, 0)],
            &[KeyValue::new("y", "2"), KeyValue::new("x", "1")],
            &[],
        )
        .await
        .unwrap();
    store
        .log_run_outputs(
            &run,
            &[
                ModelOutput {
                    model_id: "m-2".into(),
                    step: 2,
                },
                ModelOutput {
                    model_id: "m-1".into(),
                    step: 1,
                },
            ],
        )
        .await
        .unwrap();
    store
        .log_run_model_inputs(&run, &["m-b".into(), "m-a".into()])
        .await
        .unwrap();
    let fetched = store.get_run(&run).await.unwrap();
    let page = store
        .search_runs(&request(id, "", &[], 3))
        .await
        .unwrap()
        .items;
    assert_eq!(page[0], fetched, "search and get agree");
    let keys = |items: &[KeyValue]| items.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&fetched.params), ["x", "y"]);
    assert_eq!(keys(&fetched.tags), ["a", "mlflow.runName", "z"]);
    assert_eq!(
        fetched
            .metrics
            .iter()
            .map(|m| m.key.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        fetched
            .model_outputs
            .iter()
            .map(|o| (o.model_id.as_str(), o.step))
            .collect::<Vec<_>>(),
        [("m-1", 1), ("m-2", 2)]
    );
    assert_eq!(fetched.model_inputs, ["m-a", "m-b"]);
    // the other runs of the page keep their own data
    for other in &page[1..] {
        let i: usize = other.info.run_name[1..].parse().unwrap();
        assert_eq!(other.params.len(), usize::from(param_of(i).is_some()));
        assert_eq!(
            other.tags.len(),
            1 + usize::from(tag_of(i).is_some()),
            "mlflow.runName and t"
        );
        assert_eq!(other.metrics.len(), usize::from(metric_of(i).is_some()));
        assert!(other.model_outputs.is_empty() && other.model_inputs.is_empty());
    }
}

/// 40 runs with metric `m` = i and param `p` = i (zero-padded); `q` = "hit" on runs 0, 1 and
/// 30 to 39. Pages of one run ordered by `m` or `p`: on SQLite the first page walks the key's
/// index (16 entries per page of one) and finds the early hits, then none within reach, so the
/// general query must answer; later pages walk again from the token. Every page must still be
/// the right one, in both directions.
async fn key_order_pages_are_complete_when_matches_lie_past_a_walk(store: Store) {
    let id = store
        .create_experiment("far", None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    for i in 0..40_usize {
        let run = store
            .create_run(NewRun {
                experiment_id: id,
                user_id: "tester".into(),
                run_name: Some(format!("r{i:02}")),
                start_time: Some(1000),
                tags: vec![],
            })
            .await
            .unwrap()
            .info
            .run_uuid;
        let mut params = vec![KeyValue::new("p", format!("{i:02}"))];
        if !(2..30).contains(&i) {
            params.push(KeyValue::new("q", "hit"));
        }
        store
            .log_batch(&run, &[Metric::new("m", i as f64, 5, 1)], &params, &[])
            .await
            .unwrap();
    }
    let hits: Vec<String> = [0, 1]
        .into_iter()
        .chain(30..40)
        .map(|i| format!("r{i:02}"))
        .collect();
    let reversed: Vec<String> = hits.iter().rev().cloned().collect();
    for (order, expected) in [
        ("metrics.m ASC", &hits),
        ("metrics.m DESC", &reversed),
        ("params.p ASC", &hits),
        ("params.p DESC", &reversed),
    ] {
        for size in [1, 2, 1000] {
            assert_eq!(
                &names(&all_pages(&store, request(id, "params.q = 'hit'", &[order], size)).await),
                expected,
                "{order}, pages of {size}"
            );
        }
    }
}
