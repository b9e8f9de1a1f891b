-- One encoding of what a Kubernetes resource owns, on experiments, registered models and model
-- versions alike: the column owned_fields lists owned entries one per line, sorted. An entry is
-- a whole field ('aliases', 'description', 'stage', 'tags') or one tag, 'tags.<key>'.
-- Before: registry rows listed fields comma-separated; experiments listed bare tag keys one per
-- line in owned_tag_keys. Forward-only.
UPDATE registered_models SET owned_fields = replace(owned_fields, ',', chr(10));
UPDATE model_versions SET owned_fields = replace(owned_fields, ',', chr(10));
ALTER TABLE experiments RENAME COLUMN owned_tag_keys TO owned_fields;
UPDATE experiments SET owned_fields = 'tags.' || replace(owned_fields, chr(10), chr(10) || 'tags.')
    WHERE owned_fields <> '';
