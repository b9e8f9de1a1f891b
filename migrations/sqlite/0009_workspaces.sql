-- Workspaces (= Kubernetes namespaces): experiments and registered models belong to one, and
-- names are unique per workspace, as in MLflow. Runs, logged models and datasets follow their
-- experiment, versions, tags and aliases their model, through ids. The promotion history keeps
-- the workspace its model was in, so history asked by name stays inside the workspace. Existing
-- rows land in 'default'. Forward-only.
--
-- SQLite cannot drop the inline UNIQUE (name), so both tables are rebuilt: new table, rows
-- copied with their ids, AUTOINCREMENT counter carried over, old table dropped, new one renamed.
-- Store::migrate runs migrations with foreign keys off, so dropping the old table neither
-- cascades into its children nor fails on them; the children's REFERENCES name the table and
-- resolve to the renamed one, and the store checks foreign_key_check afterwards.

CREATE TABLE experiments_rebuilt (
    experiment_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    name              TEXT    NOT NULL,
    artifact_location TEXT    NOT NULL,
    lifecycle_stage   TEXT    NOT NULL DEFAULT 'active',
    creation_time     BIGINT  NOT NULL,
    last_update_time  BIGINT  NOT NULL,
    owner_namespace   TEXT,
    owner_kind        TEXT,
    owner_name        TEXT,
    owner_uid         TEXT,
    owned_fields      TEXT    NOT NULL DEFAULT '',
    workspace         TEXT    NOT NULL DEFAULT 'default',
    UNIQUE (workspace, name)
);
INSERT INTO experiments_rebuilt (experiment_id, name, artifact_location, lifecycle_stage, creation_time,
        last_update_time, owner_namespace, owner_kind, owner_name, owner_uid, owned_fields)
    SELECT experiment_id, name, artifact_location, lifecycle_stage, creation_time,
        last_update_time, owner_namespace, owner_kind, owner_name, owner_uid, owned_fields
    FROM experiments;
DELETE FROM sqlite_sequence WHERE name = 'experiments_rebuilt';
INSERT INTO sqlite_sequence (name, seq) SELECT 'experiments_rebuilt', seq FROM sqlite_sequence WHERE name = 'experiments';
DROP TABLE experiments;
ALTER TABLE experiments_rebuilt RENAME TO experiments;
CREATE UNIQUE INDEX experiments_owner_uid ON experiments (owner_uid) WHERE owner_uid IS NOT NULL;

CREATE TABLE registered_models_rebuilt (
    -- A surrogate key, so that a rename is one UPDATE and versions, tags and aliases follow.
    registered_model_id INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT   NOT NULL,
    description         TEXT,
    creation_time       BIGINT NOT NULL,
    last_updated_time   BIGINT NOT NULL,
    -- Highest version number ever handed out (see 0003).
    last_version        BIGINT NOT NULL DEFAULT 0,
    owner_namespace     TEXT,
    owner_kind          TEXT,
    owner_name          TEXT,
    owner_uid           TEXT,
    owned_fields        TEXT   NOT NULL DEFAULT '',
    workspace           TEXT   NOT NULL DEFAULT 'default',
    UNIQUE (workspace, name),
    CHECK ((owner_uid IS NULL) = (owner_kind IS NULL)
       AND (owner_uid IS NULL) = (owner_name IS NULL)
       AND (owner_uid IS NULL) = (owner_namespace IS NULL))
);
INSERT INTO registered_models_rebuilt (registered_model_id, name, description, creation_time,
        last_updated_time, last_version, owner_namespace, owner_kind, owner_name, owner_uid, owned_fields)
    SELECT registered_model_id, name, description, creation_time,
        last_updated_time, last_version, owner_namespace, owner_kind, owner_name, owner_uid, owned_fields
    FROM registered_models;
DELETE FROM sqlite_sequence WHERE name = 'registered_models_rebuilt';
INSERT INTO sqlite_sequence (name, seq) SELECT 'registered_models_rebuilt', seq FROM sqlite_sequence WHERE name = 'registered_models';
DROP TABLE registered_models;
ALTER TABLE registered_models_rebuilt RENAME TO registered_models;
CREATE UNIQUE INDEX registered_models_owner_uid ON registered_models (owner_uid)
    WHERE owner_uid IS NOT NULL;

-- Adding a column with a default rewrites no row, so the append-only triggers do not fire.
ALTER TABLE promotions ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
CREATE INDEX promotions_workspace_model_name ON promotions (workspace, model_name, promotion_id);
DROP INDEX promotions_model_name;
