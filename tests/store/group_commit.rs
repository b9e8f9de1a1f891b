//! Group commit of single-point writes (log-metric, log-parameter, set-tag): concurrent requests
//! share a group, every one is stored and answered, and a request that fails fails alone with
//! the answer it gets when written by itself.
//!
//! The tests run on tokio's current-thread runtime: the requests of one `join_all` all join the
//! queue before the flush task they start first gets to run, so they form one group (checked
//! with the store's group statistics).

use futures::future::join_all;

use ferroflow::store::runs::{GroupCommitStats, Metric, RUN_NAME_TAG};
use ferroflow::store::{Backend, Error, KeyValue, Store};

use super::{new_experiment, new_run};

crate::both_backends!(
    concurrent_single_point_writes_are_all_stored,
    a_failing_request_fails_alone_in_its_group,
    a_group_mate_changing_a_new_param_fails_alone,
    a_group_the_database_refuses_is_written_request_by_request,
);

/// One single-point request.
enum Write {
    Metric(&'static str, Metric),
    Param(&'static str, KeyValue),
    Tag(&'static str, KeyValue),
}

async fn send(store: &Store, run_ids: &[String], write: Write) -> ferroflow::store::Result<()> {
    let run = |index: &str| -> String {
        index
            .parse::<usize>()
            .map_or_else(|_| index.to_owned(), |i| run_ids[i].clone())
    };
    match write {
        Write::Metric(r, metric) => store.log_metric(&run(r), metric).await,
        Write::Param(r, param) => store.log_param(&run(r), param).await,
        Write::Tag(r, tag) => store.set_run_tag(&run(r), tag).await,
    }
}

/// Since `before`, the store wrote exactly one group, of `requests` requests.
fn assert_one_group(store: &Store, before: GroupCommitStats, requests: u64) {
    let after = store.group_commit_stats();
    assert_eq!(
        (
            after.groups - before.groups,
            after.requests - before.requests
        ),
        (1, requests),
        "one group"
    );
}

async fn concurrent_single_point_writes_are_all_stored(store: Store) {
    let id = new_experiment(&store, "group-all").await;
    let mut runs = Vec::new();
    for i in 0..4 {
        runs.push(new_run(&store, id, &format!("r{i}"), 1).await);
    }
    let before = store.group_commit_stats();
    // Four training loops at once: a metric per step, a param per step, a tag set each step.
    let mut writes = Vec::new();
    for (r, run) in ["0", "1", "2", "3"].into_iter().enumerate() {
        for step in 0..25_i64 {
            let value = (r as f64) * 100.0 + step as f64;
            writes.push(Write::Metric(
                run,
                Metric::new("loss", value, 1000 + step, step),
            ));
            writes.push(Write::Param(
                run,
                KeyValue::new(format!("p{step}"), format!("{r}-{step}")),
            ));
            writes.push(Write::Tag(run, KeyValue::new("epoch", step.to_string())));
        }
    }
    let count = writes.len() as u64;
    let answers = join_all(writes.into_iter().map(|write| send(&store, &runs, write))).await;
    for answer in &answers {
        assert!(answer.is_ok(), "{answer:?}");
    }
    let after = store.group_commit_stats();
    assert_eq!(after.requests - before.requests, count);
    assert!(
        after.groups - before.groups < count / 10,
        "{count} concurrent requests were written in {} groups",
        after.groups - before.groups
    );

    for (r, run) in runs.iter().enumerate() {
        let history = store
            .get_metric_history(run, "loss", None, "")
            .await
            .unwrap();
        let steps: Vec<i64> = history.items.iter().map(|m| m.step).collect();
        assert_eq!(steps, (0..25).collect::<Vec<_>>(), "run {r}");
        let data = store.get_run(run).await.unwrap();
        let latest = data.metrics.iter().find(|m| m.key == "loss").unwrap();
        assert_eq!((latest.step, latest.value), (24, r as f64 * 100.0 + 24.0));
        assert_eq!(data.params.len(), 25, "run {r}");
        for step in 0..25 {
            let param = data.params.iter().find(|p| p.key == format!("p{step}"));
            assert_eq!(param.unwrap().value, format!("{r}-{step}"));
        }
        // Sent in step order within one group: the last one sent is the value kept.
        let epoch = data.tags.iter().find(|t| t.key == "epoch").unwrap();
        assert_eq!(epoch.value, "24", "run {r}");
    }

    // The run-name tag renames the run, as set-tag does without grouping.
    store
        .set_run_tag(&runs[0], KeyValue::new(RUN_NAME_TAG, "renamed"))
        .await
        .unwrap();
    assert_eq!(
        store.get_run(&runs[0]).await.unwrap().info.run_name,
        "renamed"
    );
    // A bad request is refused before it joins a group.
    let stats = store.group_commit_stats();
    let bad = store
        .log_metric(&runs[0], Metric::new("bad key!", 1.0, 1, 0))
        .await;
    assert!(matches!(bad, Err(Error::Invalid(_))), "{bad:?}");
    assert_eq!(store.group_commit_stats(), stats);
}

async fn a_failing_request_fails_alone_in_its_group(store: Store) {
    let id = new_experiment(&store, "group-failures").await;
    let live = new_run(&store, id, "live", 1).await;
    let deleted = new_run(&store, id, "deleted", 1).await;
    store
        .log_param(&live, KeyValue::new("lr", "0.1"))
        .await
        .unwrap();
    store.delete_run(&deleted).await.unwrap();
    let other_workspace = store.in_workspace("team-b");
    let runs = [live.clone(), deleted.clone()];

    let before = store.group_commit_stats();
    let writes = vec![
        Write::Metric("0", Metric::new("loss", 0.5, 10, 1)),
        Write::Param("0", KeyValue::new("lr", "0.2")), // changes a logged param
        Write::Param("0", KeyValue::new("lr", "0.1")), // the same value again: fine
        Write::Param("0", KeyValue::new("batch", "32")),
        Write::Param("0", KeyValue::new("batch", "64")), // changes its group-mate's param
        Write::Metric("1", Metric::new("loss", 0.5, 10, 1)), // deleted run
        Write::Tag("1", KeyValue::new("t", "x")),        // deleted run
        Write::Tag("no-such-run", KeyValue::new("t", "x")),
        Write::Tag("0", KeyValue::new("team", "a")),
        Write::Metric("0", Metric::new("loss", 0.25, 11, 2)),
    ];
    let mut requests: Vec<(&Store, Write)> =
        writes.into_iter().map(|write| (&store, write)).collect();
    // The live run asked for from another workspace: it is not found there.
    requests.push((
        &other_workspace,
        Write::Tag("0", KeyValue::new("team", "b")),
    ));
    let answers = join_all(
        requests
            .into_iter()
            .map(|(store, write)| send(store, &runs, write)),
    )
    .await;
    assert_one_group(&store, before, 11);

    let message = |answer: &ferroflow::store::Result<()>| match answer {
        Err(Error::Invalid(message)) => format!("invalid: {message}"),
        Err(Error::NotFound { message, .. }) => format!("not found: {message}"),
        other => format!("{other:?}"),
    };
    let answers: Vec<String> = answers.iter().map(message).collect();
    assert_eq!(
        answers,
        [
            "Ok(())".to_owned(),
            format!(
                "invalid: Changing param values is not allowed. Param with key='lr' was already logged with \
                 value='0.1' for run ID='{live}'. Attempted logging new value '0.2'."
            ),
            "Ok(())".to_owned(),
            "Ok(())".to_owned(),
            format!(
                "invalid: Changing param values is not allowed. Param with key='batch' was already logged with \
                 value='32' for run ID='{live}'. Attempted logging new value '64'."
            ),
            format!(
                "invalid: The run {deleted} must be in the 'active' state. Current state is deleted."
            ),
            format!(
                "invalid: The run {deleted} must be in the 'active' state. Current state is deleted."
            ),
            "not found: Run with id=no-such-run not found".to_owned(),
            "Ok(())".to_owned(),
            "Ok(())".to_owned(),
            format!("not found: Run with id={live} not found"),
        ]
    );

    // Each answer matches what the same request gets alone, through log-batch.
    let alone = store
        .log_batch(&live, &[], &[KeyValue::new("lr", "0.2")], &[])
        .await;
    assert_eq!(message(&alone), answers[1]);
    let alone = store
        .log_batch(&deleted, &[], &[], &[KeyValue::new("t", "x")])
        .await;
    assert_eq!(message(&alone), answers[6]);

    // The group-mates' data is stored; the failed requests left nothing.
    let run = store.get_run(&live).await.unwrap();
    let params: Vec<(&str, &str)> = run
        .params
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(params, [("batch", "32"), ("lr", "0.1")]);
    assert_eq!(
        run.tags
            .iter()
            .find(|t| t.key == "team")
            .map(|t| t.value.as_str()),
        Some("a")
    );
    let history = store
        .get_metric_history(&live, "loss", None, "")
        .await
        .unwrap();
    assert_eq!(history.items.len(), 2);
    let dead = store.get_run(&deleted).await.unwrap();
    assert!(dead.metrics.is_empty() && !dead.tags.iter().any(|t| t.key == "t"));
}

/// Every key of the group is new to the database (the group's insert writes all its rows, so
/// nothing is read back), yet a group-mate sending another value for the same key is refused.
async fn a_group_mate_changing_a_new_param_fails_alone(store: Store) {
    let id = new_experiment(&store, "group-new-params").await;
    let run = new_run(&store, id, "r", 1).await;
    let runs = [run.clone()];
    let before = store.group_commit_stats();
    let writes = [
        Write::Param("0", KeyValue::new("batch", "32")),
        Write::Param("0", KeyValue::new("lr", "0.1")),
        Write::Param("0", KeyValue::new("batch", "64")),
        Write::Param("0", KeyValue::new("batch", "32")),
    ];
    let answers = join_all(writes.into_iter().map(|write| send(&store, &runs, write))).await;
    assert_one_group(&store, before, 4);
    let changed = format!(
        "Changing param values is not allowed. Param with key='batch' was already logged with \
         value='32' for run ID='{run}'. Attempted logging new value '64'."
    );
    assert!(
        matches!(
            answers.as_slice(),
            [Ok(()), Ok(()), Err(Error::Invalid(message)), Ok(())] if *message == changed
        ),
        "{answers:?}"
    );
    let stored = store.get_run(&run).await.unwrap();
    let params: Vec<(&str, &str)> = stored
        .params
        .iter()
        .map(|p| (p.key.as_str(), p.value.as_str()))
        .collect();
    assert_eq!(params, [("batch", "32"), ("lr", "0.1")]);
}

async fn a_group_the_database_refuses_is_written_request_by_request(store: Store) {
    let id = new_experiment(&store, "group-fallback").await;
    let run = new_run(&store, id, "r", 1).await;
    let runs = [run.clone()];
    // Postgres text cannot hold NUL: the group's tag statement fails as a whole, and each
    // request is then written alone. SQLite stores it.
    let writes = vec![
        Write::Tag("0", KeyValue::new("a", "1")),
        Write::Tag("0", KeyValue::new("nul", "x\u{0}y")),
        Write::Tag("0", KeyValue::new("b", "2")),
        Write::Param("0", KeyValue::new("p", "1")),
    ];
    let answers = join_all(writes.into_iter().map(|write| send(&store, &runs, write))).await;
    assert!(
        answers[0].is_ok() && answers[2].is_ok() && answers[3].is_ok(),
        "{answers:?}"
    );
    match store.backend() {
        Backend::Postgres => assert!(
            matches!(&answers[1], Err(Error::Invalid(m)) if m.contains("NUL")),
            "{:?}",
            answers[1]
        ),
        Backend::Sqlite => assert!(answers[1].is_ok(), "{:?}", answers[1]),
    }
    let stored = store.get_run(&run).await.unwrap();
    let tags: Vec<&str> = stored
        .tags
        .iter()
        .map(|t| t.key.as_str())
        .filter(|key| !key.starts_with("mlflow."))
        .collect();
    let expected: &[&str] = match store.backend() {
        Backend::Postgres => &["a", "b"],
        Backend::Sqlite => &["a", "b", "nul"],
    };
    assert_eq!(tags, expected);
    assert_eq!(stored.params, [KeyValue::new("p", "1")]);
}
