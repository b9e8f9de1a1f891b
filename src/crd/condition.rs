//! Status conditions shared by every kind: `metav1.Condition` entries keyed by type, a closed
//! reason vocabulary, and the kstatus-shaped block (`observedGeneration`, `conditions`,
//! `lastFailure`) that Argo CD and Flux read. Pure data and pure functions: no I/O here.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The summary condition: True once the store matches the spec.
pub const READY: &str = "Ready";
/// True while something is under way that will finish by itself (a rollout, a run).
pub const PROGRESSING: &str = "Progressing";
/// True when the operator cannot go on without a human changing the spec or the store.
pub const STALLED: &str = "Stalled";

/// Why a condition has its status. A closed vocabulary, so dashboards and health checks can
/// match on it; the message carries the details. It is a published contract: the Argo CD health
/// checks and `config/argocd/reasons.json` are generated from it (`make generate`), so adding a
/// reason means deciding `is_terminal` for it and regenerating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
pub enum Reason {
    /// The store matches the spec.
    Reconciled,
    /// First reconcile, or a change being applied.
    Reconciling,
    /// The resource is being deleted and its deletion policy applied.
    Deleting,
    /// A referenced model version does not exist in the store.
    VersionNotFound,
    /// The referenced registered model (resource or store row) does not exist.
    ModelNotFound,
    /// A referenced alias is not set on the registered model, or names a version that does not
    /// exist (RegisteredModel aliases, a ModelDeployment that follows an alias).
    AliasNotFound,
    /// The MLflow experiment a resource names does not exist in the store.
    ExperimentNotFound,
    /// The MLflow run a resource names (e.g. a ModelVersion's `runId`) does not exist.
    RunNotFound,
    /// The logged model a resource names (e.g. a `models:/m-…` source) does not exist.
    LoggedModelNotFound,
    /// Another resource already declares the same store row.
    OwnedElsewhere,
    /// The spec passed the schema but the store refuses it (e.g. a name MLflow rejects).
    InvalidSpec,
    /// A PromotionPolicy refuses the alias move or stage change the spec asks for (RegisteredModel,
    /// ModelVersion); the message names the failing rule.
    PolicyDenied,
    /// The metadata store could not be reached or failed; retried with backoff.
    StoreUnavailable,
    /// Waiting for something outside the operator to start: a ModelDeployment's replicas to
    /// become ready, a ProjectRun's Pod to be scheduled.
    Pending,
    /// `spec.suspend` is true: the operator leaves the workload as it is (ModelDeployment) or
    /// creates no Pod (ProjectRun) until it is false again.
    Suspended,
    /// A ModelDeployment is rolling out a newly resolved version.
    RollingOut,
    /// A ModelDeployment is returning to its last good version after a failed rollout.
    RollingBack,
    /// A ModelDeployment's rollout made no progress within its deadline (crash loop, image
    /// that cannot be pulled, replicas never ready).
    RolloutStuck,
    /// The analysis of a ModelDeployment's new version failed (e.g. error rate or latency over
    /// its threshold).
    AnalysisFailed,
    /// A ModelDeployment's rollout failed and it serves its last good version again; the spec
    /// must change before it tries the failed version again.
    RolledBack,
    /// A ProjectRun's Pod runs the project.
    Running,
    /// A ProjectRun finished and its MLflow run is FINISHED.
    Succeeded,
    /// A ProjectRun's Pod failed and its MLflow run is FAILED. The run is over, not stalled:
    /// nothing is retried and nothing waits for a human.
    Failed,
    /// A ProjectRun was stopped (deleted, or past `activeDeadlineSeconds`) and its MLflow run
    /// is KILLED. Over, like `Failed`.
    Killed,
}

