//! Compiles parsed search filters and order_by clauses (see [`super::filter`]) into
//! parameterized SQL, and implements page tokens.
//!
//! User text never becomes SQL: keys and values are bound as parameters, and the only
//! SQL this module writes is fixed text chosen by matching on the AST.
//!
//! Page tokens are keyset tokens: they carry the sort-key values of the last row of the
//! page, so the next page starts strictly after that row even when rows were inserted or
//! deleted in between (an offset token would skip or repeat rows).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use super::filter::{Attribute, Clause, Comparator, Key, Value};
use super::{Backend, Error, Result, Store, with_pool};

/// A row type both backends can decode: what the generic page and batch readers return.
pub(crate) trait StoreRow:
    for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
    + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
    + Send
    + Unpin
{
}

impl<T> StoreRow for T where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + Send
        + Unpin
{
}

/// A value bound to a `$n` placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    Null,
}

/// Binds every value of a [`SqlValue`] list to a sqlx query, in order.
macro_rules! bind_values {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                $crate::store::search::SqlValue::Int(v) => query.bind(*v),
                $crate::store::search::SqlValue::Float(v) => query.bind(*v),
                $crate::store::search::SqlValue::Text(v) => query.bind(v.as_str()),
                $crate::store::search::SqlValue::Bool(v) => query.bind(*v),
                $crate::store::search::SqlValue::Null => query.bind(Option::<String>::None),
            };
        }
        query
    }};
}
pub(crate) use bind_values;

/// SQL text with numbered placeholders and the values that go with them.
#[derive(Debug, Default, Clone)]
pub struct SqlBuilder {
    pub sql: String,
    pub values: Vec<SqlValue>,
}

impl SqlBuilder {
    pub fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            values: Vec::new(),
        }
    }

    /// Appends fixed SQL text (never user input).
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder for `value` and returns its text (`$n`), for reuse.
    pub fn bind(&mut self, value: SqlValue) -> String {
        self.values.push(value);
        let placeholder = format!("${}", self.values.len());
        self.sql.push_str(&placeholder);
        placeholder
    }

    /// Appends "`column` is the id of an experiment of `workspace`": runs, logged models and
    /// datasets belong to the workspace of their experiment.
    pub fn push_experiment_in_workspace(&mut self, column: &str, workspace: &str) {
        self.push(column);
        self.push(" IN (SELECT ws.experiment_id FROM experiments ws WHERE ws.workspace = ");
        self.bind(SqlValue::Text(workspace.to_owned()));
        self.push(")");
    }

    /// Appends a `(…)` list of placeholders.
    pub fn bind_list(&mut self, values: impl IntoIterator<Item = SqlValue>) {
        self.sql.push('(');
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.sql.push_str(", ");
            }
            self.bind(value);
        }
        self.sql.push(')');
    }
}

/// The SQL type of a sort key, so its value can be read back for the page token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKind {
    Int,
    Float,
    Text,
}

/// One ORDER BY key. `expr` is fixed SQL over the query's aliases; rows where it is NULL
/// sort last in both directions, as in MLflow.
#[derive(Debug, Clone)]
pub struct SortKey {
    pub expr: String,
    pub kind: SortKind,
    pub descending: bool,
    pub nullable: bool,
}

impl SortKey {
    pub fn new(expr: impl Into<String>, kind: SortKind, descending: bool, nullable: bool) -> Self {
        Self {
            expr: expr.into(),
            kind,
            descending,
            nullable,
        }
    }
}

/// A sort-key value carried in a page token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenValue {
    Int(i64),
    Float(f64),
    Text(String),
    Null,
}

#[derive(Debug, Serialize, Deserialize)]
struct PageToken {
    /// Sort-key values of the last row returned.
    after: Vec<TokenValue>,
}

