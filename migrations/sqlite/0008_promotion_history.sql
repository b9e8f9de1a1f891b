-- The promotion history (and the promotion policies, below): every alias set, move and removal and every stage transition of a
-- registered model, allowed or refused, appended in the transaction that makes (or refuses) it.
-- Append-only: the store never updates or deletes a row, and triggers refuse anyone who tries.
-- No foreign key: deleting a model keeps its history; registered_model_id follows renames
-- (AUTOINCREMENT: ids of deleted models are never handed out again). Forward-only.

CREATE TABLE promotions (
    promotion_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    time                BIGINT  NOT NULL,
    registered_model_id BIGINT  NOT NULL,
    -- The model's name when the entry was written.
    model_name          TEXT    NOT NULL,
    target_type         TEXT    NOT NULL CHECK (target_type IN ('alias', 'stage')),
    -- The alias, or the canonical stage the version moved to.
    target              TEXT    NOT NULL,
    -- Alias: the version that held it before (NULL when it was unset). Stage: NULL.
    from_version        BIGINT,
    -- Alias: the version it points at afterwards (NULL when removed). Stage: the version.
    to_version          BIGINT,
    -- Stage: the version's stage before the transition.
    from_stage          TEXT,
    -- Who: the authenticated user, 'anonymous', or the resource 'namespace/Kind/name'.
    actor               TEXT    NOT NULL,
    path                TEXT    NOT NULL CHECK (path IN ('api', 'operator')),
    allowed             BOOLEAN NOT NULL,
    rollback            BOOLEAN NOT NULL DEFAULT FALSE,
    -- Why: the promotion policies' results, JSON (an empty list when none applied).
    results             TEXT    NOT NULL DEFAULT '[]'
);
CREATE INDEX promotions_model_target ON promotions (registered_model_id, target, promotion_id);
CREATE INDEX promotions_model_name ON promotions (model_name, promotion_id);

CREATE TRIGGER promotions_no_update BEFORE UPDATE ON promotions
BEGIN
    SELECT RAISE(ABORT, 'the promotion history is append-only: UPDATE refused');
END;
CREATE TRIGGER promotions_no_delete BEFORE DELETE ON promotions
BEGIN
    SELECT RAISE(ABORT, 'the promotion history is append-only: DELETE refused');
END;

-- Promotion policies, copied from the PromotionPolicy resources by the operator so that every
-- path that moves an alias or a stage (the REST API included, which does not watch Kubernetes)
-- evaluates them in its own transaction. spec is the policy as JSON (store::registry::policies).
CREATE TABLE promotion_policies (
    uid          TEXT   PRIMARY KEY,
    namespace    TEXT   NOT NULL,
    name         TEXT   NOT NULL,
    spec         TEXT   NOT NULL,
    updated_time BIGINT NOT NULL
);
