//! Run search: MLflow's filter grammar over runs, keyset-paged, with a fast path for ordering
//! by a metric, param or tag.

use crate::store::filter::{
    self, Attribute, Clause, Comparator, DatasetField, Key, OrderBy, SearchEntity,
};
use crate::store::search::{
    self, FilterColumns, IndexedLookup, KeyValueTable, SortKey, SortKind, SqlBuilder, SqlValue,
    TokenValue, bind_values, push_comparison,
};
use crate::store::{Error, Page, Pool, Result, Store};

use super::{MAX_RUNS_PAGE, RUN_COLUMNS, Run, RunInfo, RunSearch};

impl Store {
    /// Searches runs of the given experiments; keyset-paged. Default order: start_time DESC, then run id.
    ///
    /// When the first order_by key is a metric, param or tag, the runs that have it (and, for
    /// a metric, a value other than NaN) sort before all others. So a page that begins among
    /// them is first asked of those runs alone, ordered by the plain value: the (key, value)
    /// index can be walked in order and stop after one page, instead of joining and sorting
    /// every run of the experiment (on SQLite [`Store::present_join`] decides). Only when that
    /// yields less than a full page (the end of those runs is near, or a bounded walk found too
    /// few) does the general query run.
    #[tracing::instrument(name = "store.search_runs", skip_all)]
    pub async fn search_runs(&self, request: &RunSearch) -> Result<Page<Run>> {
        let max_results = search::check_max_results(request.max_results, MAX_RUNS_PAGE)?;
        if request.experiment_ids.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next_page_token: None,
            });
        }
        let clauses = filter::parse_filter(SearchEntity::Runs, &request.filter)?;
        let order_by = request
            .order_by
            .iter()
            .map(|order_by| filter::parse_order_by(SearchEntity::Runs, order_by))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let first_join = self
            .present_join(order_by.first(), &request.experiment_ids, max_results)
            .await?;
        let mut joins = SqlBuilder::new("runs r");
        let mut keys = Vec::new();
        // How many general keys the first order_by entry has, when it can take the fast path.
        let mut first_group = None;
        for (i, parsed) in order_by.iter().enumerate() {
            let general = run_sort_keys(
                &mut joins,
                i,
                &parsed.key,
                !parsed.ascending,
                &OrderJoin::All,
            )?;
            if i == 0 && matches!(parsed.key, Key::Metric(_) | Key::Param(_) | Key::Tag(_)) {
                first_group = Some(general.len());
            }
            keys.extend(general);
        }
        push_tie_breakers(&mut keys);
        let after = search::decode_page_token(&request.page_token, &keys)?;

        if let Some(group) = first_group {
            // The token's position in the general order, restated in the present-only order:
            // only when it lies among runs that have the first key.
            let present_after = match after.as_deref() {
                None => Some(None),
                Some(after) => present_position(after, group).map(Some),
            };
            if let Some(present_after) = present_after {
                let first_join = match first_join {
                    PresentJoin::Planner => OrderJoin::Present,
                    PresentJoin::FromRuns => OrderJoin::PresentFromRuns,
                    PresentJoin::Walk => OrderJoin::Walk(Walk {
                        start: present_after.as_deref().and_then(<[_]>::first),
                        entries: max_results
                            .saturating_add(1)
                            .saturating_mul(WALK_ENTRIES_PER_PAGE_ROW),
                    }),
                };
                let mut present_joins = SqlBuilder::new(match first_join {
                    OrderJoin::Walk(_) => "",
                    _ => "runs r",
                });
                let mut present_keys = Vec::new();
                for (i, parsed) in order_by.iter().enumerate() {
                    let join = if i == 0 { &first_join } else { &OrderJoin::All };
                    present_keys.extend(run_sort_keys(
                        &mut present_joins,
                        i,
                        &parsed.key,
                        !parsed.ascending,
                        join,
                    )?);
                }
                push_tie_breakers(&mut present_keys);
                let builder = self.run_search_query(request, &clauses, present_joins, &keys)?;
                let (infos, next_page_token) = self
                    .fetch_page_ordered::<RunInfo>(
                        builder,
                        &present_keys,
                        present_after.as_deref(),
                        &keys,
                        max_results,
                    )
                    .await?;
                // A next page means a full page, all of it before any run without the key.
                if next_page_token.is_some() {
                    return Ok(Page {
                        items: self.load_runs(infos).await?,
                        next_page_token,
                    });
                }
            }
        }

        let builder = self.run_search_query(request, &clauses, joins, &keys)?;
        let (infos, next_page_token) = self
            .fetch_page_ordered::<RunInfo>(builder, &keys, after.as_deref(), &keys, max_results)
            .await?;
        Ok(Page {
            items: self.load_runs(infos).await?,
            next_page_token,
        })
    }

    /// How the fast path joins the first order key's table. Postgres plans it from its
    /// statistics. On SQLite the join order is chosen here, from a bounded count (at most
    /// [`RUNS_DRIVE_PER_PAGE_ROW`] index entries per row of the page): a small experiment's runs
    /// drive, a larger one walks the key's (key, value) index in order.
    ///
    /// SQLite's own choice depends on whether the file was ever ANALYZEd: without statistics
    /// it always walks the key, which for a small experiment beside a large one crosses the
    /// other's rows first (10 runs beside 10,000: 6.5 ms instead of 0.05); with them it
    /// estimates both sides alike and drives from the experiment's runs, probing and sorting
    /// every one of them for one page (the benchmark's `metrics.accuracy > 0.5` ordered by
    /// `metrics.loss`, 10,000 runs: 21 ms of SQL for a page of 100 instead of 3).
    async fn present_join(
        &self,
        first: Option<&OrderBy>,
        experiment_ids: &[i64],
        max_results: i64,
    ) -> Result<PresentJoin> {
        let keyed = first
            .is_some_and(|first| matches!(first.key, Key::Metric(_) | Key::Param(_) | Key::Tag(_)));
        let (true, Pool::Sqlite(pool)) = (keyed, &self.pool) else {
            return Ok(PresentJoin::Planner);
        };
        let bound = max_results
            .saturating_add(1)
            .saturating_mul(RUNS_DRIVE_PER_PAGE_ROW);
        let mut builder =
            SqlBuilder::new("SELECT count(*) FROM (SELECT 1 FROM runs WHERE experiment_id IN ");
        builder.bind_list(experiment_ids.iter().map(|id| SqlValue::Int(*id)));
        builder.push(" LIMIT ");
        builder.bind(SqlValue::Int(bound));
        builder.push(")");
        let runs: i64 = bind_values!(sqlx::query_scalar(&builder.sql), &builder.values)
            .fetch_one(pool)
            .await?;
        Ok(if runs < bound {
            PresentJoin::FromRuns
        } else {
            PresentJoin::Walk
        })
    }

    /// `SELECT <run columns>, <sort columns of keys> FROM <from> WHERE <filter>`, where `from`
    /// is the FROM list (`runs r` and the order keys' joins).
    fn run_search_query(
        &self,
        request: &RunSearch,
        clauses: &[Clause],
        from: SqlBuilder,
        keys: &[SortKey],
    ) -> Result<SqlBuilder> {
        // The FROM list's binds come first, so the builder continues their numbering.
        let mut builder = SqlBuilder {
            sql: format!("SELECT {RUN_COLUMNS}"),
            values: from.values,
        };
        search::push_sort_columns(&mut builder, keys);
        builder.push(" FROM ");
        builder.push(&from.sql);
        builder.push(" WHERE r.experiment_id IN ");
        builder.bind_list(request.experiment_ids.iter().map(|id| SqlValue::Int(*id)));
        builder.push(" AND ");
        builder.push_experiment_in_workspace("r.experiment_id", self.workspace());
        builder.push(" AND r.lifecycle_stage IN ");
        builder.bind_list(
            request
                .view_type
                .stages()
                .iter()
                .map(|s| SqlValue::Text((*s).to_owned())),
        );
        for clause in clauses {
            builder.push(" AND ");
            self.push_run_clause(&mut builder, clause)?;
        }
        Ok(builder)
    }

    fn push_run_clause(&self, builder: &mut SqlBuilder, clause: &Clause) -> Result<()> {
        let backend = self.backend();
        match &clause.key {
            Key::Metric(key) => {
                // As in MLflow, a NaN value satisfies `!=` and no other comparison.
                builder.push("EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_uuid = r.run_uuid AND m.key = ");
                builder.bind(SqlValue::Text(key.clone()));
                builder.push(" AND (");
                push_comparison(builder, backend, "m.value", clause, false)?;
                builder.push(if clause.op == Comparator::Ne {
                    " OR m.is_nan))"
                } else {
                    " AND NOT m.is_nan))"
                });
                Ok(())
            }
            Key::Dataset(field) => {
                builder.push(
                    "EXISTS (SELECT 1 FROM run_inputs i JOIN datasets d ON d.dataset_uuid = i.dataset_uuid \
                     WHERE i.run_uuid = r.run_uuid AND ",
                );
                match field {
                    DatasetField::Name => {
                        push_comparison(builder, backend, "d.name", clause, false)?
                    }
                    DatasetField::Digest => {
                        push_comparison(builder, backend, "d.digest", clause, false)?
                    }
                    DatasetField::Context => {
                        builder.push(
                            "EXISTS (SELECT 1 FROM run_input_tags it WHERE it.run_uuid = i.run_uuid \
                             AND it.dataset_uuid = i.dataset_uuid AND it.key = 'mlflow.data.context' AND ",
                        );
                        push_comparison(builder, backend, "it.value", clause, false)?;
                        builder.push(")");
                    }
                }
                builder.push(")");
                Ok(())
            }
            Key::Param(_) | Key::Tag(_) | Key::Attribute(_) => {
                RUN_FILTER.push_clause(builder, backend, clause)
            }
        }
    }
}

