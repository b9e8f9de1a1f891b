//! Promotion policies: rules a version must meet before an alias or a stage may point at it,
//! evaluated once, in the transaction that would move it, whichever path asks (REST API,
//! operator, rollback). The operator copies each PromotionPolicy resource here
//! ([`Store::put_promotion_policy`]); the rules' JSON is the resource's, durations in seconds.

use std::future::Future;

use serde::{Deserialize, Serialize};

use super::{ModelFiles, ModelRow, Stage};
use crate::store::{BeginWrite, Result, Store, now_millis, with_pool, with_write_pool};

/// What a policy guards and what it requires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicySpec {
    /// Model names; `*` and `?` match any characters / one character.
    pub models: Vec<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Canonical stage names.
    #[serde(default)]
    pub stages: Vec<String>,
    /// All must hold.
    pub rules: Vec<Rule>,
}

/// One requirement on the candidate version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Rule {
    Metric(MetricRule),
    Tag(TagRule),
    Predecessor(PredecessorRule),
    ModelMetadata(ModelMetadataRule),
}

/// A metric of the version's source run: bounds, and/or no worse than the incumbent's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// How much worse than the version holding the target now the candidate may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_regression: Option<f64>,
    /// Lower values are better (a loss): `max_regression` allows this much higher.
    #[serde(default)]
    pub lower_is_better: bool,
}

/// A version tag that must be set (to `value`, when given), with `four_eyes` by someone other
/// than the version's creator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRule {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub four_eyes: bool,
}

/// Where the candidate must stand first: holding `alias`, or in `stage`, for `min_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PredecessorRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    #[serde(default)]
    pub min_seconds: i64,
}

/// The model's `MLmodel` must show at least one of `any_of` (one item: that one is required).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelMetadataRule {
    pub any_of: Vec<ModelMetadata>,
}

/// What an `MLmodel` may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ModelMetadata {
    /// The `signature` key.
    Signature,
    /// The `saved_input_example_info` key.
    InputExample,
}

impl ModelMetadata {
    fn describe(self) -> &'static str {
        match self {
            ModelMetadata::Signature => "a signature",
            ModelMetadata::InputExample => "an input example",
        }
    }

    fn shown_by(self, files: &ModelFiles) -> bool {
        match self {
            ModelMetadata::Signature => files.has_signature,
            ModelMetadata::InputExample => files.has_input_example,
        }
    }
}

/// What a promotion would move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Alias(&'a str),
    Stage(Stage),
}

impl Target<'_> {
    fn describe(self) -> String {
        match self {
            Target::Alias(alias) => format!("alias '{alias}'"),
            Target::Stage(stage) => format!("stage '{stage}'"),
        }
    }
}

/// One rule's verdict, kept in the history entry and named in a denial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleResult {
    /// The policy, `namespace/name`.
    pub policy: String,
    /// The rule as written, e.g. `val_auc >= 0.9`.
    pub rule: String,
    pub passed: bool,
    /// What was seen, e.g. `val_auc = 0.85`.
    pub observed: String,
}

/// A stored policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    pub spec: PolicySpec,
}

impl Policy {
    fn guards(&self, model: &str, target: Target<'_>) -> bool {
        self.spec.models.iter().any(|pattern| glob(pattern, model))
            && match target {
                Target::Alias(alias) => self.spec.aliases.iter().any(|guarded| guarded == alias),
                Target::Stage(stage) => self
                    .spec
                    .stages
                    .iter()
                    .any(|guarded| guarded.eq_ignore_ascii_case(stage.as_str())),
            }
    }
}

/// `*` matches any run of characters, `?` one character, everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // matched[j]: pattern[..i] matches text[..j], row by row.
    let mut matched = vec![false; text.len() + 1];
    matched[0] = true;
    for &symbol in &pattern {
        let mut next = vec![false; text.len() + 1];
        if symbol == '*' {
            let mut any = false;
            for j in 0..=text.len() {
                any |= matched[j];
                next[j] = any;
            }
        } else {
            for j in 1..=text.len() {
                next[j] = matched[j - 1] && (symbol == '?' || symbol == text[j - 1]);
            }
        }
        matched = next;
    }
    matched[text.len()]
}

