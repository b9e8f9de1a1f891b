//! Aliases: names pointing at a model's versions (`@champion`), and `latest`.

use super::ownership::{Actor, OwnedField, check_field_writable};
use super::policies::Target;
use super::promotions::{PromotionTx, alias_moved, refused};
use super::{
    LATEST_ALIAS, ModelVersion, RegistryTx, validate_alias_name, validate_alias_settable,
    validate_model_name,
};
use crate::store::notify::{ChangeKind, Publish, RegistryChange};
use crate::store::{BeginWrite, Entity, Error, Result, Store, with_write_pool};

impl Store {
    /// Points `alias` at `version`, moving it if it exists. `latest` and `v<N>` are reserved.
    #[tracing::instrument(name = "store.set_registered_model_alias", skip_all)]
    pub async fn set_registered_model_alias(
        &self,
        name: &str,
        alias: &str,
        version: i64,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        validate_alias_settable(alias)?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            tx.live_version(&model, version).await?;
            check_field_writable(model.ownership(), OwnedField::Aliases, actor, || model.describe())?;
            let previous = sqlx::query_scalar::<_, i64>(
                "SELECT version FROM registered_model_aliases WHERE registered_model_id = $1 AND alias = $2",
            )
            .bind(model.registered_model_id)
            .bind(alias)
            .fetch_optional(&mut *tx)
            .await?;
            if previous != Some(version) {
                let (who, mut entry) = alias_moved(actor, &model, alias, previous, Some(version));
                if let Some(denied) = refused(&mut *tx, &model, &who, &mut entry, Target::Alias(alias), version).await? {
                    tx.commit().await?;
                    return Err(denied);
                }
                sqlx::query(
                    "INSERT INTO registered_model_aliases (registered_model_id, alias, version) VALUES ($1, $2, $3) \
                     ON CONFLICT (registered_model_id, alias) DO UPDATE SET version = excluded.version",
                )
                .bind(model.registered_model_id)
                .bind(alias)
                .bind(version)
                .execute(&mut *tx)
                .await?;
                tx.append_promotions(&model, &who, &[entry]).await?;
                tx.publish(&[RegistryChange {
                    version: Some(version),
                    alias: Some(alias.to_owned()),
                    ..RegistryChange::new(ChangeKind::AliasSet, self.workspace(), name)
                }])
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Removes an alias; removing one that does not exist is fine (MLflow answers `{}`).
    #[tracing::instrument(name = "store.delete_registered_model_alias", skip_all)]
    pub async fn delete_registered_model_alias(
        &self,
        name: &str,
        alias: &str,
        actor: Actor<'_>,
    ) -> Result<()> {
        validate_model_name(name)?;
        validate_alias_name(alias)?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            check_field_writable(model.ownership(), OwnedField::Aliases, actor, || model.describe())?;
            let deleted = sqlx::query_scalar::<_, i64>(
                "DELETE FROM registered_model_aliases WHERE registered_model_id = $1 AND alias = $2 RETURNING version",
            )
            .bind(model.registered_model_id)
            .bind(alias)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(version) = deleted {
                let (who, entry) = alias_moved(actor, &model, alias, Some(version), None);
                tx.append_promotions(&model, &who, &[entry]).await?;
                tx.publish(&[RegistryChange {
                    alias: Some(alias.to_owned()),
                    ..RegistryChange::new(ChangeKind::AliasDeleted, self.workspace(), name)
                }])
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The version an alias points at; `latest` (any case) is the highest live version. An
    /// unknown alias is INVALID_PARAMETER_VALUE, as in MLflow 3.17.
    #[tracing::instrument(name = "store.get_model_version_by_alias", skip_all)]
    pub async fn get_model_version_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<ModelVersion> {
        validate_model_name(name)?;
        validate_alias_name(alias)?;
        let model = self.get_registered_model(name).await?;
        let version = if alias.eq_ignore_ascii_case(LATEST_ALIAS) {
            model
                .latest_versions
                .iter()
                .map(|version| version.version)
                .max()
                .ok_or_else(|| {
                    Error::not_found(
                        Entity::ModelVersion,
                        format!("Latest version not found for model {name}."),
                    )
                })?
        } else {
            model
                .aliases
                .iter()
                .find(|(known, _)| known == alias)
                .map(|(_, version)| *version)
                .ok_or_else(|| Error::AliasNotFound {
                    model: name.to_owned(),
                    alias: alias.to_owned(),
                })?
        };
        self.get_model_version(name, version).await
    }
}
