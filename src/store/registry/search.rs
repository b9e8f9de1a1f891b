//! Registered-model and model-version search with MLflow's filter grammar, keyset-paged.

use super::{
    IS_PROMPT_TAG, MAX_MODEL_VERSIONS_PAGE, MAX_REGISTERED_MODELS_PAGE, MODEL_COLUMNS, ModelRow,
    ModelVersion, ModelVersionSearch, RegisteredModel, RegisteredModelSearch, VERSION_COLUMNS,
    VERSIONS_FROM, VersionRow,
};
use crate::store::filter::{self, Attribute, Clause, Comparator, Key, SearchEntity, Value};
use crate::store::search::{
    self, FilterColumns, KeyValueTable, SortKey, SortKind, SqlBuilder, SqlValue,
};
use crate::store::{Error, Page, Result, Store};

impl Store {
    /// Searches registered models with MLflow's filter grammar; keyset-paged. Prompts (models
    /// tagged `mlflow.prompt.is_prompt=true`) are left out unless the filter asks for them.
    #[tracing::instrument(name = "store.search_registered_models", skip_all)]
    pub async fn search_registered_models(
        &self,
        request: &RegisteredModelSearch,
    ) -> Result<Page<RegisteredModel>> {
        let max_results =
            search::check_max_results(request.max_results, MAX_REGISTERED_MODELS_PAGE)?;
        let clauses = filter::parse_filter(SearchEntity::RegisteredModels, &request.filter)?;
        let mut keys: Vec<SortKey> = Vec::new();
        for order_by in &request.order_by {
            let parsed = filter::parse_order_by(SearchEntity::RegisteredModels, order_by)?;
            let (expr, kind) = match parsed.key {
                Key::Attribute(Attribute::Name) => ("rm.name", SortKind::Text),
                Key::Attribute(Attribute::LastUpdatedTimestamp) => {
                    ("rm.last_updated_time", SortKind::Int)
                }
                Key::Attribute(Attribute::CreationTimestamp) => ("rm.creation_time", SortKind::Int),
                other => {
                    return Err(Error::Invalid(format!(
                        "Invalid order by key '{other:?}' specified. Valid keys are 'name', 'timestamp'"
                    )));
                }
            };
            push_unique_sort_key(&mut keys, expr, kind, !parsed.ascending, &request.order_by)?;
        }
        // Names are unique, so ending on the name makes the order total (keyset paging needs it).
        if !keys.iter().any(|key| key.expr == "rm.name") {
            keys.push(SortKey::new("rm.name", SortKind::Text, false, false));
        }
        let after = search::decode_page_token(&request.page_token, &keys)?;

        let mut builder = SqlBuilder::new(&format!("SELECT {MODEL_COLUMNS}"));
        search::push_sort_columns(&mut builder, &keys);
        builder.push(" FROM registered_models rm WHERE rm.workspace = ");
        builder.bind(SqlValue::Text(self.workspace().to_owned()));
        let (clauses, querying_prompts) = without_prompt_clauses(clauses);
        for clause in &clauses {
            builder.push(" AND ");
            REGISTERED_MODEL_FILTER.push_clause(&mut builder, self.backend(), clause)?;
        }
        if !querying_prompts {
            builder.push(
                " AND NOT EXISTS (SELECT 1 FROM registered_model_tags p \
                 WHERE p.registered_model_id = rm.registered_model_id AND p.key = ",
            );
            builder.bind(SqlValue::Text(IS_PROMPT_TAG.into()));
            builder.push(" AND p.value = ");
            builder.bind(SqlValue::Text("true".into()));
            builder.push(")");
        }
        let (rows, next_page_token) = self
            .fetch_page::<ModelRow>(builder, &keys, after.as_deref(), max_results)
            .await?;
        Ok(Page {
            items: self.registered_models_from(rows).await?,
            next_page_token,
        })
    }

