//! Group commit for single-point run writes: `runs/log-metric`, `runs/log-parameter` and
//! `runs/set-tag`, one value per request.
//!
//! Why: a training loop calls `mlflow.log_metric` once per value, so these requests are many and
//! tiny, and written one by one each costs a run lookup, a statement and a commit (on Postgres a
//! WAL flush) — most of the database's work per request. Requests that arrive together are
//! written together instead: per group one statement per kind of write and one commit.
//!
//! How: leader/follower without a timer. A request joins the queue; when no flush is in progress
//! it starts one at once, so a lone request waits for nothing. Requests that arrive while a flush
//! runs form the next group, flushed as soon as the current one has committed: a request waits
//! for at most one other group before its own. The flush runs in a task of its own, so a client
//! that goes away (its request future dropped) cannot strand its group-mates.
//!
//! Each request is answered only once its group has committed, with its own outcome, exactly as
//! if it had been written alone (through [`Store::log_batch`]): validation happens before a
//! request joins, so a bad request never joins a group; an unknown, foreign or deleted run, and
//! a param logged again with another value, are found per request inside the group's
//! statements and fail only that request. Should a group fail as a whole for another reason (a
//! deadlock, a value the database refuses), each member is written again alone and gets the
//! answer it would have had without grouping; only an unavailable database fails the group at
//! once (writing each member alone would wait for it once per member).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::{PgConnection, PgPool, SqliteConnection, SqlitePool};
use tokio::sync::oneshot;

use super::writes::{normalize_tag, param_changed, push_key_value_rows, validate_batch};
use super::{FoundRun, Metric, RUN_NAME_TAG, RunKeyValueRow, check_writable, run_not_found};
use crate::store::metrics::{LatestPoint, insert_sqlite_points, latest_per_key};
use crate::store::search::{SqlBuilder, SqlValue, bind_values};
use crate::store::validation::{self, MAX_PARAM_VALUE_LENGTH};
use crate::store::{BeginWrite, Error, KeyValue, LIFECYCLE_ACTIVE, Pool, Result, Store};

/// Most requests written in one group. Far above what a burst of clients sends at once; it
/// bounds one statement's size (SQLite's bound variables).
const MAX_GROUP: usize = 256;

/// The queue of single-point writes of one store (shared by its workspace-scoped clones).
#[derive(Default)]
pub(in crate::store) struct GroupCommit {
    queue: Mutex<Queue>,
    groups: AtomicU64,
    requests: AtomicU64,
}

/// How many groups a store wrote, and how many requests they held, since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitStats {
    pub groups: u64,
    pub requests: u64,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Member>,
    /// A flush task is running; it takes what is waiting when its current group is done.
    flushing: bool,
}

/// What one request writes.
enum Point {
    Metric(Metric),
    Param(KeyValue),
    Tag(KeyValue),
}

/// One request in the queue and where its answer goes.
struct Member {
    run_id: String,
    workspace: Arc<str>,
    point: Point,
    reply: oneshot::Sender<Result<()>>,
}

impl GroupCommit {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The lock is held only to push or take members, never across an await or a panic
        // point of ours; a poisoned queue is still consistent.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `member`; true when no flush runs, so the caller must start one.
    fn join(&self, member: Member) -> bool {
        let mut queue = self.lock();
        queue.waiting.push(member);
        !std::mem::replace(&mut queue.flushing, true)
    }

    /// The next group, or `None` (and the flush ends) when nothing waits.
    fn next_group(&self) -> Option<Vec<Member>> {
        let mut queue = self.lock();
        if queue.waiting.is_empty() {
            queue.flushing = false;
            return None;
        }
        let take = queue.waiting.len().min(MAX_GROUP);
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(take as u64, Ordering::Relaxed);
        Some(queue.waiting.drain(..take).collect())
    }
}

/// Ends a flush that did not finish normally (a panic, or its runtime shutting down): the
/// waiting requests are answered with an error instead of waiting forever, and the next
/// request starts a new flush. A flush that finished (the queue found empty) leaves the queue
/// alone: by the time it is dropped a new request may have joined and started the next flush.
struct FlushGuard<'a> {
    group_commit: &'a GroupCommit,
    finished: bool,
}

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut queue = self.group_commit.lock();
        queue.flushing = false;
        queue.waiting.clear();
    }
}