/// A version tag as found, with who set it and who created the version (`None`: unknown).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TagSeen {
    pub value: String,
    pub set_by: Option<String>,
    pub creator: Option<String>,
}

/// What the store found for a rule, gathered in the transaction.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Observed {
    Metric {
        candidate: Option<f64>,
        /// The version holding the target now (not the candidate) and its value.
        incumbent: Option<(i64, Option<f64>)>,
    },
    Tag(Option<TagSeen>),
    /// Since when (ms) the candidate holds the predecessor alias or stage; `None`: it does not.
    Predecessor {
        since: Option<i64>,
        now: i64,
    },
    /// What the version's MLmodel shows; `None`: the tracking server did not read its files.
    ModelMetadata(Option<ModelFiles>),
}

fn number(value: f64) -> String {
    // 0.9 prints as 0.9, not 0.9000000000000001 after arithmetic: shortest round-trip form.
    format!("{value}")
}

/// The verdict of `rule` on what was `observed` (pure: the unit tests drive it directly).
pub(super) fn judge(policy: &str, rule: &Rule, observed: &Observed) -> Vec<RuleResult> {
    let result = |rule: String, passed: bool, observed: String| RuleResult {
        policy: policy.to_owned(),
        rule,
        passed,
        observed,
    };
    match (rule, observed) {
        (
            Rule::Metric(metric),
            Observed::Metric {
                candidate,
                incumbent,
            },
        ) => {
            let name = &metric.name;
            let seen = candidate.map_or_else(
                || format!("{name} is not logged on the version's source run"),
                |value| format!("{name} = {}", number(value)),
            );
            let mut results = Vec::new();
            if let Some(min) = metric.min {
                let passed = candidate.is_some_and(|value| value >= min);
                results.push(result(
                    format!("{name} >= {}", number(min)),
                    passed,
                    seen.clone(),
                ));
            }
            if let Some(max) = metric.max {
                let passed = candidate.is_some_and(|value| value <= max);
                results.push(result(
                    format!("{name} <= {}", number(max)),
                    passed,
                    seen.clone(),
                ));
            }
            if let Some(regression) = metric.max_regression {
                let (op, sign) = if metric.lower_is_better {
                    ("<=", '+')
                } else {
                    (">=", '-')
                };
                let rule = format!("{name} {op} incumbent {sign} {}", number(regression));
                match incumbent {
                    // Nothing holds the target: there is nothing to be worse than.
                    None => results.push(result(
                        rule,
                        candidate.is_some(),
                        format!("{seen}; no version holds the target"),
                    )),
                    Some((version, None)) => results.push(result(
                        rule,
                        false,
                        format!("{seen}; incumbent version {version} has no {name}"),
                    )),
                    Some((version, Some(held))) => {
                        let bound = if metric.lower_is_better {
                            held + regression
                        } else {
                            held - regression
                        };
                        let passed = candidate.is_some_and(|value| {
                            if metric.lower_is_better {
                                value <= bound
                            } else {
                                value >= bound
                            }
                        });
                        results.push(result(
                            rule,
                            passed,
                            format!(
                                "{seen}; incumbent version {version}: {name} = {}",
                                number(*held)
                            ),
                        ));
                    }
                }
            }
            results
        }
        (Rule::Tag(tag), Observed::Tag(seen)) => {
            let mut rule = match &tag.value {
                Some(expected) => format!("tag {} = {expected}", tag.key),
                None => format!("tag {} is set", tag.key),
            };
            if tag.four_eyes {
                rule.push_str(", set by someone other than the version's creator");
            }
            let Some(seen) = seen else {
                return vec![result(rule, false, format!("tag {} is not set", tag.key))];
            };
            let mut observed = format!("tag {} = {}", tag.key, seen.value);
            let mut passed = tag
                .value
                .as_ref()
                .is_none_or(|expected| *expected == seen.value);
            if tag.four_eyes {
                // Unknown on either side cannot show two people: refused, as a gate must.
                let (set_by, creator) = (seen.set_by.as_deref(), seen.creator.as_deref());
                observed.push_str(&match (set_by, creator) {
                    (None, _) => ", set by an unknown user".to_owned(),
                    (Some(setter), None) => {
                        format!(", set by {setter}; the version's creator is unknown")
                    }
                    (Some(setter), Some(creator)) if setter == creator => {
                        format!(", set by {setter}, the version's creator")
                    }
                    (Some(setter), Some(creator)) => {
                        format!(", set by {setter} (version created by {creator})")
                    }
                });
                passed &=
                    matches!((set_by, creator), (Some(setter), Some(creator)) if setter != creator);
            }
            vec![result(rule, passed, observed)]
        }
        (Rule::Predecessor(predecessor), Observed::Predecessor { since, now }) => {
            let place = match (&predecessor.alias, &predecessor.stage) {
                (Some(alias), _) => format!("alias '{alias}'"),
                (None, Some(stage)) => format!("stage '{stage}'"),
                (None, None) => "nothing".to_owned(),
            };
            let rule = if predecessor.min_seconds > 0 {
                format!("held {place} for at least {}s", predecessor.min_seconds)
            } else {
                format!("holds {place}")
            };
            match since {
                None => vec![result(
                    rule,
                    false,
                    format!("the version does not hold {place}"),
                )],
                Some(since) => {
                    let held = (now - since).max(0) / 1000;
                    vec![result(
                        rule,
                        held >= predecessor.min_seconds,
                        format!("held {place} for {held}s"),
                    )]
                }
            }
        }
        (Rule::ModelMetadata(wanted), Observed::ModelMetadata(files)) => {
            vec![judge_model_metadata(policy, wanted, files.as_ref())]
        }
        // The gathering step observes each rule with its own kind; anything else is a bug
        // that must refuse rather than allow.
        (rule, observed) => vec![result(
            format!("{rule:?}"),
            false,
            format!("internal: observed {observed:?}"),
        )],
    }
}