impl Reason {
    /// Every reason, in declaration order.
    pub const ALL: &[Reason] = &[
        Reason::Reconciled,
        Reason::Reconciling,
        Reason::Deleting,
        Reason::VersionNotFound,
        Reason::ModelNotFound,
        Reason::AliasNotFound,
        Reason::ExperimentNotFound,
        Reason::RunNotFound,
        Reason::LoggedModelNotFound,
        Reason::OwnedElsewhere,
        Reason::InvalidSpec,
        Reason::PolicyDenied,
        Reason::StoreUnavailable,
        Reason::Pending,
        Reason::Suspended,
        Reason::RollingOut,
        Reason::RollingBack,
        Reason::RolloutStuck,
        Reason::AnalysisFailed,
        Reason::RolledBack,
        Reason::Running,
        Reason::Succeeded,
        Reason::Failed,
        Reason::Killed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Reconciled => "Reconciled",
            Reason::Reconciling => "Reconciling",
            Reason::Deleting => "Deleting",
            Reason::VersionNotFound => "VersionNotFound",
            Reason::ModelNotFound => "ModelNotFound",
            Reason::AliasNotFound => "AliasNotFound",
            Reason::ExperimentNotFound => "ExperimentNotFound",
            Reason::RunNotFound => "RunNotFound",
            Reason::LoggedModelNotFound => "LoggedModelNotFound",
            Reason::OwnedElsewhere => "OwnedElsewhere",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::PolicyDenied => "PolicyDenied",
            Reason::StoreUnavailable => "StoreUnavailable",
            Reason::Pending => "Pending",
            Reason::Suspended => "Suspended",
            Reason::RollingOut => "RollingOut",
            Reason::RollingBack => "RollingBack",
            Reason::RolloutStuck => "RolloutStuck",
            Reason::AnalysisFailed => "AnalysisFailed",
            Reason::RolledBack => "RolledBack",
            Reason::Running => "Running",
            Reason::Succeeded => "Succeeded",
            Reason::Failed => "Failed",
            Reason::Killed => "Killed",
        }
    }

    /// Terminal reasons need a human (or another resource) to change something; the operator
    /// reports them as Stalled instead of retrying in a hot loop, and Argo CD shows Degraded.
    /// No wildcard: a new reason cannot compile until someone decides which it is.
    pub fn is_terminal(self) -> bool {
        match self {
            Reason::VersionNotFound
            | Reason::ModelNotFound
            | Reason::AliasNotFound
            | Reason::ExperimentNotFound
            | Reason::RunNotFound
            | Reason::LoggedModelNotFound
            | Reason::OwnedElsewhere
            | Reason::InvalidSpec
            | Reason::PolicyDenied
            | Reason::RolloutStuck
            | Reason::AnalysisFailed
            | Reason::RolledBack => true,
            Reason::Reconciled
            | Reason::Reconciling
            | Reason::Deleting
            | Reason::StoreUnavailable
            | Reason::Pending
            | Reason::Suspended
            | Reason::RollingOut
            | Reason::RollingBack
            | Reason::Running
            | Reason::Succeeded
            | Reason::Failed
            | Reason::Killed => false,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last thing that went wrong, kept until the resource is Ready again (KServe's
/// `lastFailureInfo`): conditions say what is true now, this says why it was not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastFailure {
    /// Machine-readable reason, one of the condition reasons.
    pub reason: String,
    /// What failed, for people.
    pub message: String,
    /// When it failed.
    pub time: Time,
}

/// The part of `status` every ferroflow kind shares, in kstatus's shape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileState {
    /// The `metadata.generation` this status describes; lags while a spec change is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready (summary), Progressing (under way), Stalled (a human must act); one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The most recent failure, cleared once Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<LastFailure>,
}

/// Where one reconcile left the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// What the spec declares is in place.
    Ready,
    /// Under way and finishing by itself (a rollout, a run, a resource being created):
    /// nobody needs to act, the operator looks again soon.
    Progressing,
    /// Not ready: stalled when the reason is terminal, else retried.
    NotReady,
    /// Over without success (a ProjectRun whose run FAILED or was KILLED): not ready, yet
    /// nothing is under way and nothing waits for a human.
    Ended,
}

/// The outcome of one reconcile, as conditions will show it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub progress: Progress,
    pub reason: Reason,
    pub message: String,
}

impl Outcome {
    pub fn ready(message: impl Into<String>) -> Self {
        Outcome {
            progress: Progress::Ready,
            reason: Reason::Reconciled,
            message: message.into(),
        }
    }

    /// Something under way that finishes by itself, e.g. a rollout; `reason` says what.
    pub fn progressing(reason: Reason, message: impl Into<String>) -> Self {
        Outcome {
            progress: Progress::Progressing,
            reason,
            message: message.into(),
        }
    }

    pub fn not_ready(reason: Reason, message: impl Into<String>) -> Self {
        Outcome {
            progress: Progress::NotReady,
            reason,
            message: message.into(),
        }
    }

