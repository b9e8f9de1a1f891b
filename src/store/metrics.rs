//! Metric points: writing a batch (history plus each key's latest value), the history paged
//! per run and key (the charts' sampled read is in `metric_sampling`).

use std::collections::BTreeMap;

use sqlx::{PgConnection, SqliteConnection};

use super::search::{self, SortKey, SortKind, SqlBuilder, SqlValue, bind_values};
use super::values::Metric;
use super::{Page, Result, Store, validation};

/// Largest page of metric history (MLflow's client asks for 25000 at a time).
pub const MAX_HISTORY_PAGE: i64 = 25_000;

#[derive(sqlx::FromRow)]
struct MetricRow {
    run_uuid: String,
    key: String,
    step: i64,
    timestamp: i64,
    value: f64,
    is_nan: bool,
    model_id: Option<String>,
    dataset_name: Option<String>,
    dataset_digest: Option<String>,
}

impl From<MetricRow> for Metric {
    fn from(row: MetricRow) -> Self {
        Metric {
            value: validation::read_metric_value(row.value, row.is_nan),
            key: row.key,
            timestamp: row.timestamp,
            step: row.step,
            model_id: row.model_id,
            dataset_name: row.dataset_name,
            dataset_digest: row.dataset_digest,
            run_id: Some(row.run_uuid),
        }
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
/// the connection it is called on (a statement, or the caller's transaction).
pub(super) trait WriteMetrics {
    async fn write_metrics(
        &mut self,
        run_id: &str,
        metrics: &[Metric],
        repeated: RepeatedPoints,
    ) -> sqlx::Result<()>;
}

/// Postgres: one statement. The points arrive as arrays (UNNEST), the history is a
/// data-modifying CTE, and the run row is locked once (FOR KEY SHARE) instead of by a
/// per-row foreign key on `metrics` (migration 0006): with 1000 points a request those checks
/// were a third of the statement's cost, and skipping repeats (ON CONFLICT) another fifth.
macro_rules! postgres_write_metrics {
    ($on_repeat:literal) => {
        concat!(
            "WITH run AS (SELECT run_uuid FROM runs WHERE run_uuid = $1 FOR KEY SHARE), \
             history AS ( \
               INSERT INTO metrics (run_uuid, key, step, timestamp, value, is_nan, model_id, dataset_name, dataset_digest) \
               SELECT run.run_uuid, p.* FROM run, \
                 UNNEST($2::text[], $3::int8[], $4::int8[], $5::float8[], $6::bool[], $7::text[], $8::text[], $9::text[]) \
                   AS p(key, step, timestamp, value, is_nan, model_id, dataset_name, dataset_digest)",
            $on_repeat,
            ") \
             INSERT INTO latest_metrics (run_uuid, key, step, timestamp, value, is_nan) \
             SELECT run.run_uuid, l.* FROM run, \
               UNNEST($10::text[], $11::int8[], $12::int8[], $13::float8[], $14::bool[]) AS l(key, step, timestamp, value, is_nan) \
             ON CONFLICT (run_uuid, key) DO UPDATE SET step = excluded.step, timestamp = excluded.timestamp, \
               value = excluded.value, is_nan = excluded.is_nan \
             WHERE (excluded.step, excluded.timestamp, excluded.value) > \
                   (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)"
        )
    };
}

impl WriteMetrics for PgConnection {
    async fn write_metrics(
        &mut self,
        run_id: &str,
        metrics: &[Metric],
        repeated: RepeatedPoints,
    ) -> sqlx::Result<()> {
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
        for metric in metrics {
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
        sqlx::query(statement)
            .bind(run_id)
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
            .execute(self)
            .await?;
        Ok(())
    }
}

/// SQLite: multi-row inserts; SQLite writers are serialised, and its foreign key checks are
/// cheap, so repeats are always skipped.
impl WriteMetrics for SqliteConnection {
    async fn write_metrics(
        &mut self,
        run_id: &str,
        metrics: &[Metric],
        _repeated: RepeatedPoints,
    ) -> sqlx::Result<()> {
        let mut insert = SqlBuilder::new(
            "INSERT INTO metrics (run_uuid, key, step, timestamp, value, is_nan, model_id, dataset_name, dataset_digest) VALUES ",
        );
        let optional =
            |value: &Option<String>| value.clone().map_or(SqlValue::Null, SqlValue::Text);
        for (i, metric) in metrics.iter().enumerate() {
            if i > 0 {
                insert.push(", ");
            }
            let (value, is_nan) = validation::stored_metric_value(metric.value);
            insert.bind_list([
                SqlValue::Text(run_id.to_owned()),
                SqlValue::Text(metric.key.clone()),
                SqlValue::Int(metric.step),
                SqlValue::Int(metric.timestamp),
                SqlValue::Float(value),
                SqlValue::Bool(is_nan),
                optional(&metric.model_id),
                optional(&metric.dataset_name),
                optional(&metric.dataset_digest),
            ]);
        }
        insert.push(" ON CONFLICT DO NOTHING");
        bind_values!(sqlx::query(&insert.sql), &insert.values)
            .execute(&mut *self)
            .await?;
        let latest = push_latest_upsert(run_id, &latest_per_key(metrics));
        bind_values!(sqlx::query(&latest.sql), &latest.values)
            .execute(&mut *self)
            .await?;
        Ok(())
    }
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

/// Upsert of the batch's latest points, keeping a stored point that is greater still.
fn push_latest_upsert(run_id: &str, latest: &BTreeMap<&str, LatestPoint>) -> SqlBuilder {
    let mut builder = SqlBuilder::new(
        "INSERT INTO latest_metrics (run_uuid, key, step, timestamp, value, is_nan) VALUES ",
    );
    for (i, (key, point)) in latest.iter().enumerate() {
        if i > 0 {
            builder.push(", ");
        }
        builder.bind_list([
            SqlValue::Text(run_id.to_owned()),
            SqlValue::Text((*key).to_owned()),
            SqlValue::Int(point.step),
            SqlValue::Int(point.timestamp),
            SqlValue::Float(point.value),
            SqlValue::Bool(point.is_nan),
        ]);
    }
    builder.push(
        " ON CONFLICT (run_uuid, key) DO UPDATE SET step = excluded.step, timestamp = excluded.timestamp, \
         value = excluded.value, is_nan = excluded.is_nan \
         WHERE (excluded.step, excluded.timestamp, excluded.value) > \
               (latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)",
    );
    builder
}

const METRIC_COLUMNS: &str = "x.run_uuid, x.key, x.step, x.timestamp, x.value, x.is_nan, x.model_id, x.dataset_name, x.dataset_digest";

impl Store {
    /// One page of a metric's history, ordered by step, timestamp and value.
    /// An unknown key answers an empty page; an unknown run RESOURCE_DOES_NOT_EXIST.
    #[tracing::instrument(name = "store.get_metric_history", skip_all)]
    pub async fn get_metric_history(
        &self,
        run_id: &str,
        key: &str,
        max_results: Option<i64>,
        page_token: &str,
    ) -> Result<Page<Metric>> {
        self.get_run_info(run_id).await?;
        let max_results =
            search::check_max_results(max_results.unwrap_or(MAX_HISTORY_PAGE), i64::MAX)?;
        let keys = [
            SortKey::new("x.step", SortKind::Int, false, false),
            SortKey::new("x.timestamp", SortKind::Int, false, false),
            SortKey::new("x.value", SortKind::Float, false, false),
            SortKey::new(
                "CAST(CASE WHEN x.is_nan THEN 1 ELSE 0 END AS BIGINT)",
                SortKind::Int,
                false,
                false,
            ),
        ];
        let after = search::decode_page_token(page_token, &keys)?;
        let mut builder = SqlBuilder::new(&format!("SELECT {METRIC_COLUMNS}"));
        search::push_sort_columns(&mut builder, &keys);
        builder.push(" FROM metrics x WHERE x.run_uuid = ");
        builder.bind(SqlValue::Text(run_id.to_owned()));
        builder.push(" AND x.key = ");
        builder.bind(SqlValue::Text(key.to_owned()));
        let (rows, next_page_token) = self
            .fetch_page::<MetricRow>(builder, &keys, after.as_deref(), max_results)
            .await?;
        let mut metrics: Vec<Metric> = rows.into_iter().map(Metric::from).collect();
        for metric in &mut metrics {
            metric.run_id = None;
        }
        Ok(Page {
            items: metrics,
            next_page_token,
        })
    }
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
        let upsert = push_latest_upsert("r", &latest);
        assert_eq!(upsert.values.len(), 12, "one row per key");
        assert_eq!(upsert.values[4], SqlValue::Float(7.0));
    }
}
