//! The `Instrumentation` controller: one probe DaemonSet (plus ServiceAccount,
//! ClusterRole/Binding and ConfigMap) per language, and a status that says
//! what is instrumented.
//!
//! One reconcile is a named pipeline, one module per stage, like the
//! collector's:
//!
//! 1. **dereference** ([`exporter`]): the endpoint, from the spec or the
//!    referenced TelemetryCollector's status;
//! 2. **validate + build** ([`build`]): pure, CR → desired children;
//! 3. **apply** ([`apply`]): server-side apply of every child, pruning of the
//!    children of removed languages;
//! 4. **status** ([`status`]): pure, computed with its Events from what the
//!    stages came to ([`Outcome`]) and the opt-in caches, written once at the
//!    end of the reconcile and only if it changed.
//!
//! A spec or exporter problem stops before apply: nothing is written but the
//! status (`Degraded`) and a Warning Event, and existing probes keep their
//! last good config. Cleanup (the finalizer) removes the cluster-scoped RBAC,
//! which ownerReferences cannot reach; namespaced children go with the
//! Instrumentation through the garbage collector.
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

mod apply;
pub mod build;
mod exporter;
mod status;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use ferrotel_api::{
    collector::TelemetryCollector,
    conditions::reasons,
    instrumentation::{Instrumentation, ResolvedExporter},
    optin::{Candidate, InstrumentationKey, Instrumentations},
};
use futures::{StreamExt, stream};
use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Namespace, Pod},
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api, ResourceExt,
    api::{ObjectMeta, PartialObjectMeta},
    runtime::{
        Controller, WatchStreamExt,
        controller::{Action, Config},
        finalizer::{self, finalizer},
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::runtime::{Context, ErrorCategory, errors::Categorized, report};
use build::BuildInput;
use status::{MatchSummary, Meta, ObservedDaemonSet, Problem, StatusInput};

/// Name used for metrics, readiness and logs.
pub const CONTROLLER: &str = "instrumentation";
/// Finalizer guarding the cluster-scoped RBAC.
pub const FINALIZER: &str = "ferrotel.io/cluster-rbac";

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
        fingerprints: Default::default(),
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
        .run(reconcile, error_policy, data)
        .for_each(|result| async move { crate::runtime::log_result(CONTROLLER, result) })
        .await;
    feeder.abort();
    info!(controller = CONTROLLER, "Controller stopped");
    Ok(())
}

/// Shared state of the reconciler: the runtime context and the caches.
pub struct Data {
    pub ctx: Arc<Context>,
    pub instrumentations: Store<Instrumentation>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub pods: Store<PartialObjectMeta<Pod>>,
    pub fingerprints: apply::Fingerprints,
}

/// One variant per stage that talks to the API server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read TelemetryCollector for Instrumentation {instrumentation}")]
    Dereference {
        instrumentation: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Children(#[from] crate::runtime::apply::Error),
    #[error("failed to read DaemonSet {name}")]
    ReadDaemonSet {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to write the status of Instrumentation {instrumentation}")]
    Status {
        instrumentation: String,
        #[source]
        source: kube::Error,
    },
    #[error("finalizer of Instrumentation {instrumentation} failed")]
    Finalizer {
        instrumentation: String,
        #[source]
        source: Box<finalizer::Error<Error>>,
    },
}

impl Categorized for Error {
    fn category(&self) -> ErrorCategory {
        match self {
            Error::Dereference { source, .. }
            | Error::ReadDaemonSet { source, .. }
            | Error::Status { source, .. } => ErrorCategory::of_kube(source),
            Error::Children(err) => ErrorCategory::of_kube(err.kube()),
            Error::Finalizer { source, .. } => match source.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.category()
                }
                finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => {
                    ErrorCategory::of_kube(e)
                }
                _ => ErrorCategory::Internal,
            },
        }
    }
}

fn key_of(inst: &Instrumentation) -> InstrumentationKey {
    InstrumentationKey::new(inst.namespace().unwrap_or_default(), inst.name_any())
}

async fn reconcile(inst: Arc<Instrumentation>, data: Arc<Data>) -> Result<Action, Error> {
    let _timer = data.ctx.metrics.reconcile(CONTROLLER);
    let key = key_of(&inst);
    let api: Api<Instrumentation> = Api::namespaced(data.ctx.client.clone(), &key.namespace);
    let result = finalizer(&api, FINALIZER, inst, |event| async {
        match event {
            finalizer::Event::Apply(inst) => apply_stage(&inst, &data).await,
            finalizer::Event::Cleanup(inst) => cleanup(&inst, &data).await,
        }
    })
    .await
    .map_err(|source| Error::Finalizer {
        instrumentation: key.to_string(),
        source: Box::new(source),
    });
    if result.is_ok() {
        data.ctx.backoffs.reset(&backoff_key(&key));
    }
    result
}

fn backoff_key(key: &InstrumentationKey) -> String {
    format!("instrumentation/{key}")
}

fn error_policy(inst: Arc<Instrumentation>, error: &Error, data: Arc<Data>) -> Action {
    data.ctx
        .error_action(CONTROLLER, &backoff_key(&key_of(&inst)), error.category())
}

