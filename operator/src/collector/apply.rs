//! The apply stage: server-side apply of the built children, then pruning.

use std::collections::BTreeSet;

use ferrotel_api::collector::TelemetryCollector;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{ConfigMap, Service, ServiceAccount},
};
use kube::{Api, ResourceExt, api::ListParams};

use super::{
    Error,
    build::{self, Built, Children, Workload},
};
use crate::runtime::{Context, apply};

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
    ctx: &Context,
    tc: &TelemetryCollector,
    built: &Built,
) -> Result<Applied, Error> {
    let client = &ctx.client;
    // Destructured without `..`: a new child kind must be handled here.
    let Children {
        service_account,
        config_map,
        workload,
        service,
    } = &built.children;
    let apply_err =
        |kind: &'static str, name: String| move |source| Error::Apply { kind, name, source };

    // Order matters: the ServiceAccount and ConfigMap must exist before the
    // pods that reference them are created.
    if let Some(sa) = service_account {
        apply::apply(client, sa)
            .await
            .map_err(apply_err("ServiceAccount", sa.name_any()))?;
    }
    apply::apply(client, config_map)
        .await
        .map_err(apply_err("ConfigMap", config_map.name_any()))?;
    let state = match workload {
        Workload::Deployment(d) => deployment_state(
            &apply::apply(client, d.as_ref())
                .await
                .map_err(apply_err("Deployment", d.name_any()))?,
        ),
        Workload::DaemonSet(d) => daemonset_state(
            &apply::apply(client, d.as_ref())
                .await
                .map_err(apply_err("DaemonSet", d.name_any()))?,
        ),
    };
    if let Some(svc) = service {
        apply::apply(client, svc)
            .await
            .map_err(apply_err("Service", svc.name_any()))?;
    }

    // Prune what this spec no longer wants.
    let name = tc.name_any();
    let namespace = tc.namespace().unwrap_or_default();
    let uid = tc.uid().unwrap_or_default();
    let selector = build::child_selector(&name);
    let keep = |obj: Option<String>| obj.into_iter().collect::<BTreeSet<_>>();
    let prune_err = |kind: &'static str| {
        let owner = format!("{namespace}/{name}");
        move |source| Error::Prune {
            kind,
            owner,
            source,
        }
    };
    let mut pruned = Vec::new();
    let (keep_deploy, keep_ds) = match workload {
        Workload::Deployment(d) => (keep(Some(d.name_any())), keep(None)),
        Workload::DaemonSet(d) => (keep(None), keep(Some(d.name_any()))),
    };
    for n in apply::prune::<Deployment>(client, &namespace, &selector, &uid, &keep_deploy)
        .await
        .map_err(prune_err("Deployment"))?
    {
        pruned.push(format!("Deployment {n}"));
    }
    for n in apply::prune::<DaemonSet>(client, &namespace, &selector, &uid, &keep_ds)
        .await
        .map_err(prune_err("DaemonSet"))?
    {
        pruned.push(format!("DaemonSet {n}"));
    }
    for n in apply::prune::<Service>(
        client,
        &namespace,
        &selector,
        &uid,
        &keep(service.as_ref().map(|s| s.name_any())),
    )
    .await
    .map_err(prune_err("Service"))?
    {
        pruned.push(format!("Service {n}"));
    }
    for n in apply::prune::<ServiceAccount>(
        client,
        &namespace,
        &selector,
        &uid,
        &keep(service_account.as_ref().map(|s| s.name_any())),
    )
    .await
    .map_err(prune_err("ServiceAccount"))?
    {
        pruned.push(format!("ServiceAccount {n}"));
    }

    // ConfigMaps: the current one plus the newest few others.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let mut owned: Vec<_> = cms
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(prune_err("ConfigMap"))?
        .into_iter()
        .filter(|cm| apply::is_owned_by(cm, &uid) && cm.name_any() != config_map.name_any())
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
    for n in apply::prune::<ConfigMap>(client, &namespace, &selector, &uid, &keep_cms)
        .await
        .map_err(prune_err("ConfigMap"))?
    {
        pruned.push(format!("ConfigMap {n}"));
    }

    Ok(Applied {
        workload: state,
        pruned,
    })
}