    /// Searches live model versions with MLflow's filter grammar; keyset-paged. Default order
    /// as MLflow's SQL store: `last_updated_timestamp DESC, name ASC, version_number DESC`.
    #[tracing::instrument(name = "store.search_model_versions", skip_all)]
    pub async fn search_model_versions(
        &self,
        request: &ModelVersionSearch,
    ) -> Result<Page<ModelVersion>> {
        let max_results = search::check_max_results(request.max_results, MAX_MODEL_VERSIONS_PAGE)?;
        let clauses = filter::parse_filter(SearchEntity::ModelVersions, &request.filter)?;
        let default_order = [
            "last_updated_timestamp DESC".to_owned(),
            "name ASC".to_owned(),
            "version_number DESC".to_owned(),
        ];
        let order_by: &[String] = if request.order_by.is_empty() {
            &default_order
        } else {
            &request.order_by
        };
        let mut keys: Vec<SortKey> = Vec::new();
        for entry in order_by {
            let parsed = filter::parse_order_by(SearchEntity::ModelVersions, entry)?;
            let (expr, kind) = match parsed.key {
                Key::Attribute(Attribute::Name) => ("rm.name", SortKind::Text),
                Key::Attribute(Attribute::VersionNumber) => ("mv.version", SortKind::Int),
                Key::Attribute(Attribute::CreationTimestamp) => ("mv.creation_time", SortKind::Int),
                Key::Attribute(Attribute::LastUpdatedTimestamp) => {
                    ("mv.last_updated_time", SortKind::Int)
                }
                other => {
                    return Err(Error::Invalid(format!(
                        "Invalid order by key '{other:?}' specified. Valid keys are name, version_number, \
                         creation_timestamp, last_updated_timestamp"
                    )));
                }
            };
            push_unique_sort_key(&mut keys, expr, kind, !parsed.ascending, order_by)?;
        }
        // (name, version) is unique: with both present the order is total.
        if !keys.iter().any(|key| key.expr == "rm.name") {
            keys.push(SortKey::new("rm.name", SortKind::Text, false, false));
        }
        if !keys.iter().any(|key| key.expr == "mv.version") {
            keys.push(SortKey::new("mv.version", SortKind::Int, true, false));
        }
        let after = search::decode_page_token(&request.page_token, &keys)?;

        let mut builder = SqlBuilder::new(&format!("SELECT {VERSION_COLUMNS}"));
        search::push_sort_columns(&mut builder, &keys);
        builder.push(VERSIONS_FROM);
        builder.push(" WHERE mv.deleted_time IS NULL AND rm.workspace = ");
        builder.bind(SqlValue::Text(self.workspace().to_owned()));
        let (clauses, querying_prompts) = without_prompt_clauses(clauses);
        for clause in &clauses {
            builder.push(" AND ");
            MODEL_VERSION_FILTER.push_clause(&mut builder, self.backend(), clause)?;
        }
        if !querying_prompts {
            // As MLflow: a model any of whose versions is tagged as a prompt is a prompt.
            builder.push(
                " AND NOT EXISTS (SELECT 1 FROM model_version_tags p \
                 WHERE p.registered_model_id = mv.registered_model_id AND p.key = ",
            );
            builder.bind(SqlValue::Text(IS_PROMPT_TAG.into()));
            builder.push(" AND p.value = ");
            builder.bind(SqlValue::Text("true".into()));
            builder.push(")");
        }
        let (rows, next_page_token) = self
            .fetch_page::<VersionRow>(builder, &keys, after.as_deref(), max_results)
            .await?;
        Ok(Page {
            items: self.model_versions_from(rows).await?,
            next_page_token,
        })
    }
}

/// What registered-model filters compare.
const REGISTERED_MODEL_FILTER: FilterColumns = FilterColumns {
    entity: "registered models",
    attributes: &[(Attribute::Name, "rm.name", false)],
    tags: Some(KeyValueTable::new(
        "SELECT 1 FROM registered_model_tags t WHERE t.registered_model_id = rm.registered_model_id AND t.key = ",
        "t.value",
    )),
    params: None,
};

/// What model-version filters compare.
const MODEL_VERSION_FILTER: FilterColumns = FilterColumns {
    entity: "model versions",
    attributes: &[
        (Attribute::Name, "rm.name", false),
        (Attribute::RunId, "mv.run_id", false),
        (Attribute::SourcePath, "mv.source", false),
        (Attribute::VersionNumber, "mv.version", true),
    ],
    tags: Some(KeyValueTable::new(
        "SELECT 1 FROM model_version_tags t WHERE t.registered_model_id = mv.registered_model_id \
         AND t.version = mv.version AND t.key = ",
        "t.value",
    )),
    params: None,
};

/// Appends a sort key, refusing a field given twice as MLflow does.
fn push_unique_sort_key(
    keys: &mut Vec<SortKey>,
    expr: &str,
    kind: SortKind,
    descending: bool,
    order_by: &[String],
) -> Result<()> {
    if keys.iter().any(|key| key.expr == expr) {
        return Err(Error::Invalid(format!(
            "`order_by` contains duplicate fields: {order_by:?}"
        )));
    }
    keys.push(SortKey::new(expr, kind, descending, false));
    Ok(())
}

/// Splits off the clauses on the prompt tag. MLflow (`_is_querying_prompt`) looks at the first
/// such clause: `= 'true'` or `!= 'false'` asks for prompts, and then every clause stays an
/// ordinary tag clause. Otherwise all prompt-tag clauses go and prompts are excluded instead —
/// which is how models *without* the tag satisfy ``tag.`mlflow.prompt.is_prompt` != 'true'``,
/// the clause the client appends to every search.
fn without_prompt_clauses(clauses: Vec<Clause>) -> (Vec<Clause>, bool) {
    let is_prompt_clause =
        |clause: &Clause| matches!(&clause.key, Key::Tag(key) if key == IS_PROMPT_TAG);
    let querying_prompts = clauses
        .iter()
        .find(|clause| is_prompt_clause(clause))
        .is_some_and(|clause| match (&clause.op, &clause.value) {
            (Comparator::Eq, Value::String(value)) => value.eq_ignore_ascii_case("true"),
            (Comparator::Ne, Value::String(value)) => value.eq_ignore_ascii_case("false"),
            _ => false,
        });
    if querying_prompts {
        return (clauses, true);
    }
    (
        clauses
            .into_iter()
            .filter(|clause| !is_prompt_clause(clause))
            .collect(),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_clauses_exclude_prompts_unless_asked_for() {
        let parse = |text| filter::parse_filter(SearchEntity::RegisteredModels, text).unwrap();
        let (kept, querying) = without_prompt_clauses(parse(
            "name = 'a' AND tag.`mlflow.prompt.is_prompt` != 'true'",
        ));
        assert_eq!((kept.len(), querying), (1, false));
        let (kept, querying) =
            without_prompt_clauses(parse("tags.`mlflow.prompt.is_prompt` = 'TRUE'"));
        assert_eq!((kept.len(), querying), (1, true));
        let (kept, querying) = without_prompt_clauses(parse("tags.x = 'y'"));
        assert_eq!((kept.len(), querying), (1, false));
    }
}