/// A page token's position (general keys, the first `group` of them for the first order_by
/// entry) restated for the present-only keys of [`run_sort_keys`], or `None` when it lies
/// among runs without the first key (a metric's rank 1 or 2, a NULL param or tag).
fn present_position(after: &[TokenValue], group: usize) -> Option<Vec<TokenValue>> {
    match (group, after) {
        // a metric: rank 0 (a number), then the value
        (2, [TokenValue::Int(0), value, rest @ ..]) if *value != TokenValue::Null => Some(
            std::iter::once(value.clone())
                .chain(rest.iter().cloned())
                .collect(),
        ),
        // a param or tag: the value
        (1, [value, ..]) if *value != TokenValue::Null => Some(after.to_vec()),
        _ => None,
    }
}

/// What run filters compare (metrics and dataset fields are written by `push_run_clause`).
const RUN_FILTER: FilterColumns = FilterColumns {
    entity: "runs",
    attributes: &[
        (Attribute::RunId, "r.run_uuid", false),
        (Attribute::RunName, "r.name", false),
        (Attribute::Status, "r.status", false),
        (Attribute::UserId, "r.user_id", false),
        (Attribute::ArtifactUri, "r.artifact_uri", false),
        (Attribute::LifecycleStage, "r.lifecycle_stage", false),
        (Attribute::StartTime, "r.start_time", true),
        (Attribute::EndTime, "r.end_time", true),
        (Attribute::ExperimentId, "r.experiment_id", true),
    ],
    tags: Some(KeyValueTable::with_key_value_index(
        "SELECT 1 FROM tags t WHERE t.run_uuid = r.run_uuid AND t.key = ",
        IndexedLookup {
            postgres: "SELECT 1 FROM tags t WHERE char_length(t.key) + char_length(t.value) <= 600 \
                       AND t.run_uuid = r.run_uuid AND t.key = ",
            sqlite: "SELECT 1 FROM tags t INDEXED BY tags_key_value \
                     WHERE t.run_uuid = r.run_uuid AND t.key = ",
        },
        "t.value",
    )),
    params: Some(KeyValueTable::with_key_value_index(
        "SELECT 1 FROM params p WHERE p.run_uuid = r.run_uuid AND p.key = ",
        IndexedLookup {
            postgres: "SELECT 1 FROM params p WHERE char_length(p.key) + char_length(p.value) <= 600 \
                       AND p.run_uuid = r.run_uuid AND p.key = ",
            sqlite: "SELECT 1 FROM params p INDEXED BY params_key_value \
                     WHERE p.run_uuid = r.run_uuid AND p.key = ",
        },
        "p.value",
    )),
};

