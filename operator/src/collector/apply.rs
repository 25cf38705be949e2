//! The apply stage: server-side apply of the built children that differ
//! from what the watch caches hold, then pruning, also from the caches. A
//! reconcile of a settled collector (a resync, a restart of the operator)
//! sends no request; drift made by someone else to a field the operator
//! sets shows as a difference, and the child watches trigger the reconcile
//! that applies it away.

use std::{collections::BTreeSet, sync::Arc};

use ferrotel_api::collector::TelemetryCollector;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{ConfigMap, Service, ServiceAccount},
};
use kube::{
    Resource, ResourceExt,
    runtime::reflector::{ObjectRef, Store},
};

use super::build::{self, Built, Children, Workload, display_name};
use crate::runtime::apply;

/// Previous ConfigMaps kept besides the current one, so `kubectl rollout
/// undo` of the workload finds its config.
pub const KEEP_OLD_CONFIG_MAPS: usize = 3;

/// Rollout state of the applied workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadState {
    pub desired: i32,
    pub ready: i32,
    /// Every pod runs the current template, as observed by its controller.
    pub rolled_out: bool,
}

/// What the apply stage did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub workload: WorkloadState,
    /// `Kind name` of each deleted child.
    pub pruned: Vec<String>,
}

/// The watch caches of the collectors' children (labelled as such, in the
/// namespaces the operator watches).
#[derive(Clone)]
pub struct ChildCaches {
    pub deployments: Store<Deployment>,
    pub daemon_sets: Store<DaemonSet>,
    pub config_maps: Store<ConfigMap>,
    pub services: Store<Service>,
    pub service_accounts: Store<ServiceAccount>,
}

/// The cached copy of `obj` (same name and namespace), if any.
fn cached<K>(store: &Store<K>, obj: &K) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let namespace = obj.meta().namespace.clone().unwrap_or_default();
    store.get(&ObjectRef::new(&name).within(&namespace))
}

/// Applies `obj` unless its cached copy already has every field it sets.
async fn apply_child<K>(client: &kube::Client, store: &Store<K>, obj: &K) -> Result<K, apply::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
        + 'static,
{
    let stored = cached(store, obj);
    apply::apply_unless_unchanged(client, obj, stored.as_deref()).await
}

fn deployment_state(d: &Deployment) -> WorkloadState {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let observed = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let total = st.replicas.unwrap_or(0);
    WorkloadState {
        desired,
        ready: st.ready_replicas.unwrap_or(0),
        rolled_out: observed && updated >= desired && total <= updated,
    }
}

fn daemonset_state(d: &DaemonSet) -> WorkloadState {
    let st = d.status.clone().unwrap_or_default();
    let observed = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let desired = st.desired_number_scheduled;
    WorkloadState {
        desired,
        ready: st.number_ready,
        rolled_out: observed && st.updated_number_scheduled.unwrap_or(0) >= desired,
    }
}

pub async fn apply_and_prune(
    client: &kube::Client,
    caches: &ChildCaches,
    tc: &TelemetryCollector,
    built: &Built,
) -> Result<Applied, apply::Error> {
    // Destructured without `..`: a new child kind must be handled here.
    let Children {
        service_account,
        config_map,
        workload,
        service,
    } = &built.children;

    // Order matters: the ServiceAccount and ConfigMap must exist before the
    // pods that reference them are created.
    if let Some(sa) = service_account {
        apply_child(client, &caches.service_accounts, sa).await?;
    }
    apply_child(client, &caches.config_maps, config_map).await?;
    let state = match workload {
        Workload::Deployment(d) => {
            deployment_state(&apply_child(client, &caches.deployments, d.as_ref()).await?)
        }
        Workload::DaemonSet(d) => {
            daemonset_state(&apply_child(client, &caches.daemon_sets, d.as_ref()).await?)
        }
    };
    if let Some(svc) = service {
        apply_child(client, &caches.services, svc).await?;
    }

    // Prune what this spec no longer wants.
    let namespace = tc.namespace().unwrap_or_default();
    let uid = tc.uid().unwrap_or_default();
    let owner = format!("TelemetryCollector {}", display_name(tc));
    let labels = build::child_labels(&tc.name_any());
    let ours = apply::Children {
        owner: &owner,
        namespace: Some(&namespace),
        owner_uid: &uid,
    };
    let keep = |obj: Option<String>| obj.into_iter().collect::<BTreeSet<_>>();
    let (keep_deploy, keep_ds) = match workload {
        Workload::Deployment(d) => (keep(Some(d.name_any())), keep(None)),
        Workload::DaemonSet(d) => (keep(None), keep(Some(d.name_any()))),
    };
    let (deployments, daemon_sets) = (caches.deployments.state(), caches.daemon_sets.state());
    let mut pruned = apply::prune_cached(client, ours, &labels, &deployments, &keep_deploy).await?;
    pruned.extend(apply::prune_cached(client, ours, &labels, &daemon_sets, &keep_ds).await?);
    let keep_svc = keep(service.as_ref().map(|s| s.name_any()));
    let services = caches.services.state();
    pruned.extend(apply::prune_cached(client, ours, &labels, &services, &keep_svc).await?);
    let keep_sa = keep(service_account.as_ref().map(|s| s.name_any()));
    let service_accounts = caches.service_accounts.state();
    pruned.extend(apply::prune_cached(client, ours, &labels, &service_accounts, &keep_sa).await?);

    // ConfigMaps: the current one plus the newest few others.
    let config_maps = caches.config_maps.state();
    let mut owned: Vec<_> = config_maps
        .iter()
        .filter(|cm| {
            cm.metadata.namespace.as_deref() == Some(namespace.as_str())
                && labels.iter().all(|(k, v)| cm.labels().get(k) == Some(v))
                && apply::is_owned_by(cm.as_ref(), &uid)
                && cm.name_any() != config_map.name_any()
        })
        .collect();
    owned.sort_by(|a, b| {
        b.metadata
            .creation_timestamp
            .cmp(&a.metadata.creation_timestamp)
    });
    let keep_cms: BTreeSet<String> = std::iter::once(config_map.name_any())
        .chain(
            owned
                .iter()
                .take(KEEP_OLD_CONFIG_MAPS)
                .map(|cm| cm.name_any()),
        )
        .collect();
    pruned.extend(apply::prune_cached(client, ours, &labels, &config_maps, &keep_cms).await?);

    Ok(Applied {
        workload: state,
        pruned,
    })
}
