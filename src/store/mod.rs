//! The metadata store: the only module that speaks SQL. Used by `api` and `operator`.
//!
//! One `Store` serves Postgres (the cluster store) and SQLite (the embedded default).
//! Queries are runtime-checked and always parameterized; the few places where the
//! dialects differ match on [`Backend`]. The two-backend conformance suite in
//! `tests/store` is what keeps both honest.

pub mod dataset_summaries;
pub mod error;
pub mod experiments;
pub mod filter;
pub mod logged_models;
pub mod metric_sampling;
pub mod metrics;
pub mod notify;
pub mod ownership;
pub mod registry;
pub mod runs;
pub mod search;
pub mod statistics;
pub mod validation;
pub mod values;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use error::{Entity, Error, Result};

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Which SQL dialect a store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

#[derive(Debug, Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Runs `$body` with `$pool` bound to the concrete pool. The body is compiled once per
/// backend, so the same query text and binds serve both without a dynamic driver.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        $crate::store::with_pool!(@on &$store.pool, $pool => $body)
    };
    (@on $which:expr, $pool:ident => $body:expr) => {
        match $which {
            $crate::store::Pool::Postgres($pool) => $body,
            $crate::store::Pool::Sqlite($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// [`with_pool!`] on the pool write transactions take (`Store::writes`).
macro_rules! with_write_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        $crate::store::with_pool!(@on &$store.writes, $pool => $body)
    };
}
pub(crate) use with_write_pool;

/// Rows sqlx-sqlite's worker thread may get ahead of the reader (see `Store::connect_with`).
const SQLITE_ROW_BUFFER_SIZE: usize = 4096;

/// Opens the store's write transactions. On SQLite a plain `BEGIN` is deferred: a transaction
/// that reads before it writes holds a WAL snapshot, and when another connection commits in
/// between, its first write fails at once with SQLITE_BUSY (busy_timeout cannot help, the
/// snapshot is stale). `BEGIN IMMEDIATE` takes the write lock up front, waiting under
/// busy_timeout, so concurrent writers queue instead of failing (issue #10).
pub(crate) trait BeginWrite {
    type Database: sqlx::Database;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, Self::Database>>;
}

impl BeginWrite for PgPool {
    type Database = sqlx::Postgres;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.begin().await
    }
}

impl BeginWrite for SqlitePool {
    type Database = sqlx::Sqlite;
    async fn begin_write(&self) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

/// Connections of the store's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    /// Open, idle or in use.
    pub size: u32,
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
}

/// Handle on the metadata store, scoped to one workspace; cheap to clone.
///
/// Experiments and registered models belong to a workspace (a Kubernetes namespace); runs,
/// logged models, versions, tags and aliases follow them. Every query that finds, lists or
/// creates them is confined to the store's workspace: an id or name from another workspace is
/// simply not found.
#[derive(Debug, Clone)]
pub struct Store {
    pool: Pool,
    /// Where write transactions run. On a SQLite file, a pool of one connection of its own:
    /// SQLite runs one writer at a time, and a writer that finds the file locked sleeps
    /// (busy_timeout: 1, 2, 5, 10 … ms between attempts), so writers on several connections
    /// left the file idle between them; here they queue for the connection instead and each
    /// starts the moment the previous one commits. Its page cache also stays valid, as no
    /// other connection writes (a connection drops its cache when another one wrote).
    /// On Postgres and in-memory SQLite, the same pool as `pool`.
    writes: Pool,
    workspace: Arc<str>,
    /// Single-point run writes waiting to be written together (`runs::group_commit`).
    group_commit: Arc<runs::GroupCommit>,
}

/// The workspace of a store that was not scoped to another, and of rows from before workspaces.
pub const DEFAULT_WORKSPACE: &str = "default";

/// Longest a request waits for a Postgres connection by default.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A Postgres connection idle this long is pinged before it is used again (see
/// [`Store::connect_with`]).
const POSTGRES_PING_WHEN_IDLE: Duration = Duration::from_secs(1);

/// How the store waits for its database.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Longest a request waits for a Postgres connection, reconnecting included, before it
    /// fails as unavailable ([`Error::is_unavailable`]): during an outage requests fail after
    /// this long instead of hanging.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
        }
    }
}

impl Store {
    /// [`Store::open_migrated_with`] the default [`StoreOptions`].
    pub async fn open_migrated(uri: &str) -> Result<Self> {
        Self::open_migrated_with(uri, StoreOptions::default()).await
    }