/// Runs per row of the page (max_results + 1) below which the experiments' runs drive an
/// order-by-key page on SQLite (see `Store::present_join`).
const RUNS_DRIVE_PER_PAGE_ROW: i64 = 2;

/// Index entries of the first order key per row of the page (max_results + 1) that a walk
/// of its (key, value) index reads at most (see [`OrderJoin::Walk`]): enough for a page when
/// at least one in eight entries from where the page starts belongs to a matching run.
const WALK_ENTRIES_PER_PAGE_ROW: i64 = 8;

/// How [`Store::present_join`] found the fast path should join the first order key's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PresentJoin {
    /// The planner chooses (Postgres).
    Planner,
    /// The experiments' runs drive (SQLite, few runs).
    FromRuns,
    /// The key's index drives (SQLite, many runs).
    Walk,
}

/// How [`run_sort_keys`] joins the table of a metric, param or tag order key.
#[derive(Debug, Clone, PartialEq)]
enum OrderJoin<'a> {
    /// LEFT JOIN: every run, those without the key last.
    All,
    /// JOIN: only the runs having the key; the planner picks the join order.
    Present,
    /// As `Present`, with SQLite's CROSS JOIN, which keeps the runs as the outer table.
    PresentFromRuns,
    /// As `Present`, with the key's table first in a CROSS JOIN (SQLite keeps that order): the
    /// (key, value) index is walked in order from `start` (the page token's value), and no
    /// further than the value of the `entries`-th entry from there. Ties of that value are
    /// read too, so every run up to it is seen and a full page is the right page; a short one
    /// sends the search on to the general query, which a walk that found too few matching
    /// runs (a small share of the key's rows, a selective filter) thus costs at most
    /// `entries` entries more.
    Walk(Walk<'a>),
}

