//! Planner statistics that keep up with bulk writes (Postgres).
//!
//! Postgres plans every search from the statistics `ANALYZE` last gathered for each table, and
//! autovacuum refreshes them at most once per `autovacuum_naptime` (a minute by default). A table
//! analyzed while small — `latest_metrics` holding the few keys of some training runs, `runs`
//! holding a few runs of other experiments — and then grown fifty-fold by a sweep keeps, for up
//! to that minute, statistics in which the sweep's experiment, metric keys and param values do
//! not exist. The planner then estimates that each of them matches one row and picks nested
//! loops that rescan an index range per run: a search that takes 40 ms on fresh statistics took
//! over a second (issue #11), until autovacuum came by.
//!
//! So the server checks every [`CHECK_INTERVAL`] how many rows of each searched table changed
//! since it was last analyzed (by anyone: `pg_stat_user_tables.n_mod_since_analyze`), and
//! analyzes the tables that changed by more than [`CHANGED_ROWS_BASE`] rows plus
//! [`CHANGED_FRACTION`] of their size, autovacuum's own rule with a tighter clock. Cheap: one
//! catalog read per interval while nothing changes, and one ANALYZE of a few thousand sampled
//! rows per grown table. `SKIP_LOCKED` leaves a table alone while another server (or
//! autovacuum) analyzes it.

use std::time::Duration;

use super::{Pool, Result, Store};

/// How often the server looks for tables whose statistics fell behind.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Rows that may change before a table is analyzed again, besides [`CHANGED_FRACTION`] of it.
const CHANGED_ROWS_BASE: i64 = 200;

/// Fraction of a table's rows (as of its last analysis) that may change before it is analyzed again.
const CHANGED_FRACTION: f64 = 0.2;

/// The tables whose statistics the search queries' plans depend on. `metrics` is not among
/// them: searches reach it only through its primary key or `metrics_model_id`, whatever its
/// statistics say, and analyzing millions of points every second of a bulk load would cost
/// more than it brings; autovacuum keeps it.
const SEARCHED_TABLES: &[&str] = &[
    "experiments",
    "experiment_tags",
    "runs",
    "params",
    "tags",
    "latest_metrics",
    "run_inputs",
    "datasets",
    "registered_models",
    "registered_model_tags",
    "model_versions",
    "model_version_tags",
    "logged_models",
    "logged_model_params",
    "logged_model_tags",
];

impl Store {
    /// Analyzes the searched tables that changed a lot since their last analysis, and returns
    /// their names. Only tables the connected role owns are considered (ANALYZE skips others).
    /// Nothing to do on SQLite, whose planner does not rely on gathered statistics unless one
    /// runs ANALYZE by hand.
    #[tracing::instrument(name = "store.refresh_statistics", skip_all)]
    pub async fn refresh_statistics(&self) -> Result<Vec<String>> {
        let Pool::Postgres(pool) = &self.pool else {
            return Ok(Vec::new());
        };
        let stale: Vec<String> = sqlx::query_scalar(
            "SELECT s.relname::TEXT FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
             WHERE s.schemaname = current_schema() AND s.relname = ANY($1) \
             AND pg_has_role(c.relowner, 'USAGE') \
             AND s.n_mod_since_analyze > $2 + $3 * GREATEST(c.reltuples, 0) \
             ORDER BY s.relname",
        )
        .bind(SEARCHED_TABLES)
        .bind(CHANGED_ROWS_BASE)
        .bind(CHANGED_FRACTION)
        .fetch_all(pool)
        .await?;
        if stale.is_empty() {
            return Ok(stale);
        }
        // Names come from the fixed list above (matched by the catalog), quoted all the same.
        let tables: Vec<String> = stale.iter().map(|t| format!("\"{t}\"")).collect();
        sqlx::query(&format!("ANALYZE (SKIP_LOCKED) {}", tables.join(", ")))
            .execute(pool)
            .await?;
        Ok(stale)
    }

    /// Runs [`Self::refresh_statistics`] every [`CHECK_INTERVAL`] until the pool closes; returns
    /// at once on SQLite. A failed round is logged and retried at the next tick.
    pub async fn keep_statistics_fresh(self) {
        if !matches!(self.pool, Pool::Postgres(_)) {
            return;
        }
        let mut ticks = tokio::time::interval(CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if self.is_closed() {
                return;
            }
            match self.refresh_statistics().await {
                Ok(tables) if !tables.is_empty() => {
                    tracing::debug!(
                        ?tables,
                        "analyzed tables that grew since their last analysis"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "refreshing planner statistics failed"),
            }
        }
    }
}
