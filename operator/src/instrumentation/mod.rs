//! The `Instrumentation` controller: one probe DaemonSet (plus ServiceAccount,
//! ClusterRole/Binding and ConfigMap) per language, and a status that says
//! what is instrumented.
//!
//! Stages (see [`reconcile`]): dereference the exporter ([`exporter`]) →
//! validate and build the children ([`build`], pure) → server-side apply and
//! prune → compute the status ([`status`], pure) and write it only if it
//! changed.
//!
//! Watches:
//! - Instrumentations (in `--watch-namespace`, or all) — the primary;
//! - DaemonSets they own — rollout progress lands in status;
//! - TelemetryCollectors — a collector appearing (or its endpoints changing)
//!   heals the Instrumentations that reference it;
//! - Namespaces and Pods, **metadata only** and cluster-wide (opt-in is
//!   cluster-wide) — any change re-evaluates every Instrumentation's matched
//!   counts, debounced, so status follows annotations within seconds.
//!
//! With `--watch-namespace`, "the Instrumentations in the cluster" that the
//! opt-in value `"true"` refers to are the ones in the watched namespace:
//! those are the ones this operator instance serves.

pub mod build;
pub mod exporter;
pub mod reconcile;
pub mod status;

use std::{sync::Arc, time::Duration};

use ferrotel_api::{collector::TelemetryCollector, instrumentation::Instrumentation};
use futures::{StreamExt, stream};
use k8s_openapi::api::{
    apps::v1::DaemonSet,
    core::v1::{Namespace, Pod},
};
use kube::{
    Api, ResourceExt,
    api::PartialObjectMeta,
    runtime::{
        Controller, WatchStreamExt,
        controller::{self, Config},
        reflector::{self, ObjectRef},
        watcher,
    },
};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::runtime::Context;
use reconcile::{CONTROLLER, Data};

/// Pod and namespace events arriving within this window cause one
/// re-evaluation, not one per event.
const DEBOUNCE: Duration = Duration::from_millis(500);

/// Runs the Instrumentation controller until shutdown.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();

    // Metadata-only reflectors for the opt-in inputs: labels and annotations
    // are all the rules read, and pods are the biggest list in a cluster.
    let changed = Arc::new(Notify::new());
    let (namespaces, ns_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let ns_events = reflector::reflector(
        ns_writer,
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects()
    .map(|r| r.map(|_| ()));
    let pod_events = reflector::reflector(
        pod_writer,
        watcher(
            Api::<PartialObjectMeta<Pod>>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects()
    .map(|r| r.map(|_| ()));
    let feeder = {
        let changed = changed.clone();
        let shutdown = ctx.shutdown.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(stream::select(ns_events, pod_events));
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    next = events.next() => match next {
                        Some(Ok(())) => changed.notify_one(),
                        Some(Err(err)) => warn!(error = %err, "Namespace/pod watch failed; retrying with backoff"),
                        None => break,
                    },
                }
            }
        })
    };

    let instrumentations: Api<Instrumentation> = ctx.namespaced_api();
    let controller = Controller::new(instrumentations, watcher::Config::default())
        .with_config(Config::default().debounce(DEBOUNCE));
    let store = controller.store();
    let collector_api: Api<TelemetryCollector> = ctx.namespaced_api();
    let referrers = store.clone();
    let controller = controller
        .owns(
            ctx.namespaced_api::<DaemonSet>(),
            watcher::Config::default(),
        )
        .watches(
            collector_api,
            watcher::Config::default(),
            move |collector| {
                let (ns, name) = (
                    collector.namespace().unwrap_or_default(),
                    collector.name_any(),
                );
                referrers
                    .state()
                    .into_iter()
                    .filter(|i| {
                        i.spec.exporter.collector_ref.as_ref().is_some_and(|r| {
                            r.name == name
                                && r.namespace.clone().or_else(|| i.namespace()).as_deref()
                                    == Some(ns.as_str())
                        })
                    })
                    .map(|i| ObjectRef::from_obj(&*i))
                    .collect::<Vec<_>>()
            },
        )
        .reconcile_all_on(stream::unfold(changed, |changed| async move {
            changed.notified().await;
            Some(((), changed))
        }))
        .graceful_shutdown_on(ctx.shutdown.clone().cancelled_owned());

    let data = Arc::new(Data {
        ctx: ctx.clone(),
        instrumentations: store.clone(),
        namespaces: namespaces.clone(),
        pods: pods.clone(),
        applied: Default::default(),
    });

    // `/readyz` waits until every cache has its first full list.
    {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            // runtime::wait_until_synced works around a missed wake-up in
            // kube-runtime 5.0.0's Store::wait_until_ready (see its docs).
            let synced = crate::runtime::wait_until_synced(&namespaces).await
                && crate::runtime::wait_until_synced(&pods).await
                && crate::runtime::wait_until_synced(&store).await;
            if synced {
                info!("Instrumentation caches synced");
                ctx.readiness.mark_synced(CONTROLLER);
            } else {
                warn!("Instrumentation caches were dropped before syncing")
            }
        });
    }

    controller
        .run(reconcile::reconcile, reconcile::error_policy, data)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => debug!(instrumentation = %obj, "Reconciled"),
                Err(controller::Error::ReconcilerFailed(err, obj)) => {
                    debug!(instrumentation = %obj, error = %err, "Reconcile failed (handled by error_policy)")
                }
                Err(err) => warn!(error = %err, "Instrumentation controller error"),
            }
        })
        .await;
    feeder.abort();
    Ok(())
}