/// Where an [`OrderJoin::Walk`] starts and how many index entries it reads at most.
#[derive(Debug, Clone, PartialEq)]
struct Walk<'a> {
    start: Option<&'a TokenValue>,
    entries: i64,
}

/// Appends the tie-breakers that end every order: start_time DESC (unless ordered by it
/// already), then the run id.
fn push_tie_breakers(keys: &mut Vec<SortKey>) {
    if !keys.iter().any(|key| key.expr == "r.start_time") {
        keys.push(SortKey::new("r.start_time", SortKind::Int, true, false));
    }
    keys.push(SortKey::new("r.run_uuid", SortKind::Text, false, false));
}

/// The sort keys for one order_by entry; metrics, params and tags get a LEFT JOIN `o<i>`
/// appended to the FROM list `from`. A metric sorts numbers first, then NaN, then runs
/// without it, in both directions (MLflow's order), so it takes two keys: that rank, then the
/// value.
///
/// With `OrderJoin::Present*` and `Walk`, the join is an inner join that keeps only runs
/// having the key (for a metric: with a value other than NaN), and the one key returned is the
/// plain value. Over those runs it orders exactly as the general keys do, which sort all of
/// them before any other run. `Walk` is for the first entry only, with an empty `from`.
fn run_sort_keys(
    from: &mut SqlBuilder,
    index: usize,
    key: &Key,
    descending: bool,
    join: &OrderJoin,
) -> Result<Vec<SortKey>> {
    let alias = format!("o{index}");
    let (table, lookup) = match key {
        Key::Metric(name) => ("latest_metrics", name),
        Key::Param(name) => ("params", name),
        Key::Tag(name) => ("tags", name),
        Key::Attribute(attribute) => {
            let (column, numeric) = RUN_FILTER.attribute(attribute)?;
            let nullable = matches!(attribute, Attribute::EndTime);
            let kind = if numeric {
                SortKind::Int
            } else {
                SortKind::Text
            };
            return Ok(vec![SortKey::new(column, kind, descending, nullable)]);
        }
        Key::Dataset(_) => {
            return Err(Error::Invalid(
                "Cannot order runs by a dataset field".into(),
            ));
        }
    };
    let metric = matches!(key, Key::Metric(_));
    match join {
        OrderJoin::All => from.push(&format!(" LEFT JOIN {table} {alias} ON ")),
        OrderJoin::Present => from.push(&format!(" JOIN {table} {alias} ON ")),
        OrderJoin::PresentFromRuns => from.push(&format!(" CROSS JOIN {table} {alias} ON ")),
        OrderJoin::Walk(_) => from.push(&format!("{table} {alias} CROSS JOIN runs r ON ")),
    };
    from.push(&format!("{alias}.run_uuid = r.run_uuid AND {alias}.key = "));
    from.bind(SqlValue::Text(lookup.clone()));
    if *join != OrderJoin::All {
        if metric {
            from.push(&format!(" AND NOT {alias}.is_nan"));
        }
        if let OrderJoin::Walk(walk) = join {
            push_walk_bounds(from, &alias, table, lookup, metric, descending, walk);
        }
        let kind = if metric {
            SortKind::Float
        } else {
            SortKind::Text
        };
        return Ok(vec![SortKey::new(
            format!("{alias}.value"),
            kind,
            descending,
            false,
        )]);
    }
    Ok(match key {
        Key::Metric(_) => vec![
            SortKey::new(
                format!(
                    "CAST(CASE WHEN {alias}.key IS NULL THEN 2 WHEN {alias}.is_nan THEN 1 ELSE 0 END AS BIGINT)"
                ),
                SortKind::Int,
                false,
                false,
            ),
            SortKey::new(
                format!("CASE WHEN {alias}.is_nan THEN NULL ELSE {alias}.value END"),
                SortKind::Float,
                descending,
                true,
            ),
        ],
        _ => vec![SortKey::new(
            format!("{alias}.value"),
            SortKind::Text,
            descending,
            true,
        )],
    })
}

