//! Metric points: writing a batch (history plus each key's latest value), the history paged
//! per run and key (the charts' sampled read is in `metric_sampling`).

use std::collections::BTreeMap;

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt, TryStreamExt};
use sqlx::{PgConnection, SqliteConnection};

use super::runs::FoundRun;
use super::search::{self, SortKey, SortKind, SqlBuilder, SqlValue, TokenValue, bind_values};
use super::values::Metric;
use super::{Backend, Error, LIFECYCLE_ACTIVE, Page, Pool, Result, Store, validation};

/// Largest page of metric history (MLflow's client asks for 25000 at a time).
pub const MAX_HISTORY_PAGE: i64 = 25_000;

/// A point of one run's history of one key, as Postgres hands it over ([`postgres_history`]):
/// step, timestamp, the stored value, and [`history_extras`]. Read by position: the run and key
/// are the request's.
struct HistoryRow {
    step: i64,
    timestamp: i64,
    value: f64,
    extras: Option<String>,
}

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for HistoryRow
where
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database>,
    f64: sqlx::Decode<'r, R::Database>,
    String: sqlx::Decode<'r, R::Database>,
{
    /// Unchecked: the columns' types are the schema's, and checking them (a type lookup and a
    /// NULL test per value) was about 6% of a long read's server CPU on SQLite.
    fn from_row(row: &'r R) -> sqlx::Result<Self> {
        Ok(Self {
            step: row.try_get_unchecked(0)?,
            timestamp: row.try_get_unchecked(1)?,
            value: row.try_get_unchecked(2)?,
            extras: row.try_get_unchecked(3)?,
        })
    }
}

/// One column per point that is NULL unless the point is NaN or has a model_id, dataset_name
/// or dataset_digest (then a JSON array of is_nan as 0/1 and the three): each value handed
/// over costs, NULL or not, and these are rarely set (e2e/bench/runs/2026-12-07-sqlread.md,
/// 2026-12-07-sqlhist.md).
fn history_extras(backend: Backend) -> String {
    let extras = match backend {
        Backend::Postgres => {
            "json_build_array(x.is_nan::int, x.model_id, x.dataset_name, x.dataset_digest)::text"
        }
        Backend::Sqlite => "json_array(x.is_nan, x.model_id, x.dataset_name, x.dataset_digest)",
    };
    format!(
        "CASE WHEN NOT x.is_nan AND x.model_id IS NULL AND x.dataset_name IS NULL \
         AND x.dataset_digest IS NULL THEN NULL ELSE {extras} END"
    )
}

/// What [`history_extras`] holds, parsed.
type HistoryExtras = (u8, Option<String>, Option<String>, Option<String>);

/// A point of one run's history of one key, as a history's reader hands it over: the run and
/// key are the request's, so a point carries neither (no owned key per point, and the answer
/// is written straight from these).
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPoint {
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    pub model_id: Option<String>,
    pub dataset_name: Option<String>,
    pub dataset_digest: Option<String>,
}

impl HistoryPoint {
    /// The point stored as `step`, `timestamp`, `value` and `extras`, and its place in the
    /// history's order (the page token keeps the stored value and is_nan).
    fn read(
        step: i64,
        timestamp: i64,
        value: f64,
        extras: Option<HistoryExtras>,
    ) -> (Self, HistoryPosition) {
        let (is_nan, model_id, dataset_name, dataset_digest) =
            extras.unwrap_or((0, None, None, None));
        let is_nan = is_nan != 0;
        let point = Self {
            value: validation::read_metric_value(value, is_nan),
            timestamp,
            step,
            model_id,
            dataset_name,
            dataset_digest,
        };
        let position = HistoryPosition {
            step,
            timestamp,
            value,
            is_nan,
        };
        (point, position)
    }

