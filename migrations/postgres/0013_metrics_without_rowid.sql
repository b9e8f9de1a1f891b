-- SQLite's metrics table was rebuilt without rowid and without the per-point foreign key to
-- runs (see its 0013); Postgres dropped that key in 0006 and has no rowid. This file keeps the
-- two migration histories in step.
SELECT 1;