/// The range of [`OrderJoin::Walk`] on `<alias>.value`: from the token's value (the keyset
/// condition implies it, but as an OR of terms SQLite cannot start an index range with it) to
/// the last value of the first `entries` index entries from there.
fn push_walk_bounds(
    from: &mut SqlBuilder,
    alias: &str,
    table: &str,
    key: &str,
    metric: bool,
    descending: bool,
    walk: &Walk,
) {
    let (from_op, last, direction) = if descending {
        ("<=", "min", "DESC")
    } else {
        (">=", "max", "ASC")
    };
    let start = walk.start.map(SqlValue::from);
    if let Some(start) = &start {
        from.push(&format!(" AND {alias}.value {from_op} "));
        from.bind(start.clone());
    }
    let to_op = if descending { ">=" } else { "<=" };
    from.push(&format!(
        " AND {alias}.value {to_op} (SELECT {last}(b.value) FROM (SELECT k.value FROM {table} k WHERE k.key = "
    ));
    from.bind(SqlValue::Text(key.to_owned()));
    if metric {
        from.push(" AND NOT k.is_nan");
    }
    if let Some(start) = start {
        from.push(&format!(" AND k.value {from_op} "));
        from.bind(start);
    }
    from.push(&format!(" ORDER BY k.value {direction} LIMIT "));
    from.bind(SqlValue::Int(walk.entries));
    from.push(") b)");
}