    /// The point as a metric of `key`.
    pub fn into_metric(self, key: &str) -> Metric {
        Metric {
            value: self.value,
            key: key.to_owned(),
            timestamp: self.timestamp,
            step: self.step,
            model_id: self.model_id,
            dataset_name: self.dataset_name,
            dataset_digest: self.dataset_digest,
            run_id: None,
        }
    }
}

/// A point's place in the history's order ([`HISTORY_ORDER`]): where the next page, or on
/// SQLite the next chunk, starts.
#[derive(Debug, Clone, Copy)]
struct HistoryPosition {
    step: i64,
    timestamp: i64,
    /// the stored value (0 for NaN)
    value: f64,
    is_nan: bool,
}

impl HistoryPosition {
    /// The token's shape (is_nan as 0/1) is the one every history page token has had.
    fn token_keys() -> [SortKey; 4] {
        [
            SortKey::new("x.step", SortKind::Int, false, false),
            SortKey::new("x.timestamp", SortKind::Int, false, false),
            SortKey::new("x.value", SortKind::Float, false, false),
            SortKey::new("x.is_nan", SortKind::Int, false, false),
        ]
    }

    fn from_token(page_token: &str) -> Result<Option<Self>> {
        let Some(after) = search::decode_page_token(page_token, &Self::token_keys())? else {
            return Ok(None);
        };
        let [
            TokenValue::Int(step),
            TokenValue::Int(timestamp),
            TokenValue::Float(value),
            TokenValue::Int(is_nan),
        ] = after.as_slice()
        else {
            return Err(Error::Invalid(format!("Invalid page token '{page_token}'")));
        };
        Ok(Some(Self {
            step: *step,
            timestamp: *timestamp,
            value: *value,
            is_nan: *is_nan != 0,
        }))
    }

    fn token(&self) -> String {
        search::encode_page_token(vec![
            TokenValue::Int(self.step),
            TokenValue::Int(self.timestamp),
            TokenValue::Float(self.value),
            TokenValue::Int(i64::from(self.is_nan)),
        ])
    }
}

/// What a write does with a point the run already has (same key, step, timestamp and value):
/// MLflow stores it once and answers success either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RepeatedPoints {
    /// Fail with a unique violation; cheapest when repeats are rare (a retried request).
    Fail,
    /// Skip them.
    Skip,
}

/// Writes a batch of points and keeps `latest_metrics` current, in one atomic unit of work on
/// the connection it is called on (a statement, or the caller's transaction). Points are
/// written only when the run is active and in `workspace`; the run found (locked against
/// deletion) is returned either way, for the caller's answer
/// (`runs::check_writable`), so that the common write needs no lookup of its own first.
pub(super) trait WriteMetrics {
    async fn write_metrics(
        &mut self,
        run_id: &str,
        workspace: &str,
        metrics: &[Metric],
        repeated: RepeatedPoints,
    ) -> sqlx::Result<Option<FoundRun>>;
}

/// The run of a write as the database has it: `$1` the run's id; rows are written from
/// `writable`, the run when it is active (`$2`) and in the caller's workspace (`$3`).
macro_rules! postgres_found_run {
    () => {
        "WITH run AS ( \
           SELECT r.run_uuid, r.lifecycle_stage, e.workspace FROM runs r \
           JOIN experiments e ON e.experiment_id = r.experiment_id \
           WHERE r.run_uuid = $1 FOR KEY SHARE OF r), \
         writable AS (SELECT run_uuid FROM run WHERE lifecycle_stage = $2 AND workspace = $3), "
    };
}