impl Store {
    /// Groups of single-point writes so far (shared by every workspace's view of the store).
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            groups: self.group_commit.groups.load(Ordering::Relaxed),
            requests: self.group_commit.requests.load(Ordering::Relaxed),
        }
    }

    /// Logs one metric point (`runs/log-metric`), written in a group with concurrent
    /// single-point writes (see the module documentation).
    #[tracing::instrument(name = "store.log_metric", skip_all)]
    pub async fn log_metric(&self, run_id: &str, metric: Metric) -> Result<()> {
        validate_batch(std::slice::from_ref(&metric), &[], &[])?;
        self.write_in_group(run_id, Point::Metric(metric)).await
    }

    /// Logs one param (`runs/log-parameter`), in a group like [`Store::log_metric`].
    #[tracing::instrument(name = "store.log_param", skip_all)]
    pub async fn log_param(&self, run_id: &str, param: KeyValue) -> Result<()> {
        validate_batch(&[], std::slice::from_ref(&param), &[])?;
        let value = validation::truncate(&param.value, MAX_PARAM_VALUE_LENGTH);
        self.write_in_group(run_id, Point::Param(KeyValue::new(param.key, value)))
            .await
    }

    /// Sets one run tag (`runs/set-tag`), in a group like [`Store::log_metric`]. The run-name
    /// tag renames the run as well, so it is written alone.
    #[tracing::instrument(name = "store.set_run_tag", skip_all)]
    pub async fn set_run_tag(&self, run_id: &str, tag: KeyValue) -> Result<()> {
        if tag.key == RUN_NAME_TAG {
            return self.log_batch(run_id, &[], &[], &[tag]).await;
        }
        let tag = normalize_tag(tag)?;
        self.write_in_group(run_id, Point::Tag(tag)).await
    }

    async fn write_in_group(&self, run_id: &str, point: Point) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        let member = Member {
            run_id: run_id.to_owned(),
            workspace: Arc::from(self.workspace()),
            point,
            reply,
        };
        if self.group_commit.join(member) {
            let store = self.clone();
            tokio::spawn(async move { store.flush_groups().await });
        }
        // A flush that ended abnormally dropped the reply: the database work is in an unknown
        // state, as when a worker crashes.
        answer
            .await
            .unwrap_or(Err(Error::Database(sqlx::Error::WorkerCrashed)))
    }

    /// Writes groups until the queue is empty.
    async fn flush_groups(self) {
        let mut guard = FlushGuard {
            group_commit: &self.group_commit,
            finished: false,
        };
        while let Some(group) = self.group_commit.next_group() {
            self.write_group(group).await;
        }
        guard.finished = true;
    }

    /// Writes one group and answers each member.
    #[tracing::instrument(name = "store.group_commit", skip_all, fields(size = group.len()))]
    async fn write_group(&self, group: Vec<Member>) {
        let rows = GroupRows::new(&group);
        let written = match &self.writes {
            Pool::Postgres(pool) => write_postgres(pool, &rows).await,
            Pool::Sqlite(pool) => write_sqlite(pool, &rows).await,
        };
        match written {
            Ok(outcome) => {
                for member in group {
                    let answer = outcome.answer(&member);
                    let _ = member.reply.send(answer);
                }
            }
            Err(error) if error.is_unavailable() => {
                tracing::warn!(?error, "group write failed: the store is unavailable");
                for member in group {
                    let _ = member.reply.send(Err(copy_unavailable(&error)));
                }
            }
            Err(error) => {
                tracing::warn!(?error, "group write failed; writing each request alone");
                futures::future::join_all(group.into_iter().map(|member| async move {
                    let answer = self.write_alone(&member).await;
                    let _ = member.reply.send(answer);
                }))
                .await;
            }
        }
    }

    /// What the member's request does without grouping.
    async fn write_alone(&self, member: &Member) -> Result<()> {
        let store = self.in_workspace(&member.workspace);
        let run_id = &member.run_id;
        match &member.point {
            Point::Metric(metric) => {
                store
                    .log_batch(run_id, std::slice::from_ref(metric), &[], &[])
                    .await
            }
            Point::Param(param) => {
                store
                    .log_batch(run_id, &[], std::slice::from_ref(param), &[])
                    .await
            }
            Point::Tag(tag) => {
                store
                    .log_batch(run_id, &[], &[], std::slice::from_ref(tag))
                    .await
            }
        }
    }
}

