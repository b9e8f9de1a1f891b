-- Workspaces (= Kubernetes namespaces): experiments and registered models belong to one, and
-- names are unique per workspace, as in MLflow. Runs, logged models and datasets follow their
-- experiment, versions, tags and aliases their model, through ids. The promotion history keeps
-- the workspace its model was in, so history asked by name stays inside the workspace. Existing
-- rows land in 'default'. Forward-only.
ALTER TABLE experiments ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE experiments DROP CONSTRAINT experiments_name_key;
ALTER TABLE experiments ADD CONSTRAINT experiments_workspace_name_key UNIQUE (workspace, name);

ALTER TABLE registered_models ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE registered_models DROP CONSTRAINT registered_models_name_key;
ALTER TABLE registered_models ADD CONSTRAINT registered_models_workspace_name_key UNIQUE (workspace, name);

-- Adding a column with a default rewrites no row, so the append-only triggers do not fire.
ALTER TABLE promotions ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
CREATE INDEX promotions_workspace_model_name ON promotions (workspace, model_name, promotion_id);
DROP INDEX promotions_model_name;