    /// Over without success: see [`Progress::Ended`].
    pub fn ended(reason: Reason, message: impl Into<String>) -> Self {
        Outcome {
            progress: Progress::Ended,
            reason,
            message: message.into(),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.progress == Progress::Ready
    }

    /// Whether a human must change something: a terminal reason that is not merely under way.
    pub fn is_stalled(&self) -> bool {
        self.progress == Progress::NotReady && self.reason.is_terminal()
    }

    /// kstatus's in-progress state: not ready and not stalled, so the operator is still
    /// working on it (a rollout under way, or a transient failure being retried).
    pub fn is_progressing(&self) -> bool {
        !self.is_ready() && !self.is_stalled() && self.progress != Progress::Ended
    }

    /// A failure worth remembering in `lastFailure`: not ready, and not merely under way.
    fn is_failure(&self) -> bool {
        matches!(self.progress, Progress::NotReady | Progress::Ended)
            && self.reason != Reason::Reconciling
            && self.reason != Reason::Deleting
    }
}

impl ReconcileState {
    /// The condition of `type_`, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Records `outcome` for `generation` as kstatus reads it: `Ready` True once in place;
    /// `Progressing` True while not ready and not stalled (under way, or retrying); `Stalled`
    /// True only for a terminal reason. At most one of Progressing and Stalled is True, and
    /// neither when Ready. `lastFailure` is kept or cleared. `lastTransitionTime` moves only
    /// when a condition's status flips, so writing the same outcome twice changes nothing.
    pub fn record(&mut self, generation: Option<i64>, outcome: &Outcome, now: &Time) {
        self.observed_generation = generation;
        let status = |holds: bool| if holds { "True" } else { "False" };
        self.set(
            READY,
            status(outcome.is_ready()),
            outcome.reason,
            &outcome.message,
            generation,
            now,
        );
        self.set(
            PROGRESSING,
            status(outcome.is_progressing()),
            outcome.reason,
            &outcome.message,
            generation,
            now,
        );
        let (stalled_reason, stalled_message) = if outcome.is_stalled() {
            (outcome.reason, outcome.message.as_str())
        } else {
            (Reason::Reconciled, "nothing needs a human")
        };
        self.set(
            STALLED,
            status(outcome.is_stalled()),
            stalled_reason,
            stalled_message,
            generation,
            now,
        );
        if outcome.is_ready() {
            self.last_failure = None;
        } else if outcome.is_failure() {
            let unchanged = self.last_failure.as_ref().is_some_and(|failure| {
                failure.reason == outcome.reason.as_str() && failure.message == outcome.message
            });
            if !unchanged {
                self.last_failure = Some(LastFailure {
                    reason: outcome.reason.as_str().to_owned(),
                    message: outcome.message.clone(),
                    time: now.clone(),
                });
            }
        }
    }