/// An unavailable-database error for each member of a failed group (sqlx errors cannot be
/// cloned; the API answers all of them alike).
fn copy_unavailable(error: &Error) -> Error {
    Error::Database(match error {
        Error::Database(sqlx::Error::PoolTimedOut) => sqlx::Error::PoolTimedOut,
        Error::Database(sqlx::Error::PoolClosed) => sqlx::Error::PoolClosed,
        Error::Database(other) => sqlx::Error::Io(std::io::Error::other(other.to_string())),
        other => sqlx::Error::Io(std::io::Error::other(other.to_string())),
    })
}

/// A key/value row of the group, with the member's run and workspace.
struct KeyValueRow<'a> {
    run_id: &'a str,
    workspace: &'a str,
    key: &'a str,
    value: &'a str,
}

/// A metric point of the group.
struct MetricRow<'a> {
    run_id: &'a str,
    workspace: &'a str,
    metric: &'a Metric,
}

/// The greatest point of the group per run, workspace and key.
struct LatestRow<'a> {
    run_id: &'a str,
    workspace: &'a str,
    key: String,
    point: LatestPoint,
}

/// A group's writes, prepared as sequential requests would leave the tables: a param's first
/// value of the group is the one stored (later different values fail), a tag's last value wins,
/// a metric key's greatest point is its latest. Keyed by workspace too, so that a request naming
/// another workspace's run (not found) cannot decide what the run's own requests store. Rows are
/// in (run, key) order, so concurrent writers lock rows in the same order.
struct GroupRows<'a> {
    /// Each run of the group once.
    run_ids: Vec<&'a str>,
    metrics: Vec<MetricRow<'a>>,
    latest: Vec<LatestRow<'a>>,
    params: Vec<KeyValueRow<'a>>,
    tags: Vec<KeyValueRow<'a>>,
}

impl<'a> GroupRows<'a> {
    fn new(group: &'a [Member]) -> Self {
        let mut run_ids: Vec<&str> = group.iter().map(|m| m.run_id.as_str()).collect();
        run_ids.sort_unstable();
        run_ids.dedup();
        let mut metrics = Vec::new();
        let mut metrics_by_run: BTreeMap<(&str, &str), Vec<Metric>> = BTreeMap::new();
        let mut params: BTreeMap<(&str, &str, &str), &str> = BTreeMap::new();
        let mut tags: BTreeMap<(&str, &str, &str), &str> = BTreeMap::new();
        for member in group {
            let (run_id, workspace) = (member.run_id.as_str(), &*member.workspace);
            match &member.point {
                Point::Metric(metric) => {
                    metrics.push(MetricRow {
                        run_id,
                        workspace,
                        metric,
                    });
                    metrics_by_run
                        .entry((run_id, workspace))
                        .or_default()
                        .push(metric.clone());
                }
                Point::Param(param) => {
                    params
                        .entry((run_id, param.key.as_str(), workspace))
                        .or_insert(param.value.as_str());
                }
                Point::Tag(tag) => {
                    tags.insert((run_id, tag.key.as_str(), workspace), tag.value.as_str());
                }
            }
        }
        metrics.sort_by(|a, b| (a.run_id, &a.metric.key).cmp(&(b.run_id, &b.metric.key)));
        let mut latest = Vec::new();
        for ((run_id, workspace), points) in &metrics_by_run {
            for (key, point) in latest_per_key(points) {
                latest.push(LatestRow {
                    run_id,
                    workspace,
                    key: key.to_owned(),
                    point,
                });
            }
        }
        latest.sort_by(|a, b| (a.run_id, &a.key).cmp(&(b.run_id, &b.key)));
        let key_values = |rows: BTreeMap<(&'a str, &'a str, &'a str), &'a str>| {
            rows.into_iter()
                .map(|((run_id, key, workspace), value)| KeyValueRow {
                    run_id,
                    workspace,
                    key,
                    value,
                })
                .collect()
        };
        Self {
            run_ids,
            metrics,
            latest,
            params: key_values(params),
            tags: key_values(tags),
        }
    }

    /// How many statements write the group: more than one needs a transaction of its own.
    fn kinds(&self) -> usize {
        [
            !self.metrics.is_empty(),
            !self.params.is_empty(),
            !self.tags.is_empty(),
        ]
        .into_iter()
        .filter(|&present| present)
        .count()
    }
}

/// What the group's statements found: its runs, and the stored value of each param written.
struct Outcome {
    runs: HashMap<String, FoundRun>,
    params: HashMap<(String, String), String>,
}

impl Outcome {
    fn new(runs: Vec<FoundRun>) -> Self {
        Self {
            runs: runs
                .into_iter()
                .map(|run| (run.run_uuid.clone(), run))
                .collect(),
            params: HashMap::new(),
        }
    }

