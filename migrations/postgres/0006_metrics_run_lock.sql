-- log-batch writes up to 1000 metric points a request. The foreign key from metrics to runs
-- checked the run once per point, about a third of the write's database time. Every write of
-- metrics now locks the run row once (FOR KEY SHARE, the lock each check took) in the same
-- statement, and only points of an existing run are inserted. Runs are never hard-deleted;
-- code that ever does must delete the run's metrics itself (no cascade any more).
ALTER TABLE metrics DROP CONSTRAINT metrics_run_uuid_fkey;
