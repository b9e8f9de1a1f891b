-- Metric points stored in their primary key's b-tree (WITHOUT ROWID), and without the per-point
-- foreign key to runs, as Postgres since its 0006 (issue #20, SQLite log-batch).
-- Forward-only.
--
-- A rowid table kept every point twice: once in the table (by rowid) and once in the primary
-- key's index (run, key, step, timestamp, value, is_nan), and the foreign key probed `runs` once
-- per point. A log-batch of 1000 points wrote both b-trees and probed 1000 times; now it writes
-- one b-tree, and history pages (read in the key's order) no longer look up each row by rowid.
-- Runs are never hard-deleted, and every write of points checks its run first (log-batch reads
-- the active run, group commit reads the group's runs inside its transaction, and SQLite
-- writers are serialised), so the foreign key's checks only repeated that; code that ever
-- deletes runs must delete their metrics itself (no cascade any more).
CREATE TABLE metrics_new (
    run_uuid       TEXT    NOT NULL,
    key            TEXT    NOT NULL,
    step           BIGINT  NOT NULL,
    timestamp      BIGINT  NOT NULL,
    value          REAL    NOT NULL,
    is_nan         BOOLEAN NOT NULL,
    model_id       TEXT,
    dataset_name   TEXT,
    dataset_digest TEXT,
    PRIMARY KEY (run_uuid, key, step, timestamp, value, is_nan)
) WITHOUT ROWID;
INSERT INTO metrics_new (run_uuid, key, step, timestamp, value, is_nan, model_id, dataset_name, dataset_digest)
SELECT run_uuid, key, step, timestamp, value, is_nan, model_id, dataset_name, dataset_digest FROM metrics;
DROP TABLE metrics;
ALTER TABLE metrics_new RENAME TO metrics;
CREATE INDEX metrics_model_id ON metrics (model_id) WHERE model_id IS NOT NULL;
