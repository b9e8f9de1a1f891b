//! The step-sampled metric history the web UI's charts read (`get-history-bulk-interval`),
//! sampled exactly as MLflow 3.17's SQL store does: per run, the ordered points are cut into
//! `max_results` equal tiles (`NTILE`), the first point of each tile is kept, and the run's
//! last point is always included (replacing the final sample when the answer is full). The
//! sampling is by point, not by distinct step, so a run that logged many values at one step
//! still answers at most `max_results` points.

use std::collections::HashMap;

use super::runs::Metric;
use super::search::{SqlBuilder, SqlValue, bind_values};
use super::{Error, Result, Store, validation, with_pool};

/// Most runs one bulk-interval request may name (MLflow's `MAX_RUNS_GET_METRIC_HISTORY_BULK`).
pub const MAX_BULK_RUNS: usize = 100;
/// Most points one bulk-interval request returns per run (MLflow's `MAX_RESULTS_PER_RUN`).
pub const MAX_BULK_POINTS: i64 = 2500;

#[derive(sqlx::FromRow)]
struct SampledRow {
    run_uuid: String,
    step: i64,
    timestamp: i64,
    value: f64,
    is_nan: bool,
    /// The first point of its tile.
    tile_start: bool,
    /// The run's last point.
    is_last: bool,
}