/// Postgres: one statement, which also finds the run and answers it (a log-batch of metrics
/// is one round trip). The points arrive as arrays, the history is a data-modifying CTE,
/// and the run row is locked once (FOR KEY SHARE) instead of by a per-row foreign key on
/// `metrics` (migration 0006): with 1000 points a request those checks were a third of the
/// statement's cost, and skipping repeats (ON CONFLICT) another fifth. The arrays are unnested
/// in the select list (equal lengths, so in lockstep): `FROM UNNEST(…)` first copies every row
/// into a tuplestore, about a tenth of the statement's CPU (e2e/bench/runs/2026-12-07-pg-log-batch.md).
/// Binary COPY was measured too and cost more: its extra round trips outweigh it.
macro_rules! postgres_write_metrics {
    ($on_repeat:literal) => {
        concat!(
            postgres_found_run!(),
            "history AS ( \
               INSERT INTO metrics (run_uuid, key, step, timestamp, value, is_nan, model_id, dataset_name, dataset_digest) \
               SELECT writable.run_uuid, UNNEST($4::text[]), UNNEST($5::int8[]), UNNEST($6::int8[]), UNNEST($7::float8[]), \
                 UNNEST($8::bool[]), UNNEST($9::text[]), UNNEST($10::text[]), UNNEST($11::text[]) FROM writable",
            $on_repeat,
            "), \
             latest AS ( \
               INSERT INTO latest_metrics (run_uuid, key, step, timestamp, value, is_nan) \
               SELECT writable.run_uuid, l.* FROM writable, \
                 UNNEST($12::text[], $13::int8[], $14::int8[], $15::float8[], $16::bool[]) AS l(key, step, timestamp, value, is_nan) \
               ON CONFLICT (run_uuid, key) DO UPDATE SET step = excluded.step, timestamp = excluded.timestamp, \
                 value = excluded.value, is_nan = excluded.is_nan \
               WHERE (excluded.step, excluded.timestamp, excluded.value) > \
                     (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)) \
             SELECT run_uuid, lifecycle_stage, workspace FROM run"
        )
    };
}

impl WriteMetrics for PgConnection {
    async fn write_metrics(
        &mut self,
        run_id: &str,
        workspace: &str,
        metrics: &[Metric],
        repeated: RepeatedPoints,
    ) -> sqlx::Result<Option<FoundRun>> {
        // One order for every writer of a run, so two batches that share points wait on each
        // other's unique index entries in the same order instead of deadlocking (and
        // neighbouring points land in the same index pages).
        let mut sorted: Vec<&Metric> = metrics.iter().collect();
        sorted.sort_by(|a, b| {
            (&a.key, a.step, a.timestamp)
                .cmp(&(&b.key, b.step, b.timestamp))
                .then(a.value.total_cmp(&b.value))
        });
        let statement = match repeated {
            RepeatedPoints::Fail => postgres_write_metrics!(""),
            RepeatedPoints::Skip => postgres_write_metrics!(" ON CONFLICT DO NOTHING"),
        };
        let mut keys = Vec::with_capacity(metrics.len());
        let mut steps = Vec::with_capacity(metrics.len());
        let mut timestamps = Vec::with_capacity(metrics.len());
        let mut values = Vec::with_capacity(metrics.len());
        let mut nans = Vec::with_capacity(metrics.len());
        let mut model_ids = Vec::with_capacity(metrics.len());
        let mut dataset_names = Vec::with_capacity(metrics.len());
        let mut dataset_digests = Vec::with_capacity(metrics.len());
        for metric in sorted {
            let (value, is_nan) = validation::stored_metric_value(metric.value);
            keys.push(metric.key.as_str());
            steps.push(metric.step);
            timestamps.push(metric.timestamp);
            values.push(value);
            nans.push(is_nan);
            model_ids.push(metric.model_id.as_deref());
            dataset_names.push(metric.dataset_name.as_deref());
            dataset_digests.push(metric.dataset_digest.as_deref());
        }
        let latest = latest_per_key(metrics);
        sqlx::query_as::<_, FoundRun>(statement)
            .bind(run_id)
            .bind(LIFECYCLE_ACTIVE)
            .bind(workspace)
            .bind(&keys)
            .bind(&steps)
            .bind(&timestamps)
            .bind(&values)
            .bind(&nans)
            .bind(&model_ids)
            .bind(&dataset_names)
            .bind(&dataset_digests)
            .bind(latest.keys().copied().collect::<Vec<_>>())
            .bind(latest.values().map(|p| p.step).collect::<Vec<_>>())
            .bind(latest.values().map(|p| p.timestamp).collect::<Vec<_>>())
            .bind(latest.values().map(|p| p.value).collect::<Vec<_>>())
            .bind(latest.values().map(|p| p.is_nan).collect::<Vec<_>>())
            .fetch_optional(self)
            .await
    }
}

