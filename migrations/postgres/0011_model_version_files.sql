-- What a model version's MLmodel file shows, read by the tracking server when the version is
-- created (the file is written before MLflow registers the model and never changes after), so
-- that the promotion policies' modelMetadata rule can be judged inside the store transaction
-- that moves an alias or a stage, on every path (the operator has no artifact store). No row:
-- the file was not read (the version was created elsewhere, or its files are not served by the
-- tracking server). Forward-only.

CREATE TABLE model_version_files (
    registered_model_id BIGINT  NOT NULL,
    version             BIGINT  NOT NULL,
    -- Whether the version's files hold an MLmodel at all.
    has_mlmodel         BOOLEAN NOT NULL,
    -- MLmodel's `signature` key.
    has_signature       BOOLEAN NOT NULL,
    -- MLmodel's `saved_input_example_info` key (the input example MLflow saved beside it).
    has_input_example   BOOLEAN NOT NULL,
    read_time           BIGINT  NOT NULL,
    PRIMARY KEY (registered_model_id, version),
    FOREIGN KEY (registered_model_id, version)
        REFERENCES model_versions (registered_model_id, version) ON DELETE CASCADE
);
