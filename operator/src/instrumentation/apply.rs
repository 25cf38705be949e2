//! The apply stage: server-side apply of every language's children, then
//! pruning of what the spec no longer wants (a removed language), and the
//! read of the probe DaemonSets when nothing needs applying; and the subjects
//! of the probes' ClusterRoleBinding, which the operator keeps equal to the
//! probe ServiceAccounts of every Instrumentation it serves.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

use ferrotel_api::instrumentation::Instrumentation;
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, ServiceAccount},
    rbac::v1::Subject,
};
use kube::{Api, Client, ResourceExt};

use super::{
    Error,
    build::{self, Desired, LanguageChildren},
    key_of,
    status::ObservedDaemonSet,
};
use crate::runtime::apply::{self, Children};

/// Children are re-applied at least this often, whatever the fingerprint says.
pub const REAPPLY_AFTER: Duration = Duration::from_secs(300);

/// What the apply stage did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The probe DaemonSets as stored after the apply (or as read, when the
    /// fingerprint said nothing changed).
    pub daemon_sets: Vec<ObservedDaemonSet>,
    /// `Kind name` of each deleted child.
    pub pruned: Vec<String>,
}

/// Fingerprints of the children last applied, per Instrumentation UID.
///
/// Pod and namespace events re-evaluate every Instrumentation (for the
/// matched counts) far more often than its children change. When the
/// rendered children are identical to what was applied less than
/// [`REAPPLY_AFTER`] ago and every DaemonSet still exists, the reconcile only
/// reads the DaemonSets instead of re-applying everything. Any spec,
/// collector or Instrumentation-set change alters the fingerprint; a deleted
/// DaemonSet is re-created at once, other drift within [`REAPPLY_AFTER`].
#[derive(Debug, Default)]
pub struct Fingerprints(Mutex<HashMap<String, (String, Instant)>>);

impl Fingerprints {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, uid: &str, fingerprint: &str) -> bool {
        self.lock()
            .get(uid)
            .is_some_and(|(f, at)| f == fingerprint && at.elapsed() < REAPPLY_AFTER)
    }

    /// Forgets what was applied for `uid` (before an apply that may fail
    /// half-way, and when the Instrumentation goes).
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn record(&self, uid: String, fingerprint: String) {
        self.lock().insert(uid, (fingerprint, Instant::now()));
    }
}

/// A stable digest of every rendered child.
fn fingerprint(desired: &Desired) -> String {
    build::config_hash(&serde_json::to_string(desired).unwrap_or_default())
}

/// Applies `desired` unless the same children were applied recently and
/// every DaemonSet still exists; prunes what is no longer wanted.
pub async fn apply_if_changed(
    client: &Client,
    fingerprints: &Fingerprints,
    inst: &Instrumentation,
    desired: Desired,
) -> Result<Applied, Error> {
    let uid = inst.uid().unwrap_or_default();
    let fingerprint = fingerprint(&desired);
    if fingerprints.fresh(&uid, &fingerprint) {
        let daemon_sets = read_daemon_sets(client, inst).await?;
        // Every DaemonSet still exists (a stored object has a generation).
        if daemon_sets.iter().all(|ds| ds.generation.is_some()) {
            return Ok(Applied {
                daemon_sets,
                pruned: Vec::new(),
            });
        }
    }
    // Forget the record first: if applying fails half-way, the next
    // reconcile must apply again.
    fingerprints.forget(&uid);
    let applied = apply_and_prune(client, inst, desired).await?;
    fingerprints.record(uid, fingerprint);
    Ok(applied)
}

fn config_hash_of(ds: &DaemonSet) -> Option<String> {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(build::CONFIG_HASH_ANNOTATION).cloned())
}

/// Applies every child and prunes the ones no longer wanted.
async fn apply_and_prune(
    client: &Client,
    inst: &Instrumentation,
    desired: Desired,
) -> Result<Applied, Error> {
    let Desired {
        probe_image: _,
        languages,
    } = desired;
    let mut keep = BTreeSet::new();
    let mut daemon_sets = Vec::new();
    for children in languages {
        // Destructured without `..`: a child added to LanguageChildren must be applied here.
        let LanguageChildren {
            language,
            service_account,
            config_map,
            daemon_set,
        } = children;
        keep.insert(daemon_set.name_any());
        let config_hash = config_hash_of(&daemon_set);
        apply::apply(client, &service_account).await?;
        apply::apply(client, &config_map).await?;
        let stored = apply::apply(client, &daemon_set).await?;
        daemon_sets.push(ObservedDaemonSet {
            language,
            name: stored.name_any(),
            status: stored.status.clone(),
            generation: stored.metadata.generation,
            config_hash,
        });
    }
    let pruned = prune(client, inst, &keep).await?;
    Ok(Applied {
        daemon_sets,
        pruned,
    })
}