/// The verdict of a `modelMetadata` rule on what the version's files were seen to hold.
fn judge_model_metadata(
    policy: &str,
    wanted: &ModelMetadataRule,
    files: Option<&ModelFiles>,
) -> RuleResult {
    let rule = format!(
        "model has {}",
        wanted
            .any_of
            .iter()
            .map(|item| item.describe())
            .collect::<Vec<_>>()
            .join(" or ")
    );
    let (passed, observed) = match files {
        None => (
            false,
            "the version's MLmodel was not read (its files are not served by the tracking \
             server)"
                .to_owned(),
        ),
        Some(files) if !files.has_mlmodel => {
            (false, "the version's files hold no MLmodel".to_owned())
        }
        Some(files) => {
            let shown: Vec<&str> = [ModelMetadata::Signature, ModelMetadata::InputExample]
                .into_iter()
                .filter(|item| item.shown_by(files))
                .map(ModelMetadata::describe)
                .collect();
            let observed = if shown.is_empty() {
                "MLmodel has neither a signature nor an input example".to_owned()
            } else {
                format!("MLmodel has {}", shown.join(" and "))
            };
            (
                wanted.any_of.iter().any(|item| item.shown_by(files)),
                observed,
            )
        }
    };
    RuleResult {
        policy: policy.to_owned(),
        rule,
        passed,
        observed,
    }
}

/// The denial message: each failed rule and what was seen.
pub(super) fn denial(
    name: &str,
    version: i64,
    target: Target<'_>,
    results: &[RuleResult],
) -> Option<String> {
    let failed: Vec<String> = results
        .iter()
        .filter(|result| !result.passed)
        .map(|result| {
            format!(
                "[{}] {} failed: {}",
                result.policy, result.rule, result.observed
            )
        })
        .collect();
    (!failed.is_empty()).then(|| {
        format!(
            "Promotion policy refused moving {} of model '{name}' to version {version}: {}",
            target.describe(),
            failed.join("; ")
        )
    })
}

