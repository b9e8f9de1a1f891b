//! Planner statistics after a bulk load (issue #11): a table analyzed while small and then grown
//! many times over must not keep statistics in which the new rows do not exist, or run search
//! picks nested loops that rescan an index per run (seconds instead of milliseconds).

use std::time::{Duration, Instant};

use ferroflow::store::KeyValue;
use ferroflow::store::runs::NewRun;
use sqlx::Connection;

/// The planner's row estimate for the tag lookup a `tags.team = 'vision'` filter makes.
async fn estimated_vision_tags(db: &mut sqlx::PgConnection) -> f64 {
    // first line: "<node> on tags  (cost=… rows=N width=…)"
    let (top,): (String,) =
        sqlx::query_as("EXPLAIN SELECT 1 FROM tags WHERE key = 'team' AND value = 'vision'")
            .fetch_one(db)
            .await
            .unwrap();
    let rows = top.split("rows=").nth(1).unwrap();
    rows.split(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn postgres_statistics_follow_a_bulk_load() {
    let Some(test_store) = crate::common::postgres_store().await else {
        return;
    };
    let store = &test_store.store;
    let mut db = sqlx::PgConnection::connect(&test_store.uri).await.unwrap();
    // Only the store may analyze here, so that what the test sees does not depend on when
    // autovacuum comes by.
    for table in ["runs", "tags"] {
        sqlx::query(&format!(
            "ALTER TABLE {table} SET (autovacuum_enabled = false)"
        ))
        .execute(&mut db)
        .await
        .unwrap();
    }
    let create_runs = |experiment_id: i64, team: &'static str, count: usize| async move {
        for i in 0..count {
            store
                .create_run(NewRun {
                    experiment_id,
                    user_id: "tester".into(),
                    run_name: Some(format!("{team}-{i}")),
                    start_time: Some(i as i64),
                    tags: vec![KeyValue::new("team", team)],
                })
                .await
                .unwrap();
        }
    };
    // A logging phase: a few runs, analyzed while the tables are small.
    let logging = store
        .create_experiment("logging", None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    create_runs(logging, "logging", 20).await;
    sqlx::query("ANALYZE").execute(&mut db).await.unwrap();
    // Then a sweep grows them thirtyfold; the statistics know no 'vision' tag.
    let sweep = store
        .create_experiment("sweep", None, &[], "mlflow-artifacts:")
        .await
        .unwrap();
    create_runs(sweep, "vision", 600).await;
    assert!(estimated_vision_tags(&mut db).await < 10.0);

    // The write counters reach the statistics views within about a second: refresh until the
    // planner sees the sweep's rows (in the hundreds: it takes key and value as independent).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        store.refresh_statistics().await.unwrap();
        let estimate = estimated_vision_tags(&mut db).await;
        if estimate >= 100.0 {
            assert!(estimate <= 1200.0, "estimate {estimate} for 600 rows");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "statistics still estimate {estimate} rows for 600 after the bulk load"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn sqlite_statistics_need_no_refresh() {
    let test_store = crate::common::sqlite_store().await;
    assert!(
        test_store
            .store
            .refresh_statistics()
            .await
            .unwrap()
            .is_empty()
    );
}