/// The Instrumentations the opt-in rules consider: every one this operator
/// watches, except those being deleted, and `inst` itself (the store may lag
/// behind the object we were handed when it was just created).
fn candidates(store: &Store<Instrumentation>, inst: &Instrumentation) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = store
        .state()
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none())
        .map(|i| i.candidate())
        .collect();
    let key = key_of(inst);
    if !out.iter().any(|c| c.key() == key) {
        out.push(inst.candidate());
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// What the stages of one reconcile came to. The status and the Events
/// follow from it ([`status::report`]), and are written in one place.
#[derive(Debug)]
pub enum Outcome {
    /// The spec or its exporter cannot be served: nothing was applied,
    /// existing probes keep their last good config.
    Refused {
        problem: Problem,
        daemon_sets: Vec<ObservedDaemonSet>,
    },
    /// Every child applied and the children of removed languages pruned.
    Applied {
        exporter: ResolvedExporter,
        probe_image: String,
        applied: apply::Applied,
    },
}

async fn apply_stage(inst: &Instrumentation, data: &Data) -> Result<Action, Error> {
    let all = candidates(&data.instrumentations, inst);
    let outcome = run_stages(inst, data, &all).await?;
    let matches = match_summary(inst, data, &all);
    let (exporter, probe_image, daemon_sets, problem, pruned) = match outcome {
        Outcome::Refused {
            problem,
            daemon_sets,
        } => (None, None, daemon_sets, Some(problem), Vec::new()),
        Outcome::Applied {
            exporter,
            probe_image,
            applied,
        } => (
            Some(exporter),
            Some(probe_image),
            applied.daemon_sets,
            None,
            applied.pruned,
        ),
    };
    if !pruned.is_empty() {
        info!(instrumentation = %key_of(inst), objects = ?pruned, "Pruned children of removed languages");
    }
    let report = status::report(
        StatusInput {
            generation: inst.metadata.generation,
            exporter,
            probe_image,
            daemon_sets,
            matches: &matches,
            problem,
            previous: inst.status.as_ref(),
            now: Time(Timestamp::now()),
        },
        &pruned,
    );
    data.ctx
        .report(inst, &report)
        .await
        .map_err(|source| Error::Status {
            instrumentation: key_of(inst).to_string(),
            source,
        })?;
    // Rollouts, pods and collectors are watched; the periodic requeue is only
    // a safety net (and bounds how long drift of an applied child lasts).
    Ok(Action::requeue(apply::REAPPLY_AFTER))
}

/// dereference → validate + build → apply (+ prune). Writes children only:
/// the status and Events are the caller's. `Err` is an API failure, retried.
async fn run_stages(
    inst: &Instrumentation,
    data: &Data,
    all: &[Candidate],
) -> Result<Outcome, Error> {
    let client = &data.ctx.client;
    let refused = |problem: Problem| async {
        Ok(Outcome::Refused {
            problem,
            daemon_sets: apply::read_daemon_sets(client, inst).await?,
        })
    };

    // 1. dereference
    let exporter = match exporter::resolve(client, inst).await {
        Ok(Ok(exporter)) => exporter,
        Ok(Err(problem)) => return refused(problem).await,
        Err(source) => {
            return Err(Error::Dereference {
                instrumentation: key_of(inst).to_string(),
                source,
            });
        }
    };

    // 2. validate + build
    let input = BuildInput {
        instrumentation: inst,
        exporter: &exporter,
        default_probe_image: &data.ctx.config.default_probe_image,
        cluster_instrumentations: all,
    };
    let desired = match build::build(&input) {
        Ok(desired) => desired,
        Err(invalid) => {
            return refused(Problem {
                reason: reasons::INVALID_SPEC,
                message: invalid.to_string(),
            })
            .await;
        }
    };

    // 3. apply
    let probe_image = desired.probe_image.clone();
    let applied = apply::apply_if_changed(client, &data.fingerprints, inst, desired).await?;
    Ok(Outcome::Applied {
        exporter,
        probe_image,
        applied,
    })
}

/// The opt-in rules applied to every namespace and pod in the caches.
fn match_summary(inst: &Instrumentation, data: &Data, all: &[Candidate]) -> MatchSummary {
    let instrumentations = Instrumentations::new(all.iter().cloned());
    let namespaces = data.namespaces.state();
    let pods = data.pods.state();
    let empty = BTreeMap::new();
    let meta = |m: &'_ ObjectMeta| -> (String, String) {
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    };
    let ns_ids: Vec<(String, String)> = namespaces.iter().map(|n| meta(&n.metadata)).collect();
    let pod_ids: Vec<(String, String)> = pods.iter().map(|p| meta(&p.metadata)).collect();
    status::match_summary(
        &key_of(inst),
        &inst.spec.languages,
        &instrumentations,
        namespaces.iter().zip(&ns_ids).map(|(n, (ns, name))| Meta {
            namespace: ns,
            name,
            labels: n.metadata.labels.as_ref().unwrap_or(&empty),
            annotations: n.metadata.annotations.as_ref().unwrap_or(&empty),
        }),
        pods.iter()
            .zip(&pod_ids)
            .filter(|(p, _)| p.metadata.deletion_timestamp.is_none())
            .map(|(p, (ns, name))| Meta {
                namespace: ns,
                name,
                labels: p.metadata.labels.as_ref().unwrap_or(&empty),
                annotations: p.metadata.annotations.as_ref().unwrap_or(&empty),
            }),
    )
}

/// Finalizer cleanup: the cluster-scoped RBAC. Namespaced children carry
/// ownerReferences and are removed by the garbage collector.
async fn cleanup(inst: &Instrumentation, data: &Data) -> Result<Action, Error> {
    data.fingerprints.forget(&inst.uid().unwrap_or_default());
    let deleted = apply::prune_cluster(&data.ctx.client, inst, &BTreeSet::new()).await?;
    info!(instrumentation = %key_of(inst), objects = ?deleted, "Removed cluster-scoped RBAC");
    report::publish(
        &data.ctx.recorder,
        inst,
        &[report::normal(
            reasons::DELETING,
            "Cleanup",
            format!("removed {}", deleted.join(", ")),
        )],
    )
    .await;
    Ok(Action::await_change())
}