    /// Connects to `uri` and brings its schema up to date: what every command that uses the
    /// store does first (the server, the operator, `db upgrade`).
    pub async fn open_migrated_with(uri: &str, store_options: StoreOptions) -> Result<Self> {
        let store = Self::connect_with(uri, store_options).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to `uri` with the default [`StoreOptions`].
    pub async fn connect(uri: &str) -> Result<Self> {
        Self::connect_with(uri, StoreOptions::default()).await
    }

    /// Connects to `uri`: `postgresql://…`/`postgres://…`, or `sqlite:///path` / `sqlite://relative`
    /// / `sqlite::memory:`. The SQLite file is created when missing.
    pub async fn connect_with(uri: &str, store_options: StoreOptions) -> Result<Self> {
        let (pool, writes) = if uri.starts_with("postgresql://") || uri.starts_with("postgres://") {
            let options = PgConnectOptions::from_str(uri)?;
            let pool = Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(32)
                    .acquire_timeout(store_options.acquire_timeout)
                    // sqlx pings a connection (a round trip) when it goes back to the pool and,
                    // by default, again when it is taken: two of a log-batch's round trips.
                    // One that sat idle may have been closed by the server (a restart, an
                    // idle timeout) and is still pinged before use; one just returned was
                    // pinged then, and a failure in between is answered as unavailable (503)
                    // like any other outage, and the broken connection is closed.
                    .test_before_acquire(false)
                    .before_acquire(|connection, meta| {
                        Box::pin(async move {
                            if meta.idle_for >= POSTGRES_PING_WHEN_IDLE {
                                connection.ping().await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect_with(options)
                    .await?,
            );
            (pool.clone(), pool)
        } else if let Some(path) = sqlite_path(uri) {
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true)
                // sqlx-sqlite's worker thread hands rows over through a channel of this many;
                // with its default of 50 it blocks and is woken again per row once the channel
                // is full, which made reading a page of 1000 runs several times dearer than
                // the queries. A page's rows fit in this one.
                .row_buffer_size(SQLITE_ROW_BUFFER_SIZE);
            if path == ":memory:" {
                // An in-memory database lives in one connection.
                let pool = Pool::Sqlite(sqlite_pool(1).connect_with(options).await?);
                (pool.clone(), pool)
            } else {
                let reads = sqlite_pool(sqlite_read_connections())
                    .connect_with(options.clone())
                    .await?;
                // The writer's statement journals (a multi-row insert inside a transaction
                // keeps one, to undo just that statement on an error) stay in memory: with the
                // default they spill to a temporary file past 64 KiB, which a log-batch's
                // chunks reach (6% of its CPU, e2e/bench/runs/2026-12-07-sqlbatch.md). Only the
                // undo of an unfinished statement lives there, never committed data: durability
                // is the WAL's, unchanged.
                let writes = sqlite_pool(1)
                    .connect_with(options.pragma("temp_store", "memory"))
                    .await?;
                (Pool::Sqlite(reads), Pool::Sqlite(writes))
            }
        } else {
            return Err(Error::UnsupportedUri(uri.to_owned()));
        };
        Ok(Self {
            pool,
            writes,
            workspace: Arc::from(DEFAULT_WORKSPACE),
            group_commit: Arc::default(),
        })
    }

    /// The same store, scoped to `workspace` (which the caller has validated).
    pub fn in_workspace(&self, workspace: &str) -> Self {
        Self {
            pool: self.pool.clone(),
            writes: self.writes.clone(),
            workspace: Arc::from(workspace),
            group_commit: self.group_commit.clone(),
        }
    }

    /// The workspace this store reads and writes.
    pub fn workspace(&self) -> &str {
        &self.workspace
    }

    /// The dialect of this store.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Postgres(_) => Backend::Postgres,
            Pool::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies pending migrations (forward-only; embedded in the binary).
    pub async fn migrate(&self) -> Result<()> {
        match &self.pool {
            Pool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await.map_err(Error::Migrate),
            Pool::Sqlite(pool) => migrate_sqlite(pool).await,
        }
    }

    /// The pool's connections now, for metrics.
    pub fn pool_status(&self) -> PoolStatus {
        with_pool!(self, pool => PoolStatus {
            size: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max: pool.options().get_max_connections(),
        })
    }

    /// How long a connection takes to get from the pool now (a request waits as long).
    #[tracing::instrument(name = "store.acquire_wait", skip_all)]
    pub async fn acquire_wait(&self) -> Result<Duration> {
        let started = std::time::Instant::now();
        with_pool!(self, pool => pool.acquire().await.map(drop))?;
        Ok(started.elapsed())
    }

    /// Postgres pool, for the features only Postgres has (LISTEN/NOTIFY).
    pub fn postgres_pool(&self) -> Option<&PgPool> {
        match &self.pool {
            Pool::Postgres(pool) => Some(pool),
            Pool::Sqlite(_) => None,
        }
    }

    /// Closes every connection; pending queries finish first.
    pub async fn close(&self) {
        with_write_pool!(self, pool => pool.close().await);
        with_pool!(self, pool => pool.close().await)
    }

    /// Whether [`Self::close`] was called.
    pub fn is_closed(&self) -> bool {
        with_pool!(self, pool => pool.is_closed())
    }

    /// Checks that the database answers.
    #[tracing::instrument(name = "store.ping", skip_all)]
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|done| done.rows_affected()))?;
        Ok(())
    }
}

/// Runs SQLite's migrations with foreign keys off, as SQLite's procedure for rebuilding a table
/// asks (a migration cannot turn them off itself: the pragma is ignored inside its transaction),
/// then checks that every reference still holds before foreign keys are back on.
async fn migrate_sqlite(pool: &SqlitePool) -> Result<()> {
    let mut connection = pool.acquire().await?;
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut *connection)
        .await?;
    let migrated = SQLITE_MIGRATIONS
        .run(&mut *connection)
        .await
        .map_err(Error::Migrate);
    let broken = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut *connection)
        .await;
    sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut *connection)
        .await?;
    migrated?;
    let broken = broken?.len();
    if broken > 0 {
        return Err(Error::BrokenReferences(broken));
    }
    Ok(())
}

