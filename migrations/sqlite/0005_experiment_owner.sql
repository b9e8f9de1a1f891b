-- An experiment can be declared by a Kubernetes Experiment resource (the operator): the owner
-- columns name it, and owned_tag_keys lists the tags it declares (one key per line). While
-- owned, the REST API may not rename, delete or restore the experiment, nor change those tags.
ALTER TABLE experiments ADD COLUMN owner_namespace TEXT;
ALTER TABLE experiments ADD COLUMN owner_kind TEXT;
ALTER TABLE experiments ADD COLUMN owner_name TEXT;
ALTER TABLE experiments ADD COLUMN owner_uid TEXT;
ALTER TABLE experiments ADD COLUMN owned_tag_keys TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX experiments_owner_uid ON experiments (owner_uid) WHERE owner_uid IS NOT NULL;
