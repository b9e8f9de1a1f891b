-- Indexes for run search: filters on params, tags and metrics, and metric order keys.
-- Forward-only.
--
-- params / tags: (key, value, run_uuid), so `params.model = 'vit'` or `tags.team IN (...)`
-- reads only the matching index entries. (On Postgres these indexes are partial because of its
-- B-tree entry size limit; SQLite has no such limit.)
CREATE INDEX params_key_value ON params (key, value, run_uuid);
CREATE INDEX tags_key_value ON tags (key, value, run_uuid);

-- latest_metrics: run_uuid and is_nan added to the (key, value) index, so metric filters and
-- metric order keys are covered by the index; it replaces latest_metrics_key_value.
CREATE INDEX latest_metrics_key_value_run ON latest_metrics (key, value, run_uuid, is_nan);
DROP INDEX latest_metrics_key_value;
