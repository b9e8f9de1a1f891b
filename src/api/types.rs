//! MLflow's JSON shapes (named as in `service.proto`), and conversions from store types.
//! Empty lists and absent optionals are omitted, int64 are JSON numbers, and NaN/±Infinity
//! are the strings protobuf JSON uses.

use serde::{Deserialize, Serialize, Serializer};

use crate::store::KeyValue;
use crate::store::experiments::Experiment as StoreExperiment;
use crate::store::runs::{
    Dataset as StoreDataset, DatasetInput as StoreDatasetInput, Metric as StoreMetric,
    Run as StoreRun, RunInfo as StoreRunInfo,
};

use super::request::lenient;

/// A tag or param on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyValueJson {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: String,
}

impl From<KeyValue> for KeyValueJson {
    fn from(kv: KeyValue) -> Self {
        Self {
            key: kv.key,
            value: kv.value,
        }
    }
}

impl From<KeyValueJson> for KeyValue {
    fn from(kv: KeyValueJson) -> Self {
        KeyValue::new(kv.key, kv.value)
    }
}

fn tags_json(tags: Vec<KeyValue>) -> Vec<KeyValueJson> {
    tags.into_iter().map(Into::into).collect()
}

/// Writes a double as protobuf JSON does: NaN and infinities as strings.
pub fn serialize_double<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.is_nan() {
        serializer.serialize_str("NaN")
    } else if value.is_infinite() {
        serializer.serialize_str(if *value > 0.0 {
            "Infinity"
        } else {
            "-Infinity"
        })
    } else {
        serializer.serialize_f64(*value)
    }
}

#[derive(Debug, Serialize)]
pub struct Experiment {
    pub experiment_id: String,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: String,
    pub last_update_time: i64,
    pub creation_time: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValueJson>,
}

impl From<StoreExperiment> for Experiment {
    fn from(e: StoreExperiment) -> Self {
        Self {
            experiment_id: e.experiment_id.to_string(),
            name: e.name,
            artifact_location: e.artifact_location,
            lifecycle_stage: e.lifecycle_stage,
            last_update_time: e.last_update_time,
            creation_time: e.creation_time,
            tags: tags_json(e.tags),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RunInfo {
    pub run_id: String,
    pub run_uuid: String,
    pub run_name: String,
    pub experiment_id: String,
    pub user_id: String,
    pub status: String,
    pub start_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_time: Option<i64>,
    pub artifact_uri: String,
    pub lifecycle_stage: String,
}

impl From<StoreRunInfo> for RunInfo {
    fn from(info: StoreRunInfo) -> Self {
        Self {
            run_id: info.run_uuid.clone(),
            run_uuid: info.run_uuid,
            run_name: info.run_name,
            experiment_id: info.experiment_id.to_string(),
            user_id: info.user_id,
            status: info.status,
            start_time: info.start_time,
            end_time: info.end_time,
            artifact_uri: info.artifact_uri,
            lifecycle_stage: info.lifecycle_stage,
        }
    }
}

/// A metric as MLflow writes it. `S` is `&str` where points are written from the store's own
/// strings: a history page needs no owned key per point.
#[derive(Debug, Serialize)]
pub struct Metric<S = String> {
    pub key: S,
    #[serde(serialize_with = "serialize_double")]
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_name: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_digest: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_id: Option<S>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<S>,
}

impl From<StoreMetric> for Metric {
    fn from(m: StoreMetric) -> Self {
        Self {
            key: m.key,
            value: m.value,
            timestamp: m.timestamp,
            step: m.step,
            dataset_name: m.dataset_name,
            dataset_digest: m.dataset_digest,
            model_id: m.model_id,
            run_id: m.run_id,
        }
    }
}

/// A metric as a client logs it (log-metric, log-batch).
#[derive(Debug, Deserialize)]
pub struct MetricInput {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_f64")]
    pub value: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub timestamp: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub step: Option<i64>,
    #[serde(default)]
    pub model_id: Option<String>,
    #[serde(default)]
    pub dataset_name: Option<String>,
    #[serde(default)]
    pub dataset_digest: Option<String>,
}

#[derive(Debug, Serialize, Default)]
pub struct RunData {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<KeyValueJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<KeyValueJson>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct Dataset {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub source_type: String,
    #[serde(default)]
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

impl From<StoreDataset> for Dataset {
    fn from(d: StoreDataset) -> Self {
        Self {
            name: d.name,
            digest: d.digest,
            source_type: d.source_type,
            source: d.source,
            schema: d.schema,
            profile: d.profile,
        }
    }
}

impl From<Dataset> for StoreDataset {
    fn from(d: Dataset) -> Self {
        Self {
            name: d.name,
            digest: d.digest,
            source_type: d.source_type,
            source: d.source,
            schema: d.schema,
            profile: d.profile,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DatasetInput {
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "lenient::list"
    )]
    pub tags: Vec<KeyValueJson>,
    #[serde(default)]
    pub dataset: Dataset,
}

impl From<StoreDatasetInput> for DatasetInput {
    fn from(input: StoreDatasetInput) -> Self {
        Self {
            tags: tags_json(input.tags),
            dataset: input.dataset.into(),
        }
    }
}

impl From<DatasetInput> for StoreDatasetInput {
    fn from(input: DatasetInput) -> Self {
        Self {
            tags: input.tags.into_iter().map(Into::into).collect(),
            dataset: input.dataset.into(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ModelInput {
    pub model_id: String,
}

#[derive(Debug, Serialize)]
pub struct ModelOutput {
    pub model_id: String,
    pub step: i64,
}

#[derive(Debug, Serialize, Default)]
pub struct RunInputs {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dataset_inputs: Vec<DatasetInput>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_inputs: Vec<ModelInput>,
}

#[derive(Debug, Serialize, Default)]
pub struct RunOutputs {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_outputs: Vec<ModelOutput>,
}

#[derive(Debug, Serialize)]
pub struct Run {
    pub info: RunInfo,
    pub data: RunData,
    pub inputs: RunInputs,
    pub outputs: RunOutputs,
}

impl From<StoreRun> for Run {
    fn from(run: StoreRun) -> Self {
        Self {
            info: run.info.into(),
            data: RunData {
                metrics: run.metrics.into_iter().map(Into::into).collect(),
                params: tags_json(run.params),
                tags: tags_json(run.tags),
            },
            inputs: RunInputs {
                dataset_inputs: run.inputs.into_iter().map(Into::into).collect(),
                model_inputs: run
                    .model_inputs
                    .into_iter()
                    .map(|model_id| ModelInput { model_id })
                    .collect(),
            },
            outputs: RunOutputs {
                model_outputs: run
                    .model_outputs
                    .into_iter()
                    .map(|output| ModelOutput {
                        model_id: output.model_id,
                        step: output.step,
                    })
                    .collect(),
            },
        }
    }
}

/// `{}`: what MLflow answers to a successful mutation.
#[derive(Debug, Serialize)]
pub struct Empty {}