/// SQLite: multi-row inserts in chunks of a few fixed sizes (see [`sqlite_chunks`]), so every
/// batch size reuses the same few prepared statements from the connection's cache; SQLite
/// writers are serialised (one writer connection, `Store::writes`), so repeats are always
/// skipped. Several statements: the callers run this in a transaction, after checking the run
/// (`metrics` has no foreign key to it since migration 0013).
impl WriteMetrics for SqliteConnection {
    async fn write_metrics(
        &mut self,
        run_id: &str,
        workspace: &str,
        metrics: &[Metric],
        _repeated: RepeatedPoints,
    ) -> sqlx::Result<Option<FoundRun>> {
        let found = sqlx::query_as::<_, FoundRun>(
            "SELECT r.run_uuid, r.lifecycle_stage, e.workspace FROM runs r \
             JOIN experiments e ON e.experiment_id = r.experiment_id WHERE r.run_uuid = $1",
        )
        .bind(run_id)
        .fetch_optional(&mut *self)
        .await?;
        if found.as_ref().is_some_and(|run| run.writable_by(workspace)) {
            insert_sqlite_points(self, run_id, metrics).await?;
        }
        Ok(found)
    }
}

/// SQLite: writes a run's points and its latest values, for a caller that has found the run
/// writable in the same transaction (group commit reads all its runs at once).
///
/// A point's row binds only numbers (and its rarely set model and dataset): the run id is bound
/// once per statement, and the key as its index into the statement's JSON array of the batch's
/// keys. sqlx-sqlite copies every bound string to hand it to its worker thread and SQLite copies
/// it again, so binding the run and key per point cost four allocations a point
/// (e2e/bench/runs/2026-12-07-sqlbatch.md). Values stay bound as REALs, never JSON text, so no
/// float goes through a text conversion.
pub(super) async fn insert_sqlite_points(
    conn: &mut SqliteConnection,
    run_id: &str,
    metrics: &[Metric],
) -> sqlx::Result<()> {
    // The primary key's order (stable: of points with the same key, step and timestamp, the
    // first still wins), so consecutive rows go to the same b-tree page, and each key is
    // listed once.
    let mut sorted: Vec<&Metric> = metrics.iter().collect();
    sorted.sort_by(|a, b| (&a.key, a.step, a.timestamp).cmp(&(&b.key, b.step, b.timestamp)));
    let mut keys: Vec<&str> = Vec::new();
    let mut key_index: i64 = -1;
    let mut rows = Vec::with_capacity(sorted.len());
    for metric in sorted {
        if keys.last() != Some(&metric.key.as_str()) {
            keys.push(&metric.key);
            key_index += 1;
        }
        rows.push((key_index, metric));
    }
    let keys =
        serde_json::to_string(&keys).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    for chunk in sqlite_chunks(&rows) {
        let sql = sqlite_insert_rows(
            "INSERT INTO metrics (run_uuid, key, step, timestamp, value, is_nan, model_id, dataset_name, dataset_digest) \
             SELECT b.run_uuid, b.keys ->> p.column1, p.column2, p.column3, p.column4, p.column5, p.column6, p.column7, p.column8 \
             FROM (SELECT ? AS run_uuid, ? AS keys) b, (VALUES ",
            8,
            chunk.len(),
            // WHERE: an upsert after INSERT … SELECT … FROM needs one (SQLite's parser)
            ") p WHERE true ON CONFLICT DO NOTHING",
        );
        let mut insert = sqlx::query(&sql).bind(run_id).bind(keys.as_str());
        for (key, metric) in chunk {
            let (value, is_nan) = validation::stored_metric_value(metric.value);
            insert = insert
                .bind(*key)
                .bind(metric.step)
                .bind(metric.timestamp)
                .bind(value)
                .bind(is_nan)
                .bind(metric.model_id.as_deref())
                .bind(metric.dataset_name.as_deref())
                .bind(metric.dataset_digest.as_deref());
        }
        insert.execute(&mut *conn).await?;
    }
    let latest: Vec<(&str, LatestPoint)> = latest_per_key(metrics).into_iter().collect();
    for chunk in sqlite_chunks(&latest) {
        let sql = sqlite_insert_rows(
            "INSERT INTO latest_metrics (run_uuid, key, step, timestamp, value, is_nan) VALUES ",
            6,
            chunk.len(),
            LATEST_UPSERT_CONFLICT,
        );
        let mut upsert = sqlx::query(&sql);
        for (key, point) in chunk {
            upsert = upsert
                .bind(run_id)
                .bind(*key)
                .bind(point.step)
                .bind(point.timestamp)
                .bind(point.value)
                .bind(point.is_nan);
        }
        upsert.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Most rows in one SQLite insert (8 parameters a point: 4098 parameters, far below SQLite's
/// limit of 32766).
const SQLITE_MAX_CHUNK_ROWS: usize = 512;

/// `items` in chunks whose lengths are powers of two up to [`SQLITE_MAX_CHUNK_ROWS`], largest
/// first: any batch takes at most 10 statement shapes, each prepared once per connection
/// (sqlx caches statements by their text), where one statement per batch size would prepare
/// a new multi-thousand-parameter statement for most requests.
fn sqlite_chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let size = SQLITE_MAX_CHUNK_ROWS.min(1 << items.len().ilog2());
        let (chunk, rest) = items.split_at(size);
        items = rest;
        Some(chunk)
    })
}

