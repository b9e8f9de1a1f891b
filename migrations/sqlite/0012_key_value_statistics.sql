-- Postgres gained statistics on the (key, value) pairs of params and tags (see its 0013);
-- SQLite has no extended statistics. This file keeps the two migration histories in step.
SELECT 1;
