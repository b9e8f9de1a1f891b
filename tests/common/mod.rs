//! Test support shared by the integration test binaries: a fresh store per test, on
//! SQLite (a temp file) or Postgres (a new database on the server named by
//! `FERROFLOW_TEST_PG_URL`, which `e2e/setup/postgres.sh` starts).

#![allow(dead_code)] // each test binary uses a different part of it

use ferroflow::store::Store;
use sqlx::Connection;

/// A store and what keeps it alive (the SQLite temp folder, the Postgres database).
pub struct TestStore {
    pub store: Store,
    pub uri: String,
    /// Holds the SQLite file (when SQLite) and the artifact folder.
    dir: tempfile::TempDir,
    /// The Postgres database, dropped with the store.
    database: Option<TestDatabase>,
}

impl TestStore {
    /// A folder for this test's artifacts, removed with the store.
    pub fn artifact_root(&self) -> std::path::PathBuf {
        self.dir.path().join("artifacts")
    }
}

/// A migrated store on a fresh SQLite file.
pub async fn sqlite_store() -> TestStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let uri = format!("sqlite:///{}", dir.path().join("test.db").display());
    let store = Store::open_migrated(&uri)
        .await
        .expect("open and migrate sqlite");
    TestStore {
        store,
        uri,
        dir,
        database: None,
    }
}

/// A migrated store on a fresh Postgres database, or `None` (test skipped) when no server
/// was given and we are not in CI. In CI a missing Postgres fails the test.
pub async fn postgres_store() -> Option<TestStore> {
    let database = TestDatabase::create().await?;
    let uri = database.uri.clone();
    let store = Store::open_migrated(&uri)
        .await
        .expect("open and migrate postgres");
    Some(TestStore {
        store,
        uri,
        dir: tempfile::tempdir().expect("temp dir"),
        database: Some(database),
    })
}

/// A database of its own for one test on the test Postgres, dropped when the test ends (a
/// long-lived local cluster would otherwise keep every test's database).
pub struct TestDatabase {
    server: String,
    name: String,
    pub uri: String,
}

impl TestDatabase {
    /// Creates it, or `None` (test skipped) when no server was given and we are not in CI.
    pub async fn create() -> Option<Self> {
        let Ok(server) = std::env::var("FERROFLOW_TEST_PG_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "FERROFLOW_TEST_PG_URL is not set; in CI the Postgres tests must run (see e2e/setup/postgres.sh)"
            );
            eprintln!(
                "skipping Postgres test: FERROFLOW_TEST_PG_URL is not set (run e2e/setup/postgres.sh)"
            );
            return None;
        };
        let name = format!("ff_test_{}", uuid::Uuid::new_v4().simple());
        let mut connection = sqlx::PgConnection::connect(&server)
            .await
            .expect("connect to test postgres");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut connection)
            .await
            .expect("create database");
        let (base, _) = server
            .rsplit_once('/')
            .expect("postgres URL has a database path");
        let uri = format!("{base}/{name}");
        Some(Self { server, name, uri })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = self.server.clone();
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop runs on the test's runtime, which cannot be blocked on: a thread of its own
        // with its own runtime does the drop. FORCE ends connections the test's pool left open.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime.block_on(async {
                let mut connection = sqlx::PgConnection::connect(&server)
                    .await
                    .map_err(|error| error.to_string())?;
                sqlx::query(&statement)
                    .execute(&mut connection)
                    .await
                    .map_err(|error| error.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("could not drop test database {}: {dropped:?}", self.name);
        }
    }
}

/// Instantiates one async test body (`async fn(Store)`) for SQLite and for Postgres.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let test_store = $crate::common::sqlite_store().await;
                    super::$name(test_store.store.clone()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if let Some(test_store) = $crate::common::postgres_store().await {
                        super::$name(test_store.store.clone()).await;
                    }
                }
            )*
        }
    };
}