/// The lookups evaluation needs, inside the caller's transaction; one implementation per
/// connection type.
pub(super) trait PolicyTx {
    /// The policies of `workspace`: a PromotionPolicy governs the models of its own namespace
    /// only, as another team's model of the same name is another model.
    fn policies<'a>(
        &'a mut self,
        workspace: &'a str,
    ) -> impl Future<Output = Result<Vec<Policy>>> + Send + 'a;
    /// The latest value of metric `key` on the source run of a version (its run, else its
    /// logged model's source run); NaN counts as missing.
    fn version_metric<'a>(
        &'a mut self,
        model_id: i64,
        version: i64,
        key: &'a str,
    ) -> impl Future<Output = Result<Option<f64>>> + Send + 'a;
    /// The version an alias points at, or the highest version in a stage, other than `except`.
    fn incumbent<'a>(
        &'a mut self,
        model_id: i64,
        target: Target<'a>,
        except: i64,
    ) -> impl Future<Output = Result<Option<i64>>> + Send + 'a;
    /// A version's tag `key`, who set it and who created the version.
    fn version_tag<'a>(
        &'a mut self,
        model_id: i64,
        version: i64,
        key: &'a str,
    ) -> impl Future<Output = Result<Option<TagSeen>>> + Send + 'a;
    /// What the tracking server read in the version's MLmodel, if it read it.
    fn model_files(
        &mut self,
        model_id: i64,
        version: i64,
    ) -> impl Future<Output = Result<Option<ModelFiles>>> + Send + '_;
    /// Since when `version` holds `target` (the history's last allowed entry putting it
    /// there); `None` when it does not hold it now.
    fn holds_since<'a>(
        &'a mut self,
        model_id: i64,
        target: Target<'a>,
        version: i64,
    ) -> impl Future<Output = Result<Option<i64>>> + Send + 'a;
}

