//! The apply stage: server-side apply of every language's children that
//! differ from what the watch caches hold, then pruning of what the spec no
//! longer wants (a removed language); and the subjects of the probes'
//! ClusterRoleBinding, which the operator keeps equal to the probe
//! ServiceAccounts of every Instrumentation it serves.
//!
//! Pod and namespace events re-evaluate every Instrumentation (for the
//! matched counts) far more often than its children change, and a restarted
//! operator reconciles everything again: both compare each rendered child
//! with the cached one ([`apply::unchanged`]) and send nothing when they
//! agree. Drift made by someone else to a field the operator sets shows as a
//! difference, and the child watches trigger the reconcile that applies it
//! away.

use std::{collections::BTreeSet, time::Duration, time::Instant};

use ferrotel_api::instrumentation::Instrumentation;
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{ConfigMap, ServiceAccount},
    rbac::v1::{ClusterRoleBinding, Subject},
};
use kube::{
    Api, Client, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use super::{
    Error,
    build::{self, Desired, LanguageChildren},
    key_of,
    status::ObservedDaemonSet,
};
use crate::runtime::apply::{self, Children};

/// The probes' ClusterRoleBinding is read again (and re-applied if it
/// drifted) at least this often; it has no watch.
pub const REAPPLY_AFTER: Duration = Duration::from_secs(300);

/// What the apply stage did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The probe DaemonSets as stored after the apply (or as cached, when
    /// they were unchanged).
    pub daemon_sets: Vec<ObservedDaemonSet>,
    /// `Kind name` of each deleted child.
    pub pruned: Vec<String>,
}

/// The watch caches of the probes' namespaced children (every namespace
/// the operator watches, only objects labelled as probe children).
#[derive(Clone)]
pub struct ChildCaches {
    pub daemon_sets: Store<DaemonSet>,
    pub config_maps: Store<ConfigMap>,
    pub service_accounts: Store<ServiceAccount>,
}

fn cached<K>(store: &Store<K>, namespace: &str, name: &str) -> Option<std::sync::Arc<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))
}

fn config_hash_of(ds: &DaemonSet) -> Option<String> {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())
        .and_then(|a| a.get(build::CONFIG_HASH_ANNOTATION).cloned())
}

/// Applies every child that differs from its cached copy and prunes the
/// ones no longer wanted.
pub async fn apply_and_prune(
    client: &Client,
    caches: &ChildCaches,
    inst: &Instrumentation,
    desired: Desired,
) -> Result<Applied, Error> {
    let Desired {
        probe_image: _,
        languages,
    } = desired;
    let namespace = inst.namespace().unwrap_or_default();
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
        let name = daemon_set.name_any();
        keep.insert(name.clone());
        let config_hash = config_hash_of(&daemon_set);
        let stored = cached(&caches.service_accounts, &namespace, &name);
        apply::apply_unless_unchanged(client, &service_account, stored.as_deref()).await?;
        let stored = cached(&caches.config_maps, &namespace, &name);
        apply::apply_unless_unchanged(client, &config_map, stored.as_deref()).await?;
        let stored = cached(&caches.daemon_sets, &namespace, &name);
        let stored = apply::apply_unless_unchanged(client, &daemon_set, stored.as_deref()).await?;
        daemon_sets.push(ObservedDaemonSet {
            language,
            name: stored.name_any(),
            status: stored.status.clone(),
            generation: stored.metadata.generation,
            config_hash,
        });
    }
    let pruned = prune(client, caches, inst, &keep).await?;
    Ok(Applied {
        daemon_sets,
        pruned,
    })
}

fn owner(inst: &Instrumentation) -> String {
    format!("Instrumentation {}", key_of(inst))
}

