//! Leader election with a `coordination.k8s.io/v1` Lease.
//!
//! kube-runtime has no elector, and the algorithm is small: whoever holds a
//! Lease whose `renewTime + leaseDurationSeconds` is in the future leads;
//! everybody else polls and takes over an expired Lease with an optimistic
//! (resourceVersion-checked) replace, so two candidates can never both win.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, Client, api::PostParams};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// How long a lease stays valid without renewal.
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews; a third of the duration tolerates two missed renewals.
const RENEW_PERIOD: Duration = Duration::from_secs(5);
/// How often a candidate checks whether the lease expired.
const RETRY_PERIOD: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("failed to read or write Lease {namespace}/{name}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Lease {namespace}/{name} was taken over by {holder:?}")]
    TakenOver {
        namespace: String,
        name: String,
        holder: Option<String>,
    },
    #[error("could not renew Lease {namespace}/{name} within {seconds}s")]
    RenewDeadline {
        namespace: String,
        name: String,
        seconds: u64,
    },
}

/// This process's identity in the election: the pod name when running in a
/// pod, plus the PID so two local processes never share one.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "ferrotel-operator".to_owned());
    format!("{host}_{}", std::process::id())
}

#[derive(Debug, Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
}

enum Attempt {
    Acquired,
    HeldByOther(Option<String>),
}

impl LeaderElector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: String) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity,
        }
    }

    fn api_err(&self, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            source,
        }
    }

    /// Waits until this process leads (`Ok(true)`) or shutdown (`Ok(false)`).
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Result<bool, LeaderError> {
        let mut announced = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Acquired) => {
                    info!(lease = %self.name, namespace = %self.namespace, identity = %self.identity, "Acquired leadership");
                    return Ok(true);
                }
                Ok(Attempt::HeldByOther(holder)) => {
                    if !announced {
                        info!(lease = %self.name, holder = ?holder, "Waiting for leadership");
                        announced = true;
                    }
                }
                // Conflicts (another candidate won the race) and transient
                // errors are retried; the next attempt re-reads the Lease.
                Err(err) => debug!(error = %err, "Leader election attempt failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(RETRY_PERIOD) => {}
            }
        }
    }

    /// Renews until shutdown; returns an error as soon as leadership is lost.
    pub async fn hold(&self, shutdown: &CancellationToken) -> Result<(), LeaderError> {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(RENEW_PERIOD) => {}
            }
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Acquired) => last_renewal = tokio::time::Instant::now(),
                Ok(Attempt::HeldByOther(holder)) => {
                    return Err(LeaderError::TakenOver {
                        namespace: self.namespace.clone(),
                        name: self.name.clone(),
                        holder,
                    });
                }
                Err(err) => {
                    debug!(error = %err, "Lease renewal failed; retrying");
                    // Stop before the lease can expire so another replica
                    // never reconciles while we still believe we lead.
                    if last_renewal.elapsed() + RENEW_PERIOD >= LEASE_DURATION {
                        return Err(LeaderError::RenewDeadline {
                            namespace: self.namespace.clone(),
                            name: self.name.clone(),
                            seconds: LEASE_DURATION.as_secs(),
                        });
                    }
                }
            }
        }
    }

    /// Gives the lease up so a successor does not wait for it to expire.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_err(e))?
        else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.api_err(e))?;
        info!(lease = %self.name, "Released leadership");
        Ok(())
    }

    async fn try_acquire_or_renew(&self) -> Result<Attempt, LeaderError> {
        let now = Timestamp::now();
        let duration = i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15);
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_err(e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            self.api
                .create(&PostParams::default(), &lease)
                .await
                .map_err(|e| self.api_err(e))?;
            return Ok(Attempt::Acquired);
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !claim(spec, &self.identity, now) {
            return Ok(Attempt::HeldByOther(spec.holder_identity.clone()));
        }
        spec.lease_duration_seconds = Some(duration);
        spec.renew_time = Some(MicroTime(now));
        // `replace` carries the resourceVersion we read: a concurrent writer
        // makes this fail with 409 instead of silently sharing leadership.
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(|e| self.api_err(e))?;
        Ok(Attempt::Acquired)
    }
}

/// Decides whether `identity` may hold the lease described by `spec` at
/// `now`, and if so records the takeover in `spec` (holder, acquire time,
/// transitions). Renewal fields are set by the caller. Pure, so the rules
/// are unit-tested: the holder renews; anyone takes a vacant or expired
/// lease; nobody takes a live lease held by someone else.
fn claim(spec: &mut LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let ours = spec.holder_identity.as_deref() == Some(identity);
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(MicroTime(renewed)), Some(secs)) => {
            renewed
                .saturating_add(SignedDuration::from_secs(i64::from(secs)))
                .unwrap_or(*renewed)
                < now
        }
        _ => true,
    };
    let vacant = spec.holder_identity.as_deref().is_none_or(str::is_empty);
    if !ours && !expired && !vacant {
        return false;
    }
    if !ours {
        spec.holder_identity = Some(identity.to_owned());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed: Timestamp, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(secs),
            lease_transitions: Some(3),
            ..Default::default()
        }
    }

    #[test]
    fn live_lease_of_another_holder_is_not_taken() {
        let now = Timestamp::from_second(1_000).expect("valid time");
        let mut spec = held_by("a", now, 15);
        assert!(
            !claim(&mut spec, "b", now),
            "a live lease belongs to its holder"
        );
        assert_eq!(
            spec.holder_identity.as_deref(),
            Some("a"),
            "and is left untouched"
        );
    }

    #[test]
    fn expired_or_vacant_lease_is_taken_over_and_counted() {
        let renewed = Timestamp::from_second(1_000).expect("valid time");
        let later = Timestamp::from_second(1_016).expect("valid time");
        let mut spec = held_by("a", renewed, 15);
        assert!(
            claim(&mut spec, "b", later),
            "15 s lease renewed 16 s ago has expired"
        );
        assert_eq!(spec.holder_identity.as_deref(), Some("b"));
        assert_eq!(
            spec.lease_transitions,
            Some(4),
            "a takeover is a transition"
        );

        let mut released = LeaseSpec {
            holder_identity: None,
            ..held_by("x", later, 15)
        };
        assert!(
            claim(&mut released, "c", later),
            "a released lease is free at once"
        );
    }

    #[test]
    fn holder_renews_without_a_transition() {
        let now = Timestamp::from_second(1_000).expect("valid time");
        let mut spec = held_by("a", now, 15);
        assert!(claim(&mut spec, "a", now), "the holder keeps its lease");
        assert_eq!(
            spec.lease_transitions,
            Some(3),
            "renewal is not a transition"
        );
    }
}