    fn set(
        &mut self,
        type_: &str,
        status: &str,
        reason: Reason,
        message: &str,
        generation: Option<i64>,
        now: &Time,
    ) {
        let condition = Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.as_str().to_owned(),
            message: message.to_owned(),
            observed_generation: generation,
            last_transition_time: now.clone(),
        };
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(existing) => {
                let last_transition_time = if existing.status == status {
                    existing.last_transition_time.clone()
                } else {
                    now.clone()
                };
                *existing = Condition {
                    last_transition_time,
                    ..condition
                };
            }
            None => self.conditions.push(condition),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut state = ReconcileState::default();
        state.record(
            Some(1),
            &Outcome::not_ready(Reason::Reconciling, "starting"),
            &at(10),
        );
        state.record(Some(2), &Outcome::ready("done"), &at(20));
        state.record(Some(3), &Outcome::ready("still done"), &at(30));
        let ready = state.condition(READY).unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.message, "still done");
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(ready.last_transition_time, at(20));
        assert_eq!(state.observed_generation, Some(3));
        assert_eq!(state.conditions.len(), 3);
    }

    #[test]
    fn terminal_reason_stalls_and_is_remembered_until_ready() {
        let mut state = ReconcileState::default();
        let missing = Outcome::not_ready(Reason::VersionNotFound, "version 9 of churn not found");
        state.record(Some(1), &missing, &at(10));
        assert_eq!(state.condition(STALLED).unwrap().status, "True");
        assert_eq!(state.condition(STALLED).unwrap().reason, "VersionNotFound");
        let failure = state.last_failure.clone().unwrap();
        assert_eq!(failure.reason, "VersionNotFound");
        // The same failure again keeps its first time.
        state.record(Some(1), &missing, &at(20));
        assert_eq!(state.last_failure.as_ref().unwrap().time, at(10));
        state.record(Some(2), &Outcome::ready("ok"), &at(30));
        assert_eq!(state.condition(STALLED).unwrap().status, "False");
        assert!(state.last_failure.is_none());
    }

    #[test]
    fn transient_reason_is_not_stalled() {
        let mut state = ReconcileState::default();
        state.record(
            Some(1),
            &Outcome::not_ready(Reason::StoreUnavailable, "connection refused"),
            &at(10),
        );
        assert_eq!(state.condition(READY).unwrap().status, "False");
        assert_eq!(state.condition(STALLED).unwrap().status, "False");
        assert_eq!(
            state.last_failure.as_ref().unwrap().reason,
            "StoreUnavailable"
        );
    }

    /// (Ready, Progressing, Stalled) statuses.
    fn statuses(state: &ReconcileState) -> [&str; 3] {
        [READY, PROGRESSING, STALLED].map(|type_| state.condition(type_).unwrap().status.as_str())
    }

    #[test]
    fn at_most_one_abnormal_condition_is_true() {
        let cases = [
            (Outcome::ready("done"), ["True", "False", "False"]),
            (
                Outcome::progressing(Reason::Reconciling, "rolling out"),
                ["False", "True", "False"],
            ),
            (
                Outcome::not_ready(Reason::StoreUnavailable, "connection refused"),
                ["False", "True", "False"],
            ),
            (
                Outcome::not_ready(Reason::VersionNotFound, "no version 9"),
                ["False", "False", "True"],
            ),
        ];
        for (outcome, expected) in cases {
            let mut state = ReconcileState::default();
            state.record(Some(1), &outcome, &at(10));
            assert_eq!(statuses(&state), expected, "{outcome:?}");
            let progressing = state.condition(PROGRESSING).unwrap();
            assert_eq!(progressing.reason, outcome.reason.as_str(), "{outcome:?}");
        }
    }

    #[test]
    fn progressing_then_ready_flips_both_and_records_no_failure() {
        let mut state = ReconcileState::default();
        let rolling = Outcome::progressing(Reason::Reconciling, "2 of 3 replicas updated");
        state.record(Some(1), &rolling, &at(10));
        assert_eq!(
            state.condition(PROGRESSING).unwrap().message,
            "2 of 3 replicas updated"
        );
        assert!(state.last_failure.is_none(), "under way is not a failure");
        // Still under way with news: message changes, transition time stays.
        state.record(
            Some(1),
            &Outcome::progressing(Reason::Reconciling, "3 of 3 replicas updated"),
            &at(20),
        );
        let progressing = state.condition(PROGRESSING).unwrap();
        assert_eq!(progressing.message, "3 of 3 replicas updated");
        assert_eq!(progressing.last_transition_time, at(10));
        assert_eq!(state.condition(READY).unwrap().last_transition_time, at(10));

        state.record(Some(1), &Outcome::ready("rolled out"), &at(30));
        assert_eq!(statuses(&state), ["True", "False", "False"]);
        assert_eq!(state.condition(READY).unwrap().last_transition_time, at(30));
        assert_eq!(
            state.condition(PROGRESSING).unwrap().last_transition_time,
            at(30)
        );
        // Stalled never flipped.
        assert_eq!(
            state.condition(STALLED).unwrap().last_transition_time,
            at(10)
        );

        // A new spec that cannot be applied: from Ready straight to Stalled.
        state.record(
            Some(2),
            &Outcome::not_ready(Reason::InvalidSpec, "bad name"),
            &at(40),
        );
        assert_eq!(statuses(&state), ["False", "False", "True"]);
        assert_eq!(
            state.condition(PROGRESSING).unwrap().last_transition_time,
            at(30)
        );
        assert_eq!(
            state.condition(STALLED).unwrap().last_transition_time,
            at(40)
        );
        assert_eq!(state.last_failure.as_ref().unwrap().reason, "InvalidSpec");
    }
}
