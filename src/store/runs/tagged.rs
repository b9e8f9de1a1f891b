//! Runs the operator keys by a tag (a ProjectRun's UID), and ending a run only while it is
//! still running: the runner inside the Pod ends the run itself when it can, and the operator's
//! later write must never replace the status it chose.

use crate::store::{Result, Store, with_pool};

use super::{RUN_COLUMNS, RunInfo};

/// Statuses a run never leaves once it has one of them.
pub const TERMINAL_RUN_STATUSES: [&str; 3] = ["FINISHED", "FAILED", "KILLED"];

impl Store {
    /// The oldest run of `experiment_id` (active or deleted) tagged `key` = `value`, if any.
    #[tracing::instrument(name = "store.find_run_by_tag", skip_all)]
    pub async fn find_run_by_tag(
        &self,
        experiment_id: i64,
        key: &str,
        value: &str,
    ) -> Result<Option<RunInfo>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid \
             WHERE r.experiment_id = $1 AND t.key = $2 AND t.value = $3 \
             AND r.experiment_id IN (SELECT e.experiment_id FROM experiments e WHERE e.workspace = $4) \
             ORDER BY r.start_time, r.run_uuid LIMIT 1"
        );
        Ok(with_pool!(self, pool => sqlx::query_as::<_, RunInfo>(&sql)
            .bind(experiment_id)
            .bind(key)
            .bind(value)
            .bind(self.workspace())
            .fetch_optional(pool)
            .await)?)
    }

    /// Sets `status` and `end_time` on the run unless it already ended (FINISHED, FAILED or
    /// KILLED); true when this call ended it. One statement, so a runner ending the run at the
    /// same moment keeps its status.
    #[tracing::instrument(name = "store.end_run_if_unfinished", skip_all)]
    pub async fn end_run_if_unfinished(
        &self,
        run_id: &str,
        status: &str,
        end_time: i64,
    ) -> Result<bool> {
        let [finished, failed, killed] = TERMINAL_RUN_STATUSES;
        let updated = with_pool!(self, pool => sqlx::query(
            "UPDATE runs SET status = $1, end_time = $2 \
             WHERE run_uuid = $3 AND status NOT IN ($4, $5, $6) \
             AND experiment_id IN (SELECT e.experiment_id FROM experiments e WHERE e.workspace = $7)")
            .bind(status)
            .bind(end_time)
            .bind(run_id)
            .bind(finished)
            .bind(failed)
            .bind(killed)
            .bind(self.workspace())
            .execute(pool)
            .await
            .map(|result| result.rows_affected()))?;
        Ok(updated > 0)
    }
}