fn owner(inst: &Instrumentation) -> String {
    format!("Instrumentation {}", key_of(inst))
}

/// Deletes the children of `inst` whose names are not in `keep` (an empty
/// set: all of them, as when the Instrumentation is refused).
pub async fn prune(
    client: &Client,
    inst: &Instrumentation,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, apply::Error> {
    let (owner, namespace) = (owner(inst), inst.namespace().unwrap_or_default());
    let uid = inst.uid().unwrap_or_default();
    let selector = build::children_selector(&inst.name_any());
    let ours = Children {
        owner: &owner,
        namespace: Some(&namespace),
        selector: &selector,
        owner_uid: &uid,
    };
    let mut pruned = apply::prune::<DaemonSet>(client, ours, keep).await?;
    pruned.extend(apply::prune::<ConfigMap>(client, ours, keep).await?);
    pruned.extend(apply::prune::<ServiceAccount>(client, ours, keep).await?);
    Ok(pruned)
}

/// The probes' ClusterRoleBinding, shipped with the install: the operator
/// owns its subjects and keeps them equal to the probe ServiceAccounts of
/// every Instrumentation it serves. One binding for all, written by one
/// operator at a time (the leader), so that the operator needs no right to
/// create bindings — only to patch this one (RBAC `resourceNames`) and to
/// `bind` the probes' ClusterRole.
#[derive(Debug, Default)]
pub struct ProbeBinding {
    /// The subjects last applied, and when: the same list is not applied
    /// again before [`REAPPLY_AFTER`]. The lock orders the writes of
    /// concurrent reconciles, each computing the list when it holds it.
    last: tokio::sync::Mutex<Option<(Vec<Subject>, Instant)>>,
}

impl ProbeBinding {
    /// Applies the binding with the subjects `subjects()` computes now,
    /// unless they are what was applied recently. Returns whether it wrote.
    pub async fn sync(
        &self,
        client: &Client,
        binding: &str,
        role: &str,
        subjects: impl FnOnce() -> Vec<Subject>,
    ) -> Result<bool, apply::Error> {
        let mut last = self.last.lock().await;
        let subjects = subjects();
        if last
            .as_ref()
            .is_some_and(|(s, at)| *s == subjects && at.elapsed() < REAPPLY_AFTER)
        {
            return Ok(false);
        }
        *last = None;
        apply::apply(
            client,
            &build::probe_binding(binding, role, subjects.clone()),
        )
        .await?;
        *last = Some((subjects, Instant::now()));
        Ok(true)
    }
}

/// Reads the DaemonSets of the listed languages (when nothing is applied).
pub async fn read_daemon_sets(
    client: &Client,
    inst: &Instrumentation,
) -> Result<Vec<ObservedDaemonSet>, Error> {
    let api: Api<DaemonSet> =
        Api::namespaced(client.clone(), &inst.namespace().unwrap_or_default());
    let mut out = Vec::new();
    for &language in &inst.spec.languages {
        let name = build::daemon_set_name(&inst.name_any(), language);
        let ds = api
            .get_opt(&name)
            .await
            .map_err(|source| Error::ReadDaemonSet {
                name: name.clone(),
                source,
            })?;
        out.push(ObservedDaemonSet {
            language,
            name,
            generation: ds.as_ref().and_then(|d| d.metadata.generation),
            config_hash: ds.as_ref().and_then(config_hash_of),
            status: ds.and_then(|d| d.status),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrotel_api::{instrumentation::ResolvedExporter, probe_config::OtlpProtocol};

    fn desired(endpoint: &str) -> Desired {
        let inst: Instrumentation = serde_yaml::from_str(
            "apiVersion: ferrotel.io/v1alpha1\nkind: Instrumentation\n\
             metadata: {name: default, namespace: obs, uid: 00000000-0000-0000-0000-000000000001}\n\
             spec: {languages: [go, python], exporter: {collectorRef: {name: otel}}}\n",
        )
        .expect("fixture parses");
        let exporter = ResolvedExporter {
            endpoint: endpoint.into(),
            protocol: OtlpProtocol::Grpc,
        };
        build::build(&build::BuildInput {
            instrumentation: &inst,
            exporter: &exporter,
            grant: &ferrotel_api::probe_class::Grant {
                image: "probe:test".into(),
                privileged: false,
            },
            cluster_instrumentations: &[],
        })
        .expect("builds")
    }

    #[test]
    fn fingerprint_is_stable_and_follows_every_rendered_change() {
        assert_eq!(
            fingerprint(&desired("http://a:4317")),
            fingerprint(&desired("http://a:4317")),
            "the same input must not look like a change (or every pod event re-applies)"
        );
        assert_ne!(
            fingerprint(&desired("http://a:4317")),
            fingerprint(&desired("http://b:4317")),
            "a new endpoint must be applied"
        );
    }
}