    fn record_params(&mut self, stored: Vec<RunKeyValueRow>) {
        self.params.extend(
            stored
                .into_iter()
                .map(|row| ((row.run_uuid, row.key), row.value)),
        );
    }

    /// Records the group's writable `(run, key, value)` params as stored when its insert wrote
    /// every one of them (`inserted` rows); false when some key was stored before, so the
    /// stored values must be read back. The usual case: a param is logged once.
    fn record_params_if_all_new(&mut self, params: &[(&str, &str, &str)], inserted: u64) -> bool {
        if usize::try_from(inserted).ok() != Some(params.len()) {
            return false;
        }
        self.params
            .extend(params.iter().map(|(run_id, key, value)| {
                (
                    ((*run_id).to_owned(), (*key).to_owned()),
                    (*value).to_owned(),
                )
            }));
        true
    }

    /// Whether the member's run accepts writes from the member's workspace.
    fn writable(&self, run_id: &str, workspace: &str) -> bool {
        self.runs
            .get(run_id)
            .is_some_and(|run| run.writable_by(workspace))
    }

    /// The rows whose run accepts them, as `(run, key, value)`.
    fn writable_rows<'r>(&self, rows: &'r [KeyValueRow<'r>]) -> Vec<(&'r str, &'r str, &'r str)> {
        rows.iter()
            .filter(|row| self.writable(row.run_id, row.workspace))
            .map(|row| (row.run_id, row.key, row.value))
            .collect()
    }