/// Decodes a client's page token (empty means the first page).
pub fn decode_page_token(token: &str, keys: &[SortKey]) -> Result<Option<Vec<TokenValue>>> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::Invalid(format!("Invalid page token '{token}'"));
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| invalid())?;
    let parsed: PageToken = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
    if parsed.after.len() != keys.len() {
        return Err(invalid());
    }
    // Integers may come back as floats through JSON only if we wrote them so; check kinds.
    let values = parsed
        .after
        .into_iter()
        .zip(keys)
        .map(|(value, key)| match (value, key.kind) {
            (TokenValue::Null, _) if key.nullable => Ok(TokenValue::Null),
            (TokenValue::Int(v), SortKind::Int) => Ok(TokenValue::Int(v)),
            (TokenValue::Int(v), SortKind::Float) => Ok(TokenValue::Float(v as f64)),
            (TokenValue::Float(v), SortKind::Float) => Ok(TokenValue::Float(v)),
            (TokenValue::Text(v), SortKind::Text) => Ok(TokenValue::Text(v)),
            _ => Err(invalid()),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(values))
}

/// Encodes the sort-key values of a page's last row as an opaque token.
pub fn encode_page_token(after: Vec<TokenValue>) -> String {
    let json = serde_json::to_vec(&PageToken { after }).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Appends `AND (rows strictly after `after` in the order of `keys`)`.
pub fn push_keyset_condition(builder: &mut SqlBuilder, keys: &[SortKey], after: &[TokenValue]) {
    builder.push(" AND (");
    for j in 0..keys.len() {
        if j > 0 {
            builder.push(" OR ");
        }
        builder.push("(");
        for i in 0..j {
            push_same(builder, &keys[i], &after[i]);
            builder.push(" AND ");
        }
        push_after(builder, &keys[j], &after[j]);
        builder.push(")");
    }
    builder.push(")");
}

impl From<&TokenValue> for SqlValue {
    fn from(value: &TokenValue) -> Self {
        match value {
            TokenValue::Int(v) => SqlValue::Int(*v),
            TokenValue::Float(v) => SqlValue::Float(*v),
            TokenValue::Text(v) => SqlValue::Text(v.clone()),
            TokenValue::Null => SqlValue::Null,
        }
    }
}

fn push_same(builder: &mut SqlBuilder, key: &SortKey, last: &TokenValue) {
    if *last == TokenValue::Null {
        builder.push(&format!("({} IS NULL)", key.expr));
    } else {
        builder.push(&format!("({} = ", key.expr));
        builder.bind(SqlValue::from(last));
        builder.push(")");
    }
}

fn push_after(builder: &mut SqlBuilder, key: &SortKey, last: &TokenValue) {
    if *last == TokenValue::Null {
        // NULLs sort last: nothing comes after a NULL but other NULLs (decided by later keys).
        builder.push("(1 = 0)");
        return;
    }
    let op = if key.descending { "<" } else { ">" };
    builder.push("(");
    if key.nullable {
        builder.push(&format!("{} IS NULL OR ", key.expr));
    }
    builder.push(&format!("{} {op} ", key.expr));
    builder.bind(SqlValue::from(last));
    builder.push(")");
}

/// Appends ` ORDER BY …` for `keys`, NULLs last in both directions.
pub fn push_order_by(builder: &mut SqlBuilder, keys: &[SortKey]) {
    builder.push(" ORDER BY ");
    let parts: Vec<String> = keys
        .iter()
        .map(|key| {
            let direction = if key.descending { "DESC" } else { "ASC" };
            if key.nullable {
                format!(
                    "(CASE WHEN {e} IS NULL THEN 1 ELSE 0 END), {e} {direction}",
                    e = key.expr
                )
            } else {
                format!("{} {direction}", key.expr)
            }
        })
        .collect();
    builder.push(&parts.join(", "));
}

/// Appends the select-list entries `, <expr> AS sort_<i>` so the last row's keys can be read.
pub fn push_sort_columns(builder: &mut SqlBuilder, keys: &[SortKey]) {
    for (i, key) in keys.iter().enumerate() {
        builder.push(&format!(", {} AS sort_{i}", key.expr));
    }
}

/// Reads the sort-key columns written by [`push_sort_columns`] from a row.
pub fn read_sort_values<R>(row: &R, keys: &[SortKey]) -> Result<Vec<TokenValue>>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<f64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            let column = format!("sort_{i}");
            let value = match key.kind {
                SortKind::Int => row
                    .try_get::<Option<i64>, _>(column.as_str())?
                    .map(TokenValue::Int),
                SortKind::Float => row
                    .try_get::<Option<f64>, _>(column.as_str())?
                    .map(TokenValue::Float),
                SortKind::Text => row
                    .try_get::<Option<String>, _>(column.as_str())?
                    .map(TokenValue::Text),
            };
            Ok(value.unwrap_or(TokenValue::Null))
        })
        .collect()
}