/// `head`, then `rows` rows of `columns` anonymous placeholders (`?`), then `tail`. Not `$n`:
/// SQLite finds a numbered parameter by a linear scan of the statement's parameter names, when
/// it parses the statement and (through sqlx, which asks each parameter's name) on every bind,
/// which made a 1000-point batch (9000 parameters) cost ~100 ms of CPU.
fn sqlite_insert_rows(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    format!("{head}{}{tail}", vec![row; rows].join(", "))
}

/// A key's greatest point of a batch, as stored (NaN as 0 with `is_nan`, infinities clamped).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct LatestPoint {
    pub(super) step: i64,
    pub(super) timestamp: i64,
    pub(super) value: f64,
    pub(super) is_nan: bool,
}

/// Each key's greatest (step, timestamp, value) point, in key order, so concurrent batches
/// lock `latest_metrics` rows in the same order.
pub(super) fn latest_per_key(metrics: &[Metric]) -> BTreeMap<&str, LatestPoint> {
    let mut latest: BTreeMap<&str, LatestPoint> = BTreeMap::new();
    for metric in metrics {
        let (value, is_nan) = validation::stored_metric_value(metric.value);
        let candidate = LatestPoint {
            step: metric.step,
            timestamp: metric.timestamp,
            value,
            is_nan,
        };
        latest
            .entry(metric.key.as_str())
            .and_modify(|current| {
                if (candidate.step, candidate.timestamp) > (current.step, current.timestamp)
                    || ((candidate.step, candidate.timestamp) == (current.step, current.timestamp)
                        && candidate.value > current.value)
                {
                    *current = candidate;
                }
            })
            .or_insert(candidate);
    }
    latest
}

/// The tail of the `latest_metrics` upsert: a stored point that is greater still stays.
const LATEST_UPSERT_CONFLICT: &str = " ON CONFLICT (run_uuid, key) DO UPDATE SET step = excluded.step, \
     timestamp = excluded.timestamp, value = excluded.value, is_nan = excluded.is_nan \
     WHERE (excluded.step, excluded.timestamp, excluded.value) > \
           (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)";

