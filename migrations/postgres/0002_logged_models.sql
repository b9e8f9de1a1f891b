-- MLflow 3 logged models and run outputs/model inputs. Forward-only.

CREATE TABLE logged_models (
    model_id                  TEXT   PRIMARY KEY,
    experiment_id             BIGINT NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
    name                      TEXT   NOT NULL,
    artifact_location         TEXT   NOT NULL,
    creation_timestamp_ms     BIGINT NOT NULL,
    last_updated_timestamp_ms BIGINT NOT NULL,
    status                    TEXT   NOT NULL,
    lifecycle_stage           TEXT   NOT NULL DEFAULT 'active',
    model_type                TEXT,
    source_run_id             TEXT,
    status_message            TEXT
);
CREATE INDEX logged_models_experiment ON logged_models (experiment_id, creation_timestamp_ms DESC, model_id);
CREATE INDEX logged_models_name ON logged_models (name);

CREATE TABLE logged_model_tags (
    model_id TEXT NOT NULL REFERENCES logged_models (model_id) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

CREATE TABLE logged_model_params (
    model_id TEXT NOT NULL REFERENCES logged_models (model_id) ON DELETE CASCADE,
    key      TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);

-- Models a run produced (`log_model`) and consumed.
CREATE TABLE run_model_outputs (
    run_uuid TEXT   NOT NULL REFERENCES runs (run_uuid) ON DELETE CASCADE,
    model_id TEXT   NOT NULL,
    step     BIGINT NOT NULL,
    PRIMARY KEY (run_uuid, model_id)
);

CREATE TABLE run_model_inputs (
    run_uuid TEXT NOT NULL REFERENCES runs (run_uuid) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    PRIMARY KEY (run_uuid, model_id)
);

-- Metrics logged with a model_id show in that model's data.
CREATE INDEX metrics_model_id ON metrics (model_id) WHERE model_id IS NOT NULL;