impl Store {
    /// Finishes a search query (rows strictly after the previous page, ORDER BY, a LIMIT one
    /// past the page so we know whether more exist) and runs it: the page's rows and the
    /// token for the next page, present exactly when more rows exist.
    pub(crate) async fn fetch_page<T>(
        &self,
        builder: SqlBuilder,
        keys: &[SortKey],
        after: Option<&[TokenValue]>,
        max_results: i64,
    ) -> Result<(Vec<T>, Option<String>)>
    where
        T: StoreRow,
    {
        self.fetch_page_with(builder, keys, after, keys, max_results, true)
            .await
    }

    /// [`Self::fetch_page`] for a query whose ORDER BY and keyset condition use
    /// `order_keys` (with `after` in their terms) while the select list carries the columns
    /// of `token_keys` (see [`push_sort_columns`]), from which the page token is made. The
    /// two must order the query's rows alike: this lets a query that only sees part of the
    /// rows sort them by plain, indexable columns and still hand out the general token.
    ///
    /// The statement is not kept prepared, so Postgres plans it for the values bound each
    /// time. A cached statement switches to a generic plan after five runs, which guesses how
    /// many rows `params.model = $4` matches; for filters over many runs, where the right plan
    /// depends on those values, that guess costs more than planning does.
    pub(crate) async fn fetch_page_ordered<T>(
        &self,
        builder: SqlBuilder,
        order_keys: &[SortKey],
        after: Option<&[TokenValue]>,
        token_keys: &[SortKey],
        max_results: i64,
    ) -> Result<(Vec<T>, Option<String>)>
    where
        T: StoreRow,
    {
        self.fetch_page_with(builder, order_keys, after, token_keys, max_results, false)
            .await
    }

    async fn fetch_page_with<T>(
        &self,
        mut builder: SqlBuilder,
        order_keys: &[SortKey],
        after: Option<&[TokenValue]>,
        token_keys: &[SortKey],
        max_results: i64,
        prepared: bool,
    ) -> Result<(Vec<T>, Option<String>)>
    where
        T: StoreRow,
    {
        if let Some(after) = after {
            push_keyset_condition(&mut builder, order_keys, after);
        }
        push_order_by(&mut builder, order_keys);
        builder.push(" LIMIT ");
        builder.bind(SqlValue::Int(max_results.saturating_add(1)));
        let (mut rows, mut sort_values) = with_pool!(self, pool => {
            let query = sqlx::query(&builder.sql).persistent(prepared);
            let raw = bind_values!(query, &builder.values).fetch_all(pool).await?;
            let mut rows = Vec::with_capacity(raw.len());
            let mut sort_values = Vec::with_capacity(raw.len());
            for row in &raw {
                rows.push(T::from_row(row)?);
                sort_values.push(read_sort_values(row, token_keys)?);
            }
            (rows, sort_values)
        });
        let limit = usize::try_from(max_results).unwrap_or(usize::MAX);
        if rows.len() <= limit {
            return Ok((rows, None));
        }
        rows.truncate(limit);
        sort_values.truncate(limit);
        Ok((rows, sort_values.pop().map(encode_page_token)))
    }
}

