-- Model registry: registered models, their versions, tags and aliases; and, on models and
-- versions, the Kubernetes resource that owns the row and which of its fields it owns.
-- Times are milliseconds since the epoch (MLflow's wire unit). Forward-only.
--
-- Ownership columns (same on both tables): owner_namespace/owner_kind/owner_name/owner_uid
-- are all NULL (unowned) or all set; owned_fields is a comma-separated, sorted list of field
-- names ('aliases', 'description', 'stage', 'tags'); a field not listed stays writable through
-- the REST API. At most one row of a table is owned by one uid, so an operator that crashed
-- between the store write and its status update finds its row again instead of creating another.

CREATE TABLE registered_models (
    -- A surrogate key, so that a rename is one UPDATE and versions, tags and aliases follow.
    registered_model_id INTEGER PRIMARY KEY AUTOINCREMENT,
    name                TEXT   NOT NULL UNIQUE,
    description         TEXT,
    creation_time       BIGINT NOT NULL,
    last_updated_time   BIGINT NOT NULL,
    -- Highest version number ever handed out. Incremented with UPDATE ... RETURNING in the
    -- transaction that inserts the version: the row lock makes concurrent creates take turns,
    -- and numbers of deleted versions are never handed out again.
    last_version        BIGINT NOT NULL DEFAULT 0,
    owner_namespace     TEXT,
    owner_kind          TEXT,
    owner_name          TEXT,
    owner_uid           TEXT,
    owned_fields        TEXT   NOT NULL DEFAULT '',
    CHECK ((owner_uid IS NULL) = (owner_kind IS NULL)
       AND (owner_uid IS NULL) = (owner_name IS NULL)
       AND (owner_uid IS NULL) = (owner_namespace IS NULL))
);
CREATE UNIQUE INDEX registered_models_owner_uid ON registered_models (owner_uid)
    WHERE owner_uid IS NOT NULL;

CREATE TABLE registered_model_tags (
    registered_model_id BIGINT NOT NULL REFERENCES registered_models (registered_model_id) ON DELETE CASCADE,
    key                 TEXT   NOT NULL,
    value               TEXT   NOT NULL,
    PRIMARY KEY (registered_model_id, key)
);
CREATE INDEX registered_model_tags_key_value ON registered_model_tags (key, value);

-- Deleting a version is a soft delete (deleted_time set, source/run redacted as MLflow does):
-- the row keeps its number, so the number is never reused and an operator can restore it.
CREATE TABLE model_versions (
    registered_model_id BIGINT NOT NULL REFERENCES registered_models (registered_model_id) ON DELETE CASCADE,
    version             BIGINT NOT NULL,
    creation_time       BIGINT NOT NULL,
    last_updated_time   BIGINT NOT NULL,
    description         TEXT,
    -- Canonical spelling: 'None', 'Staging', 'Production' or 'Archived'.
    current_stage       TEXT   NOT NULL DEFAULT 'None'
        CHECK (current_stage IN ('None', 'Staging', 'Production', 'Archived')),
    source              TEXT   NOT NULL,
    -- Where the files really are (what get-download-uri answers), resolved at creation:
    -- runs:/ sources to the run's artifact URI, models:/ sources to the model's location.
    storage_location    TEXT   NOT NULL,
    run_id              TEXT   NOT NULL DEFAULT '',
    run_link            TEXT   NOT NULL DEFAULT '',
    -- MLflow 3 logged model ('m-…') the version was registered from, if any.
    model_id            TEXT,
    status              TEXT   NOT NULL DEFAULT 'READY',
    status_message      TEXT,
    deleted_time        BIGINT,
    owner_namespace     TEXT,
    owner_kind          TEXT,
    owner_name          TEXT,
    owner_uid           TEXT,
    owned_fields        TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (registered_model_id, version),
    CHECK ((owner_uid IS NULL) = (owner_kind IS NULL)
       AND (owner_uid IS NULL) = (owner_name IS NULL)
       AND (owner_uid IS NULL) = (owner_namespace IS NULL))
);
CREATE UNIQUE INDEX model_versions_owner_uid ON model_versions (owner_uid)
    WHERE owner_uid IS NOT NULL;
CREATE INDEX model_versions_run_id ON model_versions (run_id);
CREATE INDEX model_versions_last_updated ON model_versions (last_updated_time DESC);

CREATE TABLE model_version_tags (
    registered_model_id BIGINT NOT NULL,
    version             BIGINT NOT NULL,
    key                 TEXT   NOT NULL,
    value               TEXT   NOT NULL,
    PRIMARY KEY (registered_model_id, version, key),
    FOREIGN KEY (registered_model_id, version)
        REFERENCES model_versions (registered_model_id, version) ON DELETE CASCADE
);
CREATE INDEX model_version_tags_key_value ON model_version_tags (key, value);

-- One row per alias; the primary key makes an alias unique per model, and moving it is an
-- upsert of one row, so readers see the old or the new version, never neither.
CREATE TABLE registered_model_aliases (
    registered_model_id BIGINT NOT NULL,
    alias               TEXT   NOT NULL,
    version             BIGINT NOT NULL,
    PRIMARY KEY (registered_model_id, alias),
    FOREIGN KEY (registered_model_id, version)
        REFERENCES model_versions (registered_model_id, version) ON DELETE CASCADE
);