impl Store {
    /// For each run (in the order given, repeats included), up to `max_results` points of `key`
    /// within `[start_step, end_step]` (both or neither), sampled as MLflow samples them.
    #[tracing::instrument(name = "store.sample_metric_history", skip_all)]
    pub async fn sample_metric_history(
        &self,
        run_ids: &[String],
        key: &str,
        start_step: Option<i64>,
        end_step: Option<i64>,
        max_results: i64,
    ) -> Result<Vec<Metric>> {
        if run_ids.is_empty() || run_ids.len() > MAX_BULK_RUNS {
            return Err(Error::Invalid(format!(
                "GetMetricHistoryBulkInterval request must specify at most {MAX_BULK_RUNS} run_ids. Received {} run_ids. See the API docs for more information about request parameters.",
                run_ids.len()
            )));
        }
        if !(1..=MAX_BULK_POINTS).contains(&max_results) {
            return Err(Error::Invalid(format!(
                "max_results must be between 1 and {MAX_BULK_POINTS}. See the API docs for more information about request parameters."
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
        // Each run's points are numbered in the metrics primary key's order (run_uuid, key, step,
        // timestamp, value, is_nan), which the index scan already yields: one window over the
        // whole run (ordinal and count in one pass) and no sort. NTILE's tiles follow from the
        // run's count n: the first n % max_results tiles hold n / max_results + 1 points, the
        // others n / max_results, so whether a point starts a tile is arithmetic on its ordinal;
        // the last point is the one at ordinal n - 1.
        let tiles = max_results;
        let mut builder = SqlBuilder::new(&format!(
            "SELECT run_uuid, step, timestamp, value, is_nan, tile_start, ordinal = run_points - 1 AS is_last \
             FROM (SELECT run_uuid, step, timestamp, value, is_nan, ordinal, run_points, \
             CASE WHEN ordinal < (run_points % {tiles}) * (run_points / {tiles} + 1) \
             THEN ordinal % (run_points / {tiles} + 1) = 0 \
             ELSE (ordinal - (run_points % {tiles}) * (run_points / {tiles} + 1)) % (run_points / {tiles}) = 0 \
             END AS tile_start FROM (\
             SELECT run_uuid, step, timestamp, value, is_nan, \
             ROW_NUMBER() OVER run_order - 1 AS ordinal, COUNT(*) OVER run_order AS run_points \
             FROM metrics WHERE key = "
        ));
        builder.bind(SqlValue::Text(key.to_owned()));
        builder.push(" AND run_uuid IN ");
        builder.bind_list(run_ids.iter().cloned().map(SqlValue::Text));
        if let Some((start, end)) = range {
            builder.push(" AND step >= ");
            builder.bind(SqlValue::Int(start));
            builder.push(" AND step <= ");
            builder.bind(SqlValue::Int(end));
        }
        builder.push(
            " WINDOW run_order AS (PARTITION BY run_uuid ORDER BY step, timestamp, value, is_nan \
             ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)) numbered) flagged \
             WHERE (tile_start OR ordinal = run_points - 1)",
        );
        // The runs' workspace is checked after the numbering: a run outside it drops out whole,
        // and the numbering's scan stays one ordered range per run of the primary key.
        builder.push(" AND run_uuid IN (SELECT r.run_uuid FROM runs r WHERE r.run_uuid IN ");
        builder.bind_list(run_ids.iter().cloned().map(SqlValue::Text));
        builder.push(" AND ");
        builder.push_experiment_in_workspace("r.experiment_id", self.workspace());
        builder.push(") ORDER BY run_uuid, ordinal");
        let rows: Vec<SampledRow> = with_pool!(self, pool =>
            bind_values!(sqlx::query_as::<_, SampledRow>(&builder.sql), &builder.values).fetch_all(pool).await)?;

        let mut per_run: HashMap<&str, Vec<&SampledRow>> = HashMap::new();
        for row in &rows {
            per_run.entry(row.run_uuid.as_str()).or_default().push(row);
        }
        let limit = usize::try_from(max_results).unwrap_or(usize::MAX);
        let mut points = Vec::new();
        for run_id in run_ids {
            let Some(run_rows) = per_run.get(run_id.as_str()) else {
                continue;
            };
            for row in sample_with_last(run_rows, limit) {
                points.push(Metric {
                    value: validation::read_metric_value(row.value, row.is_nan),
                    run_id: Some(run_id.clone()),
                    ..Metric::new(key, 0.0, row.timestamp, row.step)
                });
            }
        }
        Ok(points)
    }
}

/// The tiles' first points, then the run's last point unless it already closes the sample:
/// appended while there is room, else in place of the final sample (MLflow's rule).
fn sample_with_last<'a>(rows: &[&'a SampledRow], limit: usize) -> Vec<&'a SampledRow> {
    let mut sampled: Vec<&SampledRow> = rows.iter().copied().filter(|row| row.tile_start).collect();
    let last = rows.iter().copied().find(|row| row.is_last);
    if let Some(last) = last {
        let closes = sampled
            .last()
            .is_some_and(|final_sample| final_sample.is_last);
        if !closes {
            if sampled.len() >= limit {
                sampled.pop();
            }
            sampled.push(last);
        }
    }
    sampled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: i64, tile_start: bool, is_last: bool) -> SampledRow {
        SampledRow {
            run_uuid: "r".into(),
            step,
            timestamp: 0,
            value: 0.0,
            is_nan: false,
            tile_start,
            is_last,
        }
    }

    fn steps(rows: &[SampledRow], limit: usize) -> Vec<i64> {
        let refs: Vec<&SampledRow> = rows.iter().collect();
        sample_with_last(&refs, limit)
            .iter()
            .map(|row| row.step)
            .collect()
    }

    #[test]
    fn the_last_point_replaces_the_final_sample_when_full() {
        // 10 points in 3 tiles of 4, 3, 3: first points 0, 4, 7; last point 9.
        let rows = [
            row(0, true, false),
            row(4, true, false),
            row(7, true, false),
            row(9, false, true),
        ];
        assert_eq!(steps(&rows, 3), vec![0, 4, 9]);
    }

    #[test]
    fn the_last_point_is_not_repeated() {
        let rows = [row(0, true, false), row(1, true, true)];
        assert_eq!(steps(&rows, 5), vec![0, 1]);
    }

    #[test]
    fn one_point_asked_answers_the_last() {
        let rows = [row(0, true, false), row(4, false, true)];
        assert_eq!(steps(&rows, 1), vec![4]);
    }
}