/// `LIKE` is case-sensitive in MLflow on every backend; SQLite's is not, so there the
/// pattern becomes a GLOB (whose specials are escaped with brackets).
pub fn push_like(builder: &mut SqlBuilder, backend: Backend, column: &str, pattern: &str) {
    match backend {
        Backend::Postgres => {
            builder.push(&format!("{column} LIKE "));
            builder.bind(SqlValue::Text(pattern.to_owned()));
        }
        Backend::Sqlite => {
            builder.push(&format!("{column} GLOB "));
            builder.bind(SqlValue::Text(like_to_glob(pattern)));
        }
    }
}

/// Case-insensitive LIKE on both backends.
pub fn push_ilike(builder: &mut SqlBuilder, backend: Backend, column: &str, pattern: &str) {
    match backend {
        Backend::Postgres => builder.push(&format!("{column} ILIKE ")),
        Backend::Sqlite => builder.push(&format!("LOWER({column}) LIKE LOWER(")),
    };
    builder.bind(SqlValue::Text(pattern.to_owned()));
    if backend == Backend::Sqlite {
        builder.push(")");
    }
}

fn like_to_glob(pattern: &str) -> String {
    let mut glob = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        match c {
            '%' => glob.push('*'),
            '_' => glob.push('?'),
            '*' | '?' | '[' | ']' => {
                glob.push('[');
                glob.push(c);
                glob.push(']');
            }
            other => glob.push(other),
        }
    }
    glob
}

// ---- filter clauses -------------------------------------------------------------------

/// What a search filter's keys compare in SQL for one searched entity: its attributes' columns
/// and its key-value tables. Each entity declares one; [`FilterColumns::push_clause`] writes
/// every clause from it.
pub struct FilterColumns {
    /// The entity as messages name it ("runs", "registered models").
    pub entity: &'static str,
    /// Each filterable attribute: its column (or expression) and whether it is numeric.
    pub attributes: &'static [(Attribute, &'static str, bool)],
    pub tags: Option<KeyValueTable>,
    pub params: Option<KeyValueTable>,
}

/// A tag or param table, matched as `EXISTS (<lookup> $key AND <value> <op> $value)`.
pub struct KeyValueTable {
    /// `SELECT 1 FROM <table> x WHERE <x belongs to the searched row> AND x.key = `.
    lookup: &'static str,
    /// The same lookup through the table's (key, value, row) index, used for `=`.
    indexed_lookup: Option<IndexedLookup>,
    /// The value column, e.g. `t.value`.
    value: &'static str,
}

/// [`KeyValueTable::lookup`] spelled so that each backend probes the (key, value, row) index.
pub struct IndexedLookup {
    /// Stating the predicate of the Postgres partial index, so that the planner can use it.
    pub postgres: &'static str,
    /// With `INDEXED BY`: SQLite otherwise probes the (row, key) primary key, then the table
    /// for the value, two b-tree descents instead of one per searched row (a two-param filter
    /// over the benchmark's 10,000 runs: 35 ms of SQL for a page of 1000 instead of 17).
    pub sqlite: &'static str,
}

/// Longest key + value (in characters) that the Postgres (key, value) indexes of run params and
/// tags hold: they are partial (migration 0004) because a B-tree entry has a size limit.
pub const INDEXED_KEY_VALUE_CHARS: usize = 600;

impl KeyValueTable {
    pub const fn new(lookup: &'static str, value: &'static str) -> Self {
        Self {
            lookup,
            indexed_lookup: None,
            value,
        }
    }

    /// A table with a (key, value, row) index, partial on Postgres: limited to
    /// `char_length(key) + char_length(value) <= INDEXED_KEY_VALUE_CHARS`.
    pub const fn with_key_value_index(
        lookup: &'static str,
        indexed_lookup: IndexedLookup,
        value: &'static str,
    ) -> Self {
        Self {
            lookup,
            indexed_lookup: Some(indexed_lookup),
            value,
        }
    }

