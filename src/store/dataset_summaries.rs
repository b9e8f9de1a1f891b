//! The experiment page's dataset filter (`experiments/search-datasets`): which datasets the
//! runs of some experiments took as inputs, with the context each was used in.

use super::search::{SqlBuilder, SqlValue, bind_values};
use super::{Error, Result, Store, with_pool};

/// Most experiments one request may name (MLflow's `MAX_EXPERIMENT_IDS_PER_REQUEST`).
pub const MAX_EXPERIMENTS: usize = 20;
/// Most summaries one answer holds (MLflow's `MAX_DATASET_SUMMARIES_RESULTS`).
const MAX_SUMMARIES: i64 = 1000;
/// The input tag naming the context a dataset was used in (`training`, `eval`, …).
const CONTEXT_TAG: &str = "mlflow.data.context";

/// One distinct (experiment, dataset, context) a run used.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DatasetSummary {
    pub experiment_id: i64,
    pub name: String,
    pub digest: String,
    pub context: Option<String>,
}

impl Store {
    /// The distinct datasets runs of `experiment_ids` used, with their context tag.
    #[tracing::instrument(name = "store.search_dataset_summaries", skip_all)]
    pub async fn search_dataset_summaries(
        &self,
        experiment_ids: &[i64],
    ) -> Result<Vec<DatasetSummary>> {
        if experiment_ids.is_empty() {
            return Err(Error::Invalid(
                "SearchDatasets request must specify at least one experiment_id.".into(),
            ));
        }
        if experiment_ids.len() > MAX_EXPERIMENTS {
            return Err(Error::Invalid(format!(
                "SearchDatasets request cannot specify more than {MAX_EXPERIMENTS} experiment_ids. Received {} experiment_ids.",
                experiment_ids.len()
            )));
        }
        let mut builder = SqlBuilder::new(
            "SELECT DISTINCT d.experiment_id, d.name, d.digest, t.value AS context \
             FROM datasets d JOIN run_inputs i ON i.dataset_uuid = d.dataset_uuid \
             LEFT JOIN run_input_tags t ON t.run_uuid = i.run_uuid \
             AND t.dataset_uuid = i.dataset_uuid AND t.key = ",
        );
        builder.bind(SqlValue::Text(CONTEXT_TAG.into()));
        builder.push(" WHERE d.experiment_id IN ");
        builder.bind_list(experiment_ids.iter().copied().map(SqlValue::Int));
        builder.push(" AND ");
        builder.push_experiment_in_workspace("d.experiment_id", self.workspace());
        builder.push(" ORDER BY d.experiment_id, d.name, d.digest, context LIMIT ");
        builder.bind(SqlValue::Int(MAX_SUMMARIES));
        Ok(with_pool!(self, pool =>
            bind_values!(sqlx::query_as::<_, DatasetSummary>(&builder.sql), &builder.values).fetch_all(pool).await)?)
    }
}
