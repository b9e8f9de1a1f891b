-- Who made registry changes (issue #17, "identity in data"; the four-eyes rule of issue #19
-- reads both columns). NULL when the writer is unknown: a REST call without authentication,
-- or a row written before this migration.
-- Forward-only.

-- Who registered the version (MLflow's ModelVersion.user_id): the authenticated user, or the
-- resource 'namespace/Kind/name' the operator registered it for.
ALTER TABLE model_versions ADD COLUMN user_id TEXT;

-- Who last set the tag's value, named as model_versions.user_id is.
ALTER TABLE model_version_tags ADD COLUMN set_by TEXT;