    /// The lookup for `clause` on `key`: through the index for `=`, on Postgres only with a
    /// value short enough for its partial index (every matching row satisfies the predicate).
    fn lookup_for(&self, backend: Backend, key: &str, clause: &Clause) -> &'static str {
        let Some(indexed) = &self.indexed_lookup else {
            return self.lookup;
        };
        match (backend, &clause.op, &clause.value) {
            // Bytes, not characters: a character is one byte or more in UTF-8, so the byte
            // count bounds char_length in any server encoding (even SQL_ASCII).
            (Backend::Postgres, Comparator::Eq, Value::String(value))
                if key.len() + value.len() <= INDEXED_KEY_VALUE_CHARS =>
            {
                indexed.postgres
            }
            (Backend::Sqlite, Comparator::Eq, Value::String(_)) => indexed.sqlite,
            _ => self.lookup,
        }
    }
}

impl FilterColumns {
    /// The column of `attribute` and whether it is numeric.
    pub fn attribute(&self, attribute: &Attribute) -> Result<(&'static str, bool)> {
        self.attributes
            .iter()
            .find(|(known, _, _)| known == attribute)
            .map(|&(_, column, numeric)| (column, numeric))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "Invalid attribute for {}: {attribute:?}",
                    self.entity
                ))
            })
    }

    /// Writes the condition of one attribute, tag or param clause; other keys (metrics,
    /// datasets) are the entity's own to write and are refused here.
    pub fn push_clause(
        &self,
        builder: &mut SqlBuilder,
        backend: Backend,
        clause: &Clause,
    ) -> Result<()> {
        let table = match &clause.key {
            Key::Attribute(attribute) => {
                let (column, numeric) = self.attribute(attribute)?;
                return push_comparison(builder, backend, column, clause, numeric);
            }
            Key::Tag(key) => self.tags.as_ref().map(|table| (table, key)),
            Key::Param(key) => self.params.as_ref().map(|table| (table, key)),
            Key::Metric(_) | Key::Dataset(_) => None,
        };
        let Some((table, key)) = table else {
            return Err(Error::Invalid(format!(
                "Invalid filter key for {}: {:?}",
                self.entity, clause.key
            )));
        };
        push_key_value_clause(
            builder,
            backend,
            table.lookup_for(backend, key, clause),
            key,
            table.value,
            clause,
        )
    }
}

/// `EXISTS (<lookup> $key AND <column> <op> $value)` for a tag or param; `IS NULL` becomes `NOT EXISTS`.
/// A row lacking the key never matches any other comparison (MLflow's semantics, `!=` included).
fn push_key_value_clause(
    builder: &mut SqlBuilder,
    backend: Backend,
    lookup: &str,
    key: &str,
    column: &str,
    clause: &Clause,
) -> Result<()> {
    let negate = clause.op == Comparator::IsNull;
    builder.push(if negate { "NOT EXISTS (" } else { "EXISTS (" });
    builder.push(lookup);
    builder.bind(SqlValue::Text(key.to_owned()));
    if !matches!(clause.op, Comparator::IsNull | Comparator::IsNotNull) {
        builder.push(" AND ");
        push_comparison(builder, backend, column, clause, false)?;
    }
    builder.push(")");
    Ok(())
}

