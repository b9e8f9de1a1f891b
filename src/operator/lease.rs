//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas never
//! reconcile at once. kube-runtime has none; this follows client-go's leaderelection: take the
//! Lease when it is free or expired, renew it well inside its duration, and stop leading when
//! a renewal cannot be made before it expires. Writes use the Lease's resourceVersion, so two
//! candidates racing for it cannot both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

/// How long a Lease stays valid without renewal.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews (client-go's default ratio: renew every third of the duration).
const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// How often a follower checks whether the Lease became free.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("failed to read or write Lease {namespace}/{name}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("lost Lease {namespace}/{name}: not renewed within {LEASE_DURATION:?}")]
    Lost { namespace: String, name: String },
}

pub struct LeaderElection {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
}

impl LeaderElection {
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) -> Result<(), LeaseError> {
        let mut announced = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    if !announced {
                        tracing::info!(lease = %self.name, "another replica leads; waiting for the lease");
                        announced = true;
                    }
                }
                Err(error) => tracing::warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep(RETRY_INTERVAL).await;
        }
    }

    /// Renews the Lease until a renewal cannot be made before it would expire; then returns
    /// the error (the caller stops reconciling and exits, like client-go's OnStoppedLeading).
    pub async fn hold(&self) -> LeaseError {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_INTERVAL).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => return self.lost(),
                Err(error) => tracing::warn!(%error, "could not renew the lease; retrying"),
            }
            if last_renewal.elapsed() >= LEASE_DURATION {
                return self.lost();
            }
        }
    }

    /// Gives the Lease up so another replica can take over at once (on graceful shutdown).
    pub async fn release(&self) -> Result<(), LeaseError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(drop)
            .map_err(|e| self.api_error(e))
    }

    /// One round of client-go's tryAcquireOrRenew: `Ok(true)` when we hold the Lease after it.
    async fn try_acquire_or_renew(&self) -> Result<bool, LeaseError> {
        let now = Timestamp::now();
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error(e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec_taking_over(now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(self.api_error(error)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let held_by_us = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = match (
            &spec.holder_identity,
            &spec.renew_time,
            spec.lease_duration_seconds,
        ) {
            (Some(_), Some(MicroTime(renewed)), Some(seconds)) => {
                *renewed + SignedDuration::from_secs(i64::from(seconds)) < now
            }
            // No holder, or a Lease without times: free.
            _ => true,
        };
        if !held_by_us && !expired {
            return Ok(false);
        }
        lease.spec = Some(if held_by_us {
            LeaseSpec {
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(duration_seconds()),
                ..spec
            }
        } else {
            self.spec_taking_over(now, spec.lease_transitions.unwrap_or(0) + 1)
        });
        // replace carries the resourceVersion we read: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(self.api_error(error)),
        }
    }

    fn spec_taking_over(&self, now: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(duration_seconds()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn api_error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    fn lost(&self) -> LeaseError {
        LeaseError::Lost {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

fn duration_seconds() -> i32 {
    i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(i32::MAX)
}