/// The history's order, the primary key's after `(run_uuid, key)`: pages are read straight
/// off that index, no sort.
const HISTORY_ORDER: &str = "x.step, x.timestamp, x.value, x.is_nan";

/// Points per message from a history's reader: with the channel's few messages in flight,
/// what one read holds in memory, however long the history or the page.
const HISTORY_CHUNK: usize = 1000;

/// What a history's reader sends: the page's points in order, then, when more points follow
/// the page, the token of the next one.
#[derive(Debug)]
pub enum HistoryChunk {
    Points(Vec<HistoryPoint>),
    NextPageToken(String),
}

pub type HistoryStream = mpsc::Receiver<Result<HistoryChunk>>;

impl Store {
    /// One page of a metric's history, ordered by step, timestamp and value.
    /// An unknown key answers an empty page; an unknown run RESOURCE_DOES_NOT_EXIST.
    pub async fn get_metric_history(
        &self,
        run_id: &str,
        key: &str,
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<Page<Metric>> {
        let mut chunks = self
            .stream_metric_history(run_id, key, max_results, page_token)
            .await?;
        let mut page = Page {
            items: Vec::new(),
            next_page_token: None,
        };
        while let Some(chunk) = chunks.next().await {
            match chunk? {
                HistoryChunk::Points(points) => page
                    .items
                    .extend(points.into_iter().map(|point| point.into_metric(key))),
                HistoryChunk::NextPageToken(token) => page.next_page_token = Some(token),
            }
        }
        Ok(page)
    }

    /// [`Self::get_metric_history`] as it is read: a task reads the page off the database and
    /// sends it in chunks as the receiver takes them (a slow client holds a few chunks, not the
    /// page). The run is checked before the task starts.
    #[tracing::instrument(name = "store.stream_metric_history", skip_all)]
    pub async fn stream_metric_history(
        &self,
        run_id: &str,
        key: &str,
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<HistoryStream> {
        self.get_run_info(run_id).await?;
        let max_results =
            search::check_max_results(max_results.unwrap_or(MAX_HISTORY_PAGE), i64::MAX)?;
        let after = HistoryPosition::from_token(page_token)?;
        let limit = usize::try_from(max_results).unwrap_or(usize::MAX);
        let (mut sender, receiver) = mpsc::channel(1);
        let pool = self.pool.clone();
        let (run_id, key) = (run_id.to_owned(), key.to_owned());
        tokio::spawn(async move {
            let sent = match &pool {
                Pool::Postgres(pool) => {
                    postgres_history(pool, &run_id, &key, after, max_results, &mut sender).await
                }
                Pool::Sqlite(pool) => {
                    sqlite_history(pool, &run_id, &key, after, limit, &mut sender).await
                }
            };
            if let Err(error) = sent {
                // the receiver may be gone already: then nobody is left to tell
                let _ = sender.send(Err(error)).await;
            }
        });
        Ok(receiver)
    }
}

/// Sends a page of Postgres history, read by one statement, in chunks.
async fn postgres_history(
    pool: &sqlx::PgPool,
    run_id: &str,
    key: &str,
    after: Option<HistoryPosition>,
    max_results: i64,
    sender: &mut mpsc::Sender<Result<HistoryChunk>>,
) -> Result<()> {
    let mut builder = SqlBuilder::new(&format!(
        "SELECT x.step, x.timestamp, x.value, {} FROM metrics x WHERE x.run_uuid = ",
        history_extras(Backend::Postgres)
    ));
    builder.bind(SqlValue::Text(run_id.to_owned()));
    builder.push(" AND x.key = ");
    builder.bind(SqlValue::Text(key.to_owned()));
    if let Some(after) = after {
        // one row comparison, which both databases use as the index range's start (the
        // OR-expanded keyset condition is only a filter there: page k re-read k pages)
        builder.push(&format!(" AND ({HISTORY_ORDER}) > ("));
        builder.bind_list([
            SqlValue::Int(after.step),
            SqlValue::Int(after.timestamp),
            SqlValue::Float(after.value),
            SqlValue::Bool(after.is_nan),
        ]);
        builder.push(")");
    }
    builder.push(&format!(" ORDER BY {HISTORY_ORDER} LIMIT "));
    builder.bind(SqlValue::Int(max_results.saturating_add(1)));
    let limit = usize::try_from(max_results).unwrap_or(usize::MAX);
    // Postgres misjudges how many points one (run, key) holds (it multiplies the two columns'
    // frequencies) and then prefers a bitmap scan plus a sort of the whole rest of the
    // history, on disk, for every page: 6x slower than reading the index in order. Sorting
    // is never needed here.
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL enable_sort = off")
        .execute(&mut *tx)
        .await?;
    let rows = bind_values!(
        sqlx::query_as::<_, HistoryRow>(&builder.sql),
        &builder.values
    )
    .fetch(&mut *tx);
    let mut rows = std::pin::pin!(rows);
    let mut chunk = Vec::with_capacity(HISTORY_CHUNK.min(limit));
    let mut sent = 0;
    let mut last: Option<HistoryPosition> = None;
    while let Some(row) = rows.try_next().await? {
        if sent == limit {
            if !chunk.is_empty() && sender.send(Ok(HistoryChunk::Points(chunk))).await.is_err() {
                return Ok(());
            }
            if let Some(last) = last {
                let _ = sender
                    .send(Ok(HistoryChunk::NextPageToken(last.token())))
                    .await;
            }
            return Ok(());
        }
        sent += 1;
        let extras = row
            .extras
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(decode_error)?;
        let (point, position) = HistoryPoint::read(row.step, row.timestamp, row.value, extras);
        last = Some(position);
        chunk.push(point);
        if chunk.len() == HISTORY_CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(HISTORY_CHUNK));
            if sender.send(Ok(HistoryChunk::Points(full))).await.is_err() {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() {
        let _ = sender.send(Ok(HistoryChunk::Points(chunk))).await;
    }
    Ok(())
}

/// One chunk of SQLite history, from the start or after a position: SQLite packs the chunk's
/// points into one text, a JSON array of `[step, timestamp, "value", extras]`. sqlx-sqlite
/// hands every value of every row over from its worker thread (a copy, an `Arc` and a channel
/// message each, freed on the reader's thread), which made a point per row cost about twice
/// the raw read; a chunk per row is one hand-over per 1000 points
/// (e2e/bench/runs/2026-12-07-sqlhist2.md). The value travels as `%!.18e` text: 19
/// significant digits from SQLite's extended-precision conversion (SQLite 3.43+), well within
/// half an ulp of the stored double, so the correctly rounded parse gives it back bit for
/// bit (`%!.15g`, SQLite's own text, does not; 17 digits leave less margin). The subquery's
/// ORDER BY with LIMIT feeds the aggregate in the history's order.
fn sqlite_history_chunk_sql(after: bool) -> String {
    format!(
        "SELECT '[' || group_concat(printf('[%d,%d,\"%!.18e\",%s]', step, timestamp, value, \
         coalesce(extras, 'null')), ',') || ']' \
         FROM (SELECT x.step, x.timestamp, x.value, {extras} AS extras FROM metrics x \
         WHERE x.run_uuid = ? AND x.key = ?{after} ORDER BY {HISTORY_ORDER} LIMIT ?)",
        extras = history_extras(Backend::Sqlite),
        after = if after {
            format!(" AND ({HISTORY_ORDER}) > (?, ?, ?, ?)")
        } else {
            String::new()
        },
    )
}

/// A point of [`sqlite_history_chunk_sql`]'s array.
#[derive(serde::Deserialize)]
struct PackedPoint<'a>(i64, i64, &'a str, Option<HistoryExtras>);

/// Sends a page of SQLite history in chunks, each read by one statement that starts where the
/// last one ended, all in one read transaction: the page is one snapshot, as when one
/// statement read it.
async fn sqlite_history(
    pool: &sqlx::SqlitePool,
    run_id: &str,
    key: &str,
    mut after: Option<HistoryPosition>,
    limit: usize,
    sender: &mut mpsc::Sender<Result<HistoryChunk>>,
) -> Result<()> {
    let (from_start, from_after) = (
        sqlite_history_chunk_sql(false),
        sqlite_history_chunk_sql(true),
    );
    let mut tx = pool.begin().await?;
    let mut sent = 0;
    loop {
        let left = limit - sent;
        // the page's last chunk asks for one point more: whether a next page follows
        let asked = left.saturating_add(1).min(HISTORY_CHUNK);
        let sql = if after.is_some() {
            &from_after
        } else {
            &from_start
        };
        let mut query = sqlx::query_scalar::<_, Option<String>>(sql)
            .bind(run_id)
            .bind(key);
        if let Some(after) = after {
            query = query
                .bind(after.step)
                .bind(after.timestamp)
                .bind(after.value)
                .bind(after.is_nan);
        }
        let packed = query
            .bind(i64::try_from(asked).unwrap_or(i64::MAX))
            .fetch_one(&mut *tx)
            .await?;
        let points: Vec<PackedPoint> = match &packed {
            Some(json) => serde_json::from_str(json).map_err(decode_error)?,
            None => Vec::new(),
        };
        let got = points.len();
        let mut chunk = Vec::with_capacity(got.min(left));
        for PackedPoint(step, timestamp, value, extras) in points.into_iter().take(left) {
            let value = value.parse().map_err(decode_error)?;
            let (point, position) = HistoryPoint::read(step, timestamp, value, extras);
            after = Some(position);
            chunk.push(point);
        }
        sent += chunk.len();
        if !chunk.is_empty() && sender.send(Ok(HistoryChunk::Points(chunk))).await.is_err() {
            return Ok(());
        }
        if got > left {
            // the token is the page's last point (none when the page is empty: max_results 0)
            if let Some(last) = after.filter(|_| sent > 0) {
                let _ = sender
                    .send(Ok(HistoryChunk::NextPageToken(last.token())))
                    .await;
            }
            return Ok(());
        }
        if got < asked {
            return Ok(());
        }
    }
}

/// A history value the database answered that does not parse.
fn decode_error(error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Database(sqlx::Error::Decode(Box::new(error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_point_is_the_greatest_step_timestamp_value_per_key() {
        let metrics = vec![
            Metric::new("b", 1.0, 1, 1),
            Metric::new("a", 5.0, 10, 2),
            Metric::new("a", 1.0, 99, 1),
            Metric::new("a", 7.0, 10, 2),
            Metric::new("a", f64::NAN, 10, 2),
        ];
        let latest = latest_per_key(&metrics);
        assert_eq!(latest.keys().copied().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            latest["a"],
            LatestPoint {
                step: 2,
                timestamp: 10,
                value: 7.0,
                is_nan: false
            }
        );
    }

    #[test]
    fn sqlite_chunks_are_few_fixed_sizes_covering_the_batch_in_order() {
        let items: Vec<usize> = (0..1000).collect();
        let chunks: Vec<&[usize]> = sqlite_chunks(&items).collect();
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [512, 256, 128, 64, 32, 8]);
        assert_eq!(chunks.concat(), items);
        assert_eq!(sqlite_chunks::<usize>(&[]).count(), 0);
        assert_eq!(sqlite_chunks(&[7]).collect::<Vec<_>>(), [&[7]]);
    }

    #[test]
    fn sqlite_rows_use_anonymous_placeholders() {
        assert_eq!(
            sqlite_insert_rows("INSERT INTO t VALUES ", 2, 3, " ON CONFLICT DO NOTHING"),
            "INSERT INTO t VALUES (?, ?), (?, ?), (?, ?) ON CONFLICT DO NOTHING"
        );
    }
}
