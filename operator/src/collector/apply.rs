//! The apply stage: server-side apply of the built children, then pruning.

use std::collections::BTreeSet;

use ferrotel_api::collector::TelemetryCollector;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{ConfigMap, Service, ServiceAccount},
};
use kube::{Api, ResourceExt, api::ListParams};

use super::build::{self, Built, Children, Workload, display_name};
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
) -> Result<Applied, apply::Error> {
    let client = &ctx.client;
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
        apply::apply(client, sa).await?;
    }
    apply::apply(client, config_map).await?;
    let state = match workload {
        Workload::Deployment(d) => deployment_state(&apply::apply(client, d.as_ref()).await?),
        Workload::DaemonSet(d) => daemonset_state(&apply::apply(client, d.as_ref()).await?),
    };
    if let Some(svc) = service {
        apply::apply(client, svc).await?;
    }

    // Prune what this spec no longer wants.
    let namespace = tc.namespace().unwrap_or_default();
    let uid = tc.uid().unwrap_or_default();
    let owner = format!("TelemetryCollector {}", display_name(tc));
    let selector = build::child_selector(&tc.name_any());
    let ours = apply::Children {
        owner: &owner,
        namespace: Some(&namespace),
        selector: &selector,
        owner_uid: &uid,
    };
    let keep = |obj: Option<String>| obj.into_iter().collect::<BTreeSet<_>>();
    let (keep_deploy, keep_ds) = match workload {
        Workload::Deployment(d) => (keep(Some(d.name_any())), keep(None)),
        Workload::DaemonSet(d) => (keep(None), keep(Some(d.name_any()))),
    };
    let mut pruned = apply::prune::<Deployment>(client, ours, &keep_deploy).await?;
    pruned.extend(apply::prune::<DaemonSet>(client, ours, &keep_ds).await?);
    let keep_svc = keep(service.as_ref().map(|s| s.name_any()));
    pruned.extend(apply::prune::<Service>(client, ours, &keep_svc).await?);
    let keep_sa = keep(service_account.as_ref().map(|s| s.name_any()));
    pruned.extend(apply::prune::<ServiceAccount>(client, ours, &keep_sa).await?);

    // ConfigMaps: the current one plus the newest few others.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let mut owned: Vec<_> = cms
        .list_metadata(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| apply::Error::Prune {
            kind: "ConfigMap".into(),
            owner: owner.clone(),
            source,
        })?
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
    pruned.extend(apply::prune::<ConfigMap>(client, ours, &keep_cms).await?);

    Ok(Applied {
        workload: state,
        pruned,
    })
}
