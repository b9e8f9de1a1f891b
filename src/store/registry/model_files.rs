//! What a model version's `MLmodel` file shows, for the promotion policies' `modelMetadata`
//! rule. MLflow writes the file (with `signature` and `saved_input_example_info` when the model
//! was logged with them) before it registers the model, and never changes it afterwards; the
//! tracking server reads it when the version is created ([`ModelFiles::from_mlmodel`]) and
//! records the result here, so the rule is judged from the store, in the transaction of the
//! move, on every path (the operator holds no artifact store).

use super::{RegistryTx, validate_model_name};
use crate::store::{BeginWrite, Result, Store, now_millis, with_pool, with_write_pool};

/// Largest `MLmodel` read for the promotion policies (MLflow's are a few KiB); a larger one
/// is left unread.
pub const MAX_MLMODEL_BYTES: u64 = 1 << 20;

/// What the version's files hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct ModelFiles {
    /// An `MLmodel` file at the root of the version's files.
    pub has_mlmodel: bool,
    /// MLmodel's `signature`.
    pub has_signature: bool,
    /// MLmodel's `saved_input_example_info`.
    pub has_input_example: bool,
}

impl ModelFiles {
    /// The files hold no `MLmodel`.
    pub const NO_MLMODEL: ModelFiles = ModelFiles {
        has_mlmodel: false,
        has_signature: false,
        has_input_example: false,
    };

    /// Reads an `MLmodel` file (YAML). A top-level key with a null value counts as absent, as
    /// MLflow's `Model.load` reads it; a file that is not a YAML mapping shows neither.
    pub fn from_mlmodel(text: &str) -> ModelFiles {
        let document: serde_yaml::Value = serde_yaml::from_str(text).unwrap_or_default();
        let present = |key: &str| document.get(key).is_some_and(|value| !value.is_null());
        ModelFiles {
            has_mlmodel: true,
            has_signature: present("signature"),
            has_input_example: present("saved_input_example_info"),
        }
    }
}

impl Store {
    /// What was recorded about the files of version `version` of model `name`; `None` when
    /// they were never read.
    pub async fn model_files(&self, name: &str, version: i64) -> Result<Option<ModelFiles>> {
        validate_model_name(name)?;
        let files = with_pool!(self, pool => {
            sqlx::query_as::<_, ModelFiles>(
                "SELECT f.has_mlmodel, f.has_signature, f.has_input_example FROM model_version_files f \
                 JOIN registered_models rm ON rm.registered_model_id = f.registered_model_id \
                 WHERE rm.name = $1 AND rm.workspace = $2 AND f.version = $3",
            )
            .bind(name)
            .bind(self.workspace())
            .bind(version)
            .fetch_optional(pool)
            .await?
        });
        Ok(files)
    }

    /// Records what the files of version `version` of model `name` hold (replacing an earlier
    /// reading).
    pub async fn record_model_files(
        &self,
        name: &str,
        version: i64,
        files: &ModelFiles,
    ) -> Result<()> {
        validate_model_name(name)?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let model = tx.lock_model(self.workspace(), name).await?;
            tx.live_version(&model, version).await?;
            sqlx::query(
                "INSERT INTO model_version_files \
                 (registered_model_id, version, has_mlmodel, has_signature, has_input_example, read_time) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (registered_model_id, version) DO UPDATE SET has_mlmodel = excluded.has_mlmodel, \
                 has_signature = excluded.has_signature, has_input_example = excluded.has_input_example, \
                 read_time = excluded.read_time",
            )
            .bind(model.registered_model_id)
            .bind(version)
            .bind(files.has_mlmodel)
            .bind(files.has_signature)
            .bind(files.has_input_example)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ModelFiles;

    #[test]
    fn an_mlmodel_shows_its_signature_and_input_example() {
        let both = "artifact_path: model\nflavors:\n  python_function:\n    loader_module: mlflow.sklearn\n\
                    saved_input_example_info:\n  artifact_path: input_example.json\n  type: dataframe\n\
                    signature:\n  inputs: '[{\"type\": \"double\", \"name\": \"x\"}]'\n  outputs: null\n";
        assert_eq!(
            ModelFiles::from_mlmodel(both),
            ModelFiles {
                has_mlmodel: true,
                has_signature: true,
                has_input_example: true
            }
        );
        let bare = "artifact_path: model\nflavors:\n  python_function: {}\nsignature: null\n";
        assert_eq!(
            ModelFiles::from_mlmodel(bare),
            ModelFiles {
                has_mlmodel: true,
                ..ModelFiles::NO_MLMODEL
            }
        );
        // A nested `signature` (a flavor's own setting) is not the model's.
        let nested = "flavors:\n  custom:\n    signature: yes\n";
        assert!(!ModelFiles::from_mlmodel(nested).has_signature);
        assert!(!ModelFiles::from_mlmodel("- not\n- a mapping\n").has_signature);
        assert!(!ModelFiles::from_mlmodel(": : :").has_input_example);
    }
}
