-- Tracking schema: experiments, runs, params, metrics, tags, datasets.
-- Times are milliseconds since the epoch (MLflow's wire unit). Forward-only.

CREATE TABLE experiments (
    experiment_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    name              TEXT    NOT NULL UNIQUE,
    artifact_location TEXT    NOT NULL,
    lifecycle_stage   TEXT    NOT NULL DEFAULT 'active',
    creation_time     BIGINT  NOT NULL,
    last_update_time  BIGINT  NOT NULL
);

CREATE TABLE experiment_tags (
    experiment_id BIGINT NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
    key           TEXT   NOT NULL,
    value         TEXT   NOT NULL,
    PRIMARY KEY (experiment_id, key)
);

CREATE TABLE runs (
    run_uuid        TEXT   PRIMARY KEY,
    name            TEXT   NOT NULL,
    experiment_id   BIGINT NOT NULL REFERENCES experiments (experiment_id),
    user_id         TEXT   NOT NULL DEFAULT '',
    status          TEXT   NOT NULL,
    start_time      BIGINT NOT NULL,
    end_time        BIGINT,
    lifecycle_stage TEXT   NOT NULL DEFAULT 'active',
    artifact_uri    TEXT   NOT NULL,
    deleted_time    BIGINT
);
CREATE INDEX runs_experiment_start ON runs (experiment_id, start_time DESC, run_uuid);

CREATE TABLE params (
    run_uuid TEXT NOT NULL REFERENCES runs (run_uuid) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (run_uuid, key)
);

CREATE TABLE tags (
    run_uuid TEXT NOT NULL REFERENCES runs (run_uuid) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (run_uuid, key)
);

-- Every logged point. Identical points are stored once (MLflow's primary key);
-- the key order serves get-history (run, key) and range scans by step.
-- NaN is stored as value 0 with is_nan, and +-inf clamped, exactly as MLflow does,
-- so the two stores answer filters and sorts alike.
CREATE TABLE metrics (
    run_uuid       TEXT             NOT NULL REFERENCES runs (run_uuid) ON DELETE CASCADE,
    key            TEXT             NOT NULL,
    step           BIGINT           NOT NULL,
    timestamp      BIGINT           NOT NULL,
    value          REAL NOT NULL,
    is_nan         BOOLEAN          NOT NULL,
    model_id       TEXT,
    dataset_name   TEXT,
    dataset_digest TEXT,
    PRIMARY KEY (run_uuid, key, step, timestamp, value, is_nan)
);

-- The point with the greatest (step, timestamp, value) per run and key.
CREATE TABLE latest_metrics (
    run_uuid  TEXT             NOT NULL REFERENCES runs (run_uuid) ON DELETE CASCADE,
    key       TEXT             NOT NULL,
    step      BIGINT           NOT NULL,
    timestamp BIGINT           NOT NULL,
    value     REAL NOT NULL,
    is_nan    BOOLEAN          NOT NULL,
    PRIMARY KEY (run_uuid, key)
);
CREATE INDEX latest_metrics_key_value ON latest_metrics (key, value);

CREATE TABLE datasets (
    dataset_uuid   TEXT   PRIMARY KEY,
    experiment_id  BIGINT NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
    name           TEXT   NOT NULL,
    digest         TEXT   NOT NULL,
    source_type    TEXT   NOT NULL,
    source         TEXT   NOT NULL,
    schema         TEXT,
    profile        TEXT,
    UNIQUE (experiment_id, name, digest)
);

CREATE TABLE run_inputs (
    run_uuid     TEXT NOT NULL REFERENCES runs (run_uuid) ON DELETE CASCADE,
    dataset_uuid TEXT NOT NULL REFERENCES datasets (dataset_uuid) ON DELETE CASCADE,
    PRIMARY KEY (run_uuid, dataset_uuid)
);

CREATE TABLE run_input_tags (
    run_uuid     TEXT NOT NULL,
    dataset_uuid TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (run_uuid, dataset_uuid, key),
    FOREIGN KEY (run_uuid, dataset_uuid) REFERENCES run_inputs (run_uuid, dataset_uuid) ON DELETE CASCADE
);

INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time)
VALUES (0, 'Default', 'mlflow-artifacts:/0', 'active',
        CAST(unixepoch('subsec') * 1000 AS INTEGER), CAST(unixepoch('subsec') * 1000 AS INTEGER));