/// Deletes the children of `inst` whose names are not in `keep` (an empty
/// set: all of them, as when the Instrumentation is refused), found in the
/// watch caches.
pub async fn prune(
    client: &Client,
    caches: &ChildCaches,
    inst: &Instrumentation,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>, apply::Error> {
    let (owner, namespace) = (owner(inst), inst.namespace().unwrap_or_default());
    let uid = inst.uid().unwrap_or_default();
    let labels = build::children_labels(&inst.name_any());
    let ours = Children {
        owner: &owner,
        namespace: Some(&namespace),
        owner_uid: &uid,
    };
    let mut pruned =
        apply::prune_cached::<DaemonSet>(client, ours, &labels, &caches.daemon_sets.state(), keep)
            .await?;
    pruned.extend(
        apply::prune_cached::<ConfigMap>(client, ours, &labels, &caches.config_maps.state(), keep)
            .await?,
    );
    pruned.extend(
        apply::prune_cached::<ServiceAccount>(
            client,
            ours,
            &labels,
            &caches.service_accounts.state(),
            keep,
        )
        .await?,
    );
    Ok(pruned)
}

/// The probes' ClusterRoleBinding, shipped with the install: the operator
/// owns its subjects and keeps them equal to the probe ServiceAccounts of
/// every Instrumentation it serves. One binding for all, written by one
/// operator at a time (the leader), so that the operator needs no right to
/// create bindings — only to read and patch this one (RBAC `resourceNames`)
/// and to `bind` the probes' ClusterRole.
#[derive(Debug, Default)]
pub struct ProbeBinding {
    /// The subjects last applied or read, and when: the same list is not
    /// applied (nor read) again before [`REAPPLY_AFTER`]. The lock orders
    /// the writes of concurrent reconciles, each computing the list when it
    /// holds it.
    last: tokio::sync::Mutex<Option<(Vec<Subject>, Instant)>>,
}

impl ProbeBinding {
    /// Applies the binding with the subjects `subjects()` computes now,
    /// unless they are what was applied recently or what is stored (read
    /// once after a start, and after [`REAPPLY_AFTER`]: the binding has no
    /// watch). Returns whether it wrote.
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
        let desired = build::probe_binding(binding, role, subjects.clone());
        let stored = Api::<ClusterRoleBinding>::all(client.clone())
            .get_opt(binding)
            .await
            .map_err(|source| apply::Error::Apply {
                kind: "ClusterRoleBinding".into(),
                name: binding.to_owned(),
                source,
            })?;
        let wrote = !stored
            .as_ref()
            .is_some_and(|stored| apply::unchanged(&desired, stored));
        if wrote {
            apply::apply(client, &desired).await?;
        }
        *last = Some((subjects, Instant::now()));
        Ok(wrote)
    }
}

/// The DaemonSets of the listed languages as cached (when nothing is
/// applied).
pub fn read_daemon_sets(caches: &ChildCaches, inst: &Instrumentation) -> Vec<ObservedDaemonSet> {
    let namespace = inst.namespace().unwrap_or_default();
    inst.spec
        .languages
        .iter()
        .map(|&language| {
            let name = build::daemon_set_name(&inst.name_any(), language);
            let ds = cached(&caches.daemon_sets, &namespace, &name);
            ObservedDaemonSet {
                language,
                generation: ds.as_ref().and_then(|d| d.metadata.generation),
                config_hash: ds.as_deref().and_then(config_hash_of),
                status: ds.and_then(|d| d.status.clone()),
                name,
            }
        })
        .collect()
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
    fn a_rendered_child_is_unchanged_against_itself_and_changed_by_a_new_endpoint() {
        let (a, b) = (desired("http://a:4317"), desired("http://b:4317"));
        let (a, b) = (&a.languages[0], &b.languages[0]);
        assert!(apply::unchanged(&a.daemon_set, &a.daemon_set));
        assert!(apply::unchanged(&a.config_map, &a.config_map));
        assert!(apply::unchanged(&a.service_account, &a.service_account));
        assert!(
            !apply::unchanged(&b.config_map, &a.config_map),
            "a new endpoint must be applied"
        );
        assert!(
            !apply::unchanged(&b.daemon_set, &a.daemon_set),
            "a new endpoint rolls the probes (config hash)"
        );
    }
}