/// The path part of a SQLite URI, as MLflow spells it (`sqlite:///abs.db` is
/// `/abs.db` in SQLAlchemy, `sqlite:///rel.db` relative), or `None` when not SQLite.
fn sqlite_path(uri: &str) -> Option<&str> {
    let rest = uri.strip_prefix("sqlite:")?;
    if rest == ":memory:" || rest == "//:memory:" {
        return Some(":memory:");
    }
    // SQLAlchemy: three slashes then a relative path, four slashes an absolute one.
    let path = rest
        .strip_prefix("///")
        .or_else(|| rest.strip_prefix("//"))?;
    if path.is_empty() { None } else { Some(path) }
}

/// A pool of SQLite connections to one file (or one in-memory database).
fn sqlite_pool(max_connections: u32) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(max_connections)
        // A file's connection does not go away while idle; the ping is a hand-over to the
        // connection's worker thread and back on every acquire.
        .test_before_acquire(false)
}

/// Connections of a SQLite file's read pool: one per core, at least 2 and at most 8. More do
/// not read faster (each runs its queries on its own worker thread, so the cores are the limit),
/// and each one keeps memory after the load: its page cache, its prepared statements and the
/// malloc arena of its worker thread. With 8 on 2 cores, a server's RSS after the benchmark's
/// load was 196 MiB; see e2e/bench/runs/2026-12-07-sqlmem.md.
fn sqlite_read_connections() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get());
    u32::try_from(cores.clamp(2, 8)).unwrap_or(2)
}

/// Milliseconds since the Unix epoch, MLflow's time unit.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::sqlite_path;

    #[test]
    fn sqlite_uris_follow_sqlalchemy_spelling() {
        assert_eq!(sqlite_path("sqlite:///mlflow.db"), Some("mlflow.db"));
        assert_eq!(
            sqlite_path("sqlite:////tmp/mlflow.db"),
            Some("/tmp/mlflow.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), Some(":memory:"));
        assert_eq!(sqlite_path("sqlite://"), None);
        assert_eq!(sqlite_path("postgresql://x"), None);
    }
}

/// A key/value pair: MLflow's tags and params.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Which lifecycle stages a search includes (MLflow's ViewType).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewType {
    #[default]
    ActiveOnly,
    DeletedOnly,
    All,
}

impl ViewType {
    /// The lifecycle_stage values this view selects.
    pub fn stages(self) -> &'static [&'static str] {
        match self {
            ViewType::ActiveOnly => &[LIFECYCLE_ACTIVE],
            ViewType::DeletedOnly => &[LIFECYCLE_DELETED],
            ViewType::All => &[LIFECYCLE_ACTIVE, LIFECYCLE_DELETED],
        }
    }
}

pub const LIFECYCLE_ACTIVE: &str = "active";
pub const LIFECYCLE_DELETED: &str = "deleted";

/// One page of search results and the token for the next page, if more rows exist.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}
