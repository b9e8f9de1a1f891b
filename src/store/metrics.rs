//! Metric history: paged per run and key, and MLflow's step-sampled bulk read for charts.

use super::runs::Metric;
use super::search::{self, SortKey, SortKind, SqlBuilder, SqlValue, bind_values};
use super::{Error, Page, Result, Store, validation, with_pool};

/// Largest page of metric history (MLflow's client asks for 25000 at a time).
pub const MAX_HISTORY_PAGE: i64 = 25_000;
/// Most runs one bulk-interval request may name.
pub const MAX_BULK_RUNS: usize = 100;
/// Most steps one bulk-interval request samples per run.
pub const MAX_BULK_STEPS: i64 = 2500;

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

const METRIC_COLUMNS: &str = "x.run_uuid, x.key, x.step, x.timestamp, x.value, x.is_nan, x.model_id, x.dataset_name, x.dataset_digest";

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

    /// For each run, the points of `key` at up to `max_results` steps of `[start_step, end_step]`,
    /// sampled evenly and always keeping the first and last step (MLflow's chart sampling).
    pub async fn get_metric_history_bulk_interval(
        &self,
        run_ids: &[String],
        key: &str,
        start_step: Option<i64>,
        end_step: Option<i64>,
        max_results: i64,
    ) -> Result<Vec<Metric>> {
        if run_ids.is_empty() || run_ids.len() > MAX_BULK_RUNS {
            return Err(Error::Invalid(format!(
                "GetMetricHistoryBulkInterval request must specify between 1 and {MAX_BULK_RUNS} run_ids. Received {} run_ids.",
                run_ids.len()
            )));
        }
        if !(1..=MAX_BULK_STEPS).contains(&max_results) {
            return Err(Error::Invalid(format!(
                "max_results must be between 1 and {MAX_BULK_STEPS}. Received {max_results}."
            )));
        }
        let range = match (start_step, end_step) {
            (Some(start), Some(end)) if start <= end => Some((start, end)),
            (None, None) => None,
            (Some(start), Some(end)) => {
                return Err(Error::Invalid(format!(
                    "end_step must be greater than start_step. Found start_step={start} and end_step={end}."
                )));
            }
            _ => {
                return Err(Error::Invalid(
                    "If either start step or end step are specified, both must be specified."
                        .into(),
                ));
            }
        };
        let mut points = Vec::new();
        for run_id in run_ids {
            let mut steps_sql =
                SqlBuilder::new("SELECT DISTINCT step FROM metrics WHERE run_uuid = ");
            steps_sql.bind(SqlValue::Text(run_id.clone()));
            steps_sql.push(" AND key = ");
            steps_sql.bind(SqlValue::Text(key.to_owned()));
            if let Some((start, end)) = range {
                steps_sql.push(" AND step >= ");
                steps_sql.bind(SqlValue::Int(start));
                steps_sql.push(" AND step <= ");
                steps_sql.bind(SqlValue::Int(end));
            }
            steps_sql.push(" ORDER BY step");
            let steps: Vec<i64> = with_pool!(self, pool =>
                bind_values!(sqlx::query_scalar::<_, i64>(&steps_sql.sql), &steps_sql.values).fetch_all(pool).await)?;
            let sampled = sample_steps(&steps, max_results);
            if sampled.is_empty() {
                continue;
            }
            let mut builder = SqlBuilder::new(&format!(
                "SELECT {METRIC_COLUMNS} FROM metrics x WHERE x.run_uuid = "
            ));
            builder.bind(SqlValue::Text(run_id.clone()));
            builder.push(" AND x.key = ");
            builder.bind(SqlValue::Text(key.to_owned()));
            builder.push(" AND x.step IN ");
            builder.bind_list(sampled.into_iter().map(SqlValue::Int));
            builder.push(" ORDER BY x.step, x.timestamp, x.value");
            let rows = with_pool!(self, pool =>
                bind_values!(sqlx::query_as::<_, MetricRow>(&builder.sql), &builder.values).fetch_all(pool).await)?;
            points.extend(rows.into_iter().map(Metric::from));
        }
        Ok(points)
    }
}

/// Up to `max` steps spread evenly over `steps` (sorted), keeping the first and the last.
fn sample_steps(steps: &[i64], max: i64) -> Vec<i64> {
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    if steps.len() <= max {
        return steps.to_vec();
    }
    if max <= 1 {
        return steps.first().copied().into_iter().collect();
    }
    let last = steps.len() - 1;
    let mut sampled: Vec<i64> = (0..max).map(|i| steps[i * last / (max - 1)]).collect();
    sampled.dedup();
    sampled
}

#[cfg(test)]
mod tests {
    use super::sample_steps;

    #[test]
    fn sampling_keeps_first_and_last_and_respects_the_limit() {
        let steps: Vec<i64> = (0..1000).collect();
        let sampled = sample_steps(&steps, 10);
        assert_eq!(sampled.len(), 10);
        assert_eq!(sampled.first(), Some(&0));
        assert_eq!(sampled.last(), Some(&999));
        assert_eq!(sample_steps(&[1, 2, 3], 10), vec![1, 2, 3]);
    }
}
