-- Indexes for run search: filters on params, tags and metrics, and metric order keys.
-- Forward-only.
--
-- params / tags: (key, value, run_uuid), so `params.model = 'vit'` or `tags.team IN (...)` is
-- an index-only scan that yields the matching run ids in order (two such filters merge-join).
-- A B-tree entry holds at most ~2.7 kB, and values may have 6,000 (params) or 8,000 (tags)
-- characters, so the indexes are partial: rows whose key and value have at most 600 characters
-- together (at most 2,400 bytes, plus the run id). The store repeats that predicate in equality
-- and IN filters whose key and values are that short, which is what lets the planner use them;
-- longer values are still found, without the index.
CREATE INDEX params_key_value ON params (key, value, run_uuid)
    WHERE char_length(key) + char_length(value) <= 600;
CREATE INDEX tags_key_value ON tags (key, value, run_uuid)
    WHERE char_length(key) + char_length(value) <= 600;

-- latest_metrics: run_uuid and is_nan added to the (key, value) index, so metric filters and
-- metric order keys are index-only scans; it replaces latest_metrics_key_value.
CREATE INDEX latest_metrics_key_value_run ON latest_metrics (key, value, run_uuid, is_nan);
DROP INDEX latest_metrics_key_value;