macro_rules! impl_policy_tx {
    ($connection:ty) => {
        impl PolicyTx for $connection {
            async fn policies(&mut self, workspace: &str) -> Result<Vec<Policy>> {
                let rows = sqlx::query_as::<_, (String, String, String)>(
                    "SELECT namespace, name, spec FROM promotion_policies WHERE namespace = $1 ORDER BY name",
                )
                .bind(workspace)
                .fetch_all(&mut *self)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(namespace, name, spec)| Policy {
                        // A row this build cannot read guards everything and passes nothing:
                        // refusing is the safe failure for a gate.
                        spec: serde_json::from_str(&spec).unwrap_or_else(|_| unreadable_spec()),
                        namespace,
                        name,
                    })
                    .collect())
            }

            async fn version_metric(&mut self, model_id: i64, version: i64, key: &str) -> Result<Option<f64>> {
                let value = sqlx::query_scalar::<_, f64>(
                    "SELECT lm.value FROM model_versions mv \
                     LEFT JOIN logged_models lg ON lg.model_id = mv.model_id \
                     JOIN latest_metrics lm ON lm.run_uuid = COALESCE(NULLIF(mv.run_id, ''), lg.source_run_id) \
                     WHERE mv.registered_model_id = $1 AND mv.version = $2 AND lm.key = $3 AND NOT lm.is_nan",
                )
                .bind(model_id)
                .bind(version)
                .bind(key)
                .fetch_optional(&mut *self)
                .await?;
                Ok(value)
            }

            async fn incumbent(&mut self, model_id: i64, target: Target<'_>, except: i64) -> Result<Option<i64>> {
                let query = match target {
                    Target::Alias(alias) => sqlx::query_scalar::<_, i64>(
                        "SELECT version FROM registered_model_aliases WHERE registered_model_id = $1 AND alias = $2 AND version != $3",
                    )
                    .bind(model_id)
                    .bind(alias),
                    Target::Stage(stage) => sqlx::query_scalar::<_, i64>(
                        "SELECT version FROM model_versions WHERE registered_model_id = $1 AND current_stage = $2 \
                         AND version != $3 AND deleted_time IS NULL ORDER BY version DESC LIMIT 1",
                    )
                    .bind(model_id)
                    .bind(stage.as_str()),
                };
                Ok(query.bind(except).fetch_optional(&mut *self).await?)
            }

            async fn version_tag(&mut self, model_id: i64, version: i64, key: &str) -> Result<Option<TagSeen>> {
                let row = sqlx::query_as::<_, (String, Option<String>, Option<String>)>(
                    "SELECT t.value, t.set_by, mv.user_id FROM model_version_tags t JOIN model_versions mv \
                     ON mv.registered_model_id = t.registered_model_id AND mv.version = t.version \
                     WHERE t.registered_model_id = $1 AND t.version = $2 AND t.key = $3",
                )
                .bind(model_id)
                .bind(version)
                .bind(key)
                .fetch_optional(&mut *self)
                .await?;
                Ok(row.map(|(value, set_by, creator)| TagSeen { value, set_by, creator }))
            }

            async fn model_files(&mut self, model_id: i64, version: i64) -> Result<Option<ModelFiles>> {
                Ok(sqlx::query_as::<_, ModelFiles>(
                    "SELECT has_mlmodel, has_signature, has_input_example FROM model_version_files \
                     WHERE registered_model_id = $1 AND version = $2",
                )
                .bind(model_id)
                .bind(version)
                .fetch_optional(&mut *self)
                .await?)
            }

            async fn holds_since(&mut self, model_id: i64, target: Target<'_>, version: i64) -> Result<Option<i64>> {
                let (target_type, name) = match target {
                    Target::Alias(alias) => ("alias", alias),
                    Target::Stage(stage) => ("stage", stage.as_str()),
                };
                let holds = match target {
                    Target::Alias(alias) => sqlx::query_scalar::<_, i64>(
                        "SELECT version FROM registered_model_aliases WHERE registered_model_id = $1 AND alias = $2 AND version = $3",
                    )
                    .bind(model_id)
                    .bind(alias),
                    Target::Stage(stage) => sqlx::query_scalar::<_, i64>(
                        "SELECT version FROM model_versions WHERE registered_model_id = $1 AND current_stage = $2 AND version = $3",
                    )
                    .bind(model_id)
                    .bind(stage.as_str()),
                }
                .bind(version)
                .fetch_optional(&mut *self)
                .await?
                .is_some();
                if !holds {
                    return Ok(None);
                }
                let since = sqlx::query_scalar::<_, i64>(
                    "SELECT time FROM promotions WHERE registered_model_id = $1 AND target_type = $2 AND target = $3 \
                     AND to_version = $4 AND allowed ORDER BY promotion_id DESC LIMIT 1",
                )
                .bind(model_id)
                .bind(target_type)
                .bind(name)
                .bind(version)
                .fetch_optional(&mut *self)
                .await?;
                // Held since before the history existed: as long as we can tell, i.e. no time.
                Ok(Some(since.unwrap_or_else(now_millis)))
            }
        }
    };
}

impl_policy_tx!(sqlx::PgConnection);
impl_policy_tx!(sqlx::SqliteConnection);

/// A policy whose stored JSON cannot be read: it guards every model and target and its one
/// rule never passes.
fn unreadable_spec() -> PolicySpec {
    PolicySpec {
        models: vec!["*".into()],
        aliases: vec![],
        stages: Stage::ALL
            .iter()
            .map(|stage| stage.as_str().to_owned())
            .collect(),
        rules: vec![Rule::Tag(TagRule {
            key: "ferroflow.policy.unreadable".into(),
            value: Some("this policy could not be read; re-apply it".into()),
            four_eyes: false,
        })],
    }
}

