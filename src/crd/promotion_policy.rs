//! `PromotionPolicy`: what a model version must show before an alias (`champion`) or a stage
//! (`Production`) may point at it. The operator copies each policy into the store, and the
//! store evaluates it in the transaction of every move, whichever path asks: the `mlflow`
//! client, a RegisteredModel or ModelVersion edit in git, `ferroflow rollback`.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::ReconcileState;
use super::model_version::Stage;

/// A gate on promotions of the models it names.
#[derive(CustomResource, KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "ferroflow.dev",
    version = "v1alpha1",
    kind = "PromotionPolicy",
    namespaced,
    status = "PromotionPolicyStatus",
    shortname = "mlpolicy",
    category = "ferroflow",
    printcolumn = r#"{"name":"MODELS","type":"string","jsonPath":".spec.models"}"#,
    printcolumn = r#"{"name":"ALIASES","type":"string","jsonPath":".spec.aliases"}"#,
    printcolumn = r#"{"name":"STAGES","type":"string","jsonPath":".spec.stages"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("(has(self.aliases) ? self.aliases.size() : 0) + (has(self.stages) ? self.stages.size() : 0) > 0").message("name at least one alias or stage to guard")
)]
pub struct PromotionPolicySpec {
    /// Registered model names this policy guards; `*` matches any characters, `?` one.
    #[schemars(length(min = 1, max = 64))]
    #[x_kube(validation = Rule::new("self.all(model, model.size() >= 1 && model.size() <= 256)").message("model names and patterns are 1 to 256 characters"))]
    pub models: Vec<String>,
    /// Aliases guarded (e.g. `champion`): moving one of them to a version needs every rule.
    #[serde(default)]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 255), pattern(r"^[\p{L}\p{N}_-]+$"))
    )]
    pub aliases: Vec<String>,
    /// Stages guarded (e.g. `Production`): transitioning a version into one needs every rule.
    #[serde(default)]
    #[schemars(length(max = 4))]
    pub stages: Vec<Stage>,
    /// Requirements on the candidate version; all must hold.
    #[schemars(length(min = 1, max = 32))]
    pub rules: Vec<PromotionRule>,
}

const ALIAS_NAMES_MESSAGE: &str =
    "alias names may only contain letters, digits, '_' and '-' (at most 255)";

/// One requirement: exactly one of `metric`, `tag`, `predecessor` or `modelMetadata`.
#[derive(KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("[has(self.metric), has(self.tag), has(self.predecessor), has(self.modelMetadata)].filter(x, x).size() == 1").message("a rule is exactly one of metric, tag, predecessor or modelMetadata")
)]
pub struct PromotionRule {
    /// A metric of the version's source run (the run it was registered from, or its logged
    /// model's run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricRule>,
    /// A version tag that must be set (to `value`, when given), e.g. `approved: "true"`;
    /// with `fourEyes`, by someone other than the version's creator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<TagRule>,
    /// Where the version must have been first, and for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predecessor: Option<PredecessorRule>,
    /// What the model's `MLmodel` must declare, e.g. `anyOf: [signature, inputExample]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_metadata: Option<ModelMetadataRule>,
}

/// `min`/`max` bound the value; `maxRegression` compares it with the version holding the
/// target now (`val_auc >= incumbent - 0.005`). A missing metric fails.
#[derive(KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.min) || has(self.max) || has(self.maxRegression)").message("a metric rule needs min, max or maxRegression"),
    validation = Rule::new("!has(self.min) || !has(self.max) || self.min <= self.max").message("min must not exceed max")
)]
pub struct MetricRule {
    /// The metric key, e.g. `val_auc`.
    #[schemars(length(min = 1, max = 250))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// How much worse than the incumbent the candidate may be (0: at least as good).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_regression: Option<f64>,
    /// Lower is better (a loss): `maxRegression` then allows a value this much higher.
    #[serde(default)]
    pub lower_is_better: bool,
}

/// A required version tag.
#[derive(KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRule {
    #[schemars(length(min = 1, max = 250))]
    pub key: String,
    /// The value it must have; any value when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Four eyes: the tag's value must have been set by someone other than the version's
    /// creator, as the tracking server (`--auth kubernetes`) or the operator recorded them.
    /// When either is unknown (written without authentication) the rule fails.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub four_eyes: bool,
}

/// The version must hold `alias` (e.g. `challenger`) or be in `stage` (e.g. `Staging`) now,
/// and have for at least `minDuration` (e.g. `24h`, `90m`, `1h30m`).
#[derive(KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.alias) != has(self.stage)").message("a predecessor is exactly one of alias or stage")
)]
pub struct PredecessorRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self.matches('^[\\\\p{L}\\\\p{N}_-]+$')").message(ALIAS_NAMES_MESSAGE))]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<Stage>,
    /// A sum of `<number><unit>`, unit `s`, `m`, `h` or `d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(r"^([0-9]+(s|m|h|d))+$"))]
    pub min_duration: Option<String>,
}

/// The model's `MLmodel` file (as the tracking server read it when the version was created)
/// must declare at least one of `anyOf`: `signature` (its `signature` key) or `inputExample`
/// (`saved_input_example_info`). A version whose files were not read fails.
#[derive(KubeSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelMetadataRule {
    #[schemars(length(min = 1, max = 2))]
    #[x_kube(validation = Rule::new("self.size() == 1 || self[0] != self[1]").message("anyOf names signature and inputExample at most once each"))]
    pub any_of: Vec<ModelMetadataItem>,
}

/// What an `MLmodel` may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ModelMetadataItem {
    Signature,
    InputExample,
}

/// What the operator found and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionPolicyStatus {
    #[serde(flatten)]
    pub state: ReconcileState,
}

/// Seconds in a duration the schema accepted (`1h30m`); `None` for anything else.
pub fn duration_seconds(text: &str) -> Option<i64> {
    let mut total: i64 = 0;
    let mut number = String::new();
    for symbol in text.chars() {
        if symbol.is_ascii_digit() {
            number.push(symbol);
            continue;
        }
        let unit = match symbol {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        let value: i64 = number.parse().ok()?;
        total = total.checked_add(value.checked_mul(unit)?)?;
        number.clear();
    }
    number.is_empty().then_some(total)
}

#[cfg(test)]
mod tests {
    use super::duration_seconds;

    #[test]
    fn durations_sum_their_parts() {
        assert_eq!(duration_seconds("24h"), Some(86_400));
        assert_eq!(duration_seconds("1h30m"), Some(5_400));
        assert_eq!(duration_seconds("2d5s"), Some(172_805));
        assert_eq!(duration_seconds("5"), None);
        assert_eq!(duration_seconds("h"), None);
        assert_eq!(duration_seconds("1w"), None);
        assert_eq!(duration_seconds("99999999999999999999d"), None);
    }
}
