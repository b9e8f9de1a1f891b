//! Reconciles a PromotionPolicy: copy it into the store, where every alias move and stage
//! change of a model in its namespace's workspace is judged by it (the tracking server does not watch Kubernetes); forget it when the
//! resource is deleted (finalizer: no owner reference reaches a store row).

use kube::ResourceExt;

use super::context::Context;
use super::reconcile::{Failure, Reconciler};
use crate::crd::promotion_policy::{self, duration_seconds};
use crate::crd::{Outcome, PromotionPolicy, PromotionPolicyStatus, Reason, ReconcileState};
use crate::store::registry::{
    MetricRule, ModelMetadata, ModelMetadataRule, PolicySpec, PredecessorRule, Rule, TagRule,
};

impl Reconciler for PromotionPolicy {
    type Status = PromotionPolicyStatus;
    const KIND: &'static str = "PromotionPolicy";
    const NEEDS_FINALIZER: bool = true;

    fn status(&self) -> Option<&PromotionPolicyStatus> {
        self.status.as_ref()
    }

    fn state(status: &PromotionPolicyStatus) -> &ReconcileState {
        &status.state
    }

    fn state_mut(status: &mut PromotionPolicyStatus) -> &mut ReconcileState {
        &mut status.state
    }

    async fn sync(
        &self,
        ctx: &Context,
        _status: &mut PromotionPolicyStatus,
    ) -> Result<Outcome, Failure> {
        let spec = stored_spec(self)
            .map_err(|message| Failure::Report(Outcome::not_ready(Reason::InvalidSpec, message)))?;
        let uid = self.uid().unwrap_or_default();
        ctx.store_for(self)
            .put_promotion_policy(
                &uid,
                &self.namespace().unwrap_or_default(),
                &self.name_any(),
                &spec,
            )
            .await?;
        Ok(Outcome::ready(format!(
            "guarding {} of {} with {} rule(s)",
            spec.aliases
                .iter()
                .map(|alias| format!("@{alias}"))
                .chain(spec.stages.iter().cloned())
                .collect::<Vec<_>>()
                .join(", "),
            spec.models.join(", "),
            spec.rules.len()
        )))
    }

    async fn cleanup(&self, ctx: &Context) -> Result<(), Failure> {
        ctx.store_for(self)
            .delete_promotion_policy(&self.uid().unwrap_or_default())
            .await?;
        Ok(())
    }
}

/// The policy as the store keeps it (durations in seconds); an error names what the schema
/// let through but the store cannot use.
fn stored_spec(policy: &PromotionPolicy) -> Result<PolicySpec, String> {
    let spec = &policy.spec;
    let rules = spec
        .rules
        .iter()
        .map(stored_rule)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PolicySpec {
        models: spec.models.clone(),
        aliases: spec.aliases.clone(),
        stages: spec
            .stages
            .iter()
            .map(|stage| stage.as_str().to_owned())
            .collect(),
        rules,
    })
}

fn stored_rule(rule: &promotion_policy::PromotionRule) -> Result<Rule, String> {
    match (
        &rule.metric,
        &rule.tag,
        &rule.predecessor,
        &rule.model_metadata,
    ) {
        (Some(metric), None, None, None) => Ok(Rule::Metric(MetricRule {
            name: metric.name.clone(),
            min: metric.min,
            max: metric.max,
            max_regression: metric.max_regression,
            lower_is_better: metric.lower_is_better,
        })),
        (None, Some(tag), None, None) => Ok(Rule::Tag(TagRule {
            key: tag.key.clone(),
            value: tag.value.clone(),
            four_eyes: tag.four_eyes,
        })),
        (None, None, Some(predecessor), None) => {
            predecessor_rule(predecessor).map(Rule::Predecessor)
        }
        (None, None, None, Some(metadata)) => Ok(Rule::ModelMetadata(ModelMetadataRule {
            any_of: metadata
                .any_of
                .iter()
                .map(|item| match item {
                    promotion_policy::ModelMetadataItem::Signature => ModelMetadata::Signature,
                    promotion_policy::ModelMetadataItem::InputExample => {
                        ModelMetadata::InputExample
                    }
                })
                .collect(),
        })),
        _ => Err("a rule is exactly one of metric, tag, predecessor or modelMetadata".to_owned()),
    }
}

fn predecessor_rule(rule: &promotion_policy::PredecessorRule) -> Result<PredecessorRule, String> {
    let min_seconds = match &rule.min_duration {
        None => 0,
        Some(text) => duration_seconds(text).ok_or_else(|| {
            format!("minDuration '{text}' is not a duration such as 24h or 1h30m")
        })?,
    };
    Ok(PredecessorRule {
        alias: rule.alias.clone(),
        stage: rule.stage.map(|stage| stage.as_str().to_owned()),
        min_seconds,
    })
}
