//! Registered models: create, read, update, rename, delete, tags and latest versions.

use super::ownership::{
    Actor, OwnedField, Ownership, RegistryRef, check_field_writable, check_object_writable,
    check_ownership_fields, check_tag_writable, refuse_owner_tag,
};
use super::{
    MODEL_COLUMNS, ModelRow, ModelVersion, RegisteredModel, RegistryTx, Stage, VERSION_COLUMNS,
    VERSIONS_FROM, VersionRow, deduplicated, model_not_found, validate_model_name,
    validate_registry_tag,
};
use crate::store::notify::{ChangeKind, Publish, RegistryChange};
use crate::store::{
    BeginWrite, Error, KeyValue, Result, Store, now_millis, with_pool, with_write_pool,
};

impl Store {
    /// Creates a registered model, optionally owned from the start.
    #[tracing::instrument(name = "store.create_registered_model", skip_all)]
    pub async fn create_registered_model(
        &self,
        name: &str,
        tags: &[KeyValue],
        description: Option<&str>,
        ownership: Option<&Ownership>,
    ) -> Result<RegisteredModel> {
        validate_model_name(name)?;
        for tag in tags {
            validate_registry_tag(tag)?;
        }
        refuse_owner_tag(tags)?;
        if let Some(ownership) = ownership {
            check_ownership_fields(RegistryRef::Model(name), ownership)?;
            if let Some(owned) = self.owned_model_name(&ownership.owner.uid).await? {
                return Err(Error::AlreadyExists(format!(
                    "{} already owns registered model '{owned}'",
                    ownership.owner
                )));
            }
        }
        let now = now_millis();
        let inserted = with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let inserted = sqlx::query_scalar::<_, i64>(
                "INSERT INTO registered_models (name, description, creation_time, last_updated_time, \
                 owner_namespace, owner_kind, owner_name, owner_uid, owned_fields, workspace) \
                 VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9) RETURNING registered_model_id",
            )
            .bind(name)
            .bind(description)
            .bind(now)
            .bind(ownership.map(|o| o.owner.namespace.as_str()))
            .bind(ownership.map(|o| o.owner.kind.as_str()))
            .bind(ownership.map(|o| o.owner.name.as_str()))
            .bind(ownership.map(|o| o.owner.uid.as_str()))
            .bind(ownership.map(Ownership::fields_text).unwrap_or_default())
            .bind(self.workspace())
            .fetch_one(&mut *tx)
            .await;
            match inserted {
                Ok(id) => {
                    for (key, value) in deduplicated(tags) {
                        sqlx::query("INSERT INTO registered_model_tags (registered_model_id, key, value) VALUES ($1, $2, $3)")
                            .bind(id)
                            .bind(key)
                            .bind(value)
                            .execute(&mut *tx)
                            .await?;
                    }
                    if let Some(ownership) = ownership {
                        tx.write_owner_tag(id, None, Some(&ownership.owner)).await?;
                    }
                    tx.commit().await?;
                    Ok(())
                }
                Err(error) if crate::store::error::is_unique_violation(&error) => Err(error),
                Err(error) => return Err(error.into()),
            }
        });
        match inserted {
            Ok(()) => self.get_registered_model(name).await,
            // Either the name or (raced) the owner's uid is taken; the name is the usual case.
            Err(_) => Err(Error::AlreadyExists(format!(
                "Registered Model (name={name}) already exists."
            ))),
        }
    }

    /// Reads a registered model with its latest versions, tags and aliases.
    #[tracing::instrument(name = "store.get_registered_model", skip_all)]
    pub async fn get_registered_model(&self, name: &str) -> Result<RegisteredModel> {
        validate_model_name(name)?;
        let sql = format!(
            "SELECT {MODEL_COLUMNS} FROM registered_models rm WHERE rm.name = $1 AND rm.workspace = $2"
        );
        let row = with_pool!(self, pool => sqlx::query_as::<_, ModelRow>(&sql)
            .bind(name)
            .bind(self.workspace())
            .fetch_optional(pool)
            .await)?
        .ok_or_else(|| model_not_found(name))?;
        Ok(self.registered_models_from(vec![row]).await?.remove(0))
    }

    /// Sets (or, with `None`, clears) a registered model's description.
    #[tracing::instrument(name = "store.update_registered_model", skip_all)]
    pub async fn update_registered_model(
        &self,
        name: &str,
        description: Option<&str>,
        actor: Actor<'_>,
    ) -> Result<RegisteredModel> {
        validate_model_name(name)?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            check_field_writable(model.ownership(), OwnedField::Description, actor, || model.describe())?;
            sqlx::query("UPDATE registered_models SET description = $1, last_updated_time = $2 WHERE registered_model_id = $3")
                .bind(description)
                .bind(now_millis())
                .bind(model.registered_model_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        self.get_registered_model(name).await
    }

    /// Renames a registered model; versions, tags and aliases follow (they key on its id).
    /// A taken name is RESOURCE_ALREADY_EXISTS, as in MLflow. An owned model, or one with an
    /// owned version, is renamed only by its owner: the resources refer to it by name.
    #[tracing::instrument(name = "store.rename_registered_model", skip_all)]
    pub async fn rename_registered_model(
        &self,
        name: &str,
        new_name: &str,
        actor: Actor<'_>,
    ) -> Result<RegisteredModel> {
        if new_name.trim().is_empty() {
            return Err(Error::Invalid(
                "Missing value for required parameter 'new_name'. See the API docs for more information about request parameters.".into(),
            ));
        }
        validate_model_name(new_name)?;
        validate_model_name(name)?;
        let now = now_millis();
        let renamed = with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            check_object_writable(model.ownership(), Some("name"), actor, || model.describe())?;
            let sql = format!(
                "SELECT {VERSION_COLUMNS}{VERSIONS_FROM} WHERE mv.registered_model_id = $1 \
                 AND mv.deleted_time IS NULL AND mv.owner_uid IS NOT NULL ORDER BY mv.version"
            );
            let owned_versions = sqlx::query_as::<_, VersionRow>(&sql)
                .bind(model.registered_model_id)
                .fetch_all(&mut *tx)
                .await?;
            for version in owned_versions {
                check_object_writable(version.ownership(), Some("name"), actor, || version.describe())?;
            }
            let updated = sqlx::query("UPDATE registered_models SET name = $1, last_updated_time = $2 WHERE registered_model_id = $3")
                .bind(new_name)
                .bind(now)
                .bind(model.registered_model_id)
                .execute(&mut *tx)
                .await;
            match updated {
                Ok(_) => {
                    sqlx::query("UPDATE model_versions SET last_updated_time = $1 WHERE registered_model_id = $2")
                        .bind(now)
                        .bind(model.registered_model_id)
                        .execute(&mut *tx)
                        .await?;
                    tx.publish(&[RegistryChange {
                        previous_name: Some(name.to_owned()),
                        ..RegistryChange::new(ChangeKind::ModelRenamed, self.workspace(), new_name)
                    }])
                    .await?;
                    tx.commit().await?;
                    true
                }
                Err(error) if crate::store::error::is_unique_violation(&error) => false,
                Err(error) => return Err(error.into()),
            }
        });
        if !renamed {
            return Err(Error::AlreadyExists(format!(
                "Registered Model (name={new_name}) already exists."
            )));
        }
        self.get_registered_model(new_name).await
    }

    /// Deletes a registered model with its versions, tags and aliases (a hard delete, as MLflow
    /// does). Refused through the API when the model or one of its versions is owned.
    #[tracing::instrument(name = "store.delete_registered_model", skip_all)]
    pub async fn delete_registered_model(&self, name: &str, actor: Actor<'_>) -> Result<()> {
        validate_model_name(name)?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            check_object_writable(model.ownership(), None, actor, || model.describe())?;
            let sql = format!(
                "SELECT {VERSION_COLUMNS}{VERSIONS_FROM} WHERE mv.registered_model_id = $1 \
                 AND mv.deleted_time IS NULL AND mv.owner_uid IS NOT NULL ORDER BY mv.version"
            );
            let owned_versions = sqlx::query_as::<_, VersionRow>(&sql)
                .bind(model.registered_model_id)
                .fetch_all(&mut *tx)
                .await?;
            for version in owned_versions {
                check_object_writable(version.ownership(), None, actor, || version.describe())?;
            }
            // Children first: SQLite enforces the foreign keys, but the cascade needs no order
            // on Postgres either; explicit deletes keep both identical.
            for table in ["registered_model_aliases", "model_version_tags", "model_versions", "registered_model_tags"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE registered_model_id = $1"))
                    .bind(model.registered_model_id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("DELETE FROM registered_models WHERE registered_model_id = $1")
                .bind(model.registered_model_id)
                .execute(&mut *tx)
                .await?;
            tx.publish(&[RegistryChange::new(ChangeKind::ModelDeleted, self.workspace(), name)]).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Sets (upserts) a registered model tag.
    #[tracing::instrument(name = "store.set_registered_model_tag", skip_all)]
    pub async fn set_registered_model_tag(
        &self,
        name: &str,
        tag: &KeyValue,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        validate_registry_tag(tag)?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            check_tag_writable(model.ownership(), &tag.key, actor, || model.describe())?;
            sqlx::query(
                "INSERT INTO registered_model_tags (registered_model_id, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (registered_model_id, key) DO UPDATE SET value = excluded.value",
            )
            .bind(model.registered_model_id)
            .bind(&tag.key)
            .bind(&tag.value)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Deletes a registered model tag; a missing tag is fine (MLflow answers `{}`).
    #[tracing::instrument(name = "store.delete_registered_model_tag", skip_all)]
    pub async fn delete_registered_model_tag(
        &self,
        name: &str,
        key: &str,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        validate_registry_tag(&KeyValue::new(key, ""))?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            check_tag_writable(model.ownership(), key, actor, || model.describe())?;
            sqlx::query("DELETE FROM registered_model_tags WHERE registered_model_id = $1 AND key = $2")
                .bind(model.registered_model_id)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The newest live version in each of `stages` (all stages when empty), by version.
    #[tracing::instrument(name = "store.get_latest_versions", skip_all)]
    pub async fn get_latest_versions(
        &self,
        name: &str,
        stages: &[Stage],
    ) -> Result<Vec<ModelVersion>> {
        let model = self.get_registered_model(name).await?;
        let mut versions: Vec<ModelVersion> = model
            .latest_versions
            .into_iter()
            .filter(|version| stages.is_empty() || stages.contains(&version.current_stage))
            .collect();
        versions.sort_by_key(|version| version.version);
        Ok(versions)
    }
}
