//! Leader election on a `coordination.k8s.io` Lease, so the operator can run several replicas
//! (a standby takes over within seconds when the leader's node fails) while only one reconciles.
//!
//! The rules are client-go's:
//! - every write carries the resourceVersion it read, so two candidates never both win;
//! - a candidate takes a held lease over only after it has seen the same record, unchanged,
//!   for a whole lease duration *by its own clock*, so clock skew between nodes does not matter;
//! - the leader renews every third of the lease duration and gives up leading when it could not
//!   renew for two thirds of it — before anyone else may take over;
//! - on a graceful shutdown the leader releases the lease, so a standby takes over at once.
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, PostParams};

/// Which Lease, and who we are.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub namespace: String,
    pub lease: String,
    /// This replica (the chart passes the pod name).
    pub identity: String,
    pub lease_duration: Duration,
}

impl LeaderElection {
    /// How often the leader renews, and a candidate retries.
    pub fn renew_every(&self) -> Duration {
        self.lease_duration / 3
    }

    /// How long the leader may fail to renew before it stops leading.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
    }
}

/// This replica's name in the Lease: the pod's name (or the host's) and a random suffix, so
/// that even two processes on one host never share an identity.
pub fn replica_identity() -> String {
    use rand::TryRngCore;
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "citycloud-operator".to_string());
    let suffix = rand::rngs::OsRng
        .try_next_u32()
        .unwrap_or_else(|_| std::process::id());
    format!("{host}_{suffix:08x}")
}

/// One replica's view of the Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaderElection,
    /// The holder and renew time last seen, and when we first saw them so.
    observed: Option<(String, Instant)>,
}

impl Elector {
    pub fn new(client: Client, config: LeaderElection) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    pub fn config(&self) -> &LeaderElection {
        &self.config
    }

    /// Takes or renews the lease when the rules allow; true when we hold it now.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let seconds = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.lease).await? else {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(self.config.lease.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return conditional(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.take().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = format!("{holder}@{:?}", spec.renew_time.as_ref().map(|t| t.0));
        if self.observed.as_ref().is_none_or(|(r, _)| *r != record) {
            self.observed = Some((record, Instant::now()));
        }
        let ours = holder == self.config.identity;
        let expired = self.observed.as_ref().is_some_and(|(_, seen)| {
            let held_for = spec
                .lease_duration_seconds
                .map_or(self.config.lease_duration, |s| {
                    Duration::from_secs(u64::try_from(s).unwrap_or(0))
                });
            seen.elapsed() >= held_for
        });
        if !(ours || holder.is_empty() || expired) {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(seconds),
            renew_time: Some(now.clone()),
            acquire_time: if ours { spec.acquire_time } else { Some(now) },
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..spec
        });
        // The resourceVersion read above makes this replace conditional.
        conditional(
            self.api
                .replace(&self.config.lease, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Gives the lease up (if we hold it), so a standby need not wait for it to expire.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.lease).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        conditional(
            self.api
                .replace(&self.config.lease, &PostParams::default(), &lease)
                .await,
        )
        .map(|_| ())
    }
}

/// A write that lost a race (409 Conflict, or AlreadyExists) means someone else holds it.
fn conditional(result: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
