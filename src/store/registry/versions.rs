//! Model versions: register, read, update, stage transitions, delete and tags.

use super::ownership::{
    Actor, OwnedField, Ownership, RegistryRef, check_field_writable, check_object_writable,
    check_ownership_fields, check_tag_writable, refuse_owner_tag,
};
use super::policies::Target;
use super::promotions::{PromotionTx, alias_moved, refused, stage_moved};
use super::{
    ModelVersion, NewModelVersion, REDACTED_RUN_ID, REDACTED_RUN_LINK, REDACTED_SOURCE, RegistryTx,
    STATUS_READY, Stage, VERSION_COLUMNS, VERSIONS_FROM, VersionRow, deduplicated, model_not_found,
    validate_model_name, validate_registry_tag, version_not_found,
};
use crate::store::notify::{ChangeKind, Publish, RegistryChange};
use crate::store::{
    BeginWrite, Error, KeyValue, Result, Store, now_millis, with_pool, with_write_pool,
};

impl Store {
    /// Registers a new version of an existing model. Its number is one more than the highest
    /// ever handed out for the model, assigned atomically. The source is validated against
    /// `run_id`/`model_id` as MLflow's server does, and its download location resolved.
    #[tracing::instrument(name = "store.create_model_version", skip_all)]
    pub async fn create_model_version(&self, new: NewModelVersion) -> Result<ModelVersion> {
        validate_model_name(&new.name)?;
        for tag in &new.tags {
            validate_registry_tag(tag)?;
        }
        refuse_owner_tag(&new.tags)?;
        if let Some(ownership) = &new.ownership {
            check_ownership_fields(RegistryRef::Version(&new.name, 0), ownership)?;
            if let Some(existing) = self.owned_version(&ownership.owner.uid).await? {
                return Ok(existing);
            }
        }
        let resolved = self.resolve_source(&new).await?;
        let ownership = new.ownership.as_ref();
        let creator = new
            .user_id
            .clone()
            .or_else(|| ownership.map(|ownership| ownership.owner.path()));
        let now = now_millis();
        let version = with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            // The counter update is the first write: it locks the model row until commit, so
            // concurrent creates on one model take turns and each sees the previous number.
            let (registered_model_id, version) = sqlx::query_as::<_, (i64, i64)>(
                "UPDATE registered_models SET last_version = last_version + 1, last_updated_time = $1 \
                 WHERE name = $2 AND workspace = $3 RETURNING registered_model_id, last_version",
            )
            .bind(now)
            .bind(&new.name)
            .bind(self.workspace())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| model_not_found(&new.name))?;
            sqlx::query(
                "INSERT INTO model_versions (registered_model_id, version, creation_time, last_updated_time, \
                 description, current_stage, source, storage_location, run_id, run_link, model_id, status, \
                 owner_namespace, owner_kind, owner_name, owner_uid, owned_fields, user_id) \
                 VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
            )
            .bind(registered_model_id)
            .bind(version)
            .bind(now)
            .bind(new.description.as_deref().unwrap_or_default())
            .bind(Stage::None.as_str())
            .bind(&resolved.source)
            .bind(&resolved.storage_location)
            .bind(&resolved.run_id)
            .bind(new.run_link.as_deref().unwrap_or_default())
            .bind(resolved.model_id.as_deref())
            .bind(STATUS_READY)
            .bind(ownership.map(|o| o.owner.namespace.as_str()))
            .bind(ownership.map(|o| o.owner.kind.as_str()))
            .bind(ownership.map(|o| o.owner.name.as_str()))
            .bind(ownership.map(|o| o.owner.uid.as_str()))
            .bind(ownership.map(Ownership::fields_text).unwrap_or_default())
            .bind(&creator)
            .execute(&mut *tx)
            .await?;
            for (key, value) in deduplicated(&new.tags) {
                sqlx::query(
                    "INSERT INTO model_version_tags (registered_model_id, version, key, value, set_by) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                    .bind(registered_model_id)
                    .bind(version)
                    .bind(key)
                    .bind(value)
                    .bind(&creator)
                    .execute(&mut *tx)
                    .await?;
            }
            if let Some(ownership) = ownership {
                tx.write_owner_tag(registered_model_id, Some(version), Some(&ownership.owner)).await?;
            }
            tx.publish(&[RegistryChange {
                version: Some(version),
                stage: Some(Stage::None.as_str().to_owned()),
                ..RegistryChange::new(ChangeKind::VersionCreated, self.workspace(), &new.name)
            }])
            .await?;
            tx.commit().await?;
            version
        });
        if let Some(model_id) = &resolved.model_id
            && let Err(error) = self.record_registration(model_id, &new.name, version).await
        {
            // The version is committed: failing the request now would make the client register
            // it again. The tag only feeds the UI.
            tracing::warn!(%model_id, name = %new.name, version, error = %error,
                "could not record the registration on the logged model");
        }
        self.get_model_version(&new.name, version).await
    }

    /// Reads a live model version with its tags and aliases.
    #[tracing::instrument(name = "store.get_model_version", skip_all)]
    pub async fn get_model_version(&self, name: &str, version: i64) -> Result<ModelVersion> {
        validate_model_name(name)?;
        let sql = format!(
            "SELECT {VERSION_COLUMNS}{VERSIONS_FROM} WHERE rm.name = $1 AND mv.version = $2 \
             AND mv.deleted_time IS NULL AND rm.workspace = $3"
        );
        let row = with_pool!(self, pool => sqlx::query_as::<_, VersionRow>(&sql)
            .bind(name)
            .bind(version)
            .bind(self.workspace())
            .fetch_optional(pool)
            .await)?
        .ok_or_else(|| version_not_found(name, version))?;
        Ok(self.model_versions_from(vec![row]).await?.remove(0))
    }

    /// Where a version's files are: the run's or logged model's artifact location for
    /// `runs:/`/`models:/` sources, the source itself otherwise.
    #[tracing::instrument(name = "store.get_model_version_download_uri", skip_all)]
    pub async fn get_model_version_download_uri(&self, name: &str, version: i64) -> Result<String> {
        Ok(self
            .get_model_version(name, version)
            .await?
            .storage_location)
    }

    /// Sets (or, with `None`, clears) a version's description.
    #[tracing::instrument(name = "store.update_model_version", skip_all)]
    pub async fn update_model_version(
        &self,
        name: &str,
        version: i64,
        description: Option<&str>,
        actor: Actor<'_>,
    ) -> Result<ModelVersion> {
        validate_model_name(name)?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            let row = tx.live_version(&model, version).await?;
            check_field_writable(row.ownership(), OwnedField::Description, actor, || row.describe())?;
            sqlx::query("UPDATE model_versions SET description = $1, last_updated_time = $2 WHERE registered_model_id = $3 AND version = $4")
                .bind(description)
                .bind(now_millis())
                .bind(model.registered_model_id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        self.get_model_version(name, version).await
    }

    /// Moves a version to `stage`. With `archive_existing_versions` (only for Staging and
    /// Production) every other live version in that stage becomes Archived in the same
    /// transaction; an owned stage among them refuses the whole transition.
    #[tracing::instrument(name = "store.transition_model_version_stage", skip_all)]
    pub async fn transition_model_version_stage(
        &self,
        name: &str,
        version: i64,
        stage: Stage,
        archive_existing_versions: bool,
        actor: Actor<'_>,
    ) -> Result<ModelVersion> {
        validate_model_name(name)?;
        if archive_existing_versions && !stage.is_active() {
            return Err(Error::Invalid(format!(
                "Model version transition cannot archive existing model versions because '{stage}' \
                 is not an Active stage. Valid stages are ['Staging', 'Production']"
            )));
        }
        let now = now_millis();
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            let row = tx.live_version(&model, version).await?;
            check_field_writable(row.ownership(), OwnedField::Stage, actor, || row.describe())?;
            // The candidate's entry is judged first; a refusal leaves the other versions alone.
            let owner = row.ownership().map(|ownership| ownership.owner);
            let (who, mut judged) = stage_moved(actor, &[owner.as_ref()], &[(version, row.stage(), stage)]);
            if let Some(entry) = judged.first_mut()
                && let Some(denied) = refused(&mut *tx, &model, &who, entry, Target::Stage(stage), version).await?
            {
                tx.commit().await?;
                return Err(denied);
            }
            let mut changes = Vec::new();
            let mut moves = vec![(version, row.stage(), stage)];
            let mut owners = vec![row.ownership().map(|ownership| ownership.owner)];
            if archive_existing_versions {
                let sql = format!(
                    "SELECT {VERSION_COLUMNS}{VERSIONS_FROM} WHERE mv.registered_model_id = $1 \
                     AND mv.version != $2 AND mv.current_stage = $3 AND mv.deleted_time IS NULL ORDER BY mv.version"
                );
                let others = sqlx::query_as::<_, VersionRow>(&sql)
                    .bind(model.registered_model_id)
                    .bind(version)
                    .bind(stage.as_str())
                    .fetch_all(&mut *tx)
                    .await?;
                for other in &others {
                    check_field_writable(other.ownership(), OwnedField::Stage, actor, || other.describe())?;
                    moves.push((other.version, other.stage(), Stage::Archived));
                    owners.push(other.ownership().map(|ownership| ownership.owner));
                    changes.push(RegistryChange {
                        version: Some(other.version),
                        stage: Some(Stage::Archived.as_str().to_owned()),
                        ..RegistryChange::new(ChangeKind::StageChanged, self.workspace(), name)
                    });
                }
                sqlx::query(
                    "UPDATE model_versions SET current_stage = $1, last_updated_time = $2 WHERE registered_model_id = $3 \
                     AND version != $4 AND current_stage = $5 AND deleted_time IS NULL",
                )
                .bind(Stage::Archived.as_str())
                .bind(now)
                .bind(model.registered_model_id)
                .bind(version)
                .bind(stage.as_str())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("UPDATE model_versions SET current_stage = $1, last_updated_time = $2 WHERE registered_model_id = $3 AND version = $4")
                .bind(stage.as_str())
                .bind(now)
                .bind(model.registered_model_id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            tx.touch_model(model.registered_model_id, now).await?;
            let owners: Vec<_> = owners.iter().map(Option::as_ref).collect();
            let (who, mut entries) = stage_moved(actor, &owners, &moves);
            if let (Some(first), Some(candidate)) = (entries.first_mut(), judged.pop()) {
                first.results = candidate.results;
            }
            tx.append_promotions(&model, &who, &entries).await?;
            changes.push(RegistryChange {
                version: Some(version),
                stage: Some(stage.as_str().to_owned()),
                ..RegistryChange::new(ChangeKind::StageChanged, self.workspace(), name)
            });
            tx.publish(&changes).await?;
            tx.commit().await?;
        });
        self.get_model_version(name, version).await
    }

    /// Deletes a version (a tombstone keeps its number, which is never handed out again) and
    /// the aliases pointing at it. Refused through the API when the version is owned, or when
    /// an alias pointing at it is owned by the model's resource.
    #[tracing::instrument(name = "store.delete_model_version", skip_all)]
    pub async fn delete_model_version(
        &self,
        name: &str,
        version: i64,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        let now = now_millis();
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            let row = tx.live_version(&model, version).await?;
            check_object_writable(row.ownership(), None, actor, || row.describe())?;
            let aliases = sqlx::query_scalar::<_, String>(
                "SELECT alias FROM registered_model_aliases WHERE registered_model_id = $1 AND version = $2 ORDER BY alias",
            )
            .bind(model.registered_model_id)
            .bind(version)
            .fetch_all(&mut *tx)
            .await?;
            if !aliases.is_empty() {
                check_field_writable(model.ownership(), OwnedField::Aliases, actor, || model.describe())?;
            }
            sqlx::query("DELETE FROM registered_model_aliases WHERE registered_model_id = $1 AND version = $2")
                .bind(model.registered_model_id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE model_versions SET deleted_time = $1, last_updated_time = $1, description = NULL, \
                 source = $2, storage_location = $2, run_id = $3, run_link = $4, status_message = NULL, \
                 owner_namespace = NULL, owner_kind = NULL, owner_name = NULL, owner_uid = NULL, owned_fields = '' \
                 WHERE registered_model_id = $5 AND version = $6",
            )
            .bind(now)
            .bind(REDACTED_SOURCE)
            .bind(REDACTED_RUN_ID)
            .bind(REDACTED_RUN_LINK)
            .bind(model.registered_model_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
            tx.touch_model(model.registered_model_id, now).await?;
            for alias in &aliases {
                let (who, entry) = alias_moved(actor, &model, alias, Some(version), None);
                tx.append_promotions(&model, &who, &[entry]).await?;
            }
            let mut changes: Vec<RegistryChange> = aliases
                .into_iter()
                .map(|alias| RegistryChange {
                    alias: Some(alias),
                    ..RegistryChange::new(ChangeKind::AliasDeleted, self.workspace(), name)
                })
                .collect();
            changes.push(RegistryChange {
                version: Some(version),
                ..RegistryChange::new(ChangeKind::VersionDeleted, self.workspace(), name)
            });
            tx.publish(&changes).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Sets (upserts) a model version tag, recording who set its value (the four-eyes rule of
    /// promotion policies reads it).
    #[tracing::instrument(name = "store.set_model_version_tag", skip_all)]
    pub async fn set_model_version_tag(
        &self,
        name: &str,
        version: i64,
        tag: &KeyValue,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        validate_registry_tag(tag)?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            let row = tx.live_version(&model, version).await?;
            check_tag_writable(row.ownership(), &tag.key, actor, || row.describe())?;
            let owner = row.ownership().map(|ownership| ownership.owner);
            sqlx::query(
                "INSERT INTO model_version_tags (registered_model_id, version, key, value, set_by) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (registered_model_id, version, key) DO UPDATE SET value = excluded.value, set_by = excluded.set_by",
            )
            .bind(model.registered_model_id)
            .bind(version)
            .bind(&tag.key)
            .bind(&tag.value)
            .bind(actor.identity(&[owner.as_ref()]))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes a model version tag; a missing tag is fine (MLflow answers `{}`).
    #[tracing::instrument(name = "store.delete_model_version_tag", skip_all)]
    pub async fn delete_model_version_tag(
        &self,
        name: &str,
        version: i64,
        key: &str,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        validate_registry_tag(&KeyValue::new(key, ""))?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            let row = tx.live_version(&model, version).await?;
            check_tag_writable(row.ownership(), key, actor, || row.describe())?;
            sqlx::query("DELETE FROM model_version_tags WHERE registered_model_id = $1 AND version = $2 AND key = $3")
                .bind(model.registered_model_id)
                .bind(version)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }
}