    /// The member's answer, the one [`Store::log_batch`] gives.
    fn answer(&self, member: &Member) -> Result<()> {
        let run_id = member.run_id.as_str();
        check_writable(run_id, &member.workspace, self.runs.get(run_id))?;
        let Point::Param(param) = &member.point else {
            return Ok(());
        };
        match self.params.get(&(run_id.to_owned(), param.key.clone())) {
            Some(stored) if *stored == param.value => Ok(()),
            Some(stored) => Err(param_changed(run_id, &param.key, stored, &param.value)),
            // params go only with their run (ON DELETE CASCADE)
            None => Err(run_not_found(run_id)),
        }
    }
}

/// The group's runs, locked against deletion for the statement (FOR KEY SHARE, the lock a
/// foreign key check takes), with their workspace; `$1` is the array of run ids. Every statement
/// writes only rows whose run is found here, active and in the row's workspace, and answers
/// these runs so each request's outcome is decided in Rust.
macro_rules! postgres_found_runs {
    () => {
        "WITH found AS ( \
           SELECT r.run_uuid, r.lifecycle_stage, e.workspace FROM runs r \
           JOIN experiments e ON e.experiment_id = r.experiment_id \
           WHERE r.run_uuid = ANY($1) FOR KEY SHARE OF r), "
    };
}

/// `$2` is the active lifecycle stage.
macro_rules! postgres_writable {
    ($rows:literal) => {
        concat!(
            " JOIN found f ON f.run_uuid = ",
            $rows,
            ".run_uuid AND f.workspace = ",
            $rows,
            ".workspace AND f.lifecycle_stage = $2"
        )
    };
}

const POSTGRES_METRICS: &str = concat!(
    postgres_found_runs!(),
    "history AS ( \
       INSERT INTO metrics (run_uuid, key, step, timestamp, value, is_nan, model_id, dataset_name, dataset_digest) \
       SELECT p.run_uuid, p.key, p.step, p.timestamp, p.value, p.is_nan, p.model_id, p.dataset_name, p.dataset_digest \
       FROM UNNEST($3::text[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::float8[], $9::bool[], \
                   $10::text[], $11::text[], $12::text[]) \
         AS p(run_uuid, workspace, key, step, timestamp, value, is_nan, model_id, dataset_name, dataset_digest)",
    postgres_writable!("p"),
    " ON CONFLICT DO NOTHING), \
     latest AS ( \
       INSERT INTO latest_metrics (run_uuid, key, step, timestamp, value, is_nan) \
       SELECT l.run_uuid, l.key, l.step, l.timestamp, l.value, l.is_nan \
       FROM UNNEST($13::text[], $14::text[], $15::text[], $16::int8[], $17::int8[], $18::float8[], $19::bool[]) \
         AS l(run_uuid, workspace, key, step, timestamp, value, is_nan)",
    postgres_writable!("l"),
    " ON CONFLICT (run_uuid, key) DO UPDATE SET step = excluded.step, timestamp = excluded.timestamp, \
       value = excluded.value, is_nan = excluded.is_nan \
       WHERE (excluded.step, excluded.timestamp, excluded.value) > \
             (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)) \
     SELECT run_uuid, lifecycle_stage, workspace FROM found"
);

/// Params and tags: `$3..$6` the rows; `$on_conflict` what a stored key does. Each found run
/// comes with how many rows the statement inserted or updated.
macro_rules! postgres_key_values {
    ($table:literal, $on_conflict:literal) => {
        concat!(
            postgres_found_runs!(),
            "written AS ( \
               INSERT INTO ",
            $table,
            " (run_uuid, key, value) SELECT p.run_uuid, p.key, p.value \
               FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[]) AS p(run_uuid, workspace, key, value)",
            postgres_writable!("p"),
            " ON CONFLICT (run_uuid, key) ",
            $on_conflict,
            " RETURNING 1) \
             SELECT run_uuid, lifecycle_stage, workspace, (SELECT count(*) FROM written) AS written \
             FROM found"
        )
    };
}

/// Params are inserted, never changed: the stored value is read afterwards and compared per
/// request (insert first, then read, as log-batch does: a key another request is inserting is
/// waited for by the insert, so the read sees its value).
const POSTGRES_PARAMS: &str = postgres_key_values!("params", "DO NOTHING");
const POSTGRES_TAGS: &str = postgres_key_values!("tags", "DO UPDATE SET value = excluded.value");
const POSTGRES_STORED_PARAMS: &str = "SELECT run_uuid, key, value FROM params \
     WHERE (run_uuid, key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))";

/// Postgres: one statement per kind of write, each finding the runs itself. A group of one kind
/// (the usual case: a training loop's metrics) is one statement and its implicit commit; mixed
/// kinds share a transaction.
async fn write_postgres(pool: &PgPool, rows: &GroupRows<'_>) -> Result<Outcome> {
    if rows.kinds() > 1 {
        let mut tx = pool.begin().await?;
        let outcome = postgres_statements(&mut tx, rows).await?;
        tx.commit().await?;
        Ok(outcome)
    } else {
        let mut connection = pool.acquire().await?;
        Ok(postgres_statements(&mut connection, rows).await?)
    }
}

async fn postgres_statements(
    connection: &mut PgConnection,
    rows: &GroupRows<'_>,
) -> sqlx::Result<Outcome> {
    let mut runs = Vec::new();
    if !rows.metrics.is_empty() {
        let metrics = &rows.metrics;
        let stored: Vec<(f64, bool)> = column(metrics, |row| {
            validation::stored_metric_value(row.metric.value)
        });
        let latest = &rows.latest;
        runs.extend(
            sqlx::query_as::<_, FoundRun>(POSTGRES_METRICS)
                .bind(&rows.run_ids)
                .bind(LIFECYCLE_ACTIVE)
                .bind(column(metrics, |row| row.run_id))
                .bind(column(metrics, |row| row.workspace))
                .bind(column(metrics, |row| row.metric.key.as_str()))
                .bind(column(metrics, |row| row.metric.step))
                .bind(column(metrics, |row| row.metric.timestamp))
                .bind(column(&stored, |(value, _)| *value))
                .bind(column(&stored, |(_, is_nan)| *is_nan))
                .bind(column(metrics, |row| row.metric.model_id.as_deref()))
                .bind(column(metrics, |row| row.metric.dataset_name.as_deref()))
                .bind(column(metrics, |row| row.metric.dataset_digest.as_deref()))
                .bind(column(latest, |row| row.run_id))
                .bind(column(latest, |row| row.workspace))
                .bind(column(latest, |row| row.key.as_str()))
                .bind(column(latest, |row| row.point.step))
                .bind(column(latest, |row| row.point.timestamp))
                .bind(column(latest, |row| row.point.value))
                .bind(column(latest, |row| row.point.is_nan))
                .fetch_all(&mut *connection)
                .await?,
        );
    }
    let params_inserted =
        postgres_key_values(connection, POSTGRES_PARAMS, rows, &rows.params, &mut runs).await?;
    postgres_key_values(connection, POSTGRES_TAGS, rows, &rows.tags, &mut runs).await?;
    let mut outcome = Outcome::new(runs);
    let params = outcome.writable_rows(&rows.params);
    if !outcome.record_params_if_all_new(&params, params_inserted) {
        outcome.record_params(
            sqlx::query_as::<_, RunKeyValueRow>(POSTGRES_STORED_PARAMS)
                .bind(column(&params, |(run_id, _, _)| *run_id))
                .bind(column(&params, |(_, key, _)| *key))
                .fetch_all(&mut *connection)
                .await?,
        );
    }
    Ok(outcome)
}

/// A found run and the number of rows its key/value statement wrote.
#[derive(sqlx::FromRow)]
struct FoundRunWritten {
    #[sqlx(flatten)]
    run: FoundRun,
    written: i64,
}

/// Writes `key_values` with `statement` (params or tags), adds the runs it found to `runs` and
/// answers how many rows it inserted or updated (0 when there is nothing to write).
async fn postgres_key_values(
    connection: &mut PgConnection,
    statement: &str,
    rows: &GroupRows<'_>,
    key_values: &[KeyValueRow<'_>],
    runs: &mut Vec<FoundRun>,
) -> sqlx::Result<u64> {
    if key_values.is_empty() {
        return Ok(0);
    }
    let found = sqlx::query_as::<_, FoundRunWritten>(statement)
        .bind(&rows.run_ids)
        .bind(LIFECYCLE_ACTIVE)
        .bind(column(key_values, |row| row.run_id))
        .bind(column(key_values, |row| row.workspace))
        .bind(column(key_values, |row| row.key))
        .bind(column(key_values, |row| row.value))
        .fetch_all(&mut *connection)
        .await?;
    // count(*) is never negative
    let written = found
        .first()
        .map_or(0, |row| u64::try_from(row.written).unwrap_or_default());
    runs.extend(found.into_iter().map(|row| row.run));
    Ok(written)
}

/// One column of `rows`, bound as an array.
fn column<'r, T, V>(rows: &'r [T], value: impl Fn(&'r T) -> V) -> Vec<V> {
    rows.iter().map(value).collect()
}

/// SQLite: one transaction (writers are serialised there anyway); the runs are read first, then
/// only writable rows are written.
async fn write_sqlite(pool: &SqlitePool, rows: &GroupRows<'_>) -> Result<Outcome> {
    let mut tx = pool.begin_write().await?;
    let run_ids = serde_json::to_string(&rows.run_ids)
        .map_err(|error| Error::Database(sqlx::Error::Encode(Box::new(error))))?;
    let runs = sqlx::query_as::<_, FoundRun>(
        "SELECT r.run_uuid, r.lifecycle_stage, e.workspace FROM runs r \
         JOIN experiments e ON e.experiment_id = r.experiment_id \
         WHERE r.run_uuid IN (SELECT value FROM json_each($1))",
    )
    .bind(&run_ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut outcome = Outcome::new(runs);

    let mut metrics_by_run: BTreeMap<&str, Vec<Metric>> = BTreeMap::new();
    for row in &rows.metrics {
        if outcome.writable(row.run_id, row.workspace) {
            metrics_by_run
                .entry(row.run_id)
                .or_default()
                .push(row.metric.clone());
        }
    }
    for (run_id, metrics) in &metrics_by_run {
        // Each run was found writable above, in this transaction.
        insert_sqlite_points(&mut tx, run_id, metrics).await?;
    }
    let params = outcome.writable_rows(&rows.params);
    let tags = outcome.writable_rows(&rows.tags);
    if !params.is_empty() {
        let inserted = sqlite_insert_key_values(&mut tx, "params", &params, "DO NOTHING").await?;
        if !outcome.record_params_if_all_new(&params, inserted) {
            let mut read =
                SqlBuilder::new("SELECT run_uuid, key, value FROM params WHERE run_uuid IN ");
            read.bind_list(
                params
                    .iter()
                    .map(|(run_id, _, _)| SqlValue::Text((*run_id).to_owned())),
            );
            read.push(" AND key IN ");
            read.bind_list(
                params
                    .iter()
                    .map(|(_, key, _)| SqlValue::Text((*key).to_owned())),
            );
            outcome.record_params(
                bind_values!(sqlx::query_as::<_, RunKeyValueRow>(&read.sql), &read.values)
                    .fetch_all(&mut *tx)
                    .await?,
            );
        }
    }
    if !tags.is_empty() {
        sqlite_insert_key_values(
            &mut tx,
            "tags",
            &tags,
            "DO UPDATE SET value = excluded.value",
        )
        .await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// Inserts `(run, key, value)` rows into `table` (params or tags; fixed names, never input),
/// `on_conflict` saying what a stored key does; answers how many rows were written (an
/// existing key left alone is not counted).
async fn sqlite_insert_key_values(
    connection: &mut SqliteConnection,
    table: &str,
    rows: &[(&str, &str, &str)],
    on_conflict: &str,
) -> sqlx::Result<u64> {
    let mut insert = SqlBuilder::new(&format!(
        "INSERT INTO {table} (run_uuid, key, value) VALUES "
    ));
    push_key_value_rows(&mut insert, rows.iter().copied());
    insert.push(&format!(" ON CONFLICT (run_uuid, key) {on_conflict}"));
    Ok(bind_values!(sqlx::query(&insert.sql), &insert.values)
        .execute(connection)
        .await?
        .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(run_id: &str) -> (Member, oneshot::Receiver<Result<()>>) {
        let (reply, answer) = oneshot::channel();
        let point = Point::Tag(KeyValue::new("k".to_owned(), "v".to_owned()));
        let workspace = Arc::from("default");
        let run_id = run_id.to_owned();
        (
            Member {
                run_id,
                workspace,
                point,
                reply,
            },
            answer,
        )
    }

    /// The race the benchmark met (503 "worker crashed" at 0 ms): a flush finds the queue
    /// empty, a request joins and starts the next flush, then the finished flush's guard is
    /// dropped. It must not take the new request's place in the queue.
    #[test]
    fn a_finished_flush_leaves_the_next_flushs_request_queued() {
        let group_commit = GroupCommit::default();
        let (first, _first_answer) = member("a");
        assert!(group_commit.join(first));
        assert_eq!(group_commit.next_group().map(|group| group.len()), Some(1));
        assert!(group_commit.next_group().is_none());
        let (second, mut second_answer) = member("b");
        assert!(
            group_commit.join(second),
            "the queue was idle: the joiner starts a flush"
        );
        drop(FlushGuard {
            group_commit: &group_commit,
            finished: true,
        });
        assert!(matches!(
            second_answer.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert_eq!(group_commit.next_group().map(|group| group.len()), Some(1));
    }

    /// A flush that ended abnormally answers what waits (with an error) and lets the next
    /// request start a flush.
    #[test]
    fn an_abandoned_flush_answers_the_waiting_and_frees_the_queue() {
        let group_commit = GroupCommit::default();
        let (waiting, mut answer) = member("a");
        assert!(group_commit.join(waiting));
        drop(FlushGuard {
            group_commit: &group_commit,
            finished: false,
        });
        assert!(matches!(
            answer.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        let (next, _next_answer) = member("b");
        assert!(group_commit.join(next));
    }
}