/// Every rule of every policy of the model's workspace guarding `target` of `model`, judged
/// for `candidate`. Empty when no policy guards it.
pub(super) async fn evaluate<C: PolicyTx + Send>(
    connection: &mut C,
    model: &ModelRow,
    target: Target<'_>,
    candidate: i64,
) -> Result<Vec<RuleResult>> {
    let model_id = model.registered_model_id;
    let mut results = Vec::new();
    for policy in connection.policies(&model.workspace).await? {
        if !policy.guards(&model.name, target) {
            continue;
        }
        let label = format!("{}/{}", policy.namespace, policy.name);
        for rule in &policy.spec.rules {
            let observed = match rule {
                Rule::Metric(metric) => {
                    let candidate_value = connection
                        .version_metric(model_id, candidate, &metric.name)
                        .await?;
                    let incumbent = match metric.max_regression {
                        None => None,
                        Some(_) => match connection.incumbent(model_id, target, candidate).await? {
                            None => None,
                            Some(version) => Some((
                                version,
                                connection
                                    .version_metric(model_id, version, &metric.name)
                                    .await?,
                            )),
                        },
                    };
                    Observed::Metric {
                        candidate: candidate_value,
                        incumbent,
                    }
                }
                Rule::Tag(tag) => Observed::Tag(
                    connection
                        .version_tag(model_id, candidate, &tag.key)
                        .await?,
                ),
                Rule::Predecessor(predecessor) => {
                    let place = match (&predecessor.alias, &predecessor.stage) {
                        (Some(alias), _) => Some(Target::Alias(alias)),
                        (None, Some(stage)) => Stage::parse(stage).ok().map(Target::Stage),
                        (None, None) => None,
                    };
                    let since = match place {
                        Some(place) => connection.holds_since(model_id, place, candidate).await?,
                        None => None,
                    };
                    Observed::Predecessor {
                        since,
                        now: now_millis(),
                    }
                }
                Rule::ModelMetadata(_) => {
                    Observed::ModelMetadata(connection.model_files(model_id, candidate).await?)
                }
            };
            results.extend(judge(&label, rule, &observed));
        }
    }
    Ok(results)
}