/// `<column> <op> <value>` for one clause, with LIKE/ILIKE made case-correct per backend.
pub fn push_comparison(
    builder: &mut SqlBuilder,
    backend: Backend,
    column: &str,
    clause: &Clause,
    numeric: bool,
) -> Result<()> {
    let bad_value = || {
        Error::Invalid(format!(
            "Invalid value for comparison on {column}: {:?}",
            clause.value
        ))
    };
    let scalar = |value: &Value| -> Result<SqlValue> {
        match (value, numeric) {
            (Value::Number(number), true) => {
                if number.fract() == 0.0 && number.abs() < 9.0e15 {
                    Ok(SqlValue::Int(*number as i64))
                } else {
                    Ok(SqlValue::Float(*number))
                }
            }
            (Value::Number(number), false) => Ok(SqlValue::Float(*number)),
            (Value::String(text), true) => text
                .trim()
                .parse::<i64>()
                .map(SqlValue::Int)
                .map_err(|_| bad_value()),
            (Value::String(text), false) => Ok(SqlValue::Text(text.clone())),
            _ => Err(bad_value()),
        }
    };
    let op = match clause.op {
        Comparator::Eq => "=",
        Comparator::Ne => "!=",
        Comparator::Lt => "<",
        Comparator::Le => "<=",
        Comparator::Gt => ">",
        Comparator::Ge => ">=",
        Comparator::Like | Comparator::ILike => {
            let Value::String(pattern) = &clause.value else {
                return Err(bad_value());
            };
            if clause.op == Comparator::Like {
                push_like(builder, backend, column, pattern);
            } else {
                push_ilike(builder, backend, column, pattern);
            }
            return Ok(());
        }
        Comparator::In | Comparator::NotIn => {
            let Value::List(items) = &clause.value else {
                return Err(bad_value());
            };
            builder.push(column);
            builder.push(if clause.op == Comparator::In {
                " IN "
            } else {
                " NOT IN "
            });
            let values = items
                .iter()
                .map(|item| scalar(&Value::String(item.clone())))
                .collect::<Result<Vec<_>>>()?;
            builder.bind_list(values);
            return Ok(());
        }
        Comparator::IsNull => {
            builder.push(&format!("{column} IS NULL"));
            return Ok(());
        }
        Comparator::IsNotNull => {
            builder.push(&format!("{column} IS NOT NULL"));
            return Ok(());
        }
    };
    builder.push(&format!("{column} {op} "));
    builder.bind(scalar(&clause.value)?);
    Ok(())
}

/// Checks `max_results` against MLflow's ceiling for an entity.
pub fn check_max_results(max_results: i64, ceiling: i64) -> Result<i64> {
    if max_results <= 0 || max_results > ceiling {
        return Err(Error::Invalid(format!(
            "Invalid value {max_results} for parameter 'max_results' supplied. It must be at most {ceiling}, and positive."
        )));
    }
    Ok(max_results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_become_globs_with_specials_escaped() {
        assert_eq!(like_to_glob("a%b_c"), "a*b?c");
        assert_eq!(like_to_glob("x*[y]?"), "x[*][[]y[]][?]");
    }

    #[test]
    fn page_tokens_round_trip_and_reject_tampering() {
        let keys = vec![
            SortKey::new("r.start_time", SortKind::Int, true, false),
            SortKey::new("m.value", SortKind::Float, false, true),
            SortKey::new("r.run_uuid", SortKind::Text, false, false),
        ];
        let after = vec![
            TokenValue::Int(5),
            TokenValue::Null,
            TokenValue::Text("abc".into()),
        ];
        let token = encode_page_token(after.clone());
        assert_eq!(decode_page_token(&token, &keys).unwrap(), Some(after));
        assert!(decode_page_token("not a token", &keys).is_err());
        assert!(decode_page_token(&encode_page_token(vec![TokenValue::Int(1)]), &keys).is_err());
        assert_eq!(decode_page_token("", &keys).unwrap(), None);
    }

    #[test]
    fn keyset_condition_orders_nulls_last() {
        let keys = vec![
            SortKey::new("a", SortKind::Float, true, true),
            SortKey::new("id", SortKind::Text, false, false),
        ];
        let mut builder = SqlBuilder::new("");
        push_keyset_condition(
            &mut builder,
            &keys,
            &[TokenValue::Float(1.5), TokenValue::Text("x".into())],
        );
        assert_eq!(
            builder.sql,
            " AND (((a IS NULL OR a < $1)) OR ((a = $2) AND (id > $3)))"
        );
        assert_eq!(builder.values.len(), 3);
    }
}
