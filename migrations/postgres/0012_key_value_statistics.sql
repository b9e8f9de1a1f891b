-- Statistics on (key, value) pairs of params and tags, for run search at scale (issue #20).
-- Forward-only.
--
-- The planner took key and value as independent and the partial indexes' length predicate
-- (0004) as a default one-in-three, so it estimated `params.model = 'vit'` at a tenth of the
-- runs that have it. For `params.model = 'vit' and params.optimizer = 'adam'` in the default
-- order it then expected a few dozen runs, joined and sorted all of them (12,500 of 100,000
-- runs: 280 ms, linear in the experiment), instead of walking the runs in start-time order and
-- stopping after one page (18 ms at any size). A most-common-values list over key, value and
-- the predicate's expression gives the frequency of each common pair directly.
CREATE STATISTICS params_key_value_stats (mcv) ON key, value, (char_length(key) + char_length(value)) FROM params;
CREATE STATISTICS tags_key_value_stats (mcv) ON key, value, (char_length(key) + char_length(value)) FROM tags;
ANALYZE params;
ANALYZE tags;