impl Store {
    /// Records (or replaces) the policy of resource `uid`.
    pub async fn put_promotion_policy(
        &self,
        uid: &str,
        namespace: &str,
        name: &str,
        spec: &PolicySpec,
    ) -> Result<()> {
        let json = serde_json::to_string(spec).map_err(|error| {
            crate::store::Error::Invalid(format!("promotion policy {namespace}/{name}: {error}"))
        })?;
        with_write_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO promotion_policies (uid, namespace, name, spec, updated_time) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (uid) DO UPDATE SET namespace = excluded.namespace, name = excluded.name, \
                 spec = excluded.spec, updated_time = excluded.updated_time",
            )
            .bind(uid)
            .bind(namespace)
            .bind(name)
            .bind(&json)
            .bind(now_millis())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Forgets the policy of resource `uid` (its resource was deleted).
    pub async fn delete_promotion_policy(&self, uid: &str) -> Result<()> {
        with_pool!(self, pool => {
            sqlx::query("DELETE FROM promotion_policies WHERE uid = $1")
                .bind(uid)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(min: Option<f64>, max: Option<f64>, regression: Option<f64>, lower: bool) -> Rule {
        Rule::Metric(MetricRule {
            name: "val_auc".into(),
            min,
            max,
            max_regression: regression,
            lower_is_better: lower,
        })
    }

    fn verdicts(rule: &Rule, observed: Observed) -> Vec<(String, bool, String)> {
        judge("team-a/gate", rule, &observed)
            .into_iter()
            .map(|result| (result.rule, result.passed, result.observed))
            .collect()
    }

    #[test]
    fn metric_thresholds_pass_fail_and_fail_when_missing() {
        let rule = metric(Some(0.9), Some(0.99), None, false);
        let seen = |value| Observed::Metric {
            candidate: value,
            incumbent: None,
        };
        let pass = verdicts(&rule, seen(Some(0.93)));
        assert_eq!(
            pass,
            vec![
                ("val_auc >= 0.9".into(), true, "val_auc = 0.93".into()),
                ("val_auc <= 0.99".into(), true, "val_auc = 0.93".into()),
            ]
        );
        let fail = verdicts(&rule, seen(Some(0.85)));
        assert_eq!((fail[0].1, fail[0].2.as_str()), (false, "val_auc = 0.85"));
        let missing = verdicts(&rule, seen(None));
        assert!(
            missing
                .iter()
                .all(|(_, passed, observed)| !passed && observed.contains("not logged"))
        );
    }

    #[test]
    fn relative_rules_compare_with_the_incumbent_both_ways() {
        let higher = metric(None, None, Some(0.005), false);
        let seen = |candidate, incumbent| Observed::Metric {
            candidate,
            incumbent,
        };
        assert!(verdicts(&higher, seen(Some(0.92), Some((3, Some(0.924)))))[0].1);
        let worse = verdicts(&higher, seen(Some(0.91), Some((3, Some(0.924)))));
        assert_eq!(worse[0].0, "val_auc >= incumbent - 0.005");
        assert!(!worse[0].1 && worse[0].2.contains("incumbent version 3: val_auc = 0.924"));
        // A loss: lower is better, so a higher value is the regression.
        let lower = metric(None, None, Some(0.01), true);
        assert!(verdicts(&lower, seen(Some(0.305), Some((2, Some(0.3)))))[0].1);
        assert!(!verdicts(&lower, seen(Some(0.32), Some((2, Some(0.3)))))[0].1);
        // Nothing holds the target: nothing to be worse than; but the metric must exist.
        assert!(verdicts(&higher, seen(Some(0.5), None))[0].1);
        assert!(!verdicts(&higher, seen(None, None))[0].1);
        // The incumbent lacks the metric: no comparison possible, refused.
        let unknown = verdicts(&higher, seen(Some(0.99), Some((3, None))));
        assert!(!unknown[0].1 && unknown[0].2.contains("has no val_auc"));
    }

    fn tag(value: &str, set_by: Option<&str>, creator: Option<&str>) -> Observed {
        Observed::Tag(Some(TagSeen {
            value: value.into(),
            set_by: set_by.map(Into::into),
            creator: creator.map(Into::into),
        }))
    }

    #[test]
    fn tag_rules_need_the_tag_and_its_value() {
        let approved = Rule::Tag(TagRule {
            key: "approved".into(),
            value: Some("true".into()),
            four_eyes: false,
        });
        // Without four eyes, who set it does not matter.
        assert!(verdicts(&approved, tag("true", None, None))[0].1);
        assert!(verdicts(&approved, tag("true", Some("alice"), Some("alice")))[0].1);
        let wrong = verdicts(&approved, tag("yes", None, None));
        assert_eq!(
            wrong,
            vec![(
                "tag approved = true".into(),
                false,
                "tag approved = yes".into()
            )]
        );
        assert!(!verdicts(&approved, Observed::Tag(None))[0].1);
        let any = Rule::Tag(TagRule {
            key: "reviewed_by".into(),
            value: None,
            four_eyes: false,
        });
        assert!(verdicts(&any, tag("carol", None, None))[0].1);
        assert!(!verdicts(&any, Observed::Tag(None))[0].1);
    }

    #[test]
    fn four_eyes_tags_must_be_set_by_someone_other_than_the_creator() {
        let approved = Rule::Tag(TagRule {
            key: "approved".into(),
            value: Some("true".into()),
            four_eyes: true,
        });
        let rule = "tag approved = true, set by someone other than the version's creator";
        assert_eq!(
            verdicts(&approved, tag("true", Some("bob"), Some("alice"))),
            vec![(
                rule.into(),
                true,
                "tag approved = true, set by bob (version created by alice)".into()
            )]
        );
        assert_eq!(
            verdicts(&approved, tag("true", Some("alice"), Some("alice"))),
            vec![(
                rule.into(),
                false,
                "tag approved = true, set by alice, the version's creator".into()
            )]
        );
        // Who set it or who created the version unknown: two people cannot be shown.
        assert_eq!(
            verdicts(&approved, tag("true", None, Some("alice"))),
            vec![(
                rule.into(),
                false,
                "tag approved = true, set by an unknown user".into()
            )]
        );
        let creator_unknown = verdicts(&approved, tag("true", Some("bob"), None));
        assert!(
            !creator_unknown[0].1 && creator_unknown[0].2.contains("creator is unknown"),
            "{creator_unknown:?}"
        );
        // Another person, but the wrong value: still refused; missing: refused.
        assert!(!verdicts(&approved, tag("false", Some("bob"), Some("alice")))[0].1);
        assert_eq!(
            verdicts(&approved, Observed::Tag(None)),
            vec![(rule.into(), false, "tag approved is not set".into())]
        );
    }

    #[test]
    fn predecessor_rules_need_the_place_held_long_enough() {
        let rule = Rule::Predecessor(PredecessorRule {
            alias: Some("challenger".into()),
            stage: None,
            min_seconds: 3600,
        });
        let now = 10_000_000;
        let held = |since| Observed::Predecessor { since, now };
        assert!(verdicts(&rule, held(Some(now - 3_600_000)))[0].1);
        let short = verdicts(&rule, held(Some(now - 60_000)));
        assert_eq!(
            short,
            vec![(
                "held alias 'challenger' for at least 3600s".into(),
                false,
                "held alias 'challenger' for 60s".into(),
            )]
        );
        let absent = verdicts(&rule, held(None));
        assert!(!absent[0].1 && absent[0].2.contains("does not hold alias 'challenger'"));
    }

    #[test]
    fn model_metadata_rules_need_one_of_the_items_in_the_mlmodel() {
        let either = Rule::ModelMetadata(ModelMetadataRule {
            any_of: vec![ModelMetadata::Signature, ModelMetadata::InputExample],
        });
        let signature = Rule::ModelMetadata(ModelMetadataRule {
            any_of: vec![ModelMetadata::Signature],
        });
        let files = |has_signature, has_input_example| {
            Observed::ModelMetadata(Some(ModelFiles {
                has_mlmodel: true,
                has_signature,
                has_input_example,
            }))
        };
        assert_eq!(
            verdicts(&either, files(false, true)),
            vec![(
                "model has a signature or an input example".into(),
                true,
                "MLmodel has an input example".into()
            )]
        );
        assert!(verdicts(&signature, files(true, true))[0].1);
        assert_eq!(
            verdicts(&signature, files(false, true)),
            vec![(
                "model has a signature".into(),
                false,
                "MLmodel has an input example".into()
            )]
        );
        let bare = verdicts(&either, files(false, false));
        assert!(!bare[0].1 && bare[0].2 == "MLmodel has neither a signature nor an input example");
        // Missing data refuses: no MLmodel among the files, or the files never read.
        let none = verdicts(
            &either,
            Observed::ModelMetadata(Some(ModelFiles::NO_MLMODEL)),
        );
        assert!(!none[0].1 && none[0].2 == "the version's files hold no MLmodel");
        let unread = verdicts(&either, Observed::ModelMetadata(None));
        assert!(!unread[0].1 && unread[0].2.contains("was not read"));
    }

    #[test]
    fn policies_guard_matching_models_and_targets_only() {
        let policy = Policy {
            namespace: "team-a".into(),
            name: "gate".into(),
            spec: PolicySpec {
                models: vec!["churn".into(), "fraud-*".into()],
                aliases: vec!["champion".into()],
                stages: vec!["Production".into()],
                rules: vec![],
            },
        };
        assert!(policy.guards("churn", Target::Alias("champion")));
        assert!(policy.guards("fraud-eu", Target::Stage(Stage::Production)));
        assert!(!policy.guards("churn", Target::Alias("challenger")));
        assert!(!policy.guards("churn", Target::Stage(Stage::Staging)));
        assert!(!policy.guards("churn-v2", Target::Alias("champion")));
        assert!(glob("a?c*", "abcdef") && glob("*", "") && !glob("a?c", "ac"));
    }

    #[test]
    fn a_denial_names_each_failed_rule_and_what_was_seen() {
        let results = vec![
            RuleResult {
                policy: "team-a/gate".into(),
                rule: "val_auc >= 0.9".into(),
                passed: false,
                observed: "val_auc = 0.85".into(),
            },
            RuleResult {
                policy: "team-a/gate".into(),
                rule: "tag approved = true".into(),
                passed: true,
                observed: "tag approved = true".into(),
            },
        ];
        let message = denial("churn", 3, Target::Alias("champion"), &results).unwrap();
        assert_eq!(
            message,
            "Promotion policy refused moving alias 'champion' of model 'churn' to version 3: \
             [team-a/gate] val_auc >= 0.9 failed: val_auc = 0.85"
        );
        assert_eq!(
            denial("churn", 3, Target::Alias("champion"), &results[1..]),
            None
        );
    }
}
