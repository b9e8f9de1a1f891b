-- Postgres dropped the per-point foreign key from metrics to runs (see its 0006). SQLite keeps
-- it: its checks are cheap index probes and writers are serialised. This file keeps the two
-- migration histories in step.
SELECT 1;
